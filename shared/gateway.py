"""The REST API behind the gateway's HTTP trigger. Pure: an HttpEvent in, an FC response out.

The routes (the web page, /openapi.json, the scenario catalog, conversations and their
messages, bill and artifacts, knowledge bases) are declared once, in shared/routes.py: this
class dispatches by that table and /openapi.json is built from it. What a route writes to a
conversation (a start, a human's turn, a cancel, a user scenario) is done by the conversation
service (shared/service.py); the gateway only speaks HTTP: routes, credentials, idempotency keys.

Access: starting a conversation needs the deployment's API key; everything about a
conversation needs that conversation's own token (both as `Authorization: Bearer ...`). The
token is returned once, when the conversation is created; only its hash is stored.

The gateway imports no MetaGPT: it builds the opening message as plain JSON in the shape of
MetaGPT's Message, so its cold start stays small.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import time
from typing import Callable
from urllib.parse import quote

from shared import artifacts, branches, keys, openapi, records, routes, scenarios, web
from shared.billing import bill_fields, usage_report
from shared.conversation import ConversationStore
from shared.errors import (BadRequest, Conflict, Forbidden, NoSuchKey, NotFound, ObjectExists, PayloadTooLarge,
                           ServiceUnavailable, TroupeError, Unauthorized)
from shared.events import HttpEvent
from shared.knowledge import api as knowledge_api
from shared.ids import check_conversation_id, new_conversation_id, token_hash
from shared.service import ConversationService

log = logging.getLogger("troupe.gateway")

MAX_BODY = 64 * 1024
MAX_SCENARIO_BODY = 32 * 1024
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def response(status: int, body, headers: dict | None = None) -> dict:
    """An FC 3.0 HTTP trigger response."""
    return {"statusCode": status,
            "headers": {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
            "isBase64Encoded": False,
            "body": json.dumps(body, ensure_ascii=False)}


def binary(data: bytes, content_type: str, headers: dict | None = None) -> dict:
    """An HTTP trigger response with bytes (FC wants them base64-encoded)."""
    return {"statusCode": 200, "isBase64Encoded": True, "body": base64.b64encode(data).decode("ascii"),
            "headers": {"Content-Type": content_type, "X-Content-Type-Options": "nosniff", **(headers or {})}}


class Gateway:
    def __init__(self, convs: ConversationStore, clock: Callable[[], float] = time.time,
                 memory_mb: float | None = None, api_key: str | None = None,
                 role_functions: set[str] | None = None):
        self.convs = convs
        self.clock = clock
        self.memory_mb = memory_mb
        self.api_key = api_key or None
        """The deployment's API key (TROUPE_API_KEY, from the environment): needed to start a
        conversation. Each conversation then has its own token, needed to read or act on it."""
        self.request_id = ""
        self.service = ConversationService(convs, clock, role_functions)
        """starts, human turns, cancels and the scenario catalog: the writes behind the routes"""

    def handle(self, event: bytes | str | dict, request_id: str = "") -> dict:
        self.request_id = request_id
        try:
            req = HttpEvent.parse(event)
            return self.route(req)
        except TroupeError as e:
            status = e.status if 400 <= e.status < 600 else 500
            return response(status, e.to_dict())
        except Exception:  # a bug, not the caller's fault: logged with its traceback, never echoed
            log.exception("unexpected error in the gateway")
            return response(500, {"error": "InternalError", "message": "internal error; see the function's log"})

    def route(self, req: HttpEvent) -> dict:
        """Dispatch by the declared routes (shared/routes.py): credentials first, then the handler."""
        route, params = routes.find(req.method, req.path.rstrip("/") or "/")
        if route.auth == "api_key":
            self._require_api_key(req, route.need)
        elif route.auth == "token":
            cid = check_conversation_id(params.pop("id"))
            return getattr(self, route.handler)(req, cid, self._authorize(cid, req), **params)
        return getattr(self, route.handler)(req, **params)

    # -- the small routes ------------------------------------------------------------------
    def page(self, req: HttpEvent, file: str | None = None) -> dict:
        return web.serve(req.method, req.path.rstrip("/") or "/")

    def openapi(self, req: HttpEvent) -> dict:
        return response(200, openapi.document())

    def catalog(self, req: HttpEvent) -> dict:
        return response(200, {"scenarios": [self._scenario_view(s) for s in self.service.all_scenarios().values()]})

    def invocations(self, req: HttpEvent, cid: str, meta: dict) -> dict:
        return response(200, {"id": cid, "invocations": self.convs.invocations(cid)})

    def usage(self, req: HttpEvent, cid: str, meta: dict) -> dict:
        return response(200, {"id": cid, **usage_report(self.convs.invocations(cid))})

    def artifact_list(self, req: HttpEvent, cid: str, meta: dict) -> dict:
        return response(200, {"id": cid, "artifacts": artifacts.listing(artifacts.latest_manifest(self.convs, cid))})

    def artifact_zip(self, req: HttpEvent, cid: str, meta: dict) -> dict:
        manifest = artifacts.latest_manifest(self.convs, cid)
        name = (manifest or {}).get("root") or cid
        return binary(artifacts.zip_bytes(self.convs, cid, manifest), "application/zip",
                      {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}.zip"})

    def kb_list(self, req: HttpEvent, kb: str) -> dict:
        return knowledge_api.list_documents(req, self.convs.store, kb)

    def kb_put(self, req: HttpEvent, kb: str) -> dict:
        return knowledge_api.put(req, self.convs.store, kb)

    def kb_get(self, req: HttpEvent, kb: str, path: str) -> dict:
        return knowledge_api.get(self.convs.store, kb, path)

    def kb_delete(self, req: HttpEvent, kb: str, path: str) -> dict:
        return knowledge_api.delete(self.convs.store, kb, path)

    def kb_search(self, req: HttpEvent, kb: str) -> dict:
        return knowledge_api.search_passages(req, self.convs.store, kb)

    # -- access control --------------------------------------------------------------------
    @staticmethod
    def _bearer(req: HttpEvent) -> str | None:
        auth = req.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None

    def _require_api_key(self, req: HttpEvent, need: str = "starting a conversation") -> None:
        if not self.api_key:
            raise ServiceUnavailable(f"this deployment has no TROUPE_API_KEY configured, so {need} is not "
                                     "possible")
        given = self._bearer(req)
        if given is None:
            raise Unauthorized(f"{need} needs the deployment's API key: send 'Authorization: Bearer <key>'")
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise Forbidden("the API key is not valid")

    def _authorize(self, cid: str, req: HttpEvent) -> dict:
        """The conversation's meta, if the request carries its token (compared in constant time)."""
        try:
            meta = self.convs.meta(cid)
        except NoSuchKey:
            raise NotFound("no such conversation", id=cid) from None
        given = self._bearer(req)
        if given is None:
            raise Unauthorized("this conversation needs its access token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(token_hash(given), meta.get("token_sha256", "")):
            raise Forbidden("the token does not grant access to this conversation")
        return meta

    @staticmethod
    def _scenario_view(s: dict) -> dict:
        return {"id": s["id"], "title": s["title"], "description": s["description"], "flow": s["flow"],
                "limits": s["limits"], "input": s.get("input"), "options": s.get("options") or {},
                "roles": [{"name": r["name"], "profile": r["profile"], "human": bool(r.get("human"))}
                          for r in s["roles"]]}

    # -- POST /conversations ---------------------------------------------------------------
    def create(self, req: HttpEvent) -> dict:
        if len(req.body) > MAX_BODY:
            raise PayloadTooLarge(f"request body is larger than {MAX_BODY} bytes")
        body = req.json()
        key = req.headers.get("idempotency-key")
        if key is None:
            now = self.clock()
            meta, token = self.service.start(body, now)
        else:
            cid, now, token = self._idempotent(key, req.body)
            meta, _ = self.service.start(body, now, cid=cid, token=token)
        cid = meta["id"]
        self._record(cid, req, now, "created", 0, "user")
        return response(201, {"id": cid, "token": token, "status": "running", "scenario": meta["scenario"]["id"],
                              "limits": meta["limits"],
                              "links": {"self": f"conversations/{cid}",
                                        "invocations": f"conversations/{cid}/invocations",
                                        "usage": f"conversations/{cid}/usage"}})

    def _idempotent(self, key: str, raw: bytes) -> tuple[str, float, str]:
        """(conversation id, creation time, token) for a start with `Idempotency-Key: key`.

        The first request records the id it starts under `idempotency/<HMAC(API key, key)>`
        (create-only); a retry with the same key and body gets the same conversation and the same
        token (an HMAC of the id under the API key, so only the key's holder can compute it).
        """
        if not isinstance(key, str) or not _IDEMPOTENCY_KEY.match(key):
            raise BadRequest("header Idempotency-Key must be 1 to 100 characters: letters, digits, '-', '_', '.' "
                             "or ':'", field="Idempotency-Key")
        secret = self.api_key.encode()
        name = hmac.new(secret, b"idempotency:" + key.encode(), "sha256").hexdigest()
        record_key = keys.idempotency(name)
        body_sha = hashlib.sha256(raw).hexdigest()
        try:
            found = json.loads(self.convs.store.get(record_key))
        except NoSuchKey:
            now = self.clock()
            found = {"id": new_conversation_id(now), "created": now, "body_sha256": body_sha}
            try:
                self.convs.store.put(record_key, json.dumps(found).encode(), create_only=True)
            except ObjectExists:  # a concurrent retry recorded it first: use its conversation
                found = json.loads(self.convs.store.get(record_key))
        if found["body_sha256"] != body_sha:
            raise Conflict("this Idempotency-Key was used with another request body", field="Idempotency-Key")
        token = "tok_" + base64.urlsafe_b64encode(
            hmac.new(secret, b"token:" + found["id"].encode(), "sha256").digest()[:24]).decode().rstrip("=")
        return found["id"], found["created"], token

    def _record(self, cid: str, req: HttpEvent, start: float, outcome: str, turn: int, role: str) -> None:
        """This invocation's record in the conversation (it wrote a turn there), with its compute."""
        duration = round((self.clock() - start) * 1000, 2)
        self.convs.record_invocation(cid, records.invocation(
            function="gateway", request_id=self.request_id or req.request_id, start=start, outcome=outcome,
            duration_ms=duration, pid=os.getpid(), turn=turn, role=role,
            **bill_fields(None, 0, 0, self.memory_mb, duration)))

    def add_scenario(self, req: HttpEvent) -> dict:
        """POST /scenarios: a user's scenario as JSON, validated, stored create-only."""
        if len(req.body) > MAX_SCENARIO_BODY:
            raise PayloadTooLarge(f"a scenario is larger than {MAX_SCENARIO_BODY} bytes")
        return response(201, self._scenario_view(self.service.add_scenario(req.json(max_bytes=MAX_SCENARIO_BODY))))

    # -- POST /conversations/{id}/messages: a human participant's turn ------------------------
    def human_message(self, req: HttpEvent, cid: str, meta: dict) -> dict:
        if len(req.body) > MAX_BODY:
            raise PayloadTooLarge(f"request body is larger than {MAX_BODY} bytes")
        now = self.clock()
        turn, mid, role = self.service.human_turn(cid, meta, req.json())
        self._record(cid, req, now, "human_message", turn, role)
        return response(201, {"id": cid, "turn": turn, "message_id": mid})

    # -- POST /conversations/{id}/cancel ---------------------------------------------------
    def cancel(self, req: HttpEvent, cid: str, meta: dict) -> dict:
        self.service.cancel(cid)
        return response(200, {"id": cid, "status": "cancelled"})

    # -- GET /conversations/{id}/artifacts/<path> -------------------------------------------
    def artifact(self, req: HttpEvent, cid: str, meta: dict, path: str) -> dict:
        data = artifacts.read(self.convs, cid, artifacts.latest_manifest(self.convs, cid), path)
        kind = artifacts.content_type(path)
        if kind.startswith("text/") or kind == "application/json":
            try:
                return {"statusCode": 200, "isBase64Encoded": False, "body": data.decode("utf-8"),
                        "headers": {"Content-Type": f"{kind}; charset=utf-8", "X-Content-Type-Options": "nosniff"}}
            except UnicodeDecodeError:
                kind = "application/octet-stream"
        return binary(data, kind)

    # -- GET /conversations/{id} -----------------------------------------------------------
    def show(self, req: HttpEvent, cid: str, meta: dict) -> dict:
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
        waiting = None if end else self.convs.waiting(cid)
        messages, cursor = self.convs.messages(cid, after=after, limit=limit)
        meta = self.convs.meta(cid)
        last = messages[-1]["turn"] if messages else 0
        if last > 0 and not end and (len(messages) < limit or messages[0]["turn"] < last) and _branches(meta):
            # a panel's answers (a wave's files) share a turn and commit in any order, so one may still
            # land before the last one seen: the cursor re-reads the newest turn (clients keep messages by id)
            cursor = keys.before_turn(last)
        status = end["status"] if end else ("waiting_for_human" if waiting else "running")
        deliverable = None
        if end and end.get("deliverable"):
            d = end["deliverable"]
            found = self.convs.message(cid, d["turn"], d["id"])
            deliverable = {**d, "content": found["content"] if found else ""}
        return response(200, {
            "id": cid, "scenario": meta["scenario"]["id"], "input": meta["input"], "limits": meta["limits"],
            "options": meta.get("options") or {}, "status": status, "end": end, "deliverable": deliverable,
            "waiting_for": {"role": waiting["role"], "since": waiting["since"]} if waiting else None,
            "running": self._running(cid) if status == "running" else None,
            "roles": [{"name": r["name"], "profile": r["profile"], "human": r["human"]}
                      for r in meta["scenario"]["roles"]],
            "messages": [self._message_view(m) for m in messages], "cursor": cursor,
        })

    def _running(self, cid: str) -> dict | None:
        """The SOP step paying an LLM call now: role, step, since (epoch seconds), and for a
        streamed call its tokens so far (as of `at`); or the turn waiting for the model's rate
        limit (`waiting`: "rate_limit", `until` its next try, `detail` saying so)."""
        p = self.convs.progress(cid)
        if not p:
            return None
        view = {k: p.get(k) for k in ("role", "function", "step", "since", "turn", "tokens", "at")}
        if p.get("waiting") == "rate_limit":
            view.update(waiting="rate_limit", until=p.get("until"), handed_back=p.get("handed_back"),
                        detail="waiting for the model's rate limit")
        return view

    @staticmethod
    def _message_view(m: dict) -> dict:
        inv = m.get("invocation") or {}
        return {"turn": m["turn"], "id": m["id"], "role": m["role"], "profile": m.get("profile", ""),
                "content": m["content"], "sent_from": m.get("sent_from", ""), "send_to": m.get("send_to", []),
                "cause_by": m.get("cause_by", ""),
                "function": m.get("function", ""), "duration_ms": inv.get("duration_ms"), "pid": inv.get("pid"),
                "start": inv.get("start"), "model": inv.get("model"), "prompt_tokens": inv.get("prompt_tokens", 0),
                "completion_tokens": inv.get("completion_tokens", 0), "cost_cny": inv.get("cost_cny", 0),
                "llm_ms": inv.get("llm_ms"), "citations": m.get("citations") or [], "files": m.get("changed") or [],
                **({"branch": m["branch"]["item"]} if isinstance((m.get("branch") or {}).get("item"), str) else {}),
                **({"missing": True} if m.get("missing") else {})}


def _branches(meta: dict) -> bool:
    """Whether a conversation's turns may hold several records committed at once: a scenario with
    a panel, or the software company writing its files at once (shared/sop/parallel.py)."""
    return any(isinstance(slot, list) for slot in meta["scenario"]["order"]) or branches.sop_at_once(meta)
