"""The FC invoke API on 127.0.0.1, so FC SDK clients work against the local runtime.

Paths: /2016-08-15/services/<svc>[.<qualifier>]/functions/<fn>/invocations (fc2),
/2021-04-06/... (alibabacloud-fc-open20210406) and /2023-03-30/functions/<fn>/invocations.
<fn> is a function name or resource id ("service$function" is accepted too); the service is
ignored. Header x-fc-invocation-type: Async queues the event (202), anything else is sync.
A function error is a 200 with x-fc-error-type, as FC answers it. Signatures are not checked.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from infra.local.httpd import FCResponder, LoopbackServer

if TYPE_CHECKING:
    from infra.local.runtime import LocalRuntime

_PATH = re.compile(r"^/(?:(?:2016-08-15|2021-04-06)/services/[^/]+|2023-03-30)/functions/([^/]+)/invocations/?$")


class _Handler(FCResponder):
    server: "InvokeAPIServer"
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request_id = self.headers.get("x-fc-request-id") or uuid.uuid4().hex
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _PATH.match(urlsplit(self.path).path)
        if not match:
            return self._error(404, "PathNotSupported", f"no invoke API at {self.path}", request_id)
        name = unquote(match.group(1)).split("$")[-1]
        runtime = self.server.runtime
        try:
            spec = runtime.function(name)
        except LookupError as e:
            return self._error(404, "FunctionNotFound", str(e), request_id)
        sync = self.headers.get("x-fc-invocation-type", "Sync").lower() != "async"
        try:
            result = runtime.invoke(spec.id, body, sync=sync, request_id=request_id)
        except RuntimeError as e:
            return self._error(503, "ServiceUnavailable", str(e), request_id)
        if not sync:
            return self._send(202, {}, b"", request_id)
        if result.ok:
            return self._send(200, {}, result.body(), request_id)
        payload = {"errorMessage": result.error_message, "errorType": result.error_type,
                   "stackTrace": (result.traceback or "").splitlines()}
        self._send(200, {"x-fc-error-type": "UnhandledInvocationError", "Content-Type": "application/json"},
                   json.dumps(payload).encode("utf-8"), request_id)

    def _error(self, status: int, code: str, message: str, request_id: str) -> None:
        body = json.dumps({"ErrorCode": code, "ErrorMessage": message, "RequestId": request_id})
        self._send(status, {"Content-Type": "application/json"}, body.encode("utf-8"), request_id)

    def log_message(self, fmt: str, *args) -> None:
        pass


class InvokeAPIServer(LoopbackServer):
    def __init__(self, host: str, port: int, runtime: "LocalRuntime"):
        super().__init__((host, port), _Handler)
        self.runtime = runtime
