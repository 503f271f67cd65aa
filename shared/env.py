"""Build a function's adapters from its environment and FC context.

TROUPE_STORE=disk  → DiskStore at TROUPE_DATA (the local runtime, whose workers wrap it to send
                     OSS events: `wrap_stores`)
TROUPE_STORE=oss   → OssStore on TROUPE_OSS_BUCKET at TROUPE_OSS_ENDPOINT, authenticated with the
                     FC context's STS credentials (python3.10) or ALIBABA_CLOUD_* variables
"""

from __future__ import annotations

import os
from typing import Callable

from shared.errors import TroupeError
from shared.store.base import ObjectStore

_stores: dict[tuple, ObjectStore] = {}
_wrappers: list[Callable[[ObjectStore], ObjectStore]] = []


def wrap_stores(wrapper: Callable[[ObjectStore], ObjectStore]) -> None:
    """Wrap every store built from now on in this process: the local runtime's workers announce
    writes as OSS events (infra/local/spool.py); fault tests inject errors. FC registers none."""
    _wrappers.append(wrapper)
    _stores.clear()
    _convs.clear()


def _wrapped(store: ObjectStore) -> ObjectStore:
    for wrapper in _wrappers:
        store = wrapper(store)
    return store


def build_store(context=None, env=os.environ) -> ObjectStore:
    kind = env.get("TROUPE_STORE", "disk")
    if kind == "disk":
        root = env.get("TROUPE_DATA")
        if not root:
            raise TroupeError("TROUPE_STORE=disk needs TROUPE_DATA (the data directory)")
        key = ("disk", root)
        if key not in _stores:
            from shared.store.disk import DiskStore

            _stores[key] = _wrapped(DiskStore(root))
        return _stores[key]
    if kind == "oss":
        from shared.store.oss import OssStore

        creds = getattr(context, "credentials", None)
        token = getattr(creds, "security_token", None) if creds else None
        key = ("oss", env.get("TROUPE_OSS_BUCKET"), env.get("TROUPE_OSS_ENDPOINT"), token)
        if key not in _stores:
            _stores.clear()  # STS credentials rotate: keep only the current client
            store = OssStore.from_env(env, credentials=creds if token else None)
            store.check_versioning_off()
            _stores[key] = _wrapped(store)
        return _stores[key]
    raise TroupeError(f"unknown TROUPE_STORE={kind!r}: expected 'disk' or 'oss'")


def function_id(env=os.environ) -> str:
    fid = env.get("TROUPE_FUNCTION_ID")
    if not fid:
        raise TroupeError("TROUPE_FUNCTION_ID is not set (s.yaml sets it for every function)")
    return fid


_convs: dict[int, object] = {}


def conversations(context=None, env=os.environ):
    """The ConversationStore over this invocation's store, kept across warm invocations."""
    from shared.conversation import ConversationStore

    store = build_store(context, env)
    if id(store) not in _convs:
        _convs.clear()
        _convs[id(store)] = ConversationStore(store)
    return _convs[id(store)]


def memory_mb(context) -> float | None:
    """The function's memory size (FC context.function.memory, in MB), for the bill."""
    fn = getattr(context, "function", None)
    value = getattr(fn, "memory", None) or getattr(fn, "memory_size", None)
    try:
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


def function_timeout(context, default: float = 120.0) -> float:
    """The function's timeout in seconds (FC context.function.timeout)."""
    value = getattr(getattr(context, "function", None), "timeout", None)
    try:
        return float(value) if value else default
    except (TypeError, ValueError):
        return default


def role_settings(context, env=os.environ) -> dict:
    """What a role function's turn pipeline (shared.runner.RoleRunner) takes from its context:
    memory and timeout for the bill and the claims, the hand-back of throttled turns
    (shared/handback.py) and how long a turn may wait on the model's rate limit before it is
    handed back (TROUPE_THROTTLE_WAIT_S; default a quarter of the timeout)."""
    from shared import handback

    wait = env.get("TROUPE_THROTTLE_WAIT_S", "").strip()
    try:
        wait_s = float(wait) if wait else None
    except ValueError:
        wait_s = -1.0
    if wait_s is not None and not 0 <= wait_s <= 3600:
        raise TroupeError(f"TROUPE_THROTTLE_WAIT_S must be a number of seconds from 0 to 3600, not {wait[:40]!r}")
    return {"memory_mb": memory_mb(context), "timeout_s": function_timeout(context),
            "handback": handback.from_context(context, env), "throttle_wait_s": wait_s}
