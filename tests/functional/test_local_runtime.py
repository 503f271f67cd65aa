"""The local runtime plays FC and OSS: tiny test functions declared in a temporary s.yaml."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from infra.local import spec as specs
from infra.local.__main__ import converse
from infra.local.runtime import REPO_ROOT, LocalRuntime
from shared.events import OssEvent

EVENTS = os.path.join(REPO_ROOT, "tests", "events")

S_YAML = """\
edition: 3.0.0
name: lrt
vars:
  region: cn-hangzhou
  app: lrt
  prefix: ${vars.app}-
  deadLetters: acs:fc:${vars.region}:${config('AccountID')}:functions/${vars.prefix}deadletter
resources:
  gateway:
    component: fc3
    props:
      region: ${vars.region}
      functionName: ${vars.prefix}gateway
      code: ./fn/gateway
      handler: index.handler
      triggers:
        - {triggerName: http, triggerType: http, triggerConfig: {authType: anonymous, methods: [GET, POST]}}
  echo:
    component: fc3
    props:
      region: ${vars.region}
      functionName: ${vars.prefix}echo
      runtime: python3.10
      code: ./fn/echo
      handler: index.handler
      memorySize: 256
      timeout: 10
      environmentVariables:
        GREETING: hello from ${vars.app}
        ACCOUNT: ${config('AccountID')}
      triggers:
        - {triggerName: http, triggerType: http, triggerConfig: {authType: anonymous, methods: [GET, POST]}}
  sink:
    component: fc3
    props:
      region: ${vars.region}
      functionName: ${vars.prefix}sink
      code: ./fn/sink
      handler: index.handler
      triggers:
        - triggerName: inbox
          triggerType: oss
          triggerConfig:
            events: ["oss:ObjectCreated:*"]
            filter: {key: {prefix: inbox/sink/, suffix: .json}}
  flaky:
    component: fc3
    props:
      region: ${vars.region}
      functionName: ${vars.prefix}flaky
      code: ./fn/flaky
      handler: index.handler
      asyncInvokeConfig: {maxAsyncRetryAttempts: 2}
      triggers:
        - triggerName: inbox
          triggerType: oss
          triggerConfig:
            events: ["oss:ObjectCreated:PutObject"]
            filter: {key: {prefix: inbox/flaky/, suffix: .json}}
  doomed:
    component: fc3
    props:
      region: ${vars.region}
      functionName: ${vars.prefix}doomed
      code: ./fn/doomed
      handler: index.handler
      asyncInvokeConfig:
        maxAsyncRetryAttempts: 1
        destinationConfig: {onFailure: {destination: "${vars.deadLetters}"}}
  deadletter:
    component: fc3
    props:
      region: ${vars.region}
      functionName: ${vars.prefix}deadletter
      code: ./fn/deadletter
      handler: index.handler
  slow:
    component: fc3
    props:
      region: ${vars.region}
      functionName: ${vars.prefix}slow
      code: ./fn/slow
      handler: index.handler
      timeout: 1
  broken:
    component: fc3
    props:
      region: ${vars.region}
      functionName: ${vars.prefix}broken
      code: ./fn/broken
      handler: index.handler
"""

# every test function answers the event b"pid" with its process id
PROLOGUE = """\
import json, os, time

def _log(name, record):
    with open(os.path.join(os.environ["TROUPE_DATA"], name), "a") as f:
        f.write(json.dumps(record) + "\\n")
