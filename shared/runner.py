"""The role runner: one invocation = one delivered message = at most one turn.

    delivery ─► load role state ─► MetaGPT Role.run (observe, react) ─► commit turn
             ─► save role state ─► deliver to recipients' inboxes (or end the conversation)

Exactly-once effect on at-least-once triggers:
  * every key is deterministic: the reply's id derives from the delivery that caused it;
  * LLM replies are journaled under the delivery's id before they are used (JournalingLLM),
    so a retry replays them instead of paying again and reaches the same commit;
  * commits and deliveries are create-only, so a replay writes nothing new;
  * the role state lists the deliveries it has consumed: a duplicate is recognised with the
    one state read every turn makes anyway, and only re-asserts the deliveries downstream.
Storage requests per turn are a constant (see `bench/`), whatever the transcript's length.

The pipeline is the same for every role; what a role does in its turn is its strategy's
(`Strategy`): scenario characters and a deployment's own MetaGPT roles play by
`DialogueStrategy` below, MetaGPT's software-company roles by shared.sop.runner's
`SopStrategy`. A strategy opens a `Play` for one turn, which holds that turn's own state
(a workspace, a lock, what the role published). Every way an invocation ends is an `Outcome`
value, recorded in one place (`RoleRunner._settle`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import random
import time
import uuid
from functools import lru_cache
from typing import Callable, Protocol

import shared.mg  # noqa: F401  (pins MetaGPT's root before it is imported)
from metagpt.actions import UserRequirement
from metagpt.roles.role import Role
from metagpt.schema import Message

from shared import handback, records
from shared.billing import Budget, bill_fields
from shared.conversation import ConversationStore
from shared.errors import BadRequest, NoSuchKey, RejectedEvent
from shared.events import for_each_created, for_key
from shared.ids import check_name, derive_id, reply_id
from shared.routing import RECENT, decide, follow, max_hops, role_spec, scene_entries, scene_with
from shared.llm import errors as llm_errors
from shared.llm.journal import InFlight, JournalingLLM
from shared.roles.character import Character

log = logging.getLogger("troupe.runner")

#: packages a scenario's `class:` may name: troupe's own roles, and `user_roles`, the package a
#: deployment ships its own MetaGPT Role subclasses in (beside a function's index.py, or in the layer),
#: and MetaGPT's own roles (the software-company SOP)
CITATIONS = 3  # knowledge-base passages a role is given per turn

ROLE_PACKAGES = ("shared.roles.", "user_roles.", "metagpt.roles.")
THROTTLE_SHARE = 0.25
"""the share of the function's timeout an invocation may spend waiting on the model's rate limit"""


@lru_cache(maxsize=1)
def _context():
    return shared.mg.make_context()


@lru_cache(maxsize=32)
def role_class(path: str | None):
    """The MetaGPT Role subclass a scenario role names (`package.module:Class`), else Character."""
    if not path:
        return Character
    module, _, name = path.partition(":")
    if not module.startswith(ROLE_PACKAGES):
        raise RejectedEvent(f"role class {path!r} is outside the allowed packages ({', '.join(ROLE_PACKAGES)})")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception as e:  # noqa: BLE001 - a deployment's module may fail in any way; named, never retried
        text = str(e).splitlines()[0][:200] if str(e) else ""
        raise RejectedEvent(f"role class {path!r} cannot be imported: {type(e).__name__}: {text}") from None
    if not (isinstance(cls, type) and issubclass(cls, Role)):
        raise RejectedEvent(f"{path!r} is not a MetaGPT Role subclass")
    return cls


@dataclasses.dataclass
class Turn:
    """One invocation's delivery and what the runner has learnt about it so far."""

    cid: str
    turn_in: int
    """The turn the delivered message committed (0 for the opening input)."""
    delivery_id: str
    delivery: dict
    meta: dict
    spec: dict
    base: dict
    """The fields every invocation record of this invocation starts with."""
    out_id: str
    """The id of the reply this delivery causes: derived, so every retry writes the same key."""
    closing: bool = False
    handed_back: dict | None = None
    """{attempt, first} when this invocation is a hand-back of the turn (shared/handback.py)."""

    @property
    def role_name(self) -> str:
        return self.delivery["to"]

    @property
    def new_turn(self) -> int:
        return self.turn_in + 1

    @property
    def branch(self) -> dict | None:
        """An SOP branch's work item (shared/sop/parallel.py): the role works on it alone, from
        no state of its own, and leaves its state as it was."""
        return self.delivery.get("branch")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How an invocation ended. `kind` is the invocation record's outcome: committed, replayed,
    duplicate, ignored, failed, in_flight, budget_exhausted, ended or handed_back."""

    kind: str
    record: dict | None = None
    """committed: the turn record, whose invocation record is the invocation's"""
    reason: str | None = None
    end: tuple[str, str, dict] | None = None
    """(status, reason, fields) the conversation ends with, if this ends it"""
    fields: dict = dataclasses.field(default_factory=dict)
    """more fields for the invocation record (a failed step, the holder of a call in flight)"""

    @classmethod
    def failed(cls, turn: "Turn", function: str, reason: str, role: str | None = None, **fields) -> "Outcome":
        """A failure no retry would fix: the conversation ends `failed`, naming who and where."""
        return cls("failed", reason=reason, fields=fields,
                   end=("failed", reason, {"function": function, "role": role or turn.role_name, **fields,
                                           "turn": turn.turn_in}))

    @classmethod
    def failed_at(cls, turn: "Turn", function: str, role: Role, step: str, cause: str, **fields) -> "Outcome":
        """A role's failure at a step: `Proponent (Proponent) failed at Speak: <cause>`."""
        return cls.failed(turn, function, f"{role.profile} ({role.name}) failed at {step}: {cause}",
                          role=role.name, step=step, **fields)


