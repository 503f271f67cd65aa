"""Re-drive dead letters kept in any ObjectStore (OSS on the cloud) through an async invoker.

The same steps as infra/local/redrive.py (see infra/local/README.md, "Dead letters and
re-driving them"), over the store's `deadletters/<function>/<cid>/<turn>-<delivery>.json`
only: on Function Compute there are no runtime failure files, the onFailure destination
(functions/deadletter) keeps every exhausted event in the store.

For each conversation with a selected letter: (1) reopen it if its end says `failed` (any
other end: its letters are skipped and left in place); (2) move its letters to
`deadletters-redriven/` (the record gains `redriven_at`) before sending; (3) invoke each
original event again, asynchronously, and the conversation's newest delivery too when it is
not one of the letters. If a send fails, the letters not sent are moved back, and if nothing
of the conversation was sent its `failed` end is put back, so that nothing is lost and a
later run can try again.
"""

from __future__ import annotations

import json
import time
from typing import Callable

from infra.local.redrive import (REDRIVEN_PREFIX, STORE_PREFIX, by_conversation, collect_store_letters,
                                 latest_delivery, reopen)
from shared.conversation import ConversationStore
from shared.errors import ObjectExists
from infra.local.events import make_oss_event
from shared.store.base import ObjectStore

#: (function resource id, event bytes) -> request id
AsyncInvoke = Callable[[str, bytes], str]


def _move(store: ObjectStore, src: str, dst: str, stamp: float | None) -> None:
    rec = json.loads(store.get(src))
    if stamp is None:
        rec.pop("redriven_at", None)
    else:
        rec["redriven_at"] = stamp
    store.put(dst, json.dumps(rec, ensure_ascii=False).encode("utf-8"))
    store.delete(src)


def redrive_store(store: ObjectStore, invoke: AsyncInvoke, *, inbox_functions: list[str],
                  bucket: str, region: str, account: str = "", function: str | None = None,
                  conversation: str | None = None, dry_run: bool = False,
                  out: Callable[[str], None] = print) -> dict:
    """Re-drive the store's selected dead letters. Returns {"redriven": [keys], "skipped": [keys],
    "failed": [keys], "requests": {key: request id}}."""
    convs = ConversationStore(store)
    letters = list(collect_store_letters(store, function=function, conversation=conversation).values())
    report: dict = {"redriven": [], "skipped": [], "failed": [], "requests": {}}
    by_cid = by_conversation(letters, function=function, conversation=conversation, out=out)
    if not by_cid:
        return report
    stamp = time.time()
    for cid, group in sorted(by_cid.items()):
        go, end = reopen(convs, cid, group, dry_run=dry_run, out=out, skipped=report["skipped"])
        if not go:
            continue
        sends: list[tuple[str, bytes, str, list[str]]] = []  # (function, event, key, moved store keys)
        for letter in group:
            moved = []
            for kind, where in letter.sources:
                if kind == "store":
                    dst = REDRIVEN_PREFIX + where[len(STORE_PREFIX):]
                    _move(store, where, dst, stamp)
                    moved.append(dst)
            sends.append((letter.function, letter.event, letter.key, moved))
        keys = {letter.key for letter in group}
        latest = latest_delivery(store, cid, inbox_functions)
        if latest and latest[2].key not in keys:
            _, fn, info = latest
            event = make_oss_event(bucket, region, info.key, info.size, info.etag,
                                   **({"account": account} if account else {}))
            sends.append((fn, json.dumps(event).encode("utf-8"), info.key, []))
        sent = 0
        for i, (fn, event, key, moved) in enumerate(sends):
            try:
                request_id = invoke(fn, event)
            except Exception as e:  # noqa: BLE001 - put back what was not sent, then report
                out(f"error: re-driving {fn} {key} failed: {e}")
                for _, _, k, still in sends[i:]:
                    for dst in still:
                        _move(store, dst, STORE_PREFIX + dst[len(REDRIVEN_PREFIX):], None)
                    if still:
                        report["failed"].append(k)
                if end and not sent:
                    try:
                        store.put(convs.end_key(cid), json.dumps(end, ensure_ascii=False).encode("utf-8"),
                                  create_only=True)
                    except ObjectExists:
                        pass
                break
            sent += 1
            what = "" if moved else " (the newest delivery, to resume)"
            out(f"re-driven {fn} {key}{what}: request {request_id}")
            report["requests"][key] = request_id
            if moved:
                report["redriven"].append(key)
    return report
