"""troupe gateway: the REST API on the HTTP trigger."""

from shared.env import conversations, memory_mb
from shared.gateway import Gateway


def handler(event, context):
    return Gateway(conversations(context), memory_mb=memory_mb(context)).handle(event, context.request_id)
