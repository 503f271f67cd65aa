"""Fault injection for the local runtime: a test tool, never imported by a function or by shared/.

A *plan* (a JSON file named by TROUPE_FAULTS) says which faults hit which conversations. Two
sides read it:

* the runtime process, through `LocalRuntime(event_delays=Faults(...).event_delays)`: OSS
  events of a conversation are delivered N times, each copy after its own random delay (so
  copies and conversations interleave out of order), each copy a separate async invocation
  with its own request id, as duplicated OSS notifications are;
* every worker process of the plan's `functions`, through `install(handler)`, which
  `infra/local/worker.py` calls after importing the handler when TROUPE_FAULTS is set. In that
  process only, it wraps what the function is given, never patching a name:
  - the store (a wrapper registered in `shared.env.wrap_stores`): transient errors, and kills
    right after the write that ends a step, known by its key: a journal entry, a commit, a
    workspace manifest (the software company's turn, before its commit), a delivery;
  - the LLM (a scripted LLM subclass registered as `fake`): kills before its paid call, stalls
    past the function's timeout, latency, the model's rate limit turning calls away;
  - the handler: which turn is served, failing while a flag file is absent, copies of a
    delivery waiting for each other.
  The code of the functions and of shared/ is unchanged and unaware of it.

Plan:
  {"seed": 1,
   "state_dir": "<dir>",            markers (fire-once faults) and ledger.jsonl live here
   "retry_base": 0.002,             ObjectStore's backoff base in faulted workers (speed)
   "functions": ["persona", "director", "product_manager", ...],
   "by_input": {"<conversation input text>": SPEC, ...},
   "default": SPEC}                 for conversations whose input is not listed (optional)

SPEC (every key optional):
  "copies":     {"n": 3, "max_delay": 0.3}             runtime: deliver each event n times
  "kill":       {"point": P, "turns": [2] | null,      SIGKILL the worker at P, once per turn
                 "min_turn": 3, "call": 2,              (optional) only at turns >= min_turn, only
                 "once": "conversation"}                at the call-th time P is reached in one
                                                        invocation (the 2nd LLM call of a turn);
                                                        once per conversation instead of per turn
                                                        (the first matching turn is hit: a turn
                                                        number need not be known in advance)
                P: before_llm | after_journal | after_workspace (SOP functions only) |
                   after_commit | after_delivery
  "transient":  {"rate": 0.1, "after": 0.3, "ops": [...]}
                a TransientStoreError on that fraction of storage calls (put/get/head/list/
                delete); `after` of them are raised after the call took effect (a timeout
                whose request went through: a create-only retry then meets 409)
  "llm_stall":  {"turns": [3], "seconds": 8}           the LLM call sleeps (once per turn;
                                                        min_turn / once as for kill)
  "llm_latency": 0.2                                    every LLM call takes this long
  "throttle":   {"turns": [2], "times": 3}             the model's rate limit turns the call
                                                        away `times` times (across attempts; as
                                                        DashScope's provider raises it), before
                                                        it is answered; min_turn / once as for kill
  "together":   2.0                                     copies of a delivery wait (at most this
                                                        long) for each other, then run at once
  "fail_until": {"flag": "<path>", "turns": [2] | null} the handler raises while flag is absent

A conversation is matched by its input text (read from its meta.json on disk), so a plan can
be written before the gateway assigns the conversation's id. `turns` are the turn numbers an
invocation would commit (the delivery's turn + 1). The ledger (state_dir/ledger.jsonl) gets
one JSON line per injected fault and per paid LLM call (`llm_start`, `llm_done`, with the
call's delivery `d` and index `n` within it, as in its journal key), written
with O_APPEND from every process: the ground truth a killed invocation cannot leave in its
own records.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import re
import signal
import sys
import threading
import time

POINTS = ("before_llm", "after_journal", "after_commit", "after_delivery")
SOP_POINTS = ("before_llm", "after_journal", "after_workspace", "after_commit", "after_delivery")
"""Kill points of a software-company turn: after_workspace is after Workspace.save stored the
turn's blobs and manifest, before the commit."""
OPS = ("put", "get", "head", "list", "delete")
_CID = re.compile(r"(?:^|/)([0-9]{8}t[0-9]{6}-[0-9a-f]{24})(?:/|$)")


def cid_of(key: str) -> str | None:
    m = _CID.search(key or "")
    return m.group(1) if m else None


def _turn_matches(turns, turn, min_turn=None) -> bool:
    return turn is not None and (turns is None or turn in turns) and (min_turn is None or turn >= int(min_turn))


