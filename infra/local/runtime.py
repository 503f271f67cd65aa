"""The local runtime: plays FC and OSS on one machine from the same s.yaml the cloud deploys.

    with LocalRuntime("/tmp/troupe-data", "s.yaml") as rt:
        rt.store.put("inbox/persona/c1/0001-m.json", b"{}")   # fires the OSS trigger
        rt.wait_idle(30)
        print(rt.http_url, rt.invocation_log)

Layout under the data dir: objects/ and events/ belong to the DiskStore; runtime/ holds
logs/<function>.log (worker stderr), deadletters/<function>/, metagpt/<function>/ and a lock.

With `llm="local"` (or TROUPE_LLM=local) the runtime joins/verifies the embedded model's weights,
starts ONE llama.cpp server (infra/local/model.py; log runtime/logs/model-server.log) before any
worker, and gives every worker TROUPE_LLM=openai pointing at it, so the role functions reach it
through MetaGPT's openai provider exactly as they would a remote LLM. stop() stops it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import fcntl
import json
import logging
import os
import secrets
import statistics
import sys
import threading
import time
import uuid
from typing import Callable

from infra.local import spec as specs
from infra.local.dispatcher import EventDispatcher
from infra.local.fcapi import InvokeAPIServer
from infra.local.httpd import FunctionHTTPServer
from infra.local.pool import Pool, Worker, WorkerFailure, spawn
from infra.local.results import InvocationRecord, InvocationResult, failure_record
from infra.local.spec import FunctionSpec
from shared.events import eventbridge_event
from shared.store.disk import DiskStore

log = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_S_YAML = os.path.join(REPO_ROOT, "s.yaml")
#: parent variables a worker sees besides the function's own environment
PASS_ENV = ("PATH", "HOME", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV")
PASS_ENV_PREFIXES = ("TROUPE_", "LC_", "OMP_", "DASHSCOPE_")
CLOUD_LLM_ENV = ("TROUPE_LLM", "TROUPE_LLM_MODEL", "DASHSCOPE_API_KEY")
MAX_RETRY_DELAY = 30.0
OSS_KEY_FILE = "oss-access-key.json"
#: with the embedded model, for a function whose s.yaml (or this process's environment) does not
#: say: short replies (a small model drifts in long ones) and a request timeout under the persona
#: function's 120 s
LOCAL_LLM_DEFAULTS = {"TROUPE_LLM_MAX_TOKENS": "256", "TROUPE_LLM_TIMEOUT": "100", "TROUPE_LLM_TEMPERATURE": "0.7"}


@dataclasses.dataclass
class _Job:
    spec: FunctionSpec
    event: bytes
    request_id: str
    trigger: str
    event_time: float
    destination: bool = True
    """Whether a final failure goes on to the onFailure destination."""


class LocalRuntime:
    def __init__(self, data_dir: str, s_yaml_path: str | None = None, *, max_instances: int = 2,
                 poll_interval: float = 0.05, retry_delay: float = 0.5,
                 sleep: Callable[[float], None] | None = None, host: str = "127.0.0.1",
                 http_port: int = 0, api_port: int = 0, extra_env: dict[str, str] | None = None,
                 python: str = sys.executable, stop_timeout: float = 30.0, scale_out_after: float = 1.0,
                 llm: str | None = None, model_threads: int | None = None,
                 model_progress: Callable[[str], None] | None = None,
                 event_delays: Callable[[bytes], list[float]] | None = None, package: str | None = None,
                 oss_port: int = 0):
        self.data_dir = os.path.abspath(data_dir)
        self.s_yaml_path = os.path.abspath(s_yaml_path or DEFAULT_S_YAML)
        self.specs = specs.load(self.s_yaml_path)
        self.package = os.path.abspath(package) if package else None
        """An unpacked `make package` (infra.package.build.unpack): each function runs from its
        own zip's folder with the layer's python/ on its path, as on FC, instead of this checkout."""
        if self.package:
            self.specs = [dataclasses.replace(s, code=os.path.join(self.package, "functions", s.id)) for s in self.specs]
        team = os.environ.get("TROUPE_USER_ROLES")
        self.user_roles = os.path.abspath(team) if team and not self.package else None
        """The deployment's team folder when it is not this checkout's user_roles/ (TROUPE_USER_ROLES):
        its parent goes first on the workers' path. A package carries its own in the layer."""
        self.functions = {s.id: s for s in self.specs}
        self.max_instances = max_instances
        self.scale_out_after = scale_out_after
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.host, self.http_port, self.api_port = host, http_port, api_port
        self.extra_env = dict(extra_env or {})
        self.api_key = os.environ.get("TROUPE_API_KEY") or secrets.token_urlsafe(24)
        """The deployment API key the gateway requires to start a conversation: the caller's
        TROUPE_API_KEY, or one made up for this runtime's life."""
        self.python = python
        self.stop_timeout = stop_timeout
        self.runtime_dir = os.path.join(self.data_dir, "runtime")
        self.store = DiskStore(self.data_dir, emit_events=True)
        self.invocation_log: list[InvocationRecord] = []
        self.servers: dict[str, FunctionHTTPServer] = {}
        self.api_server: InvokeAPIServer | None = None
        self.oss_server = None
        """The local OSS endpoint (infra/local/oss_endpoint.py) while HTTP is served."""
        self.oss_port = oss_port
        self.oss_access_key = None
        self._stopped = threading.Event()
        self._sleep = sleep or self._stopped.wait
        self._cv = threading.Condition()
        self._pending = 0
        self._pools: dict[str, Pool] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._dispatcher: EventDispatcher | None = None
        self._lock_file = None
        self._started = False
        self.llm = (llm or os.environ.get("TROUPE_LLM") or "").strip().lower() or None
        """`local`: the embedded model, one shared llama.cpp server for all workers (started with
        the runtime); any other value is given to the workers as TROUPE_LLM unchanged."""
        self.model_threads = model_threads
        self.model_progress = model_progress
        self.model_server = None  # infra.local.model.ModelServer while llm == "local"
        self._llm_env: dict[str, str] = {}
        self._llm_defaults: dict[str, str] = {}
        self.event_delays = event_delays
        """Test hook (fault injection, infra/local/faults.py): given an OSS event's bytes, the
        delays in seconds of the copies to deliver, each a separate async invocation with its own
        request id, as duplicated OSS notifications are. Default: one copy, at once."""

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "LocalRuntime":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, *, dispatch: bool = True, serve_http: bool = True) -> None:
        """Start the pools; with `dispatch`, the OSS event dispatcher; with `serve_http`, the
        HTTP triggers. Without dispatch (one-off invokes) events stay spooled for later."""
        if self._started:
            return
        for sub in ("logs", "deadletters", "metagpt"):
            os.makedirs(os.path.join(self.runtime_dir, sub), exist_ok=True)
        if dispatch:
            self._take_lock()
        try:
            self._start_llm()
            self._start_rest(dispatch, serve_http)
        except BaseException:
            self._stop_llm()
            self._release_lock()
            raise
        self._started = True

    def _start_rest(self, dispatch: bool, serve_http: bool) -> None:
        self._stopped.clear()
        self._pools = {s.id: Pool(s, self._spawn, self.max_instances, self.scale_out_after) for s in self.specs}
        threads = max(4, min(32, self.max_instances * len(self.specs) + 2))
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="troupe-async")
        if dispatch:
            self._dispatcher = EventDispatcher(self.store.events_dir, os.path.join(self.data_dir, "events.sock"),
                                               self._on_event, poll_interval=self.poll_interval)
            self._dispatcher.start()
        gateway = self._gateway_id()
        for s in self.specs:
            if s.http is not None and serve_http:
                port = self.http_port if s.id == gateway else 0
                server = FunctionHTTPServer(self.host, port, self._http_invoker(s), s.http["methods"])
                server.start()
                self.servers[s.id] = server
        if serve_http:
            self.api_server = InvokeAPIServer(self.host, self.api_port, self)
            self.api_server.start()
            self.oss_server = self._start_oss()

    def _start_oss(self):
        """The bucket's OSS endpoint, for oss2 and ossutil: signed requests only, with an AccessKey
        made for this runtime and written to <data>/runtime/oss-access-key.json (0600). Every put
        and delete through it is a trigger event, as a function's own write is."""
        from infra.local.fcapi import AccessKey, write_secret
        from infra.local.oss_endpoint import OssEndpoint

        key = self.oss_access_key or AccessKey.generate()
        self.oss_access_key = key
        server = OssEndpoint((self.host, self.oss_port), self.store, self.store.bucket,
                             access_key_id=key.id, access_key_secret=key.secret)
        server.start()
        write_secret(os.path.join(self.runtime_dir, OSS_KEY_FILE),
                     {"endpoint": server.url, "bucket": self.store.bucket, "access_key_id": key.id,
                      "access_key_secret": key.secret})
        return server

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking events and requests, let in-flight work finish, then stop the workers."""
        if not self._started:
            return
        timeout = self.stop_timeout if timeout is None else timeout
        if self._dispatcher is not None:
            self._dispatcher.stop()
        for server in [*self.servers.values(), *([self.api_server] if self.api_server else []),
                       *([self.oss_server] if self.oss_server else [])]:
            server.stop()
        self.servers.clear()
        self.api_server = self.oss_server = None
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.runtime_dir, OSS_KEY_FILE))
        if not self._wait_pending(timeout):
            log.warning("stopping with invocations still running; their events go to dead letters")
        self._stopped.set()
        for pool in self._pools.values():
            pool.close(kill_busy=True)
        self._executor.shutdown(wait=True)
        self._dispatcher = None
        self._started = False
        self._stop_llm()
        self._release_lock()

    def _start_llm(self) -> None:
        """With llm="local": the verified weights, then ONE model server, before any worker."""
        self._llm_env, self._llm_defaults = {}, {}
        if self.llm == "config2":  # MetaGPT's config2.yaml (shared.llm.config2); TROUPE_* set here win
            from shared.llm import config2

            self._llm_env = config2.settings()
            return
        if self.llm != "local":
            if self.llm:
                self._llm_env = {"TROUPE_LLM": self.llm}
            return
        from infra.local import model

        model.check_server_installed()
        path = model.ensure_model(progress=self.model_progress)
        server = model.ModelServer(path, threads=self.model_threads,
                                   log_path=os.path.join(self.runtime_dir, "logs", "model-server.log"))
        server.start()
        try:
            server.warm_up()
        except BaseException:
            server.stop()
            raise
        self.model_server = server
        log.info("model server %s on %s: %s threads, started in %.1fs, RSS %s MB", server.alias,
                 server.base_url, server.threads, server.startup_seconds, server.rss_mb())
        self._llm_defaults = dict(LOCAL_LLM_DEFAULTS)
        # llama.cpp's server constrains a reply to a JSON schema (shared.llm.structured)
        self._llm_env = {"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": server.openai_base_url,
                         "TROUPE_LLM_MODEL": server.alias, "TROUPE_LLM_JSON": os.environ.get("TROUPE_LLM_JSON", "schema"),
                         # streamed: long calls show their tokens so far (shared.llm.streaming)
                         "TROUPE_LLM_STREAM": os.environ.get("TROUPE_LLM_STREAM", "llama.cpp")}

    def _stop_llm(self) -> None:
        if self.model_server is not None:
            self.model_server.stop()
            self.model_server = None

    def _take_lock(self) -> None:
        self._lock_file = open(os.path.join(self.runtime_dir, "lock"), "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise RuntimeError(f"another local runtime is using {self.data_dir}") from None

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- public API ------------------------------------------------------------------------
    @property
    def http_url(self) -> str | None:
        """Base URL of the gateway's HTTP trigger (the function "gateway", else the first)."""
        server = self.servers.get(self._gateway_id() or "")
        return server.url if server else None

    @property
    def api_url(self) -> str | None:
        """Endpoint of the FC invoke API (for fc2 / alibabacloud-fc-open20210406 clients)."""
        return self.api_server.url if self.api_server else None

    @property
    def oss_url(self) -> str | None:
        """The local OSS endpoint (oss2: `oss2.Bucket(oss2.Auth(id, secret), oss_url, bucket)`)."""
        return self.oss_server.url if self.oss_server else None

    @property
    def http_urls(self) -> dict[str, str]:
        return {fid: s.url for fid, s in self.servers.items()}

    def function(self, id_or_name: str) -> FunctionSpec:
        """A function by resource id ("persona") or FC name ("troupe-persona")."""
        if id_or_name in self.functions:
            return self.functions[id_or_name]
        for s in self.specs:
            if s.name == id_or_name:
                return s
        raise LookupError(f"no function {id_or_name!r} in {self.s_yaml_path}; "
                          f"declared: {', '.join(self.functions)}")

    def invoke(self, function_id: str, event: bytes, *, sync: bool = True,
               request_id: str | None = None) -> InvocationResult:
        """Invoke like FC: sync returns the result; async queues it (with retries) and returns."""
        self._require_started()
        spec = self.function(function_id)
        if sync:
            return self._invoke_sync(spec, bytes(event), request_id or uuid.uuid4().hex, "invoke")
        return self._enqueue(_Job(spec, bytes(event), request_id or uuid.uuid4().hex, "invoke", 0.0))

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once the event spool is empty and nothing is queued or running; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                if self._pending == 0 and (self._dispatcher is None or self._dispatcher.pending() == 0):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cv.wait(min(remaining, max(self.poll_interval, 0.01)))

    def pids(self, function_id: str) -> list[int]:
        """Pids of the function's idle (warm) workers."""
        return self._pools[function_id].pids() if function_id in self._pools else []

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

    # -- invocation ------------------------------------------------------------------------
    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("the local runtime is not started (use start() or a with block)")

    @contextlib.contextmanager
    def _busy(self):
        with self._cv:
            self._pending += 1
        try:
            yield
        finally:
            with self._cv:
                self._pending -= 1
                self._cv.notify_all()

    def _invoke_sync(self, spec: FunctionSpec, event: bytes, request_id: str, trigger: str) -> InvocationResult:
        with self._busy():
            return self._run_once(spec, event, request_id, trigger=trigger)

    def _http_invoker(self, spec: FunctionSpec):
        return lambda event, request_id: self._invoke_sync(spec, event, request_id, "http")

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
        with self._cv:
            self.invocation_log.append(rec)
        level = logging.INFO if result.ok else logging.WARNING
        log.log(level, "%s %s %s attempt=%d pid=%s %.1fms%s%s", result.function_id, result.request_id,
                rec.outcome, result.attempt, result.pid, result.duration_ms or 0.0,
                f" cold={result.cold_start_ms:.0f}ms" if result.cold_start else "",
                f" {result.error_type}: {result.error_message}" if not result.ok else "")

    # -- async invocation ------------------------------------------------------------------
    def _enqueue(self, job: _Job) -> InvocationResult:
        with self._cv:
            self._pending += 1
        try:
            self._executor.submit(self._run_async, job)
        except RuntimeError:  # executor shut down
            with self._cv:
                self._pending -= 1
                self._cv.notify_all()
            raise RuntimeError("the local runtime is stopping") from None
        return InvocationResult(request_id=job.request_id, function_id=job.spec.id, status="queued", ok=True)

    def _run_async(self, job: _Job) -> None:
        try:
            self._attempts(job)
        except Exception:  # noqa: BLE001 - never lose the pending count
            log.exception("async invocation %s of %s failed in the runtime", job.request_id, job.spec.id)
        finally:
            with self._cv:
                self._pending -= 1
                self._cv.notify_all()

    def _attempts(self, job: _Job) -> None:
        """1 + retries attempts with exponential backoff; then the failure path."""
        spec, born = job.spec, job.event_time or time.time()
        invoked = 0
        while True:
            if self._stopped.is_set():
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

    def _fail(self, job: _Job, result: InvocationResult, attempts: int, condition: str) -> None:
        """Dead-letter file always; the onFailure destination too, if declared and running."""
        record = failure_record(job.spec, job.event, result, attempts, condition)
        folder = os.path.join(self.runtime_dir, "deadletters", job.spec.id)
        os.makedirs(folder, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        path = os.path.join(folder, f"{stamp}-{job.request_id}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False, indent=1)
        os.replace(path + ".tmp", path)
        log.warning("%s %s: %s after %d attempt(s); dead letter %s", job.spec.id, job.request_id,
                    condition, attempts, path)
        dest = job.spec.on_failure
        if dest and job.destination and not self._stopped.is_set():
            payload = json.dumps(record, ensure_ascii=False).encode("utf-8")
            self._enqueue(_Job(self.functions[dest], payload, uuid.uuid4().hex, "destination",
                               0.0, destination=False))

    # -- OSS events --------------------------------------------------------------------------
    def _on_event(self, name: str, data: bytes, written: float) -> None:
        try:
            records = json.loads(data)["events"]
            # a native OSS trigger gets the event as OSS sends it; an EventBridge-based one a
            # CloudEvent per record, one invocation each (EventBridge's event-driven delivery)
            targets: list[tuple[FunctionSpec, bytes, str]] = []
            for record in records:
                for s in self.specs:
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
                job = _Job(s, payload, uuid.uuid4().hex, via, written)
                if delay > 0:
                    self._enqueue_later(job, delay)
                else:
                    self._enqueue(job)

    def _enqueue_later(self, job: _Job, delay: float) -> None:
        """Enqueue after `delay` seconds; counted as pending meanwhile (wait_idle, stop wait)."""
        with self._cv:
            self._pending += 1

        def fire() -> None:
            try:
                self._enqueue(job)
            except RuntimeError:
                log.warning("dropped a delayed copy of an event for %s: the runtime is stopping", job.spec.id)
            finally:
                with self._cv:
                    self._pending -= 1
                    self._cv.notify_all()

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        timer.start()

    # -- workers ---------------------------------------------------------------------------
    def _gateway_id(self) -> str | None:
        http = [s.id for s in self.specs if s.http is not None]
        return "gateway" if "gateway" in http else (http[0] if http else None)

    def worker_env(self, spec: FunctionSpec) -> dict[str, str]:
        """The function's environment from s.yaml, adjusted to run on this machine."""
        env = {k: v for k, v in os.environ.items() if (k in PASS_ENV or k.startswith(PASS_ENV_PREFIXES))
               and not k.startswith("TROUPE_FC_ACCESS_KEY")}  # the invoke API's key is the runtime's own
        # s.yaml's LLM settings describe the cloud deployment (DashScope, a key from the deployer's
        # environment); on this machine the LLM is the runtime's choice (llm=, TROUPE_LLM)
        env = {**{k: v for k, v in spec.env.items() if k not in CLOUD_LLM_ENV}, **env}
        env.update({
            # the checkout stands for the FC layer's /opt/python; a package brings its own layer,
            # and only the worker's bootstrap (the part FC's runtime plays) comes from here
            "PYTHONPATH": os.path.join(self.package, "runtime") if self.package else os.pathsep.join(
                ([os.path.dirname(self.user_roles)] if self.user_roles else []) + [REPO_ROOT]),
            "PYTHONUNBUFFERED": "1",
            "FC_FUNCTION_NAME": spec.name, "FC_FUNCTION_HANDLER": spec.handler,
            "FC_FUNCTION_MEMORY_SIZE": str(spec.memory), "FC_REGION": spec.region,
            "FC_ACCOUNT_ID": specs.LOCAL_ACCOUNT_ID, "FC_SERVICE_NAME": "troupe",
            "TROUPE_FUNCTION_ID": spec.id, "TROUPE_STORE": "disk", "TROUPE_DATA": self.data_dir,
            "METAGPT_PROJECT_ROOT": os.path.join(self.runtime_dir, "metagpt", spec.id),
        })
        for k, v in self._llm_defaults.items():  # s.yaml's per-function settings and this environment win
            env.setdefault(k, v)
        env.update(self._llm_env)  # TROUPE_LLM=local becomes openai + the shared model server
        if "TROUPE_API_KEY" in spec.env:
            env["TROUPE_API_KEY"] = self.api_key
        env.update(self.extra_env)
        return env

    def _spawn(self, spec: FunctionSpec) -> Worker:
        os.makedirs(os.path.join(self.runtime_dir, "metagpt", spec.id), exist_ok=True)
        root = os.path.join(self.package, "layer", "python") if self.package else REPO_ROOT
        return spawn(spec, env=self.worker_env(spec), root=root, python=self.python,
                     log_path=os.path.join(self.runtime_dir, "logs", f"{spec.id}.log"))

    def _wait_pending(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cv.wait(remaining)
        return True


def _summary(values: list[float]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "mean": round(statistics.fmean(ordered), 3), "p50": pick(0.5),
            "p95": pick(0.95), "max": ordered[-1]}
