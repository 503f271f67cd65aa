"""Typed views over the real OSS trigger payload, and the builder producing the same shape."""

import json

import pytest

from shared.errors import BadRequest
from shared.events import OssEvent, make_oss_event
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
