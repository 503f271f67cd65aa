"""The director of selector flows: after each turn it picks who speaks next.

One invocation per turn, commits no turn of its own: it hands the committed message to the
speaker it picks (a delivery at the same turn), or to a human, or ends the scene.

Rules (mode `rule`, the default): a speaker the last message names gets the floor; otherwise
the one who has waited longest. A panel in `order` (a list of roles) is one candidate: naming
any of its members gives it the floor, and its members answer at once (shared/routing.py). In mode `llm` the director's LLM is asked for a name, and the
rules decide when its answer is not one. Either way no one speaks more than
`director.max_consecutive` turns in a row, which breaks the loops where two agents keep
answering each other.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from typing import Callable

from shared import records
from shared.billing import bill_fields
from shared.conversation import ConversationStore
from shared.errors import NoSuchKey, RejectedEvent
from shared.events import for_each_created
from shared.flows import DIRECTOR
from shared.ids import derive_id
from shared.routing import fan_out, hand_to, max_hops, scene_entries

log = logging.getLogger("troupe.director")


DIRECTOR_HISTORY = 4  # earlier turns of the scene an LLM director is shown


def members(entry) -> list[str]:
    """The roles of a candidate: one role, or a panel's (a list in `order`)."""
    return list(entry) if isinstance(entry, list) else [entry]


def candidates(scenario: dict, recent: list[str]) -> list:
    """Speakers allowed next: the scenario's `order` (its roles and panels), minus whoever hit the
    streak limit (a panel: when its answers were the last, it waits for one other turn too)."""
    cast = list(scenario["order"])
    limit = scenario["director"]["max_consecutive"]
    if len(recent) >= limit and len(set(recent[-limit:])) == 1:
        cast = [c for c in cast if recent[-1] not in members(c)] or cast
    return cast


def pick_by_rule(scenario: dict, content: str, speaker: str, recent: list[str]):
    """A role's name, or a panel's list of names. `speaker`: who said the last message (a panel's
    joined answer names its members, comma-separated)."""
    allowed = candidates(scenario, recent)
    spoke = {s.strip() for s in (speaker or "").split(",")}
    named = [c for c in allowed if not spoke & set(members(c))
             and any(re.search(rf"\b{re.escape(n)}\b", content or "", re.I) for n in members(c))]
    if named:
        return named[0]

    def waited(entry) -> int:  # turns since it last spoke (never: the longest)
        return min(recent[::-1].index(n) if n in recent else len(recent) + 1 for n in members(entry))

    return max(allowed, key=lambda c: (waited(c), -allowed.index(c)))


