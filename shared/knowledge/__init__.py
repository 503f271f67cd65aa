"""Domain knowledge that persists across conversations: knowledge bases in OSS, kept fresh by
the `indexer` function's OSS trigger, searched with BM25 by roles.

  knowledge/<kb>/docs/<path>      documents (.md, .markdown, .txt; .pdf where pypdf is installed)
  knowledge-index/<kb>/...        their index (shared/knowledge/indexer.py has the layout and the
                                  update protocol)

Public API:
  search(store, kb, query, k=3) -> [{id, doc, chunk, heading, text, score}]
  format_passages(passages, max_chars=2400) -> str
  add_experience(store, kb, conversation_id, title, text) -> {kb, path, key, created}
  seed_samples(store, kb="lumen") -> [paths written]
  put_document / delete_document / list_documents   (what the gateway's routes call)
  handle_event(store, event, request_id="")         (the indexer function)
  reconcile(store, kb, path)                        (index one document as it is now)
  reindex(store, kb)                                (reconcile every document: a repair)

`python -m shared.knowledge seed|reindex|search` does the same from the command line.
"""

from shared.knowledge.documents import (add_experience, delete_document, list_documents, put_document,
                                        sample_files, seed_samples)
from shared.knowledge.indexer import (MAX_DOC_BYTES, MAX_DOCS, MAX_PATH_CHARS, check_kb, check_path, handle_event,
                                      reconcile, reindex)
from shared.knowledge.retrieval import clear_cache, format_passages, search

__all__ = ["search", "format_passages", "add_experience", "seed_samples", "sample_files", "put_document",
           "delete_document", "list_documents", "handle_event", "reconcile", "reindex", "clear_cache", "check_kb",
           "check_path", "MAX_DOC_BYTES", "MAX_DOCS", "MAX_PATH_CHARS"]
