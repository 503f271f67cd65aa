"""What follows a committed turn: deliveries to the next role, the director, a human, a panel,
or the end.

Used by every writer of turns (role functions, the director, the gateway for the opening
input and for human messages). Everything is derived from the committed record and the
scenario, and every write is create-only or idempotent, so running it twice for the same
turn (a retry, a duplicate event) changes nothing.

A panel (a slot of a round_robin `order` that is a list of roles) fans out: one delivery per
member, each answered in its own invocation and committed create-only at the same turn number.
Every member's answer then tries the join (`join_panel`, on shared/branches.py): once all the
members' answers are there, they are handed on together as one delivery whose key derives from
the panel, so that however many members see the panel complete, and however often (retries,
duplicates, races), the delivery is written once and fires once.
"""

from __future__ import annotations

from shared import branches, records
from shared.conversation import ConversationStore
from shared.errors import BadRequest
from shared.flows import DIRECTOR, Next, after_turn, closing_role
from shared.ids import derive_id

RECENT = 10  # speakers carried along with each delivery, for the director's rules
SCENE = 8  # turns carried along with each delivery, so that every speaker sees the exchange
SCENE_CHARS = 1500  # of each of those turns


def scene_with(scene, speaker: str, content: str) -> list[dict]:
    """The scene's last SCENE turns once `speaker` has said `content`.

    A role function hears only what is addressed to it, so a judge called in at the end, or the
    third speaker of a round, would otherwise know one turn of the exchange. Every turn's record
    carries this window and every delivery hands it on (as MetaGPT's shared environment would
    show it), at a bounded size whatever the conversation's length."""
    return (scene_entries(scene) + [{"from": speaker, "content": (content or "")[:SCENE_CHARS]}])[-SCENE:]


def scene_entries(scene) -> list[dict]:
    """The well-formed {from, content} entries of a scene window read from a delivery or a
    record; anything else (not a list, other entries) is left out."""
    if not isinstance(scene, list):
        return []
    return [e for e in scene if isinstance(e, dict) and isinstance(e.get("from"), str)
            and isinstance(e.get("content"), str)]


def max_hops(limits: dict) -> int:
    """The hard cap on invocations along a conversation's chain of deliveries.

    Every delivery carries `hops`, its parent's plus one, whatever the turn numbers say, so a
    flow that loops without advancing turns (a bug, a misconfigured scenario, a trigger that
    re-fires) still stops: a turn takes at most two hops (the director's and the role's).
    """
    return min(int(limits.get("max_invocations") or 0) or (2 * limits["max_turns"] + 10), HARD_MAX_HOPS)


HARD_MAX_HOPS = 5000


def decide(meta: dict, turn: int, speaker: str, content: str, was_closing: bool,
           panel: dict[str, str] | None = None) -> dict:
    """The next step after `turn`, as stored in the turn's record (`record["next"]`); `panel`: the
    answers of a panel's turn, by role."""
    scenario, limits = meta["scenario"], meta["limits"]
    if was_closing:
        return records.next_step("end", reason="deliverable")
    if turn >= limits["max_turns"]:
        return records.next_step("end", reason="turn_limit")
    nxt: Next = after_turn(scenario, turn, speaker, content, was_closing, panel)
    closing = closing_role(scenario)
    if nxt.kind != "end" and closing and not nxt.closing and turn == limits["max_turns"] - 1:
        # the last turn the limit allows is the closing one, so the deliverable is never lost
        nxt = Next("speak", closing, closing=True, reason="turn_limit")
    return records.next_step(nxt.kind, nxt.role, roles=nxt.roles, closing=nxt.closing, reason=nxt.reason)


def role_spec(meta: dict, name: str) -> dict | None:
    return next((r for r in meta["scenario"]["roles"] if r["name"] == name), None)


def follow(convs: ConversationStore, cid: str, meta: dict, record: dict) -> None:
    """Carry out `record["next"]` for the committed `record`."""
    nxt, turn = records.read_next(record["next"]), record["turn"]
    payload = {"turn": turn, "message": record["message"], "spent": record.get("spent"),
               "recent": (record.get("recent") or [])[-RECENT:], "scene": record.get("scene") or [],
               "hops": int(record.get("hops", 0)) + 1}
    if nxt["kind"] == "end":
        end_turn(convs, cid, meta, record, nxt.get("reason") or "completed")
        return
    if nxt["kind"] == DIRECTOR:
        to_director(convs, cid, record["id"], payload)
        return
    if nxt["kind"] == "panel":
        fan_out(convs, cid, meta, record["id"], nxt["roles"], payload)
        return
    if nxt["kind"] == "join":
        join_panel(convs, cid, meta, record)
        return
    hand_to(convs, cid, meta, nxt["role"], payload, parent=record["id"], after=record["id"],
            closing=nxt["closing"], now=convs.clock())


