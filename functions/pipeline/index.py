"""troupe pipeline: a request file under requests/ starts a conversation; when a conversation
that a request started ends, its result is written under results/."""

import json

from shared.env import conversations
from shared.pipeline import Pipeline


def handler(event, context):
    return json.dumps(Pipeline(conversations(context)).handle_event(event, context.request_id))
