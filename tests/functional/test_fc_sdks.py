"""The local runtime through the three FC SDKs, with signature checking on: alibabacloud-fc20230330
(fc3), alibabacloud-fc-open20210406 (fc-open) and aliyun-fc2 (fc2), and `python -m infra.fc`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from infra.fc.client import FCError, make_invoker
from infra.fc.config import Credentials
from infra.local.runtime import LocalRuntime
from shared.conversation import ConversationStore
from infra.local.events import make_http_event

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SDKS = ["fc3", "fc-open", "fc2"]


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    with LocalRuntime(str(tmp_path_factory.mktemp("data")), os.path.join(ROOT, "s.yaml"),
                      retry_delay=0.05) as runtime:
        yield runtime


def _invoker(rt, sdk, secret=None, token=""):
    key = rt.api_server.access_key
    return make_invoker(sdk, rt.api_url, Credentials(key.id, secret or key.secret, token))


def _http_event(method, path, body=None, token=None) -> bytes:
    headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    raw = json.dumps(body).encode() if body is not None else b""
    if raw:
        headers["Content-Type"] = "application/json"
    return json.dumps(make_http_event(method, path, body=raw, headers=headers)).encode()


def _answer(invocation) -> tuple[int, dict]:
    assert invocation.ok, invocation.body
    answer = json.loads(invocation.body)
    return answer["statusCode"], json.loads(answer["body"])


def _find_conversation(rt, text, timeout=20) -> str:
    """The id of the conversation started with input `text` (an async start returns no id)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for info in rt.store.iter("conversations/"):
            if info.key.endswith("/meta.json") and json.loads(rt.store.get(info.key)).get("input") == text:
                return info.key.split("/")[1]
        time.sleep(0.05)
    raise AssertionError(f"no conversation with input {text!r} after {timeout}s")


def _wait_end(rt, cid, timeout=30) -> dict:
    convs, deadline = ConversationStore(rt.store), time.time() + timeout
    while time.time() < deadline:
        end = convs.get_end(cid)
        if end:
            return end
        time.sleep(0.05)
    raise AssertionError(f"conversation {cid} did not end in {timeout}s")


@pytest.mark.parametrize("sdk", SDKS)
def test_gateway_sync_and_async_through_each_sdk(rt, sdk):
    # (FC 2.0 SDKs address service/function; the local runtime ignores the service)
    client = _invoker(rt, sdk, token="sts-token-is-accepted" if sdk == "fc3" else "")
    # WHEN the gateway is invoked synchronously with an HTTP-trigger event for GET /scenarios
    status, listing = _answer(client.invoke("troupe-gateway", _http_event("GET", "/scenarios"), service="troupe"))
    # THEN it answers 200 with the catalog
    assert status == 200 and "debate" in {s["id"] for s in listing["scenarios"]}
    # WHEN a conversation is started asynchronously
    text = f"Should FC SDK {sdk} be used? {uuid.uuid4().hex[:8]}"
    queued = client.invoke("troupe-gateway", _http_event("POST", "/conversations",
                                                         {"scenario": "debate", "input": text,
                                                          "limits": {"max_turns": 3}}, rt.api_key),
                           asynchronous=True, service="troupe")
    # THEN FC's 202 carries the request id, and the conversation runs to completion
    assert queued.status == 202 and queued.request_id
    cid = _find_conversation(rt, text)
    assert _wait_end(rt, cid)["status"] == "completed"
    assert any(r.request_id == queued.request_id and r.function_id == "gateway" for r in rt.invocation_log)


@pytest.mark.parametrize("sdk", SDKS)
def test_a_wrong_secret_is_refused_and_invokes_nothing(rt, sdk):
    assert rt.wait_idle(30)
    before = len(rt.invocation_log)
    event = _http_event("POST", "/conversations", {"scenario": "debate", "input": "never started"}, rt.api_key)
    for asynchronous in (False, True):
        with pytest.raises(FCError) as e:
            _invoker(rt, sdk, secret="not-the-secret").invoke("troupe-gateway", event, asynchronous=asynchronous,
                                                              service="troupe")
        assert e.value.status == 403 and e.value.code == "SignatureNotMatch"
    assert rt.wait_idle(5)
    assert len(rt.invocation_log) == before


