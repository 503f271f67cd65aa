"""What starts, continues and stops a conversation: the writes the API and the pipeline make.

`ConversationService` validates a start request and commits the opening turn, commits a human
participant's turn, cancels, and keeps the scenario catalog (built in, and added over the API).
The gateway only speaks HTTP (routes, credentials, idempotency keys) and calls it; the pipeline
function calls it for request files. Like the gateway it imports no MetaGPT: the opening and a
human's message are plain JSON in the shape of MetaGPT's Message.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from typing import Callable

from shared import keys, records, scenarios
from shared.conversation import ConversationStore
from shared.errors import BadRequest, Conflict, NoSuchKey, ObjectExists, PayloadTooLarge
from shared.ids import derive_id, new_conversation_id, new_token, token_hash
from shared.routing import RECENT, decide, follow, role_spec, scene_with

USER_REQUIREMENT = "metagpt.actions.add_requirement.UserRequirement"
HUMAN_INPUT = "troupe.human"
START_FIELDS = {"scenario", "input", "limits", "humans", "rounds", "options"}


class ConversationService:
    def __init__(self, convs: ConversationStore, clock: Callable[[], float] = time.time,
                 role_functions: set[str] | None = None):
        self.convs, self.clock = convs, clock
        self.role_functions = role_functions or {"persona"}
        """Functions that may play roles in user scenarios (s.yaml's inbox-triggered ones)."""

    # -- start -------------------------------------------------------------------------------
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
        scenario = self.scenario(body["scenario"])
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("field 'input' must be a non-empty string", field="input")
        if len(text) > scenarios.MAX_INPUT_CHARS:
            raise PayloadTooLarge(f"field 'input' is longer than {scenarios.MAX_INPUT_CHARS} characters", field="input")
        options, option_limits = scenarios.resolve_options(scenario, body.get("options"))
        limits = scenarios.check_limits(body.get("limits"), "limits", {**scenario["limits"], **option_limits})
        scenario = self.with_humans(scenario, body.get("humans"))
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

    # -- a human participant's turn ------------------------------------------------------------
    def human_turn(self, cid: str, meta: dict, body) -> tuple[int, str, str]:
        """Commit a person's answer to the open wait: (turn, message id, role)."""
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
        return turn, mid, role

    # -- cancel --------------------------------------------------------------------------------
    def cancel(self, cid: str) -> None:
        record = self.convs.end(cid, "cancelled", "cancelled by its owner")
        if record.get("status") != "cancelled" or record.get("reason") != "cancelled by its owner":
            raise Conflict(f"the conversation had already ended ({record['status']})", status=record["status"])

    # -- the scenario catalog ------------------------------------------------------------------
    def _stored(self, sid: str) -> dict | None:
        try:
            return json.loads(self.convs.store.get(keys.user_scenario(sid)))
        except NoSuchKey:
            return None

    def scenario(self, sid) -> dict:
        if isinstance(sid, str) and sid not in scenarios.builtin() and re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$", sid):
            found = self._stored(sid)
            if found:
                return found
        return scenarios.get(sid)

    def all_scenarios(self) -> dict:
        out = dict(scenarios.builtin())
        for info in self.convs.store.iter(keys.SCENARIOS):
            try:
                sc = json.loads(self.convs.store.get(info.key))
            except (NoSuchKey, ValueError):
                continue
            out.setdefault(sc["id"], sc)
        return out

    def add_scenario(self, data) -> dict:
        """A user's scenario, validated, stored create-only."""
        sc = scenarios.validate_scenario(data, "scenario", functions=self.role_functions)
        if sc["id"] in scenarios.builtin():
            raise Conflict(f"scenario {sc['id']!r} is built in; choose another id", field="id")
        try:
            self.convs.store.put(keys.user_scenario(sc["id"]), json.dumps(sc, ensure_ascii=False).encode(),
                                 create_only=True)
        except ObjectExists:
            raise Conflict(f"scenario {sc['id']!r} already exists", field="id") from None
        return sc

    @staticmethod
    def with_humans(scenario: dict, humans) -> dict:
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
        in_panel = [h for h in humans if any(isinstance(slot, list) and h in slot for slot in scenario["order"])]
        if in_panel:
            raise BadRequest(f"field 'humans': {in_panel[0]} answers in a panel, with other roles at once, which a "
                             f"person cannot", field="humans")
        return {**scenario, "roles": [{**r, "human": r["human"] or r["name"] in humans} for r in scenario["roles"]]}
