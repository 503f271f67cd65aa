"""OSS/event-triggered pipelines: request files start conversations, results come back as files."""

import json
import os
import time

import pytest

from infra.local.runtime import LocalRuntime
from shared.pipeline import request_cid, result_key
from infra.testing.harness import Harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture()
def h(tmp_path):
    return Harness(str(tmp_path / "data"))


def _put(h, key, body):
    h.store.put(key, body if isinstance(body, bytes) else json.dumps(body).encode())


def _result(store, key):
    return json.loads(store.get(key))


def _started(h):
    return [i.key for i in h.store.iter("conversations/") if i.key.endswith("/meta.json")]


def test_a_batch_of_request_files_becomes_conversations_with_results(h):
    _put(h, "requests/batch-1/cars.json", {"scenario": "debate", "input": "Should cities ban cars?", "rounds": 1})
    _put(h, "requests/batch-1/work.json", {"scenario": "debate", "input": "Is remote work here to stay?", "rounds": 1})
    _put(h, "requests/batch-1/ledger.json", {"scenario": "software_company", "input": "开发一个记账APP",
                                             "options": {"run_tests": False}})
    h.pump(copies=3)  # every event delivered three times
    assert len(_started(h)) == 3  # one conversation per request, whatever the duplicates
    for name in ("cars", "work"):
        res = _result(h.store, f"results/batch-1/{name}.json")
        assert res["status"] == "completed" and res["request"] == f"requests/batch-1/{name}.json"
        assert [t["role"] for t in res["turns"]] == ["user", "Proponent", "Opponent", "Judge"]
        assert res["deliverable"]["role"] == "Judge" and res["deliverable"]["content"]
    res = _result(h.store, "results/batch-1/ledger.json")
    assert res["status"] == "completed" and res["scenario"] == "software_company"
    paths = {a["path"] for a in res["artifacts"]}
    assert any(p.startswith("docs/prd/") for p in paths) and any(p.startswith("tests/") for p in paths)
    for a in res["artifacts"]:
        assert h.store.head(a["key"]).size == a["size"]  # the exported file is there, as a plain object
    assert res["usage"]["invocations"] >= 7


@pytest.mark.parametrize("body, field", [
    (b"{not json", None),
    ({"scenario": "no-such-scenario", "input": "x"}, "scenario"),
    ({"scenario": "debate", "input": ""}, "input"),
    ({"scenario": "software_company", "input": "x", "options": {"n_round": 0}}, "options.n_round"),
    ([1, 2], None),
])
def test_a_malformed_request_gets_an_error_result_and_nothing_else_happens(h, body, field):
    _put(h, "requests/bad.json", body)
    h.pump()
    res = _result(h.store, "results/bad.json")
    assert res["error"]["error"] in ("BadRequest", "PayloadTooLarge"), res
    if field:
        assert res["error"]["details"]["field"] == field
    assert _started(h) == [] and not [i for i in h.store.iter("inbox/")]


def test_a_request_with_an_unsafe_name_is_refused_under_a_digest(h):
    _put(h, "requests/a b.json", {"scenario": "debate", "input": "x"})
    h.pump()
    key = result_key("requests/a b.json")
    assert key.startswith("results/rejected/") and "name" in _result(h.store, key)["error"]["message"]
    assert _started(h) == []


def test_redeliveries_of_one_put_share_an_id_and_a_new_put_gets_a_new_one():
    a = request_cid("requests/x.json", '"etag1"', "2026-11-24T05:00:00.000Z")
    assert a == request_cid("requests/x.json", '"etag1"', "2026-11-24T05:00:00.000Z")
    assert a != request_cid("requests/x.json", '"etag1"', "2026-11-24T05:00:07.000Z")
    assert a.startswith("20261124t050000-")


def test_the_local_runtime_runs_a_request_file_to_its_result(tmp_path):
    with LocalRuntime(str(tmp_path / "data"), os.path.join(ROOT, "s.yaml"), retry_delay=0.05) as rt:
        rt.store.put("requests/one.json", json.dumps({"scenario": "debate", "input": "Tea or coffee?",
                                                      "rounds": 1}).encode())
        deadline = time.time() + 60
        while time.time() < deadline and rt.store.head("results/one.json") is None:
            time.sleep(0.1)
        res = _result(rt.store, "results/one.json")
    assert res["status"] == "completed"
    assert [t["role"] for t in res["turns"]] == ["user", "Proponent", "Opponent", "Judge"]
