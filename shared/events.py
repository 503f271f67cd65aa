"""Typed read-only views over the events FC hands to a handler (infra/local/events.py builds
them for the local runtime).

Shapes follow the real payloads (Serverless Devs fc3 event templates): an OSS trigger event is
`{"events": [{"eventName": "ObjectCreated:PutObject", "oss": {"bucket": ..., "object": ...}}]}`;
an EventBridge-based OSS trigger delivers one CloudEvent per invocation, `{"source": "acs.oss",
"type": "oss:ObjectCreated:PutObject", "subject": ..., "data": <one such record>}` (or, with the
RawData schema, the record alone), and both read as the same records;
an FC 3.0 HTTP trigger event is `{"version": "v1", "rawPath", "headers", "queryParameters",
"body", "isBase64Encoded", "requestContext": {"http": {"method", "path", ...}}}`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from shared.errors import BadRequest, PayloadTooLarge

MAX_JSON_DEPTH = 20


def _nesting(raw: bytes) -> int:
    """The deepest bracket nesting of a JSON text, outside strings (checked before parsing)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _loads(event: bytes | str | dict, what: str) -> dict:
    if isinstance(event, dict):
        return event
    try:
        data = json.loads(event)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"{what} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return data


class DictWrapper:
    """A read-only view over a JSON object."""

    def __init__(self, data: dict):
        self._data = data

    @property
    def raw(self) -> dict:
        return self._data

    def __eq__(self, other):
        return isinstance(other, DictWrapper) and self._data == other._data


# --- OSS trigger ---------------------------------------------------------------------------


class OssEventRecord(DictWrapper):
    @property
    def event_name(self) -> str:
        return self._data.get("eventName", "")

    @property
    def region(self) -> str:
        return self._data.get("region", "")

    @property
    def bucket(self) -> str:
        return self._data.get("oss", {}).get("bucket", {}).get("name", "")

    @property
    def key(self) -> str:
        return self._data.get("oss", {}).get("object", {}).get("key", "")

    @property
    def size(self) -> int:
        return int(self._data.get("oss", {}).get("object", {}).get("size", 0))

    @property
    def etag(self) -> str:
        return self._data.get("oss", {}).get("object", {}).get("eTag", "")

    @property
    def event_time(self) -> str:
        return self._data.get("eventTime", "")

    @property
    def event_epoch(self) -> float | None:
        """eventTime in epoch seconds (OSS writes `2026-12-03T09:00:00.123Z`); None if it has none."""
        return iso_epoch(self.event_time)

    @property
    def request_id(self) -> str:
        return self._data.get("responseElements", {}).get("requestId", "")

    @property
    def is_created(self) -> bool:
        return self.event_name.startswith("ObjectCreated:")


class OssEvent(DictWrapper):
    """`OssEvent.parse(event_bytes).records[0].key`"""

    @classmethod
    def parse(cls, event: bytes | str | dict) -> "OssEvent":
        data = _loads(event, "OSS event")
        if "events" not in data and (data.get("source") == "acs.oss" or "oss" in data):
            data = {"events": [_eventbridge_record(data)]}
        records = data.get("events")
        if not isinstance(records, list) or not records:
            raise BadRequest("OSS event has no 'events' list")
        for r in records:
            if not isinstance(r, dict) or not isinstance(r.get("oss", {}).get("object", {}).get("key"), str):
                raise BadRequest("OSS event record lacks oss.object.key")
        return cls(data)

    @property
    def records(self) -> list[OssEventRecord]:
        return [OssEventRecord(r) for r in self._data["events"]]


def _eventbridge_record(data: dict) -> dict:
    """The OSS record an EventBridge-based trigger carries: the CloudEvent's `data` (its eventName
    from the CloudEvent's type when missing), or, with the RawData schema, the event itself."""
    if data.get("source") != "acs.oss":
        return data
    record = data.get("data")
    if not isinstance(record, dict):
        raise BadRequest("EventBridge OSS event has no 'data' object")
    if not record.get("eventName") and isinstance(data.get("type"), str):
        record = {**record, "eventName": data["type"].removeprefix("oss:")}
    return record


def records_or_rejection(event: bytes | str | dict, log) -> tuple[list["OssEventRecord"], list[dict]]:
    """The records of an OSS trigger event, and no outcome; or, for a malformed event, no
    records and its logged `rejected` outcome (never an error to retry)."""
    try:
        return OssEvent.parse(event).records, []
    except BadRequest as e:
        log.warning("rejected event: %s", e.message)
        return [], [{"outcome": "rejected", "reason": e.message}]


def iso_epoch(text: str) -> float | None:
    """An ISO 8601 UTC time (`2026-12-03T09:00:00.123Z`, fraction optional) in epoch seconds."""
    import calendar
    import re
    import time

    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?Z", text or "")
    if not m:
        return None
    try:
        whole = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return whole + (float(m.group(2)) if m.group(2) else 0.0)


def for_each_created(event: bytes | str | dict, handle_key, request_id: str, log, timed: bool = False) -> list[dict]:
    """Run the async `handle_key(key, request_id)` for every ObjectCreated record of an OSS event
    (`timed`: `handle_key(key, request_id, None, <the event's time in epoch seconds>)`).

    One outcome per record; a malformed event, a record of another kind, or a key its handler
    rejects (RejectedEvent) becomes a logged `rejected` outcome, never an error to retry.
    """
    records, outcomes = records_or_rejection(event, log)
    for record in records:
        if not record.is_created:
            outcomes.append({"outcome": "rejected", "reason": f"event {record.event_name} is not ObjectCreated"})
            continue
        extra = (None, record.event_epoch) if timed else ()
        outcomes.append(for_key(record.key, handle_key, request_id, log, *extra))
    return outcomes


def for_key(key: str, handle_key, request_id: str, log, *args) -> dict:
    """The outcome of the async `handle_key(key, request_id, *args)`; a key its handler rejects
    (RejectedEvent) becomes a logged `rejected` outcome, never an error to retry."""
    import asyncio

    from shared.errors import RejectedEvent

    try:
        return asyncio.run(handle_key(key, request_id, *args))
    except RejectedEvent as e:
        log.warning("rejected event for %r: %s", key[:200], e.message)
        return {"outcome": "rejected", "reason": e.message, "key": key[:200]}


class HttpEvent(DictWrapper):
    """FC 3.0 HTTP trigger event."""

    @classmethod
    def parse(cls, event: bytes | str | dict) -> "HttpEvent":
        data = _loads(event, "HTTP event")
        if not isinstance(data.get("requestContext", {}).get("http", {}).get("method"), str):
            raise BadRequest("HTTP event lacks requestContext.http.method")
        return cls(data)

    @property
    def method(self) -> str:
        return self._data["requestContext"]["http"]["method"].upper()

    @property
    def path(self) -> str:
        return self._data.get("rawPath") or self._data["requestContext"]["http"].get("path", "/")

    @property
    def headers(self) -> dict[str, str]:
        """Header names lower-cased."""
        return {str(k).lower(): str(v) for k, v in (self._data.get("headers") or {}).items()}

    @property
    def query(self) -> dict[str, str]:
        q = self._data.get("queryParameters") or {}
        return {str(k): (v[0] if isinstance(v, list) and v else str(v)) for k, v in q.items()}

    @property
    def body(self) -> bytes:
        body = self._data.get("body") or ""
        if self._data.get("isBase64Encoded"):
            return base64.b64decode(body)
        return body.encode("utf-8") if isinstance(body, str) else bytes(body)

    @property
    def event_time(self) -> str:
        return self._data.get("eventTime", "")

    @property
    def request_id(self) -> str:
        return self._data.get("requestContext", {}).get("requestId", "")

    @property
    def source_ip(self) -> str:
        return self._data.get("requestContext", {}).get("http", {}).get("sourceIp", "")

    def json(self, max_bytes: int = 64 * 1024, max_depth: int = MAX_JSON_DEPTH) -> Any:
        """The body as JSON, refused (4xx, naming the limit) if too large or too deeply nested."""
        raw = self.body
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
        if not raw.strip():
            raise BadRequest("request body is empty; expected a JSON object")
        if _nesting(raw) > max_depth:
            raise BadRequest(f"request body is nested deeper than {max_depth} levels")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise BadRequest(f"request body is not valid JSON: {str(e)[:200]}") from None
