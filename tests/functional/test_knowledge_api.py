"""The knowledge-base routes of the gateway, end to end over a DiskStore: documents in through
the API, indexed by the indexer function's core on the OSS events the puts fire, searched back.
The routes are the gateway's (declared in shared/routes.py)."""

import json

import pytest

from infra.testing.harness import API_KEY, Harness
from infra.local.events import make_http_event
from shared.knowledge import retrieval, seed_samples
from shared.knowledge.indexer import handle_event

KEY = {"Authorization": f"Bearer {API_KEY}"}


class Client:
    def __init__(self, root):
        retrieval.clear_cache()
        self.h = Harness(root)
        self.store = self.h.store

    def http(self, method, path, body=None, query=None, headers=KEY):
        raw = body if isinstance(body, (bytes, str)) else (json.dumps(body) if body is not None else "")
        raw = raw.encode() if isinstance(raw, str) else raw
        event = make_http_event(method, path, body=raw, query=query or {}, headers=dict(headers or {}))
        resp = self.h.gateway.handle(event)
        try:
            return resp["statusCode"], json.loads(resp["body"])
        except ValueError:
            return resp["statusCode"], resp["body"]

    def index(self):
        """Run the indexer on every pending event under its trigger prefix (knowledge/)."""
        out = []
        for _name, event in self.h.pending():
            if json.loads(event)["events"][0]["oss"]["object"]["key"].startswith("knowledge/"):
                out += handle_event(self.store, event)
        return out

    def written(self):
        return sorted(o.key for o in self.store.iter("knowledge"))


@pytest.fixture
def client(tmp_path):
    return Client(str(tmp_path / "data"))


def test_documents_in_indexed_searched_deleted(client):
    status, body = client.http("POST", "/knowledge/lumen/documents",
                               {"path": "policies/refunds.md",
                                "content": "# Refunds\n\nCard refunds take 5-7 business days.\n"})
    assert status == 202, body
    assert body["status"] == "pending" and body["key"] == "knowledge/lumen/docs/policies/refunds.md"
    status, body = client.http("POST", "/knowledge/lumen/documents", "# 保修\n\n所有电器保修两年，电机保修五年。\n",
                               query={"path": "保修.md"})
    assert status == 202, body
    status, listing = client.http("GET", "/knowledge/lumen")
    assert status == 200 and {d["status"] for d in listing["docs"]} == {"pending"}
    assert [o["outcome"] for o in client.index()] == ["indexed", "indexed"]
    status, listing = client.http("GET", "/knowledge/lumen")
    assert [(d["path"], d["status"], d["chunks"]) for d in listing["docs"]] == [
        ("policies/refunds.md", "indexed", 1), ("保修.md", "indexed", 1)]
    assert listing["documents"] == 2 and listing["chunks"] == 2

    status, found = client.http("GET", "/knowledge/lumen/search", query={"q": "how long is a card refund", "k": "2"})
    assert status == 200 and found["passages"][0]["doc"] == "policies/refunds.md"
    status, found = client.http("GET", "/knowledge/lumen/search", query={"q": "电机保修几年"})
    assert found["passages"][0]["doc"] == "保修.md"
    status, text = client.http("GET", "/knowledge/lumen/documents/%E4%BF%9D%E4%BF%AE.md")
    assert status == 200 and "电机保修五年" in text

    # replacing a document replaces its passages
    status, _ = client.http("POST", "/knowledge/lumen/documents",
                            {"path": "policies/refunds.md", "content": "# Refunds\n\nRefunds now take 3 days.\n"})
    assert status == 202
    client.index()
    _, found = client.http("GET", "/knowledge/lumen/search", query={"q": "refund days"})
    assert [p["text"] for p in found["passages"]] == ["# Refunds\n\nRefunds now take 3 days."]

    status, body = client.http("DELETE", "/knowledge/lumen/documents/policies/refunds.md")
    assert status == 200 and body["deleted"] and body["index"] == "removed"
    _, found = client.http("GET", "/knowledge/lumen/search", query={"q": "refund days"})
    assert found["passages"] == []
    _, listing = client.http("GET", "/knowledge/lumen")
    assert [d["path"] for d in listing["docs"]] == ["保修.md"]