"""

FUNCTIONS = {
    "gateway": """
        def handler(event, context):
            if event == b"pid":
                return str(os.getpid())
            req = json.loads(event)
            method, path = req["requestContext"]["http"]["method"], req["rawPath"]
            state = os.path.join(os.environ["TROUPE_DATA"], "conversation.json")
            script = [{"turn": 1, "role": "host", "content": "hello"},
                      {"turn": 2, "role": "guest", "content": "hi"}]
            if method == "POST" and path == "/conversations":
                body = json.loads(req["body"])
                with open(state, "w") as f:
                    json.dump(body, f)
                return {"statusCode": 201, "headers": {"Content-Type": "application/json"},
                        "body": json.dumps({"id": "c1", "status": "running"})}
            after = int(req["queryParameters"].get("after", 0))
            page = script[after:after + 1]
            cursor = after + len(page)
            status = "completed" if cursor == len(script) else "running"
            return {"statusCode": 200, "body": json.dumps(
                {"id": "c1", "status": status, "messages": page, "cursor": cursor})}
    """,
    "echo": """
        def handler(event, context):
            if event == b"pid":
                return str(os.getpid())
            print("handlers may print; the protocol survives")
            req = json.loads(event)
            if req.get("rawPath") == "/raise":
                raise ValueError("echo was asked to fail")
            return {"statusCode": 201 if req["requestContext"]["http"]["method"] == "POST" else 200,
                    "headers": {"Content-Type": "application/json", "X-Echo": "1"},
                    "isBase64Encoded": False,
                    "body": json.dumps({"method": req["requestContext"]["http"]["method"],
                                        "path": req["rawPath"], "query": req["queryParameters"],
                                        "body": req["body"], "headers": req["headers"],
                                        "greeting": os.environ.get("GREETING"),
                                        "function": context.function.name,
                                        "request_id": context.request_id})}
    """,
    "sink": """
        def handler(event, context):
            if event == b"pid":
                return str(os.getpid())
            data = json.loads(event)
            _log("sink.log", {"key": data["events"][0]["oss"]["object"]["key"], "event": data,
                              "pid": os.getpid()})
    """,
    "flaky": """
        def handler(event, context):
            if event == b"pid":
                return str(os.getpid())
            key = json.loads(event)["events"][0]["oss"]["object"]["key"]
            mark = os.path.join(os.environ["TROUPE_DATA"], "flaky-" + key.replace("/", "_"))
            first = not os.path.exists(mark)
            _log("flaky.log", {"key": key, "request_id": context.request_id, "failed": first})
            if first:
                open(mark, "w").close()
                raise RuntimeError("first delivery fails")
            return "ok"
    """,
    "doomed": """
        def handler(event, context):
            _log("doomed.log", {"request_id": context.request_id})
            raise KeyError("doomed always fails")
    """,
    "deadletter": """
        def handler(event, context):
            if event == b"pid":
                return str(os.getpid())
            _log("deadletter.log", json.loads(event))
    """,
    "slow": """
        def handler(event, context):
            request = json.loads(event)
            if request.get("exit"):
                os._exit(3)
            time.sleep(request["sleep"])
            return str(os.getpid())
    """,
    "broken": """
        raise ImportError("a dependency is missing")
    """,
}


def write_project(root) -> str:
    """A temporary s.yaml and the code of its functions; returns the s.yaml path."""
    for fid, body in FUNCTIONS.items():
        code = root / "fn" / fid
        code.mkdir(parents=True)
        (code / "index.py").write_text(PROLOGUE + textwrap.dedent(body))
    path = root / "s.yaml"
    path.write_text(S_YAML)
    return str(path)


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    root = tmp_path_factory.mktemp("lrt")
    runtime = LocalRuntime(str(root / "data"), write_project(root), retry_delay=0.01, stop_timeout=10)
    with runtime:
        yield runtime


def read_log(rt: LocalRuntime, name: str) -> list[dict]:
    path = os.path.join(rt.data_dir, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def key_shape(value):
    """The nested key structure of a JSON value (values ignored)."""
    if isinstance(value, dict):
        return {k: key_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [key_shape(v) for v in value[:1]]
    return None


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --- s.yaml ---------------------------------------------------------------------------------


def test_spec_loader_resolves_vars_and_defaults(tmp_path):
    # GIVEN a project whose s.yaml nests ${vars...} and uses ${config('AccountID')}
    path = write_project(tmp_path)
    # WHEN it is loaded
    fns = {s.id: s for s in specs.load(path)}
    # THEN names, paths, env, triggers and async config are resolved
    echo = fns["echo"]
    assert echo.name == "lrt-echo"
    assert echo.code == str(tmp_path / "fn" / "echo")
    assert (echo.handler_module, echo.handler_attr) == ("index", "handler")
    assert (echo.runtime, echo.memory, echo.timeout) == ("python3.10", 256, 10)
    assert echo.env == {"GREETING": "hello from lrt", "ACCOUNT": "1234567890"}
    assert echo.http == {"name": "http", "methods": ["GET", "POST"], "authType": "anonymous"}
    assert fns["sink"].oss_triggers == [{"name": "inbox", "events": ["oss:ObjectCreated:*"],
                                         "prefix": "inbox/sink/", "suffix": ".json"}]
    assert (fns["sink"].retries, fns["sink"].memory, fns["sink"].timeout) == (3, 512, 3)
    assert fns["flaky"].retries == 2
    assert fns["doomed"].on_failure == "deadletter"
    assert fns["doomed"].on_failure_arn == "acs:fc:cn-hangzhou:1234567890:functions/lrt-deadletter"
    assert fns["doomed"].arn() == "acs:fc:cn-hangzhou:1234567890:functions/lrt-doomed"


def test_spec_env_references_and_errors(tmp_path):
    # GIVEN references to the environment and to an undefined variable
    path = tmp_path / "s.yaml"
    path.write_text("vars: {a: '${vars.b}'}\nresources:\n  f:\n    component: fc3\n    props:\n"
                    "      code: ./f\n      environmentVariables: {X: \"${env('LRT_X')}\", Y: '${vars.a}'}\n")
    # WHEN/THEN env() comes from the given environment, an unknown var is a clear error
    with pytest.raises(specs.SpecError, match="vars has no 'b'"):
        specs.load(str(path), environ={"LRT_X": "1"})
    path.write_text(path.read_text().replace("${vars.b}", "b-value"))
    (f,) = specs.load(str(path), environ={"LRT_X": "from-env"})
    assert f.env == {"X": "from-env", "Y": "b-value"}
    assert f.on_failure is None and f.http is None and f.oss_triggers == []


def test_trigger_matching():
    record = json.load(open(os.path.join(EVENTS, "oss-event.json")))["events"][0]  # key image/a.jpg
    trig = {"events": ["oss:ObjectCreated:PutObject"], "prefix": "image/", "suffix": ".jpg"}
    assert specs.trigger_matches(record, trig)
    assert specs.trigger_matches(record, {**trig, "events": ["oss:ObjectCreated:*"]})
    assert not specs.trigger_matches(record, {**trig, "events": ["oss:ObjectCreated:PostObject"]})
    assert not specs.trigger_matches(record, {**trig, "events": ["oss:ObjectRemoved:*"]})
    assert not specs.trigger_matches(record, {**trig, "prefix": "images/"})
    assert not specs.trigger_matches(record, {**trig, "suffix": ".png"})


# --- OSS triggers ---------------------------------------------------------------------------


def test_put_under_prefix_fires_sink_once_with_real_event_shape(rt):
    # WHEN an object is put under the sink's prefix
    info = rt.store.put("inbox/sink/c1/0001-a.json", b'{"hello": 1}', create_only=True)
    assert rt.wait_idle(20)
    # THEN the sink ran exactly once, with an OSS trigger event shaped like the real one
    hits = [r for r in read_log(rt, "sink.log") if r["key"] == "inbox/sink/c1/0001-a.json"]
    assert len(hits) == 1
    event = hits[0]["event"]
    reference = json.load(open(os.path.join(EVENTS, "oss-event.json")))
    assert key_shape(event) == key_shape(reference)
    rec = OssEvent.parse(json.dumps(event)).records[0]
    assert rec.event_name == "ObjectCreated:PutObject"
    assert (rec.size, rec.etag, rec.bucket) == (info.size, info.etag, rt.spool.bucket)
    assert os.listdir(rt.spool.events_dir) == []
    assert rt.trigger_latencies("sink") and all(ms >= 0 for ms in rt.trigger_latencies("sink"))


def test_keys_outside_the_filter_fire_nothing(rt):
    before = len(read_log(rt, "sink.log"))
    # WHEN objects are put beside the prefix, with the wrong suffix, or deeper elsewhere
    for key in ("inbox/sinkhole/x.json", "inbox/sink/c1/x.txt", "other/inbox/sink/x.json"):
        rt.store.put(key, b"{}")
    assert rt.wait_idle(20)
    # THEN nothing ran and the spool was still emptied
    assert len(read_log(rt, "sink.log")) == before
    assert os.listdir(rt.spool.events_dir) == []


def test_retry_then_success(rt):
    # WHEN the flaky function fails its first delivery
    rt.store.put("inbox/flaky/k1.json", b"{}")
    assert rt.wait_idle(20)
    # THEN FC-style async retry ran it again, under the same request id, and it succeeded
    calls = [r for r in read_log(rt, "flaky.log") if r["key"] == "inbox/flaky/k1.json"]
    assert [c["failed"] for c in calls] == [True, False]
    assert calls[0]["request_id"] == calls[1]["request_id"]
    recs = [r for r in rt.invocation_log if r.function_id == "flaky" and r.request_id == calls[0]["request_id"]]
    assert [(r.attempt, r.outcome, r.trigger) for r in recs] == [(1, "error", "oss"), (2, "ok", "oss")]
    assert not os.path.exists(os.path.join(rt.runtime_dir, "deadletters", "flaky"))


def test_retries_exhausted_go_to_destination_and_dead_letters(rt):
    # WHEN an async invocation fails on every attempt (1 + maxAsyncRetryAttempts=1)
    queued = rt.invoke("doomed", b'{"x": 1}', sync=False)
    assert queued.status == "queued"
    assert rt.wait_idle(20)
    # THEN the onFailure destination got FC's failure record ...
    assert len([r for r in read_log(rt, "doomed.log") if r["request_id"] == queued.request_id]) == 2
    (record,) = [r for r in read_log(rt, "deadletter.log")
                 if r["requestContext"]["requestId"] == queued.request_id]
    ctx = record["requestContext"]
    assert ctx["condition"] == "RetriesExhausted"
    assert ctx["approximateInvokeCount"] == 2
    assert ctx["functionArn"] == "acs:fc:cn-hangzhou:1234567890:functions/lrt-doomed"
    assert record["requestPayload"] == '{"x": 1}'
    assert record["responseContext"]["functionError"] == "UnhandledInvocationError"
    assert "doomed always fails" in record["responsePayload"]
    assert set(record) == {"timestamp", "requestContext", "requestPayload", "responseContext",
                           "responsePayload"}
    # ... and a dead-letter file holds the same record
    folder = os.path.join(rt.runtime_dir, "deadletters", "doomed")
    (name,) = [n for n in os.listdir(folder) if queued.request_id in n]
    assert json.load(open(os.path.join(folder, name))) == record
    assert "destination" in [r.trigger for r in rt.invocation_log if r.function_id == "deadletter"]


# --- HTTP trigger ---------------------------------------------------------------------------


def test_http_trigger_round_trip(rt):
    url = rt.http_urls["echo"]
    # WHEN a POST with a query, a header and a body arrives
    status, headers, body = http("POST", url + "/a/b?x=1&y=two", b'{"k": "v"}', {"X-Test": "yes"})
    # THEN the handler saw the FC 3.0 HTTP event and its response dict became the response
    assert status == 201
    assert headers["X-Echo"] == "1" and headers["x-fc-request-id"]
    seen = json.loads(body)
    assert (seen["method"], seen["path"], seen["query"], seen["body"]) == ("POST", "/a/b", {"x": "1", "y": "two"},
                                                                          '{"k": "v"}')
    assert seen["headers"]["X-Test"] == "yes"
    assert seen["greeting"] == "hello from lrt" and seen["function"] == "lrt-echo"
    assert seen["request_id"] == headers["x-fc-request-id"]
    status, _, body = http("GET", url + "/")
    assert status == 200 and json.loads(body)["method"] == "GET"


def test_http_errors(rt):
    url = rt.http_urls["echo"]
    status, headers, body = http("GET", url + "/raise")
    assert status == 502
    assert json.loads(body)["errorType"] == "ValueError"
    assert headers["x-fc-error-type"] == "UnhandledInvocationError"
    status, _, body = http("DELETE", url + "/a")
    assert status == 405 and json.loads(body)["error"] == "MethodNotAllowed"


def test_run_command_follows_a_conversation(rt, capsys):
    # GIVEN the (fake) gateway is the runtime's main HTTP trigger
    assert rt.http_url == rt.http_urls["gateway"] != rt.http_urls["echo"]
    # WHEN the CLI's conversation loop follows it
    code = converse(rt.http_url, "debate", "AI and jobs", max_turns=4, timeout=30)
    # THEN every message is printed once, in order, and the exit code reflects the status
    out = [re.sub(r" \(\d+\.\d s\)", "", line) for line in capsys.readouterr().out.splitlines()]
    assert out == ["[1] host: hello", "[2] guest: hi", "status: completed"]
    assert code == 0
    posted = json.load(open(os.path.join(rt.data_dir, "conversation.json")))
    assert posted == {"scenario": "debate", "input": "AI and jobs", "limits": {"max_turns": 4}}


def test_fc_invoke_api_with_the_fc2_client(rt):
    fc2 = pytest.importorskip("fc2")
    key = rt.api_server.access_key  # the runtime checks FC signatures (infra/local/fcapi.py)
    client = fc2.Client(endpoint=rt.api_url, accessKeyID=key.id, accessKeySecret=key.secret)
    # WHEN a function is invoked by name through the 2016-08-15 API, sync then async
    pid = client.invoke_function("troupe", "lrt-echo", payload=b"pid").data
    assert pid == rt.invoke("echo", b"pid").result.encode()
    queued = client.invoke_function("troupe", "lrt-doomed", payload=b"{}",
                                    headers={"x-fc-invocation-type": "Async"})
    assert queued.headers["x-fc-request-id"]
    assert rt.wait_idle(20)
    assert any(r.request_id == queued.headers["x-fc-request-id"] for r in rt.invocation_log)
    # THEN a function error raises as against the cloud, and unknown functions are 404s
    with pytest.raises(fc2.fc_exceptions.FcError):
        client.invoke_function("troupe", "slow", payload=b"not json")
    with pytest.raises(fc2.fc_exceptions.FcError) as e:
        client.invoke_function("troupe", "nope", payload=b"")
    assert e.value.status_code == 404 and e.value.err_code == "FunctionNotFound"
    # AND an unsigned request invokes nothing
    status, _, body = http("POST", rt.api_url + "/2023-03-30/functions/lrt-echo/invocations", b"pid")
    assert status == 403 and json.loads(body)["ErrorCode"] == "AccessDenied"


# --- processes ------------------------------------------------------------------------------


def test_each_function_has_its_own_warm_process(rt):
    first = {fid: rt.invoke(fid, b"pid") for fid in ("echo", "sink", "deadletter")}
    again = {fid: rt.invoke(fid, b"pid") for fid in first}
    pids = {fid: int(r.result) for fid, r in first.items()}
    assert all(r.ok for r in first.values())
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()
    assert {fid: int(r.result) for fid, r in again.items()} == pids  # warm: same worker
    assert not any(r.cold_start for r in again.values())


def test_cold_start_is_reported_once(tmp_path):
    rt = LocalRuntime(str(tmp_path / "data"), write_project(tmp_path))
    with rt:
        a, b = rt.invoke("echo", b"pid"), rt.invoke("echo", b"pid")
    assert a.cold_start and a.cold_start_ms > 0 and a.init_ms is not None
    assert not b.cold_start and b.cold_start_ms is None
    assert a.result == b.result


def test_handler_error_keeps_the_worker(rt):
    pid = rt.invoke("echo", b"pid").result
    event = json.dumps({"rawPath": "/raise", "requestContext": {"http": {"method": "GET"}}}).encode()
    failed = rt.invoke("echo", event)
    assert not failed.ok and failed.error_type == "ValueError"
    assert "echo was asked to fail" in failed.traceback
    assert rt.invoke("echo", b"pid").result == pid


def test_timeout_kills_the_worker(rt):
    warm = rt.invoke("slow", b'{"sleep": 0}')
    t0 = time.monotonic()
    # WHEN the handler runs past its 1 s timeout
    result = rt.invoke("slow", b'{"sleep": 30}')
    # THEN it is reported as FC does and its process is gone
    assert time.monotonic() - t0 < 5
    assert not result.ok and result.error_type == "FunctionTimeout"
    assert "timed out after 1 seconds" in result.error_message
    assert result.pid == int(warm.result)
    with pytest.raises(ProcessLookupError):
        os.kill(result.pid, 0)
    # AND the next request gets a fresh instance (a cold start)
    fresh = rt.invoke("slow", b'{"sleep": 0}')
    assert fresh.ok and fresh.cold_start and int(fresh.result) != result.pid
    assert [r.outcome for r in rt.invocation_log if r.function_id == "slow"][-2:] == ["timeout", "ok"]


def _concurrently(rt: LocalRuntime, fid: str, events: list[bytes]) -> list:
    with concurrent.futures.ThreadPoolExecutor(len(events)) as ex:
        return list(ex.map(lambda e: rt.invoke(fid, e), events))


def test_busy_instances_scale_out_up_to_the_limit(tmp_path):
    # GIVEN FC's scaling (no wait for a busy instance) and at most 2 instances
    rt = LocalRuntime(str(tmp_path / "data"), write_project(tmp_path), max_instances=2, scale_out_after=0)
    with rt:
        # WHEN three requests arrive together
        results = _concurrently(rt, "slow", [b'{"sleep": 0.4}'] * 3)
    # THEN two instances served them
    assert all(r.ok for r in results)
    assert len({r.pid for r in results}) == 2
    assert sum(r.cold_start for r in results) == 2


def test_a_functions_own_instance_limit_queues_what_exceeds_it(tmp_path):
    # GIVEN a function s.yaml limits to one instance, on a runtime that would start three
    project = write_project(tmp_path)
    with open(project) as f:
        text = f.read()
    text = text.replace("      code: ./fn/slow\n", "      code: ./fn/slow\n      concurrencyConfig: {reservedConcurrency: 1}\n")
    with open(project, "w") as f:
        f.write(text)
    rt = LocalRuntime(str(tmp_path / "data"), project, max_instances=3, scale_out_after=0)
    with rt:
        # WHEN three requests arrive together
        t0 = time.monotonic()
        results = _concurrently(rt, "slow", [b'{"sleep": 0.3}'] * 3)
        took = time.monotonic() - t0
    # THEN one instance served them one after another: none failed, none ran beside another
    assert all(r.ok for r in results) and len({r.pid for r in results}) == 1
    assert took >= 0.9 and sum(r.cold_start for r in results) == 1


def test_a_briefly_busy_instance_is_awaited_not_doubled(rt):
    rt.invoke("slow", b'{"sleep": 0}')  # warm
    results = _concurrently(rt, "slow", [b'{"sleep": 0.3}'] * 2)
    assert all(r.ok for r in results)
    assert len({r.pid for r in results}) == 1 and not any(r.cold_start for r in results)


def test_a_crashed_worker_is_replaced(rt):
    before = rt.invoke("slow", b'{"sleep": 0}')
    crashed = rt.invoke("slow", b'{"exit": true}')
    assert not crashed.ok and crashed.error_type == "WorkerCrashed" and crashed.pid == int(before.result)
    after = rt.invoke("slow", b'{"sleep": 0}')
    assert after.ok and after.cold_start and int(after.result) != crashed.pid


def test_an_import_error_fails_the_invocation_not_the_runtime(rt):
    result = rt.invoke("broken", b"{}")
    assert not result.ok and result.error_type == "ImportError"
    assert "Function initialization failed: a dependency is missing" == result.error_message
    assert "raise ImportError" in result.traceback
    assert rt.invoke("echo", b"pid").ok


def test_invoke_command(tmp_path):
    path = write_project(tmp_path)
    event = tmp_path / "event.json"
    event.write_bytes(b"pid")
    cmd = [sys.executable, "-m", "infra.local", "invoke", "echo", "--event", str(event),
           "--data", str(tmp_path / "data"), "--s-yaml", path]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().isdigit()
    event.write_bytes(b'{"rawPath": "/raise", "requestContext": {"http": {"method": "GET"}}}')
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "ValueError: echo was asked to fail" in done.stderr


# --- the project's own s.yaml ---------------------------------------------------------------


def test_project_s_yaml_functions_and_triggers():
    fns = specs.load(os.path.join(REPO_ROOT, "s.yaml"))
    assert fns, "s.yaml declares no functions"
    for f in fns:
        assert os.path.isfile(os.path.join(f.code, f.handler_module + ".py")), f"{f.id}: no {f.handler}"
    prefixes = [(f.id, t["prefix"]) for f in fns for t in f.oss_triggers]
    for fid, prefix in prefixes:
        # role functions wake on their inbox; the pipeline on request files and end markers
        assert prefix == f"inbox/{fid}/" or (fid == "pipeline" and prefix in ("requests/", "conversations/")) \
            or (fid == "indexer" and prefix == "knowledge/")
    for a, pa in prefixes:
        for b, pb in prefixes:
            if a != b:
                assert not pa.startswith(pb), f"OSS trigger prefixes of {a} and {b} overlap"


def test_an_eventbridge_trigger_on_oss_events_runs_locally_as_the_prefixes_it_filters():
    from infra.local.spec import _oss_rule

    def conf(pattern, schema="CloudEvents"):
        return {"eventSourceConfig": {"eventSourceType": "Default", "eventSourceParameters": {}},
                "eventSinkConfig": {"deliveryOption": {"mode": "event-driven", "eventSchema": schema}},
                "eventRuleFilterPattern": json.dumps(pattern)}

    by_subject = _oss_rule(conf({"source": ["acs.oss"], "type": ["oss:ObjectCreated:PutObject"],
                                 "subject": [{"prefix": "acs:oss:cn-hangzhou:1:b/inbox/poet/"},
                                             {"prefix": "acs:oss:cn-hangzhou:1:b/inbox/bard/"}]}))
    assert [(r["prefix"], r["events"], r["via"]) for r in by_subject] == [
        ("inbox/poet/", ["oss:ObjectCreated:PutObject"], "eventbridge"),
        ("inbox/bard/", ["oss:ObjectCreated:PutObject"], "eventbridge")]
    by_key = _oss_rule(conf({"source": ["acs.oss"], "data": {"oss": {"object": {"key": [
        {"prefix": "requests/"}, {"suffix": ".json"}]}}}}, schema="RawData"))
    assert [(r["prefix"], r["suffix"], r["schema"]) for r in by_key] == [("requests/", ".json", "RawData")]
    assert _oss_rule(conf({"source": ["acs.ecs"]})) is None  # not an OSS event rule: not run locally


def test_the_runtime_gives_its_workers_the_configs_llm(tmp_path, monkeypatch):
    from infra.local.runtime import LocalRuntime

    for k in ("TROUPE_LLM", "TROUPE_LLM_MODEL", "TROUPE_LLM_BASE_URL", "TROUPE_LLM_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    config = tmp_path / "config2.yaml"
    config.write_text("llm:\n  api_type: openai\n  model: m1\n  base_url: http://127.0.0.1:9/v1\n  api_key: k\n")
    monkeypatch.setenv("TROUPE_METAGPT_CONFIG", str(config))
    rt = LocalRuntime(str(tmp_path / "data"), llm="config2")
    rt.start(serve_http=False)
    try:
        worker = rt.worker_env(next(s for s in rt.specs if s.id == "persona"))
    finally:
        rt.stop()
    assert (worker["TROUPE_LLM"], worker["TROUPE_LLM_MODEL"], worker["TROUPE_LLM_BASE_URL"]) == (
        "openai", "m1", "http://127.0.0.1:9/v1")
