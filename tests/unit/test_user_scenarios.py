"""Users' own scenarios (POST /scenarios) and their own MetaGPT Role subclasses."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
USER_ROLES = os.path.join(os.path.dirname(HERE), "functional", "user_roles_pkg")

POEM = {"id": "poetry_duel", "title": {"en": "Poetry duel", "zh": "赛诗"}, "flow": "round_robin",
        "rounds": 1, "roles": [
            {"name": "Poet", "profile": "poet", "class": "user_roles.poet:Poet"},
            {"name": "Critic", "profile": "poetry critic"}]}


def _keys(h):
    return sorted(o.key for o in h.store.iter(""))


@pytest.fixture
def user_roles_on_path():
    sys.path.insert(0, USER_ROLES)
    yield
    sys.path.remove(USER_ROLES)


def test_a_users_scenario_and_role_class_run_as_functions(harness, user_roles_on_path):
    # GIVEN a user scenario whose Poet is the user's own MetaGPT Role subclass
    status, added = harness.http("POST", "/scenarios", POEM)
    assert status == 201 and added["id"] == "poetry_duel"
    assert "poetry_duel" in [s["id"] for s in harness.http("GET", "/scenarios")[1]["scenarios"]]
    # WHEN a conversation runs on it
    cid = harness.start("poetry_duel", "the sea at night")
    harness.pump()
    # THEN the user's role spoke through its own action, in its own turn
    t = harness.transcript(cid)
    assert [m["role"] for m in t] == ["user", "Poet", "Critic"]
    assert t[1]["cause_by"].endswith("WriteCouplet") and t[1]["content"]
    assert harness.convs.get_end(cid)["status"] == "completed"


@pytest.mark.parametrize("change, status, needle", [
    ({"flow": "chaos"}, 400, "flow"),
    ({"roles": [{"name": "A", "profile": "a", "function": "ghost"}, {"name": "B", "profile": "b"}]}, 400, "ghost"),
    ({"rounds": None}, 400, "termination"),
    ({"roles": [{"name": "A", "profile": "a"}, {"name": "A", "profile": "b"}]}, 400, "twice"),
    ({"id": "debate"}, 409, "built in"),
    ({"roles": [{"name": "A", "profile": "a", "class": "os:system"}, {"name": "B", "profile": "b"}]}, 201, ""),
])
def test_bad_user_scenarios_are_refused_and_nothing_is_stored(harness, change, status, needle):
    data = {k: v for k, v in {**POEM, **change}.items() if v is not None}
    before = _keys(harness)
    got, body = harness.http("POST", "/scenarios", data)
    assert got == status, body
    if status != 201:
        assert needle in body["message"] and _keys(harness) == before


def test_a_role_class_outside_the_allowed_packages_never_runs(harness):
    # a scenario may name a class, but only from troupe's or the deployment's role packages
    harness.http("POST", "/scenarios", {**POEM, "id": "evil", "roles": [
        {"name": "A", "profile": "a", "class": "os:system"}, {"name": "B", "profile": "b"}]})
    cid = harness.start("evil", "x")
    outcomes = [o for _, e in [(None, e) for e in harness.pending_inbox()] for o in harness.deliver(e)]
    assert outcomes[0]["outcome"] == "failed" and "outside the allowed packages" in outcomes[0]["reason"]
    assert len(harness.transcript(cid)) == 1
    end = harness.convs.get_end(cid)
    assert end["status"] == "failed" and end["role"] == "A" and "outside the allowed packages" in end["reason"]


def test_adding_a_scenario_needs_the_api_key(harness):
    assert harness.http("POST", "/scenarios", POEM, auth=False)[0] == 401


def test_the_same_scenario_twice_is_a_conflict(harness):
    assert harness.http("POST", "/scenarios", POEM)[0] == 201
    assert harness.http("POST", "/scenarios", POEM)[0] == 409
