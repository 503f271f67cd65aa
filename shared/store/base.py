"""The object store troupe relies on: the subset of OSS semantics the design needs.

The base owns validation, request counting and retries of transient errors; a backend
implements only the five small I/O methods (`_put`, `_get`, `_head`, `_list`, `_delete`).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections import Counter
from typing import Callable, Iterator

from shared.errors import InvalidKey, TransientStoreError

MAX_KEY_BYTES = 1023
MAX_LIST_KEYS = 1000
_BAD_KEY = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_key(key: str) -> str:
    """Refuse keys that could escape a prefix or a directory. Returns the key."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key must be a non-empty string", key=repr(key))
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKey(f"object key longer than {MAX_KEY_BYTES} bytes", key=key[:80])
    if _BAD_KEY.search(key):
        raise InvalidKey("object key contains a control character or backslash", key=key[:80])
    if key.startswith("/"):
        raise InvalidKey("object key must not start with '/'", key=key[:80])
    parts = key.split("/")
    # a trailing "/" is allowed only on the last part (a "directory" placeholder is refused)
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidKey("object key has an empty, '.' or '..' path segment", key=key[:80])
    return key


def validate_prefix(prefix: str) -> str:
    if prefix == "":
        return prefix
    if _BAD_KEY.search(prefix) or prefix.startswith("/") or len(prefix.encode()) > MAX_KEY_BYTES:
        raise InvalidKey("invalid list prefix", prefix=prefix[:80])
    for part in prefix.split("/")[:-1]:
        if part in ("", ".", ".."):
            raise InvalidKey("list prefix has an empty, '.' or '..' path segment", prefix=prefix[:80])
    if prefix.split("/")[-1] in (".", ".."):
        raise InvalidKey("list prefix ends in '.' or '..'", prefix=prefix[:80])
    return prefix


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: float
    """Seconds since the epoch."""


@dataclasses.dataclass(frozen=True)
class ListPage:
    objects: list[ObjectInfo]
    next_marker: str
    """Pass as `marker` to get the next page; empty when `truncated` is false."""
    truncated: bool


class ObjectStore:
    """Base of every backend. Public methods validate, count and retry; backends do I/O."""

    #: retries of a transient error, with exponential backoff starting at `retry_base` seconds
    retries = 4
    retry_base = 0.05

    def __init__(self, sleep: Callable[[float], None] = time.sleep):
        self._sleep = sleep
        self._lock = threading.Lock()
        self.requests: Counter = Counter()

    # -- public API ------------------------------------------------------------------------
    def put(self, key: str, data: bytes, *, create_only: bool = False) -> ObjectInfo:
        """Store `data` at `key`. With create_only, raise ObjectExists if the key is taken."""
        validate_key(key)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("data must be bytes")
        return self._call("put", self._put, key, bytes(data), create_only)

    def get(self, key: str) -> bytes:
        """Return the object's bytes; raise NoSuchKey if absent."""
        validate_key(key)
        return self._call("get", self._get, key)

    def head(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or None if absent."""
        validate_key(key)
        return self._call("head", self._head, key)

    def list(self, prefix: str = "", *, marker: str = "", max_keys: int = 100) -> ListPage:
        """One page of keys under `prefix`, in ascending byte order, strictly after `marker`."""
        validate_prefix(prefix)
        if marker:
            validate_prefix(marker)
        if not 1 <= int(max_keys) <= MAX_LIST_KEYS:
            raise ValueError(f"max_keys must be between 1 and {MAX_LIST_KEYS}")
        return self._call("list", self._list, prefix, marker, int(max_keys))

    def delete(self, key: str) -> None:
        """Delete the object; deleting an absent key is not an error (as in OSS)."""
        validate_key(key)
        self._call("delete", self._delete, key)

    def iter(self, prefix: str = "", *, marker: str = "", page: int = 1000) -> Iterator[ObjectInfo]:
        """Every object under `prefix` after `marker`, fetching pages as needed."""
        while True:
            result = self.list(prefix, marker=marker, max_keys=page)
            yield from result.objects
            if not result.truncated:
                return
            marker = result.next_marker

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    # -- retry and counting ----------------------------------------------------------------
    def _call(self, op: str, fn, *args):
        attempt = 0
        while True:
            with self._lock:
                self.requests[op] += 1
            try:
                return fn(*args)
            except TransientStoreError:
                attempt += 1
                if attempt > self.retries:
                    raise
                self._sleep(self.retry_base * (2 ** (attempt - 1)))

    # -- backend I/O -----------------------------------------------------------------------
    def _put(self, key: str, data: bytes, create_only: bool) -> ObjectInfo:
        raise NotImplementedError

    def _get(self, key: str) -> bytes:
        raise NotImplementedError

    def _head(self, key: str) -> ObjectInfo | None:
        raise NotImplementedError

    def _list(self, prefix: str, marker: str, max_keys: int) -> ListPage:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError
