"""Fault injection for the local runtime: a test tool, never imported by a function or by shared/.

A *plan* (a JSON file named by TROUPE_FAULTS) says which faults hit which conversations. Two
sides read it:

* the runtime process, through `LocalRuntime(event_delays=Faults(...).event_delays)`: OSS
  events of a conversation are delivered N times, each copy after its own random delay (so
  copies and conversations interleave out of order), each copy a separate async invocation
  with its own request id, as duplicated OSS notifications are;
* every worker process of the plan's `functions`, through `install()`, which
  `infra/local/worker.py` calls after importing the handler when TROUPE_FAULTS is set. It
  wraps, in that process only, the DiskStore's five I/O methods (transient errors), the
  scripted LLM's paid call (kills before it, stalls past the function's timeout, latency),
  ConversationStore.journal_put / commit / deliver (kills right after them) and, in the
  software company's five functions (shared/sop), Workspace.save (a kill after the turn's
  workspace manifest was stored, before the commit). The code of the functions and of shared/
  is unchanged and unaware of it.

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
  "together":   2.0                                     copies of a delivery wait (at most this
                                                        long) for each other, then run at once
  "fail_until": {"flag": "<path>", "turns": [2] | null} the handler raises while flag is absent

A conversation is matched by its input text (read from its meta.json on disk), so a plan can
be written before the gateway assigns the conversation's id. `turns` are the turn numbers an
invocation would commit (the delivery's turn + 1). The ledger (state_dir/ledger.jsonl) gets
one JSON line per injected fault and per paid LLM call (`llm_start`, `llm_done`, with the
call's index `n` within its delivery, as in its journal key), written
with O_APPEND from every process: the ground truth a killed invocation cannot leave in its
own records.
"""

from __future__ import annotations

import asyncio
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


def _patch_store() -> None:
    from shared.errors import TransientStoreError
    from shared.store.base import ObjectStore
    from shared.store.disk import DiskStore

    base = _F.plan().get("retry_base")
    if base is not None:
        ObjectStore.retry_base = float(base)

    def wrap(op: str, orig):
        @functools.wraps(orig)
        def faulty(self, key, *rest):
            cid = cid_of(key)
            t = _F.spec(cid).get("transient") if cid else None
            if t and op in (t.get("ops") or OPS):
                with _F._lock:
                    hit = _F.rng.random() < float(t.get("rate", 0.0))
                    after = hit and _F.rng.random() < float(t.get("after", 0.0))
                if hit:
                    if after:
                        orig(self, key, *rest)  # the request went through; its answer is lost
                    _F.log(ev="transient", op=op, when="after" if after else "before", cid=cid,
                           turn=_CTX.get("turn"), rid=_CTX.get("rid"), fn=_CTX.get("fn"), key=key)
                    raise TransientStoreError(f"injected {op} failure ({'timeout after the call' if after else '503'})",
                                              key=key)
            return orig(self, key, *rest)
        return faulty

    for op in OPS:
        name = f"_{op}"
        setattr(DiskStore, name, wrap(op, getattr(DiskStore, name)))


def _patch_conversation() -> None:
    from shared.conversation import ConversationStore

    journal_put, commit, deliver = ConversationStore.journal_put, ConversationStore.commit, ConversationStore.deliver

    def faulty_journal_put(self, cid, trigger, n, entry):
        out = journal_put(self, cid, trigger, n, entry)
        _kill("after_journal", cid, _CTX.get("turn") if _CTX.get("cid") == cid else None)
        return out

    def faulty_commit(self, cid, turn, msgid, record):
        out = commit(self, cid, turn, msgid, record)
        _kill("after_commit", cid, turn)
        return out

    def faulty_deliver(self, function, cid, turn, msgid, payload):
        out = deliver(self, function, cid, turn, msgid, payload)
        _kill("after_delivery", cid, turn)
        return out

    ConversationStore.journal_put = faulty_journal_put
    ConversationStore.commit = faulty_commit
    ConversationStore.deliver = faulty_deliver


