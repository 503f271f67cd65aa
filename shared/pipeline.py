"""OSS/event-triggered pipelines: a request file starts a conversation, its result is a file.

  requests/<name>.json   put by anyone allowed to write there (the bucket's RAM policy is the
                         access control): the body of POST /conversations, e.g.
                         {"scenario": "software_company", "input": "开发一个记账APP"}
  results/<name>.json    written when that conversation ends: status, reason, transcript,
                         deliverable, artifacts, bill; or, for a request that cannot start,
                         {"error": {...}} naming the problem (and nothing else happens)

One function (`pipeline`) has two OSS triggers: `requests/` (start) and `conversations/` with
suffix `end.json` (the end marker every conversation writes once). Put many request files at
once for batch work: each is its own conversation and its own invocations.

At least once, exactly one conversation: the conversation's id derives from the request's key,
ETag and event time, which every redelivery of one put repeats, so a duplicated event finds
the conversation already there and only re-asserts its opening delivery. A later put of the
same name is a new event and starts a new conversation; its result replaces the earlier one.

A conversation started from a request has no API token (only the bucket's readers see it):
everything it produced is in results/ and under conversations/<id>/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Callable

from shared import artifacts, keys
from shared.billing import usage_report
from shared.conversation import ConversationStore
from shared.errors import BadRequest, NoSuchKey, TroupeError
from shared.events import records_or_rejection
from shared.service import ConversationService

log = logging.getLogger("troupe.pipeline")

REQUESTS, RESULTS = keys.REQUESTS, keys.RESULTS
MAX_REQUEST_BYTES = 64 * 1024
MAX_RESULT_TURN_CHARS = 20_000
result_key = keys.result


def request_cid(key: str, etag: str, event_time: str) -> str:
    """The conversation id a request event starts: the same for every redelivery of one put."""
    digest = hashlib.sha256(f"{key}\n{etag}\n{event_time}".encode()).hexdigest()[:24]
    try:
        when = time.strptime(event_time[:19], "%Y-%m-%dT%H:%M:%S")
        stamp = time.strftime("%Y%m%dt%H%M%S", when)
    except ValueError:
        stamp = time.strftime("%Y%m%dt%H%M%S", time.gmtime())
    return f"{stamp}-{digest}"


class Pipeline:
    def __init__(self, convs: ConversationStore, clock: Callable[[], float] = time.time):
        self.convs = convs
        self.clock = clock
        self.service = ConversationService(convs, clock=clock)

    def handle_event(self, event: bytes | str | dict, request_id: str = "") -> list[dict]:
        records, out = records_or_rejection(event, log)
        for record in records:
            if not record.is_created:
                out.append({"outcome": "rejected", "reason": f"event {record.event_name} is not ObjectCreated"})
            elif record.key.startswith(REQUESTS):
                out.append(self.start(record.key, record.etag, record.event_time))
            elif keys.end_of(record.key):
                out.append(self.finish(keys.end_of(record.key)))
            else:
                out.append({"outcome": "rejected", "reason": "key is neither a request nor an end marker",
                            "key": record.key[:200]})
        return out

    # -- requests/<name>.json → a conversation ---------------------------------------------
    def start(self, key: str, etag: str, event_time: str) -> dict:
        target = result_key(key)
        try:
            if target.startswith(RESULTS + "rejected/"):
                raise BadRequest("a request's name must be letters, digits, '.', '_', '-' or '/' and end in .json "
                                 "(at most 200 characters)", field="key")
            info = self.convs.store.head(key)
            if info is None:
                raise BadRequest("the request file is gone", field="key")
            if info.size > MAX_REQUEST_BYTES:
                raise BadRequest(f"a request file is larger than {MAX_REQUEST_BYTES} bytes", field="key")
            raw = self.convs.store.get(key)
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise BadRequest(f"the request file is not JSON: {str(e)[:120]}") from None
            cid = request_cid(key, etag, event_time)
            meta, _ = self.service.start(body, self.clock(), cid=cid, origin={"request": key, "result": target})
        except NoSuchKey:
            return self._refuse(key, target, BadRequest("the request file is gone", field="key"))
        except TroupeError as e:
            if 400 <= e.status < 500:
                return self._refuse(key, target, e)
            raise
        return {"outcome": "started", "request": key, "conversation": meta["id"]}

    def _refuse(self, key: str, target: str, error: TroupeError) -> dict:
        body = {"request": key, "error": error.to_dict(), "at": self.clock()}
        self.convs.store.put(target, json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8"))
        log.warning("refused request %r: %s", key[:200], error.message)
        return {"outcome": "refused", "request": key, "result": target, "reason": error.message}

    # -- conversations/<id>/end.json → results/<name>.json ---------------------------------
    def finish(self, cid: str) -> dict:
        try:
            meta = self.convs.meta(cid)
        except (NoSuchKey, BadRequest):
            return {"outcome": "ignored", "reason": "no such conversation", "conversation": cid[:80]}
        origin = meta.get("origin") or {}
        if not origin.get("result"):
            return {"outcome": "ignored", "reason": "not started by a request file", "conversation": cid}
        end = self.convs.get_end(cid) or {}
        turns = [{"turn": m["turn"], "role": m["role"], "content": (m.get("content") or "")[:MAX_RESULT_TURN_CHARS]}
                 for m in self.convs.iter_messages(cid)]
        deliverable = None
        if end.get("deliverable"):
            d = end["deliverable"]
            found = self.convs.message(cid, d["turn"], d["id"])
            deliverable = {**d, "content": found["content"] if found else ""}
        files = artifacts.listing(artifacts.latest_manifest(self.convs, cid))
        body = {
            "request": origin["request"], "conversation": cid, "scenario": meta["scenario"]["id"],
            "status": end.get("status"), "reason": end.get("reason"), "end": end, "deliverable": deliverable,
            "turns": turns,
            "artifacts": [{**a, "key": keys.artifact(cid, a["path"])} for a in files],
            "usage": usage_report(self.convs.invocations(cid))["total"],
        }
        self.convs.store.put(origin["result"], json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8"))
        return {"outcome": "result", "conversation": cid, "result": origin["result"]}
