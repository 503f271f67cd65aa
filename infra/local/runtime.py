"""The local runtime: plays FC and OSS on one machine from the same s.yaml the cloud deploys.

    with LocalRuntime("/tmp/troupe-data", "s.yaml") as rt:
        rt.store.put("inbox/persona/c1/0001-m.json", b"{}")   # fires the OSS trigger
        rt.wait_idle(30)
        print(rt.http_url, rt.invocation_log)

Layout under the data dir: objects/ belongs to the DiskStore, events/ to its spool (spool.py); runtime/ holds
logs/<function>.log (worker stderr), deadletters/<function>/, metagpt/<function>/ and a lock.

The runtime ties together the parts, each in its own module: the scheduler (scheduler.py: warm
instances, sync and async invocations, retries, destinations), the event dispatcher
(dispatcher.py), the front doors (servers.py: HTTP triggers, the FC invoke API, the OSS
endpoint) and, with the embedded model, the model server (model.py).

With `llm="local"` (or TROUPE_LLM=local) the runtime joins/verifies the embedded model's weights,
starts ONE llama.cpp server (infra/local/model.py; log runtime/logs/model-server.log) before any
worker, and gives every worker TROUPE_LLM=openai pointing at it, so the role functions reach it
through MetaGPT's openai provider exactly as they would a remote LLM. stop() stops it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import secrets
import sys
import uuid
from typing import Callable

from infra.local import spec as specs
from infra.local.dispatcher import EventDispatcher
from infra.local.pool import Worker, spawn
from infra.local.results import InvocationRecord, InvocationResult
from infra.local.scheduler import Scheduler
from infra.local.servers import Servers, gateway_of
from infra.local.spec import FunctionSpec
from infra.local.spool import EmittingStore, EventSpool
from shared.store.disk import DiskStore

log = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_S_YAML = os.path.join(REPO_ROOT, "s.yaml")
#: parent variables a worker sees besides the function's own environment
PASS_ENV = ("PATH", "HOME", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV")
PASS_ENV_PREFIXES = ("TROUPE_", "LC_", "OMP_", "DASHSCOPE_")
CLOUD_LLM_ENV = ("TROUPE_LLM", "TROUPE_LLM_MODEL", "DASHSCOPE_API_KEY")
#: with the embedded model, for a function whose s.yaml (or this process's environment) does not
#: say: short replies (a small model drifts in long ones) and a request timeout under the persona
#: function's 120 s
LOCAL_LLM_DEFAULTS = {"TROUPE_LLM_MAX_TOKENS": "256", "TROUPE_LLM_TIMEOUT": "100", "TROUPE_LLM_TEMPERATURE": "0.7"}


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
        self.poll_interval = poll_interval
        self.extra_env = dict(extra_env or {})
        self.api_key = os.environ.get("TROUPE_API_KEY") or secrets.token_urlsafe(24)
        """The deployment API key the gateway requires to start a conversation: the caller's
        TROUPE_API_KEY, or one made up for this runtime's life."""
        self.python = python
        self.stop_timeout = stop_timeout
        self.runtime_dir = os.path.join(self.data_dir, "runtime")
        self.spool = EventSpool(self.data_dir)
        self.store = EmittingStore(DiskStore(self.data_dir), self.spool)
        self.scheduler = Scheduler(self.functions, self._spawn, os.path.join(self.runtime_dir, "deadletters"),
                                   max_instances=max_instances, scale_out_after=scale_out_after,
                                   retry_delay=retry_delay, sleep=sleep, event_delays=event_delays)
        self.front = Servers(host, self.runtime_dir, http_port=http_port, api_port=api_port, oss_port=oss_port)
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

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "LocalRuntime":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, *, dispatch: bool = True, serve_http: bool = True) -> None:
        """Start the scheduler; with `dispatch`, the OSS event dispatcher; with `serve_http`, the
        HTTP triggers, the invoke API and the OSS endpoint. Without dispatch (one-off invokes)
        events stay spooled for later."""
        if self._started:
            return
        for sub in ("logs", "deadletters", "metagpt"):
            os.makedirs(os.path.join(self.runtime_dir, sub), exist_ok=True)
        if dispatch:
            self._take_lock()
        try:
            self._start_llm()
            self.scheduler.start()
            if serve_http:  # before any event: a worker is given the invoke API's address when spawned
                self.front.start(self.specs, self._http_invoker, self, self.store, self.spool.bucket)
            if dispatch:
                self._dispatcher = EventDispatcher(self.spool.events_dir, self.spool.sock_path,
                                                   self.scheduler.on_event, poll_interval=self.poll_interval)
                self._dispatcher.start()
        except BaseException:
            self._stop_llm()
            self._release_lock()
            raise
        self._started = True

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking events and requests, let in-flight work finish, then stop the workers."""
        if not self._started:
            return
        if self._dispatcher is not None:
            self._dispatcher.stop()
        self.front.stop()
        self.scheduler.stop(self.stop_timeout if timeout is None else timeout)
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
        server = self.front.http.get(gateway_of(self.specs) or "")
        return server.url if server else None

    @property
    def api_url(self) -> str | None:
        """Endpoint of the FC invoke API (for fc2 / alibabacloud-fc-open20210406 clients)."""
        return self.front.api.url if self.front.api else None

    @property
    def oss_url(self) -> str | None:
        """The local OSS endpoint (oss2: `oss2.Bucket(oss2.Auth(id, secret), oss_url, bucket)`)."""
        return self.front.oss.url if self.front.oss else None

    @property
    def http_urls(self) -> dict[str, str]:
        return {fid: s.url for fid, s in self.front.http.items()}

    @property
    def api_server(self):
        return self.front.api

    @property
    def oss_access_key(self):
        return self.front.oss_access_key

    @property
    def invocation_log(self) -> list[InvocationRecord]:
        return self.scheduler.invocation_log

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
               request_id: str | None = None, delay: float = 0.0) -> InvocationResult:
        """Invoke like FC: sync returns the result; async queues it (with retries), after `delay`
        seconds (x-fc-async-delay), and returns."""
        if not self._started:
            raise RuntimeError("the local runtime is not started (use start() or a with block)")
        return self.scheduler.invoke(self.function(function_id), bytes(event), request_id or uuid.uuid4().hex,
                                     "invoke", sync=sync, delay=delay)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once the event spool is empty and nothing is queued or running; False on timeout."""
        return self.scheduler.wait_pending(
            timeout, lambda: self._dispatcher is None or self._dispatcher.pending() == 0,
            poll=max(self.poll_interval, 0.01))

    def pids(self, function_id: str) -> list[int]:
        """Pids of the function's idle (warm) workers."""
        return self.scheduler.pids(function_id)

    def trigger_latencies(self, function_id: str | None = None) -> list[float]:
        """Event write -> handler start (ms) of first attempts of OSS-triggered invocations."""
        return self.scheduler.trigger_latencies(function_id)

    def metrics(self) -> dict:
        """Per function: counts by outcome, cold starts and latency percentiles (ms)."""
        return self.scheduler.metrics()

    def _http_invoker(self, spec: FunctionSpec):
        return lambda event, request_id: self.scheduler.invoke(spec, event, request_id, "http")

    # -- workers ---------------------------------------------------------------------------
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
        if self.front.api is not None:
            # as FC gives a function its role's credentials: here the invoke API's own key, with
            # which a role function hands a throttled turn back (shared/handback.py)
            key = self.front.api.access_key
            env.update({"TROUPE_FC_ENDPOINT": self.front.api.url, "ALIBABA_CLOUD_ACCESS_KEY_ID": key.id,
                        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": key.secret})
        env.update(self.extra_env)
        return env

    def _spawn(self, spec: FunctionSpec) -> Worker:
        os.makedirs(os.path.join(self.runtime_dir, "metagpt", spec.id), exist_ok=True)
        root = os.path.join(self.package, "layer", "python") if self.package else REPO_ROOT
        return spawn(spec, env=self.worker_env(spec), root=root, python=self.python,
                     log_path=os.path.join(self.runtime_dir, "logs", f"{spec.id}.log"))