def _patch_runner() -> None:
    from shared.runner import RoleRunner

    handle_key = RoleRunner.handle_key

    async def faulty_handle_key(self, key, request_id=""):
        try:
            cid, turn_in, _ = self.convs.parse_delivery_key(self.function, key)
        except Exception:  # noqa: BLE001 - the real method rejects it
            return await handle_key(self, key, request_id)
        _CTX.clear()
        _CTX.update(cid=cid, turn=turn_in + 1, rid=request_id, fn=self.function)
        try:
            fail = _F.spec(cid).get("fail_until")
            if fail and _turn_matches(fail.get("turns"), turn_in + 1) and not os.path.exists(fail["flag"]):
                _F.log(ev="fail", cid=cid, turn=turn_in + 1, rid=request_id, fn=self.function)
                raise RuntimeError(f"injected failure: the cause is not fixed ({fail['flag']} is missing)")
            together = _F.spec(cid).get("together")
            if together:
                _F.log(ev="arrive", cid=cid, turn=turn_in + 1, rid=request_id, fn=self.function,
                       others=_F.meet(key, request_id, 2, float(together)))
            return await handle_key(self, key, request_id)
        finally:
            _CTX.clear()

    RoleRunner.handle_key = faulty_handle_key


def _patch_llm() -> None:
    from infra.testing.scripted_llm import ScriptedLLM
    from shared.llm.journal import JournalingLLM

    achat = ScriptedLLM._achat_completion
    journaled = JournalingLLM.acompletion_text

    async def tracked_completion_text(self, messages, stream=False, timeout=3):
        _CTX["n"] = self.calls  # the index of this LLM call within the delivery (its journal entry's)
        return await journaled(self, messages, stream=stream, timeout=timeout)

    async def faulty_achat(self, messages, timeout=60):
        cid, turn = _CTX.get("cid"), _CTX.get("turn")
        spec = _F.spec(cid)
        _kill("before_llm", cid, turn)
        _F.log(ev="llm_start", cid=cid, turn=turn, n=_CTX.get("n"), rid=_CTX.get("rid"), fn=_CTX.get("fn"))
        stall = spec.get("llm_stall")
        if stall and _turn_matches(stall.get("turns"), turn, stall.get("min_turn")) \
                and _F.once(*_once_key("stall", stall, cid, turn)):
            _F.log(ev="stall", cid=cid, turn=turn, rid=_CTX.get("rid"), seconds=stall.get("seconds"))
            await asyncio.sleep(float(stall.get("seconds", 10)))  # past the function's timeout
        if spec.get("llm_latency"):
            await asyncio.sleep(float(spec["llm_latency"]))
        out = await achat(self, messages, timeout)
        _F.log(ev="llm_done", cid=cid, turn=turn, n=_CTX.get("n"), rid=_CTX.get("rid"), fn=_CTX.get("fn"))
        return out

    ScriptedLLM._achat_completion = faulty_achat
    JournalingLLM.acompletion_text = tracked_completion_text


def _patch_workspace() -> None:
    from shared.sop.workspace import Workspace

    save = Workspace.save

    def faulty_save(self, root, turn, msgid):
        out = save(self, root, turn, msgid)
        _kill("after_workspace", self.cid, turn)
        return out

    Workspace.save = faulty_save


def install(env=os.environ) -> bool:
    """Wrap this worker process's store, LLM and commit steps per the plan in TROUPE_FAULTS.

    Called by infra/local/worker.py after the handler is imported, so only what the function
    itself loaded is wrapped (the gateway never loads MetaGPT because of this). The software
    company's functions import their runner on the first request (shared/sop's handler), so
    for them it is imported here, in the cold start, to be wrapped. True if installed.
    """
    global _F
    path, data, fn = env.get("TROUPE_FAULTS"), env.get("TROUPE_DATA"), env.get("TROUPE_FUNCTION_ID")
    if not path or not data or _F is not None:
        return False
    faults = Faults(path, data)
    if fn not in faults.plan().get("functions", ["persona", "director"]):
        return False
    _F = faults
    _patch_store()
    if "shared.sop" in sys.modules:
        import shared.sop.runner  # noqa: F401  (what shared.sop.handler imports on its first request)
    if "shared.conversation" in sys.modules:
        _patch_conversation()
    if "shared.runner" in sys.modules:
        _patch_runner()
        _patch_llm()
    if "shared.sop.workspace" in sys.modules:
        _patch_workspace()
    print(f"troupe faults: installed in {fn} (pid {os.getpid()}) from {path}", file=sys.stderr, flush=True)
    return True