class Play(Protocol):
    """One turn of one role, as its strategy plays it."""

    role: Role

    def feed(self) -> None:
        """Put what was delivered into the role's buffer."""

    async def run(self) -> Message | None:
        """The role's turn: MetaGPT's Role.run, or the strategy's way through it."""

    def failure(self, error: Exception) -> Outcome | None:
        """The outcome of a role's error that no retry would fix; None to let FC retry."""

    def step(self) -> str:
        """The action the role is at (what a failure names)."""

    def idle(self) -> Outcome:
        """The outcome when the role observed nothing in what it was sent."""

    def record(self, rsp: Message, invocation: dict, spent: dict) -> dict:
        """The turn record of the role's reply (records.turn_record)."""

    def close(self) -> None:
        """Release what the play took for this invocation alone."""


class Strategy(Protocol):
    def progress(self, function: str, turn: "Turn") -> dict | None:
        """What a paid LLM call of this turn tells watchers (None: nothing)."""

    def play(self, runner: "RoleRunner", turn: "Turn", state: dict | None, llm: JournalingLLM) -> Play:
        """Open the turn: the role restored from `state`, or created (RejectedEvent if it cannot run)."""

    def follow(self, convs: ConversationStore, turn: "Turn", record: dict) -> None:
        """Carry out what follows a committed turn (deliveries, or the end). Idempotent."""


