"""Identifiers that end up in object keys: generated here, validated wherever they come in."""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from shared.errors import BadRequest

_CID = re.compile(r"^[0-9]{8}t[0-9]{6}-[0-9a-f]{24}$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
_MSGID = re.compile(r"^[0-9a-f]{16}$")


def new_conversation_id(now: float | None = None) -> str:
    """Sortable by creation time and unguessable (96 random bits):
    `20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a`."""
    stamp = time.strftime("%Y%m%dt%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(12)}"


def check_conversation_id(cid) -> str:
    if not isinstance(cid, str) or not _CID.match(cid):
        raise BadRequest("invalid conversation id: expected the form 20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a",
                         id=str(cid)[:80])
    return cid


def check_name(name, what: str = "name") -> str:
    """Role and function names: a letter, then letters, digits, '_' or '-', at most 40."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest(f"invalid {what}: a letter then letters, digits, '_' or '-' (max 40)",
                         value=str(name)[:80])
    return name


def check_message_id(msgid) -> str:
    if not isinstance(msgid, str) or not _MSGID.match(msgid):
        raise BadRequest("invalid message id", value=str(msgid)[:80])
    return msgid


def derive_id(*parts: str) -> str:
    """A deterministic 16-hex id from its parts: the same trigger always yields the same id."""
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return h[:16]


def reply_id(cid: str, delivery_id: str) -> str:
    """The id of the turn a delivery causes: every attempt at the delivery commits this same key."""
    return derive_id(cid, "reply", delivery_id)


def new_token() -> str:
    """A conversation's access token: 192 random bits, shown once, stored only as a hash."""
    return "tok_" + secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
