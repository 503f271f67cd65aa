"""How the local runtime runs invocations, as FC does: warm instances per function, sync and async
invocations, async retries with backoff, the onFailure destination and dead letters, and OSS
events fanned out to the functions whose triggers match.

It starts no server and knows no data directory layout beyond the folder for dead letters; the
runtime (runtime.py) gives it a way to start an instance (`spawn`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import statistics
import threading
import time
import uuid
from typing import Callable

from infra.local import spec as specs
from infra.local.pool import Pool, Worker, WorkerFailure
from infra.local.results import InvocationRecord, InvocationResult, failure_record
from infra.local.spec import FunctionSpec
from infra.local.events import eventbridge_event

log = logging.getLogger("infra.local.runtime")

MAX_RETRY_DELAY = 30.0


@dataclasses.dataclass
class Job:
    spec: FunctionSpec
    event: bytes
    request_id: str
    trigger: str
    event_time: float
    destination: bool = True
    """Whether a final failure goes on to the onFailure destination."""


class Scheduler:
    def __init__(self, functions: dict[str, FunctionSpec], spawn: Callable[[FunctionSpec], Worker],
                 deadletters_dir: str, *, max_instances: int = 2, scale_out_after: float = 1.0,
                 retry_delay: float = 0.5, sleep: Callable[[float], None] | None = None,
                 event_delays: Callable[[bytes], list[float]] | None = None):
        self.functions = functions
        self.spawn = spawn
        self.deadletters_dir = deadletters_dir
        self.max_instances, self.scale_out_after, self.retry_delay = max_instances, scale_out_after, retry_delay
        self.event_delays = event_delays
        """Test hook (fault injection, infra/local/faults.py): given an OSS event's bytes, the
        delays in seconds of the copies to deliver, each a separate async invocation with its own
        request id, as duplicated OSS notifications are. Default: one copy, at once."""
        self.invocation_log: list[InvocationRecord] = []
        self.stopped = threading.Event()
        self._sleep = sleep or self.stopped.wait
        self.cv = threading.Condition()
        self.pending = 0
        self._pools: dict[str, Pool] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._later: dict[int, tuple[threading.Timer, Callable[[], None]]] = {}
        """the delayed jobs not yet due: (timer, what it fires)"""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.stopped.clear()
        # a function's own instance limit (s.yaml's reservedConcurrency) holds here too: what
        # exceeds it waits for an instance, as FC queues it
        self._pools = {fid: Pool(s, self.spawn, min(self.max_instances, s.max_instances or self.max_instances),
                                 self.scale_out_after)
                       for fid, s in self.functions.items()}
        threads = max(4, min(32, self.max_instances * len(self.functions) + 2))
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="troupe-async")

    def stop(self, timeout: float) -> None:
        """Let in-flight work finish (at most `timeout` s), then stop the instances."""
        if not self.wait_pending(timeout):
            log.warning("stopping with invocations still running; their events go to dead letters")
        self.stopped.set()
        for pool in self._pools.values():
            pool.close(kill_busy=True)
        self._executor.shutdown(wait=True)
        for timer, fire in list(self._later.values()):  # not yet due: dead letters now, not lost
            timer.cancel()
            fire()

    # -- invocation ------------------------------------------------------------------------
    def invoke(self, spec: FunctionSpec, event: bytes, request_id: str, trigger: str,
               sync: bool = True, delay: float = 0.0) -> InvocationResult:
        """Sync: run it and return the result. Async: queue it (with retries), to run after
        `delay` seconds (FC's x-fc-async-delay), and return."""
        if sync:
            with self._busy():
                return self._run_once(spec, event, request_id, trigger=trigger)
        job = Job(spec, event, request_id, trigger, 0.0)
        if delay > 0:
            if self._executor is None or self.stopped.is_set():
                raise RuntimeError("the local runtime is stopping")
            self._enqueue_later(job, delay)
            return InvocationResult(request_id=request_id, function_id=spec.id, status="queued", ok=True)
        return self._enqueue(job)

    def pids(self, function_id: str) -> list[int]:
        return self._pools[function_id].pids() if function_id in self._pools else []

    @contextlib.contextmanager
    def _busy(self):
        with self.cv:
            self.pending += 1
        try:
            yield
        finally:
            with self.cv:
                self.pending -= 1
                self.cv.notify_all()

    def _run_once(self, spec: FunctionSpec, event: bytes, request_id: str, *, trigger: str,
                  attempt: int = 1, event_time: float = 0.0) -> InvocationResult:
        taken = time.time()
        pool = self._pools[spec.id]
        try:
            worker, cold = pool.acquire()
        except WorkerFailure as f:
            result = InvocationResult.failure(spec.id, request_id, f.error_type, f.message,
                                              pid=f.pid, traceback=f.traceback)
        else:
            try:
                result = InvocationResult.from_response(spec.id, worker.call(request_id, event, spec.timeout))
            except WorkerFailure as f:
                result = InvocationResult.failure(spec.id, request_id, f.error_type, f.message, pid=f.pid)
            finally:
                pool.release(worker)
            if cold:
                result.cold_start, result.cold_start_ms = True, round(worker.spawn_ms, 3)
                result.init_ms = worker.init_ms
        result.request_id, result.attempt = request_id, attempt
        self._record(result, trigger, taken, event_time)
        return result

    def _record(self, result: InvocationResult, trigger: str, taken: float, event_time: float) -> None:
        start = result.started_at or taken
        latency = round((start - event_time) * 1000, 3) if event_time and result.started_at else None
        rec = InvocationRecord(result.function_id, result.request_id, trigger, result.attempt, result.pid,
                               start, result.duration_ms, result.outcome, result.error_type,
                               result.cold_start, result.cold_start_ms, latency, result.max_rss_kb)
        with self.cv:
            self.invocation_log.append(rec)
        level = logging.INFO if result.ok else logging.WARNING
        log.log(level, "%s %s %s attempt=%d pid=%s %.1fms%s%s", result.function_id, result.request_id,
                rec.outcome, result.attempt, result.pid, result.duration_ms or 0.0,
                f" cold={result.cold_start_ms:.0f}ms" if result.cold_start else "",
                f" {result.error_type}: {result.error_message}" if not result.ok else "")

    # -- async invocation ------------------------------------------------------------------
    def _enqueue(self, job: Job) -> InvocationResult:
        with self.cv:
            self.pending += 1
        try:
            self._executor.submit(self._run_async, job)
        except RuntimeError:  # executor shut down
            with self.cv:
                self.pending -= 1
                self.cv.notify_all()
            raise RuntimeError("the local runtime is stopping") from None
        return InvocationResult(request_id=job.request_id, function_id=job.spec.id, status="queued", ok=True)

    def _run_async(self, job: Job) -> None:
        try:
            self._attempts(job)
        except Exception:  # noqa: BLE001 - never lose the pending count
            log.exception("async invocation %s of %s failed in the runtime", job.request_id, job.spec.id)
        finally:
            with self.cv:
                self.pending -= 1
                self.cv.notify_all()

    def _attempts(self, job: Job) -> None:
        """1 + retries attempts with exponential backoff; then the failure path."""
        spec, born = job.spec, job.event_time or time.time()
        invoked = 0
        while True:
            if self.stopped.is_set():
                condition = "RuntimeStopped"
                result = InvocationResult.failure(spec.id, job.request_id, condition,
                                                  "the local runtime stopped before the event ran")
                break
            if time.time() - born > spec.max_event_age:
                condition = "MaxEventAgeExceeded"
                result = InvocationResult.failure(spec.id, job.request_id, "EventTooOld",
                                                  f"event older than {spec.max_event_age}s was dropped")
                break
            invoked += 1
            result = self._run_once(spec, job.event, job.request_id, trigger=job.trigger,
                                    attempt=invoked, event_time=job.event_time)
            if result.ok:
                return
            if invoked > spec.retries:
                if spec.retries:
                    condition = "RetriesExhausted"
                else:
                    condition = "FunctionTimeout" if result.error_type == "FunctionTimeout" else "UnhandledError"
                break
            self._sleep(min(MAX_RETRY_DELAY, self.retry_delay * 2 ** (invoked - 1)))
        self._fail(job, result, invoked, condition)

    def _fail(self, job: Job, result: InvocationResult, attempts: int, condition: str) -> None:
        """Dead-letter file always; the onFailure destination too, if declared and running."""
        record = failure_record(job.spec, job.event, result, attempts, condition)
        folder = os.path.join(self.deadletters_dir, job.spec.id)
        os.makedirs(folder, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        path = os.path.join(folder, f"{stamp}-{job.request_id}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False, indent=1)
        os.replace(path + ".tmp", path)
        log.warning("%s %s: %s after %d attempt(s); dead letter %s", job.spec.id, job.request_id,
                    condition, attempts, path)
        dest = job.spec.on_failure
        if dest and job.destination and not self.stopped.is_set():
            payload = json.dumps(record, ensure_ascii=False).encode("utf-8")
            self._enqueue(Job(self.functions[dest], payload, uuid.uuid4().hex, "destination",
                              0.0, destination=False))

    # -- OSS events --------------------------------------------------------------------------
    def on_event(self, name: str, data: bytes, written: float) -> None:
        """One spooled OSS event (EventDispatcher's handler): an async invocation of each function
        whose trigger matches, per copy the `event_delays` hook asks for."""
        try:
            records = json.loads(data)["events"]
            # a native OSS trigger gets the event as OSS sends it; an EventBridge-based one a
            # CloudEvent per record, one invocation each (EventBridge's event-driven delivery)
            targets: list[tuple[FunctionSpec, bytes, str]] = []
            for record in records:
                for s in self.functions.values():
                    fired = specs.triggers_for(record, s)
                    if any(t.get("via") != "eventbridge" for t in fired) and (s, data, "oss") not in targets:
                        targets.append((s, data, "oss"))
                    bridged = next((t for t in fired if t.get("via") == "eventbridge"), None)
                    if bridged is not None:
                        raw = record if bridged.get("schema") == "RawData" else eventbridge_event(record)
                        targets.append((s, json.dumps(raw, ensure_ascii=False).encode("utf-8"), "eventbridge"))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("dropping malformed event file %s: %s", name, e)
            return
        if not targets:
            log.debug("event %s matches no trigger", name)
            return
        delays = self.event_delays(data) if self.event_delays else [0.0]
        for s, payload, via in targets:
            for delay in delays:
                job = Job(s, payload, uuid.uuid4().hex, via, written)
                if delay > 0:
                    self._enqueue_later(job, delay)
                else:
                    self._enqueue(job)

    def _enqueue_later(self, job: Job, delay: float) -> None:
        """Enqueue after `delay` seconds; counted as pending meanwhile (wait_idle, stop wait)."""
        with self.cv:
            self.pending += 1
        once = threading.Lock()

        def fire() -> None:
            if not once.acquire(blocking=False):
                return  # fired by its timer and by stop(): once
            self._later.pop(id(once), None)
            try:
                self._enqueue(job)
            except RuntimeError:  # as an event queued when the runtime stops: a dead letter
                self._fail(job, InvocationResult.failure(job.spec.id, job.request_id, "RuntimeStopped",
                                                         "the local runtime stopped before the event ran"),
                           0, "RuntimeStopped")
            finally:
                with self.cv:
                    self.pending -= 1
                    self.cv.notify_all()

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        self._later[id(once)] = (timer, fire)
        timer.start()

    # -- waiting and figures ---------------------------------------------------------------
    def wait_pending(self, timeout: float, also_idle: Callable[[], bool] = lambda: True,
                     poll: float | None = None) -> bool:
        """True once nothing is queued or running (and `also_idle()`); False on timeout."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while self.pending or not also_idle():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cv.wait(remaining if poll is None else min(remaining, poll))
        return True

    def trigger_latencies(self, function_id: str | None = None) -> list[float]:
        """Event write -> handler start (ms) of first attempts of OSS-triggered invocations."""
        return [r.trigger_latency_ms for r in list(self.invocation_log)
                if r.trigger_latency_ms is not None and r.attempt == 1
                and (function_id is None or r.function_id == function_id)]

    def metrics(self) -> dict:
        """Per function: counts by outcome, cold starts and latency percentiles (ms)."""
        out: dict[str, dict] = {}
        for fid in self.functions:
            recs = [r for r in list(self.invocation_log) if r.function_id == fid]
            if not recs:
                continue
            outcomes: dict[str, int] = {}
            for r in recs:
                outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
            out[fid] = {"invocations": len(recs), "outcomes": outcomes,
                        "cold_starts": sum(r.cold_start for r in recs),
                        "cold_start_ms": _summary([r.cold_start_ms for r in recs if r.cold_start_ms]),
                        "duration_ms": _summary([r.duration_ms for r in recs if r.duration_ms is not None]),
                        "trigger_latency_ms": _summary(self.trigger_latencies(fid)),
                        "max_rss_kb": max((r.max_rss_kb or 0) for r in recs)}
        return out


def _summary(values: list[float]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "mean": round(statistics.fmean(ordered), 3), "p50": pick(0.5),
            "p95": pick(0.95), "max": ordered[-1]}
