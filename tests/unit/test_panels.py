"""Panels: a slot of a round_robin `order` that is a list of roles answers the same message at
once, each member in its own invocation, and the next role sees all the answers, handed on once
(shared/routing.py, `join_panel`) whatever the retries, duplicates and races."""

from __future__ import annotations

import copy

import pytest

from infra.testing.harness import Harness
from infra.testing.scripted_llm import ScriptedLLM
from shared import scenarios
from shared.errors import BadRequest

APPROVE = {"FactChecker": ["All three claims verified. APPROVED"],
           "SourceChecker": ["Every claim is attributed to a named source. APPROVED"]}


def _harness(tmp_path, script) -> Harness:
    return Harness(str(tmp_path), llm_factory=lambda model=None: ScriptedLLM(script=script))


def _at_the_panel(h):
    """A newsroom whose reporter and editor have spoken: its id, and the checkers' deliveries
    (the panel's fan-out, taken from the spool)."""
    cid = h.start("newsroom", "A new bridge opens")
    for _ in range(2):
        h.deliver(h.pending_deliveries()[0][1])
    return cid, h.pending_deliveries()


def test_a_panel_answers_at_once_and_the_next_role_sees_every_answer(tmp_path):
    h = _harness(tmp_path, APPROVE)
    # WHEN the reporter and the editor have spoken
    cid, pending = _at_the_panel(h)
    # THEN the editor's turn fans out: one delivery per checker, both pending at once
    assert len(pending) == 2
    assert all("/000002-" in key for key, _ in pending)
    for _, event in pending:
        h.deliver(event)
    h.pump()
    transcript = h.transcript(cid)
    # AND both checkers answered at turn 3, then the editor (closing: both approved) saw both answers
    assert [m["role"] for m in transcript[:3]] == ["user", "Reporter", "Editor"]
    assert sorted((m["turn"], m["role"]) for m in transcript[3:5]) == [(3, "FactChecker"), (3, "SourceChecker")]
    assert transcript[5]["role"] == "Editor" and transcript[5]["turn"] == 4 and transcript[5]["closing"]
    end = h.convs.get_end(cid)
    assert end["status"] == "completed" and end["deliverable"]["role"] == "Editor"


def test_a_panel_ends_the_loop_only_when_every_member_approves(tmp_path):
    h = _harness(tmp_path, {"FactChecker": APPROVE["FactChecker"], "SourceChecker": ["Two quotes lack a source."]})
    cid = h.start("newsroom", "A new bridge opens", max_turns=5)
    h.pump()
    roles = [(m["turn"], m["role"]) for m in h.transcript(cid)]
    # the source checker did not approve: the reporter revises (turn 4), not the closing editor
    assert (4, "Reporter") in roles


def test_the_join_hands_on_once_whatever_the_duplicates_and_races(tmp_path):
    h = _harness(tmp_path, APPROVE)
    cid, branches = _at_the_panel(h)
    assert len(branches) == 2
    # WHEN both checkers' events arrive three times each, the copies racing in threads
    errors = h.deliver_racing([event for _, event in branches])
    assert not [e for e in errors if "InFlight" not in type(e).__name__]
    # THEN each checker answered once and the panel was handed on to the editor once
    answers = [m for m in h.transcript(cid) if m["turn"] == 3]
    assert sorted(m["role"] for m in answers) == ["FactChecker", "SourceChecker"]
    joins = [(key, event) for key, event in h.pending_deliveries() if "/000003-" in key]
    assert len(joins) == 1 and joins[0][0].startswith("inbox/persona/")
    h.deliver(joins[0][1])
    h.pump()
    assert [m["role"] for m in h.transcript(cid) if m["turn"] == 4] == ["Editor"]
    assert h.convs.get_end(cid)["status"] == "completed"


