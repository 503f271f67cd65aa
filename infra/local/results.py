"""What an invocation returns, what the runtime logs about it, and FC's failure record."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

from infra.local.spec import FunctionSpec


@dataclasses.dataclass
class InvocationResult:
    request_id: str
    function_id: str
    status: str
    """"succeeded", "failed" or (async) "queued"."""
    ok: bool
    result: Any = None
    """What the handler returned: str, bytes, a JSON value or None."""
    error_type: str | None = None
    """The exception's class name, or FunctionTimeout / WorkerCrashed / InitializationError."""
    error_message: str | None = None
    traceback: str | None = None
    pid: int | None = None
    duration_ms: float | None = None
    """Handler time, measured inside the worker."""
    started_at: float | None = None
    """Epoch seconds when the handler was called."""
    cold_start: bool = False
    cold_start_ms: float | None = None
    """Spawn to handler imported, seen from the runtime (only on a cold start)."""
    init_ms: float | None = None
    """Handler module import alone, measured in the worker (only on a cold start)."""
    attempt: int = 1
    max_rss_kb: int | None = None

    @classmethod
    def from_response(cls, function_id: str, resp: dict) -> "InvocationResult":
        value = resp.get("result")
        kind = resp.get("result_type")
        if kind == "bytes":
            value = base64.b64decode(value)
        ok = bool(resp.get("ok"))
        return cls(request_id=resp.get("request_id", ""), function_id=function_id,
                   status="succeeded" if ok else "failed", ok=ok, result=value,
                   error_type=resp.get("error_type"), error_message=resp.get("error_message"),
                   traceback=resp.get("traceback"), pid=resp.get("pid"),
                   duration_ms=resp.get("duration_ms"), started_at=resp.get("started_at"),
                   max_rss_kb=resp.get("max_rss_kb"))

    @classmethod
    def failure(cls, function_id: str, request_id: str, error_type: str, message: str, *,
                pid: int | None = None, traceback: str | None = None) -> "InvocationResult":
        return cls(request_id=request_id, function_id=function_id, status="failed", ok=False,
                   error_type=error_type, error_message=message, traceback=traceback, pid=pid)

    def body(self) -> bytes:
        """The result as bytes, as FC's invoke API would return it."""
        if self.result is None:
            return b""
        if isinstance(self.result, bytes):
            return self.result
        if isinstance(self.result, str):
            return self.result.encode("utf-8")
        return json.dumps(self.result, ensure_ascii=False).encode("utf-8")

    @property
    def outcome(self) -> str:
        if self.ok:
            return "ok"
        return {"FunctionTimeout": "timeout", "WorkerCrashed": "crashed"}.get(self.error_type or "", "error")


@dataclasses.dataclass(frozen=True)
class InvocationRecord:
    """One attempt, as kept in `LocalRuntime.invocation_log`."""

    function_id: str
    request_id: str
    trigger: str
    """"invoke", "http", "oss" or "destination"."""
    attempt: int
    pid: int | None
    start: float
    """Epoch seconds: handler start, or when the runtime took the request if it never started."""
    duration_ms: float | None
    outcome: str
    """"ok", "error", "timeout" or "crashed"."""
    error_type: str | None
    cold_start: bool
    cold_start_ms: float | None
    trigger_latency_ms: float | None
    """Event file written -> handler start, for OSS-triggered invocations."""
    max_rss_kb: int | None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def failure_record(spec: FunctionSpec, event: bytes, result: InvocationResult, attempts: int,
                   condition: str, *, now: float | None = None) -> dict:
    """What FC sends to an onFailure destination after the last failed attempt."""
    stack = (result.traceback or "").splitlines()
    payload = {"errorMessage": result.error_message or "", "errorType": result.error_type or "",
               "stackTrace": stack}
    return {
        "timestamp": _iso(time.time() if now is None else now),
        "requestContext": {"requestId": result.request_id, "functionArn": spec.arn(),
                           "condition": condition, "approximateInvokeCount": attempts},
        "requestPayload": event.decode("utf-8", "replace"),
        "responseContext": {"statusCode": 200, "functionError": "UnhandledInvocationError"},
        "responsePayload": json.dumps(payload, ensure_ascii=False),
    }
