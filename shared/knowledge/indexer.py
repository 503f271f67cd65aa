"""Knowledge bases in OSS and their incremental BM25 index (the `indexer` function's core).

Layout (every key is built here, from a validated kb name and document path):

  knowledge/<kb>/docs/<path>                          the documents (.md, .markdown, .txt; .pdf
                                                      only where pypdf is installed)
  knowledge-index/<kb>/docs/<sha(path)>/<sha(content)>-<nonce>.json
                                                      one indexing of one document: its chunks'
                                                      text, heading, term frequencies and length;
                                                      written once, named only by the manifest
                                                      entry that commits it, deleted once a
                                                      committed generation replaces that entry
  knowledge-index/<kb>/manifest/<999999999999-gen>.json
                                                      generation `gen` of the kb's manifest: per
                                                      document its etag, content hash, index file,
                                                      size, chunks and tokens (or the reason it was
                                                      refused), and the totals; create-only

The index lives outside the trigger's prefix (`knowledge/`: `knowledge-index/` does not start
with it), so writing it fires nothing.

Update protocol (one document, one event): `reconcile(store, kb, path)` makes the index agree
with the document as it is *now* (HEAD), whatever the event said: ObjectCreated and
ObjectRemoved are handled alike, and a duplicate or out-of-order event finds nothing to do. It
reads the document itself and the manifest, never another document or another document's
index file. A change is committed by creating the next generation's manifest with a
create-only put (OSS `x-oss-forbid-overwrite`): of two indexers racing from generation g, one
creates g+1, the other gets FileAlreadyExists, re-reads g+1 and applies its own change on top,
so no update is lost. Generation keys count down, so a one-key listing finds the newest. A
generation's key is never deleted (a slow writer could otherwise create it again); KEEP
generations back its content is overwritten with a small stub. An index file is named by a
fresh nonce, so exactly one manifest entry ever names it: once a committed generation drops
that entry no later one can name it again, and deleting it is safe. After committing, the
indexer HEADs the document again and goes round once more if it changed meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
import uuid
from typing import Callable

from shared.errors import BadRequest, NoSuchKey, ObjectExists, TransientStoreError
from shared.events import records_or_rejection
from shared.keys import (DOCS_ROOT, GEN_SPACE, INDEX_ROOT, MAX_PATH_CHARS, check_kb, check_path,  # noqa: F401
                         doc_key, docfile_key, docfiles_prefix, docs_prefix, index_prefix, manifest_key,
                         manifest_prefix, parse_doc_key)
from shared.knowledge import text as textmod
from shared.store.base import ObjectStore

log = logging.getLogger("troupe.knowledge")

MAX_DOC_BYTES = 1024 * 1024
MAX_DOCS = 10_000
KEEP_GENERATIONS = 3
COMMIT_ATTEMPTS = 30
RECONCILE_ROUNDS = 4

_GEN_NAME = re.compile(r"^([0-9]{12})\.json$")


# --- names and keys: built in shared/keys.py ----------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- manifests -----------------------------------------------------------------------------


def _dump(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def empty_manifest(kb: str) -> dict:
    return {"kb": kb, "generation": 0, "updated": None, "documents": 0, "chunks": 0, "length": 0, "docs": {}}


def latest_key(store: ObjectStore, kb: str) -> str | None:
    """The newest generation's key (one LIST of one key), or None for a kb never indexed."""
    page = store.list(manifest_prefix(kb), max_keys=1)
    return page.objects[0].key if page.objects else None


def generation_of(key: str | None) -> int:
    if key is None:
        return 0
    m = _GEN_NAME.match(key.rsplit("/", 1)[-1])
    return GEN_SPACE - 1 - int(m.group(1)) if m else 0


def read_latest(store: ObjectStore, kb: str) -> tuple[str | None, dict]:
    """(key, manifest) of the newest generation; an empty manifest when there is none."""
    for _ in range(10):
        key = latest_key(store, kb)
        if key is None:
            return None, empty_manifest(kb)
        try:
            man = json.loads(store.get(key))
        except NoSuchKey:
            continue
        if "docs" in man:
            return key, man
        # a stub: newer generations were committed between the listing and the read
    raise TransientStoreError("the knowledge base's manifest kept moving while being read", kb=kb)


