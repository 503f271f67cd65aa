"""The FC invoke API on 127.0.0.1, so FC SDK clients work against the local runtime.

Paths: /2016-08-15/services/<svc>[.<qualifier>]/functions/<fn>/invocations (fc2),
/2021-04-06/... (alibabacloud-fc-open20210406) and /2023-03-30/functions/<fn>/invocations
(alibabacloud-fc20230330). <fn> is a function name or resource id ("service$function" is
accepted too); the service is ignored. Header x-fc-invocation-type: Async queues the event
(202), anything else is sync. A function error is a 200 with x-fc-error-type, as FC answers it.

Every request must be signed with the runtime's AccessKey, as FC requires (`verify_request`):
  * `Authorization: FC <id>:<base64 HMAC-SHA256>` (fc2): over the method, Content-MD5,
    Content-Type, Date, the x-fc-* headers and the unescaped path. The body is covered only when
    the client sends Content-MD5 (fc2 does not); Date must be within 15 minutes of now.
  * `Authorization: ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=...,Signature=<hex>`
    (alibabacloud-fc-open20210406 and alibabacloud-fc20230330, through alibabacloud-tea-openapi):
    over the canonical request (method, path, sorted query, the signed headers, the body's
    SHA-256). host, every x-acs-* and x-fc-* header must be signed, x-acs-content-sha256 must be
    the body's, x-acs-date within 15 minutes of now, and a signature nonce is accepted once.
An STS security token (x-fc-security-token / x-acs-security-token) is accepted and ignored:
it is covered by the signature like any other header, but not checked against an STS service.
A missing or wrong signature is a 403 with FC's error body ({"ErrorCode": "SignatureNotMatch",
...}, "InvalidAccessKeyID", "RequestTimeTooSkewed", ...), and nothing is invoked.

The AccessKey (`InvokeAPIServer.access_key`): the runtime's `fc_access_key` attribute if it
has one, else TROUPE_FC_ACCESS_KEY_ID + TROUPE_FC_ACCESS_KEY_SECRET, else one generated per
runtime. While the server runs it is also written (mode 0600) to
<data>/runtime/fc-access-key.json, for tools that send to a running runtime (`read_key_file`).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import dataclasses
import email.utils
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
import uuid
import weakref
from typing import Iterable, Mapping, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from infra.local.httpd import FCResponder, LoopbackServer
from infra.local.results import InvocationResult
from infra.local.spec import FunctionSpec
from shared.handback import MAX_DELAY


class Invoker(Protocol):
    """What the invoke API needs of the runtime behind it (LocalRuntime is one)."""

    runtime_dir: str

    def function(self, id_or_name: str) -> FunctionSpec: ...

    def invoke(self, function_id: str, event: bytes, *, sync: bool = True,
               request_id: str | None = None, delay: float = 0.0) -> InvocationResult: ...

_PATH = re.compile(r"^/(?:(?:2016-08-15|2021-04-06)/services/[^/]+|2023-03-30)/functions/([^/]+)/invocations/?$")

MAX_SKEW = 15 * 60
"""Seconds a signed request's date may differ from the local clock."""
KEY_FILE = "fc-access-key.json"
ENV_ID, ENV_SECRET = "TROUPE_FC_ACCESS_KEY_ID", "TROUPE_FC_ACCESS_KEY_SECRET"
ACS3 = "ACS3-HMAC-SHA256"


@dataclasses.dataclass(frozen=True)
class AccessKey:
    """An AccessKey pair the invoke API accepts. repr() never shows the secret."""

    id: str
    secret: str = dataclasses.field(repr=False)

    @classmethod
    def generate(cls) -> "AccessKey":
        return cls("LTAIlocal" + secrets.token_hex(8), secrets.token_urlsafe(24))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "AccessKey | None":
        key_id, secret = env.get(ENV_ID, "").strip(), env.get(ENV_SECRET, "").strip()
        if bool(key_id) != bool(secret):
            raise ValueError(f"set both {ENV_ID} and {ENV_SECRET}, or neither")
        return cls(key_id, secret) if key_id else None