def _once_key(kind: str, f: dict, cid: str, turn) -> tuple:
    """The fire-once marker of a fault: per conversation (`"once": "conversation"`) or per turn."""
    return (kind, cid) if f.get("once") == "conversation" else (kind, cid, turn)


class Faults:
    """Reads the plan (again whenever the file changes) and keeps the ledger and markers."""

    def __init__(self, plan_path: str, data_dir: str):
        self.plan_path = os.path.abspath(plan_path)
        self.data_dir = os.path.abspath(data_dir)
        self._plan: dict = {}
        self._mtime = None
        self._inputs: dict[str, str] = {}
        self._lock = threading.Lock()
        self.rng = random.Random()
        self._seeded = False

    # -- the plan --------------------------------------------------------------------------
    def plan(self) -> dict:
        try:
            mtime = os.stat(self.plan_path).st_mtime_ns
        except FileNotFoundError:
            return self._plan
        if mtime != self._mtime:
            with open(self.plan_path, encoding="utf-8") as f:
                self._plan = json.load(f)
            self._mtime = mtime
            if not self._seeded:
                self.rng.seed(f"{self._plan.get('seed', 0)}-{os.getpid()}")
                self._seeded = True
        return self._plan

    @property
    def state_dir(self) -> str:
        return self.plan().get("state_dir") or os.path.join(os.path.dirname(self.plan_path), "faults-state")

    def input_of(self, cid: str) -> str | None:
        """The conversation's input text, read from its meta.json on disk (not through a store:
        these hooks sit under the store)."""
        if cid in self._inputs:
            return self._inputs[cid]
        path = os.path.join(self.data_dir, "objects", "conversations", cid, "meta.json")
        try:
            with open(path, encoding="utf-8") as f:
                text = json.load(f).get("input")
        except (OSError, ValueError):
            return None  # not written yet: ask again next time
        self._inputs[cid] = text
        return text

    def spec(self, cid: str | None) -> dict:
        if not cid:
            return {}
        plan = self.plan()
        text = self.input_of(cid)
        if text is not None and text in (plan.get("by_input") or {}):
            return plan["by_input"][text] or {}
        return plan.get("default") or {}

    # -- fire-once markers and the ledger ------------------------------------------------
    def once(self, *parts) -> bool:
        """True the first time these parts are seen, across every process (O_EXCL file)."""
        folder = os.path.join(self.state_dir, "markers")
        os.makedirs(folder, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(str(p) for p in parts))
        try:
            os.close(os.open(os.path.join(folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            return False

    def meet(self, key: str, rid: str, n: int, timeout: float) -> int:
        """Wait (at most `timeout` s) until `n` invocations of the same delivery have arrived, so
        that copies of it run their turns at the same time. Returns how many others were seen."""
        folder = os.path.join(self.state_dir, "together", re.sub(r"[^A-Za-z0-9_.-]", "_", key))
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, re.sub(r"[^A-Za-z0-9_.-]", "_", rid) or "none"), "w").close()
        deadline = time.monotonic() + timeout
        while True:
            count = len(os.listdir(folder))
            if count >= n or time.monotonic() > deadline:
                return count - 1
            time.sleep(0.005)

    def log(self, **fields) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        fields.setdefault("pid", os.getpid())
        fields.setdefault("t", time.time())
        line = (json.dumps(fields, separators=(",", ":")) + "\n").encode()
        fd = os.open(os.path.join(self.state_dir, "ledger.jsonl"), os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o644)
        try:
            os.write(fd, line)  # one write on O_APPEND: lines from many processes never interleave
        finally:
            os.close(fd)

    # -- the runtime side: duplicated, delayed, reordered events ---------------------------
    def event_delays(self, data: bytes) -> list[float]:
        """Delays of the copies of one OSS event (LocalRuntime's `event_delays` hook)."""
        try:
            key = json.loads(data)["events"][0]["oss"]["object"]["key"]
        except (ValueError, KeyError, IndexError, TypeError):
            return [0.0]
        if not key.startswith("inbox/"):
            return [0.0]
        copies = self.spec(cid_of(key)).get("copies")
        if not copies:
            return [0.0]
        n, top = int(copies.get("n", 3)), float(copies.get("max_delay", 0.0))
        with self._lock:
            delays = [round(self.rng.uniform(0.0, top), 4) for _ in range(n)]
        self.log(ev="copies", cid=cid_of(key), key=key, delays=delays)
        return delays


def read_ledger(state_dir: str) -> list[dict]:
    path = os.path.join(state_dir, "ledger.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


# --- the worker side --------------------------------------------------------------------------

_F: Faults | None = None
_CTX: dict = {}
"""The invocation being served in this worker (one at a time): cid, turn, rid, fn, and `reached`:
how many times each kill point was reached in this invocation."""


def _kill(point: str, cid: str | None, turn) -> None:
    if not cid:
        return
    k = _F.spec(cid).get("kill")
    if not k or k.get("point") != point or not _turn_matches(k.get("turns"), turn, k.get("min_turn")):
        return
    reached = _CTX.setdefault("reached", {})
    reached[point] = reached.get(point, 0) + 1
    if k.get("call") is not None and reached[point] < int(k["call"]):
        return
    if _F.once(*_once_key(f"kill-{point}", k, cid, turn)):
        _F.log(ev="kill", point=point, cid=cid, turn=turn, rid=_CTX.get("rid"), fn=_CTX.get("fn"),
               call=reached[point])
        os.kill(os.getpid(), signal.SIGKILL)


_KEY_POINTS = (
    # (kill point, what a key written at that point looks like: cid, and the turn where it names one)
    ("after_journal", re.compile(r"^conversations/([^/]+)/journal/")),
    ("after_commit", re.compile(r"^conversations/([^/]+)/messages/(\d+)-")),
    ("after_workspace", re.compile(r"^conversations/([^/]+)/workspace/(\d+)[-~]")),  # a turn's tree, a join's
    ("after_delivery", re.compile(r"^inbox/[^/]+/([^/]+)/(\d+)-")),
)
_CLAIM = re.compile(r"^conversations/[^/]+/claims/[^/]+-(\d+)\.json$")


def faulty_store(inner):
    """A store wrapper (registered in shared.env.wrap_stores): transient errors before or after a
    call takes effect, and a SIGKILL right after the write that ends a step (a journal entry, a
    commit, a workspace manifest, a delivery), whether it was new or met the object it names.
    It also notes which LLM call of the delivery is being claimed (its journal index)."""
    from shared.errors import ObjectExists, TransientStoreError
    from shared.store.base import ObjectStore

    class FaultyStore(ObjectStore):
        def __init__(self):
            super().__init__()
            base = _F.plan().get("retry_base")
            if base is not None:
                self.retry_base = float(base)

        def _through(self, op: str, key: str, call):
            cid = cid_of(key)
            t = _F.spec(cid).get("transient") if cid else None
            if t and op in (t.get("ops") or OPS):
                with _F._lock:
                    hit = _F.rng.random() < float(t.get("rate", 0.0))
                    after = hit and _F.rng.random() < float(t.get("after", 0.0))
                if hit:
                    if after:
                        with contextlib.suppress(ObjectExists):
                            call()  # the request went through; its answer is lost
                    _F.log(ev="transient", op=op, when="after" if after else "before", cid=cid,
                           turn=_CTX.get("turn"), rid=_CTX.get("rid"), fn=_CTX.get("fn"), key=key)
                    raise TransientStoreError(f"injected {op} failure ({'timeout after the call' if after else '503'})",
                                              key=key)
            return call()

        def _put(self, key, data, create_only):
            claimed = _CLAIM.match(key)
            if claimed:
                _CTX["n"] = int(claimed.group(1))  # the LLM call about to be paid for, as its journal names it
            try:
                return self._through("put", key, lambda: inner.put(key, data, create_only=create_only))
            except ObjectExists:
                _after_write(key)
                raise

        def _get(self, key):
            return self._through("get", key, lambda: inner.get(key))

        def _head(self, key):
            return self._through("head", key, lambda: inner.head(key))

        def _list(self, prefix, marker, max_keys):
            return self._through("list", prefix, lambda: inner.list(prefix, marker=marker, max_keys=max_keys))

        def _delete(self, key):
            return self._through("delete", key, lambda: inner.delete(key))

        def put(self, key, data, *, create_only=False):
            info = super().put(key, data, create_only=create_only)
            _after_write(key)
            return info

    return FaultyStore()


def _after_write(key: str) -> None:
    for point, shape in _KEY_POINTS:
        m = shape.match(key)
        if m:
            turn = int(m.group(2)) if m.lastindex and m.lastindex >= 2 else None
            cid = m.group(1)
            _kill(point, cid, turn if turn is not None else (_CTX.get("turn") if _CTX.get("cid") == cid else None))
            return


def faulty_handler(handler, function: str):
    """The function's handler, wrapped: which turn is being served (for the kill points and the
    ledger), failing while a flag file is absent, and copies of a delivery waiting for each other
    so that they race."""
    from shared import handback, keys
    from shared.events import OssEvent

    def delivery_key(event) -> str:
        """The delivery an OSS event, or a turn handed back (shared/handback.py), names."""
        back = handback.read(event)
        return back["key"] if back is not None else OssEvent.parse(event).records[0].key

    @functools.wraps(handler)
    def serve(event, context):
        try:
            key = delivery_key(event)
            cid, turn_in, delivery = keys.parse_delivery(function, key)
        except Exception:  # noqa: BLE001 - not a delivery: the handler answers it
            return handler(event, context)
        rid = getattr(context, "request_id", "") or ""
        _CTX.clear()
        _CTX.update(cid=cid, turn=turn_in + 1, rid=rid, fn=function, d=delivery)
        try:
            fail = _F.spec(cid).get("fail_until")
            if fail and _turn_matches(fail.get("turns"), turn_in + 1) and not os.path.exists(fail["flag"]):
                _F.log(ev="fail", cid=cid, turn=turn_in + 1, rid=rid, fn=function)
                raise RuntimeError(f"injected failure: the cause is not fixed ({fail['flag']} is missing)")
            together = _F.spec(cid).get("together")
            if together:
                _F.log(ev="arrive", cid=cid, turn=turn_in + 1, rid=rid, fn=function,
                       others=_F.meet(key, rid, 2, float(together)))
            return handler(event, context)
        finally:
            _CTX.clear()

    return serve


def _throttle(spec: dict | None, cid, turn) -> None:
    """Turn the call away as the model's rate limit does (nothing is paid), the first `times`
    times this turn (or conversation, `once`) reaches it, whichever invocation makes it."""
    if not spec or not _turn_matches(spec.get("turns"), turn, spec.get("min_turn")):
        return
    for k in range(int(spec.get("times", 3))):
        if _F.once(*_once_key("throttle", spec, cid, turn), k):
            _F.log(ev="throttled", cid=cid, turn=turn, k=k, rid=_CTX.get("rid"), fn=_CTX.get("fn"))
            # as MetaGPT's DashScopeLLM raises DashScope's answer (shared/llm/errors.py reads it)
            raise RuntimeError("code: Throttling.RateQuota, request_id: fault, "
                               "message: Requests rate limit exceeded, please try again later.")


def faulty_llm(env):
    """The scripted LLM (registered as `fake` in place of infra.testing's), whose paid call may be
    killed before it starts, stall past the function's timeout or take longer; the ledger gets
    each paid call's start and end."""
    from infra.testing import scripted
    from infra.testing.scripted_llm import ScriptedLLM

    class FaultyLLM(ScriptedLLM):
        async def _achat_completion(self, messages, timeout=60):
            cid, turn = _CTX.get("cid"), _CTX.get("turn")
            spec = _F.spec(cid)
            _throttle(spec.get("throttle"), cid, turn)
            _kill("before_llm", cid, turn)
            _F.log(ev="llm_start", cid=cid, turn=turn, n=_CTX.get("n"), d=_CTX.get("d"), rid=_CTX.get("rid"),
                   fn=_CTX.get("fn"))
            stall = spec.get("llm_stall")
            if stall and _turn_matches(stall.get("turns"), turn, stall.get("min_turn")) \
                    and _F.once(*_once_key("stall", stall, cid, turn)):
                _F.log(ev="stall", cid=cid, turn=turn, rid=_CTX.get("rid"), seconds=stall.get("seconds"))
                await asyncio.sleep(float(stall.get("seconds", 10)))  # past the function's timeout
            if spec.get("llm_latency"):
                await asyncio.sleep(float(spec["llm_latency"]))
            out = await super()._achat_completion(messages, timeout)
            _F.log(ev="llm_done", cid=cid, turn=turn, n=_CTX.get("n"), d=_CTX.get("d"), rid=_CTX.get("rid"),
                   fn=_CTX.get("fn"))
            return out

    return scripted(FaultyLLM)


def install(handler, env=os.environ):
    """Per the plan in TROUPE_FAULTS, wrap this worker process's store (shared.env.wrap_stores),
    its scripted LLM (registered as `fake`) and its handler; returns the handler to serve.

    Called by infra/local/worker.py after the handler is imported and the scripted LLM
    registered. The function's code and shared/ are unchanged: only what they are given is."""
    global _F
    path, data, fn = env.get("TROUPE_FAULTS"), env.get("TROUPE_DATA"), env.get("TROUPE_FUNCTION_ID")
    if not path or not data or _F is not None:
        return handler
    faults = Faults(path, data)
    if fn not in faults.plan().get("functions", ["persona", "director"]):
        return handler
    _F = faults
    import shared.env
    from shared.llm import register

    shared.env.wrap_stores(faulty_store)
    register("fake", faulty_llm)
    print(f"troupe faults: installed in {fn} (pid {os.getpid()}) from {path}", file=sys.stderr, flush=True)
    return faulty_handler(handler, fn)
