"""DiskStore alone: OSS semantics on a directory."""

from __future__ import annotations

import hashlib
import os

import pytest

from shared.errors import InvalidKey, NoSuchKey, ObjectExists
from shared.store.disk import DiskStore

@pytest.fixture
def store(tmp_path):
    return DiskStore(str(tmp_path / "store"))


def files_under(path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), path)
                  for d, _, names in os.walk(path) for f in names)


def test_create_only_put_keeps_the_first_writer(store):
    # GIVEN an object written create-only
    store.put("conversations/c1/end.json", b"first", create_only=True)

    # WHEN another create-only put targets the same key
    with pytest.raises(ObjectExists):
        store.put("conversations/c1/end.json", b"second", create_only=True)

    # THEN the first bytes remain, no temporary file is left, and a plain put overwrites
    assert store.get("conversations/c1/end.json") == b"first"
    assert os.listdir(store.tmp) == []
    store.put("conversations/c1/end.json", b"third")
    assert store.get("conversations/c1/end.json") == b"third"


def test_missing_key(store):
    # GIVEN an empty store
    # WHEN a missing key is read, headed and deleted
    # THEN get raises NoSuchKey, head answers None, delete is a no-op
    with pytest.raises(NoSuchKey):
        store.get("a/b")
    assert store.head("a/b") is None
    store.delete("a/b")


def test_listing_is_in_byte_order(store):
    # GIVEN keys whose byte order differs from a path-wise order ("-" < "/" < "0")
    keys = ["a/b", "a-c", "a/a", "b", "a0", "a/c/d"]
    for k in keys:
        store.put(k, k.encode())

    # WHEN listing with several prefixes
    everything = [o.key for o in store.list("").objects]
    under_a = [o.key for o in store.list("a").objects]
    under_a_dir = [o.key for o in store.list("a/").objects]

    # THEN keys come back in byte order, filtered by plain string prefix
    assert everything == ["a-c", "a/a", "a/b", "a/c/d", "a0", "b"]
    assert under_a == ["a-c", "a/a", "a/b", "a/c/d", "a0"]
    assert under_a_dir == ["a/a", "a/b", "a/c/d"]
    info = store.list("b").objects[0]
    assert (info.size, info.etag) == (1, hashlib.md5(b"b").hexdigest().upper())


def test_listing_pages(store):
    # GIVEN 25 keys under a prefix and one outside it
    keys = [f"inbox/fn/c1/{i:03d}.json" for i in range(25)]
    for k in reversed(keys):
        store.put(k, b"x")
    store.put("inbox/fn/c2/000.json", b"x")

    # WHEN paging 10 at a time
    pages, marker = [], ""
    while True:
        page = store.list("inbox/fn/c1/", marker=marker, max_keys=10)
        pages.append(page)
        if not page.truncated:
            break
        marker = page.next_marker

    # THEN 3 pages, each strictly after the previous marker, cover every key once
    assert [len(p.objects) for p in pages] == [10, 10, 5]
    assert [p.next_marker for p in pages] == [keys[9], keys[19], ""]
    assert [o.key for p in pages for o in p.objects] == keys
    assert [o.key for o in store.list("inbox/fn/c1/", marker=keys[23]).objects] == [keys[24]]


@pytest.mark.parametrize("key", ["../x", "a//b", "a/./b", "/abs", "a\\b", "a\nb", "a/../../x",
                                 "a/..", "a/", "", "x\x00y", "k" * 1024])
def test_traversal_and_bad_keys_are_rejected(tmp_path, store, key):
    # GIVEN a store under tmp_path/store
    # WHEN a bad key is used with every operation
    for call in (lambda: store.put(key, b"x"), lambda: store.put(key, b"x", create_only=True),
                 lambda: store.get(key), lambda: store.head(key), lambda: store.delete(key)):
        with pytest.raises(InvalidKey):
            call()

    # THEN nothing was written, inside the store or next to it
    assert os.listdir(tmp_path) == ["store"]
    assert files_under(store.root) == []
    assert store.total_requests() == 0


def test_bad_list_prefix_is_rejected(store):
    # GIVEN a store
    # WHEN listing with a traversal prefix
    # THEN InvalidKey is raised
    for prefix in ("../", "a/../", "/a", "a//"):
        with pytest.raises(InvalidKey):
            store.list(prefix)


def test_object_and_prefix_collisions(store):
    # GIVEN an object "a" (on disk a file, so "a/..." cannot exist beside it)
    store.put("a", b"1")

    # WHEN a key under it is written or deleted
    with pytest.raises(ObjectExists):
        store.put("a/b", b"2")
    store.delete("a/b")

    # THEN the write is refused cleanly, the delete is a no-op, and "a" is intact
    assert store.get("a") == b"1"
    assert store.head("a/b") is None


def test_the_store_itself_sends_no_events(store):
    # GIVEN a bare store (the local runtime wraps it to announce writes: infra/local/spool.py)
    # WHEN an object is put and deleted
    store.put("inbox/fn/c1/0001-m.json", b"x")
    store.delete("inbox/fn/c1/0001-m.json")

    # THEN nothing but its own folders was written
    assert sorted(os.listdir(store.root)) == ["objects", "tmp"]
