"""The onFailure destination: an event whose retries are exhausted ends its conversation as
`failed` (naming the function and the reason) and is kept under `deadletters/` for re-driving.

The record is FC's async-invocation destination payload: {"requestContext": {"requestId",
"functionArn", "condition", "approximateInvokeCount"}, "requestPayload": <original event>,
"responseContext": {...}, "responsePayload": <error>}.
"""

from __future__ import annotations

import json
import logging

from shared import keys
from shared.conversation import ConversationStore, _dump
from shared.errors import BadRequest, RejectedEvent
from shared.events import OssEvent, _loads

log = logging.getLogger("troupe.deadletter")


def handle_failure(event: bytes | str | dict, convs: ConversationStore) -> list[dict]:
    record = _loads(event, "failure record")
    payload = record.get("requestPayload")
    ctx = record.get("requestContext") or {}
    reason = str(record.get("responsePayload") or ctx.get("condition") or "unknown error")[:1000]
    try:
        parsed = OssEvent.parse(payload if isinstance(payload, (str, bytes, dict)) else b"")
    except BadRequest as e:
        log.warning("dead letter without an OSS event payload: %s", e.message)
        return [{"outcome": "rejected", "reason": e.message}]
    out = []
    for rec in parsed.records:
        parts = rec.key.split("/")
        if len(parts) != 4 or parts[0] != "inbox":
            out.append({"outcome": "rejected", "reason": "not a delivery key", "key": rec.key[:200]})
            continue
        function = parts[1]
        try:
            cid, turn, msgid = convs.parse_delivery_key(function, rec.key)
        except RejectedEvent as e:
            out.append({"outcome": "rejected", "reason": e.message, "key": rec.key[:200]})
            continue
        letter = {"key": rec.key, "function": function, "conversation": cid, "turn": turn,
                  "reason": reason, "condition": ctx.get("condition", ""),
                  "attempts": ctx.get("approximateInvokeCount"), "request_id": ctx.get("requestId", ""),
                  "event": json.loads(json.dumps(parsed.raw))}
        if _processed(convs, cid, rec.key, msgid):
            # a twin of this event (a duplicate delivery) did the work: nothing failed
            letter["superseded"] = True
            convs.store.put(keys.deadletter(function, cid, turn, msgid), _dump(letter))
            out.append({"outcome": "superseded", "conversation": cid, "function": function})
            continue
        convs.store.put(keys.deadletter(function, cid, turn, msgid), _dump(letter))
        if convs.exists(cid):
            convs.end(cid, "failed", reason, function=function, turn=turn)
        out.append({"outcome": "dead-lettered", "conversation": cid, "function": function})
    return out


def _processed(convs: ConversationStore, cid: str, key: str, delivery_id: str) -> bool:
    """Whether the role this delivery was for has consumed it already (its state says so)."""
    try:
        role = convs.read_delivery(key).get("to")
        state = convs.load_state(cid, role) if isinstance(role, str) and role != "director" else None
    except Exception:  # noqa: BLE001 - unreadable: treat as not processed, and fail visibly
        return False
    return bool(state and delivery_id in state.get("seen", []))
