"""troupe gateway: the REST API on the HTTP trigger."""

from shared.env import conversations
from shared.gateway import Gateway


def handler(event, context):
    return Gateway(conversations(context)).handle(event, context.request_id)
