"""troupe indexer: keeps each knowledge base's BM25 index in step with its documents
(OSS trigger on knowledge/, ObjectCreated and ObjectRemoved)."""

import json

from shared.env import build_store
from shared.knowledge.indexer import handle_event


def handler(event, context):
    return json.dumps(handle_event(build_store(context), event, context.request_id), ensure_ascii=False)
