"""troupe deadletter: the onFailure destination of role functions."""

import json

from shared.deadletter import handle_failure
from shared.env import conversations


def handler(event, context):
    return json.dumps(handle_failure(event, conversations(context)))