class Director:
    def __init__(self, convs: ConversationStore, llm_factory: Callable[..., object] | None = None,
                 clock: Callable[[], float] = time.time, memory_mb: float | None = None):
        self.convs, self.llm_factory, self.clock, self.memory_mb = convs, llm_factory, clock, memory_mb

    def handle_event(self, event: bytes | str | dict, request_id: str = "") -> list[dict]:
        return for_each_created(event, self.handle_key, request_id, log)

    async def handle_key(self, key: str, request_id: str = "") -> dict:
        start = self.clock()
        cid, turn, delivery_id = self.convs.parse_delivery_key(DIRECTOR, key)
        try:
            delivery = self.convs.read_delivery(key, turn)
            meta = self.convs.meta(cid)
        except (NoSuchKey, ValueError):
            raise RejectedEvent("delivery or conversation not found", key=key[:200]) from None
        if delivery["to"] != DIRECTOR:
            raise RejectedEvent("not a delivery for the director", key=key[:200])
        scenario = meta["scenario"]
        message = delivery["message"]
        recent = [r for r in delivery.get("recent") or [] if isinstance(r, str)]
        speaker = message.get("sent_from", "")
        chosen, how, llm, outcome = None, "rule", None, None
        hops = delivery["hops"]
        if hops > max_hops(meta["limits"]):
            self.convs.end(cid, "stopped", "invocation_cap", hops=hops, turns=turn)
        elif not self.convs.is_ended(cid):
            decided = self.convs.decision(cid, delivery_id)
            if decided is not None:  # an earlier attempt chose: keep its choice, whatever an LLM says now
                chosen, how = decided["chosen"], decided["how"]
            elif scenario["director"]["mode"] == "llm" and self.llm_factory is not None:
                chosen, llm = await self._ask_llm(cid, delivery_id, scenario, message, recent, request_id,
                                                  delivery.get("scene"))
                how = "llm" if chosen else "rule"
            if getattr(getattr(llm, "stopped", None), "code", None) == "InFlight":
                # a duplicate racing the invocation that is asking the LLM: that one routes the
                # turn (choosing by the rules here could name a second next speaker)
                outcome = "in_flight"
            else:
                chosen = chosen or pick_by_rule(scenario, message.get("content", ""), speaker, recent)
                # the choice is recorded create-only before anyone is handed the turn: an attempt
                # whose LLM call failed (rules) and a retry whose call succeeds cannot both deliver
                decided = self.convs.decide_once(cid, delivery_id, {"chosen": chosen, "how": how})
                chosen, how = decided["chosen"], decided["how"]
                message = {**message, "send_to": members(chosen)}  # the director re-addresses the message
                payload = {"turn": turn, "message": message, "spent": delivery.get("spent"), "recent": recent,
                           "scene": delivery.get("scene") or [], "hops": hops + 1}
                if isinstance(chosen, list):  # a panel: its members answer at once
                    fan_out(self.convs, cid, meta, delivery_id, chosen, payload)
                else:
                    hand_to(self.convs, cid, meta, chosen, payload, parent=delivery_id, after=message.get("id"),
                            closing=False, now=self.clock())
        duration = round((self.clock() - start) * 1000, 2)
        usage = llm.usage if llm else {"prompt_tokens": 0, "completion_tokens": 0}
        record = records.invocation(
            function=DIRECTOR, request_id=request_id or uuid.uuid4().hex, start=start,
            outcome=outcome or ("routed" if chosen else "ended"), pid=os.getpid(), role=DIRECTOR, turn=turn,
            trigger=key, chosen=chosen, how=how, duration_ms=duration,
            **bill_fields(llm.model if llm else None, usage["prompt_tokens"], usage["completion_tokens"],
                          self.memory_mb, duration))
        self.convs.record_invocation(cid, record)
        return record

    async def _ask_llm(self, cid, delivery_id, scenario, message, recent, request_id="", scene=None):
        from shared.llm.journal import JournalingLLM

        allowed = candidates(scenario, recent)
        inner = self.llm_factory(model=scenario["director"].get("model"))
        # holder: FC retries an async invocation under its request id, so the retry of one that
        # died mid-call takes its claim over instead of standing down behind it
        llm = JournalingLLM(inner, self.convs, cid, derive_id(delivery_id, "director-llm"), holder=request_id)
        names = [n for entry in allowed for n in members(entry)]
        cast = "; ".join(f"{r['name']} ({r['profile']})" for r in scenario["roles"] if r["name"] in names)
        # the turns before the last one (the delivery's scene window ends with the last message)
        earlier = scene_entries(scene)[:-1]
        before = "".join(f"{e['from'][:40]}: {e['content'][:500]}\n" for e in earlier[-DIRECTOR_HISTORY:])
        prompt = (f"You direct a scene. Cast: {cast}.\n"
                  + (f"Earlier turns:\n{before}" if before else "")
                  + f"Last speaker: {message.get('sent_from')}.\n"
                  f"Last message: {message.get('content', '')[:2000]}\n"
                  f"Who should speak next? Answer with exactly one name from the cast.")
        try:
            answer = await llm.aask(prompt, system_msgs=["You are a concise scene director."])
        except Exception as e:  # the rules decide when the LLM cannot (unless another invocation is asking it)
            if llm.stopped is None:
                log.warning("director LLM failed, using rules: %s", str(e)[:200])
            return None, llm
        for entry in allowed:  # naming a panel's member hands the floor to the panel
            if any(re.search(rf"\b{re.escape(name)}\b", answer or "", re.I) for name in members(entry)):
                return entry, llm
        return None, llm


def handle(event: bytes, convs: ConversationStore, llm_factory, request_id: str = "", memory_mb=None) -> str:
    return json.dumps(Director(convs, llm_factory, memory_mb=memory_mb).handle_event(event, request_id))
