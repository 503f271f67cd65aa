"""Access control: an API key to start, a per-conversation token for everything else."""

import json

import pytest

from infra.testing.harness import API_KEY


def _keys(h):
    return sorted(o.key for o in h.store.iter(""))


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"Authorization": "Bearer wrong-key"}, 403),
    ({"Authorization": "Basic " + API_KEY}, 401),
    ({"Authorization": f"Bearer {API_KEY}x"}, 403),
])
def test_no_conversation_starts_without_the_api_key(harness, headers, status):
    before = _keys(harness)
    got, err = harness.http("POST", "/conversations", {"scenario": "debate", "input": "x"}, headers=headers, auth=False)
    assert got == status and err["message"]
    assert _keys(harness) == before


def test_without_a_configured_key_the_gateway_refuses_to_start(harness):
    harness.gateway.api_key = None
    got, err = harness.http("POST", "/conversations", {"scenario": "debate", "input": "x"})
    assert got == 503 and "TROUPE_API_KEY" in err["message"]


@pytest.mark.parametrize("suffix", ["", "/invocations", "/usage"])
def test_a_conversation_is_unreadable_without_its_token(harness, suffix):
    # GIVEN two conversations
    mine, theirs = harness.start(), harness.start()
    harness.pump()
    path = f"/conversations/{theirs}{suffix}"
    # WHEN one is read with no token, with the other's token, or with the API key
    no_token = harness.http("GET", path, auth=False)
    other_token = harness.http("GET", path, headers={"Authorization": f"Bearer {harness.tokens[mine]}"})
    api_key = harness.http("GET", path, headers={"Authorization": f"Bearer {API_KEY}"})
    # THEN it is refused, and nothing of its transcript leaks
    assert no_token[0] == 401 and other_token[0] == 403 and api_key[0] == 403
    for _, body in (no_token, other_token, api_key):
        assert "messages" not in body and "rows" not in body and "invocations" not in body
    # AND its own token reads it
    assert harness.http("GET", path)[0] == 200


def test_token_is_returned_once_and_never_stored(harness):
    status, body = harness.http("POST", "/conversations", {"scenario": "debate", "input": "Tea?"})
    assert status == 201 and body["token"].startswith("tok_") and len(body["token"]) > 30
    harness.pump()
    for info in harness.store.iter(""):
        data = harness.store.get(info.key).decode("utf-8", "replace")
        assert body["token"] not in data and API_KEY not in data
    _, shown = harness.http("GET", f"/conversations/{body['id']}")
    assert body["token"] not in json.dumps(shown) and "token_sha256" not in json.dumps(shown)


def test_ids_are_unguessable(harness):
    ids = {harness.start() for _ in range(5)}
    assert len(ids) == 5
    assert all(len(i.split("-")[1]) == 24 for i in ids)


def test_scenarios_are_public(harness):
    assert harness.http("GET", "/scenarios", auth=False)[0] == 200


def test_a_retried_start_with_an_idempotency_key_gets_the_same_conversation(tmp_path):
    from infra.testing.harness import API_KEY, Harness

    h = Harness(str(tmp_path))
    body = {"scenario": "debate", "input": "Tea or coffee?", "rounds": 1}
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "order-7781:start"}
    first = h.http("POST", "/conversations", body, headers=headers)
    again = h.http("POST", "/conversations", body, headers=headers)
    assert first[0] == again[0] == 201
    assert again[1]["id"] == first[1]["id"] and again[1]["token"] == first[1]["token"]
    metas = [i.key for i in h.store.iter("conversations/") if i.key.endswith("/meta.json")]
    assert len(metas) == 1 and len(h.pending_inbox()) == 1  # one conversation, one opening delivery
    # the token it returns reads the conversation
    assert h.http("GET", f"/conversations/{first[1]['id']}",
                  headers={"Authorization": f"Bearer {again[1]['token']}"})[0] == 200
    # the same key with another body is a conflict; a malformed key is refused; neither starts anything
    status, err = h.http("POST", "/conversations", {**body, "input": "Coffee or tea?"}, headers=headers)
    assert status == 409 and err["details"]["field"] == "Idempotency-Key"
    status, err = h.http("POST", "/conversations", body, headers={**headers, "Idempotency-Key": "bad key!"})
    assert status == 400 and err["details"]["field"] == "Idempotency-Key"
    # another key is another conversation
    other = h.http("POST", "/conversations", body, headers={**headers, "Idempotency-Key": "order-7782"})
    assert other[0] == 201 and other[1]["id"] != first[1]["id"]
    assert len([i for i in h.store.iter("conversations/") if i.key.endswith("/meta.json")]) == 2
