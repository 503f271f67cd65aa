"""The role runner's invariants, driven in-process over a DiskStore with the scripted LLM."""

import json
import random
import time

import pytest

from shared.errors import RejectedEvent
from infra.local.events import make_oss_event


def _roles(transcript):
    return [m["role"] for m in transcript]


def test_debate_alternates_and_ends_at_turn_limit(harness):
    # GIVEN a debate limited to 5 turns
    cid = harness.start(max_turns=5)
    # WHEN every event is delivered once
    harness.pump()
    # THEN the debaters alternate, the last turn the limit allows is the judge's verdict,
    # turns are numbered 0..5, and the conversation completed
    t = harness.transcript(cid)
    assert [m["turn"] for m in t] == [0, 1, 2, 3, 4, 5]
    assert _roles(t) == ["user", "Proponent", "Opponent", "Proponent", "Opponent", "Judge"]
    assert harness.convs.get_end(cid)["status"] == "completed"
    assert all(m["invocation"]["llm_paid"] == 1 for m in t[1:])


def test_each_event_three_times_adds_no_turn_and_pays_once(harness):
    # GIVEN a debate of 6 turns
    cid = harness.start(max_turns=6)
    # WHEN every trigger event is delivered three times
    harness.pump(copies=3)
    # THEN the transcript is the same as a single delivery's and each turn paid one LLM call
    t = harness.transcript(cid)
    assert [m["turn"] for m in t] == list(range(7))
    journal = list(harness.store.iter(f"conversations/{cid}/journal/"))
    assert len(journal) == 6
    outcomes = [r["outcome"] for r in harness.convs.invocations(cid)]
    assert outcomes.count("committed") == 6
    # the copies of the last delivery find the conversation ended; the others are duplicates
    assert outcomes.count("duplicate") == 10 and outcomes.count("ended") == 2


def test_reordered_duplicates_across_conversations(harness):
    # GIVEN three conversations and events shuffled, duplicated, and delivered late
    cids = [harness.start(max_turns=4) for _ in range(3)]
    rng = random.Random(7)
    backlog = []
    for _ in range(200):
        backlog += [e for _, e in harness.pending()] * 3
        if not backlog:
            break
        rng.shuffle(backlog)
        harness.deliver(backlog.pop())
    # THEN each conversation has exactly its 4 turns, alternating
    for cid in cids:
        assert _roles(harness.transcript(cid)) == ["user", "Proponent", "Opponent", "Proponent", "Judge"]


def test_failure_after_llm_call_is_retried_without_paying_twice(harness, monkeypatch):
    # GIVEN a store that fails the first commit of turn 2 (after the LLM reply is journaled)
    cid = harness.start(max_turns=3)
    real_commit = harness.convs.commit
    failed = []

    def flaky_commit(c, turn, msgid, record):
        if turn == 2 and not failed:
            failed.append(turn)
            raise RuntimeError("instance died")
        return real_commit(c, turn, msgid, record)

    monkeypatch.setattr(harness.convs, "commit", flaky_commit)
    # WHEN events are delivered and the failed one is retried (as FC's async retry does)
    for _ in range(20):
        batch = harness.pending()
        if not batch:
            break
        for _, event in batch:
            try:
                harness.deliver(event)
            except RuntimeError:
                harness.deliver(event)  # the retry
    # THEN the conversation completed with every turn once, and turn 2's reply was replayed
    t = harness.transcript(cid)
    assert [m["turn"] for m in t] == [0, 1, 2, 3]
    assert failed == [2]
    assert t[2]["invocation"]["llm_paid"] == 0 and t[2]["invocation"]["llm_replayed"] == 1


def test_crash_between_commit_and_state_recovers(harness, monkeypatch):
    # GIVEN turn 1 commits but the instance dies before saving the role's state
    cid = harness.start(max_turns=3)
    real_save = harness.convs.save_state
    died = []

    def dying_save(c, role, state):
        if not died:
            died.append(role)
            raise RuntimeError("killed")
        return real_save(c, role, state)

    monkeypatch.setattr(harness.convs, "save_state", dying_save)
    event, = harness.pending_inbox()
    with pytest.raises(RuntimeError):
        harness.deliver(event)
    # WHEN the event is retried and the rest delivered
    harness.deliver(event)
    harness.pump()
    # THEN no turn is lost or doubled and the role's memory holds its own turn once
    t = harness.transcript(cid)
    assert _roles(t) == ["user", "Proponent", "Opponent", "Judge"]
    state = harness.convs.load_state(cid, "Proponent")
    memory = json.loads(state["role"])["rc"]["memory"]["storage"]
    ids = [m["id"] for m in memory]
    assert len(ids) == len(set(ids))
    assert t[1]["id"] in ids


def test_turn_limit_is_never_exceeded_even_with_a_stray_delivery(harness):
    # GIVEN a completed 2-turn conversation
    cid = harness.start(max_turns=2)
    harness.pump()
    # WHEN a delivery for turn 2 → 3 appears anyway (a misbehaving writer)
    harness.convs.deliver("persona", cid, 2, "0" * 16, {"to": "Proponent", "turn": 2,
                                                     "message": {"content": "again", "send_to": ["Proponent"]}})
    harness.pump()
    # THEN no turn 3 is committed
    assert max(m["turn"] for m in harness.transcript(cid)) == 2


