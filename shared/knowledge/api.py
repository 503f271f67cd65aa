"""The gateway's knowledge-base routes (all need the deployment's API key):

  POST   /knowledge/<kb>/documents           {path, content} as JSON, or the document itself as
                                             the body with ?path=<path>; 202 {status: pending}:
                                             the indexer's OSS trigger indexes it
  GET    /knowledge/<kb>                     documents with size, chunks and status (indexed,
                                             pending, refused + reason); ?after=<path>&limit=
  GET    /knowledge/<kb>/documents/<path>    one document's text
  DELETE /knowledge/<kb>/documents/<path>    delete it (and its passages, at once)
  GET    /knowledge/<kb>/search?q=&k=        the best passages (BM25), for debugging

The routes are declared in shared/routes.py; the gateway checks the key and calls these
handlers with the path's knowledge base (and document path). They answer with the gateway's
response dicts. Errors are raised as troupe errors, which the gateway turns into 4xx bodies
naming the problem; nothing is written before validation passes.
"""

from __future__ import annotations

import json

from shared.errors import BadRequest, NoSuchKey, NotFound, PayloadTooLarge
from shared.events import HttpEvent
from shared.knowledge import documents as docs
from shared.knowledge.indexer import MAX_DOC_BYTES, check_kb, check_path, doc_key
from shared.knowledge.retrieval import MAX_K, search
from shared.store.base import ObjectStore

MAX_JSON_BODY = 6 * MAX_DOC_BYTES + 4096  # \uXXXX escapes take 6 bytes a character


def _response(status: int, body) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json; charset=utf-8"},
            "isBase64Encoded": False, "body": json.dumps(body, ensure_ascii=False)}


def _int(query: dict, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer", field=name) from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be between {low} and {high}", field=name)
    return value


def put(req: HttpEvent, store: ObjectStore, kb: str) -> dict:
    kb = check_kb(kb)
    q = req.query
    if "path" in q:
        if len(req.body) > MAX_DOC_BYTES:
            raise PayloadTooLarge(f"document is larger than {MAX_DOC_BYTES} bytes", field="content")
        path, data = q["path"], req.body
    else:
        body = req.json(max_bytes=MAX_JSON_BODY)
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object {path, content}, or the document itself with ?path=")
        unknown = set(body) - {"path", "content"}
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))[:200]}", field=sorted(unknown)[0])
        path, content = body.get("path"), body.get("content")
        if not isinstance(content, str):
            raise BadRequest("field 'content' must be a string (the document's text)", field="content")
        data = content.encode("utf-8")
    check_path(path)
    return _response(202, docs.put_document(store, kb, path, data))


def list_documents(req: HttpEvent, store: ObjectStore, kb: str) -> dict:
    kb = check_kb(kb)
    q = req.query
    after = q.get("after", "")
    limit = _int(q, "limit", docs.MAX_LIST, 1, docs.MAX_LIST)
    return _response(200, docs.list_documents(store, kb, after=after, limit=limit))


def get(store: ObjectStore, kb: str, path: str) -> dict:
    kb = docs.require_kb(store, check_kb(kb))
    check_path(path, check_type=False)
    try:
        data = store.get(doc_key(kb, path))
    except NoSuchKey:
        raise NotFound(f"knowledge base {kb!r} has no document {path!r}", field="path", path=path[:80]) from None
    try:
        body = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"document {path!r} is not text", field="path") from None
    return {"statusCode": 200, "isBase64Encoded": False, "body": body,
            "headers": {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}}


def search_passages(req: HttpEvent, store: ObjectStore, kb: str) -> dict:
    kb = check_kb(kb)
    q = req.query
    query = q.get("q", "")
    k = _int(q, "k", 3, 1, MAX_K)
    if not query.strip():
        raise BadRequest("query parameter 'q' is required", field="q")
    kb = docs.require_kb(store, kb)
    return _response(200, {"kb": kb, "query": query, "passages": search(store, kb, query, k)})


def delete(store: ObjectStore, kb: str, path: str) -> dict:
    return _response(200, docs.delete_document(store, check_kb(kb), path))
