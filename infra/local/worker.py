"""One function instance: imports a handler once (the cold start), then serves requests.

Run by the local runtime as
  python -m infra.local.worker --function-id ID --code DIR --handler index.handler --root REPO

Requests and responses are frames (see _frames.py) on the stdin/stdout the worker was started
with. Those two fds are moved aside at start-up: fd 1 then points at stderr and fd 0 at
/dev/null, so a handler that prints (even from C code) cannot corrupt the protocol.
This module imports only the standard library: it runs inside the function's process. The
exceptions come after the handler is imported: on the disk store, writes are announced as OSS
events (infra/local/spool.py, wrapped around the store in shared.env); and for tests, with
TROUPE_LLM=fake the scripted LLM is registered (infra/testing), and with TROUPE_FAULTS set
infra/local/faults.py injects faults into this process.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib
import json
import logging
import os
import resource
import sys
import time
import traceback
from typing import Any, BinaryIO, Callable

from infra.local._frames import read_frame, write_frame

LOG_FORMAT = "%(asctime)s %(request_id)s [%(levelname)s] %(message)s"


# --- the FC-shaped context ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Credentials:
    access_key_id: str
    access_key_secret: str
    security_token: str


@dataclasses.dataclass(frozen=True)
class FunctionMeta:
    name: str
    handler: str
    memory: int
    """MB"""
    timeout: int
    """seconds"""


@dataclasses.dataclass(frozen=True)
class ServiceMeta:
    name: str
    log_project: str
    log_store: str
    qualifier: str
    version: str


@dataclasses.dataclass(frozen=True)
class Context:
    request_id: str
    credentials: Credentials
    function: FunctionMeta
    service: ServiceMeta
    region: str
    account_id: str
    logger: logging.Logger


# --- logging --------------------------------------------------------------------------------


class _RequestIdFilter(logging.Filter):
    """Stamps every record with the request being served (FC's log line format)."""

    current = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _RequestIdFilter.current or "-"
        return True


def _setup_logging(function_id: str) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return logging.getLogger(f"fc.{function_id}")


# --- process set-up -------------------------------------------------------------------------


def _claim_stdio() -> tuple[BinaryIO, BinaryIO]:
    """Keep the original stdin/stdout for frames; point fd 0 at /dev/null and fd 1 at stderr."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)
    sys.stdout = sys.stderr
    return proto_in, proto_out


def _setup_path(code: str, root: str) -> None:
    """Code dir first, then the repo root (standing for the FC layer's /opt/python)."""
    code, root = os.path.abspath(code), os.path.abspath(root)
    rest = [p for p in sys.path if p not in ("", ".", code, root)]
    sys.path[:] = [code, root] + rest


def load_handler(spec: str) -> Callable[[bytes, Context], Any]:
    """`index.handler` -> the `handler` attribute of module `index`."""
    module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"handler {spec!r} is not of the form 'module.function'")
    fn = getattr(importlib.import_module(module_name), attr, None)
    if not callable(fn):
        raise AttributeError(f"module {module_name!r} has no callable {attr!r}")
    return fn


def _context(request_id: str, function_id: str, handler: str, logger: logging.Logger,
             timeout: int) -> Context:
    env = os.environ
    return Context(
        request_id=request_id,
        # FC gives the function role's STS credentials; the local runtime its invoke API's key
        credentials=Credentials(env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", ""),
                                env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ""),
                                env.get("ALIBABA_CLOUD_SECURITY_TOKEN", "")),
        function=FunctionMeta(env.get("FC_FUNCTION_NAME", function_id), handler,
                              int(env.get("FC_FUNCTION_MEMORY_SIZE", "512")), timeout),
        service=ServiceMeta(env.get("FC_SERVICE_NAME", "troupe"), "", "", "LATEST", ""),
        region=env.get("FC_REGION", "cn-hangzhou"),
        account_id=env.get("FC_ACCOUNT_ID", "1234567890"),
        logger=logger,
    )


