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
