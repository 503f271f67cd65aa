"""The Alibaba Cloud OSS backend, over an injected `oss2.Bucket`.

oss2 errors are translated into troupe's: 409 FileAlreadyExists -> ObjectExists, NoSuchKey ->
NoSuchKey, 5xx and network failures -> TransientStoreError (which the base retries), anything
else -> StoreError carrying the OSS status, code and request id.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
from typing import Iterator, Mapping

import oss2
import requests
from oss2 import exceptions as oss_errors

from shared.errors import NoSuchKey, ObjectExists, StoreError, TransientStoreError, UnsafeBucket
from shared.store.base import ListPage, ObjectInfo, ObjectStore

FORBID_OVERWRITE = "x-oss-forbid-overwrite"


def _etag(value: str | None) -> str:
    return (value or "").strip('"').upper()


@contextlib.contextmanager
def _translated(op: str, key: str = "") -> Iterator[None]:
    """Re-raise oss2 and network errors as troupe store errors."""
    try:
        yield
    except oss_errors.RequestError as e:
        raise TransientStoreError(f"OSS {op}: request failed: {e.exception!r}", key=key) from e
    except requests.RequestException as e:  # raised while streaming a body
        raise TransientStoreError(f"OSS {op}: connection failed: {e!r}", key=key) from e
    except oss_errors.ServerError as e:
        details = {"key": key, "status": e.status, "code": e.code, "request_id": e.request_id}
        if e.status >= 500 or e.status == 429:
            raise TransientStoreError(f"OSS {op}: {e.status} {e.code}", **details) from e
        raise StoreError(f"OSS {op} failed: {e.status} {e.code} {e.message}".rstrip(), **details) from e
    except oss_errors.OssError as e:
        raise StoreError(f"OSS {op} failed: {e}", key=key) from e


class OssStore(ObjectStore):
    """ObjectStore on OSS. The bucket must have versioning off (see `check_versioning_off`)."""

    def __init__(self, bucket: oss2.Bucket, **kw):
        super().__init__(**kw)
        self.bucket = bucket

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, credentials=None, **kw) -> "OssStore":
        """Build from TROUPE_OSS_BUCKET and TROUPE_OSS_ENDPOINT (https:// is assumed if no scheme).

        Credentials: FC's `context.credentials` (STS) if given, else the ALIBABA_CLOUD_ACCESS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET and optional ALIBABA_CLOUD_SECURITY_TOKEN variables.
        """
        name = env.get("TROUPE_OSS_BUCKET", "").strip()
        endpoint = env.get("TROUPE_OSS_ENDPOINT", "").strip()
        missing = [n for n, v in (("TROUPE_OSS_BUCKET", name), ("TROUPE_OSS_ENDPOINT", endpoint)) if not v]
        if missing:
            raise StoreError(f"OSS store not configured: set {' and '.join(missing)}")
        if "://" not in endpoint:
            endpoint = "https://" + endpoint
        if credentials is not None:
            auth = oss2.StsAuth(credentials.access_key_id, credentials.access_key_secret,
                                credentials.security_token)
        else:
            key_id = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "")
            secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "")
            token = env.get("ALIBABA_CLOUD_SECURITY_TOKEN", "")
            if not key_id or not secret:
                raise StoreError("OSS credentials missing: pass FC context.credentials or set "
                                 "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET")
            auth = oss2.StsAuth(key_id, secret, token) if token else oss2.Auth(key_id, secret)
        try:
            bucket = oss2.Bucket(auth, endpoint, name)
        except oss_errors.ClientError as e:
            raise StoreError(f"invalid TROUPE_OSS_BUCKET or TROUPE_OSS_ENDPOINT: {e}",
                             bucket=name, endpoint=endpoint) from None
        return cls(bucket, **kw)

    def check_versioning_off(self) -> None:
        """Raise UnsafeBucket unless versioning has never been enabled on the bucket."""

        def fetch() -> str | None:
            with _translated("GetBucketVersioning"):
                return self.bucket.get_bucket_versioning().status

        status = self._call("versioning", fetch)
        if status in ("Enabled", "Suspended"):
            raise UnsafeBucket(
                f"bucket {self.bucket.bucket_name!r} has versioning {status}: OSS ignores "
                "x-oss-forbid-overwrite on such buckets, so troupe's create-only writes would "
                "silently overwrite. Use a bucket on which versioning was never enabled.",
                bucket=self.bucket.bucket_name, versioning=status)

    # -- backend I/O -----------------------------------------------------------------------
    def _put(self, key: str, data: bytes, create_only: bool) -> ObjectInfo:
        headers = {FORBID_OVERWRITE: "true"} if create_only else None
        try:
            with _translated("PutObject", key):
                result = self.bucket.put_object(key, data, headers=headers)
        except StoreError as e:
            if e.details.get("status") == 409 and e.details.get("code") == "FileAlreadyExists":
                raise ObjectExists("object already exists", key=key) from e
            raise
        return ObjectInfo(key, len(data), _etag(result.etag), _server_time(result.headers))

    def _get(self, key: str) -> bytes:
        try:
            with _translated("GetObject", key):
                return self.bucket.get_object(key).read()
        except StoreError as e:
            if e.details.get("status") == 404 and e.details.get("code") == "NoSuchKey":
                raise NoSuchKey("no such object", key=key) from e
            raise

    def _head(self, key: str) -> ObjectInfo | None:
        try:
            with _translated("HeadObject", key):
                result = self.bucket.head_object(key)
        except StoreError as e:
            # HEAD answers carry no body; the code comes from x-oss-err when OSS sends it
            if e.details.get("status") == 404 and e.details.get("code") in ("", "NoSuchKey"):
                return None
            raise
        return ObjectInfo(key, int(result.content_length or 0), _etag(result.etag),
                          float(result.last_modified or 0))

    def _list(self, prefix: str, marker: str, max_keys: int) -> ListPage:
        with _translated("ListObjects", prefix):
            result = self.bucket.list_objects(prefix=prefix, marker=marker, max_keys=max_keys)
        objects = [ObjectInfo(o.key, int(o.size), _etag(o.etag), float(o.last_modified))
                   for o in result.object_list]
        truncated = bool(result.is_truncated)
        next_marker = ""
        if truncated:
            next_marker = result.next_marker or (objects[-1].key if objects else "")
            if not next_marker:
                raise StoreError("OSS returned a truncated listing without a next marker",
                                 prefix=prefix, marker=marker)
        return ListPage(objects, next_marker, truncated)

    def _delete(self, key: str) -> None:
        with _translated("DeleteObject", key):
            self.bucket.delete_object(key)


def _server_time(headers) -> float:
    """When OSS stored the object: its answer's Date (the object's Last-Modified, to the second)."""
    try:
        return email.utils.parsedate_to_datetime(headers["date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0
