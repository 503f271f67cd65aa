"""Re-driving dead letters (infra/local/redrive.py), without a runtime: what is reopened, sent, moved."""

import json
import os

from infra.local.redrive import redrive
from shared.deadletter import handle_failure

S_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "s.yaml")


def _fail(harness, event, tmp_path):
    """What the runtime and the onFailure destination leave after the retries: both letters."""
    record = {"timestamp": 0, "requestContext": {"requestId": "r1", "functionArn": "acs:fc:x:1:functions/troupe-persona",
                                                 "condition": "RetriesExhausted", "approximateInvokeCount": 3},
              "requestPayload": event.decode(), "responseContext": {"statusCode": 200},
              "responsePayload": json.dumps({"errorMessage": "model endpoint down", "errorType": "ConnectionError"})}
    handle_failure(json.dumps(record).encode(), harness.convs)
    folder = tmp_path / "data" / "runtime" / "deadletters" / "persona"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "20261124T000000.000000Z-r1.json").write_text(json.dumps(record))


def test_a_failed_conversation_is_reopened_and_its_event_sent_once(harness, tmp_path):
    # GIVEN a conversation whose first delivery was dead-lettered (store letter + runtime record)
    cid = harness.start()
    event, = harness.pending_inbox()
    _fail(harness, event, tmp_path)
    assert harness.convs.get_end(cid)["status"] == "failed"
    sent = []
    # WHEN it is re-driven
    report = redrive(str(tmp_path / "data"), S_YAML, invoke=lambda fn, ev: sent.append((fn, ev)), out=lambda _: None)
    # THEN it is reopened, the event is sent once, to persona, and both letters are moved aside
    assert harness.convs.get_end(cid) is None
    key = json.loads(event)["events"][0]["oss"]["object"]["key"]
    assert [(fn, json.loads(ev)["events"][0]["oss"]["object"]["key"]) for fn, ev in sent] == [("persona", key)]
    assert report["redriven"] == [key]
    assert list(harness.store.iter("deadletters/")) == [] and len(list(harness.store.iter("deadletters-redriven/"))) == 1
    assert os.listdir(tmp_path / "data" / "runtime" / "deadletters" / "persona") == []
    # AND the event then does the turn, exactly once
    for _, ev in sent + sent:
        harness.deliver(ev)
    harness.pump()
    assert harness.convs.get_end(cid)["status"] == "completed"
    turns = [m["turn"] for m in harness.transcript(cid)]
    assert turns == sorted(set(turns)) and turns[0] == 0


def test_a_conversation_that_ended_otherwise_is_left_alone(harness, tmp_path):
    # GIVEN a dead-lettered conversation that its owner cancelled since
    cid = harness.start()
    event, = harness.pending_inbox()
    _fail(harness, event, tmp_path)
    harness.store.delete(harness.convs.end_key(cid))
    harness.convs.end(cid, "cancelled", "cancelled by its owner")
    sent = []
    # WHEN dead letters are re-driven
    report = redrive(str(tmp_path / "data"), S_YAML, invoke=lambda fn, ev: sent.append(fn), out=lambda _: None)
    # THEN nothing is sent, the end stays, the letter stays for a decision
    assert sent == [] and len(report["skipped"]) == 1
    assert harness.convs.get_end(cid)["status"] == "cancelled"
    assert len(list(harness.store.iter("deadletters/"))) == 1


def test_the_newest_delivery_is_sent_again_to_resume_a_chain_stopped_by_the_failure(harness, tmp_path):
    # GIVEN a conversation marked failed by a dead letter for its first delivery, while its
    # chain had gone on (a duplicate failed; the original did turn 1 and delivered turn 1)
    cid = harness.start(max_turns=4)
    first, = harness.pending_inbox()
    harness.deliver(first)
    _fail(harness, first, tmp_path)
    # (the dead letter is superseded, since the twin served it; the conversation is failed here
    # as an onFailure that ran before the twin's state was saved would have left it)
    harness.convs.end(cid, "failed", "model endpoint down", function="persona", turn=0)
    second, = harness.pending_inbox()
    assert harness.deliver(second)[0]["outcome"] == "ended"  # it found the conversation failed
    sent = []
    # WHEN it is re-driven
    redrive(str(tmp_path / "data"), S_YAML, invoke=lambda fn, ev: sent.append(ev), out=lambda _: None)
    # THEN the newest delivery is sent too, and the conversation completes, each turn once
    keys = [json.loads(ev)["events"][0]["oss"]["object"]["key"] for ev in sent]
    assert keys == [json.loads(first)["events"][0]["oss"]["object"]["key"],
                    json.loads(second)["events"][0]["oss"]["object"]["key"]]
    for ev in sent:
        harness.deliver(ev)
    harness.pump()
    assert harness.convs.get_end(cid)["status"] == "completed"
    assert [m["turn"] for m in harness.transcript(cid)] == [0, 1, 2, 3, 4]
