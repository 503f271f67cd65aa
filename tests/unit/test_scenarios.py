"""The scenario engine: the catalog, flows, the director, human participants, cancel, and
scenario validation."""

import copy

import pytest

from shared import scenarios
from shared.director import candidates, pick_by_rule
from shared.errors import BadRequest

CATALOG = ["debate", "interview", "customer_service", "newsroom", "digital_employees", "classroom"]


def _keys(h):
    return sorted(o.key for o in h.store.iter(""))


@pytest.mark.parametrize("sid", CATALOG)
def test_every_catalog_scenario_runs_to_its_deliverable(harness, sid):
    # GIVEN a catalog scenario started with an input
    cid = harness.start(sid, "开发一个记账APP")
    # WHEN it runs on the scripted LLM
    harness.pump()
    # THEN it completed, and its deliverable is the closing role's last message
    status, body = harness.http("GET", f"/conversations/{cid}")
    assert body["status"] == "completed", body["end"]
    sc = scenarios.get(sid)
    d = body["deliverable"]
    assert d["role"] == sc["closing"]["role"] and d["content"] and d["title"]["zh"]
    assert body["messages"][-1]["role"] == d["role"]
    assert max(m["turn"] for m in body["messages"]) <= sc["limits"]["max_turns"]  # a panel's answers share a turn


def test_catalog_is_bilingual_and_lists_six_scenarios(harness):
    _, body = harness.http("GET", "/scenarios")
    got = {s["id"]: s for s in body["scenarios"]}
    assert set(CATALOG) <= set(got)
    for sid in CATALOG:
        assert got[sid]["title"]["en"] and got[sid]["title"]["zh"]
        assert got[sid]["description"]["en"] and got[sid]["description"]["zh"]


def test_newsroom_ends_early_when_the_fact_checker_approves(tmp_path):
    from infra.testing.scripted_llm import ScriptedLLM
    from infra.testing.harness import Harness

    # (the checkers are a panel: both must approve, tests/unit/test_panels.py)
    script = {"FactChecker": ["All three claims verified. APPROVED"], "SourceChecker": ["All sourced. APPROVED"]}
    h = Harness(str(tmp_path), llm_factory=lambda model=None: ScriptedLLM(script=script))
    cid = h.start("newsroom", "A new bridge opens")
    h.pump()
    turns = [(m["turn"], m["role"]) for m in h.transcript(cid)]
    assert sorted(turns) == [(0, "user"), (1, "Reporter"), (2, "Editor"), (3, "FactChecker"), (3, "SourceChecker"),
                             (4, "Editor")]
    assert h.convs.get_end(cid)["deliverable"]["role"] == "Editor"


def test_selector_director_never_exceeds_the_streak_limit_and_hands_the_floor_to_the_panel(tmp_path):
    from infra.testing.scripted_llm import ScriptedLLM
    from infra.testing.harness import Harness

    # GIVEN every speaker keeps naming Finance, trying to hand Finance the floor again and again
    script = {"*": ["Finance, over to you."]}
    h = Harness(str(tmp_path), llm_factory=lambda model=None: ScriptedLLM(script=script))
    cid = h.start("digital_employees", "Refund for order 42", max_turns=12)
    h.pump()
    turns = h.transcript(cid)[1:]
    # THEN naming Finance gives the floor to the assessment panel, whose three members answer at
    # once (one turn), and never twice in a row (max_consecutive: 1): customer service in between
    by_turn = {}
    for m in turns:
        by_turn.setdefault(m["turn"], []).append(m["role"])
    panel = sorted(["Marketing", "Finance", "RiskControl"])
    kinds = ["panel" if sorted(r) == panel else r[0] for _, r in sorted(by_turn.items())]
    assert kinds.count("panel") >= 4, kinds
    assert all(r == ["CustomerService"] for r in by_turn.values() if sorted(r) != panel), by_turn
    assert all(a != b for a, b in zip(kinds, kinds[1:-1])), kinds  # (the closing turn may follow anyone)
    assert h.convs.get_end(cid)["status"] == "completed"


def test_director_rules():
    sc = scenarios.get("digital_employees")
    panel = ["Marketing", "Finance", "RiskControl"]
    assert sc["order"] == ["CustomerService", panel]
    # the panel answered last: it waits for one other turn
    assert candidates(sc, ["CustomerService", *panel]) == ["CustomerService"]
    # naming a member gives the panel the floor; nobody named: whoever waited longest
    assert pick_by_rule(sc, "Ask RiskControl please", "CustomerService", ["CustomerService"]) == panel
    assert pick_by_rule(sc, "hello", "CustomerService", ["CustomerService"]) == panel
    # a panel's joined answer names its members: they are not "named" by it
    assert pick_by_rule(sc, "Marketing: an offer. Finance: 42 yuan.", ", ".join(panel),
                        ["CustomerService", *panel]) == "CustomerService"


