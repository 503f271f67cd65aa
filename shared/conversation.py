"""Conversation state on top of the object store.

Every key is built in shared/keys.py (the layout is listed there); what one function reads of
another's records (deliveries, turns, invocations, the end) is validated by shared/records.py.
A turn's own invocation record travels inside its message object, so that a turn costs one
write fewer; `invocations()` merges both sources.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator

from shared import keys, records
from shared.errors import NoSuchKey, ObjectExists
from shared.store.base import ObjectStore

TURN_WIDTH = keys.TURN_WIDTH
turn_name = keys.turn_name


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _load(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


class ConversationStore:
    def __init__(self, store: ObjectStore, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock
        """the one clock of everything this store records (the end, a wait's start, journal times)"""
        self._meta_cache: dict[str, dict] = {}

    def _get_json(self, key: str) -> Any:
        """The object at `key` as JSON, or None when it is absent."""
        try:
            return _load(self.store.get(key))
        except NoSuchKey:
            return None

    # -- keys (built in shared/keys.py) ------------------------------------------------------
    base = staticmethod(keys.conversation)
    meta_key = staticmethod(keys.meta)
    end_key = staticmethod(keys.end)
    progress_key = staticmethod(keys.progress)
    message_key = staticmethod(keys.message)
    state_key = staticmethod(keys.state)
    journal_key = staticmethod(keys.journal)
    inbox_prefix = staticmethod(keys.inbox)
    delivery_key = staticmethod(keys.delivery)
    parse_delivery_key = staticmethod(keys.parse_delivery)
    claim_key = staticmethod(keys.claim)
    decision_key = staticmethod(keys.decision)

    # -- meta ------------------------------------------------------------------------------
    def create(self, cid: str, meta: dict) -> None:
        self.store.put(self.meta_key(cid), _dump(meta), create_only=True)
        self._meta_cache[cid] = meta

    def meta(self, cid: str) -> dict:
        """Written once, so safe to cache for the life of the process."""
        if cid not in self._meta_cache:
            self._meta_cache[cid] = _load(self.store.get(self.meta_key(cid)))
        return self._meta_cache[cid]

    def exists(self, cid: str) -> bool:
        if cid in self._meta_cache:
            return True
        return self.store.head(self.meta_key(cid)) is not None

    # -- messages --------------------------------------------------------------------------
    def commit(self, cid: str, turn: int, msgid: str, record: dict) -> bool:
        """Create-only. True if this call committed the turn, False if it was there already."""
        try:
            self.store.put(self.message_key(cid, turn, msgid), _dump(record), create_only=True)
            return True
        except ObjectExists:
            return False

    def message(self, cid: str, turn: int, msgid: str) -> dict | None:
        found = self._get_json(self.message_key(cid, turn, msgid))
        return None if found is None else records.read_turn(found)

    def messages(self, cid: str, after: str = "", limit: int = 100) -> tuple[list[dict], str]:
        """Committed messages after the cursor, oldest first, and the cursor for the next call.

        A cursor is the `<turn>-<msgid>` name of the last message seen ("" for the start).
        """
        prefix = keys.messages(cid)
        marker = prefix + after + ".json" if after else ""
        page = self.store.list(prefix, marker=marker, max_keys=limit)
        out = []
        for info in page.objects:
            found = self._get_json(info.key)
            if found is not None:
                out.append(records.read_turn(found))
        cursor = page.objects[-1].key[len(prefix):-5] if page.objects else after
        return out, cursor

    def read_turn_at(self, key: str) -> dict | None:
        found = self._get_json(key)
        return None if found is None else records.read_turn(found)

    def turn_keys(self, cid: str, turn: int) -> list[str]:
        """The keys of the messages committed at `turn` (one LIST request)."""
        return [o.key for o in self.store.list(keys.turn_messages(cid, turn), max_keys=100).objects]

    def iter_messages(self, cid: str) -> Iterator[dict]:
        cursor = ""
        while True:
            batch, cursor = self.messages(cid, after=cursor, limit=100)
            yield from batch
            if len(batch) < 100:
                return

    # -- deliveries ------------------------------------------------------------------------
    def deliver(self, function: str, cid: str, turn: int, msgid: str, payload: dict) -> bool:
        try:
            self.store.put(self.delivery_key(function, cid, turn, msgid), _dump(payload), create_only=True)
            return True
        except ObjectExists:
            return False

    def read_delivery(self, key: str, turn: int | None = None) -> dict:
        """The delivery at `key`, validated (records.read_delivery); NoSuchKey if it is gone."""
        return records.read_delivery(_load(self.store.get(key)), turn)

    # -- role state ------------------------------------------------------------------------
    def load_state(self, cid: str, role: str) -> dict | None:
        return self._get_json(self.state_key(cid, role))

    def save_state(self, cid: str, role: str, state: dict) -> None:
        self.store.put(self.state_key(cid, role), _dump(state))

    # -- journal ---------------------------------------------------------------------------
    def journal_get(self, cid: str, trigger: str, n: int) -> dict | None:
        return self._get_json(self.journal_key(cid, trigger, n))

    def journal_put(self, cid: str, trigger: str, n: int, entry: dict) -> dict:
        """Create-only: if another attempt journaled first, its entry wins and is returned."""
        key = self.journal_key(cid, trigger, n)
        try:
            self.store.put(key, _dump(entry), create_only=True)
            return entry
        except ObjectExists:
            return _load(self.store.get(key))

    # -- claims: who is paying for an LLM call right now ---------------------------------
    def claim(self, cid: str, trigger: str, n: int, holder: str, now: float) -> bool:
        """Create-only: True if this caller now holds the right to make (and pay for) the call."""
        try:
            self.store.put(self.claim_key(cid, trigger, n), _dump({"holder": holder, "at": now}), create_only=True)
            return True
        except ObjectExists:
            return False

    def get_claim(self, cid: str, trigger: str, n: int) -> dict | None:
        return self._get_json(self.claim_key(cid, trigger, n))

    def release_claim(self, cid: str, trigger: str, n: int) -> None:
        self.store.delete(self.claim_key(cid, trigger, n))

    # -- the director's decisions ------------------------------------------------------------
    def decide_once(self, cid: str, delivery_id: str, decision: dict) -> dict:
        """Create-only: the first decision for a delivery wins, and is what every attempt uses."""
        key = self.decision_key(cid, delivery_id)
        try:
            self.store.put(key, _dump(decision), create_only=True)
            return decision
        except ObjectExists:
            return _load(self.store.get(key))

    def decision(self, cid: str, delivery_id: str) -> dict | None:
        return self._get_json(self.decision_key(cid, delivery_id))

    # -- invocations -----------------------------------------------------------------------
    def record_invocation(self, cid: str, record: dict) -> None:
        self.store.put(keys.invocation(cid, record["start"], record.get("request_id", "")), _dump(record))

    def invocations(self, cid: str) -> list[dict]:
        rows = [records.read_invocation(m["invocation"]) for m in self.iter_messages(cid) if m.get("invocation")]
        for info in self.store.iter(keys.invocations(cid)):
            found = self._get_json(info.key)
            if found is not None:
                rows.append(records.read_invocation(found))
        rows.sort(key=lambda r: r.get("start", 0))
        return rows

    # -- waiting for a human ---------------------------------------------------------------
    def human_message_id(self, cid: str, turn: int) -> str:
        """The id of the human's answer to the wait opened after `turn` (one answer per wait)."""
        from shared.ids import derive_id

        return derive_id(cid, "human", str(turn))

    def open_waiting(self, cid: str, record: dict) -> None:
        """Create-only, keyed by turn: a replayed turn cannot reopen a wait already answered."""
        key = keys.waiting(cid, record["turn"])
        try:
            self.store.put(key, _dump(record), create_only=True)
        except ObjectExists:
            pass

    def waiting(self, cid: str) -> dict | None:
        """The open wait, if the conversation waits for a human (None once answered)."""
        last = None
        for info in self.store.iter(keys.waiting_prefix(cid)):
            last = info
        if last is None:
            return None
        record = self._get_json(last.key)
        if record is None:
            return None
        answered = self.store.head(self.message_key(cid, record["turn"] + 1, self.human_message_id(cid, record["turn"])))
        return None if answered else record

    # -- end -------------------------------------------------------------------------------
    def set_progress(self, cid: str, record: dict) -> None:
        """Which step is running: advisory, overwritten, never part of a commit."""
        self.store.put(self.progress_key(cid), _dump(record))

    def clear_progress(self, cid: str) -> None:
        self.store.delete(self.progress_key(cid))

    def progress(self, cid: str) -> dict | None:
        try:
            return json.loads(self.store.get(self.progress_key(cid)))
        except NoSuchKey:
            return None

    def end(self, cid: str, status: str, reason: str, **extra) -> dict:
        """Mark the conversation ended; the first writer wins and its record is returned."""
        record = records.end(status=status, reason=reason, at=self.clock(), **extra)
        try:
            self.store.put(self.end_key(cid), _dump(record), create_only=True)
            return record
        except ObjectExists:
            return self.get_end(cid) or record

    def get_end(self, cid: str) -> dict | None:
        found = self._get_json(self.end_key(cid))
        return None if found is None else records.read_end(found)

    def is_ended(self, cid: str) -> bool:
        return self.store.head(self.end_key(cid)) is not None
