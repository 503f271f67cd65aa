"""What follows a committed turn: deliveries to the next role, the director, a human, or the end.

Used by every writer of turns (role functions, the director, the gateway for the opening
input and for human messages). Everything is derived from the committed record and the
scenario, and every write is create-only or idempotent, so running it twice for the same
turn (a retry, a duplicate event) changes nothing.
"""

from __future__ import annotations

import time

from shared.conversation import ConversationStore
from shared.flows import DIRECTOR, Next, after_turn, closing_role
from shared.ids import derive_id

RECENT = 10  # speakers carried along with each delivery, for the director's rules


def max_hops(limits: dict) -> int:
    """The hard cap on invocations along a conversation's chain of deliveries.

    Every delivery carries `hops`, its parent's plus one, whatever the turn numbers say, so a
    flow that loops without advancing turns (a bug, a misconfigured scenario, a trigger that
    re-fires) still stops: a turn takes at most two hops (the director's and the role's).
    """
    return min(int(limits.get("max_invocations") or 0) or (2 * limits["max_turns"] + 10), HARD_MAX_HOPS)


HARD_MAX_HOPS = 5000


def decide(meta: dict, turn: int, speaker: str, content: str, was_closing: bool) -> dict:
    """The next step after `turn`, as stored in the turn's record (`record["next"]`)."""
    scenario, limits = meta["scenario"], meta["limits"]
    if was_closing:
        return {"kind": "end", "reason": "deliverable"}
    if turn >= limits["max_turns"]:
        return {"kind": "end", "reason": "turn_limit"}
    nxt: Next = after_turn(scenario, turn, speaker, content, was_closing)
    closing = closing_role(scenario)
    if nxt.kind != "end" and closing and not nxt.closing and turn == limits["max_turns"] - 1:
        # the last turn the limit allows is the closing one, so the deliverable is never lost
        nxt = Next("speak", closing, closing=True, reason="turn_limit")
    return {"kind": nxt.kind, "role": nxt.role, "closing": nxt.closing, "reason": nxt.reason}


def role_spec(meta: dict, name: str) -> dict | None:
    return next((r for r in meta["scenario"]["roles"] if r["name"] == name), None)


def follow(convs: ConversationStore, cid: str, meta: dict, record: dict) -> None:
    """Carry out `record["next"]` for the committed `record`."""
    nxt, turn = record["next"], record["turn"]
    recent = (record.get("recent") or [])[-RECENT:]
    payload = {"turn": turn, "message": record["message"], "spent": record.get("spent"), "recent": recent,
               "hops": int(record.get("hops", 0)) + 1}
    if nxt["kind"] == "end":
        end_turn(convs, cid, meta, record, nxt.get("reason") or "completed")
        return
    if nxt["kind"] == DIRECTOR:
        did = derive_id(record["id"], DIRECTOR)
        convs.deliver(DIRECTOR, cid, turn, did, {**payload, "to": DIRECTOR})
        return
    spec = role_spec(meta, nxt["role"])
    if spec["human"]:
        convs.open_waiting(cid, {"turn": turn, "role": spec["name"], "closing": nxt["closing"], "since": time.time(),
                                 "message": record["message"], "spent": record.get("spent"), "recent": recent,
                                 "after": record["id"], "hops": payload["hops"]})
        return
    did = derive_id(record["id"], spec["name"])
    convs.deliver(spec["function"], cid, turn, did, {**payload, "to": spec["name"], "closing": nxt["closing"]})


def end_turn(convs: ConversationStore, cid: str, meta: dict, record: dict, reason: str) -> None:
    extra = {"turns": record["turn"]}
    closing = meta["scenario"].get("closing")
    if record.get("closing") and closing:
        extra["deliverable"] = {"role": record["role"], "turn": record["turn"], "id": record["id"],
                                "title": closing["title"]}
    status = "completed" if reason in ("deliverable", "end_condition", "rounds_done", "turn_limit", "completed") else "stopped"
    convs.end(cid, status, reason, **extra)