class RoleRunner:
    """The turn pipeline of one role function; `strategy` is what its roles do in a turn."""

    def __init__(self, convs: ConversationStore, function: str, llm_factory: Callable[..., object],
                 clock: Callable[[], float] = time.time, memory_mb: float | None = None,
                 timeout_s: float = 120.0, strategy: Strategy | None = None,
                 handback: Callable[[bytes, float], str] | None = None, throttle_wait_s: float | None = None,
                 rng: random.Random | None = None):
        self.convs = convs
        self.function = check_name(function, "function")
        self.llm_factory = llm_factory
        self.clock = clock
        self.memory_mb = memory_mb
        """The function's memory size, for the compute part of the bill."""
        self.timeout_s = timeout_s
        """The function's timeout: a claim on an LLM call older than this was abandoned."""
        self.strategy = strategy or DialogueStrategy()
        self.handback = handback
        """(event, delay in s) -> request id: the delayed invocation of this function a throttled
        turn is handed back with (shared/handback.py); None: FC's error retries take it."""
        self.throttle_wait_s = THROTTLE_SHARE * timeout_s if throttle_wait_s is None else throttle_wait_s
        """How long an invocation may wait on the model's rate limit before handing the turn back."""
        self.rng = rng or random.Random()

    # -- entry points ----------------------------------------------------------------------
    def handle_event(self, event: bytes | str | dict, request_id: str = "") -> list[dict]:
        """Handle an OSS trigger event (one or more records), or a turn handed back
        (shared/handback.py). Returns one outcome per record."""
        try:
            back = handback.read(event)
        except BadRequest as e:
            log.warning("rejected event: %s", e.message)
            return [{"outcome": "rejected", "reason": e.message}]
        if back is not None:
            return [for_key(back["key"], self.handle_key, request_id, log, back, back["due"])]
        return for_each_created(event, self.handle_key, request_id, log, timed=True)

    async def handle_key(self, key: str, request_id: str = "", back: dict | None = None,
                         since: float | None = None) -> dict:
        """One delivery's turn. `since`: when the event could first have run (the OSS event's time,
        or when a hand-back was due), so that the invocation record shows the time it queued."""
        turn = self._open(key, request_id)
        turn.handed_back = back
        if since is not None and 0 <= turn.base["start"] - since < 86400:
            turn.base["queued_ms"] = round((turn.base["start"] - since) * 1000, 1)
        outcome, llm = self._check_limits(turn), None
        if outcome is None:
            outcome, llm = await self._turn(turn)
        rec = self._settle(turn, outcome, llm)
        if outcome.kind not in ("handed_back", "in_flight", "duplicate") and \
                (turn.handed_back or (llm is not None and llm.throttled)):
            self._show_waiting(turn, None)  # the wait is over
        return rec

    async def _turn(self, turn: "Turn") -> tuple[Outcome, JournalingLLM | None]:
        """Load the role, run it, commit what it said: the outcome, and the LLM it paid with."""
        convs, cid = self.convs, turn.cid
        if turn.branch:
            # a branch has no state of its own: its committed record says it was processed
            state, seen = None, []
            record = convs.message(cid, turn.new_turn, turn.out_id)
            processed = record is not None
        else:
            state = convs.load_state(cid, turn.role_name)
            seen = state["seen"] if state else []
            processed = turn.delivery_id in seen
            record = convs.message(cid, turn.new_turn, turn.out_id) if processed else None
        if processed:
            # processed before: only re-assert what follows the commit
            if record is not None:
                self.strategy.follow(convs, turn, record)
            return Outcome("duplicate"), None

        spent = turn.delivery.get("spent") or {"tokens": 0, "cost_cny": 0.0}
        inner = self.llm_factory(model=turn.spec.get("model"))
        model = getattr(inner, "model", None) or inner.config.model
        budget = Budget(turn.meta["limits"], spent, model, inner.config.max_token)
        llm = JournalingLLM(inner, convs, cid, turn.delivery_id, budget=budget, holder=turn.base["request_id"],
                            stale_after=self.timeout_s, clock=self.clock,
                            progress=self.strategy.progress(self.function, turn),
                            throttle_budget=self.throttle_wait_s, rng=self.rng,
                            on_wait=lambda seconds: self._show_waiting(turn, seconds))
        try:
            play = self.strategy.play(self, turn, state, llm)
        except RejectedEvent as e:
            # the scenario names a role that cannot run here: no retry will fix it, so say so
            return Outcome.failed(turn, self.function, e.message), None
        try:
            role = play.role
            self._bind(role, llm)
            play.feed()
            try:
                rsp = await play.run()
            except Exception as e:
                if llm.stopped is None:
                    # this invocation fails: a call it claimed and did not finish is free (and only
                    # a turn whose claim was given back can be handed back: another request id takes it)
                    released = llm.abandon()
                    failed = self._refused(turn, play, e, getattr(inner, "key_variable", None)) \
                        or (self._hand_back(turn, e) if released else None)
                    if failed is None:
                        raise
                    return failed, llm
                if isinstance(llm.stopped, InFlight):
                    # a duplicate racing the invocation that is paying for this turn: leave it the turn
                    return Outcome("in_flight", fields={"holder": llm.stopped.details.get("holder")}), llm
                # a budget refused the next call: end the conversation, naming the budget
                message = llm.stopped.message
                return Outcome("budget_exhausted", reason=message, end=(
                    "budget_exhausted", message, {"budget": llm.stopped.details.get("budget"),
                                                  "turns": turn.turn_in})), llm
            if rsp is None:
                if not turn.branch:
                    convs.save_state(cid, turn.role_name, self._state(role, seen + [turn.delivery_id], state))
                return play.idle(), llm
            try:
                record = play.record(rsp, self._invocation(turn, llm),
                                     {"tokens": budget.tokens, "cost_cny": round(budget.cost, 8)})
            except RejectedEvent as e:
                # what the role produced cannot be kept (e.g. a workspace over its limits)
                return Outcome.failed(turn, self.function, e.message), llm
            return self._commit(turn, role, record, state, seen), llm
        finally:
            play.close()

    def _refused(self, turn: "Turn", play: Play, error: Exception, key_variable: str | None) -> Outcome | None:
        """The outcome of a role's error that no retry would fix, else None. An LLM error says for
        itself (shared.llm.errors): a refused request or key ends the conversation naming role and
        step, wasting no retry; a throttled call is handed back (`_hand_back`), a failed one left
        to FC's retries. Any other error is the play's to judge."""
        found = llm_errors.classify(error, key_variable)
        if found is None:
            return play.failure(error)
        if found.kind in (llm_errors.TRANSIENT, llm_errors.THROTTLED):
            return None
        return Outcome.failed_at(turn, self.function, play.role, play.step(), found.reason, llm_error=found.kind)

    def _hand_back(self, turn: "Turn", error: Exception) -> Outcome | None:
        """A call the model's rate limit still refuses after this invocation's waiting: the turn
        goes back to FC as a delayed invocation of this function, and this one ends without an
        error, so FC's error retries are kept (shared/handback.py). None where it cannot be."""
        found = llm_errors.classify(error)
        if self.handback is None or found is None or found.kind != llm_errors.THROTTLED:
            return None
        attempt = (turn.handed_back or {}).get("attempt", 0) + 1
        first = (turn.handed_back or {}).get("first", turn.base["start"])
        seconds = handback.delay(attempt, found.retry_after, self.rng)
        try:
            request_id = self.handback(handback.event(turn.base["trigger"], attempt, first, self.clock() + seconds),
                                       seconds)
        except Exception:  # noqa: BLE001 - FC's error retries take the turn instead
            log.warning("could not hand the throttled turn back; FC retries it", exc_info=True)
            return None
        self._show_waiting(turn, seconds, attempt, since=first)
        return Outcome("handed_back", reason="waiting for the model's rate limit",
                       fields={"handed_back": attempt, "delay_s": round(seconds, 1), "handback_request_id": request_id})

    def _show_waiting(self, turn: "Turn", seconds: float | None, handed_back: int | None = None,
                      since: float | None = None) -> None:
        """Tell watchers the turn waits for the model's rate limit (since when, until when); None:
        no longer, if the record still says this turn waits (advisory, written only when the
        model's rate limit turned a call away)."""
        now = self.clock()
        try:
            if seconds is None:
                p = self.convs.progress(turn.cid) or {}
                if p.get("waiting") == "rate_limit" and (p.get("function"), p.get("turn")) == \
                        (self.function, turn.new_turn):
                    self.convs.clear_progress(turn.cid)
                return
            self.convs.set_progress(turn.cid, {
                "role": turn.role_name, "function": self.function, "step": "", "turn": turn.new_turn,
                "waiting": "rate_limit", "since": since or now, "until": round(now + seconds, 3),
                **({"handed_back": handed_back} if handed_back else {})})
        except Exception:  # noqa: BLE001 - advisory: the turn goes on without it
            log.warning("could not record the wait for the rate limit", exc_info=True)

    # -- steps -----------------------------------------------------------------------------
    def _open(self, key: str, request_id: str) -> "Turn":
        """The delivery behind `key`, checked against the conversation it claims to belong to."""
        start = self.clock()
        cid, turn_in, delivery_id = self.convs.parse_delivery_key(self.function, key)
        delivery = self._read_delivery(key, turn_in)
        role_name = delivery["to"]
        try:
            meta = self.convs.meta(cid)
        except NoSuchKey:
            raise RejectedEvent("delivery for an unknown conversation", conversation=cid) from None
        spec = role_spec(meta, role_name)
        if spec is None or spec["function"] != self.function:
            raise RejectedEvent(f"role {role_name!r} is not played by function {self.function!r}")
        base = {"function": self.function, "request_id": request_id or uuid.uuid4().hex, "start": start,
                "pid": os.getpid(), "role": role_name, "trigger": key, "turn": turn_in + 1}
        return Turn(cid=cid, turn_in=turn_in, delivery_id=delivery_id, delivery=delivery, meta=meta, spec=spec,
                    base=base, out_id=reply_id(cid, delivery_id))

    def _settle(self, turn: "Turn", outcome: Outcome, llm: JournalingLLM | None) -> dict:
        """The invocation's record: a committed turn carries its own; any other outcome gets one of
        its own object (for the bill and the timeline), and ends the conversation if it says so."""
        if outcome.kind == "committed":
            return outcome.record["invocation"]
        rec = self._finish(turn, outcome.kind, llm, **({"reason": outcome.reason} if outcome.reason else {}),
                           **outcome.fields)
        if outcome.end is not None:
            status, reason, fields = outcome.end
            self.convs.end(turn.cid, status, reason, **fields)
        return rec

    def _finish(self, turn: "Turn", outcome: str, llm: JournalingLLM | None = None, **extra) -> dict:
        """Record an invocation that committed no turn."""
        duration = round((self.clock() - turn.base["start"]) * 1000, 2)
        usage = llm.usage if llm else {"prompt_tokens": 0, "completion_tokens": 0}
        rec = records.invocation(**turn.base, outcome=outcome, duration_ms=duration, **extra,
                                 **bill_fields(llm.model if llm else None, usage["prompt_tokens"],
                                               usage["completion_tokens"], self.memory_mb, duration))
        if llm:
            rec.update(llm_calls=llm.calls, llm_paid=llm.paid, llm_replayed=llm.replayed, **_waiting(llm))
        self.convs.record_invocation(turn.cid, rec)
        return rec

    def _check_limits(self, turn: "Turn") -> Outcome | None:
        """Limits are checked before anything is paid for; the outcome if one stops the turn."""
        convs, meta = self.convs, turn.meta
        if convs.is_ended(turn.cid):
            return Outcome("ended")
        limits = meta["limits"]
        if turn.new_turn > limits["max_turns"]:
            return Outcome("ended", reason="turn_limit", end=("completed", "turn_limit", {"turns": turn.turn_in}))
        hops = turn.delivery["hops"]
        if hops > max_hops(limits):
            return Outcome("ended", reason="invocation_cap",
                           end=("stopped", "invocation_cap", {"hops": hops, "turns": turn.turn_in}))
        if turn.base["start"] - meta["created"] > limits["max_seconds"]:
            return Outcome("ended", reason="time_limit", end=("stopped", "time_limit", {"turns": turn.turn_in}))
        return None

    def _invocation(self, turn: "Turn", llm: JournalingLLM) -> dict:
        duration = round((self.clock() - turn.base["start"]) * 1000, 2)
        return records.invocation(
            **turn.base, outcome="committed", llm_calls=llm.calls, llm_paid=llm.paid, llm_replayed=llm.replayed,
            llm_ms=round(llm.llm_ms, 2), usage=llm.usage, **_waiting(llm),
            **({"llm_mismatched": llm.mismatched} if llm.mismatched else {}), duration_ms=duration,
            **bill_fields(llm.model, llm.usage["prompt_tokens"], llm.usage["completion_tokens"], self.memory_mb,
                          duration))

    def _commit(self, turn: "Turn", role, record: dict, state: dict | None, seen: list[str]) -> Outcome:
        """Commit the turn (create-only), save the role's state, carry out what follows."""
        convs, cid, role_name, start = self.convs, turn.cid, turn.role_name, turn.base["start"]
        saved = None
        committed = convs.commit(cid, turn.new_turn, turn.out_id, record)
        if not committed:
            stored = convs.message(cid, turn.new_turn, turn.out_id)
            if stored and stored.get("invocation", {}).get("request_id") == turn.base["request_id"] \
                    and stored["invocation"].get("start") == start:
                committed = True  # our own put went through and only its answer was lost (a timeout)
            else:
                # an earlier attempt committed first (it replayed the same journal): use its record
                record = stored or record
                # and if it saved the state too, the role may have moved on since (this invocation
                # read the state before that save): writing ours would roll the role back
                saved = convs.load_state(cid, role_name)
        if not turn.branch and not (saved and turn.delivery_id in saved.get("seen", [])):
            convs.save_state(cid, role_name, self._state(role, seen + [turn.delivery_id], state, turn.new_turn))
        self.strategy.follow(convs, turn, record)
        # one that committed nothing gets (like a duplicate) its own invocation record
        return Outcome("committed", record=record) if committed else Outcome("replayed")

    def _read_delivery(self, key: str, turn: int) -> dict:
        try:
            delivery = self.convs.read_delivery(key, turn)  # validated: records.read_delivery
        except NoSuchKey:
            raise RejectedEvent("delivery object not found", key=key[:200]) from None
        except ValueError:
            raise RejectedEvent("delivery object is not JSON", key=key[:200]) from None
        try:
            check_name(delivery["to"], "recipient")
        except BadRequest as e:
            raise RejectedEvent(e.message, key=key[:200]) from None
        return delivery

    @staticmethod
    def _bind(role, llm) -> None:
        role.llm = llm
        prefix = role._get_prefix()
        llm.system_prompt = prefix
        for action in role.actions:
            action.set_llm(llm, override=True)
            action.set_prefix(prefix)

    @staticmethod
    def _state(role, seen: list[str], old: dict | None, turn: int | None = None) -> dict:
        return {"role": role.model_dump_json(), "seen": seen,
                "turn": turn if turn is not None else (old or {}).get("turn", 0)}


