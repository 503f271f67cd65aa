"""Many debates at once on a rate-limited model: the load test (tests/functional/test_load.py, at a
small scale) and `make bench-load` (bench/load.py: 100 debates on 60 requests a minute).

The local runtime runs s.yaml's functions on MetaGPT's DashScope provider, pointed at an endpoint
that speaks DashScope's wire and enforces a rate limit per second (tests/llm_endpoints.py, `rpm`),
answering 429 with DashScope's throttling body. `LoadRun.run` starts the debates at once, waits
for their ends and returns the checks and the figures:

  checks   conversations not completed (and their ends), turns lost or duplicated (a debate's
           turns are 1..N, each once, N its turn limit), LLM calls paid more than once (the
           endpoint's answered requests against the journal's entries), dead letters
  figures  completed turns per second against the limit, p50/p95 conversation time, calls the
           rate limit turned away, turns handed back (shared/handback.py) and the time waited
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

from shared import keys
from shared.conversation import ConversationStore


class ApiClient:
    """The runtime's HTTP API with its key, and each conversation's own token once started."""

    def __init__(self, rt):
        self.rt = rt
        self.tokens: dict[str, str] = {}

    def http(self, method: str, path: str, body=None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        parts = path.split("?")[0].strip("/").split("/")
        secret = self.rt.api_key if len(parts) == 1 else self.tokens.get(parts[1], "")
        req = urllib.request.Request(self.rt.http_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {secret}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                out = json.loads(resp.read())
                if resp.status == 201 and "token" in out:
                    self.tokens[out["id"]] = out["token"]
                return resp.status, out
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


def _pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else None


class LoadRun:
    """A local runtime whose role functions reach `endpoint` (a DashScopeEndpoint with `rpm`)."""

    def __init__(self, workdir: str, endpoint, *, instances: int = 8, throttle_wait_s: float | None = None):
        from infra.local.runtime import LocalRuntime

        self.endpoint = endpoint
        self.data = os.path.join(os.path.abspath(workdir), "data")
        env = {"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": endpoint.key,
               "DASHSCOPE_HTTP_BASE_URL": endpoint.base_url, "TROUPE_LLM_MODEL": "qwen-turbo"}
        if throttle_wait_s is not None:
            env["TROUPE_THROTTLE_WAIT_S"] = str(throttle_wait_s)
        self.rt = LocalRuntime(self.data, max_instances=instances, scale_out_after=0.0, extra_env=env)
        self.api = ApiClient(self.rt)

    def __enter__(self) -> "LoadRun":
        self.rt.start()
        return self

    def __exit__(self, *exc) -> None:
        self.rt.stop(timeout=30)

    def run(self, debates: int, turns: int, timeout: float) -> dict:
        """Start `debates` debates of `turns` turns at once; their checks and figures."""
        t0 = time.time()
        cids = []
        for i in range(debates):
            status, body = self.api.http("POST", "/conversations", {
                "scenario": "debate", "input": f"Should cities ban cars? (load {i})",
                "limits": {"max_turns": turns, "max_seconds": max(60, int(timeout))}})
            if status != 201:
                raise RuntimeError(f"could not start debate {i}: {status} {body}")
            cids.append(body["id"])
        started = time.time()
        deadline = t0 + timeout
        left = list(cids)
        while left and time.time() < deadline:
            left = [c for c in left if self.rt.store.head(keys.end(c)) is None]
            if left:
                time.sleep(0.2)
        self.rt.wait_idle(30)
        return self.report(cids, turns, t0, started, time.time())

    def report(self, cids: list[str], turns: int, t0: float, started: float, done: float) -> dict:
        convs = ConversationStore(self.rt.store)
        ends, times, lost, duplicated, journal, paid, throttled, handed_back, waited_ms = {}, [], 0, 0, 0, 0, 0, 0, 0.0
        last_commit = t0
        for cid in cids:
            end = convs.get_end(cid)
            ends[cid] = (end or {}).get("status", "running")
            if end:
                times.append(end["at"] - convs.meta(cid)["created"])
            committed = [m["turn"] for m in convs.iter_messages(cid) if m["turn"] > 0]
            lost += len(set(range(1, turns + 1)) - set(committed))
            duplicated += len(committed) - len(set(committed))
            for m in convs.iter_messages(cid):
                if m["turn"] > 0:
                    last_commit = max(last_commit, m["invocation"]["start"] + m["invocation"]["duration_ms"] / 1000)
            journal += sum(1 for _ in self.rt.store.iter(keys.conversation(cid) + "journal/"))
            for rec in convs.invocations(cid):
                paid += rec.get("llm_paid", 0)
                throttled += rec.get("throttled", 0)
                waited_ms += rec.get("waited_ms", 0)
                handed_back += rec.get("outcome") == "handed_back"
        answered = len(self.endpoint.replies())
        letters = os.path.join(self.rt.runtime_dir, "deadletters")
        dead = sum(len(files) for _, _, files in os.walk(letters)) if os.path.isdir(letters) else 0
        completed_turns = sum(1 for cid in cids for m in convs.iter_messages(cid) if m["turn"] > 0)
        span = max(1e-9, last_commit - started)
        allowed = self.endpoint.per_second
        return {
            "debates": len(cids), "turns_each": turns,
            "not_completed": sorted(f"{c}: {s}" for c, s in ends.items() if s != "completed"),
            "lost": lost, "duplicated": duplicated,
            "journal_entries": journal, "answered_requests": answered, "paid_in_records": paid,
            "paid_twice": max(0, answered - journal), "dead_letters": dead,
            "throttled_requests": self.endpoint.throttled, "throttled_in_records": throttled,
            "handed_back": handed_back, "waited_s": round(waited_ms / 1000, 1),
            "turns": completed_turns, "span_s": round(span, 1), "wall_s": round(done - t0, 1),
            "turns_per_s": round(completed_turns / span, 3), "allowed_per_s": allowed,
            "share_of_limit": round(completed_turns / span / allowed, 3),
            "p50_s": _pct(times, 0.5), "p95_s": _pct(times, 0.95),
        }


def format_report(r: dict) -> str:
    lines = [
        f"debates {r['debates']} × {r['turns_each']} turns: {r['turns']} turns committed in {r['span_s']} s "
        f"(wall {r['wall_s']} s)",
        f"  rate: {r['turns_per_s']} turns/s against {r['allowed_per_s']} allowed = {r['share_of_limit']:.1%} of the limit",
        f"  conversation time: p50 {r['p50_s']} s, p95 {r['p95_s']} s",
        f"  throttled: {r['throttled_requests']} requests turned away (records: {r['throttled_in_records']}), "
        f"{r['handed_back']} turns handed back, {r['waited_s']} s waited inside invocations",
        f"  checks: not completed {len(r['not_completed'])}, lost {r['lost']}, duplicated {r['duplicated']}, "
        f"paid twice {r['paid_twice']} (answered {r['answered_requests']}, journaled {r['journal_entries']}, "
        f"in records {r['paid_in_records']}), dead letters {r['dead_letters']}",
    ]
    return "\n".join(lines)