class SignatureError(Exception):
    """A request the invoke API refuses before invoking anything (always a 403)."""

    def __init__(self, code: str, message: str, status: int = 403):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class NonceCache:
    """ACS3 signature nonces seen within the allowed skew: a replayed request is refused."""

    def __init__(self, window: float = 2 * MAX_SKEW):
        self.window = window
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def add(self, key_id: str, nonce: str, now: float) -> bool:
        """False if (key_id, nonce) was already used."""
        with self._lock:
            if len(self._seen) > 1024:
                self._seen = {k: t for k, t in self._seen.items() if now - t < self.window}
            if (key_id, nonce) in self._seen and now - self._seen[(key_id, nonce)] < self.window:
                return False
            self._seen[(key_id, nonce)] = now
            return True


# -- verification -------------------------------------------------------------------------------

def verify_request(method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes,
                   keys: AccessKey | Mapping[str, str], *, now: float | None = None,
                   nonces: NonceCache | None = None, max_skew: float = MAX_SKEW) -> str:
    """Check an invoke API request's signature; return the AccessKey id that signed it.

    `target` is the request line's path and query as received; `headers` the received
    (name, value) pairs. Raises SignatureError (FC's error code and message) otherwise."""
    table = _keys(keys)
    hdrs: dict[str, list[str]] = {}
    for name, value in headers:
        hdrs.setdefault(name.lower(), []).append(value)
    now = time.time() if now is None else now
    auth = _one(hdrs, "authorization").strip()
    if not auth:
        raise SignatureError("AccessDenied", "the request is not signed: required HTTP header "
                                             "Authorization was not specified")
    scheme, _, rest = auth.partition(" ")
    if scheme == "FC":
        return _verify_fc(method, target, hdrs, body, rest.strip(), table, now, max_skew)
    if scheme == ACS3:
        return _verify_acs3(method, target, hdrs, body, rest.strip(), table, now, max_skew, nonces)
    raise SignatureError("AccessDenied", f"unsupported Authorization scheme {scheme[:40]!r}: "
                                         f"expected 'FC' (fc2) or '{ACS3}' (Alibaba Cloud OpenAPI SDKs)")


def _keys(keys: AccessKey | Mapping[str, str]) -> dict[str, str]:
    return {keys.id: keys.secret} if isinstance(keys, AccessKey) else dict(keys)


def _one(hdrs: dict[str, list[str]], name: str) -> str:
    return ",".join(hdrs.get(name, []))


def _secret(table: dict[str, str], key_id: str) -> str:
    secret = table.get(key_id)
    if secret is None:
        raise SignatureError("InvalidAccessKeyID", f"invalid access key ID '{key_id[:64]}'")
    return secret


def _mismatch(detail: str = "") -> SignatureError:
    return SignatureError("SignatureNotMatch", "The request signature we calculated does not match the "
                          "signature you provided. Check your access key and signing method"
                          + (f" ({detail})" if detail else ""))


def _check_time(when: float | None, header: str, raw: str, now: float, max_skew: float) -> None:
    if when is None:
        raise SignatureError("InvalidArgument", f"header {header} {raw[:60]!r} is not a valid date")
    if abs(now - when) > max_skew:
        raise SignatureError("RequestTimeTooSkewed", f"the difference between the request time ({raw[:60]}) "
                             f"and the server's time is more than {max_skew / 60:g} minutes")