def _cli(rt, *args, env=None, timeout=60):
    key = rt.api_server.access_key
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "TROUPE_FC_"))}
    full.update({"ALIBABA_CLOUD_ACCESS_KEY_ID": key.id, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": key.secret,
                 "TROUPE_FC_ENDPOINT": rt.api_url, **(env or {})})
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "infra.fc", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_invoke_and_status(rt, tmp_path):
    secret = rt.api_server.access_key.secret
    # WHEN the CLI invokes the gateway with the GET /scenarios event (fc3, the default)
    done = _cli(rt, "invoke", "gateway", "--event", os.path.join(ROOT, "tests", "events", "http-get-scenarios.json"))
    # THEN it prints the function's result
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["statusCode"] == 200
    # WHEN a conversation is started through the SDK and followed with `status`
    client = _invoker(rt, "fc3")
    status, created = _answer(client.invoke("troupe-gateway", _http_event(
        "POST", "/conversations", {"scenario": "debate", "input": "CLI status?", "limits": {"max_turns": 2}},
        rt.api_key)))
    assert status == 201
    _wait_end(rt, created["id"])
    done = _cli(rt, "status", created["id"], "--token", created["token"], "--sdk", "fc2", "--service", "troupe")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "status: completed" and lines[2] == "turns: 2"
    assert json.loads(lines[1].split(": ", 1)[1])["status"] == "completed"
    # AND an async invoke prints the request id; a wrong token is the gateway's 403, not a crash
    event = tmp_path / "scenarios.json"
    event.write_bytes(_http_event("GET", "/scenarios"))
    done = _cli(rt, "invoke", "troupe-gateway", "--event", str(event), "--async", "--sdk", "fc-open",
                "--service", "troupe")
    assert done.returncode == 0 and len(done.stdout.strip()) == 32, done.stderr
    done = _cli(rt, "status", created["id"], "--token", "wrong")
    assert done.returncode == 1 and "403" in done.stderr
    # AND missing settings name the variable (exit 2); a wrong secret is the API's 403 (exit 1)
    done = _cli(rt, "invoke", "gateway", "--event", str(event), env={"ALIBABA_CLOUD_ACCESS_KEY_SECRET": None})
    assert done.returncode == 2 and "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in done.stderr
    done = _cli(rt, "invoke", "gateway", "--event", str(event), env={"TROUPE_FC_ENDPOINT": None})
    assert done.returncode == 2 and "TROUPE_FC_ENDPOINT" in done.stderr and "ALIBABA_CLOUD_ACCOUNT_ID" in done.stderr
    for sdk in SDKS:
        done = _cli(rt, "invoke", "gateway", "--event", str(event), "--sdk", sdk, "--service", "troupe",
                    env={"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "wrong", "ALIBABA_CLOUD_SECURITY_TOKEN": "STS.tok-7f3e9"})
        assert done.returncode == 1 and "SignatureNotMatch" in done.stderr, (sdk, done.stderr)
        assert "STS.tok-7f3e9" not in done.stderr + done.stdout and secret not in done.stderr + done.stdout


def test_cli_redrive_reopens_a_failed_conversation_through_the_sdk(rt):
    from infra.local.events import make_oss_event
    from shared.gateway import Gateway
    from shared.store.disk import DiskStore

    # GIVEN a conversation whose first delivery was dead-lettered (made without firing events,
    # then the onFailure destination invoked through the SDK, as FC would)
    quiet = ConversationStore(DiskStore(rt.data_dir))
    req = json.loads(_http_event("POST", "/conversations", {"scenario": "debate", "input": "Redrive me?",
                                                            "limits": {"max_turns": 2}}, "k"))
    created = Gateway(quiet, api_key="k").handle(req)
    cid = json.loads(created["body"])["id"]
    delivery = next(rt.store.iter(f"inbox/persona/{cid}/"))
    event = make_oss_event("troupe-local", "cn-hangzhou", delivery.key, delivery.size, delivery.etag)
    arn = "acs:fc:cn-hangzhou:1:functions/troupe-persona"
    record = {"timestamp": 0, "requestContext": {"requestId": "r1", "functionArn": arn,
                                                 "condition": "RetriesExhausted", "approximateInvokeCount": 3},
              "requestPayload": json.dumps(event), "responseContext": {"statusCode": 200},
              "responsePayload": json.dumps({"errorMessage": "model endpoint down", "errorType": "ConnectionError"})}
    assert _invoker(rt, "fc3").invoke("troupe-deadletter", json.dumps(record).encode()).ok
    assert quiet.get_end(cid)["status"] == "failed"
    # WHEN its dead letters are listed, then re-driven through the SDK
    dry = _cli(rt, "redrive", "--data", rt.data_dir, "--conversation", cid, "--dry-run")
    assert dry.returncode == 0 and f"would re-drive persona {delivery.key}" in dry.stdout, dry.stderr
    done = _cli(rt, "redrive", "--data", rt.data_dir, "--conversation", cid)
    # THEN it is reopened, the letter moved aside, the event sent, and the conversation completes
    assert done.returncode == 0, done.stderr
    assert f"reopened {cid}" in done.stdout and f"re-driven persona {delivery.key}" in done.stdout
    assert _wait_end(rt, cid)["status"] == "completed"
    assert not list(rt.store.iter(f"deadletters/persona/{cid}/"))
    assert len(list(rt.store.iter(f"deadletters-redriven/persona/{cid}/"))) == 1


def test_the_runtime_key_file_signs_for_tools_on_the_data_directory(rt):
    from infra.fc.client import local_async_invoker
    from infra.local.fcapi import read_key_file

    # GIVEN the key the running runtime keeps (mode 0600) in its data directory
    assert read_key_file(rt.data_dir) == rt.api_server.access_key
    assert os.stat(os.path.join(rt.runtime_dir, "fc-access-key.json")).st_mode & 0o077 == 0
    # WHEN a tool (infra/local/redrive.py --endpoint) invokes through it, THEN it is accepted
    send = local_async_invoker(rt.api_url, rt.data_dir)
    request_id = send("gateway", _http_event("GET", "/scenarios"))
    assert rt.wait_idle(10)
    assert any(r.request_id == request_id for r in rt.invocation_log)
