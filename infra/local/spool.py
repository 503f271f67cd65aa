"""OSS notifications on the local runtime: a wrapper around the store that, as a bucket with
triggers does, announces every object written or removed.

Each event, in OSS trigger JSON, becomes one file in <data>/events/ (named by time_ns, so the
spool sorts in order), and a datagram to <data>/events.sock wakes the runtime's dispatcher
(infra/local/dispatcher.py), which also polls the folder. The store underneath knows nothing
of it: on FC, OSS itself sends the events.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time

from infra.local.events import make_oss_event
from shared.store.base import ListPage, ObjectInfo, ObjectStore

_counter = itertools.count()
CREATED = "ObjectCreated:PutObject"
REMOVED = "ObjectRemoved:DeleteObject"


class EventSpool:
    """The folder of pending events and the socket that says one arrived."""

    def __init__(self, data_dir: str, bucket: str = "troupe-local", region: str = "cn-hangzhou"):
        self.root = os.path.abspath(data_dir)
        self.events_dir = os.path.join(self.root, "events")
        self.sock_path = os.path.join(self.root, "events.sock")
        self.bucket, self.region = bucket, region
        self._tmp = os.path.join(self.root, "tmp")
        os.makedirs(self.events_dir, exist_ok=True)
        os.makedirs(self._tmp, exist_ok=True)
        self._sock: socket.socket | None = None

    def emit(self, info: ObjectInfo, event_name: str = CREATED) -> None:
        event = make_oss_event(self.bucket, self.region, info.key, info.size, info.etag, event_name=event_name)
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter)}.json"
        tmp = os.path.join(self._tmp, f"event-{name}")
        with open(tmp, "w") as f:
            json.dump(event, f)
        os.replace(tmp, os.path.join(self.events_dir, name))
        if os.path.exists(self.sock_path):
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                self._sock.sendto(b"1", self.sock_path)
            except OSError:
                pass  # the dispatcher also polls the spool


class EmittingStore(ObjectStore):
    """`inner`, announcing each put and each removal of an object that was there to `spool`.
    The inner store validates, counts and retries; this one only adds the events."""

    retries = 0  # the inner store retries its own transient errors

    def __init__(self, inner: ObjectStore, spool: EventSpool):
        super().__init__()
        self.inner, self.spool = inner, spool

    def _put(self, key: str, data: bytes, create_only: bool) -> ObjectInfo:
        info = self.inner.put(key, data, create_only=create_only)
        self.spool.emit(info)
        return info

    def _get(self, key: str) -> bytes:
        return self.inner.get(key)

    def _head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def _list(self, prefix: str, marker: str, max_keys: int) -> ListPage:
        return self.inner.list(prefix, marker=marker, max_keys=max_keys)

    def _delete(self, key: str) -> None:
        info = self.inner.head(key)
        self.inner.delete(key)
        if info is not None:  # as OSS notifies a removal, to triggers that ask for ObjectRemoved
            self.spool.emit(ObjectInfo(key, info.size, "", time.time()), REMOVED)


def emitting(store: ObjectStore) -> ObjectStore:
    """A disk store with its events on (the store-wrapper the local runtime's workers register in
    shared.env); any other store as it is."""
    from shared.store.disk import DiskStore

    if isinstance(store, DiskStore):
        return EmittingStore(store, EventSpool(store.root, store.bucket, store.region))
    return store


def local_store(data_dir: str) -> ObjectStore:
    """The local runtime's data directory as a store whose writes fire triggers."""
    from shared.store.disk import DiskStore

    return emitting(DiskStore(data_dir))
