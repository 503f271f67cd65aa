"""The REST API behind the gateway's HTTP trigger. Pure: an HttpEvent in, an FC response out.

  GET  /scenarios                          the catalog
  POST /conversations                      {scenario, input, limits?} → 201 {id, status, ...}
  GET  /conversations/{id}[?after=&limit=] status and committed messages after the cursor
  GET  /conversations/{id}/invocations     one record per function invocation
  GET  /conversations/{id}/usage           the bill: per-invocation rows, totals per role and in all

The gateway imports no MetaGPT: it builds the opening message as plain JSON in the shape of
MetaGPT's Message, so its cold start stays small.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Callable

from shared import scenarios
from shared.billing import bill_fields, usage_report
from shared.conversation import ConversationStore
from shared.errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge, TroupeError
from shared.events import HttpEvent
from shared.ids import check_conversation_id, derive_id, new_conversation_id

MAX_BODY = 64 * 1024
USER_REQUIREMENT = "metagpt.actions.add_requirement.UserRequirement"
_CONV = re.compile(r"^/conversations/([^/]+)(/invocations|/usage)?/?$")


def response(status: int, body, headers: dict | None = None) -> dict:
    """An FC 3.0 HTTP trigger response."""
    return {"statusCode": status,
            "headers": {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
            "isBase64Encoded": False,
            "body": json.dumps(body, ensure_ascii=False)}


class Gateway:
    def __init__(self, convs: ConversationStore, clock: Callable[[], float] = time.time,
                 memory_mb: float | None = None):
        self.convs = convs
        self.clock = clock
        self.memory_mb = memory_mb
        self.request_id = ""

    def handle(self, event: bytes | str | dict, request_id: str = "") -> dict:
        self.request_id = request_id
        try:
            req = HttpEvent.parse(event)
            return self.route(req)
        except TroupeError as e:
            status = e.status if 400 <= e.status < 600 else 500
            return response(status, e.to_dict())

    def route(self, req: HttpEvent) -> dict:
        path = req.path.rstrip("/") or "/"
        if path == "/scenarios":
            self._method(req, "GET")
            return response(200, {"scenarios": [self._scenario_view(s) for s in scenarios.builtin().values()]})
        if path == "/conversations":
            self._method(req, "POST")
            return self.create(req)
        m = _CONV.match(path)
        if m:
            cid = check_conversation_id(m.group(1))
            self._method(req, "GET")
            if not self.convs.exists(cid):
                raise NotFound("no such conversation", id=cid)
            if m.group(2) == "/invocations":
                return response(200, {"id": cid, "invocations": self.convs.invocations(cid)})
            if m.group(2) == "/usage":
                return response(200, {"id": cid, **usage_report(self.convs.invocations(cid))})
            return self.show(cid, req)
        raise NotFound(f"no route for {req.method} {path[:100]}")

    @staticmethod
    def _method(req: HttpEvent, allowed: str) -> None:
        if req.method != allowed:
            raise MethodNotAllowed(f"{req.method} is not allowed here; use {allowed}")

    @staticmethod
    def _scenario_view(s: dict) -> dict:
        return {"id": s["id"], "title": s["title"], "description": s["description"], "flow": s["flow"],
                "limits": s["limits"], "roles": [{"name": r["name"], "profile": r["profile"]} for r in s["roles"]]}

    # -- POST /conversations ---------------------------------------------------------------
    def create(self, req: HttpEvent) -> dict:
        if len(req.body) > MAX_BODY:
            raise PayloadTooLarge(f"request body is larger than {MAX_BODY} bytes")
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        unknown = set(body) - {"scenario", "input", "limits"}
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))[:200]}", field=sorted(unknown)[0])
        if "scenario" not in body:
            raise BadRequest("field 'scenario' is required", field="scenario")
        scenario = scenarios.get(body["scenario"])
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("field 'input' must be a non-empty string", field="input")
        if len(text) > scenarios.MAX_INPUT_CHARS:
            raise PayloadTooLarge(f"field 'input' is longer than {scenarios.MAX_INPUT_CHARS} characters", field="input")
        limits = scenarios.check_limits(body.get("limits"), "limits", scenario["limits"])

        now = self.clock()
        cid = new_conversation_id(now)
        meta = {"id": cid, "scenario": scenario, "input": text, "limits": limits, "created": now}
        self.convs.create(cid, meta)
        first = scenario["roles"][0]
        opening_id = derive_id(cid, "input")
        message = {"id": opening_id, "content": text, "instruct_content": None, "role": "user",
                   "cause_by": USER_REQUIREMENT, "sent_from": "user", "send_to": [first["name"]]}
        self.convs.commit(cid, 0, opening_id, {
            "turn": 0, "id": opening_id, "role": "user", "profile": "user", "function": "gateway",
            "content": text, "sent_from": "user", "send_to": [first["name"]], "cause_by": USER_REQUIREMENT,
            "message": message, "recipients": [{"name": first["name"], "function": first["function"]}],
        })
        self.convs.deliver(first["function"], cid, 0, derive_id(opening_id, first["name"]),
                           {"to": first["name"], "turn": 0, "message": message})
        duration = round((self.clock() - now) * 1000, 2)
        self.convs.record_invocation(cid, {
            "function": "gateway", "request_id": self.request_id or req.request_id, "start": now,
            "duration_ms": duration, "outcome": "created", "pid": os.getpid(), "turn": 0, "role": "user",
            **bill_fields(None, 0, 0, self.memory_mb, duration)})
        return response(201, {"id": cid, "status": "running", "scenario": scenario["id"], "limits": limits,
                              "links": {"self": f"conversations/{cid}",
                                        "invocations": f"conversations/{cid}/invocations"}})

    # -- GET /conversations/{id} -----------------------------------------------------------
    def show(self, cid: str, req: HttpEvent) -> dict:
        q = req.query
        after = q.get("after", "")
        if after and not re.match(r"^[0-9]{6}-[0-9a-f]{16}$", after):
            raise BadRequest("query parameter 'after' must be a cursor returned by this API", field="after")
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise BadRequest("query parameter 'limit' must be an integer", field="limit") from None
        if not 1 <= limit <= 500:
            raise BadRequest("query parameter 'limit' must be between 1 and 500", field="limit")
        end = self.convs.get_end(cid)
        messages, cursor = self.convs.messages(cid, after=after, limit=limit)
        meta = self.convs.meta(cid)
        return response(200, {
            "id": cid, "scenario": meta["scenario"]["id"], "input": meta["input"], "limits": meta["limits"],
            "status": end["status"] if end else "running", "end": end,
            "messages": [self._message_view(m) for m in messages], "cursor": cursor,
        })

    @staticmethod
    def _message_view(m: dict) -> dict:
        inv = m.get("invocation") or {}
        return {"turn": m["turn"], "id": m["id"], "role": m["role"], "profile": m.get("profile", ""),
                "content": m["content"], "sent_from": m.get("sent_from", ""), "send_to": m.get("send_to", []),
                "function": m.get("function", ""), "duration_ms": inv.get("duration_ms"), "pid": inv.get("pid"),
                "start": inv.get("start"), "model": inv.get("model"), "prompt_tokens": inv.get("prompt_tokens", 0),
                "completion_tokens": inv.get("completion_tokens", 0), "cost_cny": inv.get("cost_cny", 0),
                "llm_ms": inv.get("llm_ms")}
