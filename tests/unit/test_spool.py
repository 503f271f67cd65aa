"""infra/local/spool.py: the local runtime's store announces writes as OSS events, as a bucket
with triggers does; the store underneath is unchanged."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from infra.local.spool import EmittingStore, EventSpool, emitting, local_store
from shared.errors import ObjectExists
from shared.events import OssEvent
from shared.store.disk import DiskStore

TEMPLATE = Path(__file__).resolve().parents[1] / "events" / "oss-event.json"


def spooled(store) -> list[dict]:
    folder = store.spool.events_dir
    out = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            out.append(json.load(f))
    return out


def key_paths(obj, prefix="") -> set[str]:
    """Every dotted key path in a JSON object, to compare shapes."""
    if not isinstance(obj, dict):
        return set()
    paths = set()
    for k, v in obj.items():
        paths.add(prefix + k)
        paths |= key_paths(v, prefix + k + ".")
    return paths


def test_a_write_is_one_event_in_oss_trigger_shape(tmp_path):
    store = local_store(str(tmp_path / "data"))
    data = b'{"hello": "world"}'
    store.put("inbox/fn/c1/0001-m.json", data, create_only=True)
    with pytest.raises(ObjectExists):  # a refused write announces nothing
        store.put("inbox/fn/c1/0001-m.json", b"again", create_only=True)

    events = spooled(store)
    assert len(events) == 1
    record = OssEvent.parse(events[0]).records[0]
    assert record.key == "inbox/fn/c1/0001-m.json" and record.size == len(data)
    assert record.etag == hashlib.md5(data).hexdigest().upper()
    assert record.event_name == "ObjectCreated:PutObject"
    assert (record.bucket, record.region) == ("troupe-local", "cn-hangzhou")
    template = json.loads(TEMPLATE.read_text())["events"][0]
    assert key_paths(events[0]["events"][0]) == key_paths(template)


def test_a_delete_of_what_was_there_is_an_object_removed_event(tmp_path):
    store = local_store(str(tmp_path / "data"))
    store.put("knowledge/k/docs/a.md", b"x")
    store.delete("knowledge/k/docs/a.md")
    store.delete("knowledge/k/docs/never.md")  # nothing was there: no event, as in OSS
    names = [e["events"][0]["eventName"] for e in spooled(store)]
    assert names == ["ObjectCreated:PutObject", "ObjectRemoved:DeleteObject"]


def test_the_wrapper_counts_each_request_once_and_the_inner_store_keeps_the_data(tmp_path):
    disk = DiskStore(str(tmp_path / "data"))
    store = EmittingStore(disk, EventSpool(disk.root))
    store.put("a/b", b"1")
    assert store.get("a/b") == b"1" and disk.get("a/b") == b"1"
    assert [o.key for o in store.list("a/").objects] == ["a/b"]
    assert (store.requests["put"], store.requests["get"], store.requests["list"]) == (1, 1, 1)


def test_only_a_disk_store_is_wrapped():
    class Other(DiskStore.__base__):  # an ObjectStore that is not on disk (OSS on FC)
        pass

    other = Other()
    assert emitting(other) is other
