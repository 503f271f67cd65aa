"""The REST API behind the gateway's HTTP trigger. Pure: an HttpEvent in, an FC response out.

The routes (the web page, /openapi.json, the scenario catalog, conversations and their
messages, bill and artifacts, knowledge bases) are declared once, in shared/routes.py: this
class dispatches by that table and /openapi.json is built from it.

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

from shared import artifacts, keys, openapi, records, routes, scenarios, web
from shared.billing import bill_fields, usage_report
from shared.conversation import ConversationStore
from shared.errors import (BadRequest, Conflict, Forbidden, NoSuchKey, NotFound, ObjectExists,
                           PayloadTooLarge,
                           ServiceUnavailable, TroupeError, Unauthorized)
from shared.events import HttpEvent
from shared.routing import RECENT, decide, follow, role_spec, scene_with
from shared.knowledge import api as knowledge_api
from shared.ids import check_conversation_id, derive_id, new_conversation_id, new_token, token_hash

log = logging.getLogger("troupe.gateway")

MAX_BODY = 64 * 1024
MAX_SCENARIO_BODY = 32 * 1024
USER_REQUIREMENT = "metagpt.actions.add_requirement.UserRequirement"
HUMAN_INPUT = "troupe.human"
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
        self.role_functions = role_functions or {"persona"}
        """Functions that may play roles in user scenarios (s.yaml's inbox-triggered ones)."""

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
        return response(200, {"scenarios": [self._scenario_view(s) for s in self._all_scenarios().values()]})

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
            meta, token = self.start(body, now)
        else:
            cid, now, token = self._idempotent(key, req.body)
            meta, _ = self.start(body, now, cid=cid, token=token)
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
        record_key = f"idempotency/{name}.json"
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

    def start(self, body, now: float, cid: str | None = None, origin: dict | None = None,
              token: str | None = None) -> tuple[dict, str]:
        """Validate a start request (the body of POST /conversations, or a request file) and
        start the conversation: (its meta, its access token). With `cid` given, a second start
        of the same id (a duplicated event) is no error: it re-asserts the opening delivery."""
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        unknown = set(body) - {"scenario", "input", "limits", "humans", "rounds", "options"}
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))[:200]}", field=sorted(unknown)[0])
        if "scenario" not in body:
            raise BadRequest("field 'scenario' is required", field="scenario")
        scenario = self._scenario(body["scenario"])
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("field 'input' must be a non-empty string", field="input")
        if len(text) > scenarios.MAX_INPUT_CHARS:
            raise PayloadTooLarge(f"field 'input' is longer than {scenarios.MAX_INPUT_CHARS} characters", field="input")
        options, option_limits = scenarios.resolve_options(scenario, body.get("options"))
        limits = scenarios.check_limits(body.get("limits"), "limits", {**scenario["limits"], **option_limits})
        scenario = self._with_humans(scenario, body.get("humans"))
        if "rounds" in body:
            rounds = body["rounds"]
            if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 100:
                raise BadRequest("field 'rounds' must be an integer between 1 and 100", field="rounds")
            scenario = {**scenario, "rounds": rounds}

        cid = cid or new_conversation_id(now)
        token = token or new_token()
        meta = {"id": cid, "scenario": scenario, "input": text, "limits": limits, "options": options,
                "created": now, "token_sha256": token_hash(token), **({"origin": origin} if origin else {})}
        try:
            self.convs.create(cid, meta)
        except ObjectExists:
            # started before: only the delivery is re-asserted (and a token derived for this id is
            # still the conversation's)
            meta = self.convs.meta(cid)
            token = token if token and hmac.compare_digest(token_hash(token), meta.get("token_sha256", "")) else ""
        opening_id = derive_id(cid, "input")
        nxt = decide(meta, 0, "user", text, False)
        message = {"id": opening_id, "content": text, "instruct_content": None, "role": "user",
                   "cause_by": USER_REQUIREMENT, "sent_from": "user", "send_to": [nxt["role"] or nxt["kind"]]}
        record = records.turn_record(turn=0, id=opening_id, role="user", profile="user", function="gateway",
                                     content=text, message=message, next=nxt, sent_from="user",
                                     send_to=message["send_to"], cause_by=USER_REQUIREMENT, recent=[])
        self.convs.commit(cid, 0, opening_id, record)
        follow(self.convs, cid, meta, record)
        return meta, token

    def _record(self, cid: str, req: HttpEvent, start: float, outcome: str, turn: int, role: str) -> None:
        """This invocation's record in the conversation (it wrote a turn there), with its compute."""
        duration = round((self.clock() - start) * 1000, 2)
        self.convs.record_invocation(cid, records.invocation(
            function="gateway", request_id=self.request_id or req.request_id, start=start, outcome=outcome,
            duration_ms=duration, pid=os.getpid(), turn=turn, role=role,
            **bill_fields(None, 0, 0, self.memory_mb, duration)))

    # -- scenarios: built in, and added by users -------------------------------------------
    USER_PREFIX = keys.SCENARIOS

    def _stored(self, sid: str) -> dict | None:
        try:
            return json.loads(self.convs.store.get(keys.user_scenario(sid)))
        except NoSuchKey:
            return None

    def _scenario(self, sid) -> dict:
        if isinstance(sid, str) and sid not in scenarios.builtin() and re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$", sid):
            found = self._stored(sid)
            if found:
                return found
        return scenarios.get(sid)

    def _all_scenarios(self) -> dict:
        out = dict(scenarios.builtin())
        for info in self.convs.store.iter(self.USER_PREFIX):
            try:
                sc = json.loads(self.convs.store.get(info.key))
            except (NoSuchKey, ValueError):
                continue
            out.setdefault(sc["id"], sc)
        return out

    def add_scenario(self, req: HttpEvent) -> dict:
        """POST /scenarios: a user's scenario as JSON, validated, stored create-only."""
        if len(req.body) > MAX_SCENARIO_BODY:
            raise PayloadTooLarge(f"a scenario is larger than {MAX_SCENARIO_BODY} bytes")
        data = req.json(max_bytes=MAX_SCENARIO_BODY)
        sc = scenarios.validate_scenario(data, "scenario", functions=self.role_functions)
        if sc["id"] in scenarios.builtin():
            raise Conflict(f"scenario {sc['id']!r} is built in; choose another id", field="id")
        try:
            self.convs.store.put(keys.user_scenario(sc["id"]), json.dumps(sc, ensure_ascii=False).encode(),
                                 create_only=True)
        except ObjectExists:
            raise Conflict(f"scenario {sc['id']!r} already exists", field="id") from None
        return response(201, self._scenario_view(sc))

    @staticmethod
    def _with_humans(scenario: dict, humans) -> dict:
        """The scenario with the named roles played by people (`"humans": ["Candidate"]`)."""
        if humans is None:
            return scenario
        names = {r["name"] for r in scenario["roles"]}
        if not isinstance(humans, list) or not all(isinstance(h, str) for h in humans) or len(humans) > len(names):
            raise BadRequest("field 'humans' must be a list of role names", field="humans")
        unknown = [h for h in humans if h not in names]
        if unknown:
            raise BadRequest(f"field 'humans' names no role of this scenario: {', '.join(unknown)[:100]} "
                             f"(roles: {', '.join(sorted(names))})", field="humans")
        return {**scenario, "roles": [{**r, "human": r["human"] or r["name"] in humans} for r in scenario["roles"]]}

    # -- POST /conversations/{id}/messages: a human participant's turn ------------------------
    def human_message(self, req: HttpEvent, cid: str, meta: dict) -> dict:
        if len(req.body) > MAX_BODY:
            raise PayloadTooLarge(f"request body is larger than {MAX_BODY} bytes")
        body = req.json()
        if not isinstance(body, dict) or set(body) - {"role", "content"}:
            raise BadRequest("body must be a JSON object with 'role' and 'content'")
        content = body.get("content")
        if not isinstance(content, str) or not content.strip():
            raise BadRequest("field 'content' must be a non-empty string", field="content")
        if len(content) > scenarios.MAX_INPUT_CHARS:
            raise PayloadTooLarge(f"field 'content' is longer than {scenarios.MAX_INPUT_CHARS} characters", field="content")
        end = self.convs.get_end(cid)
        if end:
            raise Conflict(f"the conversation has ended ({end['status']})", status=end["status"])
        waiting = self.convs.waiting(cid)
        if waiting is None:
            raise Conflict("the conversation is not waiting for a human message")
        if body.get("role") != waiting["role"]:
            raise Conflict(f"the conversation waits for {waiting['role']!r}, not {str(body.get('role'))[:40]!r}",
                           field="role")
        now = self.clock()
        turn = waiting["turn"] + 1
        mid = self.convs.human_message_id(cid, waiting["turn"])
        role = waiting["role"]
        nxt = decide(meta, turn, role, content, bool(waiting.get("closing")))
        message = {"id": mid, "content": content, "instruct_content": None, "role": role,
                   "cause_by": HUMAN_INPUT, "sent_from": role, "send_to": [nxt["role"] or nxt["kind"]]}
        spec = role_spec(meta, role)
        record = records.turn_record(
            turn=turn, id=mid, role=role, profile=spec["profile"], function="human", content=content, message=message,
            next=nxt, sent_from=role, send_to=message["send_to"], cause_by=HUMAN_INPUT,
            reply_to=waiting["message"].get("id"), closing=bool(waiting.get("closing")), spent=waiting.get("spent"),
            recent=((waiting.get("recent") or []) + [role])[-RECENT:],
            scene=scene_with(waiting.get("scene"), role, content), hops=waiting.get("hops", 0))
        if not self.convs.commit(cid, turn, mid, record):
            raise Conflict("this wait has already been answered")
        follow(self.convs, cid, meta, record)
        self._record(cid, req, now, "human_message", turn, role)
        return response(201, {"id": cid, "turn": turn, "message_id": mid})

    # -- POST /conversations/{id}/cancel ---------------------------------------------------
    def cancel(self, req: HttpEvent, cid: str, meta: dict) -> dict:
        record = self.convs.end(cid, "cancelled", "cancelled by its owner")
        if record.get("status") != "cancelled" or record.get("reason") != "cancelled by its owner":
            raise Conflict(f"the conversation had already ended ({record['status']})", status=record["status"])
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
        streamed call its tokens so far (as of `at`)."""
        p = self.convs.progress(cid)
        return {k: p.get(k) for k in ("role", "function", "step", "since", "turn", "tokens", "at")} if p else None

    @staticmethod
    def _message_view(m: dict) -> dict:
        inv = m.get("invocation") or {}
        return {"turn": m["turn"], "id": m["id"], "role": m["role"], "profile": m.get("profile", ""),
                "content": m["content"], "sent_from": m.get("sent_from", ""), "send_to": m.get("send_to", []),
                "cause_by": m.get("cause_by", ""),
                "function": m.get("function", ""), "duration_ms": inv.get("duration_ms"), "pid": inv.get("pid"),
                "start": inv.get("start"), "model": inv.get("model"), "prompt_tokens": inv.get("prompt_tokens", 0),
                "completion_tokens": inv.get("completion_tokens", 0), "cost_cny": inv.get("cost_cny", 0),
                "llm_ms": inv.get("llm_ms"), "citations": m.get("citations") or [], "files": m.get("changed") or []}
