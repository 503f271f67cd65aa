"""Exactly-once LLM replies: a MetaGPT BaseLLM that journals every reply before it is used.

The n-th LLM call made while handling one trigger is journaled under a key derived from that
trigger (`journal/<trigger>-<n>`). A retried or duplicated trigger replays the journaled reply
instead of paying for a new one, and because the role runs the same code on the same inputs,
it reaches the same commit.

Before paying, a caller claims the call (`claims/<trigger>-<n>`, create-only). The claim
replaces the journal lookup of the common path, so it costs no extra request: the first
caller wins it and pays; anyone else reads the journal. A duplicate that finds the claim held
and no reply yet is racing the holder: it stops (`InFlight`) and leaves the turn to it. A
retry of the holder itself (same request id: FC retries an async invocation under its id),
or anyone once the claim is older than the function's timeout, takes the claim over: the
holder died mid-call and its reply was never received.

A call the model's rate limit turns away (shared.llm.errors: throttled) is made again after a
backoff with jitter that respects Retry-After, as long as the invocation's waiting stays within
`throttle_budget` seconds; the claim is kept meanwhile, so it is still paid once. The waiting
is counted apart (`throttled`, `waited_ms`), not as LLM time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time

from metagpt.provider.base_llm import BaseLLM

from shared.billing import Budget, BudgetExhausted
from shared.conversation import ConversationStore
from shared.errors import TroupeError
from shared.llm import errors as llm_errors
from shared.llm import streaming
from shared.llm.structured import expected

log = logging.getLogger("troupe.journal")

PROGRESS_EVERY = 5.0
"""seconds between two writes of a streamed call's tokens so far"""
BACKOFF_BASE, BACKOFF_CAP = 1.0, 5.0
"""seconds: a throttled call waits about base × 2^(k-1) (at most cap), or what Retry-After says. The
cap is short on purpose: the model's limit is per second, so a caller that waits long leaves the
freed capacity unused (turns that wait longer are handed back, shared/handback.py)."""


class InFlight(TroupeError):
    """Another invocation holds the claim on this LLM call and is still within its time."""

    status = 409
    code = "InFlight"


