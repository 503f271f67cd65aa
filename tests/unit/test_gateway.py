"""The REST API: happy paths and every kind of bad input (4xx, named problem, nothing written)."""

import json

import pytest

from shared.events import HttpEvent
from tests.conftest import load_event


def _keys(h):
    return sorted(o.key for o in h.store.iter(""))


def test_create_then_read_with_cursor(harness):
    # GIVEN a new debate
    status, body = harness.http("POST", "/conversations", {"scenario": "debate", "input": "Ban cars?",
                                                           "limits": {"max_turns": 4}})
    assert status == 201 and body["status"] == "running" and body["limits"]["max_turns"] == 4
    cid = body["id"]
    harness.pump()
    # WHEN the transcript is read in two pages
    status, first = harness.http("GET", f"/conversations/{cid}", query={"limit": "2"})
    status2, rest = harness.http("GET", f"/conversations/{cid}", query={"after": first["cursor"]})
    # THEN pages join into the whole transcript, in order, and the status is final
    assert status == status2 == 200
    turns = [m["turn"] for m in first["messages"] + rest["messages"]]
    assert turns == [0, 1, 2, 3, 4]
    assert rest["status"] == "completed" and rest["end"]["reason"] == "deliverable"
    assert rest["deliverable"]["role"] == "Judge" and rest["deliverable"]["content"]
    # AND asking after the last cursor returns nothing new
    _, empty = harness.http("GET", f"/conversations/{cid}", query={"after": rest["cursor"]})
    assert empty["messages"] == [] and empty["cursor"] == rest["cursor"]


def test_invocations_one_record_per_turn(harness):
    cid = harness.start(max_turns=3)
    harness.pump()
    status, body = harness.http("GET", f"/conversations/{cid}/invocations")
    assert status == 200
    committed = [r for r in body["invocations"] if r["outcome"] == "committed"]
    assert [r["turn"] for r in committed] == [1, 2, 3]
    assert all(r["function"] == "persona" and r["pid"] and r["duration_ms"] >= 0 and r["request_id"]
               for r in committed)


def test_scenarios_lists_debate(harness):
    status, body = harness.http("GET", "/scenarios")
    assert status == 200
    debate = next(s for s in body["scenarios"] if s["id"] == "debate")
    assert debate["title"]["zh"] and [r["name"] for r in debate["roles"]] == ["Proponent", "Opponent", "Judge"]


@pytest.mark.parametrize("body, status, needle", [
    ("{not json", 400, "not valid JSON"),
    ("", 400, "empty"),
    ("[1, 2]", 400, "JSON object"),
    ({"input": "x"}, 400, "scenario"),
    ({"scenario": "nope", "input": "x"}, 400, "unknown scenario"),
    ({"scenario": 7, "input": "x"}, 400, "scenario"),
    ({"scenario": "debate"}, 400, "input"),
    ({"scenario": "debate", "input": ""}, 400, "input"),
    ({"scenario": "debate", "input": 42}, 400, "input"),
    ({"scenario": "debate", "input": "x" * 8001}, 413, "input"),
    ({"scenario": "debate", "input": "x", "limits": {"max_turns": -1}}, 400, "max_turns"),
    ({"scenario": "debate", "input": "x", "limits": {"max_turns": "5"}}, 400, "max_turns"),
    ({"scenario": "debate", "input": "x", "limits": {"max_turns": True}}, 400, "max_turns"),
    ({"scenario": "debate", "input": "x", "limits": {"max_turns": 100000}}, 400, "max_turns"),
    ({"scenario": "debate", "input": "x", "limits": {"budget": 1}}, 400, "budget"),
    ({"scenario": "debate", "input": "x", "limits": []}, 400, "limits"),
    ({"scenario": "debate", "input": "x", "extra": 1}, 400, "extra"),
    ("x" * 70000, 413, "larger"),
])
def test_bad_create_is_4xx_names_the_problem_and_writes_nothing(harness, body, status, needle):
    # GIVEN a store with one conversation already in it
    harness.start()
    before = _keys(harness)
    # WHEN a bad request is posted
    got, err = harness.http("POST", "/conversations", body)
    # THEN it is refused with a 4xx naming the problem and nothing is written
    assert got == status, err
    assert needle in err["message"] and err["error"]
    assert _keys(harness) == before


