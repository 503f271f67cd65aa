"""A directory on disk with OSS semantics: the embedded default object store.

Layout under `root`:
  objects/<key>        the objects
  tmp/                 partial writes (renamed or linked into place atomically)
  events/              ObjectCreated and ObjectRemoved events in OSS trigger JSON, one file each, for the
                       local runtime to dispatch (only when `emit_events` is on)
  events.sock          the runtime's wake-up socket (a datagram is sent after each event)

Create-only puts use link(2), which fails if the name exists: atomic across processes, as
OSS's `x-oss-forbid-overwrite` is across clients.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import socket
import time

from shared.errors import NoSuchKey, ObjectExists
from shared.events import make_oss_event
from shared.store.base import ListPage, ObjectInfo, ObjectStore

_counter = itertools.count()


class DiskStore(ObjectStore):
    def __init__(self, root: str, *, emit_events: bool = False, bucket: str = "troupe-local",
                 region: str = "cn-hangzhou", **kw):
        super().__init__(**kw)
        self.root = os.path.abspath(root)
        self.objects = os.path.join(self.root, "objects")
        self.tmp = os.path.join(self.root, "tmp")
        self.events_dir = os.path.join(self.root, "events")
        self.emit_events = emit_events
        self.bucket = bucket
        self.region = region
        for d in (self.objects, self.tmp, self.events_dir):
            os.makedirs(d, exist_ok=True)
        self._sock = None

    # -- helpers ---------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return os.path.join(self.objects, *key.split("/"))

    def _tmpname(self) -> str:
        return os.path.join(self.tmp, f"{os.getpid()}-{time.time_ns()}-{next(_counter)}")

    @staticmethod
    def _info(key: str, path: str, data: bytes | None = None) -> ObjectInfo:
        st = os.stat(path)
        if data is None:
            with open(path, "rb") as f:
                data = f.read()
        return ObjectInfo(key, st.st_size, hashlib.md5(data).hexdigest().upper(), st.st_mtime)

    # -- I/O -------------------------------------------------------------------------------
    def _put(self, key: str, data: bytes, create_only: bool) -> ObjectInfo:
        path = self._path(key)
        if os.path.isdir(path):
            raise ObjectExists("a directory-like prefix already uses this key", key=key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ObjectExists("an object already uses a prefix of this key", key=key) from None
        tmp = self._tmpname()
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            if create_only:
                try:
                    os.link(tmp, path)
                except OSError as e:
                    if e.errno == errno.EEXIST:
                        raise ObjectExists("object already exists", key=key) from None
                    raise
                os.unlink(tmp)
            else:
                os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        info = ObjectInfo(key, len(data), hashlib.md5(data).hexdigest().upper(), time.time())
        if self.emit_events:
            self._emit(info)
        return info

    def _get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NoSuchKey("no such object", key=key) from None

    def _head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not os.path.isfile(path):
            return None
        try:
            return self._info(key, path)
        except FileNotFoundError:
            return None

    def _list(self, prefix: str, marker: str, max_keys: int) -> ListPage:
        # walk only the deepest directory that the prefix names
        base_parts = prefix.split("/")[:-1]
        base = os.path.join(self.objects, *base_parts) if base_parts else self.objects
        keys: list[str] = []
        if os.path.isdir(base):
            for dirpath, _dirs, files in os.walk(base):
                rel = os.path.relpath(dirpath, self.objects)
                rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                for name in files:
                    k = rel + name
                    if k.startswith(prefix) and k > marker:
                        keys.append(k)
        keys.sort(key=lambda k: k.encode("utf-8"))
        page = keys[:max_keys]
        truncated = len(keys) > max_keys
        objects = []
        for k in page:
            try:
                objects.append(self._info(k, self._path(k)))
            except FileNotFoundError:
                continue
        return ListPage(objects, page[-1] if truncated else "", truncated)

    def _delete(self, key: str) -> None:
        try:
            size = os.path.getsize(self._path(key))
            os.unlink(self._path(key))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        if self.emit_events:  # as OSS notifies a removal, to triggers that ask for ObjectRemoved
            self._emit(ObjectInfo(key, size, "", time.time()), "ObjectRemoved:DeleteObject")

    # -- events ----------------------------------------------------------------------------
    def _emit(self, info: ObjectInfo, event_name: str = "ObjectCreated:PutObject") -> None:
        event = make_oss_event(self.bucket, self.region, info.key, info.size, info.etag, event_name=event_name)
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter)}.json"
        tmp = self._tmpname()
        with open(tmp, "w") as f:
            json.dump(event, f)
        os.replace(tmp, os.path.join(self.events_dir, name))
        sock_path = os.path.join(self.root, "events.sock")
        if os.path.exists(sock_path):
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                self._sock.sendto(b"1", sock_path)
            except OSError:
                pass  # the runtime also polls the spool
