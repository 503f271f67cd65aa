"""A delivery whose retries are exhausted fails its conversation visibly and is kept for re-driving."""

import json

from shared.deadletter import handle_failure


def test_exhausted_delivery_fails_the_conversation(harness):
    # GIVEN a conversation whose first delivery could not be processed
    cid = harness.start()
    event, = harness.pending_inbox()
    record = {"timestamp": 0, "requestContext": {"requestId": "r1", "functionArn": "acs:fc:x:1:functions/troupe-persona",
                                                 "condition": "RetriesExhausted", "approximateInvokeCount": 3},
              "requestPayload": event.decode(), "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
              "responsePayload": "RuntimeError: model endpoint down"}
    # WHEN the onFailure destination receives FC's failure record
    out = handle_failure(json.dumps(record).encode(), harness.convs)
    # THEN the conversation is failed, naming the function and reason, and the event is kept
    assert out[0]["outcome"] == "dead-lettered"
    end = harness.convs.get_end(cid)
    assert end["status"] == "failed" and end["function"] == "persona" and "model endpoint down" in end["reason"]
    letters = list(harness.store.iter("deadletters/persona/"))
    assert len(letters) == 1 and json.loads(harness.store.get(letters[0].key))["conversation"] == cid


def test_failure_record_without_a_delivery_is_rejected(harness):
    before = list(harness.store.iter(""))
    out = handle_failure(json.dumps({"requestPayload": "{}"}).encode(), harness.convs)
    assert out[0]["outcome"] == "rejected"
    assert list(harness.store.iter("")) == before


def test_a_dead_duplicate_does_not_fail_a_conversation_its_twin_served(harness):
    # GIVEN a delivery processed successfully by one copy of its event
    cid = harness.start(max_turns=3)
    event, = harness.pending_inbox()
    harness.deliver(event)
    # WHEN another copy of the same event exhausts its retries (e.g. a storage outage)
    record = {"requestContext": {"condition": "RetriesExhausted"}, "requestPayload": event.decode(),
              "responsePayload": "TransientStoreError"}
    out = handle_failure(json.dumps(record).encode(), harness.convs)
    # THEN the letter is kept as superseded and the conversation carries on
    assert out[0]["outcome"] == "superseded"
    assert harness.convs.get_end(cid) is None
    harness.pump()
    assert harness.convs.get_end(cid)["status"] == "completed"


def _failure(event: bytes, why: str) -> bytes:
    return json.dumps({"requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
                       "requestPayload": event.decode(), "responsePayload": why}).encode()


def _newsroom_at_its_panel(harness, policy: str):
    """A newsroom whose panel policy is `policy`, its reporter and editor done: (cid, the checkers'
    events by role)."""
    cid = harness.start("newsroom", "A new bridge opens")
    meta = json.loads(harness.store.get(harness.convs.meta_key(cid)))
    meta["scenario"]["on_dead_letter"] = policy
    harness.store.put(harness.convs.meta_key(cid), json.dumps(meta).encode())
    harness.convs._meta_cache.clear()
    for _ in range(2):
        event, = harness.pending_inbox()
        harness.deliver(event)
    checkers = {}
    for key, event in harness.pending_deliveries():
        checkers[harness.convs.read_delivery(key)["to"]] = event
    assert set(checkers) == {"FactChecker", "SourceChecker"}
    return cid, checkers


def test_a_panel_member_lost_to_a_dead_letter_is_named_and_the_panel_goes_on(harness):
    # GIVEN a panel whose scenario says to go on without a member that dead-letters
    cid, checkers = _newsroom_at_its_panel(harness, "continue")
    harness.deliver(checkers["SourceChecker"])
    # WHEN the fact-checker's event exhausts its retries
    out = handle_failure(_failure(checkers["FactChecker"], "RuntimeError: checker down"), harness.convs)
    assert out[0]["outcome"] == "continued"
    # THEN the next role (the reporter, a new round) gets the panel's answers, the missing one named
    # with its reason, once
    assert harness.convs.get_end(cid) is None
    answers = {m["role"]: m for m in harness.transcript(cid) if m["turn"] == 3}
    assert answers["FactChecker"]["missing"] and "checker down" in answers["FactChecker"]["content"]
    (joined, _), = harness.pending_deliveries()
    delivery = harness.convs.read_delivery(joined)
    assert delivery["to"] == "Reporter" and "FactChecker: (no answer: FactChecker failed" in delivery["message"]["content"]
    # a second copy of the failure record joins again and writes nothing new
    assert handle_failure(_failure(checkers["FactChecker"], "again"), harness.convs)[0]["outcome"] == "continued"
    assert harness.pending_inbox() == []
    assert "checker down" in harness.convs.message(cid, 3, answers["FactChecker"]["id"])["content"]


def test_by_default_a_panel_member_lost_to_a_dead_letter_fails_the_conversation(harness):
    cid, checkers = _newsroom_at_its_panel(harness, "fail")
    assert handle_failure(_failure(checkers["FactChecker"], "RuntimeError: checker down"),
                          harness.convs)[0]["outcome"] == "dead-lettered"
    end = harness.convs.get_end(cid)
    assert end["status"] == "failed" and "checker down" in end["reason"]


def test_a_dead_letter_handler_killed_before_the_join_joins_on_its_retry(harness, monkeypatch):
    import shared.deadletter as deadletter

    cid, checkers = _newsroom_at_its_panel(harness, "continue")
    harness.deliver(checkers["SourceChecker"])
    # GIVEN the handler dies right after recording the missing member (before the join)
    real = deadletter.join_panel

    def killed(*a, **k):
        raise SystemExit("killed")

    monkeypatch.setattr(deadletter, "join_panel", killed)
    try:
        handle_failure(_failure(checkers["FactChecker"], "RuntimeError: checker down"), harness.convs)
    except SystemExit:
        pass
    assert harness.pending_inbox() == []
    # WHEN FC retries the failure record
    monkeypatch.setattr(deadletter, "join_panel", real)
    out = handle_failure(_failure(checkers["FactChecker"], "RuntimeError: checker down"), harness.convs)
    # THEN the join goes on, once
    assert out[0]["outcome"] == "continued"
    assert len(harness.pending_inbox()) == 1 and harness.convs.get_end(cid) is None