def test_bad_requests_are_refused_naming_the_problem_and_write_nothing(client):
    def refused(method, path, body=None, query=None, headers=KEY):
        status, answer = client.http(method, path, body, query, headers)
        assert 400 <= status < 500, (status, answer)
        return status, answer["message"]

    doc = {"path": "a.md", "content": "# A\n\ntext\n"}
    assert refused("POST", "/knowledge/lumen/documents", doc, headers={})[0] == 401
    assert refused("POST", "/knowledge/lumen/documents", doc, headers={"Authorization": "Bearer wrong"})[0] == 403
    assert refused("GET", "/knowledge/lumen", headers={})[0] == 401
    status, msg = refused("POST", "/knowledge/lumen/documents", {"path": "manual.pdf", "content": "x"})
    assert status == 400 and ("PDF" in msg or ".md, .markdown, .txt" in msg)
    status, msg = refused("POST", "/knowledge/lumen/documents", {"path": "tool.exe", "content": "x"})
    assert status == 400 and "unsupported document type '.exe'" in msg
    status, msg = refused("POST", "/knowledge/lumen/documents", {"path": "../escape.md", "content": "x"})
    assert status == 400 and "'..'" in msg
    status, msg = refused("POST", "/knowledge/lumen/documents", {"path": "/etc/x.md", "content": "x"})
    assert status == 400 and "relative" in msg
    status, msg = refused("POST", "/knowledge/lumen/documents", "x" * (1024 * 1024 + 1), query={"path": "big.md"})
    assert status == 413 and "1048576 bytes" in msg
    status, msg = refused("POST", "/knowledge/lumen/documents", {"path": "a.md", "content": 5})
    assert status == 400 and "'content'" in msg
    status, msg = refused("POST", "/knowledge/lumen/documents", {"path": "a.md", "content": "x", "extra": 1})
    assert status == 400 and "extra" in msg
    status, msg = refused("POST", "/knowledge/lumen/documents", b"\xff\xfe", query={"path": "a.txt"})
    assert status == 400 and "UTF-8" in msg
    status, msg = refused("POST", "/knowledge/Bad%20Name/documents", doc)
    assert status == 400 and "knowledge base name" in msg
    status, msg = refused("GET", "/knowledge/nothing")
    assert status == 404 and "'nothing'" in msg
    status, msg = refused("GET", "/knowledge/nothing/search", query={"q": "x"})
    assert status == 404
    status, msg = refused("DELETE", "/knowledge/nothing/documents/a.md")
    assert status == 404
    assert client.written() == []  # nothing above wrote anything

    assert client.http("POST", "/knowledge/lumen/documents", doc)[0] == 202
    before = client.written()
    status, msg = refused("DELETE", "/knowledge/lumen/documents/missing.md")
    assert status == 404 and "'missing.md'" in msg
    status, msg = refused("DELETE", "/knowledge/lumen/documents/a/../a.md")
    assert status == 400
    status, msg = refused("GET", "/knowledge/lumen/search")
    assert status == 400 and "'q'" in msg
    status, msg = refused("GET", "/knowledge/lumen/search", query={"q": "x", "k": "500"})
    assert status == 400 and "'k'" in msg
    assert refused("PUT", "/knowledge/lumen/documents", doc)[0] == 405
    assert refused("GET", "/knowledge/lumen/elsewhere")[0] == 404
    assert client.written() == before


def test_the_sample_kb_answers_in_both_languages(client):
    assert len(seed_samples(client.store)) >= 5
    assert all(o["outcome"] == "indexed" for o in client.index())
    _, found = client.http("GET", "/knowledge/lumen/search", query={"q": "customer smells burning from the vacuum"})
    assert found["passages"][0]["doc"] == "escalation.md"
    _, found = client.http("GET", "/knowledge/lumen/search", query={"q": "订单满多少免运费"})
    assert found["passages"][0]["doc"] == "shipping.md"
    _, listing = client.http("GET", "/knowledge/lumen")
    assert all(d["status"] == "indexed" for d in listing["docs"])
