"""Whole conversations on the local runtime: gateway and persona in their own worker processes,
talking only through the disk store's OSS events."""

import json
import os
import shutil
import time
import urllib.request

import pytest
import yaml

from infra.local.runtime import LocalRuntime
from shared.conversation import ConversationStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


TOKENS = {}


def _http(rt, method, path, body=None):
    """Call the gateway with the API key (to start) or the conversation's token."""
    data = json.dumps(body).encode() if body is not None else None
    parts = path.split("?")[0].strip("/").split("/")
    secret = rt.api_key if len(parts) == 1 else TOKENS.get(parts[1], "")
    req = urllib.request.Request(rt.http_url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.loads(resp.read())
            if resp.status == 201 and "token" in body:
                TOKENS[body["id"]] = body["token"]
            return resp.status, body
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_end(rt, cid, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, body = _http(rt, "GET", f"/conversations/{cid}")
        if body["status"] != "running":
            return body
        time.sleep(0.1)
    raise AssertionError(f"conversation {cid} did not end in {timeout}s")


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    with LocalRuntime(str(tmp_path_factory.mktemp("data")), os.path.join(ROOT, "s.yaml"),
                      retry_delay=0.05) as runtime:
        yield runtime


def test_debate_turns_are_separate_persona_invocations(rt):
    # GIVEN a debate started over the gateway's HTTP trigger
    status, created = _http(rt, "POST", "/conversations",
                            {"scenario": "debate", "input": "Should cities ban cars?", "limits": {"max_turns": 7}})
    assert status == 201
    # WHEN it runs to its end
    body = _wait_end(rt, created["id"])
    # THEN the characters alternated for exactly 6 turns and the conversation completed
    assert body["status"] == "completed"
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user"] + ["Proponent", "Opponent"] * 3 + ["Judge"]
    # AND every turn was its own persona invocation, in a process other than the gateway's
    _, inv = _http(rt, "GET", f"/conversations/{created['id']}/invocations")
    rows = inv["invocations"]
    gateway = [r for r in rows if r["function"] == "gateway"]
    turns = [r for r in rows if r["outcome"] == "committed"]
    assert len(gateway) == 1 and len(turns) == 7
    assert all(r["function"] == "persona" for r in turns)
    assert len({r["request_id"] for r in turns}) == 7
    assert gateway[0]["pid"] not in {r["pid"] for r in turns}
    assert os.getpid() not in {r["pid"] for r in rows}


def test_same_event_three_times_adds_no_turn(rt):
    # GIVEN a finished 3-turn debate and the OSS event of its first delivery
    _, created = _http(rt, "POST", "/conversations", {"scenario": "debate", "input": "Tea or coffee?",
                                                      "limits": {"max_turns": 3}})
    cid = created["id"]
    before = _wait_end(rt, cid)["messages"]
    convs = ConversationStore(rt.store)
    first_delivery = next(rt.store.iter(f"inbox/persona/{cid}/"))
    from infra.local.events import make_oss_event

    event = json.dumps(make_oss_event("troupe-local", "cn-hangzhou", first_delivery.key,
                                      first_delivery.size, first_delivery.etag)).encode()
    # WHEN that event is delivered three more times to persona
    for _ in range(3):
        result = rt.invoke("persona", event)
        assert result.ok, result.error_message
    rt.wait_idle(30)
    # THEN the transcript is unchanged
    after = list(convs.iter_messages(cid))
    assert [m["id"] for m in after] == [m["id"] for m in before]


def test_bad_requests_over_http_are_4xx_json(rt):
    for body, status in [({"scenario": "debate"}, 400), ({"scenario": "nope", "input": "x"}, 400),
                         ({"scenario": "debate", "input": "x", "limits": {"max_turns": -1}}, 400)]:
        got, err = _http(rt, "POST", "/conversations", body)
        assert got == status and err["message"]
    got, err = _http(rt, "GET", "/conversations/..%2F..%2Fmeta")
    assert got == 400


@pytest.mark.parametrize("fail_at", ["before", "after"])
def test_handler_that_raises_once_is_retried_and_the_debate_completes(tmp_path, fail_at):
    # GIVEN an s.yaml whose persona raises on each delivery's first attempt (before or after
    # doing the turn's work), with FC's async retries configured
    code = tmp_path / "flaky"
    shutil.copytree(os.path.join(ROOT, "tests/functional/flaky_persona"), code)
    shutil.copy(os.path.join(ROOT, "functions/persona/index.py"), code / "index_real.py")
    with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    props = doc["resources"]["persona"]["props"]
    props["code"] = str(code)
    props["environmentVariables"]["TROUPE_TEST_FAIL_AT"] = fail_at
    for name in ("gateway", "deadletter"):
        doc["resources"][name]["props"]["code"] = os.path.join(ROOT, "functions", name)
    s_yaml = tmp_path / "s.yaml"
    s_yaml.write_text(yaml.safe_dump(doc))
    with LocalRuntime(str(tmp_path / "data"), str(s_yaml), retry_delay=0.05, max_instances=1) as rt:
        # WHEN a debate runs
        _, created = _http(rt, "POST", "/conversations", {"scenario": "debate", "input": "Remote work?",
                                                          "limits": {"max_turns": 4}})
        body = _wait_end(rt, created["id"])
        # THEN it completed with every turn exactly once, and each turn paid one LLM call
        assert body["status"] == "completed"
        assert [m["turn"] for m in body["messages"]] == [0, 1, 2, 3, 4]
        failures = [r for r in rt.invocation_log if r.function_id == "persona" and r.outcome != "succeeded"]
        assert len(failures) >= 4
        journal = list(rt.store.iter(f"conversations/{created['id']}/journal/"))
        assert len(journal) == 4


CATALOG = ["debate", "interview", "customer_service", "newsroom", "digital_employees", "classroom"]


def test_every_catalog_scenario_ends_with_its_deliverable_on_the_local_runtime(rt):
    # GIVEN every built-in scenario started at once over HTTP
    started = {}
    for sid in CATALOG:
        status, created = _http(rt, "POST", "/conversations", {"scenario": sid, "input": "开发一个记账APP"})
        assert status == 201
        started[sid] = created["id"]
    # WHEN they run, each turn its own invocation of persona (and of director for selector flows)
    for sid, cid in started.items():
        body = _wait_end(rt, cid)
        # THEN each completed and its deliverable is present, written by its closing role
        assert body["status"] == "completed", (sid, body["end"])
        assert body["deliverable"] and body["deliverable"]["content"], sid
        assert body["messages"][-1]["role"] == body["deliverable"]["role"]
    _, inv = _http(rt, "GET", f"/conversations/{started['digital_employees']}/invocations")
    routed = [r for r in inv["invocations"] if r["function"] == "director"]
    assert routed and all(r["outcome"] == "routed" for r in routed)


def test_a_human_participant_over_http(rt):
    # GIVEN an interview whose candidate is a person
    _, created = _http(rt, "POST", "/conversations", {"scenario": "interview", "input": "Data engineer",
                                                      "humans": ["Candidate"]})
    cid = created["id"]
    deadline = time.time() + 30
    while _http(rt, "GET", f"/conversations/{cid}")[1]["status"] != "waiting_for_human":
        assert time.time() < deadline
        time.sleep(0.1)
    # WHEN the person answers
    status, _ = _http(rt, "POST", f"/conversations/{cid}/messages", {"role": "Candidate", "content": "I ran Spark jobs."})
    assert status == 201
    # THEN the interviewer answers them in a new invocation, and the conversation waits again
    deadline = time.time() + 30
    while True:
        body = _http(rt, "GET", f"/conversations/{cid}")[1]
        if body["status"] == "waiting_for_human" and len(body["messages"]) == 4:
            break
        assert time.time() < deadline
        time.sleep(0.1)
    assert [m["role"] for m in body["messages"]] == ["user", "Interviewer", "Candidate", "Interviewer"]
    assert _http(rt, "POST", f"/conversations/{cid}/cancel")[1]["status"] == "cancelled"
