"""The onFailure destination: an event whose retries are exhausted ends its conversation as
`failed` (naming the function and the reason) and is kept under `deadletters/` for re-driving.
A panel member's event, in a scenario whose `on_dead_letter` is `continue`, instead leaves a
record naming the member as missing, and the panel's join goes on with the answers that arrived.

The record is FC's async-invocation destination payload: {"requestContext": {"requestId",
"functionArn", "condition", "approximateInvokeCount"}, "requestPayload": <original event>,
"responseContext": {...}, "responsePayload": <error>}.
"""

from __future__ import annotations

import json
import logging

from shared import keys, records
from shared.conversation import ConversationStore, _dump
from shared.errors import BadRequest, RejectedEvent
from shared.events import OssEvent, _loads
from shared.ids import reply_id
from shared.routing import RECENT, join_panel, role_spec, scene_with

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
        if convs.exists(cid) and _go_on_without(convs, cid, rec.key, turn, msgid, function, reason):
            out.append({"outcome": "continued", "conversation": cid, "function": function})
            continue
        if convs.exists(cid):
            convs.end(cid, "failed", reason, function=function, turn=turn)
        out.append({"outcome": "dead-lettered", "conversation": cid, "function": function})
    return out


def _processed(convs: ConversationStore, cid: str, key: str, delivery_id: str) -> bool:
    """Whether the role this delivery was for has consumed it already: its state says so, or (a
    branch, which keeps no state) its turn is committed."""
    try:
        delivery = convs.read_delivery(key)
        role = delivery.get("to")
        if delivery.get("branch") or delivery.get("panel"):
            # (a record saying the member is missing is this function's own: its join may be due)
            found = convs.message(cid, delivery["turn"] + 1, reply_id(cid, delivery_id))
            return found is not None and not found.get("missing")
        state = convs.load_state(cid, role) if isinstance(role, str) and role != "director" else None
    except Exception:  # noqa: BLE001 - unreadable: treat as not processed, and fail visibly
        return False
    return bool(state and delivery_id in state.get("seen", []))


def _go_on_without(convs: ConversationStore, cid: str, key: str, turn: int, delivery_id: str, function: str,
                   reason: str) -> bool:
    """A panel member's dead letter, in a scenario whose `on_dead_letter` is `continue`: its place
    in the panel is taken by a record that says it is missing and why (create-only, at the key
    its answer would have had), and the join goes on with the answers that arrived. False where
    the policy is `fail` (the default) or the delivery is not a panel member's."""
    try:
        delivery = convs.read_delivery(key, turn)
        meta = convs.meta(cid)
    except Exception:  # noqa: BLE001 - unreadable: the conversation fails, visibly
        return False
    panel = delivery.get("panel")
    if panel is None or meta["scenario"].get("on_dead_letter", "fail") != "continue" or convs.is_ended(cid):
        return False
    role = delivery["to"]
    spec = role_spec(meta, role) or {}
    out_id = reply_id(cid, delivery_id)
    content = f"(no answer: {role} failed: {reason[:300]})"
    record = records.turn_record(
        turn=turn + 1, id=out_id, role=role, profile=spec.get("profile", role), function=function, content=content,
        message={**delivery["message"], "id": out_id, "content": content, "sent_from": role, "send_to": []},
        next=records.next_step("join"), panel=panel, missing=reason[:1000], spent=delivery.get("spent"),
        recent=(delivery["recent"] + [role])[-RECENT:], scene=scene_with(delivery["scene"], role, content),
        hops=delivery["hops"], closing=False)
    if not convs.commit(cid, turn + 1, out_id, record):
        record = convs.message(cid, turn + 1, out_id) or record  # its answer, or an earlier placeholder
    join_panel(convs, cid, meta, record)
    return True