@pytest.mark.parametrize("path, query, status", [
    ("/conversations/..%2F..%2Fetc", {}, 400),
    ("/conversations/not-an-id", {}, 400),
    ("/conversations/20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a", {}, 404),
    ("/conversations/20261124t021832-1f2e3d4c5b6a7f8e9d0c1b2a/invocations", {}, 404),
    ("/nowhere", {}, 404),
])
def test_bad_reads(harness, path, query, status):
    got, err = harness.http("GET", path, query=query)
    assert got == status and err["message"]


@pytest.mark.parametrize("query", [{"after": "../../x"}, {"limit": "0"}, {"limit": "abc"}, {"limit": "501"}])
def test_bad_query_parameters(harness, query):
    cid = harness.start()
    got, err = harness.http("GET", f"/conversations/{cid}", query=query)
    assert got == 400 and err["details"]["field"] in query


def test_wrong_method(harness):
    got, err = harness.http("DELETE", "/conversations")
    assert got == 405 and "POST" in err["message"]


def test_http_event_view_reads_the_real_payload():
    event = HttpEvent.parse(load_event("http-event.json"))
    assert event.method == "POST"
    assert event.path.startswith("/2023-03-30/functions/")
    assert event.body == b"haha"
    assert event.headers["content-type"] == "application/octet-stream"


def test_gateway_answers_a_real_http_payload_with_a_json_404(harness):
    resp = harness.gateway.handle(load_event("http-event.json"))
    assert resp["statusCode"] == 404 and json.loads(resp["body"])["error"] == "NotFound"


def test_the_routes_are_declared_once_for_dispatch_and_the_openapi_document(harness):
    from shared import openapi, routes
    from infra.local.events import make_http_event
    from shared.gateway import Gateway

    # GIVEN the declared routes; THEN /openapi.json documents exactly them, and each has its handler
    status, doc = harness.http("GET", "/openapi.json")
    documented = {(path, method.upper()) for path, item in doc["paths"].items() for method in item}
    assert status == 200 and documented == {(r.path, r.method) for r in routes.ROUTES}
    assert doc == openapi.document() and all(callable(getattr(Gateway, r.handler, None)) for r in routes.ROUTES)
    # AND every documented operation reaches its handler: never "no route", never the wrong method
    cid = harness.start()
    samples = {"id": cid, "kb": "lumen", "path": "a/b.md", "file": "app.js"}
    for r in routes.ROUTES:
        path = r.path.format(**samples)
        resp = harness.gateway.handle(make_http_event(r.method, path, body=b"{}", headers={}))
        assert resp["statusCode"] not in (404, 405) or "no route" not in resp["body"], (r.method, path, resp["body"])
        assert resp["statusCode"] != 405, (r.method, path)
    # AND a path declared for other methods answers 405 naming them; an undeclared one 404
    assert harness.http("PUT", f"/conversations/{cid}/cancel")[1]["message"].endswith("use POST")
    got, err = harness.http("GET", "/nowhere")
    assert got == 404 and "no route for GET /nowhere" in err["message"]


def test_the_gateway_speaks_http_and_leaves_every_turn_to_the_conversation_service(harness):
    import inspect

    from shared import gateway, pipeline, service

    # GIVEN the modules: the gateway commits nothing itself; starts and human turns are the service's
    source = inspect.getsource(gateway)
    assert ".commit(" not in source and "turn_record(" not in source and "follow(" not in source
    assert ".commit(" in inspect.getsource(service) and "ConversationService" in inspect.getsource(pipeline)
    # AND a start over HTTP and one through the service (as the pipeline makes it) write the same opening
    cid = harness.start(text="Ban cars?")
    meta, _ = service.ConversationService(harness.convs).start({"scenario": "debate", "input": "Ban cars?"}, 1.0)
    first, second = (harness.transcript(c)[0] for c in (cid, meta["id"]))
    assert {k: v for k, v in first.items() if k != "id" and k != "message"} == \
           {k: v for k, v in second.items() if k != "id" and k != "message"}