def _verify_fc(method: str, target: str, hdrs: dict[str, list[str]], body: bytes, credential: str,
               table: dict[str, str], now: float, max_skew: float) -> str:
    key_id, sep, signature = credential.rpartition(":")
    if not sep or not key_id:
        raise SignatureError("AccessDenied", "malformed Authorization header: expected 'FC <AccessKeyId>:<signature>'")
    secret = _secret(table, key_id)
    date = _one(hdrs, "date")
    if not date:
        raise SignatureError("MissingRequiredHeader", "required HTTP header Date was not specified")
    try:
        parsed = email.utils.parsedate_tz(date)
        when = float(email.utils.mktime_tz(parsed)) if parsed else None
    except (TypeError, ValueError, OverflowError):
        when = None
    _check_time(when, "Date", date, now, max_skew)
    md5 = _one(hdrs, "content-md5")
    if md5:
        digest = hashlib.md5(body).digest()  # noqa: S324 - the header's definition, not a security hash
        if md5.strip() not in (base64.b64encode(digest).decode(), digest.hex(), digest.hex().upper()):
            raise _mismatch("the body does not match Content-MD5")
    fc_headers = sorted((k, ",".join(v)) for k, v in hdrs.items() if k.startswith("x-fc-"))
    canonical = "".join(f"{k}:{v}\n" for k, v in fc_headers)
    resource = unquote(urlsplit(target).path)
    string_to_sign = "\n".join([method.upper(), md5, _one(hdrs, "content-type"), date, canonical + resource])
    expected = base64.b64encode(hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise _mismatch()
    return key_id


def _acs3_fields(rest: str) -> dict[str, str]:
    fields = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name.strip()] = value.strip()
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if not fields.get(f)]
    if missing:
        raise SignatureError("AccessDenied", f"malformed Authorization header: no {', '.join(missing)}")
    return fields


