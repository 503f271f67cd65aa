"""BM25 retrieval over a knowledge base, with a process-level cache of its index.

A warm function instance keeps each kb's index in memory, keyed by the manifest generation it
was built from. Each `search` costs one LIST of one key (is there a newer generation?); only
when there is does it read the new manifest and the index files of the documents that changed
(their index file differs), never the others. A cold instance reads the manifest and every
document's index file once (in parallel).

Scoring is Okapi BM25 (k1=1.2, b=0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5))) over chunks,
with an in-memory inverted index (term → document → [(chunk, tf)]) updated per document, so a
query touches only the postings of its own terms.
"""

from __future__ import annotations

import heapq
import json
import math
import threading
import time
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from shared.errors import BadRequest, NoSuchKey
from shared.knowledge.indexer import check_kb, docfile_key, latest_key, read_latest
from shared.knowledge.text import tokenize
from shared.store.base import ObjectStore

K1 = 1.2
B = 0.75
MAX_QUERY_CHARS = 1000
MAX_K = 50
FETCH_THREADS = 16


class _Doc:
    __slots__ = ("file", "texts", "headings", "lens", "terms")

    def __init__(self, file_id: str, data: dict):
        self.file = file_id
        chunks = data["chunks"]
        self.texts = [c["text"] for c in chunks]
        self.headings = [c.get("heading", "") for c in chunks]
        self.lens = [c["len"] for c in chunks]
        terms: dict[str, list[tuple[int, int]]] = {}
        for i, c in enumerate(chunks):
            for t, tf in c["tf"].items():
                terms.setdefault(t, []).append((i, tf))
        self.terms = terms


class KbIndex:
    """One kb's index as a process holds it."""

    def __init__(self, kb: str):
        self.kb = kb
        self.key: str | None = None
        self.generation = 0
        self.docs: dict[str, _Doc] = {}
        self.postings: dict[str, dict[str, list[tuple[int, int]]]] = {}
        self.df: Counter = Counter()
        self.n = 0
        self.total = 0
        self.checked = 0.0
        self.lock = threading.Lock()
        self.reads = Counter()
        """What refreshing cost: manifests and document index files read."""

    # -- incremental maintenance -----------------------------------------------------------
    def _add(self, path: str, doc: _Doc) -> None:
        self.docs[path] = doc
        for t, plist in doc.terms.items():
            self.postings.setdefault(t, {})[path] = plist
            self.df[t] += len(plist)
        self.n += len(doc.lens)
        self.total += sum(doc.lens)

    def _drop(self, path: str) -> None:
        doc = self.docs.pop(path)
        for t, plist in doc.terms.items():
            bucket = self.postings.get(t)
            if bucket is not None:
                bucket.pop(path, None)
                if not bucket:
                    del self.postings[t]
            self.df[t] -= len(plist)
            if self.df[t] <= 0:
                del self.df[t]
        self.n -= len(doc.lens)
        self.total -= sum(doc.lens)

    def refresh(self, store: ObjectStore, max_age: float = 0.0, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.key is not None and max_age > 0 and now - self.checked < max_age:
            return
        key = latest_key(store, self.kb)
        self.checked = now
        if key == self.key and key is not None:
            return
        if key is None:
            for p in list(self.docs):
                self._drop(p)
            self.key, self.generation = None, 0
            return
        try:
            man = json.loads(store.get(key))
        except NoSuchKey:
            man = {}
        if "docs" not in man:  # superseded between the listing and the read
            key, man = read_latest(store, self.kb)
        self.reads["manifest"] += 1
        wanted = {p: e["file"] for p, e in man["docs"].items() if e.get("file") and "error" not in e}
        for p in [p for p, d in self.docs.items() if wanted.get(p) != d.file]:
            self._drop(p)
        todo = [(p, f) for p, f in wanted.items() if p not in self.docs]

        def fetch(item):
            p, file_id = item
            try:
                return p, file_id, json.loads(store.get(docfile_key(self.kb, p, file_id)))
            except NoSuchKey:  # replaced meanwhile: the next generation names its successor
                return p, file_id, None

        if len(todo) > 4:
            with ThreadPoolExecutor(min(FETCH_THREADS, len(todo))) as pool:
                fetched = list(pool.map(fetch, todo))
        else:
            fetched = [fetch(item) for item in todo]
        complete = True
        for p, file_id, data in fetched:
            self.reads["docfile"] += 1
            if data is None:
                complete = False
                continue
            self._add(p, _Doc(file_id, data))
        self.generation = man.get("generation", 0)
        self.key = key if complete else None  # incomplete: look again next time

    # -- scoring ---------------------------------------------------------------------------
    def query(self, tokens: list[str], k: int) -> list[dict]:
        terms = [t for t in dict.fromkeys(tokens) if t in self.postings]
        if not terms or self.n == 0:
            return []
        avgdl = self.total / self.n if self.total else 1.0
        scores: dict[tuple[str, int], float] = {}
        for t in terms:
            df = self.df[t]
            idf = math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))
            for path, plist in self.postings[t].items():
                lens = self.docs[path].lens
                for ci, tf in plist:
                    s = idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * lens[ci] / avgdl))
                    scores[(path, ci)] = scores.get((path, ci), 0.0) + s
        best = heapq.nsmallest(k, scores.items(), key=lambda kv: (-kv[1], kv[0]))
        return [{"id": f"{path}#{ci}", "doc": path, "chunk": ci, "heading": self.docs[path].headings[ci],
                 "text": self.docs[path].texts[ci], "score": round(score, 4)} for (path, ci), score in best]


_cache: "weakref.WeakKeyDictionary[ObjectStore, dict[str, KbIndex]]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def cached_index(store: ObjectStore, kb: str) -> KbIndex:
    """This process's index of `kb` in `store` (not refreshed)."""
    kb = check_kb(kb)
    with _cache_lock:
        per_store = _cache.setdefault(store, {})
        if kb not in per_store:
            per_store[kb] = KbIndex(kb)
        return per_store[kb]


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def search(store: ObjectStore, kb: str, query: str, k: int = 3, *, max_age: float = 0.0) -> list[dict]:
    """The `k` best passages of knowledge base `kb` for `query`, best first:
    [{id, doc, chunk, heading, text, score}]. An empty or never-indexed kb gives [].

    `max_age` > 0 lets a warm process skip even the one LIST that checks for a newer index, for
    that many seconds."""
    kb = check_kb(kb)
    if not isinstance(query, str) or not query.strip():
        raise BadRequest("the query must be a non-empty string", field="q")
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest(f"the query is longer than {MAX_QUERY_CHARS} characters", field="q")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise BadRequest(f"k must be an integer between 1 and {MAX_K}", field="k")
    index = cached_index(store, kb)
    with index.lock:
        index.refresh(store, max_age)
        return index.query(tokenize(query), k)


def format_passages(passages: list[dict], max_chars: int = 2400) -> str:
    """Passages as a prompt block: `[doc#chunk] text`, cut to `max_chars` in all."""
    out, used = [], 0
    for p in passages:
        block = f"[{p['id']}] {p['text'].strip()}"
        if used + len(block) > max_chars:
            block = block[:max(0, max_chars - used)]
        if not block:
            break
        out.append(block)
        used += len(block) + 2
    return "\n\n".join(out)
