"""Fuzzing the gateway over HTTP on the local stack: requests drawn from the OpenAPI document's
shapes and from garbage, with and without valid credentials. Every answer must be a JSON
error or success below 500. Used by tests/functional/test_fuzz.py (a few hundred requests)
and bench/fuzz.py (10,000)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROLES = ["Proponent", "Opponent", "Judge", "Candidate", "nobody"]
SCENARIOS = ["debate", "interview", "newsroom", "digital_employees", "nope", ""]
json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
                           | st.text(max_size=50),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
                           max_leaves=12)
limits = st.dictionaries(st.sampled_from(["max_turns", "max_seconds", "max_tokens", "max_cost_cny", "max_invocations",
                                          "bogus"]),
                         st.integers(-5, 10**9) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5)
                         | st.booleans(), max_size=3)
start_body = st.fixed_dictionaries({"scenario": st.sampled_from(SCENARIOS) | st.text(max_size=20)},
                                   optional={"input": st.text(max_size=300) | json_values,
                                             "limits": limits | json_values,
                                             "rounds": st.integers(-3, 200) | json_values,
                                             "humans": st.lists(st.sampled_from(ROLES), max_size=3) | json_values,
                                             "extra": json_values})
human_body = st.fixed_dictionaries({}, optional={"role": st.sampled_from(ROLES) | json_values,
                                                 "content": st.text(max_size=200) | json_values})
garbage = st.binary(max_size=300) | st.just(b"[" * 5000) | st.just(b'{"a":' * 3000) | st.just(b"x" * 70000)


class Target:
    """The stack under test: base URL, API key, and one real conversation with its token."""

    def __init__(self, url: str, api_key: str):
        self.url, self.api_key = url, api_key
        self.statuses: dict[int, int] = {}
        self.cid, self.token = "", ""
        status, body = self.send("POST", "/conversations", json.dumps(
            {"scenario": "interview", "input": "fuzzing", "humans": ["Candidate"]}).encode(), self.api_key)
        assert status == 201, body
        self.cid, self.token = body["id"], body["token"]

    def send(self, method: str, path: str, body: bytes | None, secret: str | None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        self.statuses[status] = self.statuses.get(status, 0) + 1
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw[:200]}
        return status, parsed


def requests(target: Target):
    """A strategy of (method, path, body, secret) tuples."""
    cid = st.sampled_from([target.cid, "20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a", "..%2F..%2Fetc", "x" * 300, ""])
    secret = st.sampled_from([target.api_key, target.token, "wrong", None, ""])
    suffix = st.sampled_from(["", "/messages", "/cancel", "/invocations", "/usage", "/nope", "/../meta.json"])
    query = st.sampled_from(["", "?after=000001-0123456789abcdef", "?after=../x", "?limit=0", "?limit=abc",
                             "?limit=500", "?after=&limit=-1"])
    method = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"])
    as_bytes = st.builds(lambda v: json.dumps(v).encode(), start_body | human_body | json_values)
    conv = st.tuples(method, st.builds(lambda c, s, q: f"/conversations/{c}{s}{q}", cid, suffix, query),
                     as_bytes | garbage | st.none(), secret)
    start = st.tuples(st.just("POST"), st.just("/conversations"), as_bytes | garbage, secret)
    other = st.tuples(method, st.sampled_from(["/", "/scenarios", "/openapi.json", "/%00", "/scenarios/x"]),
                      as_bytes | garbage | st.none(), secret)
    return st.one_of(conv, start, other)


def fuzz(target: Target, n: int, seed: int = 1) -> dict[int, int]:
    """Send `n` fuzzed requests; raise AssertionError on any answer of 500 or more."""

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(requests(target))
    def one(req):
        method, path, body, secret = req
        status, parsed = target.send(method, path, body, secret)
        assert status < 500, (method, path, (body or b"")[:200], status, parsed)
        if status >= 400:
            assert parsed.get("error") and parsed.get("message"), (method, path, status, parsed)

    one()
    return dict(sorted(target.statuses.items()))
