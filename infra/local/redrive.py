"""Re-drive dead letters once their cause is fixed: `python -m infra.local redrive --data DIR`.

Dead letters come from two places, both written after an async event's retries (s.yaml's
maxAsyncRetryAttempts) ran out:
  * the store's `deadletters/<function>/<cid>/<turn>-<delivery>.json`, written by the
    onFailure destination (functions/deadletter, shared/deadletter.py), which also ended the
    conversation as `failed`;
  * the runtime's own failure records, `<data>/runtime/deadletters/<function>/*.json` (written
    for every exhausted event, also when the destination itself failed or none is declared).
Both carry the original OSS event. One failed event usually has one of each; they are matched
by (function, object key) and re-driven once.

For each conversation with a selected dead letter:
  1. if its end marker says `failed`, the marker is deleted (the conversation is reopened). Any
     other end (completed, cancelled, stopped by a limit) is left alone and its letters are
     not re-driven: they are reported as skipped.
  2. the letters are moved to `deadletters-redriven/` (store) and `runtime/deadletters-redriven/`
     (files) *before* the events are sent, so that a new failure writes a new letter instead of
     being moved away unseen.
  3. the original event is invoked again, asynchronously, as a new request (FC semantics: the
     function's retries and onFailure destination apply again). The newest delivery of the
     conversation is sent again too when it is not one of the letters: an invocation that found
     the conversation `failed` in the meantime ended without doing its turn, and this resumes it.
Nothing can be done twice: every step of a turn is keyed by its delivery and create-only, so
a re-driven event whose turn was (partly) done only finishes what is missing.

Without --endpoint the command runs its own runtime on DIR (no `serve` may hold it), waits
until the re-driven conversations have nothing left in flight, and stops. With --endpoint (the
FC invoke API a running `serve` prints) it sends the events there and returns at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

from shared import keys
from shared.conversation import ConversationStore
from shared.errors import BadRequest, RejectedEvent
from shared.events import OssEvent
from infra.local.events import make_oss_event
from shared.store.base import ObjectStore
from shared.store.disk import DiskStore

STORE_PREFIX = keys.DEADLETTERS
REDRIVEN_PREFIX = "deadletters-redriven/"


@dataclasses.dataclass
class Letter:
    function: str
    """Resource id of the function to invoke again (persona, director...)."""
    conversation: str
    key: str
    """The delivery's object key (what the OSS event names)."""
    event: bytes
    reason: str
    sources: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """("store", key) and/or ("file", path): where the letter is kept."""


def _event_key(event) -> str | None:
    try:
        parsed = OssEvent.parse(event)
    except BadRequest:
        return None
    keys = [r.key for r in parsed.records]
    return keys[0] if len(keys) == 1 else None


def _unwrap(record: dict, by_name: dict[str, str], function: str, depth: int = 0) -> tuple[str, bytes] | None:
    """(function id, original event) of an FC failure record, unwrapping the record of a failed
    destination (whose payload is itself a failure record)."""
    payload = record.get("requestPayload")
    raw = payload.encode("utf-8") if isinstance(payload, str) else json.dumps(payload).encode("utf-8")
    if _event_key(raw):
        return function, raw
    try:
        inner = json.loads(raw)
    except ValueError:
        return None
    if depth < 3 and isinstance(inner, dict) and "requestPayload" in inner:
        arn = (inner.get("requestContext") or {}).get("functionArn", "")
        name = arn.rsplit("/", 1)[-1]
        return _unwrap(inner, by_name, by_name.get(name, name), depth + 1)
    return None


def _add(letters: dict, convs: ConversationStore, fn: str, key: str, event: bytes, reason: str,
         source: tuple[str, str], function: str | None, conversation: str | None) -> None:
    """Add a letter's source to `letters` (one per (function, key)), if the filters select it."""
    parts = key.split("/")
    try:
        cid, _, _ = convs.parse_delivery_key(parts[1] if len(parts) > 1 else "", key)
    except (RejectedEvent, BadRequest):
        return
    if (function and fn != function) or (conversation and cid != conversation):
        return
    letter = letters.setdefault((fn, key), Letter(fn, cid, key, event, reason))
    letter.sources.append(source)