def _totals(man: dict) -> dict:
    live = [e for e in man["docs"].values() if "error" not in e]
    man["documents"] = len(live)
    man["chunks"] = sum(e["chunks"] for e in live)
    man["length"] = sum(e["length"] for e in live)
    return man


def commit(store: ObjectStore, kb: str, change: Callable[[dict], bool], clock=time.time,
           sleep=time.sleep, start: tuple[str | None, dict] | None = None) -> tuple[int, dict, bool]:
    """Apply `change` (mutates a manifest, returns whether it changed anything) to the newest
    generation (`start`, if just read) and create the next one, create-only; on a lost race
    re-read and re-apply. Returns (generation, manifest, committed)."""
    for attempt in range(COMMIT_ATTEMPTS):
        key, man = start if (start is not None and attempt == 0) else read_latest(store, kb)
        gen = generation_of(key)
        if not change(man):
            return gen, man, False
        man.update(kb=kb, generation=gen + 1, updated=clock())
        _totals(man)
        try:
            store.put(manifest_key(kb, gen + 1), _dump(man), create_only=True)
        except ObjectExists:
            sleep(random.uniform(0, 0.005 * (attempt + 1)))
            continue
        old = gen + 1 - KEEP_GENERATIONS
        if old >= 1:  # keep the key (create-only must keep failing on it), drop the content
            store.put(manifest_key(kb, old), _dump({"superseded_by": gen + 1}))
        return gen + 1, man, True
    raise TransientStoreError("too many concurrent updates of the knowledge base's manifest", kb=kb)


# --- indexing one document -----------------------------------------------------------------


def build_docfile(path: str, etag: str, data: bytes, kind: str) -> dict:
    """An indexing of a document: its chunks with term frequencies and lengths."""
    text = textmod.extract(data, kind)
    chunks = []
    for c in textmod.chunk(text, kind):
        tf, length = textmod.term_frequencies(c["text"])
        chunks.append({"text": c["text"], "heading": c["heading"], "tf": tf, "len": length})
    return {"path": path, "etag": etag, "sha": _sha(data), "kind": kind, "chunks": chunks}


def reconcile(store: ObjectStore, kb: str, path: str, clock=time.time) -> dict:
    """Make the kb's index agree with document `path` as it is now. Idempotent."""
    kb, path = check_kb(kb), check_path(path, check_type=False)
    key = doc_key(kb, path)
    outcome: dict = {"outcome": "unchanged", "kb": kb, "path": path}
    for _ in range(RECONCILE_ROUNDS):
        info = store.head(key)
        latest = read_latest(store, kb)
        current = latest[1]["docs"].get(path)
        if info is None and current is None:
            return outcome
        if info is not None and current is not None and current["etag"] == info.etag:
            return outcome
        if info is None:
            outcome = _remove(store, kb, path, clock, latest)
        else:
            outcome = _index(store, kb, path, key, info, clock, latest)
        after = store.head(key)
        if (after is None and info is None) or (after is not None and info is not None and after.etag == info.etag):
            return outcome
        log.info("document %s/%s changed while it was indexed; again", kb, path)
    return outcome


