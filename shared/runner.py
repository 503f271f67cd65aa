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
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
import uuid
from functools import lru_cache
from typing import Callable

import shared.mg  # noqa: F401  (pins MetaGPT's root before it is imported)
from metagpt.actions import UserRequirement
from metagpt.roles.role import Role
from metagpt.schema import Message

from shared.billing import Budget, bill_fields
from shared.conversation import ConversationStore
from shared.errors import BadRequest, NoSuchKey, RejectedEvent
from shared.events import for_each_created
from shared.ids import check_name, derive_id
from shared.routing import RECENT, decide, follow, max_hops, role_spec
from shared.llm.journal import InFlight, JournalingLLM
from shared.roles.character import Character

log = logging.getLogger("troupe.runner")

#: packages a scenario's `class:` may name: troupe's own roles, and `user_roles`, the package a
#: deployment ships its own MetaGPT Role subclasses in (beside a function's index.py, or in the layer)
ROLE_PACKAGES = ("shared.roles.", "user_roles.")


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
    except (ImportError, AttributeError) as e:
        raise RejectedEvent(f"role class {path!r} cannot be imported: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Role)):
        raise RejectedEvent(f"{path!r} is not a MetaGPT Role subclass")
    return cls


class RoleRunner:
    def __init__(self, convs: ConversationStore, function: str, llm_factory: Callable[..., object],
                 clock: Callable[[], float] = time.time, memory_mb: float | None = None,
                 timeout_s: float = 120.0):
        self.convs = convs
        self.function = check_name(function, "function")
        self.llm_factory = llm_factory
        self.clock = clock
        self.memory_mb = memory_mb
        """The function's memory size, for the compute part of the bill."""
        self.timeout_s = timeout_s
        """The function's timeout: a claim on an LLM call older than this was abandoned."""

    # -- entry points ----------------------------------------------------------------------
    def handle_event(self, event: bytes | str | dict, request_id: str = "") -> list[dict]:
        """Handle an OSS trigger event (one or more records). Returns one outcome per record."""
        return for_each_created(event, self.handle_key, request_id, log)

    async def handle_key(self, key: str, request_id: str = "") -> dict:
        start = self.clock()
        convs = self.convs
        cid, turn_in, delivery_id = convs.parse_delivery_key(self.function, key)
        delivery = self._read_delivery(key, turn_in)
        role_name = delivery["to"]
        try:
            meta = convs.meta(cid)
        except NoSuchKey:
            raise RejectedEvent("delivery for an unknown conversation", conversation=cid) from None
        spec = role_spec(meta, role_name)
        if spec is None or spec["function"] != self.function:
            raise RejectedEvent(f"role {role_name!r} is not played by function {self.function!r}")
        base = {"function": self.function, "request_id": request_id or uuid.uuid4().hex, "start": start,
                "pid": os.getpid(), "role": role_name, "trigger": key, "turn": turn_in + 1}

        def finish(outcome: str, llm: JournalingLLM | None = None, **extra) -> dict:
            duration = round((self.clock() - start) * 1000, 2)
            usage = llm.usage if llm else {"prompt_tokens": 0, "completion_tokens": 0}
            rec = {**base, "outcome": outcome, "duration_ms": duration, **extra,
                   **bill_fields(llm.model if llm else None, usage["prompt_tokens"], usage["completion_tokens"],
                                 self.memory_mb, duration)}
            if llm:
                rec.update(llm_calls=llm.calls, llm_paid=llm.paid, llm_replayed=llm.replayed)
            convs.record_invocation(cid, rec)
            return rec

        # limits are checked before anything is paid for
        if convs.is_ended(cid):
            return finish("ended")
        limits = meta["limits"]
        new_turn = turn_in + 1
        if new_turn > limits["max_turns"]:
            convs.end(cid, "completed", "turn_limit", turns=turn_in)
            return finish("ended", reason="turn_limit")
        hops = int(delivery.get("hops", 0))
        if hops > max_hops(limits):
            convs.end(cid, "stopped", "invocation_cap", hops=hops, turns=turn_in)
            return finish("ended", reason="invocation_cap")
        if start - meta["created"] > limits["max_seconds"]:
            convs.end(cid, "stopped", "time_limit", turns=turn_in)
            return finish("ended", reason="time_limit")

        out_id = derive_id(cid, "reply", delivery_id)
        state = convs.load_state(cid, role_name)
        seen = state["seen"] if state else []
        if delivery_id in seen:
            # processed before: only re-assert what follows the commit
            record = convs.message(cid, new_turn, out_id)
            if record is not None:
                follow(convs, cid, meta, record)
            return finish("duplicate")

        spent = delivery.get("spent") or {"tokens": 0, "cost_cny": 0.0}
        inner = self.llm_factory(model=spec.get("model"))
        model = getattr(inner, "model", None) or inner.config.model
        budget = Budget(limits, spent, model, inner.config.max_token)
        llm = JournalingLLM(inner, convs, cid, delivery_id, budget=budget, holder=base["request_id"],
                            stale_after=self.timeout_s, clock=self.clock)
        try:
            role = self._load_role(state, spec, meta, llm)
        except RejectedEvent as e:
            # the scenario names a role class that cannot run: no retry will fix it, so say so
            convs.end(cid, "failed", e.message, function=self.function, role=role_name, turn=turn_in)
            return finish("failed", reason=e.message)
        self._bind(role, llm)
        closing = bool(delivery.get("closing")) and meta["scenario"].get("closing") is not None
        instruction = meta["scenario"]["closing"]["instruction"] if closing else ""
        if hasattr(role, "instruction"):
            role.instruction = instruction
        role.put_message(Message.model_validate(delivery["message"]))
        if closing:
            # a cue for the closing turn, even when the closing role spoke last itself
            role.put_message(Message(id=derive_id(delivery_id, "closing"), content=instruction, role="user",
                                     cause_by=UserRequirement, sent_from="user", send_to={role_name}))
        try:
            rsp = await role.run()
        except Exception:
            if llm.stopped is None:
                llm.abandon()  # this invocation fails: a call it claimed and did not finish is free
                raise
            if isinstance(llm.stopped, InFlight):
                # a duplicate racing the invocation that is paying for this turn: leave it the turn
                return finish("in_flight", llm, holder=llm.stopped.details.get("holder"))
            # a budget refused the next call: end the conversation, naming the budget
            convs.end(cid, "budget_exhausted", llm.stopped.message, budget=llm.stopped.details.get("budget"),
                      turns=turn_in)
            return finish("budget_exhausted", llm, reason=llm.stopped.message)
        if rsp is None:
            convs.save_state(cid, role_name, self._state(role, seen + [delivery_id], state))
            return finish("ignored", llm)

        if hasattr(role, "instruction"):
            role.instruction = ""
        rsp.id = out_id  # the message in the role's memory is this same object
        nxt = decide(meta, new_turn, role_name, rsp.content, closing)
        # the flow names the recipient; MetaGPT's send_to carries it (the director, a role, or nobody)
        rsp.send_to = {nxt["role"] or nxt["kind"]} if nxt["kind"] != "end" else {role_name}
        msg_json = json.loads(rsp.model_dump_json())
        duration = round((self.clock() - start) * 1000, 2)
        invocation = {**base, "outcome": "committed", "llm_calls": llm.calls, "llm_paid": llm.paid,
                      "llm_replayed": llm.replayed, "llm_ms": round(llm.llm_ms, 2), "usage": llm.usage,
                      "duration_ms": duration,
                      **bill_fields(llm.model, llm.usage["prompt_tokens"], llm.usage["completion_tokens"],
                                    self.memory_mb, duration)}
        record = {
            "turn": new_turn, "id": out_id, "role": role_name, "profile": spec["profile"],
            "function": self.function, "content": rsp.content, "sent_from": rsp.sent_from,
            "send_to": sorted(rsp.send_to), "cause_by": rsp.cause_by, "reply_to": delivery["message"].get("id"),
            "message": msg_json, "next": nxt, "closing": closing, "invocation": invocation,
            "spent": {"tokens": budget.tokens, "cost_cny": round(budget.cost, 8)},
            "recent": ((delivery.get("recent") or []) + [role_name])[-RECENT:],
            "hops": int(delivery.get("hops", 0)),
        }
        saved = None
        committed = convs.commit(cid, new_turn, out_id, record)
        if not committed:
            stored = convs.message(cid, new_turn, out_id)
            if stored and stored.get("invocation", {}).get("request_id") == base["request_id"] \
                    and stored["invocation"].get("start") == start:
                committed = True  # our own put went through and only its answer was lost (a timeout)
            else:
                # an earlier attempt committed first (it replayed the same journal): use its record
                record = stored or record
                # and if it saved the state too, the role may have moved on since (this invocation
                # read the state before that save): writing ours would roll the role back
                saved = convs.load_state(cid, role_name)
        if not (saved and delivery_id in saved.get("seen", [])):
            convs.save_state(cid, role_name, self._state(role, seen + [delivery_id], state, new_turn))
        follow(convs, cid, meta, record)
        if not committed:
            # it committed nothing, so (like a duplicate) it gets its own invocation record
            return finish("replayed", llm)
        return invocation

    # -- steps -----------------------------------------------------------------------------
    def _read_delivery(self, key: str, turn: int) -> dict:
        try:
            delivery = self.convs.read_delivery(key)
        except NoSuchKey:
            raise RejectedEvent("delivery object not found", key=key[:200]) from None
        except ValueError:
            raise RejectedEvent("delivery object is not JSON", key=key[:200]) from None
        if not isinstance(delivery, dict) or not isinstance(delivery.get("message"), dict):
            raise RejectedEvent("delivery lacks a message", key=key[:200])
        try:
            check_name(delivery.get("to"), "recipient")
        except BadRequest as e:
            raise RejectedEvent(e.message, key=key[:200]) from None
        if delivery.get("turn") != turn:
            raise RejectedEvent("delivery's turn does not match its key", key=key[:200])
        return delivery

    def _load_role(self, state: dict | None, spec: dict, meta: dict, llm):
        """Restore the role from its state, or create it; the LLM is given up front so that
        MetaGPT never builds a default client from config (an SSL context, ~20 ms, per turn)."""
        cls = role_class(spec.get("class"))
        if state:
            return cls.model_validate({**json.loads(state["role"]), "context": _context(), "llm": llm})
        kwargs = {"name": spec["name"], "profile": spec["profile"], "goal": spec.get("goal", ""),
                  "constraints": spec.get("constraints", ""), "context": _context(), "llm": llm}
        if issubclass(cls, Character):
            kwargs.update(cast=[r["name"] for r in meta["scenario"]["roles"]], topic=meta.get("input", ""))
        return cls(**kwargs)

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
