"""MetaGPT's software-company SOP on troupe: the role runner for MetaGPT's own roles
(shared/sop/runner.py) and the project workspace they share through OSS (shared/sop/workspace.py).

`handler` is the FC entry point of every SOP role function (product_manager, architect,
project_manager, engineer, qa_engineer): each function's index.py re-exports it, and the role
a delivery names (which must be played by that function) decides which MetaGPT role runs.
"""

import json


def handler(event, context):
    from shared.env import conversations, function_id, role_settings
    from shared.llm import make_llm
    from shared.sop.runner import sop_runner

    runner = sop_runner(conversations(context), function_id(), make_llm, **role_settings(context))
    return json.dumps(runner.handle_event(event, context.request_id))
