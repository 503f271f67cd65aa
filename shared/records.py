"""The records one function writes for another: typed, versioned, one builder and one reader each.

  delivery    inbox/<function>/<cid>/<turn>-<id>.json      wakes a role function or the director
  turn        conversations/<cid>/messages/<turn>-<id>.json a committed turn
  invocation  in its turn's record, or conversations/<cid>/invocations/<start>-<request>.json
  end         conversations/<cid>/end.json                 how the conversation ended

Every builder stamps `v`, the version of the record's shape. FC updates a deployment's
functions one at a time, so during a deploy a function may read what an older or a newer
version of another wrote. A reader takes every version it knows: records written before
versions existed carry no `v` and are read as version 1, which is their shape. A newer version
is refused with RecordVersionError, never misread. That error is transient (the invocation
fails and FC retries it; by then the reading function is normally updated too, and if it is
not, the dead letter names the version). A record that is not one of these shapes at all is a
RecordError: a rejected event, never retried.

`next` has one shape, whatever the flow: {kind, role, roles, closing, reason}.
  kind "speak"     `role` speaks next (`closing`: the closing turn)
  kind "director"  the director picks who speaks
  kind "sop"       the SOP roles in `roles` each get the turn's messages addressed to them
  kind "end"       the conversation ends, for `reason`
  kind "panel"     the roles in `roles` answer the turn at once, each in its own invocation
  kind "join"      a branch's answer (a panel member's, a file's): what follows is decided
                   once every branch has answered (shared/branches.py)
  kind "branches"  an SOP role's work items (files) are done at once, each in its own
                   invocation of the role, wave after wave (shared/sop/parallel.py)
"""

from __future__ import annotations

from typing import Any, Iterable

from shared.errors import RejectedEvent, TroupeError
from shared.branches import MAX_WIDTH
from shared.flows import MAX_PANEL

VERSION = 1
"""the version this code writes, and the newest it reads"""

NEXT_KINDS = ("speak", "director", "sop", "end", "panel", "join", "branches")
"""panel: the roles answer the turn at once, each in its own invocation; join: a branch's
answer, whose conversation goes on once every branch has answered (shared/branches.py);
branches: an SOP role's work items, done at once"""
END_STATUSES = ("completed", "stopped", "failed", "cancelled", "budget_exhausted")


class RecordError(RejectedEvent):
    """A stored record that is not the shape it should be: no retry can fix it."""


class RecordVersionError(TroupeError):
    """A record written by a newer troupe than this function's: transient (see the module)."""

    status = 503
    code = "RecordVersion"


def _version(kind: str, obj: Any) -> dict:
    if not isinstance(obj, dict):
        raise RecordError(f"a {kind} record must be a JSON object")
    v = obj.get("v", 1)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise RecordError(f"a {kind} record's version must be a positive integer, not {str(v)[:20]!r}")
    if v > VERSION:
        raise RecordVersionError(f"this {kind} record is version {v}, written by a newer troupe; this function "
                                 f"reads up to version {VERSION}: deploy the same version to every function",
                                 kind=kind, version=v)
    return obj


def _require(kind: str, obj: dict, name: str, types: type | tuple) -> Any:
    value = obj.get(name)
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        value = None
    if not isinstance(value, types):
        raise RecordError(f"a {kind} record needs {name!r}")
    return value


# -- next ------------------------------------------------------------------------------------

def next_step(kind: str, role: str | None = None, *, roles: Iterable[str] = (), closing: bool = False,
              reason: str | None = None) -> dict:
    if kind not in NEXT_KINDS:
        raise ValueError(f"next kind must be one of {', '.join(NEXT_KINDS)}")
    return {"kind": kind, "role": role, "roles": sorted(roles), "closing": bool(closing), "reason": reason}


