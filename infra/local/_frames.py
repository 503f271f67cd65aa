"""Length-prefixed JSON frames between the runtime and a worker: 4-byte big-endian size + JSON."""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import BinaryIO

_HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024


class FrameTimeout(Exception):
    """No complete frame arrived before the deadline."""


def encode(obj: dict) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(len(body)) + body


def write_frame(stream: BinaryIO, obj: dict) -> None:
    stream.write(encode(obj))
    stream.flush()


def read_frame(stream: BinaryIO) -> dict | None:
    """Blocking read of one frame from a file object; None at end of stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes exceeds the limit")
    body = stream.read(size)
    if len(body) < size:
        return None
    return json.loads(body)


def read_frame_fd(fd: int, deadline: float | None) -> dict | None:
    """Read one frame from a raw fd, giving up at `deadline` (time.monotonic()).

    Returns None at end of stream; raises FrameTimeout when the deadline passes.
    """
    header = _read_exact(fd, _HEADER.size, deadline)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes exceeds the limit")
    body = _read_exact(fd, size, deadline)
    return None if body is None else json.loads(body)


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    chunks: list[bytes] = []
    got = 0
    while got < n:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise FrameTimeout()
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
