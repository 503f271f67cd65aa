"""Writing and listing a knowledge base's documents (the API's and the runner's side).

Documents are plain objects under `knowledge/<kb>/docs/`; writing one fires the indexer's OSS
trigger, which indexes it. Everything here validates before it writes, so bad input changes
nothing.
"""

from __future__ import annotations

import os
import time

from shared.errors import BadRequest, Conflict, NotFound, ObjectExists, PayloadTooLarge
from shared.ids import check_conversation_id
from shared.knowledge import text as textmod
from shared.knowledge.indexer import (MAX_DOC_BYTES, MAX_DOCS, check_kb, check_path, doc_key, docs_prefix,
                                      latest_key, read_latest, reconcile)
from shared.store.base import ObjectStore

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")
MAX_TITLE_CHARS = 200
MAX_LIST = 1000


def check_document(path: str, data: bytes) -> str:
    """Validate a document before it is stored; returns its kind."""
    check_path(path)
    kind = textmod.kind_of(path)
    if len(data) > MAX_DOC_BYTES:
        raise PayloadTooLarge(f"document is larger than {MAX_DOC_BYTES} bytes ({len(data)})", field="content")
    if not data.strip():
        raise BadRequest("document is empty", field="content")
    try:
        textmod.extract(data, kind)
    except textmod.ExtractError as e:
        raise BadRequest(f"document is {e}", field="content") from None
    return kind


def count_documents(store: ObjectStore, kb: str, stop: int = MAX_DOCS) -> int:
    n = 0
    for _ in store.iter(docs_prefix(kb)):
        n += 1
        if n >= stop:
            break
    return n


def put_document(store: ObjectStore, kb: str, path: str, data: bytes) -> dict:
    """Store (or replace) a document; the indexer's trigger indexes it."""
    kb = check_kb(kb)
    check_document(path, data)
    key = doc_key(kb, path)
    existing = store.head(key)
    if existing is None and count_documents(store, kb) >= MAX_DOCS:
        raise Conflict(f"knowledge base {kb!r} already has {MAX_DOCS} documents, the most it may hold", field="path")
    info = store.put(key, data)
    return {"kb": kb, "path": path, "key": key, "size": info.size, "etag": info.etag,
            "replaced": existing is not None, "status": "pending"}


def kb_exists(store: ObjectStore, kb: str) -> bool:
    kb = check_kb(kb)
    return bool(store.list(docs_prefix(kb), max_keys=1).objects) or latest_key(store, kb) is not None


def require_kb(store: ObjectStore, kb: str) -> str:
    kb = check_kb(kb)
    if not kb_exists(store, kb):
        raise NotFound(f"no knowledge base {kb!r}: it has no documents", kb=kb)
    return kb


def delete_document(store: ObjectStore, kb: str, path: str) -> dict:
    """Delete a document and remove it from the index at once (the ObjectRemoved event that
    follows on OSS then finds nothing to do; the local store sends no such event)."""
    kb = require_kb(store, kb)
    check_path(path, check_type=False)
    key = doc_key(kb, path)
    if store.head(key) is None:
        raise NotFound(f"knowledge base {kb!r} has no document {path!r}", field="path", path=path[:80])
    store.delete(key)
    outcome = reconcile(store, kb, path)
    return {"kb": kb, "path": path, "deleted": True, "index": outcome["outcome"]}


def list_documents(store: ObjectStore, kb: str, after: str = "", limit: int = MAX_LIST) -> dict:
    """Documents with size, chunks and index status (indexed, pending, refused), in path order;
    plus documents still in the index whose removal is pending."""
    kb = require_kb(store, kb)
    if after:
        check_path(after, check_type=False)
    prefix = docs_prefix(kb)
    page = store.list(prefix, marker=prefix + after if after else "", max_keys=limit)
    _, man = read_latest(store, kb)
    entries = man["docs"]
    docs = []
    for obj in page.objects:
        path = obj.key[len(prefix):]
        e = entries.get(path)
        row = {"path": path, "size": obj.size, "etag": obj.etag, "modified": obj.last_modified}
        if e is not None and e["etag"] == obj.etag:
            if "error" in e:
                row.update(status="refused", reason=e["error"], chunks=0)
            else:
                row.update(status="indexed", chunks=e["chunks"], indexed=e.get("indexed"))
        else:
            row.update(status="pending", chunks=None)
        docs.append(row)
    listed = {d["path"] for d in docs}
    last = docs[-1]["path"] if page.truncated and docs else None
    removing = sorted(p for p in entries if p not in listed and p > after and (last is None or p <= last))
    return {"kb": kb, "generation": man["generation"], "documents": man["documents"], "chunks": man["chunks"],
            "docs": docs, "removal_pending": removing, "next": last}


def add_experience(store: ObjectStore, kb: str, conversation_id: str, title: str, text: str,
                   clock=time.time) -> dict:
    """Write what a conversation learned as `knowledge/<kb>/docs/experience/<cid>.md`, create-only:
    the first write for a conversation wins and later calls change nothing (`created` False).
    The indexer's trigger indexes it like any other document."""
    kb = check_kb(kb)
    cid = check_conversation_id(conversation_id)
    if not isinstance(title, str) or not title.strip() or "\n" in title or len(title) > MAX_TITLE_CHARS:
        raise BadRequest(f"title must be one non-empty line of at most {MAX_TITLE_CHARS} characters", field="title")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("text must be a non-empty string", field="text")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(clock()))
    body = f"# {title.strip()}\n\n{text.strip()}\n\n_Experience from conversation {cid}, {when}._\n".encode("utf-8")
    path = f"experience/{cid}.md"
    check_document(path, body)
    key = doc_key(kb, path)
    try:
        info = store.put(key, body, create_only=True)
    except ObjectExists:
        return {"kb": kb, "path": path, "key": key, "created": False}
    return {"kb": kb, "path": path, "key": key, "created": True, "size": info.size}


def sample_files(kb: str = "lumen") -> dict[str, bytes]:
    """The bundled sample knowledge base `kb` (shared/knowledge/samples/<kb>/): path → bytes."""
    base = os.path.join(SAMPLES, check_kb(kb))
    out = {}
    for dirpath, _dirs, files in os.walk(base):
        for name in sorted(files):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base).replace(os.sep, "/")
            if textmod.kind_of(rel):
                with open(full, "rb") as f:
                    out[rel] = f.read()
    if not out:
        raise NotFound(f"no sample knowledge base {kb!r}", kb=kb)
    return dict(sorted(out.items()))


def seed_samples(store: ObjectStore, kb: str = "lumen") -> list[str]:
    """Put the sample documents under knowledge/<kb>/docs/ where absent (create-only: an edited
    copy is never overwritten). Returns the paths written."""
    written = []
    for path, data in sample_files(kb).items():
        try:
            store.put(doc_key(kb, path), data, create_only=True)
        except ObjectExists:
            continue
        written.append(path)
    return written
