"""A directory on disk with OSS semantics: the embedded default object store.

Layout under `root`:
  objects/<key>        the objects
  tmp/                 partial writes (renamed or linked into place atomically)

`bucket` and `region` name the bucket this directory stands for. The store sends no events: on
the local runtime, infra/local/spool.py wraps it to announce writes, as OSS does to triggers.

Create-only puts use link(2), which fails if the name exists: atomic across processes, as
OSS's `x-oss-forbid-overwrite` is across clients.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import time

from shared.errors import NoSuchKey, ObjectExists
from shared.store.base import ListPage, ObjectInfo, ObjectStore

_counter = itertools.count()


class DiskStore(ObjectStore):
    def __init__(self, root: str, *, bucket: str = "troupe-local", region: str = "cn-hangzhou", **kw):
        super().__init__(**kw)
        self.root = os.path.abspath(root)
        self.objects = os.path.join(self.root, "objects")
        self.tmp = os.path.join(self.root, "tmp")
        self.bucket = bucket
        self.region = region
        for d in (self.objects, self.tmp):
            os.makedirs(d, exist_ok=True)

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
        return ObjectInfo(key, len(data), hashlib.md5(data).hexdigest().upper(), os.stat(path).st_mtime)

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
            os.unlink(self._path(key))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
