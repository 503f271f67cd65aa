"""troupe persona: plays scenario characters; one OSS-triggered invocation is one turn."""

import json

from shared.env import conversations, function_id, role_settings
from shared.llm import make_llm
from shared.runner import RoleRunner


def handler(event, context):
    runner = RoleRunner(conversations(context), function_id(), make_llm, **role_settings(context))
    return json.dumps(runner.handle_event(event, context.request_id))
