"""troupe director: picks the next speaker of selector flows; one invocation per turn."""

from shared.director import handle
from shared.env import conversations, memory_mb
from shared.llm import make_llm


def handler(event, context):
    return handle(event, conversations(context), make_llm, context.request_id, memory_mb(context))