def _digest(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


class JournalingLLM(BaseLLM):
    def __init__(self, inner: BaseLLM, convs: ConversationStore, cid: str, trigger: str,
                 budget: Budget | None = None, holder: str = "", stale_after: float = 900.0,
                 clock=time.time, progress: dict | None = None, throttle_budget: float = 0.0,
                 sleep=asyncio.sleep, rng: random.Random | None = None, on_wait=None):
        self.inner = inner
        self.config = inner.config
        self.model = getattr(inner, "model", None) or inner.config.model
        self.cost_manager = inner.cost_manager
        self.use_system_prompt = inner.use_system_prompt
        self.convs, self.cid, self.trigger = convs, cid, trigger
        self.budget = budget
        self.stopped: BudgetExhausted | InFlight | None = None
        """Set when the budget refused a call, or another invocation holds it (MetaGPT re-raises
        errors as plain Exceptions, so the runner looks here)."""
        self.holder, self.stale_after, self.clock = holder, stale_after, clock
        self.calls = 0
        self.paid = 0
        self.replayed = 0
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.llm_ms = 0.0
        """Time spent in paid LLM calls during this invocation (waiting on a rate limit excluded)."""
        self.throttle_budget, self._sleep, self._rng = throttle_budget, sleep, rng or random.Random()
        self.throttled = 0
        """Answers of the model's rate limit during this invocation."""
        self.waited_ms = 0.0
        """Time spent waiting for the rate limit, backing off."""
        self.on_wait = on_wait
        """(seconds) -> None: told before each wait on the rate limit (the status shows it)."""
        self.mismatched = 0
        """Replayed calls whose prompt differs from the journaled one's: the role did not retrace its
        first attempt exactly. Some of that is harmless (QA's prompt carries a test run's timings);
        a different call order would not be. The journaled reply is used all the same, and the
        count goes into the invocation record, so that it shows."""
        self.progress = progress
        """{role, function}: before each paid call, the step is written for watchers (SOP roles)"""
        self.step_of = None
        """() -> the step the role is at (its todo), for the progress record"""
        self._owns = False
        self.failed_call: int | None = None
        """The index of a claimed call whose provider raised (no reply was journaled)."""

    async def acompletion_text(self, messages: list[dict], stream: bool = False, timeout: int = 3) -> str:
        n = self.calls
        self.calls += 1
        entry = None if self._claim(n) else self.convs.journal_get(self.cid, self.trigger, n)
        if entry is None and not self._owns:
            self._take_over(n)
        if entry is None:
            if self.budget is not None:
                try:
                    self.budget.check(messages)  # before every paid call
                except BudgetExhausted as e:
                    self.stopped = e
                    self.convs.release_claim(self.cid, self.trigger, n)
                    raise
            before = _tokens(self.inner)
            started = self.clock()
            self._show_progress(n, started)
            waited = self.waited_ms
            try:
                text = await self._paid(n, started, messages, stream, timeout)
            except BaseException:
                self.failed_call = n  # still claimed: see abandon()
                # the call was not made: the next call (MetaGPT retrying it) takes its index, so
                # the journal numbers the calls that were answered, whatever failed in between
                self.calls = n
                raise
            after = _tokens(self.inner)
            waited = self.waited_ms - waited
            self.llm_ms += (self.clock() - started) * 1000 - waited
            what = expected()
            self.failed_call = None  # answered: a retry of a call that had failed
            entry = self.convs.journal_put(self.cid, self.trigger, n, {
                "n": n, "reply": text, "model": self.model, "prompt_sha256": _digest(messages),
                **({"expects": f"{what.kind}:{what.name}"} if what is not None else {}),
                "prompt_tokens": after[0] - before[0], "completion_tokens": after[1] - before[1],
                "duration_ms": round((self.clock() - started) * 1000 - waited, 1), "at": self.clock(),
                **({"waited_ms": round(waited, 1)} if waited else {}),
            })
            self.paid += 1
        else:
            self.replayed += 1
            if entry.get("prompt_sha256") not in (None, _digest(messages)):
                self.mismatched += 1
                log.warning("replayed LLM call %s-%d had another prompt than the journaled one", self.trigger, n)
        self.usage["prompt_tokens"] += entry.get("prompt_tokens", 0)
        self.usage["completion_tokens"] += entry.get("completion_tokens", 0)
        if self.budget is not None:
            self.budget.add(entry.get("model"), entry.get("prompt_tokens", 0), entry.get("completion_tokens", 0))
        return entry["reply"]

    async def _paid(self, n: int, started: float, messages: list[dict], stream: bool, timeout) -> str:
        """The provider's reply; a throttled answer is tried again after a backoff, while the
        waiting stays within the budget."""
        while True:
            try:
                with self._listening(n, started):
                    return await self.inner.acompletion_text(messages, stream=stream, timeout=timeout)
            except Exception as e:
                found = llm_errors.classify(e)
                if found is None or found.kind != llm_errors.THROTTLED:
                    raise
                self.throttled += 1
                delay = llm_errors.backoff(self.throttled, found.retry_after, self._rng, BACKOFF_BASE, BACKOFF_CAP)
                if (self.waited_ms / 1000) + delay > self.throttle_budget:
                    raise
                log.info("LLM call %s-%d throttled (%s): waiting %.1f s", self.trigger, n, found.reason, delay)
                self.waited_ms += delay * 1000
                if self.on_wait is not None:
                    self.on_wait(delay)
                await self._sleep(delay)

    def _listening(self, n: int, started: float):
        """While a streamed call runs, its tokens so far go into the progress record, at most
        every PROGRESS_EVERY seconds (shared.llm.streaming; other calls report nothing)."""
        if self.progress is None:
            return contextlib.nullcontext()
        last = [0.0]

        def report(tokens: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY:
                last[0] = now
                self._show_progress(n, started, tokens)

        return streaming.listening(report)

    def _show_progress(self, n: int, started: float, tokens: int | None = None) -> None:
        if self.progress is None:
            return
        what = expected()
        try:
            step = self.step_of() if self.step_of is not None else (what.name if what else "")
            self.convs.set_progress(self.cid, {**self.progress, "step": step, "call": n, "since": started,
                                               **({"tokens": tokens, "at": self.clock()} if tokens is not None else {})})
        except Exception:  # noqa: BLE001 - advisory: the call goes on without it
            log.warning("could not record the running step", exc_info=True)

    def _claim(self, n: int) -> bool:
        self._owns = self.convs.claim(self.cid, self.trigger, n, self.holder, self.clock())
        return self._owns

    def abandon(self) -> bool:
        """Give back the claim on a call that failed (the invocation is failing with it); False
        if it is still held (the release failed).

        Nobody is paying for that call any more. Kept, the claim would make every invocation
        under another request id, such as a dead letter re-driven once the cause is fixed, stand
        down as `in_flight` until the claim went stale (the function's timeout), and the
        conversation would stay stuck with nothing in flight.
        """
        n, self.failed_call = self.failed_call, None
        if n is None:
            return True
        self._owns = False
        try:
            self.convs.release_claim(self.cid, self.trigger, n)
            return True
        except Exception:  # noqa: BLE001 - the claim then goes stale after the function's timeout
            log.warning("could not release the claim on LLM call %s-%d", self.trigger, n, exc_info=True)
            return False

    def _take_over(self, n: int) -> None:
        """Claimed by someone else and not journaled: take it over if that was us, or is stale."""
        claim = self.convs.get_claim(self.cid, self.trigger, n) or {}
        mine = bool(self.holder) and claim.get("holder") == self.holder
        if mine or self.clock() - float(claim.get("at", 0)) > self.stale_after:
            self.convs.release_claim(self.cid, self.trigger, n)
            if self._claim(n):
                return
        self.stopped = InFlight("another invocation is making this LLM call", holder=claim.get("holder"))
        raise self.stopped

    # BaseLLM's abstract surface: everything goes through acompletion_text above
    async def _achat_completion(self, messages, timeout=3):
        raise NotImplementedError("JournalingLLM answers through acompletion_text")

    async def acompletion(self, messages, timeout=3):
        raise NotImplementedError("JournalingLLM answers through acompletion_text")

    async def _achat_completion_stream(self, messages, timeout=3):
        raise NotImplementedError("JournalingLLM answers through acompletion_text")


def _tokens(llm: BaseLLM) -> tuple[int, int]:
    usage = getattr(llm, "usage", None)
    if isinstance(usage, dict):
        return usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    cm = llm.cost_manager
    if cm is not None:
        return cm.total_prompt_tokens, cm.total_completion_tokens
    return 0, 0

