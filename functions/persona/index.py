"""troupe persona: plays scenario characters; one OSS-triggered invocation is one turn."""

import json

from shared.env import conversations, function_id, function_timeout, memory_mb
from shared.llm import make_llm
from shared.runner import RoleRunner


def handler(event, context):
    runner = RoleRunner(conversations(context), function_id(), make_llm, memory_mb=memory_mb(context),
                        timeout_s=function_timeout(context))
    return json.dumps(runner.handle_event(event, context.request_id))