def test_human_turn_waits_at_zero_compute_and_resumes(harness):
    # GIVEN an interview where the candidate is a person
    status, created = harness.http("POST", "/conversations", {"scenario": "interview", "input": "Backend engineer",
                                                              "humans": ["Candidate"]})
    assert status == 201
    cid = created["id"]
    harness.pump()
    # THEN after the interviewer's question the conversation waits, and no invocation happens
    _, body = harness.http("GET", f"/conversations/{cid}")
    assert body["status"] == "waiting_for_human" and body["waiting_for"]["role"] == "Candidate"
    invocations = len(harness.convs.invocations(cid))
    assert harness.pump() == 0
    assert len(harness.convs.invocations(cid)) == invocations
    # WHEN a message for the wrong role, then the right one, arrives
    wrong = harness.http("POST", f"/conversations/{cid}/messages", {"role": "Interviewer", "content": "hi"})
    assert wrong[0] == 409 and "Candidate" in wrong[1]["message"]
    ok = harness.http("POST", f"/conversations/{cid}/messages", {"role": "Candidate", "content": "I built a payments API."})
    assert ok[0] == 201 and ok[1]["turn"] == 2
    # AND the same answer again is refused (one answer per wait)
    assert harness.http("POST", f"/conversations/{cid}/messages", {"role": "Candidate", "content": "again"})[0] == 409
    # THEN the interviewer resumes, answering the human
    harness.pump()
    t = harness.transcript(cid)
    assert [m["role"] for m in t[:4]] == ["user", "Interviewer", "Candidate", "Interviewer"]
    assert t[2]["content"] == "I built a payments API." and t[2]["function"] == "human"
    assert harness.http("GET", f"/conversations/{cid}")[1]["status"] == "waiting_for_human"


def test_human_message_to_a_conversation_not_waiting_is_refused(harness):
    cid = harness.start("debate", "x", max_turns=3)
    before = _keys(harness)
    status, err = harness.http("POST", f"/conversations/{cid}/messages", {"role": "Proponent", "content": "hi"})
    assert status == 409 and "not waiting" in err["message"]
    assert _keys(harness) == before


def test_cancel_stops_the_conversation(harness):
    # GIVEN a running debate, one turn in
    cid = harness.start("debate", "x")
    harness.deliver(harness.pending_inbox()[0])
    # WHEN its owner cancels it
    status, body = harness.http("POST", f"/conversations/{cid}/cancel")
    assert status == 200 and body["status"] == "cancelled"
    # THEN the pending delivery does nothing, and the status is final
    harness.pump()
    t = harness.transcript(cid)
    assert len(t) == 2
    assert harness.http("GET", f"/conversations/{cid}")[1]["status"] == "cancelled"
    # AND cancel needs the token
    assert harness.http("POST", f"/conversations/{cid}/cancel", auth=False)[0] == 401


def test_unknown_human_role_is_refused(harness):
    before = _keys(harness)
    status, err = harness.http("POST", "/conversations", {"scenario": "debate", "input": "x", "humans": ["Nobody"]})
    assert status == 400 and "Nobody" in err["message"]
    assert _keys(harness) == before


BASE = {"id": "mine", "flow": "round_robin", "rounds": 2,
        "roles": [{"name": "A", "profile": "a"}, {"name": "B", "profile": "b"}]}


@pytest.mark.parametrize("change, needle", [
    ({"flow": "chaos"}, "flow"),
    ({"roles": [{"name": "A", "profile": "a"}, {"name": "a", "profile": "b"}]}, "used twice"),
    ({"roles": [{"name": "A", "profile": "a", "function": "nowhere"}]}, "nowhere"),
    ({"rounds": None}, "termination"),
    ({"roles": []}, "roles"),
    ({"closing": {"role": "Z", "instruction": "x"}}, "closing.role"),
    ({"end_when": {"role": "A"}}, "end_when.contains"),
    ({"order": ["A", "Q"]}, "order[1]"),
    ({"color": "red"}, "color"),
    ({"roles": [{"name": "A", "profile": "a", "class": "not a path"}]}, "class"),
    ({"roles": [{"name": "director", "profile": "a"}, {"name": "B", "profile": "b"}]}, "reserved"),
    ({"flow": "selector", "roles": [{"name": "A", "profile": "a"}]}, "two speakers"),
    ({"roles": [{"name": "A", "profile": "a", "stance": "I oppose [the motion]"}, {"name": "B", "profile": "b"}]},
     "roles[0].stance.en"),
    ({"roles": [{"name": "A", "profile": "a", "stance": {"zh": "我" * 61}}, {"name": "B", "profile": "b"}]},
     "roles[0].stance.zh"),
    ({"roles": [{"name": "A", "profile": "a", "stance": ["for"]}, {"name": "B", "profile": "b"}]}, "roles[0].stance"),
])
def test_invalid_scenarios_are_rejected_with_the_field_named(change, needle):
    data = {**copy.deepcopy(BASE), **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(BadRequest) as e:
        scenarios.validate_scenario(data, "mine.yaml", functions={"persona", "director"})
    assert needle in e.value.message
