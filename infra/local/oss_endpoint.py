"""A local OSS endpoint: enough of the OSS REST API, over an ObjectStore (a DiskStore), for oss2.

Path-style addressing only, as oss2 uses for an IP endpoint: `/<bucket>/<url-encoded key>`.
Served: PutObject (honouring `x-oss-forbid-overwrite`), GetObject, HeadObject, DeleteObject,
ListObjects and ListObjectsV2 (prefix, delimiter, paging), multipart upload (initiate, upload
part, complete, abort) and GetBucketVersioning (never enabled). Anything else is OSS's own
`NotImplemented` error. Errors are OSS XML error bodies. Optionally verifies V1 signatures, and
can answer the next requests with a 5xx fault. Writes and deletes go through the store, so with
an event-emitting DiskStore each is the same trigger event a function's write would be.

    server, thread = serve(DiskStore(root), "troupe-local")
    bucket = oss2.Bucket(oss2.Auth("id", "secret"), server.endpoint, "troupe-local")
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import logging
import threading
import time
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Mapping
from urllib.parse import parse_qs, quote, unquote_to_bytes, urlsplit
from xml.etree import ElementTree as ET

from infra.local.httpd import LoopbackServer
from shared.errors import InvalidKey, NoSuchKey, ObjectExists
from shared.store.base import MAX_LIST_KEYS, ObjectStore, validate_key

log = logging.getLogger(__name__)

OWNER_ID = "1234567890"
MAX_UPLOADS = 64
MAX_UPLOAD_BYTES = 512 * 1024 * 1024

#: query parameters that belong to the V1 canonical resource (a subset of OSS's list: those a
#: client may plausibly send here; any other parameter is left out of the signature)
SUBRESOURCES = frozenset({
    "acl", "append", "bucketInfo", "comp", "continuation-token", "cors", "delete", "encryption", "lifecycle", "live",
    "location", "logging", "objectMeta", "partNumber", "policy", "position", "referer",
    "replication", "restore", "security-token", "stat", "status", "symlink", "tagging",
    "uploadId", "uploads", "versionId", "versioning", "versions", "website", "x-oss-process",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires",
})


# -- helpers ---------------------------------------------------------------------------------

def _crc64_table() -> list[int]:
    poly = 0xC96C5795D7870F42  # ECMA-182, reflected
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc64_table()
_MASK64 = 0xFFFFFFFFFFFFFFFF


def crc64(data: bytes) -> int:
    """CRC-64/XZ, the value OSS returns in `x-oss-hash-crc64ecma`."""
    crc, table = _MASK64, _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK64


def canonical_resource(bucket: str, key: str, query: Mapping[str, str]) -> str:
    sub = sorted((k, v) for k, v in query.items() if k in SUBRESOURCES)
    resource = f"/{bucket}/{key}" if bucket else "/"
    if sub:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
    return resource


def string_to_sign(method: str, headers: Mapping[str, str], resource: str) -> str:
    """The V1 string to sign; `headers` must have lower-case names."""
    oss_headers = sorted((k, v) for k, v in headers.items() if k.startswith("x-oss-"))
    canonical = "".join(f"{k}:{v}\n" for k, v in oss_headers)
    date = headers.get("x-oss-date") or headers.get("date", "")
    return "\n".join([method, headers.get("content-md5", ""), headers.get("content-type", ""),
                      date, canonical + resource])


def sign_v1(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _iso8601(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def _xml(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _element(parent: ET.Element | None, tag: str, text: object = None) -> ET.Element:
    node = ET.Element(tag) if parent is None else ET.SubElement(parent, tag)
    if text is not None:
        node.text = str(text)
    return node


class OssError(Exception):
    """An error answered as an OSS XML error body."""

    def __init__(self, status: int, code: str, message: str, **extra: str):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _last(objects: list, prefixes: list) -> str:
    """Where a truncated listing goes on: after its greatest key or common prefix."""
    return max([o.key for o in objects] + prefixes)


def _not_implemented(what: str) -> OssError:
    return OssError(501, "NotImplemented", f"{what} is not supported by the local OSS endpoint")


_FAULT_CODES = {500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable",
                504: "GatewayTimeout"}


# -- server ----------------------------------------------------------------------------------

class OssEndpoint(LoopbackServer):
    """The HTTP server. `requests` counts requests by operation name (faulted ones included)."""

    def __init__(self, address: tuple[str, int], store: ObjectStore, bucket_name: str, *,
                 access_key_id: str | None = None, access_key_secret: str | None = None):
        if (access_key_id is None) != (access_key_secret is None):
            raise ValueError("give both access_key_id and access_key_secret, or neither")
        self.store = store
        self.bucket_name = bucket_name
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.requests: collections.Counter = collections.Counter()
        self.uploads: dict[str, dict] = {}
        """Multipart uploads in progress: upload id -> {key, parts: {number: bytes}, bytes}."""
        self._faults: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def endpoint(self) -> str:
        return self.url

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """Answer the next `n` requests with `status` (5xx) and an OSS error body."""
        if not 500 <= status <= 599:
            raise ValueError("fault status must be 5xx")
        with self._lock:
            self._faults.extend([status] * n)

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def _count(self, op: str) -> int | None:
        """Count a request; return the fault status to answer with, if one is pending."""
        with self._lock:
            self.requests[op] += 1
            return self._faults.popleft() if self._faults else None


def serve(store: ObjectStore, bucket_name: str, host: str = "127.0.0.1", port: int = 0, *,
          access_key_id: str | None = None,
          access_key_secret: str | None = None) -> tuple[OssEndpoint, threading.Thread]:
    """Start an endpoint in a daemon thread. With keys given, requests must carry V1 signatures."""
    server = OssEndpoint((host, port), store, bucket_name, access_key_id=access_key_id,
                         access_key_secret=access_key_secret)
    return server, server.start()


# -- request handling ------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "troupe-oss-local"
    timeout = 60  # idle keep-alive connections are closed after this
    server: OssEndpoint

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_POST(self):
        self._handle("POST")

    def log_message(self, format, *args):  # noqa: A002 (signature fixed by the base class)
        log.debug("%s %s", self.address_string(), format % args)

    # -- dispatch --------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        self.method = method
        self.request_id = uuid.uuid4().hex[:24].upper()
        try:
            body = self._read_body()
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            bucket, key = self._bucket_and_key(split.path)
            op = self._operation(method, bucket, key, query)
            fault = self.server._count(op)
            if fault is not None:
                raise OssError(fault, _FAULT_CODES.get(fault, "InternalError"),
                               "injected fault (local OSS endpoint)")
            self._authenticate(method, bucket, key, query)
            if op == "Unsupported":
                raise _not_implemented(f"{method} {split.path}?{split.query}".rstrip("?"))
            if bucket != self.server.bucket_name:
                raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.",
                               BucketName=bucket)
            getattr(self, "_op_" + op)(key, body, query)
        except OssError as e:
            self._send_error(e)
        except Exception:  # a bug or a disk failure: answer like OSS would, keep serving
            log.exception("local OSS endpoint failed on %s %s", method, self.path)
            self.close_connection = True  # the request may not have been read in full
            self._send_error(OssError(500, "InternalError", "internal error in the local endpoint"))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise OssError(400, "InvalidArgument", "bad Content-Length")
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _bucket_and_key(path: str) -> tuple[str, str]:
        bucket_raw, _, key_raw = path[1:].partition("/")
        try:
            bucket = unquote_to_bytes(bucket_raw).decode("utf-8")
            key = unquote_to_bytes(key_raw).decode("utf-8")
        except UnicodeDecodeError:
            raise OssError(400, "InvalidObjectName", "object name is not valid UTF-8") from None
        return bucket, key

    @staticmethod
    def _operation(method: str, bucket: str, key: str, query: Mapping[str, str]) -> str:
        sub = {k for k in query if k in SUBRESOURCES} - {"security-token"}
        if not bucket:
            return "Unsupported"
        if not key:
            sub -= {"continuation-token"}  # a listing's page, not a sub-resource of its own
            if method == "GET" and sub == {"versioning"}:
                return "GetBucketVersioning"
            if method == "GET" and not sub:
                return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
            return "Unsupported"
        multipart = {("POST", frozenset({"uploads"})): "InitiateMultipartUpload",
                     ("PUT", frozenset({"partNumber", "uploadId"})): "UploadPart",
                     ("POST", frozenset({"uploadId"})): "CompleteMultipartUpload",
                     ("DELETE", frozenset({"uploadId"})): "AbortMultipartUpload",
                     ("GET", frozenset({"uploadId"})): "ListParts",
                     ("HEAD", frozenset({"objectMeta"})): "HeadObject"}  # GetObjectMeta: the same headers
        if sub:
            return multipart.get((method, frozenset(sub)), "Unsupported")
        return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject",
                "DELETE": "DeleteObject"}.get(method, "Unsupported")

    def _authenticate(self, method: str, bucket: str, key: str, query: Mapping[str, str]) -> None:
        if self.server.access_key_id is None:
            return
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("OSS "):
            raise OssError(403, "AccessDenied", "a V1 signature (Authorization: OSS id:sig) is required")
        key_id, _, signature = auth[4:].partition(":")
        if key_id != self.server.access_key_id:
            raise OssError(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist.",
                           OSSAccessKeyId=key_id)
        headers = {k.lower(): v for k, v in self.headers.items()}
        text = string_to_sign(method, headers, canonical_resource(bucket, key, query))
        expected = sign_v1(self.server.access_key_secret or "", text)
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            raise OssError(403, "SignatureDoesNotMatch",
                           "The request signature we calculated does not match the signature you provided.",
                           StringToSign=text)

    # -- operations ------------------------------------------------------------------------
    def _op_PutObject(self, key: str, body: bytes, query) -> None:
        if self.headers.get("x-oss-copy-source"):
            raise _not_implemented("CopyObject")
        md5 = self.headers.get("Content-MD5")
        if md5 and md5.strip() != base64.b64encode(hashlib.md5(body).digest()).decode():
            raise OssError(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
        forbid = self.headers.get("x-oss-forbid-overwrite", "").strip().lower() == "true"
        try:
            info = self.server.store.put(key, body, create_only=forbid)
        except ObjectExists:
            raise OssError(409, "FileAlreadyExists", "The object you specified already exists and "
                           "can not be overwritten.", Key=key) from None
        except InvalidKey as e:
            raise OssError(400, "InvalidObjectName", e.message, Key=key) from None
        self._send(200, headers={"ETag": f'"{info.etag}"', "x-oss-hash-crc64ecma": str(crc64(body))})

    def _op_GetObject(self, key: str, body: bytes, query) -> None:
        try:
            data = self.server.store.get(key)
            info = self.server.store.head(key)
        except NoSuchKey:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.", Key=key) from None
        except InvalidKey as e:
            raise OssError(400, "InvalidObjectName", e.message, Key=key) from None
        mtime = info.last_modified if info else time.time()
        self._send(200, data, content_type="application/octet-stream", headers={
            "ETag": f'"{hashlib.md5(data).hexdigest().upper()}"',
            "Last-Modified": formatdate(mtime, usegmt=True),
            "x-oss-hash-crc64ecma": str(crc64(data)),
            "x-oss-object-type": "Normal",
        })

    def _op_HeadObject(self, key: str, body: bytes, query) -> None:
        try:
            info = self.server.store.head(key)
        except InvalidKey as e:
            raise OssError(400, "InvalidObjectName", e.message, Key=key) from None
        if info is None:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        self._send(200, content_type="application/octet-stream", headers={
            "Content-Length": str(info.size),
            "ETag": f'"{info.etag}"',
            "Last-Modified": formatdate(info.last_modified, usegmt=True),
            "x-oss-object-type": "Normal",
        })

    def _op_DeleteObject(self, key: str, body: bytes, query) -> None:
        try:
            self.server.store.delete(key)
        except InvalidKey as e:
            raise OssError(400, "InvalidObjectName", e.message, Key=key) from None
        self._send(204)

    def _op_GetBucketVersioning(self, key: str, body: bytes, query) -> None:
        self._send(200, _xml(_element(None, "VersioningConfiguration")), content_type="application/xml")

    def _listing(self, query: Mapping[str, str], marker: str):
        """(objects, common prefixes, next marker or "", max-keys), OSS's rules: a key holding the
        delimiter after the prefix is rolled into its common prefix, and each counts once toward
        max-keys."""
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        if len(delimiter) > 1:
            raise OssError(400, "InvalidArgument", "delimiter must be one character")
        try:
            max_keys = int(query.get("max-keys") or 100)
        except ValueError:
            max_keys = -1
        if not 1 <= max_keys <= MAX_LIST_KEYS:
            raise OssError(400, "InvalidArgument", f"max-keys must be between 1 and {MAX_LIST_KEYS}")
        objects, prefixes = [], []
        try:
            for obj in self.server.store.iter(prefix, marker=marker):
                rest = obj.key[len(prefix):]
                if delimiter and delimiter in rest:
                    common = prefix + rest[:rest.index(delimiter) + 1]
                    if (prefixes and prefixes[-1] == common) or (marker.startswith(common) and marker != prefix):
                        continue  # already listed, on this page or an earlier one
                    if len(objects) + len(prefixes) == max_keys:
                        return objects, prefixes, _last(objects, prefixes), max_keys
                    prefixes.append(common)
                    continue
                if len(objects) + len(prefixes) == max_keys:
                    return objects, prefixes, _last(objects, prefixes), max_keys
                objects.append(obj)
        except InvalidKey as e:
            raise OssError(400, "InvalidArgument", e.message) from None
        return objects, prefixes, "", max_keys

    def _op_ListObjects(self, key: str, body: bytes, query: Mapping[str, str]) -> None:
        self._list_result(query, version=1)

    def _op_ListObjectsV2(self, key: str, body: bytes, query: Mapping[str, str]) -> None:
        self._list_result(query, version=2)

    def _list_result(self, query: Mapping[str, str], version: int) -> None:
        encoding = query.get("encoding-type", "")
        if encoding not in ("", "url"):
            raise OssError(400, "InvalidArgument", "encoding-type must be 'url'")
        if version == 1:
            marker = query.get("marker", "")
        else:
            token = query.get("continuation-token", "")
            try:
                marker = base64.urlsafe_b64decode(token.encode()).decode("utf-8") if token else query.get("start-after", "")
            except (ValueError, UnicodeDecodeError):
                raise OssError(400, "InvalidArgument", "continuation-token is not one this endpoint gave") from None
        objects, prefixes, next_marker, max_keys = self._listing(query, marker)

        def enc(s: str) -> str:
            return quote(s, safe="/") if encoding else s

        prefix = query.get("prefix", "")
        root = _element(None, "ListBucketResult")
        _element(root, "Name", self.server.bucket_name)
        _element(root, "Prefix", enc(prefix))
        if version == 1:
            _element(root, "Marker", enc(marker))
        else:
            if query.get("continuation-token"):
                _element(root, "ContinuationToken", query["continuation-token"])
            if query.get("start-after"):
                _element(root, "StartAfter", enc(query["start-after"]))
        _element(root, "MaxKeys", max_keys)
        _element(root, "Delimiter", enc(query.get("delimiter", "")))
        if encoding:
            _element(root, "EncodingType", encoding)
        _element(root, "IsTruncated", "true" if next_marker else "false")
        if next_marker and version == 1:
            _element(root, "NextMarker", enc(next_marker))
        if next_marker and version == 2:
            _element(root, "NextContinuationToken", base64.urlsafe_b64encode(next_marker.encode()).decode())
        if version == 2:
            _element(root, "KeyCount", len(objects) + len(prefixes))
        for obj in objects:
            node = _element(root, "Contents")
            _element(node, "Key", enc(obj.key))
            _element(node, "LastModified", _iso8601(obj.last_modified))
            _element(node, "ETag", f'"{obj.etag}"')
            _element(node, "Type", "Normal")
            _element(node, "Size", obj.size)
            _element(node, "StorageClass", "Standard")
            if version == 1 or query.get("fetch-owner") == "true":
                owner = _element(node, "Owner")
                _element(owner, "ID", OWNER_ID)
                _element(owner, "DisplayName", OWNER_ID)
        for common in prefixes:
            _element(_element(root, "CommonPrefixes"), "Prefix", enc(common))
        self._send(200, _xml(root), content_type="application/xml")

    # -- multipart upload --------------------------------------------------------------------
    def _upload(self, key: str, query: Mapping[str, str]) -> dict:
        upload = self.server.uploads.get(query.get("uploadId", ""))
        if upload is None or upload["key"] != key:
            raise OssError(404, "NoSuchUpload", "The specified upload does not exist.", UploadId=query.get("uploadId", ""))
        return upload

    def _op_InitiateMultipartUpload(self, key: str, body: bytes, query) -> None:
        try:
            validate_key(key)
        except InvalidKey as e:
            raise OssError(400, "InvalidObjectName", e.message, Key=key) from None
        upload_id = uuid.uuid4().hex.upper()
        forbid = self.headers.get("x-oss-forbid-overwrite", "").strip().lower() == "true"
        with self.server._lock:
            if len(self.server.uploads) >= MAX_UPLOADS:
                raise OssError(503, "ServiceUnavailable", "too many multipart uploads in progress here")
            self.server.uploads[upload_id] = {"key": key, "parts": {}, "bytes": 0, "forbid": forbid}
        root = _element(None, "InitiateMultipartUploadResult")
        _element(root, "Bucket", self.server.bucket_name)
        _element(root, "Key", key)
        _element(root, "UploadId", upload_id)
        self._send(200, _xml(root), content_type="application/xml")

    def _op_UploadPart(self, key: str, body: bytes, query) -> None:
        upload = self._upload(key, query)
        try:
            number = int(query.get("partNumber", ""))
        except ValueError:
            number = 0
        if not 1 <= number <= 10000:
            raise OssError(400, "InvalidArgument", "partNumber must be between 1 and 10000")
        with self.server._lock:
            old = upload["parts"].get(number, b"")
            if upload["bytes"] - len(old) + len(body) > MAX_UPLOAD_BYTES:
                raise OssError(400, "EntityTooLarge", f"the local endpoint holds at most {MAX_UPLOAD_BYTES} bytes "
                               "an upload")
            upload["parts"][number] = body
            upload["bytes"] += len(body) - len(old)
        self._send(200, headers={"ETag": f'"{hashlib.md5(body).hexdigest().upper()}"',
                                 "x-oss-hash-crc64ecma": str(crc64(body))})

    def _op_CompleteMultipartUpload(self, key: str, body: bytes, query) -> None:
        upload = self._upload(key, query)
        try:
            listed = [(int(p.findtext("PartNumber")), (p.findtext("ETag") or "").strip('"').upper())
                      for p in ET.fromstring(body).iter("Part")]
        except (ET.ParseError, TypeError, ValueError):
            raise OssError(400, "MalformedXML", "The XML you provided was not well-formed.") from None
        if not listed or [n for n, _ in listed] != sorted({n for n, _ in listed}):
            raise OssError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        for number, etag in listed:
            data = upload["parts"].get(number)
            if data is None or hashlib.md5(data).hexdigest().upper() != etag:
                raise OssError(400, "InvalidPart", "One or more of the specified parts could not be found.",
                               PartNumber=str(number))
        whole = b"".join(upload["parts"][n] for n, _ in listed)
        forbid = upload["forbid"] or self.headers.get("x-oss-forbid-overwrite", "").strip().lower() == "true"
        try:
            self.server.store.put(key, whole, create_only=forbid)
        except ObjectExists:
            raise OssError(409, "FileAlreadyExists", "The object you specified already exists and "
                           "can not be overwritten.", Key=key) from None
        with self.server._lock:
            self.server.uploads.pop(query["uploadId"], None)
        root = _element(None, "CompleteMultipartUploadResult")
        _element(root, "Bucket", self.server.bucket_name)
        _element(root, "Key", key)
        _element(root, "ETag", f'"{hashlib.md5(whole).hexdigest().upper()}-{len(listed)}"')
        self._send(200, _xml(root), content_type="application/xml",
                   headers={"x-oss-hash-crc64ecma": str(crc64(whole))})

    def _op_ListParts(self, key: str, body: bytes, query) -> None:
        upload = self._upload(key, query)
        try:
            after = int(query.get("part-number-marker") or 0)
            max_parts = int(query.get("max-parts") or 1000)
        except ValueError:
            raise OssError(400, "InvalidArgument", "part-number-marker and max-parts are numbers") from None
        numbers = sorted(n for n in upload["parts"] if n > after)
        page = numbers[:max(1, min(max_parts, 1000))]
        root = _element(None, "ListPartsResult")
        for tag, value in (("Bucket", self.server.bucket_name), ("Key", key), ("UploadId", query["uploadId"]),
                           ("PartNumberMarker", after), ("NextPartNumberMarker", page[-1] if page else after),
                           ("MaxParts", max_parts), ("IsTruncated", "true" if len(numbers) > len(page) else "false")):
            _element(root, tag, value)
        for n in page:
            part = _element(root, "Part")
            _element(part, "PartNumber", n)
            _element(part, "LastModified", _iso8601(time.time()))
            _element(part, "ETag", f'"{hashlib.md5(upload["parts"][n]).hexdigest().upper()}"')
            _element(part, "Size", len(upload["parts"][n]))
        self._send(200, _xml(root), content_type="application/xml")

    def _op_AbortMultipartUpload(self, key: str, body: bytes, query) -> None:
        self._upload(key, query)
        with self.server._lock:
            self.server.uploads.pop(query["uploadId"], None)
        self._send(204)

    # -- responses -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", *, content_type: str | None = None,
              headers: Mapping[str, str] | None = None) -> None:
        headers = dict(headers or {})
        self.send_response(status)
        self.send_header("x-oss-request-id", self.request_id)
        if content_type:
            self.send_header("Content-Type", content_type)
        if status != 204 and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.method != "HEAD":
            self.wfile.write(body)

    def _send_error(self, e: OssError) -> None:
        root = _element(None, "Error")
        _element(root, "Code", e.code)
        _element(root, "Message", e.message)
        _element(root, "RequestId", self.request_id)
        _element(root, "HostId", self.headers.get("Host", "127.0.0.1"))
        for name, value in e.extra.items():
            _element(root, name, value)
        body = _xml(root)
        if self.method == "HEAD":  # no body; OSS puts the error in a header instead
            self._send(e.status, headers={"Content-Length": "0",
                                          "x-oss-err": base64.b64encode(body).decode()})
        else:
            self._send(e.status, body, content_type="application/xml")