def _index(store: ObjectStore, kb: str, path: str, key: str, info, clock, latest) -> dict:
    kind = textmod.kind_of(path)
    entry: dict
    if kind is None:
        entry = {"etag": info.etag, "size": info.size, "error": textmod.unsupported_message(path)}
    elif info.size > MAX_DOC_BYTES:
        entry = {"etag": info.etag, "size": info.size,
                 "error": f"document is larger than {MAX_DOC_BYTES} bytes ({info.size})"}
    else:
        try:
            data = store.get(key)
        except NoSuchKey:  # deleted since the HEAD: the next round removes it
            return {"outcome": "gone", "kb": kb, "path": path}
        try:
            docfile = build_docfile(path, info.etag, data, kind)
        except textmod.ExtractError as e:
            entry = {"etag": info.etag, "size": len(data), "error": str(e)}
        else:
            file_id = f"{docfile['sha'][:16]}-{uuid.uuid4().hex[:16]}"
            entry = {"etag": info.etag, "sha": docfile["sha"], "file": file_id, "size": len(data),
                     "chunks": len(docfile["chunks"]), "length": sum(c["len"] for c in docfile["chunks"])}
            store.put(docfile_key(kb, path, file_id), _dump(docfile))
    entry["indexed"] = round(clock(), 3)
    replaced: list[dict] = []
    chosen: list[dict] = [entry]

    def change(man: dict) -> bool:
        replaced.clear()
        new = dict(entry)
        old = man["docs"].get(path)
        if old is not None and old["etag"] == new["etag"] and old.get("sha") == new.get("sha"):
            return False
        if "error" not in new and (old is None or "error" in old):
            if sum(1 for e in man["docs"].values() if "error" not in e) >= MAX_DOCS:
                new = {"etag": new["etag"], "size": new["size"], "indexed": new["indexed"],
                       "error": f"the knowledge base already has {MAX_DOCS} documents, the most it may hold"}
        if old is not None:
            replaced.append(old)
        man["docs"][path] = chosen[0] = new
        return True

    gen, _, committed = commit(store, kb, change, clock, start=latest)
    written = entry.get("file")
    entry = chosen[0]
    if committed:
        for old in replaced:  # named by no generation from now on
            if old.get("file"):
                store.delete(docfile_key(kb, path, old["file"]))
    if written and (not committed or entry.get("file") != written):  # ours was not committed
        store.delete(docfile_key(kb, path, written))
    if "error" in entry:
        log.warning("refused %s/%s: %s", kb, path, entry["error"])
        return {"outcome": "refused", "kb": kb, "path": path, "reason": entry["error"], "generation": gen}
    return {"outcome": "indexed" if committed else "unchanged", "kb": kb, "path": path, "chunks": entry["chunks"],
            "generation": gen}


def _remove(store: ObjectStore, kb: str, path: str, clock, latest) -> dict:
    removed: list[dict] = []

    def change(man: dict) -> bool:
        removed.clear()
        old = man["docs"].pop(path, None)
        if old is None:
            return False
        removed.append(old)
        return True

    gen, _, committed = commit(store, kb, change, clock, start=latest)
    if committed:
        for old in removed:
            if old.get("file"):
                store.delete(docfile_key(kb, path, old["file"]))
    return {"outcome": "removed" if committed else "unchanged", "kb": kb, "path": path, "generation": gen}


# --- the indexer function ------------------------------------------------------------------


def handle_event(store: ObjectStore, event, request_id: str = "", clock=time.time) -> list[dict]:
    """The indexer's OSS trigger (prefix `knowledge/`, ObjectCreated and ObjectRemoved): one
    outcome per record. Keys that are not documents are ignored; storage errors raise (FC retries)."""
    records, out = records_or_rejection(event, log)
    for record in records:
        name = record.event_name
        if not (name.startswith("ObjectCreated:") or name.startswith("ObjectRemoved:")):
            out.append({"outcome": "ignored", "reason": f"event {name} is neither ObjectCreated nor ObjectRemoved"})
            continue
        target = parse_doc_key(record.key)
        if target is None:
            out.append({"outcome": "ignored", "reason": "not a document key (knowledge/<kb>/docs/<path>)",
                        "key": record.key[:200]})
            continue
        out.append(reconcile(store, *target, clock=clock))
    return out


def reindex(store: ObjectStore, kb: str, clock=time.time) -> list[dict]:
    """Reconcile every document of `kb` and every document its index still names: a repair
    (after a lost event or a failed invocation) that costs a pass over the kb."""
    kb = check_kb(kb)
    prefix = docs_prefix(kb)
    paths = {info.key[len(prefix):] for info in store.iter(prefix)}
    paths |= set(read_latest(store, kb)[1]["docs"])
    out = []
    for path in sorted(paths):
        try:
            check_path(path, check_type=False)
        except BadRequest:
            out.append({"outcome": "ignored", "kb": kb, "path": path[:200], "reason": "not a valid document path"})
            continue
        out.append(reconcile(store, kb, path, clock))
    return out