def _waiting(llm: JournalingLLM) -> dict:
    """How often the model's rate limit turned a call away, and the time spent backing off."""
    return {"throttled": llm.throttled, "waited_ms": round(llm.waited_ms, 1)} if llm.throttled else {}


class DialogueStrategy:
    """Scenario flows: a character (shared/roles/character.py) or a deployment's own MetaGPT
    role answers the delivered message; the scenario's flow names who speaks next."""

    def progress(self, function: str, turn: Turn) -> dict | None:
        return None  # a dialogue turn is short

    def play(self, runner: RoleRunner, turn: Turn, state: dict | None, llm) -> "DialoguePlay":
        if turn.meta["scenario"]["flow"] == "sop":
            raise RejectedEvent(f"role {turn.role_name!r} is in an sop flow, which runs on the SOP functions "
                                f"(shared/sop), not on {runner.function!r}")
        return DialoguePlay(runner, turn, load_role(state, turn.spec, turn.meta, llm))

    def follow(self, convs: ConversationStore, turn: Turn, record: dict) -> None:
        follow(convs, turn.cid, turn.meta, record)


class DialoguePlay:
    def __init__(self, runner: RoleRunner, turn: Turn, role):
        self.runner, self.turn, self.role = runner, turn, role
        self.citations: list[dict] = []

    def feed(self) -> None:
        """Put the delivered message (and, for a closing turn, the closing cue) in the role's buffer."""
        turn, role = self.turn, self.role
        delivery, meta, role_name = turn.delivery, turn.meta, turn.role_name
        closing = bool(delivery.get("closing")) and meta["scenario"].get("closing") is not None
        turn.closing = closing
        instruction = meta["scenario"]["closing"]["instruction"] if closing else ""
        if hasattr(role, "instruction"):
            role.instruction = instruction
        if hasattr(role, "scene") and isinstance(delivery.get("scene"), list):
            # the exchange so far (older deliveries have none: the role's memory stands in)
            role.scene = scene_entries(delivery["scene"])
        role.put_message(Message.model_validate(delivery["message"]))
        self._retrieve()
        if closing:
            # a cue for the closing turn, even when the closing role spoke last itself
            role.put_message(Message(id=derive_id(turn.delivery_id, "closing"), content=instruction, role="user",
                                     cause_by=UserRequirement, sent_from="user", send_to={role_name}))

    def _retrieve(self) -> None:
        """Before a role with `knowledge:` speaks: the best passages for what it was just told,
        from its knowledge bases, into its prompt; they are recorded as the turn's citations."""
        turn, role = self.turn, self.role
        kbs = turn.spec.get("knowledge") or []
        if not kbs or not hasattr(role, "references"):
            return
        from shared.knowledge import format_passages, search

        query = " ".join(filter(None, [turn.delivery["message"].get("content") or "", turn.meta.get("input") or ""]))
        query = query[:2000].strip()
        found = []
        for kb in kbs:
            found += [{**p, "kb": kb} for p in (search(self.runner.convs.store, kb, query, k=CITATIONS) if query else [])]
        found = sorted(found, key=lambda p: -p["score"])[:CITATIONS]
        role.references = format_passages(found)
        self.citations = [{"kb": p["kb"], "id": p["id"], "doc": p["doc"], "chunk": p["chunk"],
                           "heading": p.get("heading", ""), "score": round(p["score"], 4),
                           "text": p["text"][:400]} for p in found]

    async def run(self) -> Message | None:
        return await self.role.run()

    def failure(self, error: Exception) -> Outcome | None:
        return None  # FC retries; journaled replies make the retry free

    def step(self) -> str:
        todo = self.role.rc.todo
        return todo.name if todo is not None else "speaking"

    def idle(self) -> Outcome:
        return Outcome("ignored")

    def record(self, rsp: Message, invocation: dict, spent: dict) -> dict:
        """The committed turn: the role's reply, who speaks next, the invocation's bill."""
        turn, role = self.turn, self.role
        meta, role_name, delivery = turn.meta, turn.role_name, turn.delivery
        if hasattr(role, "instruction"):
            role.instruction = ""
        if hasattr(role, "references"):
            role.references = ""
        if hasattr(role, "scene"):
            role.scene = None
        rsp.id = turn.out_id  # the message in the role's memory is this same object
        panel = delivery.get("panel")
        # a panel's member answers for the panel: what follows is decided once all have (the join)
        nxt = records.next_step("join") if panel else decide(meta, turn.new_turn, role_name, rsp.content,
                                                             turn.closing)
        # the flow names the recipient; MetaGPT's send_to carries it (the director, a role, or nobody)
        rsp.send_to = ({nxt["role"] or nxt["kind"]} if nxt["kind"] != "panel" else set(nxt["roles"])) \
            if nxt["kind"] != "end" else {role_name}
        return records.turn_record(
            turn=turn.new_turn, id=turn.out_id, role=role_name, profile=turn.spec["profile"],
            function=self.runner.function, content=rsp.content, message=json.loads(rsp.model_dump_json()), next=nxt,
            sent_from=rsp.sent_from, send_to=sorted(rsp.send_to), cause_by=rsp.cause_by,
            reply_to=delivery["message"].get("id"), closing=turn.closing, invocation=invocation, spent=spent,
            recent=(delivery["recent"] + [role_name])[-RECENT:],
            scene=scene_with(delivery["scene"], role_name, rsp.content), hops=delivery["hops"],
            citations=self.citations, **({"panel": panel} if panel else {}))

    def close(self) -> None:
        pass


def load_role(state: dict | None, spec: dict, meta: dict, llm):
    """Restore the role from its state, or create it; the LLM is given up front so that
    MetaGPT never builds a default client from config (an SSL context, ~20 ms, per turn)."""
    cls = role_class(spec.get("class"))
    if not issubclass(cls, Character):  # a user's MetaGPT role may fill ActionNodes
        from shared.llm import structured

        structured.install()
    if state:
        return cls.model_validate({**json.loads(state["role"]), "context": _context(), "llm": llm})
    kwargs = {"name": spec["name"], "profile": spec["profile"], "goal": spec.get("goal", ""),
              "constraints": spec.get("constraints", ""), "context": _context(), "llm": llm}
    if issubclass(cls, Character):
        kwargs.update(cast=[r["name"] for r in meta["scenario"]["roles"]], topic=meta.get("input", ""),
                      stance=spec.get("stance") or {})
    return cls(**kwargs)