@pytest.mark.parametrize("key", [
    "inbox/other/20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a/000000-0123456789abcdef.json",
    "inbox/persona/../../conversations/x/meta.json",
    "inbox/persona/not-a-cid/000000-0123456789abcdef.json",
    "inbox/persona/20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a/0-0123456789abcdef.json",
    "conversations/20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a/meta.json",
])
def test_event_outside_the_inbox_is_rejected_and_writes_nothing(harness, key):
    # GIVEN an OSS event for a key this function must not process
    before = sorted(o.key for o in harness.store.iter(""))
    event = json.dumps(make_oss_event("b", "cn-hangzhou", key, 10, "E")).encode()
    # WHEN the persona runner handles it
    out = harness.runner("persona").handle_event(event)
    # THEN it is rejected with a reason and nothing is written
    assert out[0]["outcome"] == "rejected" and out[0]["reason"]
    assert sorted(o.key for o in harness.store.iter("")) == before


def test_malformed_event_is_rejected(harness):
    assert harness.runner("persona").handle_event(b"{not json")[0]["outcome"] == "rejected"
    assert harness.runner("persona").handle_event(b'{"events": []}')[0]["outcome"] == "rejected"


def test_delivery_for_unknown_conversation_is_rejected(harness):
    harness.convs.deliver("persona", "20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a", 0, "0" * 16,
                          {"to": "Proponent", "turn": 0, "message": {"content": "x"}})
    event, = harness.pending_inbox()
    assert harness.deliver(event)[0]["outcome"] == "rejected"


def test_parse_delivery_key_round_trip(harness):
    key = harness.convs.delivery_key("persona", "20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a", 12, "0123456789abcdef")
    assert harness.convs.parse_delivery_key("persona", key) == ("20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a", 12, "0123456789abcdef")
    with pytest.raises(RejectedEvent):
        harness.convs.parse_delivery_key("gateway", key)


def test_racing_duplicates_pay_once_and_commit_once(tmp_path):
    import threading

    from infra.testing.scripted_llm import ScriptedLLM
    from infra.testing.harness import Harness

    # GIVEN an LLM slow enough for two copies of one delivery to overlap
    h = Harness(str(tmp_path), llm_factory=lambda model=None: ScriptedLLM(latency=0.3))
    cid = h.start(max_turns=2)
    event, = h.pending_inbox()
    outcomes = []
    # WHEN two instances handle the same event at once
    threads = [threading.Thread(target=lambda: outcomes.extend(h.deliver(event))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN one paid and committed; the other stood down without paying
    assert sorted(o["outcome"] for o in outcomes) in (["committed", "in_flight"], ["committed", "duplicate"],
                                                      ["committed", "replayed"])
    assert sum(o.get("llm_paid", 0) for o in outcomes) == 1
    h.pump()
    assert [m["role"] for m in h.transcript(cid)] == ["user", "Proponent", "Judge"]


def test_a_retry_of_the_holder_takes_over_an_abandoned_call(tmp_path):
    from infra.testing.harness import Harness

    # GIVEN a claim on turn 1's LLM call left behind by an instance that died mid-call
    h = Harness(str(tmp_path))
    cid = h.start(max_turns=2)
    event, = h.pending_inbox()
    key = json.loads(event)["events"][0]["oss"]["object"]["key"]
    _, _, delivery = h.convs.parse_delivery_key("persona", key)
    h.convs.claim(cid, delivery, 0, "req-dead", time.time())
    # WHEN a duplicate event (another request id) arrives while the claim is fresh
    dup = h.runner("persona").handle_event(event, request_id="req-other")
    # THEN it stands down without paying
    assert dup[0]["outcome"] == "in_flight" and dup[0]["llm_paid"] == 0
    # WHEN FC retries the dead invocation under its own request id
    out = h.runner("persona").handle_event(event, request_id="req-dead")
    # THEN the retry takes the call over, pays once and commits the turn
    assert out[0]["outcome"] == "committed" and out[0]["llm_paid"] == 1


def test_invocation_cap_holds_even_if_the_turn_counter_is_wrong(harness, monkeypatch):
    # GIVEN a writer whose turn counter is stuck (every delivery claims turn 1), so the turn
    # limit can never trigger, and a conversation allowed 1000 turns but 12 invocations
    real_deliver = harness.convs.deliver

    def stuck(function, cid, turn, did, payload):
        return real_deliver(function, cid, 1, did, {**payload, "turn": 1})

    monkeypatch.setattr(harness.convs, "deliver", stuck)
    monkeypatch.setattr("shared.routing.decide", lambda meta, turn, speaker, content, closing:
                        {"kind": "speak", "role": "Proponent" if speaker != "Proponent" else "Opponent",
                         "closing": False, "reason": ""})
    monkeypatch.setattr("shared.runner.decide", lambda meta, turn, speaker, content, closing:
                        {"kind": "speak", "role": "Proponent" if speaker != "Proponent" else "Opponent",
                         "closing": False, "reason": ""})
    cid = harness.start(max_turns=1000, max_invocations=12, rounds=100)
    # WHEN it runs
    harness.pump(max_rounds=100)
    # THEN it stops at the cap, naming it
    end = harness.convs.get_end(cid)
    assert end["status"] == "stopped" and end["reason"] == "invocation_cap"
    committed = [r for r in harness.convs.invocations(cid) if r["outcome"] == "committed"]
    assert len(committed) <= 13