def test_panel_declarations_are_checked_naming_the_field():
    base = copy.deepcopy(scenarios.get("newsroom"))
    raw = {k: base[k] for k in ("id", "flow", "closing", "end_when", "limits")}
    raw["roles"] = [{k: r[k] for k in ("name", "profile", "goal", "constraints")} for r in base["roles"]]
    raw["closing"] = {"role": "Editor", "instruction": "Publish.", "title": {"en": "Article", "zh": "定稿"}}

    def refused(order, **more):
        with pytest.raises(BadRequest) as e:
            scenarios.validate_scenario({**raw, "order": order, **more})
        return e.value

    assert refused(["Reporter", []]).details.get("field") == "order[1]"  # empty
    assert "2 to 16" in refused(["Reporter", ["Editor"]]).message
    assert refused(["Reporter", ["Editor", "Nobody"]]).details.get("field") == "order[1][1]"  # unknown role
    assert "each role once" in refused(["Reporter", ["Editor", "Editor"]]).message
    assert "round_robin and selector" in refused(["Reporter", ["Editor", "FactChecker"]], flow="sop").message
    human = [{**r, "human": True} if r["name"] == "SourceChecker" else r for r in raw["roles"]]
    assert "played by a person" in refused(["Reporter", ["FactChecker", "SourceChecker"]], roles=human).message
    bad = refused(["Reporter", ["FactChecker", "SourceChecker"]], on_dead_letter="skip")
    assert bad.details.get("field") == "on_dead_letter" and "fail, continue" in bad.message
    ok = scenarios.validate_scenario({**raw, "order": ["Reporter", ["FactChecker", "SourceChecker"]]})
    assert ok["on_dead_letter"] == "fail"
    assert ok["order"] == ["Reporter", ["FactChecker", "SourceChecker"]]


def test_polling_with_the_cursor_misses_no_answer_of_a_panel(tmp_path):
    h = _harness(tmp_path, APPROVE)
    cid, members = _at_the_panel(h)
    # WHEN a watcher polls after one checker's answer, and the other's then commits (its key may sort first)
    from shared.ids import derive_id

    def answer_id(key):  # the id (and key order) of the answer a delivery causes (shared.runner)
        return derive_id(cid, "reply", key.rsplit("-", 1)[1][:-5])

    seen, cursor = {}, ""
    # the answer whose key sorts last commits first, so the other lands before the cursor
    for _, event in sorted(members, key=lambda m: answer_id(m[0]), reverse=True):
        h.deliver(event)
        status, body = h.http("GET", f"/conversations/{cid}", query={"after": cursor} if cursor else None)
        assert status == 200, body
        seen.update({m["id"]: (m["turn"], m["role"]) for m in body["messages"]})
        cursor = body["cursor"]
    # THEN it has both answers
    assert sorted(r for t, r in seen.values() if t == 3) == ["FactChecker", "SourceChecker"]


def test_a_panel_may_follow_a_panel_and_the_order_may_wrap_around_to_one(tmp_path):
    h = _harness(tmp_path, {})
    scenario = {"id": "two_panels", "flow": "round_robin", "rounds": 1,
                "order": ["Reporter", ["FactChecker", "SourceChecker"], ["Editor", "Reporter"]],
                "closing": {"role": "Editor", "instruction": "Publish.", "title": "Article"},
                "roles": [{"name": n, "profile": n.lower()} for n in ("Reporter", "Editor", "FactChecker",
                                                                      "SourceChecker")]}
    status, body = h.http("POST", "/scenarios", scenario)
    assert status == 201, body
    cid = h.start("two_panels", "A new bridge opens")
    h.pump()
    turns = sorted((m["turn"], m["role"]) for m in h.transcript(cid))
    # the second panel answers the first one's joined answers; the closing editor answers the second's
    assert turns == [(0, "user"), (1, "Reporter"), (2, "FactChecker"), (2, "SourceChecker"), (3, "Editor"),
                     (3, "Reporter"), (4, "Editor")]
    assert h.convs.get_end(cid)["status"] == "completed"


@pytest.mark.parametrize("panel", [
    "yes", {"parent": "a1", "roles": ["FactChecker"]}, {"parent": "a1", "roles": ["Editor", "Reporter"]},
    {"roles": ["FactChecker", "SourceChecker"]}, {"parent": "a1", "roles": ["FactChecker", 3]},
    {"parent": "a1", "roles": ["FactChecker", "SourceChecker"], "spent": {"tokens": "many"}},
])
def test_a_delivery_naming_a_malformed_panel_is_refused(panel):
    from shared import records

    good = records.delivery(to="FactChecker", turn=2, message={"content": "x"}, hops=1)
    records.read_delivery({**good, "panel": {"parent": "a1", "roles": ["FactChecker", "SourceChecker"]}})
    with pytest.raises(records.RecordError):
        records.read_delivery({**good, "panel": panel})


def test_a_person_cannot_answer_in_a_panel(tmp_path):
    h = Harness(str(tmp_path))
    before = sum(1 for _ in h.store.iter("conversations/"))
    status, body = h.http("POST", "/conversations", {"scenario": "digital_employees", "input": "Refund?",
                                                     "humans": ["Finance"]})
    assert status == 400 and body["details"]["field"] == "humans" and "Finance answers in a panel" in body["message"]
    assert sum(1 for _ in h.store.iter("conversations/")) == before
