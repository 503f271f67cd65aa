"""In-process test client: make an OSS event, invoke a function by name — without processes.

The whole-system tests run on the local runtime (tests/functional); this harness drives the
same handlers' core (Gateway, RoleRunner) over a DiskStore so invariants can be tested fast
and with precise control over event delivery (duplicates, reordering, failures).
"""

from __future__ import annotations

import functools
import json
import os
import threading

import infra.testing
from infra.local import spec as specs
from infra.local.spool import local_store
from shared.conversation import ConversationStore
from infra.local.events import make_http_event
from shared.gateway import Gateway
from shared.runner import RoleRunner

API_KEY = "test-deployment-key"

infra.testing.install()  # TROUPE_LLM=fake: the scripted LLM, as in the local runtime's workers


#: the functions whose index.py runs MetaGPT's software-company roles (shared.sop.handler)
SOP_FUNCTIONS = ("product_manager", "architect", "project_manager", "engineer", "qa_engineer")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.lru_cache(maxsize=1)
def s_yaml_functions() -> tuple[specs.FunctionSpec, ...]:
    """The functions s.yaml declares, read as the local runtime reads them (infra/local/spec)."""
    return tuple(specs.load(os.path.join(ROOT, "s.yaml")))


#: what a function's handler runs, recognised in its index.py: the core the harness calls
#: in-process in its place (with the harness's store and LLM)
CORES = (("sop.handler(", "sop"), ("shared.director", "director"), ("RoleRunner(", "role"),
         ("Pipeline(", "pipeline"), ("shared.knowledge.indexer", "indexer"))


@functools.lru_cache(maxsize=None)
def _core_in(path: str) -> str | None:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    return next((core for marker, core in CORES if marker in source), None)


def core_of(spec: specs.FunctionSpec) -> str | None:
    return _core_in(os.path.join(spec.code, spec.handler_module + ".py"))


class Harness:
    def __init__(self, root: str, llm_factory=None):
        from infra.testing.scripted_llm import ScriptedLLM

        self.store = local_store(root)
        self.convs = ConversationStore(self.store)
        self.gateway = Gateway(self.convs, api_key=API_KEY)
        self.tokens: dict[str, str] = {}
        self.llm_factory = llm_factory or (lambda model=None: ScriptedLLM())
        self.runners: dict[str, RoleRunner] = {}

    def http(self, method: str, path: str, body=None, query=None, headers=None, auth=True) -> tuple[int, dict]:
        """Call the gateway. With `auth`, send the API key (to start) or the conversation's token."""
        raw = body if isinstance(body, (bytes, str)) else (json.dumps(body) if body is not None else "")
        raw = raw.encode() if isinstance(raw, str) else raw
        headers = dict(headers or {})
        if auth and "Authorization" not in headers:
            parts = path.strip("/").split("/")
            if parts[0] in ("conversations", "scenarios") and len(parts) == 1:
                headers["Authorization"] = f"Bearer {API_KEY}"
            elif parts[0] == "conversations" and parts[1] in self.tokens:
                headers["Authorization"] = f"Bearer {self.tokens[parts[1]]}"
        resp = self.gateway.handle(make_http_event(method, path, body=raw, query=query or {}, headers=headers))
        body = json.loads(resp["body"])
        if resp["statusCode"] == 201 and "token" in body:
            self.tokens[body["id"]] = body["token"]
        return resp["statusCode"], body

    def start(self, scenario="debate", text="Should cities ban cars?", rounds=None, options=None, **limits) -> str:
        status, body = self.http("POST", "/conversations", {"scenario": scenario, "input": text,
                                                            **({"rounds": rounds} if rounds else {}),
                                                            **({"options": options} if options else {}),
                                                            **({"limits": limits} if limits else {})})
        assert status == 201, body
        return body["id"]

    def runner(self, function: str):
        """The core of a role function, by its id in s.yaml (Director, or RoleRunner with its strategy)."""
        if function not in self.runners:
            spec = next((f for f in s_yaml_functions() if f.id == function), None)
            core = core_of(spec) if spec is not None else "role"
            if core == "director":
                from shared.director import Director

                self.runners[function] = Director(self.convs, self.llm_factory)
            elif core == "sop":
                from shared.sop.runner import sop_runner

                self.runners[function] = sop_runner(self.convs, function, self.llm_factory)
            else:
                self.runners[function] = RoleRunner(self.convs, function, self.llm_factory)
        return self.runners[function]

    def pending(self) -> list[tuple[str, bytes]]:
        """Spooled events (name, bytes), oldest first, removed from the spool."""
        out = []
        for name in sorted(os.listdir(self.store.spool.events_dir)):
            path = os.path.join(self.store.spool.events_dir, name)
            with open(path, "rb") as f:
                out.append((name, f.read()))
            os.unlink(path)
        return out

    def pending_inbox(self) -> list[bytes]:
        """Spooled events for keys under inbox/ (those that fire role functions)."""
        return [e for _, e in self.pending_deliveries()]

    def pending_deliveries(self, function: str | None = None) -> list[tuple[str, bytes]]:
        """Spooled events for keys under inbox/ (under `function`'s inbox, if given), with their
        keys: (key, event); every spooled event is taken from the spool."""
        prefix = f"inbox/{function}/" if function else "inbox/"
        keyed = [(json.loads(e)["events"][0]["oss"]["object"]["key"], e) for _, e in self.pending()]
        return [(k, e) for k, e in keyed if k.startswith(prefix)]

    def deliver_racing(self, events: list[bytes], copies: int = 3) -> list[Exception]:
        """Every event `copies` times, all at once in threads; the errors they raised."""
        errors: list[Exception] = []

        def run(event: bytes) -> None:
            try:
                self.deliver(event)
            except Exception as e:  # noqa: BLE001 - returned to the test
                errors.append(e)

        threads = [threading.Thread(target=run, args=(e,)) for e in events for _ in range(copies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return errors

    def deliver(self, event: bytes) -> list[dict]:
        """Run what s.yaml's OSS triggers run for this event, in-process, in s.yaml's order."""
        record = json.loads(event)["events"][0]
        out: list[dict] = []
        for spec in specs.functions_for(record, list(s_yaml_functions())):
            core = core_of(spec)
            if core == "pipeline":
                from shared.pipeline import Pipeline

                out += Pipeline(self.convs).handle_event(event)
            elif core == "indexer":
                from shared.knowledge import handle_event

                out += handle_event(self.store, event)
            elif core in ("sop", "director", "role"):
                out += self.runner(spec.id).handle_event(event)
        return out

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
