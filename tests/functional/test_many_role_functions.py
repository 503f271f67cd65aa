"""More role functions than a bucket's native OSS triggers allow (10): the extra ones are woken by
EventBridge-based OSS triggers, declared in s.yaml as the fc3 component takes them, validated
against its schema, and run by the local runtime, which delivers each one a CloudEvent."""

import copy
import json
import os
import re
import time
import urllib.request

import jsonschema
import pytest
import yaml

from infra.local.runtime import LocalRuntime
from tests.conftest import EVENTS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAST = ["cast_a", "cast_b", "cast_c", "cast_d", "cast_e"]


def eventbridge_trigger(function: str) -> dict:
    """The EventBridge-based OSS trigger of a role function: its inbox prefix, as docs/architecture.md shows."""
    pattern = {"source": ["acs.oss"], "type": ["oss:ObjectCreated:PutObject"],
               "subject": [{"prefix": "acs:oss:${vars.region}:${config('AccountID')}:${vars.bucket}/inbox/%s/" % function}]}
    return {"triggerName": "inbox", "triggerType": "eventbridge",
            "triggerConfig": {"triggerEnable": True, "asyncInvocationType": True,
                              "eventRuleFilterPattern": json.dumps(pattern),
                              "eventSourceConfig": {"eventSourceType": "Default", "eventSourceParameters": {}},
                              "eventSinkConfig": {"deliveryOption": {"mode": "event-driven", "eventSchema": "CloudEvents"}},
                              "runOptions": {"mode": "event-driven"}}}


def twelve_role_functions() -> dict:
    """s.yaml with five more character functions beside persona, director and the five SOP roles."""
    with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    for res in doc["resources"].values():  # the copy lives elsewhere: code folders by absolute path
        res["props"]["code"] = os.path.normpath(os.path.join(ROOT, res["props"]["code"]))
    for name in CAST:
        res = copy.deepcopy(doc["resources"]["persona"])
        res["props"].update(functionName=f"troupe-{name.replace('_', '-')}", triggers=[eventbridge_trigger(name)])
        res["props"]["environmentVariables"]["TROUPE_FUNCTION_ID"] = name
        doc["resources"][name] = res
    env = doc["resources"]["gateway"]["props"]["environmentVariables"]
    env["TROUPE_ROLE_FUNCTIONS"] = ",".join([*env["TROUPE_ROLE_FUNCTIONS"].split(","), *CAST])
    return doc


def _resolve(value, doc):
    if isinstance(value, dict):
        return {k: _resolve(v, doc) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, doc) for v in value]
    if isinstance(value, str):
        for _ in range(5):
            value = re.sub(r"\$\{vars\.(\w+)\}", lambda m: str(doc["vars"][m.group(1)]), value)
            value = re.sub(r"\$\{config\('(\w+)'\)\}", "1234567890", value)
            value = re.sub(r"\$\{env\('(\w+)'\)\}", "from-the-environment", value)
    return value


def test_twelve_role_functions_validate_and_stay_within_the_native_trigger_limit():
    doc = twelve_role_functions()
    with open(os.path.join(EVENTS, "fc3-schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    native, role_functions = 0, set()
    for name, res in doc["resources"].items():
        props = _resolve(res["props"], doc)
        jsonschema.validate(props, schema)
        for trig in props.get("triggers", []):
            if trig["triggerType"] == "oss":
                native += 1
                if trig["triggerConfig"]["filter"]["key"]["prefix"] == f"inbox/{name}/":
                    role_functions.add(name)
            elif trig["triggerType"] == "eventbridge":
                pattern = json.loads(trig["triggerConfig"]["eventRuleFilterPattern"])
                assert pattern["subject"][0]["prefix"].endswith(f":{doc['vars']['bucket']}/inbox/{name}/")
                role_functions.add(name)
    assert len(role_functions) >= 12 and native <= 10


def _http(rt, method, path, token, body=None):
    req = urllib.request.Request(rt.http_url + path, data=json.dumps(body).encode() if body is not None else None,
                                 method=method, headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_conversation_runs_on_functions_woken_through_eventbridge(tmp_path):
    # GIVEN the twelve-function s.yaml, and a scenario whose roles live on three of the extra functions
    s_yaml = tmp_path / "s.yaml"
    s_yaml.write_text(yaml.safe_dump(twelve_role_functions(), allow_unicode=True))
    scene = {"id": "trio", "title": {"en": "Trio", "zh": "三人"}, "flow": "round_robin", "rounds": 1,
             "roles": [{"name": "Ann", "profile": "optimist", "function": "cast_a"},
                       {"name": "Ben", "profile": "sceptic", "function": "cast_b"},
                       {"name": "Cy", "profile": "referee", "function": "cast_c"}],
             "closing": {"role": "Cy", "title": {"en": "Call", "zh": "裁定"}, "instruction": "Decide."}}
    with LocalRuntime(str(tmp_path / "data"), str(s_yaml), llm="fake", retry_delay=0.05) as rt:
        status, body = _http(rt, "POST", "/scenarios", rt.api_key, scene)
        assert status == 201, body
        status, created = _http(rt, "POST", "/conversations", rt.api_key, {"scenario": "trio", "input": "Rain?"})
        assert status == 201, created
        deadline = time.time() + 120
        while time.time() < deadline:
            _, conv = _http(rt, "GET", f"/conversations/{created['id']}", created["token"])
            if conv["status"] != "running":
                break
            time.sleep(0.2)
        _, inv = _http(rt, "GET", f"/conversations/{created['id']}/invocations", created["token"])
        log = list(rt.invocation_log)
    # THEN it completed, each turn an invocation of its own function, each woken by a CloudEvent
    assert conv["status"] == "completed", conv["end"]
    assert [m["role"] for m in conv["messages"]] == ["user", "Ann", "Ben", "Cy"]
    assert [m["function"] for m in conv["messages"][1:]] == ["cast_a", "cast_b", "cast_c"]
    woken = {r.function_id for r in log if r.trigger == "eventbridge" and r.outcome == "ok"}
    assert woken == {"cast_a", "cast_b", "cast_c"}
    assert {r["function"] for r in inv["invocations"] if r.get("outcome") == "committed"} >= {"cast_a", "cast_b"}