def read_next(obj: Any) -> dict:
    """`next` in its one shape; version-1 records without `roles` (dialogue flows) or without
    `role`/`closing` (SOP turns) are completed."""
    if not isinstance(obj, dict) or obj.get("kind") not in NEXT_KINDS:
        raise RecordError(f"a turn's next step must have a kind among {', '.join(NEXT_KINDS)}")
    roles = obj.get("roles") or []
    role = obj.get("role")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles) or \
            (role is not None and not isinstance(role, str)):
        raise RecordError("a turn's next step names its roles as strings")
    if obj["kind"] == "speak" and not role:
        raise RecordError("a turn's next step of kind speak names the role")
    if obj["kind"] == "panel" and len(set(roles)) < 2:
        raise RecordError("a turn's next step of kind panel names its roles")
    return {"kind": obj["kind"], "role": role, "roles": sorted(roles), "closing": bool(obj.get("closing")),
            "reason": obj.get("reason")}


# -- delivery --------------------------------------------------------------------------------

def delivery(*, to: str, turn: int, message: dict, hops: int, spent: dict | None = None,
             recent: list | tuple = (), scene: list | tuple = (), closing: bool = False, **extra) -> dict:
    """What a role function (or the director) is woken with. `extra`: the SOP's `messages` (all
    the turn's messages for this role) and `workspace` (the project's manifest key)."""
    return {"v": VERSION, "to": to, "turn": turn, "message": message, "hops": int(hops), "spent": spent,
            "recent": list(recent), "scene": list(scene), "closing": bool(closing), **extra}


def read_delivery(obj: Any, turn: int | None = None) -> dict:
    kind = "delivery"
    obj = _version(kind, obj)
    _require(kind, obj, "message", dict)
    _require(kind, obj, "to", str)
    if not isinstance(obj.get("turn"), int) or isinstance(obj.get("turn"), bool) or \
            (turn is not None and obj["turn"] != turn):
        raise RecordError("a delivery's turn does not match its key")
    hops = obj.get("hops", 0)
    if isinstance(hops, bool) or not isinstance(hops, int) or hops < 0:
        raise RecordError("a delivery's hops must be a whole number")
    if obj.get("panel") is not None:
        check_panel(obj["panel"], obj["to"])
    if obj.get("branch") is not None:
        check_branch(obj["branch"])
    return {**obj, "v": obj.get("v", 1), "hops": hops, "recent": obj.get("recent") or [],
            "scene": obj.get("scene") or [], "closing": bool(obj.get("closing"))}


def check_panel(panel: Any, to: str) -> None:
    """A delivery to a panel's member: {parent, roles (2 to MAX_PANEL, distinct, `to` among them), spent}."""
    roles = panel.get("roles") if isinstance(panel, dict) else None
    spent = panel.get("spent") if isinstance(panel, dict) else None
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles) or \
            not 2 <= len(set(roles)) == len(roles) <= MAX_PANEL or to not in roles:
        raise RecordError(f"a panel delivery names 2 to {MAX_PANEL} distinct roles, its recipient among them")
    if not isinstance(panel.get("parent"), str) or not panel["parent"]:
        raise RecordError("a panel delivery names the message its members answer")
    _check_spent(spent, "panel")


MAX_ITEM = 300
"""the longest name of a branch's work item (a file of the task list)"""
WORK = ("code", "tests")
"""what an SOP branch does: the engineer writes one file, QA writes and runs one file's tests"""


