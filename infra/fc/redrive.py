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

from infra.local.redrive import REDRIVEN_PREFIX, STORE_PREFIX, Letter
from shared.conversation import ConversationStore
from shared.errors import BadRequest, ObjectExists, RejectedEvent
from shared.events import make_oss_event
from shared.store.base import ObjectStore

#: (function resource id, event bytes) -> request id
AsyncInvoke = Callable[[str, bytes], str]


def collect_store_letters(store: ObjectStore, *, function: str | None = None,
                          conversation: str | None = None) -> list[Letter]:
    """The store's dead letters, one per (function, delivery key), filtered."""
    convs = ConversationStore(store)
    letters: dict[tuple[str, str], Letter] = {}
    for info in store.iter(STORE_PREFIX):
        try:
            rec = json.loads(store.get(info.key))
            fn, key = rec["function"], rec["key"]
            event = json.dumps(rec["event"]).encode("utf-8")
            parts = key.split("/")
            cid, _, _ = convs.parse_delivery_key(parts[1] if len(parts) > 1 else "", key)
        except (ValueError, KeyError, TypeError, RejectedEvent, BadRequest):
            continue
        if (function and fn != function) or (conversation and cid != conversation):
            continue
        letter = letters.setdefault((fn, key), Letter(fn, cid, key, event, str(rec.get("reason", ""))[:300]))
        letter.sources.append(("store", info.key))
    return list(letters.values())


def _move(store: ObjectStore, src: str, dst: str, stamp: float | None) -> None:
    rec = json.loads(store.get(src))
    if stamp is None:
        rec.pop("redriven_at", None)
    else:
        rec["redriven_at"] = stamp
    store.put(dst, json.dumps(rec, ensure_ascii=False).encode("utf-8"))
    store.delete(src)


def _latest_delivery(store: ObjectStore, cid: str, functions: list[str]):
    latest = None
    for fn in functions:
        for info in store.iter(f"inbox/{fn}/{cid}/"):
            name = info.key.rsplit("/", 1)[-1]
            if latest is None or name > latest[0]:
                latest = (name, fn, info)
    return latest


def redrive_store(store: ObjectStore, invoke: AsyncInvoke, *, inbox_functions: list[str],
                  bucket: str, region: str, account: str = "", function: str | None = None,
                  conversation: str | None = None, dry_run: bool = False,
                  out: Callable[[str], None] = print) -> dict:
    """Re-drive the store's selected dead letters. Returns {"redriven": [keys], "skipped": [keys],
    "failed": [keys], "requests": {key: request id}}."""
    convs = ConversationStore(store)
    letters = collect_store_letters(store, function=function, conversation=conversation)
    report: dict = {"redriven": [], "skipped": [], "failed": [], "requests": {}}
    if not letters:
        out("no dead letters" + (f" for function {function}" if function else "")
            + (f" of conversation {conversation}" if conversation else ""))
        return report
    by_cid: dict[str, list[Letter]] = {}
    for letter in letters:
        by_cid.setdefault(letter.conversation, []).append(letter)
    stamp = time.time()
    for cid, group in sorted(by_cid.items()):
        end = convs.get_end(cid)
        if end and end.get("status") != "failed":
            for letter in group:
                out(f"skipped {letter.function} {letter.key}: the conversation ended as {end.get('status')}")
                report["skipped"].append(letter.key)
            continue
        if dry_run:
            for letter in group:
                out(f"would re-drive {letter.function} {letter.key} ({letter.reason[:120]})")
            continue
        if end:
            store.delete(convs.end_key(cid))  # reopen: only a `failed` end is ever removed
            out(f"reopened {cid} (it had failed in {end.get('function')}: {str(end.get('reason'))[:120]})")
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
        latest = _latest_delivery(store, cid, inbox_functions)
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
