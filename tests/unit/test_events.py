"""Typed views over the real OSS trigger payload, and the builder producing the same shape."""

import json

import pytest

from shared.errors import BadRequest
from shared.events import OssEvent
from infra.local.events import make_oss_event
from tests.conftest import load_event


def _shape(obj):
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(v) for v in obj]
    return type(obj).__name__


def test_view_reads_the_real_oss_event():
    rec = OssEvent.parse(load_event("oss-event.json")).records[0]
    assert (rec.event_name, rec.bucket, rec.key, rec.size, rec.region) == (
        "ObjectCreated:PutObject", "testbucket", "image/a.jpg", 122539, "cn-shanghai")
    assert rec.is_created and rec.etag == "688A7BF4F233DC9C88A80BF985AB7329"


def test_built_events_have_the_real_shape():
    real = json.loads(load_event("oss-event.json"))
    built = make_oss_event("b", "cn-hangzhou", "inbox/persona/x.json", 12, "ABC")
    assert _shape(built) == _shape(real)


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"events": {}}', b'{"events": [{"oss": {}}]}'])
def test_malformed_oss_events_are_refused(raw):
    with pytest.raises(BadRequest):
        OssEvent.parse(raw)


def test_an_eventbridge_oss_event_reads_as_the_same_record_as_a_native_one():
    from shared.events import OssEvent
    from infra.local.events import eventbridge_event

    # GIVEN the CloudEvent an EventBridge-based OSS trigger delivers (one record per invocation)
    cloud = json.loads(load_event("eventbridge-oss-event.json"))
    rec = OssEvent.parse(json.dumps(cloud).encode()).records[0]
    assert rec.key == cloud["data"]["oss"]["object"]["key"] and rec.is_created
    assert rec.event_name == "ObjectCreated:PutObject" and rec.bucket == "troupe-bucket"
    # the RawData schema delivers the record alone; a CloudEvent without eventName takes its type
    assert OssEvent.parse(cloud["data"]).records[0].key == rec.key
    bare = {**cloud, "data": {k: v for k, v in cloud["data"].items() if k != "eventName"}}
    assert OssEvent.parse(bare).records[0].event_name == "ObjectCreated:PutObject"
    # the local runtime's builder makes the same shape from a native record
    native = json.loads(load_event("oss-event.json"))["events"][0]
    built = eventbridge_event(native)
    assert built["source"] == "acs.oss" and built["subject"].endswith("/" + native["oss"]["object"]["key"])
    assert OssEvent.parse(built).records[0].raw == native


@pytest.mark.parametrize("event", [{"source": "acs.oss"}, {"source": "acs.oss", "data": "x"}, {"source": "acs.ecs"}])
def test_a_malformed_eventbridge_event_is_refused(event):
    from shared.errors import BadRequest
    from shared.events import OssEvent

    with pytest.raises(BadRequest):
        OssEvent.parse(event)