def collect_store_letters(store: ObjectStore, *, function: str | None = None,
                          conversation: str | None = None) -> dict[tuple[str, str], Letter]:
    """The dead letters the deadletter function kept in `store` (local disk or OSS), by
    (function, delivery key), filtered."""
    convs = ConversationStore(store)
    letters: dict[tuple[str, str], Letter] = {}
    for info in store.iter(STORE_PREFIX):
        try:
            rec = json.loads(store.get(info.key))
            event = json.dumps(rec["event"]).encode("utf-8")
            _add(letters, convs, rec["function"], rec["key"], event, str(rec.get("reason", ""))[:300],
                 ("store", info.key), function, conversation)
        except (ValueError, KeyError, TypeError):
            continue
    return letters


def collect(data_dir: str, by_name: dict[str, str] | None = None, *, function: str | None = None,
            conversation: str | None = None) -> list[Letter]:
    """Every dead letter under DIR (store and runtime files), one per (function, key)."""
    store = DiskStore(data_dir)
    convs = ConversationStore(store)
    by_name = by_name or {}
    letters = collect_store_letters(store, function=function, conversation=conversation)
    folder = os.path.join(data_dir, "runtime", "deadletters")
    for fn in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        for name in sorted(os.listdir(os.path.join(folder, fn))):
            path = os.path.join(folder, fn, name)
            if not name.endswith(".json"):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    rec = json.load(f)
            except (OSError, ValueError):
                continue
            found = _unwrap(rec, by_name, fn) if isinstance(rec, dict) else None
            if found is None:
                continue
            target, event = found
            _add(letters, convs, target, _event_key(event), event, str(rec.get("responsePayload", ""))[:300],
                 ("file", path), function, conversation)
    return list(letters.values())