def check_branch(branch: Any) -> None:
    """A delivery to an SOP branch: {parent, work, item, items (its wave: 1 to MAX_WIDTH distinct
    names, `item` among them), waves (the waves after it), messages (what the role works from),
    then (the messages that follow the last wave, as an outbox), base (the workspace the wave
    starts from), spent}."""
    if not isinstance(branch, dict):
        raise RecordError("a branch delivery's branch must be an object")
    items, waves = branch.get("items"), branch.get("waves")
    if not _wave(items) or branch.get("item") not in items:
        raise RecordError(f"a branch delivery names its wave, 1 to {MAX_WIDTH} distinct names, its item among them")
    if not isinstance(waves, list) or not all(_wave(w) for w in waves):
        raise RecordError(f"a branch delivery's later waves are lists of 1 to {MAX_WIDTH} distinct names")
    messages = branch.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RecordError("a branch delivery carries the messages its role works from")
    if branch.get("work") not in WORK:
        raise RecordError(f"a branch delivery's work is one of {', '.join(WORK)}")
    if not isinstance(branch.get("parent"), str) or not branch["parent"]:
        raise RecordError("a branch delivery names the turn it branches from")
    if branch.get("base") is not None and not isinstance(branch["base"], str):
        raise RecordError("a branch delivery's base workspace is a key")
    then = branch.get("then")
    if not isinstance(then, list) or not all(
            isinstance(t, dict) and isinstance(t.get("message"), dict) and isinstance(t.get("to"), list)
            and all(isinstance(r, str) for r in t["to"]) for t in then):
        raise RecordError("a branch delivery's then is a list of {message, to}")
    _check_spent(branch.get("spent"), "branch")


def _wave(names: Any) -> bool:
    return isinstance(names, list) and 1 <= len(names) <= MAX_WIDTH and len(set(names)) == len(names) and \
        all(isinstance(n, str) and 0 < len(n) <= MAX_ITEM for n in names)


def _check_spent(spent: Any, kind: str) -> None:
    if spent is not None and not (isinstance(spent, dict) and all(
            isinstance(spent.get(k, 0), (int, float)) and not isinstance(spent.get(k, 0), bool)
            for k in ("tokens", "cost_cny"))):
        raise RecordError(f"a {kind} delivery's spending must be numbers")


# -- turn ------------------------------------------------------------------------------------

def turn_record(*, turn: int, id: str, role: str, profile: str, function: str, content: str, message: dict,
                next: dict, **extra) -> dict:
    """A committed turn. `extra`: sent_from, send_to, cause_by, reply_to, closing, invocation,
    spent, recent, scene, hops, citations (dialogue); outbox, workspace, changed (SOP)."""
    return {"v": VERSION, "turn": turn, "id": id, "role": role, "profile": profile, "function": function,
            "content": content, "message": message, "next": read_next(next), **extra}


def read_turn(obj: Any) -> dict:
    kind = "turn"
    obj = _version(kind, obj)
    if not isinstance(obj.get("turn"), int) or isinstance(obj.get("turn"), bool) or obj["turn"] < 0:
        raise RecordError("a turn record needs its turn number")
    for name in ("id", "role"):
        _require(kind, obj, name, str)
    _require(kind, obj, "message", dict)
    return {**obj, "v": obj.get("v", 1), "next": read_next(obj.get("next"))}


# -- invocation ------------------------------------------------------------------------------

def invocation(*, function: str, request_id: str, start: float, outcome: str, **extra) -> dict:
    """One invocation of a function: who, when, what came of it; `extra`: pid, role, turn,
    trigger, duration_ms, LLM counts and the bill's fields."""
    return {"v": VERSION, "function": function, "request_id": request_id, "start": start, "outcome": outcome,
            **extra}


def read_invocation(obj: Any) -> dict:
    kind = "invocation"
    obj = _version(kind, obj)
    for name in ("function", "outcome"):
        _require(kind, obj, name, str)
    _require(kind, obj, "start", (int, float))
    return {**obj, "v": obj.get("v", 1)}


# -- end -------------------------------------------------------------------------------------

def end(*, status: str, reason: str, at: float, **extra) -> dict:
    if status not in END_STATUSES:
        raise ValueError(f"end status must be one of {', '.join(END_STATUSES)}")
    return {"v": VERSION, "status": status, "reason": reason, "at": at, **extra}


def read_end(obj: Any) -> dict:
    kind = "end"
    obj = _version(kind, obj)
    if obj.get("status") not in END_STATUSES:
        raise RecordError(f"an end record's status must be one of {', '.join(END_STATUSES)}")
    _require(kind, obj, "reason", str)
    return {**obj, "v": obj.get("v", 1)}
