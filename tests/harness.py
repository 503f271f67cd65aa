"""In-process test client: make an OSS event, invoke a function by name — without processes.

The whole-system tests run on the local runtime (tests/functional); this harness drives the
same handlers' core (Gateway, RoleRunner) over a DiskStore so invariants can be tested fast
and with precise control over event delivery (duplicates, reordering, failures).
"""

from __future__ import annotations

import json
import os

from shared.conversation import ConversationStore
from shared.events import make_http_event
from shared.gateway import Gateway
from shared.runner import RoleRunner
from shared.store.disk import DiskStore


class Harness:
    def __init__(self, root: str, llm_factory=None):
        from shared.llm.fake import ScriptedLLM

        self.store = DiskStore(root, emit_events=True)
        self.convs = ConversationStore(self.store)
        self.gateway = Gateway(self.convs)
        self.llm_factory = llm_factory or (lambda model=None: ScriptedLLM())
        self.runners: dict[str, RoleRunner] = {}

    def http(self, method: str, path: str, body=None, query=None) -> tuple[int, dict]:
        raw = body if isinstance(body, (bytes, str)) else (json.dumps(body) if body is not None else "")
        raw = raw.encode() if isinstance(raw, str) else raw
        resp = self.gateway.handle(make_http_event(method, path, body=raw, query=query or {}))
        return resp["statusCode"], json.loads(resp["body"])

    def start(self, scenario="debate", text="Should cities ban cars?", **limits) -> str:
        status, body = self.http("POST", "/conversations", {"scenario": scenario, "input": text,
                                                            **({"limits": limits} if limits else {})})
        assert status == 201, body
        return body["id"]

    def runner(self, function: str) -> RoleRunner:
        if function not in self.runners:
            self.runners[function] = RoleRunner(self.convs, function, self.llm_factory)
        return self.runners[function]

    def pending(self) -> list[tuple[str, bytes]]:
        """Spooled events (name, bytes), oldest first, removed from the spool."""
        out = []
        for name in sorted(os.listdir(self.store.events_dir)):
            path = os.path.join(self.store.events_dir, name)
            with open(path, "rb") as f:
                out.append((name, f.read()))
            os.unlink(path)
        return out

    def pending_inbox(self) -> list[bytes]:
        """Spooled events for keys under inbox/ (those that fire role functions)."""
        return [e for _, e in self.pending() if json.loads(e)["events"][0]["oss"]["object"]["key"].startswith("inbox/")]

    def deliver(self, event: bytes) -> list[dict]:
        key = json.loads(event)["events"][0]["oss"]["object"]["key"]
        if not key.startswith("inbox/"):
            return []
        function = key.split("/")[1]
        return self.runner(function).handle_event(event)

    def pump(self, max_rounds: int = 10_000, copies: int = 1) -> int:
        """Deliver spooled events (each `copies` times) until none are left. Returns deliveries."""
        n = 0
        for _ in range(max_rounds):
            batch = self.pending()
            if not batch:
                return n
            for _name, event in batch:
                for _ in range(copies):
                    self.deliver(event)
                    n += 1
        raise AssertionError("events still pending after max_rounds")

    def transcript(self, cid: str) -> list[dict]:
        return list(self.convs.iter_messages(cid))
