"""The OSS-trigger side of the local runtime: consume the store's event spool in order.

The store's spool (infra/local/spool.py) writes each OSS event as <data>/events/<time_ns>-....json
and sends a datagram to <data>/events.sock. This thread binds that socket to wake at once,
polls the directory as a fallback, hands each event to `handle` and then deletes the file,
so an event is delivered at least once even if the runtime stops half-way.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from typing import Callable

log = logging.getLogger(__name__)

#: handle(file name, event bytes, time the event was written in epoch seconds)
Handle = Callable[[str, bytes, float], None]


def written_at(name: str, path: str) -> float:
    """When the event file was written: its sortable time_ns prefix, else its mtime."""
    head = name.split("-", 1)[0]
    if head.isdigit() and len(head) >= 19:
        return int(head) / 1e9
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


class EventDispatcher:
    def __init__(self, events_dir: str, sock_path: str, handle: Handle, *, poll_interval: float = 0.05):
        self.events_dir = events_dir
        self.sock_path = sock_path
        self.handle = handle
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="troupe-events", daemon=True)
        self.dispatched = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        os.makedirs(self.events_dir, exist_ok=True)
        self._sock = self._bind()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                    s.sendto(b"0", self.sock_path)
            except OSError:
                pass
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                os.unlink(self.sock_path)
            except FileNotFoundError:
                pass

    def pending(self) -> int:
        """Events written and not yet handed over."""
        try:
            return sum(1 for n in os.listdir(self.events_dir) if n.endswith(".json"))
        except FileNotFoundError:
            return 0

    # -- the loop --------------------------------------------------------------------------
    def _bind(self) -> socket.socket | None:
        try:
            os.unlink(self.sock_path)  # left over by a runtime that died
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self.sock_path)
        except OSError as e:  # e.g. a path longer than sun_path allows
            log.info("cannot bind %s (%s): polling the event spool only", self.sock_path, e)
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.drain()
            except Exception:  # noqa: BLE001 - keep dispatching whatever one event did
                log.exception("event dispatch failed")
            self._wait()

    def _wait(self) -> None:
        if self._sock is None:
            self._stop.wait(self.poll_interval)
            return
        ready, _, _ = select.select([self._sock], [], [], self.poll_interval)
        if ready:
            while True:  # one wake-up covers every datagram queued so far
                try:
                    self._sock.recv(64)
                except (BlockingIOError, OSError):
                    break

    def drain(self) -> int:
        """Hand over every spooled event, oldest first. Returns how many."""
        names = sorted(n for n in os.listdir(self.events_dir) if n.endswith(".json"))
        done = 0
        for name in names:
            if self._stop.is_set():
                break
            path = os.path.join(self.events_dir, name)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            self.handle(name, data, written_at(name, path))
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            done += 1
        self.dispatched += done
        return done
