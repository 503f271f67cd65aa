"""HTTP triggers on 127.0.0.1: each request becomes an FC 3.0 HTTP event, the result a response.

A handler may return the FC 3.0 HTTP response shape {statusCode, headers, body,
isBase64Encoded}; any other str/bytes/JSON result is sent as a 200 body. A handler error is a
502 with a JSON body, like FC's gateway answering for a failed function.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

from infra.local.results import InvocationResult
from infra.local.events import make_http_event

log = logging.getLogger(__name__)

MAX_BODY = 32 * 1024 * 1024
#: names a handler may not set: the server frames the response itself
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}

Invoke = Callable[[bytes, str], InvocationResult]


def event_from_request(method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                       source_ip: str, request_id: str) -> dict:
    """The FC 3.0 HTTP trigger event for one request."""
    parts = urlsplit(target)
    query: dict[str, str] = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(k, v)
    merged: dict[str, str] = {}
    for k, v in headers:
        merged[k] = f"{merged[k]},{v}" if k in merged else v
    return make_http_event(method, parts.path or "/", body=body, headers=merged,
                           query=query, source_ip=source_ip, request_id=request_id)


def response_from_result(result: InvocationResult) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) for what the handler returned or how it failed."""
    if not result.ok:
        kind = "FunctionTimeout" if result.error_type == "FunctionTimeout" else "UnhandledInvocationError"
        body = {"error": kind, "errorType": result.error_type, "message": result.error_message,
                "requestId": result.request_id}
        return 502, {"Content-Type": "application/json", "x-fc-error-type": kind}, _json(body)
    value = result.result
    if isinstance(value, dict) and "statusCode" in value:
        return _shaped(value)
    if value is None:
        return 200, {}, b""
    if isinstance(value, bytes):
        return 200, {"Content-Type": "application/octet-stream"}, value
    if isinstance(value, str):
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, value.encode("utf-8")
    return 200, {"Content-Type": "application/json"}, _json(value)


def _shaped(value: dict) -> tuple[int, dict[str, str], bytes]:
    headers = {str(k): (",".join(map(str, v)) if isinstance(v, list) else str(v))
               for k, v in (value.get("headers") or {}).items() if str(k).lower() not in _HOP_HEADERS}
    body = value.get("body")
    if body is None:
        raw = b""
    elif value.get("isBase64Encoded"):
        raw = base64.b64decode(body)
    elif isinstance(body, str):
        raw = body.encode("utf-8")
    else:
        raw = _json(body)
        headers.setdefault("Content-Type", "application/json")
    return int(value.get("statusCode") or 200), headers, raw


def _json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


class FCResponder(BaseHTTPRequestHandler):
    """Writes an answer with FC's request-id header (HEAD answers carry no body)."""

    def _send(self, status: int, headers: dict[str, str], body: bytes, request_id: str) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("x-fc-request-id", request_id)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Handler(FCResponder):
    server: "FunctionHTTPServer"
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        request_id = uuid.uuid4().hex
        allowed = self.server.methods
        if allowed and self.command not in allowed and not (self.command == "HEAD" and "GET" in allowed):
            self._send(405, {"Content-Type": "application/json", "Allow": ", ".join(allowed)},
                       _json({"error": "MethodNotAllowed",
                              "message": f"the HTTP trigger does not accept {self.command}"}),
                       request_id)
            return
        try:
            body = self._body()
        except ValueError as e:
            self._send(413 if "large" in str(e) else 400, {"Content-Type": "application/json"},
                       _json({"error": "BadRequest", "message": str(e)}), request_id)
            return
        event = event_from_request(self.command, self.path, list(self.headers.items()), body,
                                   self.client_address[0], request_id)
        result = self.server.invoke(json.dumps(event).encode("utf-8"), request_id)
        status, headers, raw = response_from_result(result)
        self._send(status, headers, raw, request_id)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise ValueError("request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""



    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _serve

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on a local port, served from a daemon thread."""

    request_queue_size = 128  # a burst of clients must queue, not be reset
    daemon_threads = True
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.25},
                                        name=f"troupe-http-{self.server_address[1]}", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)


class FunctionHTTPServer(LoopbackServer):
    """Serves one function's HTTP trigger."""

    def __init__(self, host: str, port: int, invoke: Invoke, methods: list[str]):
        super().__init__((host, port), _Handler)
        self.invoke = invoke
        self.methods = [m.upper() for m in methods]
