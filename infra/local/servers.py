"""The local runtime's front doors: an HTTP server per HTTP-triggered function, the FC invoke
API (fcapi.py) and the bucket's OSS endpoint (oss_endpoint.py), on loopback ports."""

from __future__ import annotations

import contextlib
import os
from typing import Callable

from infra.local.fcapi import AccessKey, Invoker, InvokeAPIServer, write_secret
from infra.local.httpd import FunctionHTTPServer, Invoke
from infra.local.spec import FunctionSpec
from shared.store.base import ObjectStore

OSS_KEY_FILE = "oss-access-key.json"


def gateway_of(functions: list[FunctionSpec]) -> str | None:
    """The function whose HTTP trigger is the API: "gateway", else the first with one."""
    http = [s.id for s in functions if s.http is not None]
    return "gateway" if "gateway" in http else (http[0] if http else None)


class Servers:
    def __init__(self, host: str, runtime_dir: str, *, http_port: int = 0, api_port: int = 0, oss_port: int = 0):
        self.host, self.runtime_dir = host, runtime_dir
        self.http_port, self.api_port, self.oss_port = http_port, api_port, oss_port
        self.http: dict[str, FunctionHTTPServer] = {}
        self.api: InvokeAPIServer | None = None
        self.oss = None
        """The local OSS endpoint (infra/local/oss_endpoint.py) while served."""
        self.oss_access_key: AccessKey | None = None

    def start(self, functions: list[FunctionSpec], http_invoker: Callable[[FunctionSpec], Invoke],
              invoker: Invoker, store: ObjectStore, bucket: str) -> None:
        gateway = gateway_of(functions)
        for s in functions:
            if s.http is not None:
                port = self.http_port if s.id == gateway else 0
                server = FunctionHTTPServer(self.host, port, http_invoker(s), s.http["methods"])
                server.start()
                self.http[s.id] = server
        self.api = InvokeAPIServer(self.host, self.api_port, invoker)
        self.api.start()
        self.oss = self._start_oss(store, bucket)

    def _start_oss(self, store: ObjectStore, bucket: str):
        """The bucket's OSS endpoint, for oss2 and ossutil: signed requests only, with an AccessKey
        made for this runtime and written to <data>/runtime/oss-access-key.json (0600). Every put
        and delete through it is a trigger event, as a function's own write is."""
        from infra.local.oss_endpoint import OssEndpoint

        key = self.oss_access_key or AccessKey.generate()
        self.oss_access_key = key
        server = OssEndpoint((self.host, self.oss_port), store, bucket,
                             access_key_id=key.id, access_key_secret=key.secret)
        server.start()
        write_secret(os.path.join(self.runtime_dir, OSS_KEY_FILE),
                     {"endpoint": server.url, "bucket": bucket, "access_key_id": key.id,
                      "access_key_secret": key.secret})
        return server

    def stop(self) -> None:
        for server in [*self.http.values(), *([self.api] if self.api else []), *([self.oss] if self.oss else [])]:
            server.stop()
        self.http.clear()
        self.api = self.oss = None
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.runtime_dir, OSS_KEY_FILE))