def _move(store: DiskStore, data_dir: str, letter: Letter, stamp: float) -> None:
    for kind, where in letter.sources:
        if kind == "store":
            rec = json.loads(store.get(where))
            rec["redriven_at"] = stamp
            store.put(REDRIVEN_PREFIX + where[len(STORE_PREFIX):], json.dumps(rec, ensure_ascii=False).encode("utf-8"))
            store.delete(where)
        else:
            rel = os.path.relpath(where, os.path.join(data_dir, "runtime", "deadletters"))
            dest = os.path.join(data_dir, "runtime", "deadletters-redriven", rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(where, dest)


def latest_delivery(store: ObjectStore, cid: str, functions: list[str]):
    """(name, function, info) of the conversation's newest delivery under the functions' inboxes."""
    latest = None
    for fn in functions:
        for info in store.iter(keys.inbox(fn) + f"{cid}/"):
            name = info.key.rsplit("/", 1)[-1]
            if latest is None or name > latest[0]:
                latest = (name, fn, info)
    return latest


def by_conversation(letters: list[Letter], *, function: str | None, conversation: str | None,
                    out: Callable[[str], None]) -> dict[str, list[Letter]]:
    """The letters grouped by conversation; says so through `out` when there are none."""
    if not letters:
        out("no dead letters" + (f" for function {function}" if function else "")
            + (f" of conversation {conversation}" if conversation else ""))
    by_cid: dict[str, list[Letter]] = {}
    for letter in letters:
        by_cid.setdefault(letter.conversation, []).append(letter)
    return by_cid


def reopen(convs: ConversationStore, cid: str, group: list[Letter], *, dry_run: bool,
           out: Callable[[str], None], skipped: list[str]) -> tuple[bool, dict | None]:
    """Before re-driving a conversation's letters: (go on?, the end it had). A conversation that
    ended otherwise than `failed` is skipped (its letters stay); a dry run only says what it
    would do; else a `failed` end is removed, reopening the conversation."""
    end = convs.get_end(cid)
    if end and end.get("status") != "failed":
        for letter in group:
            out(f"skipped {letter.function} {letter.key}: the conversation ended as {end.get('status')}")
            skipped.append(letter.key)
        return False, end
    if dry_run:
        for letter in group:
            out(f"would re-drive {letter.function} {letter.key} ({letter.reason[:120]})")
        return False, end
    if end:
        convs.store.delete(convs.end_key(cid))  # reopen: only a `failed` end is ever removed
        out(f"reopened {cid} (it had failed in {end.get('function')}: {str(end.get('reason'))[:120]})")
    return True, end


def endpoint_invoker(endpoint: str, data_dir: str | None = None) -> Callable[[str, bytes], str]:
    """Async invocations through a running runtime's FC invoke API (the one `serve` prints),
    signed (fc3 SDK) with the AccessKey that runtime keeps in <data>/runtime/fc-access-key.json."""
    from infra.fc.client import local_async_invoker

    return local_async_invoker(endpoint, data_dir)


def redrive(data_dir: str, s_yaml: str | None = None, *, function: str | None = None,
            conversation: str | None = None, endpoint: str | None = None, wait: float = 600.0,
            dry_run: bool = False, llm: str | None = None, out: Callable[[str], None] = print,
            invoke: Callable[[str, bytes], None] | None = None) -> dict:
    """Re-drive the selected dead letters. Returns {"redriven": [...], "skipped": [...], "ended": {cid: status}}."""
    from infra.local import spec as specs
    from infra.local.runtime import DEFAULT_S_YAML, LocalRuntime

    data_dir = os.path.abspath(data_dir)
    if not os.path.isdir(os.path.join(data_dir, "objects")):
        raise RuntimeError(f"{data_dir} is not a troupe data directory (no objects/ in it)")
    fspecs = specs.load(os.path.abspath(s_yaml or DEFAULT_S_YAML))
    by_name = {s.name: s.id for s in fspecs}
    names = {s.id: s.name for s in fspecs}
    inbox_functions = [s.id for s in fspecs if any(t["prefix"] == f"inbox/{s.id}/" for t in s.oss_triggers)]
    store = DiskStore(data_dir)
    convs = ConversationStore(store)
    letters = collect(data_dir, by_name, function=function, conversation=conversation)
    report: dict = {"redriven": [], "skipped": [], "ended": {}}
    by_cid = by_conversation(letters, function=function, conversation=conversation, out=out)
    if not by_cid:
        return report

    sends: list[tuple[str, bytes, str]] = []  # (function id, event, what)
    stamp = time.time()
    for cid, group in sorted(by_cid.items()):
        go, end = reopen(convs, cid, group, dry_run=dry_run, out=out, skipped=report["skipped"])
        if not go:
            continue
        keys = set()
        for letter in group:
            _move(store, data_dir, letter, stamp)
            sends.append((letter.function, letter.event, f"{letter.function} {letter.key}"))
            keys.add(letter.key)
            report["redriven"].append(letter.key)
        latest = latest_delivery(store, cid, inbox_functions)
        if latest and latest[2].key not in keys:
            _, fn, info = latest
            event = json.dumps(make_oss_event(store.bucket, store.region, info.key, info.size, info.etag)).encode()
            sends.append((fn, event, f"{fn} {info.key} (the newest delivery, to resume)"))
    if dry_run or not sends:
        return report

    rt = None
    if invoke is not None:  # tests: (function id, event) -> None
        pass
    elif endpoint:
        send = endpoint_invoker(endpoint, data_dir)
        invoke = lambda fn, event: send(names.get(fn, fn), event)  # noqa: E731
    else:
        rt = LocalRuntime(data_dir, s_yaml, llm=llm)
        try:
            rt.start(dispatch=True, serve_http=False)
        except RuntimeError as e:
            raise RuntimeError(f"{e}: stop it, or pass --endpoint <its FC invoke API> to re-drive through it") from None
        invoke = lambda fn, event: rt.invoke(fn, event, sync=False)  # noqa: E731
    try:
        for fn, event, what in sends:
            invoke(fn, event)
            out(f"re-driven {what}")
        if rt is not None:
            if not rt.wait_idle(wait):
                out(f"still running after {wait:g}s; the rest is delivered by the next `serve` on {data_dir}")
    finally:
        if rt is not None:
            rt.stop()
    if rt is not None:
        for cid in sorted(by_cid):
            end = convs.get_end(cid)
            report["ended"][cid] = end.get("status") if end else "running"
            out(f"{cid}: {report['ended'][cid]}" + (f" ({end.get('reason')})" if end else ""))
    return report
