"""OssStore through real oss2 against the local OSS endpoint (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import threading
import time
from types import SimpleNamespace

import oss2
import pytest

from infra.local.oss_endpoint import crc64, serve
from shared.errors import (NoSuchKey, ObjectExists, StoreError, TransientStoreError,
                           UnsafeBucket)
from shared.store.disk import DiskStore
from shared.store.oss import OssStore

KEY_ID = "test-key-id"
SECRET = "test-key-secret"
BUCKET = "troupe-test"


@pytest.fixture
def disk(tmp_path):
    return DiskStore(str(tmp_path / "oss"))


@pytest.fixture
def endpoint(disk):
    server, thread = serve(disk, BUCKET, access_key_id=KEY_ID, access_key_secret=SECRET)
    yield server
    server.stop()
    thread.join(5)


@pytest.fixture
def sleeps():
    return []


def make_store(endpoint, sleeps, secret=SECRET, bucket=BUCKET) -> OssStore:
    return OssStore(oss2.Bucket(oss2.Auth(KEY_ID, secret), endpoint.endpoint, bucket),
                    sleep=sleeps.append)


@pytest.fixture
def store(endpoint, sleeps):
    return make_store(endpoint, sleeps)


@pytest.mark.parametrize("key", [
    "conversations/c1/messages/0001-ab.json",
    "conversations/c1/artifacts/docs/design doc+v1 é%2F.md",  # needs URL encoding
])
def test_put_get_head_delete_round_trip(store, key):
    # GIVEN some bytes
    data = b'{"turn": 1, "text": "hello"}'
    md5 = hashlib.md5(data).hexdigest().upper()

    # WHEN they are put, read back, inspected and deleted
    put = store.put(key, data)
    got = store.get(key)
    head = store.head(key)
    store.delete(key)

    # THEN each step sees the same object, and it is gone afterwards
    assert put.etag == md5 and put.size == len(data)
    assert got == data
    assert head is not None
    assert (head.key, head.size, head.etag) == (key, len(data), md5)
    assert abs(head.last_modified - time.time()) < 5
    assert abs(put.last_modified - head.last_modified) <= 1  # the server's time, as OSS stamps it
    assert store.head(key) is None
    with pytest.raises(NoSuchKey):
        store.get(key)
    store.delete(key)  # deleting an absent key is not an error


def test_create_only_put_of_existing_key_raises_and_keeps_bytes(store, disk):
    # GIVEN a committed object
    key = "conversations/c1/end.json"
    store.put(key, b"first", create_only=True)

    # WHEN a second create-only put targets the same key
    with pytest.raises(ObjectExists):
        store.put(key, b"second", create_only=True)

    # THEN the first writer's bytes are kept, in OSS and on disk
    assert store.get(key) == b"first"
    assert disk.get(key) == b"first"
    # and a plain put still overwrites
    store.put(key, b"third")
    assert store.get(key) == b"third"


def test_racing_create_only_puts_have_one_winner(endpoint, disk, sleeps):
    # GIVEN eight clients racing to commit the same key with different bytes
    key = "conversations/c1/messages/0002-x.json"
    stores = [make_store(endpoint, sleeps) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    outcomes: dict[int, str] = {}

    def commit(i: int) -> None:
        barrier.wait()
        try:
            stores[i].put(key, f"writer {i}".encode(), create_only=True)
            outcomes[i] = "won"
        except ObjectExists:
            outcomes[i] = "lost"

    # WHEN they all put create-only at once
    threads = [threading.Thread(target=commit, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    # THEN exactly one wins, and the stored bytes are the winner's
    winners = [i for i, o in outcomes.items() if o == "won"]
    assert len(outcomes) == len(stores) and len(winners) == 1
    assert disk.get(key) == f"writer {winners[0]}".encode()


def test_list_by_prefix_pages_in_byte_order(store):
    # GIVEN 25 keys under a prefix (some chosen for byte order) and decoys outside it
    prefix = "inbox/fn/c1/"
    keys = [f"{prefix}{i:04d}.json" for i in range(21)]
    keys += [f"{prefix}a-c", f"{prefix}a/b", f"{prefix}Z", f"{prefix}\u00e9.json"]
    for k in keys + ["inbox/fn/c10/x.json", "inbox/fn/c0/y.json", "inbox/fn-other/c1/z.json"]:
        store.put(k, k.encode())

    # WHEN listing 10 keys at a time
    pages, marker = [], ""
    while True:
        page = store.list(prefix, marker=marker, max_keys=10)
        pages.append(page)
        if not page.truncated:
            break
        marker = page.next_marker

    # THEN 3 pages come back in byte order, nothing missing, repeated or outside the prefix
    listed = [o.key for p in pages for o in p.objects]
    assert [len(p.objects) for p in pages] == [10, 10, 5]
    assert [p.truncated for p in pages] == [True, True, False]
    assert pages[0].next_marker == listed[9] and pages[-1].next_marker == ""
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))
    assert listed.index(f"{prefix}a-c") < listed.index(f"{prefix}a/b")
    assert all(o.size == len(o.key.encode()) for p in pages for o in p.objects)
    assert [o.key for o in store.iter(prefix, page=7)] == listed


def test_get_of_missing_key_raises_no_such_key(store):
    # GIVEN an empty bucket
    # WHEN a missing key is read
    # THEN NoSuchKey is raised, and head answers None
    with pytest.raises(NoSuchKey):
        store.get("conversations/none/meta.json")
    assert store.head("conversations/none/meta.json") is None


def test_transient_5xx_are_retried(store, endpoint, sleeps):
    # GIVEN an endpoint that fails the next two requests with 503
    endpoint.fail_next(2, status=503)

    # WHEN an object is put
    store.put("conversations/c1/meta.json", b"{}", create_only=True)

    # THEN the put succeeded on the third attempt, after two backoff sleeps
    assert store.get("conversations/c1/meta.json") == b"{}"
    assert store.requests["put"] == 3
    assert endpoint.requests["PutObject"] == 3
    assert sleeps == [store.retry_base, store.retry_base * 2]


def test_persistent_5xx_give_up_with_transient_error(store, endpoint):
    # GIVEN an endpoint that keeps failing with 500
    endpoint.fail_next(store.retries + 1, status=500)

    # WHEN an object is read
    with pytest.raises(TransientStoreError):
        store.get("conversations/c1/meta.json")

    # THEN every attempt reached the endpoint, and then the store gave up
    assert endpoint.requests["GetObject"] == store.retries + 1


def test_wrong_secret_is_an_error_not_a_success(endpoint, disk, sleeps):
    # GIVEN a client signing with the wrong secret
    bad = make_store(endpoint, sleeps, secret="not-the-secret")

    # WHEN it writes and reads
    with pytest.raises(StoreError) as put_error:
        bad.put("conversations/c1/meta.json", b"{}")
    with pytest.raises(StoreError) as get_error:
        bad.get("conversations/c1/meta.json")

    # THEN both fail with 403, are not retried, and nothing was written
    for err in (put_error.value, get_error.value):
        assert not isinstance(err, (TransientStoreError, NoSuchKey))
        assert err.details["status"] == 403
        assert err.details["code"] == "SignatureDoesNotMatch"
    assert endpoint.requests["PutObject"] == 1
    assert disk.head("conversations/c1/meta.json") is None


def test_unknown_bucket_is_an_error(endpoint, sleeps):
    # GIVEN a client for a bucket the endpoint does not serve
    other = make_store(endpoint, sleeps, bucket="someone-else")

    # WHEN it reads, heads or lists
    # THEN it gets NoSuchBucket errors, never "absent"
    for call in (lambda: other.get("a"), lambda: other.head("a"), lambda: other.list("a")):
        with pytest.raises(StoreError) as err:
            call()
        assert err.value.details["code"] == "NoSuchBucket"


def test_check_versioning_off_passes_on_the_endpoint(store):
    # GIVEN the local endpoint (versioning never enabled)
    # WHEN the bucket is checked
    # THEN no error is raised
    store.check_versioning_off()


@pytest.mark.parametrize("status", ["Enabled", "Suspended"])
def test_check_versioning_off_refuses_versioned_bucket(status):
    # GIVEN a bucket whose versioning is on or suspended
    bucket = SimpleNamespace(bucket_name="b",
                             get_bucket_versioning=lambda: SimpleNamespace(status=status))

    # WHEN it is checked
    with pytest.raises(UnsafeBucket) as err:
        OssStore(bucket).check_versioning_off()

    # THEN the message says why create-only writes need versioning off
    assert status in err.value.message and "versioning" in err.value.message


def test_endpoint_rejects_keys_the_disk_store_refuses(endpoint, disk):
    # GIVEN a raw oss2 client (OssStore would refuse these keys itself)
    bucket = oss2.Bucket(oss2.Auth(KEY_ID, SECRET), endpoint.endpoint, BUCKET)

    # WHEN it puts a key with an empty path segment
    with pytest.raises(oss2.exceptions.ServerError) as err:
        bucket.put_object("a//b", b"x")

    # THEN the endpoint answers 400 InvalidObjectName and writes nothing
    assert (err.value.status, err.value.code) == (400, "InvalidObjectName")
    assert err.value.request_id
    assert list(disk.iter()) == []


def test_endpoint_returns_oss_headers(endpoint):
    # GIVEN a raw oss2 client
    bucket = oss2.Bucket(oss2.Auth(KEY_ID, SECRET), endpoint.endpoint, BUCKET)
    data = b"some bytes"

    # WHEN an object is put, read and headed
    put = bucket.put_object("k.bin", data)
    got = bucket.get_object("k.bin")
    head = bucket.head_object("k.bin")

    # THEN etag, crc64 and request id come back as OSS sends them
    md5 = hashlib.md5(data).hexdigest().upper()
    assert put.etag == got.etag == head.etag == md5
    assert put.crc == got.server_crc == crc64(data)
    assert got.read() == data
    assert put.request_id and head.request_id
    assert head.content_length == len(data)
    with pytest.raises(oss2.exceptions.NotFound) as err:
        bucket.head_object("missing")
    assert err.value.code == "NoSuchKey" and err.value.request_id


def test_from_env_with_access_keys(endpoint, sleeps):
    # GIVEN the environment of an FC python3.12 function
    env = {"TROUPE_OSS_BUCKET": BUCKET, "TROUPE_OSS_ENDPOINT": endpoint.endpoint,
           "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}

    # WHEN a store is built from it and used
    store = OssStore.from_env(env, sleep=sleeps.append)
    store.put("a.json", b"1")

    # THEN it signs with plain access keys and works
    assert isinstance(store.bucket.auth, oss2.Auth)
    assert store.get("a.json") == b"1"


def test_from_env_with_fc_credentials_uses_sts(endpoint, sleeps):
    # GIVEN FC context.credentials (STS) and no keys in the environment
    env = {"TROUPE_OSS_BUCKET": BUCKET, "TROUPE_OSS_ENDPOINT": endpoint.endpoint}
    creds = SimpleNamespace(access_key_id=KEY_ID, access_key_secret=SECRET, security_token="tok")

    # WHEN a store is built from them and used
    store = OssStore.from_env(env, credentials=creds, sleep=sleeps.append)
    store.put("a.json", b"1")

    # THEN it uses StsAuth and works
    assert isinstance(store.bucket.auth, oss2.StsAuth)
    assert store.get("a.json") == b"1"


def test_from_env_with_security_token_env_uses_sts():
    # GIVEN keys and a security token in the environment, and an endpoint without scheme
    env = {"TROUPE_OSS_BUCKET": "troupe-prod", "TROUPE_OSS_ENDPOINT": "oss-cn-hangzhou-internal.aliyuncs.com",
           "ALIBABA_CLOUD_ACCESS_KEY_ID": "id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s",
           "ALIBABA_CLOUD_SECURITY_TOKEN": "t"}

    # WHEN a store is built (no request is made)
    store = OssStore.from_env(env)

    # THEN it uses StsAuth over https
    assert isinstance(store.bucket.auth, oss2.StsAuth)
    assert store.bucket.endpoint == "https://oss-cn-hangzhou-internal.aliyuncs.com"


@pytest.mark.parametrize("drop", ["TROUPE_OSS_BUCKET", "TROUPE_OSS_ENDPOINT",
                                  "ALIBABA_CLOUD_ACCESS_KEY_SECRET"])
def test_from_env_missing_settings_are_named(drop):
    # GIVEN an environment missing one setting
    env = {"TROUPE_OSS_BUCKET": "troupe-prod", "TROUPE_OSS_ENDPOINT": "oss-cn-hangzhou.aliyuncs.com",
           "ALIBABA_CLOUD_ACCESS_KEY_ID": "id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s"}
    del env[drop]

    # WHEN a store is built
    with pytest.raises(StoreError) as err:
        OssStore.from_env(env)

    # THEN the error names the missing setting
    assert drop in err.value.message


def test_from_env_invalid_bucket_name_is_a_store_error():
    # GIVEN a bucket name OSS would refuse
    env = {"TROUPE_OSS_BUCKET": "B!", "TROUPE_OSS_ENDPOINT": "oss-cn-hangzhou.aliyuncs.com",
           "ALIBABA_CLOUD_ACCESS_KEY_ID": "id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s"}

    # WHEN a store is built
    # THEN a StoreError names the setting
    with pytest.raises(StoreError, match="TROUPE_OSS_BUCKET"):
        OssStore.from_env(env)


def _bucket(endpoint):
    import oss2

    return oss2.Bucket(oss2.Auth(KEY_ID, SECRET), endpoint.endpoint, BUCKET)


def test_listing_with_a_delimiter_groups_common_prefixes_across_pages_v1_and_v2(endpoint):
    import oss2

    b = _bucket(endpoint)
    for k in ["a/1", "a/2", "b/x/1", "b/y", "c", "d/e/f"]:
        b.put_object(k, b"x")
    expected = [("a/", True), ("b/", True), ("c", False), ("d/", True)]
    for max_keys in (1, 2, 100):  # every page boundary: a prefix is never listed twice
        assert [(o.key, o.is_prefix()) for o in oss2.ObjectIterator(b, delimiter="/", max_keys=max_keys)] == expected
        assert [(o.key, o.is_prefix()) for o in oss2.ObjectIteratorV2(b, delimiter="/", max_keys=max_keys)] == expected
    assert [(o.key, o.is_prefix()) for o in oss2.ObjectIteratorV2(b, prefix="b/", delimiter="/")] == [
        ("b/x/", True), ("b/y", False)]


def test_multipart_upload_assembles_the_parts_and_refuses_bad_ones(endpoint, disk, tmp_path):
    import os as _os

    import oss2

    b = _bucket(endpoint)
    data = _os.urandom(250 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    oss2.resumable_upload(b, "knowledge/k/docs/big.txt", str(src), multipart_threshold=100 * 1024,
                          part_size=100 * 1024, num_threads=1, store=oss2.ResumableStore(root=str(tmp_path)))
    assert disk.get("knowledge/k/docs/big.txt") == data
    upload = b.init_multipart_upload("x/y").upload_id
    b.upload_part("x/y", upload, 1, b"part")
    with pytest.raises(oss2.exceptions.ServerError) as e:  # a part it never got
        b.complete_multipart_upload("x/y", upload, [oss2.models.PartInfo(2, '"ABC"')])
    assert e.value.code == "InvalidPart"
    b.abort_multipart_upload("x/y", upload)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        b.upload_part("x/y", upload, 1, b"part")
    assert disk.head("x/y") is None
