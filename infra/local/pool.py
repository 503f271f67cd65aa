"""Worker processes of one function: spawn on demand (cold start), keep warm, replace the dead.

Each worker serves one request at a time (FC's instanceConcurrency=1); a pool holds up to
`max_instances` of them and makes callers wait when all are busy. Unlike FC, a request that
finds every instance busy first waits `scale_out_after` seconds for one to come free before
starting another: a role that delivers the next turn just before returning would otherwise
pay a second cold start (seconds, and hundreds of MB, for a MetaGPT role) on every chain.
Set it to 0 for FC's behaviour.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from typing import Callable

from infra.local._frames import FrameTimeout, encode, read_frame_fd
from infra.local.spec import FunctionSpec

#: a worker's handler import may take longer than the function timeout (FC's init budget)
MIN_INIT_TIMEOUT = 60.0


class WorkerFailure(Exception):
    """The instance failed outside the handler: `error_type` says how."""

    def __init__(self, error_type: str, message: str, *, pid: int = 0, traceback: str | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.pid = pid
        self.traceback = traceback


class Worker:
    """One running instance of a function, talking frames over its stdin/stdout."""

    def __init__(self, spec: FunctionSpec, proc: subprocess.Popen, spawn_ms: float, init_ms: float):
        self.spec = spec
        self.proc = proc
        self.pid = proc.pid
        self.spawn_ms = spawn_ms
        """Process start to handler imported, seen from the runtime (the cold start)."""
        self.init_ms = init_ms
        """Handler import alone, measured inside the worker."""
        self.served = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, request_id: str, event: bytes, timeout: float) -> dict:
        """Send one request and wait for its response, at most `timeout` seconds.

        Raises WorkerFailure("FunctionTimeout") after killing the worker, as FC does, or
        WorkerFailure("WorkerCrashed") if the process dies.
        """
        frame = encode({"request_id": request_id, "event": base64.b64encode(event).decode(),
                        "timeout": int(timeout)})
        try:
            self.proc.stdin.write(frame)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise self._crashed() from None
        try:
            response = read_frame_fd(self.proc.stdout.fileno(), time.monotonic() + timeout)
        except FrameTimeout:
            self.kill()
            raise WorkerFailure("FunctionTimeout", f"Function timed out after {timeout:g} seconds",
                                pid=self.pid) from None
        if response is None:
            raise self._crashed()
        self.served += 1
        return response

    def _crashed(self) -> WorkerFailure:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        return WorkerFailure("WorkerCrashed", f"the function instance exited (code {code}) "
                             f"while serving a request; see its log", pid=self.pid)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close_pipes()

    def close(self, grace: float = 2.0) -> None:
        """Ask the worker to exit (end of stdin); kill it if it does not."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def spawn(spec: FunctionSpec, *, env: dict[str, str], root: str, log_path: str,
          python: str = sys.executable) -> Worker:
    """Start a worker and wait until its handler is imported. Raises WorkerFailure."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    argv = [python, "-m", "infra.local.worker", "--function-id", spec.id, "--code", spec.code,
            "--handler", spec.handler, "--root", root]
    t0 = time.perf_counter()
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                                cwd=spec.code, env=env, start_new_session=True)
    deadline = time.monotonic() + max(float(spec.timeout), MIN_INIT_TIMEOUT)
    try:
        ready = read_frame_fd(proc.stdout.fileno(), deadline)
    except FrameTimeout:
        ready = {"ready": False, "error_type": "InitializationTimeout",
                 "error_message": "the handler module did not finish importing in time"}
    spawn_ms = (time.perf_counter() - t0) * 1000
    if not ready or not ready.get("ready"):
        worker = Worker(spec, proc, spawn_ms, 0.0)
        worker.kill()
        ready = ready or {"error_type": "WorkerCrashed",
                          "error_message": f"the function instance exited (code {proc.returncode}) "
                                           f"before it was ready; see {log_path}"}
        raise WorkerFailure(ready.get("error_type") or "InitializationError",
                            f"Function initialization failed: {ready.get('error_message')}",
                            pid=proc.pid, traceback=ready.get("traceback"))
    return Worker(spec, proc, spawn_ms, float(ready.get("init_ms", 0.0)))


class Pool:
    """Up to `max_instances` warm workers of one function."""

    def __init__(self, spec: FunctionSpec, spawner: Callable[[FunctionSpec], Worker], max_instances: int,
                 scale_out_after: float = 0.0):
        self.spec = spec
        self._spawn = spawner
        self.max_instances = max(1, int(max_instances))
        self.scale_out_after = scale_out_after
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()
        self._count = 0
        self._closed = False
        self._cv = threading.Condition()
        self.spawned = 0
        """How many instances were started so far (cold starts)."""

    def acquire(self) -> tuple[Worker, bool]:
        """A worker reserved for the caller, and whether it was just started (cold)."""
        deadline = time.monotonic() + self.scale_out_after
        with self._cv:
            while True:
                if self._closed:
                    raise WorkerFailure("RuntimeStopped", "the local runtime is stopping")
                while self._idle:
                    worker = self._idle.pop()  # most recently used: keep few instances warm
                    if worker.alive():
                        return worker, False
                    worker.kill()
                    self._all.discard(worker)
                    self._count -= 1
                if self._count < self.max_instances:
                    wait = deadline - time.monotonic() if self._count else 0.0
                    if wait <= 0:
                        self._count += 1
                        break
                    self._cv.wait(wait)
                    continue
                self._cv.wait()
        try:
            worker = self._spawn(self.spec)
        except BaseException:
            with self._cv:
                self._count -= 1
                self._cv.notify()
            raise
        with self._cv:
            self.spawned += 1
            self._all.add(worker)
        return worker, True

    def release(self, worker: Worker) -> None:
        with self._cv:
            keep = worker.alive() and not self._closed
            if keep:
                self._idle.append(worker)
            else:
                self._count -= 1
                self._all.discard(worker)
            self._cv.notify()
        if not keep:
            worker.close()

    def pids(self) -> list[int]:
        with self._cv:
            return [w.pid for w in self._idle if w.alive()]

    def close(self, *, kill_busy: bool = False) -> None:
        """Stop idle workers now; busy ones are killed if asked, else stopped when released."""
        with self._cv:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._all.difference_update(idle)
            busy = list(self._all) if kill_busy else []
            self._cv.notify_all()
        for worker in idle:
            worker.close()
        for worker in busy:  # their callers see the pipe close and release them
            if worker.alive():
                worker.proc.kill()