# --- one request ----------------------------------------------------------------------------


def encode_result(value: Any) -> tuple[str, Any]:
    """(result_type, JSON-safe value). Raises TypeError for what FC could not return either."""
    if value is None:
        return "none", None
    if isinstance(value, (bytes, bytearray)):
        return "bytes", base64.b64encode(bytes(value)).decode()
    if isinstance(value, str):
        return "str", value
    json.dumps(value)  # TypeError if not serialisable
    return "json", value


def _error_fields(exc: BaseException) -> dict:
    return {"ok": False, "error_type": type(exc).__name__, "error_message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def serve_one(request: dict, handler: Callable, function_id: str, handler_spec: str,
              logger: logging.Logger) -> dict:
    request_id = request.get("request_id", "")
    event = base64.b64decode(request.get("event", ""))
    ctx = _context(request_id, function_id, handler_spec, logger, int(request.get("timeout", 3)))
    _RequestIdFilter.current = request_id
    print(f"FC Invoke Start RequestId: {request_id}", file=sys.stderr, flush=True)
    started = time.time()
    t0 = time.perf_counter()
    try:
        result_type, result = encode_result(handler(event, ctx))
        response: dict = {"ok": True, "result_type": result_type, "result": result,
                          "error_type": None, "error_message": None, "traceback": None}
    except Exception as exc:  # noqa: BLE001 - a handler error is reported, not fatal
        response = {"result_type": "none", "result": None, **_error_fields(exc)}
        logger.error("%s: %s", type(exc).__name__, exc)
    duration_ms = (time.perf_counter() - t0) * 1000
    print(f"FC Invoke End RequestId: {request_id}", file=sys.stderr, flush=True)
    _RequestIdFilter.current = ""
    response.update(request_id=request_id, pid=os.getpid(), started_at=started,
                    duration_ms=round(duration_ms, 3),
                    max_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return response


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.worker")
    parser.add_argument("--function-id", required=True)
    parser.add_argument("--code", required=True)
    parser.add_argument("--handler", default="index.handler")
    parser.add_argument("--root", required=True)
    args = parser.parse_args(argv)

    proto_in, proto_out = _claim_stdio()
    _setup_path(args.code, args.root)
    logger = _setup_logging(args.function_id)
    t0 = time.perf_counter()
    try:
        handler = load_handler(args.handler)
        if os.environ.get("TROUPE_STORE", "disk") == "disk":  # writes fire triggers, as in OSS
            import shared.env
            from infra.local import spool

            shared.env.wrap_stores(spool.emitting)
        if os.environ.get("TROUPE_LLM", "").strip().lower() == "fake":  # the runtime's test double
            import infra.testing

            infra.testing.install()
        if os.environ.get("TROUPE_FAULTS"):  # fault-injection tests only: see infra/local/faults.py
            from infra.local import faults

            handler = faults.install(handler)
    except BaseException as exc:  # noqa: BLE001 - an import error fails the instance
        write_frame(proto_out, {"ready": False, "pid": os.getpid(), **_error_fields(exc)})
        return 1
    init_ms = round((time.perf_counter() - t0) * 1000, 3)
    write_frame(proto_out, {"ready": True, "pid": os.getpid(), "init_ms": init_ms})

    first = True
    while True:
        request = read_frame(proto_in)
        if request is None:
            return 0
        try:
            response = serve_one(request, handler, args.function_id, args.handler, logger)
        except SystemExit as exc:  # the handler asked the instance to exit: answer, then do so
            write_frame(proto_out, {"request_id": request.get("request_id", ""), "pid": os.getpid(),
                                    "result_type": "none", "result": None, **_error_fields(exc)})
            return 1
        if first:
            response["cold_start_ms"] = init_ms
            first = False
        write_frame(proto_out, response)


if __name__ == "__main__":
    sys.exit(main())