def _canonical_query(query: str) -> str:
    pairs = sorted((quote(k, safe="~"), quote(v, safe="~")) for k, v in parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{k}={v}" for k, v in pairs)


def _acs_time(raw: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(raw.strip(), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def _verify_acs3(method: str, target: str, hdrs: dict[str, list[str]], body: bytes, rest: str,
                 table: dict[str, str], now: float, max_skew: float, nonces: NonceCache | None) -> str:
    fields = _acs3_fields(rest)
    key_id = fields["Credential"]
    secret = _secret(table, key_id)
    declared = _one(hdrs, "x-acs-accesskey-id")
    if declared and declared != key_id:
        raise SignatureError("InvalidAccessKeyID", "x-acs-accesskey-id differs from the Credential")
    signed = fields["SignedHeaders"].lower().split(";")
    for name in ("host", "x-acs-date", "x-acs-content-sha256"):
        if name not in hdrs:
            raise SignatureError("MissingRequiredHeader", f"required HTTP header {name} was not specified")
    unsigned = [k for k in hdrs if (k in ("host", "content-type") or k.startswith(("x-acs-", "x-fc-")))
                and k not in signed]
    if unsigned:
        raise _mismatch(f"header {sorted(unsigned)[0]} is not signed")
    absent = [k for k in signed if k not in hdrs]
    if absent:
        raise _mismatch(f"signed header {absent[0]} is missing")
    date = _one(hdrs, "x-acs-date")
    _check_time(_acs_time(date), "x-acs-date", date, now, max_skew)
    payload_hash = _one(hdrs, "x-acs-content-sha256").strip().lower()
    if not hmac.compare_digest(payload_hash.encode(), hashlib.sha256(body).hexdigest().encode()):
        raise _mismatch("the body does not match x-acs-content-sha256")
    parts = urlsplit(target)
    canonical_headers = "".join(f"{k}:{','.join(sorted(v.strip() for v in hdrs[k]))}\n" for k in signed)
    canonical_request = "\n".join([method.upper(), parts.path or "/", _canonical_query(parts.query),
                                   canonical_headers, ";".join(signed), payload_hash])
    string_to_sign = f"{ACS3}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    expected = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    try:
        given = binascii.unhexlify(fields["Signature"])
    except (binascii.Error, ValueError):
        raise _mismatch() from None
    if not hmac.compare_digest(bytes.fromhex(expected), given):
        raise _mismatch()
    nonce = _one(hdrs, "x-acs-signature-nonce")
    if nonce and nonces is not None and not nonces.add(key_id, nonce, now):
        raise SignatureError("SignatureNonceUsed", "the signature nonce has already been used")
    return key_id


# -- the runtime's key --------------------------------------------------------------------------

_generated: "weakref.WeakKeyDictionary[object, AccessKey]" = weakref.WeakKeyDictionary()
_generated_lock = threading.Lock()


def access_key_for(runtime) -> AccessKey:
    """The runtime's AccessKey: its `fc_access_key`, else the environment's, else one generated
    once for this runtime object (kept across stop/start)."""
    given = getattr(runtime, "fc_access_key", None)
    if given is not None:
        return given if isinstance(given, AccessKey) else AccessKey(*given)
    from_env = AccessKey.from_env()
    if from_env is not None:
        return from_env
    with _generated_lock:
        if runtime not in _generated:
            _generated[runtime] = AccessKey.generate()
        return _generated[runtime]


def write_secret(path: str, data: dict) -> None:
    """Write a key pair's JSON file readable by its owner only (0600), atomically."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def key_file(data_dir: str) -> str:
    return os.path.join(os.path.abspath(data_dir), "runtime", KEY_FILE)


def read_key_file(data_dir: str) -> AccessKey | None:
    """The AccessKey of the runtime serving the FC API on `data_dir`, if one is running."""
    try:
        with open(key_file(data_dir), encoding="utf-8") as f:
            data = json.load(f)
        return AccessKey(data["access_key_id"], data["access_key_secret"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def async_delay(header: str | None, sync: bool) -> float:
    """x-fc-async-delay: seconds FC waits before running an async invocation, 0 to 3600."""
    if header is None or header == "":
        return 0.0
    if sync:
        raise ValueError("x-fc-async-delay applies to asynchronous invocations only")
    try:
        delay = float(header)
    except ValueError:
        raise ValueError(f"x-fc-async-delay must be a number of seconds, not {header[:40]!r}") from None
    if not 0 <= delay <= MAX_DELAY:
        raise ValueError(f"x-fc-async-delay must be between 0 and {MAX_DELAY} seconds")
    return delay


# -- the server ---------------------------------------------------------------------------------

class _Handler(FCResponder):
    server: "InvokeAPIServer"
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request_id = uuid.uuid4().hex
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            self.server.verify(self.command, self.path, list(self.headers.items()), body)
        except SignatureError as e:
            return self._error(e.status, e.code, e.message, request_id)
        request_id = self.headers.get("x-fc-request-id") or request_id
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
            delay = async_delay(self.headers.get("x-fc-async-delay"), sync)
        except ValueError as e:
            return self._error(400, "InvalidArgument", str(e), request_id)
        try:
            result = runtime.invoke(spec.id, body, sync=sync, request_id=request_id, delay=delay)
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
        # FC's own fields, and Code/Message, which the Alibaba Cloud OpenAPI SDKs read
        body = json.dumps({"ErrorCode": code, "ErrorMessage": message, "Code": code, "Message": message,
                           "RequestId": request_id})
        self._send(status, {"Content-Type": "application/json"}, body.encode("utf-8"), request_id)

    def log_message(self, fmt: str, *args) -> None:
        pass


class InvokeAPIServer(LoopbackServer):
    def __init__(self, host: str, port: int, runtime: Invoker, access_key: AccessKey | None = None):
        super().__init__((host, port), _Handler)
        self.runtime = runtime
        self.access_key = access_key or access_key_for(runtime)
        """The AccessKey (id, secret) requests must be signed with."""
        self.nonces = NonceCache()
        self._key_path: str | None = None

    def verify(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> str:
        return verify_request(method, target, headers, body, self.access_key, nonces=self.nonces)

    def start(self):
        runtime_dir = getattr(self.runtime, "runtime_dir", None)
        if runtime_dir and os.path.isdir(runtime_dir):
            self._key_path = os.path.join(runtime_dir, KEY_FILE)
            write_secret(self._key_path, {"endpoint": self.url, "access_key_id": self.access_key.id,
                                          "access_key_secret": self.access_key.secret})
        return super().start()

    def stop(self) -> None:
        super().stop()
        if self._key_path:
            try:
                with open(self._key_path, encoding="utf-8") as f:
                    ours = json.load(f).get("endpoint") == self.url
                if ours:  # not one another runtime on this directory wrote since
                    os.remove(self._key_path)
            except (OSError, ValueError, AttributeError):
                pass
            self._key_path = None
