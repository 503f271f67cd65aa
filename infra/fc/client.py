"""InvokeFunction through the three FC SDKs, behind one small interface.

  fc3      alibabacloud-fc20230330 (2023-03-30): FC 3.0 functions, by function name
  fc-open  alibabacloud-fc-open20210406 (2021-04-06): FC 2.0, /services/<svc>/functions/<fn>
  fc2      aliyun-fc2 (2016-08-15): FC 2.0, /services/<svc>/functions/<fn>

The SDKs sign the requests (fc2: `Authorization: FC ...`; the other two: ACS3-HMAC-SHA256);
this module only builds the clients and turns their answers and errors into `Invocation` and
`FCError`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from urllib.parse import urlsplit

from infra.fc.config import ConfigError, Credentials

SDKS = ("fc3", "fc-open", "fc2")
READ_TIMEOUT_S = 130  # above the longest function timeout in s.yaml (a sync call waits for it)
CONNECT_TIMEOUT_S = 10


@dataclasses.dataclass
class Invocation:
    status: int
    request_id: str
    body: bytes
    error_type: str | None = None
    """x-fc-error-type: the function failed (the body is FC's error JSON)."""

    @property
    def ok(self) -> bool:
        return self.error_type is None and self.status in (200, 202, 204)


class FCError(Exception):
    """The FC API refused the call or could not be reached."""

    def __init__(self, message: str, status: int | None = None, code: str = "", request_id: str = ""):
        super().__init__(message)
        self.message, self.status, self.code, self.request_id = message, status, code, request_id

    def __str__(self) -> str:
        head = " ".join(str(x) for x in (self.status, self.code) if x)
        tail = f" (request id {self.request_id})" if self.request_id else ""
        return f"{head}: {self.message}{tail}" if head else f"{self.message}{tail}"


def _header(headers, name: str) -> str:
    for k, v in (headers or {}).items():
        if k.lower() == name:
            return str(v)
    return ""


def _tea_error(e: Exception) -> FCError:
    """An Alibaba Cloud OpenAPI SDK exception as an FCError (no secrets are in these)."""
    data = getattr(e, "data", None)
    data = data if isinstance(data, dict) else {}
    status = getattr(e, "status_code", None) or getattr(e, "statusCode", None) or data.get("statusCode")
    code = getattr(e, "code", None) or data.get("Code") or data.get("ErrorCode") or ""
    message = data.get("Message") or data.get("ErrorMessage") or getattr(e, "message", None) or str(e)
    inner = getattr(e, "inner_exception", None)
    if inner is not None and not status:
        detail = getattr(inner, "message", None)
        message = f"cannot reach FC: {detail if isinstance(detail, str) and detail else inner}"
    return FCError(str(message), int(status) if status else None, str(code if code != "None" else ""),
                   str(getattr(e, "request_id", None) or data.get("RequestId") or ""))


def _tea_config(config_class, endpoint: str, credentials: Credentials, region: str | None):
    """The client config both tea SDKs (fc3, fc-open) take: credentials, endpoint, timeouts."""
    parts = urlsplit(endpoint)
    return config_class(access_key_id=credentials.access_key_id, access_key_secret=credentials.access_key_secret,
                        security_token=credentials.security_token or None, endpoint=parts.netloc,
                        protocol=parts.scheme, region_id=region, read_timeout=READ_TIMEOUT_S * 1000,
                        connect_timeout=CONNECT_TIMEOUT_S * 1000)


class Invoker:
    sdk = ""

    def invoke(self, function: str, payload: bytes, *, asynchronous: bool = False,
               service: str | None = None) -> Invocation:
        raise NotImplementedError


class FC3Invoker(Invoker):
    """alibabacloud-fc20230330: POST /2023-03-30/functions/<fn>/invocations, ACS3-signed."""

    sdk = "fc3"

    def __init__(self, endpoint: str, credentials: Credentials, region: str | None = None):
        from alibabacloud_fc20230330.client import Client
        from alibabacloud_tea_openapi import utils_models

        self.client = Client(_tea_config(utils_models.Config, endpoint, credentials, region))

    def invoke(self, function, payload, *, asynchronous=False, service=None):
        from alibabacloud_fc20230330 import models
        from darabonba.runtime import RuntimeOptions
        from Tea.exceptions import TeaException

        name = f"{service}${function}" if service else function  # FC 3.0 shows 2.0 functions so
        try:
            res = self.client.invoke_function_with_options(
                name, models.InvokeFunctionRequest(body=payload),
                models.InvokeFunctionHeaders(x_fc_invocation_type="Async" if asynchronous else "Sync"),
                RuntimeOptions(autoretry=False, read_timeout=READ_TIMEOUT_S * 1000,
                               connect_timeout=CONNECT_TIMEOUT_S * 1000))
        except TeaException as e:
            raise _tea_error(e) from None
        body = res.body.read() if hasattr(res.body, "read") else (res.body or b"")
        return Invocation(int(res.status_code or 0), _header(res.headers, "x-fc-request-id"), bytes(body),
                          _header(res.headers, "x-fc-error-type") or None)


class FCOpenInvoker(Invoker):
    """alibabacloud-fc-open20210406: POST /2021-04-06/services/<svc>/functions/<fn>/invocations,
    ACS3-signed (through alibabacloud-tea-openapi)."""

    sdk = "fc-open"

    def __init__(self, endpoint: str, credentials: Credentials, region: str | None = None):
        from alibabacloud_fc_open20210406.client import Client
        from alibabacloud_tea_openapi import models as open_api_models

        self.client = Client(_tea_config(open_api_models.Config, endpoint, credentials, region))

    def invoke(self, function, payload, *, asynchronous=False, service=None):
        from alibabacloud_fc_open20210406 import models
        from alibabacloud_tea_util import models as util_models
        from Tea.exceptions import TeaException

        if not service:
            raise ConfigError("--sdk fc-open addresses FC 2.0 functions: give --service")
        try:
            res = self.client.invoke_function_with_options(
                service, function, models.InvokeFunctionRequest(body=payload),
                models.InvokeFunctionHeaders(x_fc_invocation_type="Async" if asynchronous else "Sync"),
                util_models.RuntimeOptions(autoretry=False, read_timeout=READ_TIMEOUT_S * 1000,
                                           connect_timeout=CONNECT_TIMEOUT_S * 1000))
        except TeaException as e:
            raise _tea_error(e) from None
        return Invocation(int(res.status_code or 0), _header(res.headers, "x-fc-request-id"), bytes(res.body or b""),
                          _header(res.headers, "x-fc-error-type") or None)


def _not_from_fc2(record: logging.LogRecord) -> bool:
    return f"{os.sep}fc2{os.sep}" not in (record.pathname or "")


class FC2Invoker(Invoker):
    """aliyun-fc2: POST /2016-08-15/services/<svc>/functions/<fn>/invocations, `FC` signature.

    fc2 logs every 4xx/5xx on the root logger with the request's headers, security token
    included: those records are dropped (the error is raised as FCError all the same)."""

    sdk = "fc2"

    def __init__(self, endpoint: str, credentials: Credentials, region: str | None = None):
        import fc2

        root = logging.getLogger()
        if _not_from_fc2 not in root.filters:
            root.addFilter(_not_from_fc2)

        self.client = fc2.Client(endpoint=endpoint, accessKeyID=credentials.access_key_id,
                                 accessKeySecret=credentials.access_key_secret,
                                 securityToken=credentials.security_token, Timeout=READ_TIMEOUT_S)

    def invoke(self, function, payload, *, asynchronous=False, service=None):
        import requests
        from fc2.fc_exceptions import FcError

        if not service:
            raise ConfigError("--sdk fc2 addresses FC 2.0 functions: give --service")
        try:
            res = self.client.invoke_function(service, function, payload=payload,
                                              headers={"x-fc-invocation-type": "Async" if asynchronous else "Sync"})
        except FcError as e:
            try:  # fc2 raises function errors too: their body is FC's error JSON
                detail = json.loads(e.message)
            except (TypeError, ValueError):
                detail = {}
            if detail.get("errorType") or detail.get("ErrorType"):
                return Invocation(200, e.request_id or "", json.dumps(detail).encode(),
                                  "UnhandledInvocationError")
            raise FCError(str(detail.get("ErrorMessage") or e.message), e.status_code,
                          str(detail.get("ErrorCode") or e.err_code or ""), e.request_id or "") from None
        except requests.RequestException as e:
            raise FCError(f"cannot reach FC: {e}") from None
        status = 202 if asynchronous else 200
        return Invocation(status, _header(res.headers, "x-fc-request-id"), bytes(res.data or b""),
                          _header(res.headers, "x-fc-error-type") or None)


def make_invoker(sdk: str, endpoint: str, credentials: Credentials, region: str | None = None) -> Invoker:
    cls = {"fc3": FC3Invoker, "fc-open": FCOpenInvoker, "fc2": FC2Invoker}.get(sdk)
    if cls is None:
        raise ConfigError(f"unknown --sdk {sdk!r}: expected one of {', '.join(SDKS)}")
    return cls(endpoint, credentials, region)


def local_async_invoker(endpoint: str, data_dir: str | None = None, sdk: str = "fc3"):
    """(function, event bytes) -> request id: async invocations through a running local runtime's
    FC invoke API, signed with the AccessKey it keeps in <data>/runtime/fc-access-key.json (else
    the ALIBABA_CLOUD_* variables). Failures raise RuntimeError (for infra/local/redrive.py)."""
    from infra.local.fcapi import read_key_file

    key = read_key_file(data_dir) if data_dir else None
    try:
        credentials = Credentials(key.id, key.secret) if key else Credentials.from_env()
    except ConfigError as e:
        raise RuntimeError(f"no AccessKey for {endpoint}: no running runtime's key in "
                           f"{data_dir or 'the data directory'}, and {e}") from None
    client = make_invoker(sdk, endpoint, credentials)

    def invoke(function: str, event: bytes) -> str:
        try:
            res = client.invoke(function, event, asynchronous=True)
        except FCError as e:
            raise RuntimeError(f"{endpoint}: {e}") from None
        if res.status != 202:
            raise RuntimeError(f"{endpoint} answered {res.status} for {function}")
        return res.request_id

    return invoke
