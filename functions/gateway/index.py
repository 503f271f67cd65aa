"""troupe gateway: the REST API on the HTTP trigger."""

import os

from shared.env import conversations, memory_mb
from shared.gateway import Gateway


def handler(event, context):
    gateway = Gateway(conversations(context), memory_mb=memory_mb(context), api_key=os.environ.get("TROUPE_API_KEY"),
                      role_functions=set(filter(None, os.environ.get("TROUPE_ROLE_FUNCTIONS", "persona").split(","))))
    return gateway.handle(event, context.request_id)