def fan_out(convs: ConversationStore, cid: str, meta: dict, parent: str, roles: list[str], payload: dict) -> None:
    """A delivery to each member of a panel answering the message `parent` (create-only)."""
    panel = {"parent": parent, "roles": list(roles), "spent": payload["spent"]}
    for role in roles:
        hand_to(convs, cid, meta, role, {**payload, "panel": panel}, parent=parent, after=parent, closing=False,
                now=convs.clock())


def join_panel(convs: ConversationStore, cid: str, meta: dict, record: dict) -> None:
    """Once every member of `record`'s panel has answered: what follows the panel, carried out
    once (shared/branches.py). Before that, nothing."""
    panel, turn = record["panel"], record["turn"]
    try:
        records.check_panel(panel, record["role"])  # as its delivery was checked
    except records.RecordError:
        return  # not a panel this code declared
    members = panel["roles"]
    ordered = branches.arrived(convs, cid, turn, panel["parent"], members)
    if ordered is None:
        return  # a member still to answer joins when it does
    nxt = records.read_next(decide(meta, turn, "", "", False, {a["role"]: a["content"] for a in ordered}))
    joined = branches.joined_id(panel["parent"])
    if nxt["kind"] == "end":
        end_turn(convs, cid, meta, {"turn": turn, "id": joined}, nxt.get("reason") or "completed")
        return
    text = "\n\n".join(f"{a['role']}: {a['content']}" for a in ordered)
    to = {"panel": list(nxt["roles"]), DIRECTOR: [DIRECTOR]}.get(nxt["kind"], [nxt["role"]])
    message = {**ordered[0]["message"], "id": joined, "content": text, "sent_from": ", ".join(members),
               "send_to": to}
    scene = scene_entries(ordered[0].get("scene"))[:-1]
    for a in ordered:
        scene = scene_with(scene, a["role"], a["content"])
    payload = {"turn": turn, "message": message, "spent": branches.spent_together(panel.get("spent"), ordered),
               "recent": ((ordered[0].get("recent") or [])[:-1] + members)[-RECENT:], "scene": scene,
               "hops": max(int(a.get("hops", 0)) for a in ordered) + 1}
    if nxt["kind"] == "panel":  # a panel after a panel
        fan_out(convs, cid, meta, joined, nxt["roles"], payload)
        return
    if nxt["kind"] == DIRECTOR:  # a selector flow: the director picks who follows the panel
        to_director(convs, cid, joined, payload)
        return
    hand_to(convs, cid, meta, nxt["role"], payload, parent=joined, after=joined, closing=nxt["closing"],
            now=convs.clock())


def to_director(convs: ConversationStore, cid: str, parent: str, payload: dict) -> None:
    """The director is asked who follows the message `parent` (create-only, keyed by it)."""
    convs.deliver(DIRECTOR, cid, payload["turn"], derive_id(parent, DIRECTOR), records.delivery(to=DIRECTOR, **payload))


def hand_to(convs: ConversationStore, cid: str, meta: dict, role: str, payload: dict, *, parent: str,
            after: str, closing: bool, now: float) -> None:
    """Give the floor to `role`: a delivery to its function, or, for a person, a wait.

    `payload` is the delivery's body (turn, message, spent, recent, scene, hops); the delivery's id
    derives from `parent` and the role, so a replay writes the same key.
    """
    spec = role_spec(meta, role)
    if spec["human"]:
        convs.open_waiting(cid, {"turn": payload["turn"], "role": role, "closing": closing, "since": now,
                                 "message": payload["message"], "spent": payload.get("spent"),
                                 "recent": payload["recent"], "scene": payload.get("scene") or [],
                                 "after": after, "hops": payload["hops"]})
        return
    # (keyed as a branch is: a panel's join finds its members' answers by these ids)
    convs.deliver(spec["function"], cid, payload["turn"], branches.delivery_id(parent, role),
                  records.delivery(to=role, closing=closing, **payload))


def end_turn(convs: ConversationStore, cid: str, meta: dict, record: dict, reason: str) -> None:
    extra = {"turns": record["turn"]}
    closing = meta["scenario"].get("closing")
    if record.get("closing") and closing:
        extra["deliverable"] = {"role": record["role"], "turn": record["turn"], "id": record["id"],
                                "title": closing["title"]}
        experience = meta["scenario"].get("experience")
        if experience:
            # what the conversation learned goes back into a knowledge base, for later ones
            from shared.knowledge import add_experience

            label = closing["title"].get("en") or next(iter(closing["title"].values()))
            title = " ".join(f"{label}: {meta.get('input', '')}".split())[:100]
            try:
                add_experience(convs.store, experience["kb"], cid, title, record.get("content") or "")
                extra["experience"] = {"kb": experience["kb"], "doc": f"experience/{cid}.md"}
            except BadRequest as e:  # e.g. an empty deliverable: the conversation still ends
                extra["experience"] = {"kb": experience["kb"], "error": e.message}
    status = "completed" if reason in ("deliverable", "end_condition", "rounds_done", "turn_limit", "completed", "idle") else "stopped"
    convs.end(cid, status, reason, **extra)
