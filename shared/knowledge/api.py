"""The gateway's knowledge-base routes (all need the deployment's API key):

  POST   /knowledge/<kb>/documents           {path, content} as JSON, or the document itself as
                                             the body with ?path=<path>; 202 {status: pending}:
                                             the indexer's OSS trigger indexes it
  GET    /knowledge/<kb>                     documents with size, chunks and status (indexed,
                                             pending, refused + reason); ?after=<path>&limit=
  GET    /knowledge/<kb>/documents/<path>    one document's text
  DELETE /knowledge/<kb>/documents/<path>    delete it (and its passages, at once)
  GET    /knowledge/<kb>/search?q=&k=        the best passages (BM25), for debugging

`handle_knowledge(req, store, require_api_key)` answers them with the gateway's response dicts,
or returns None for a path outside /knowledge. Errors are raised as troupe errors, which the
gateway turns into 4xx bodies naming the problem; nothing is written before validation passes.
"""

from __future__ import annotations

import json
from typing import Callable
from urllib.parse import unquote

from shared.errors import BadRequest, MethodNotAllowed, NoSuchKey, NotFound, PayloadTooLarge, Unauthorized
from shared.events import HttpEvent
from shared.knowledge import documents as docs
from shared.knowledge.indexer import MAX_DOC_BYTES, check_kb, check_path, doc_key
from shared.knowledge.retrieval import MAX_K, search
from shared.store.base import ObjectStore

MAX_JSON_BODY = 6 * MAX_DOC_BYTES + 4096  # \uXXXX escapes take 6 bytes a character


def _response(status: int, body) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json; charset=utf-8"},
            "isBase64Encoded": False, "body": json.dumps(body, ensure_ascii=False)}


def _method(req: HttpEvent, *allowed: str) -> None:
    if req.method not in allowed:
        raise MethodNotAllowed(f"{req.method} is not allowed here; use {' or '.join(allowed)}")


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


def handle_knowledge(req: HttpEvent, store: ObjectStore, require_api_key: Callable[[HttpEvent], None]) -> dict | None:
    raw = req.path
    if raw.rstrip("/") != "/knowledge" and not raw.startswith("/knowledge/"):
        return None
    try:
        require_api_key(req)
    except Unauthorized:
        raise Unauthorized("knowledge bases need the deployment's API key: send 'Authorization: Bearer <key>'") from None
    parts = raw.split("/", 4)[2:]  # kb, section, rest
    if not parts or not parts[0]:
        raise NotFound("name a knowledge base: /knowledge/<kb>")
    kb = check_kb(unquote(parts[0]))
    section = parts[1] if len(parts) > 1 else ""
    rest = unquote(parts[2]) if len(parts) > 2 else ""
    if section == "" and not rest:
        _method(req, "GET")
        return _list(req, store, kb)
    if section == "search" and not rest:
        _method(req, "GET")
        return _search(req, store, kb)
    if section == "documents" and not rest:
        _method(req, "POST", "GET")
        return _put(req, store, kb) if req.method == "POST" else _list(req, store, kb)
    if section == "documents":
        _method(req, "GET", "DELETE")
        if req.method == "DELETE":
            return _response(200, docs.delete_document(store, kb, rest))
        return _get(store, kb, rest)
    raise NotFound(f"no route for {req.method} {raw[:100]}")


def _put(req: HttpEvent, store: ObjectStore, kb: str) -> dict:
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


def _list(req: HttpEvent, store: ObjectStore, kb: str) -> dict:
    q = req.query
    after = q.get("after", "")
    limit = _int(q, "limit", docs.MAX_LIST, 1, docs.MAX_LIST)
    return _response(200, docs.list_documents(store, kb, after=after, limit=limit))


def _get(store: ObjectStore, kb: str, path: str) -> dict:
    kb = docs.require_kb(store, kb)
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


def _search(req: HttpEvent, store: ObjectStore, kb: str) -> dict:
    q = req.query
    query = q.get("q", "")
    k = _int(q, "k", 3, 1, MAX_K)
    if not query.strip():
        raise BadRequest("query parameter 'q' is required", field="q")
    kb = docs.require_kb(store, kb)
    return _response(200, {"kb": kb, "query": query, "passages": search(store, kb, query, k)})


def openapi_paths() -> dict:
    """These routes as OpenAPI 3.0 path items (for shared/openapi.py's `paths`)."""
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    names = {400: "bad input, naming the field", 401: "no API key", 403: "wrong API key",
             404: "no such knowledge base or document", 405: "method not allowed",
             409: "the knowledge base is full", 413: "document too large, naming the limit"}

    def errors(*codes):
        return {str(c): {"description": names[c], **err} for c in codes}

    def ok(desc, status=200, kind="application/json"):
        return {str(status): {"description": desc, "content": {kind: {"schema": {"type": "object" if "json" in kind
                                                                                 else "string"}}}}}

    sec = [{"apiKey": []}]
    kb = {"name": "kb", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"}}
    path = {"name": "path", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 256},
            "description": "relative document path, e.g. policies/refunds.md"}
    doc = {"type": "object", "additionalProperties": False, "required": ["path", "content"],
           "properties": {"path": {"type": "string", "maxLength": 256}, "content": {"type": "string"}}}
    return {
        "/knowledge/{kb}": {"get": {
            "summary": "a knowledge base's documents: size, chunks, status (indexed, pending, refused)",
            "security": sec, "parameters": [kb, {"name": "after", "in": "query", "schema": {"type": "string"}},
                                            {"name": "limit", "in": "query",
                                             "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {**ok("the documents"), **errors(400, 401, 403, 404)}}},
        "/knowledge/{kb}/documents": {"post": {
            "summary": "add or replace a document (.md, .markdown, .txt); the indexer indexes it",
            "security": sec,
            "parameters": [kb, {"name": "path", "in": "query", "schema": {"type": "string"},
                                "description": "with a text body: the document's path"}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": doc},
                                                          "text/plain": {"schema": {"type": "string"}}}},
            "responses": {**ok("stored; indexing pending", 202), **errors(400, 401, 403, 409, 413)}}},
        "/knowledge/{kb}/documents/{path}": {
            "get": {"summary": "a document's text", "security": sec, "parameters": [kb, path],
                    "responses": {**ok("the text", kind="text/plain"), **errors(400, 401, 403, 404)}},
            "delete": {"summary": "delete a document and its passages", "security": sec, "parameters": [kb, path],
                       "responses": {**ok("deleted"), **errors(400, 401, 403, 404)}}},
        "/knowledge/{kb}/search": {"get": {
            "summary": "the best passages for a query (BM25)", "security": sec,
            "parameters": [kb, {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},
                           {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K}}],
            "responses": {**ok("passages: id, doc, chunk, heading, text, score"), **errors(400, 401, 403, 404)}}},
    }
