"""s.yaml is the single list of functions and triggers: valid for the fc3 component, and in
agreement with the code, the scenarios and the local runtime."""

import os
import re

import jsonschema
import pytest
import yaml

from shared import scenarios
from tests.conftest import EVENTS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as _f:
    DOC = yaml.safe_load(_f)
with open(os.path.join(EVENTS, "fc3-schema.json"), encoding="utf-8") as _f:
    import json

    SCHEMA = json.load(_f)

_VAR = re.compile(r"\$\{vars\.(\w+)\}")
_CONFIG = re.compile(r"\$\{config\('(\w+)'\)\}")
_ENV = re.compile(r"\$\{env\('(\w+)'\)\}")


def resolve(value):
    """Resolve ${vars.x} and ${config('AccountID')} as Serverless Devs would, before validating."""
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if isinstance(value, str):
        for _ in range(5):
            value = _VAR.sub(lambda m: str(DOC["vars"][m.group(1)]), value)
            value = _CONFIG.sub("1234567890", value)
            value = _ENV.sub(lambda m: f"<{m.group(1)} from the deployer's environment>", value)
        assert "${" not in value, value
    return value


RESOURCES = {name: resolve(res["props"]) for name, res in DOC["resources"].items()}


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_every_function_validates_against_the_fc3_schema(name):
    assert DOC["resources"][name]["component"] == "fc3"
    jsonschema.validate(RESOURCES[name], SCHEMA)


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_every_function_has_its_code_and_a_known_handler_form(name):
    props = RESOURCES[name]
    module, _, attr = props["handler"].partition(".")
    assert props["handler"] == "index.handler"  # the only form FC documents
    path = os.path.join(ROOT, props["code"], f"{module}.py")
    with open(path, encoding="utf-8") as f:
        assert f"def {attr}(event, context)" in f.read()
    assert props["environmentVariables"]["TROUPE_FUNCTION_ID"] == name
    assert props["environmentVariables"]["METAGPT_PROJECT_ROOT"].startswith("/tmp")


def test_no_secret_in_plain_text():
    # every secret-looking variable is a reference to the deployer's environment, never a value
    for name, res in DOC["resources"].items():
        for var, value in res["props"].get("environmentVariables", {}).items():
            if re.search(r"KEY|SECRET|PASSWORD|TOKEN$", var.upper()):  # not TROUPE_LLM_MAX_TOKENS
                assert re.fullmatch(r"\$\{env\('[A-Z0-9_]+'\)\}", str(value)), (name, var)
    text = open(os.path.join(ROOT, "s.yaml"), encoding="utf-8").read().lower()
    assert "sk-" not in text and "accesskeysecret" not in text


def test_oss_triggers_own_disjoint_inbox_prefixes():
    filters = []
    for name, props in RESOURCES.items():
        for trig in props.get("triggers", []):
            if trig["triggerType"] == "oss":
                key = trig["triggerConfig"]["filter"]["key"]
                if name == "pipeline":  # request files, and every conversation's end marker
                    assert (key["prefix"], key["suffix"]) in {("requests/", ".json"), ("conversations/", "end.json")}
                elif name == "indexer":  # every document under knowledge/ (its index is written elsewhere)
                    assert (key["prefix"], key.get("suffix", "")) == ("knowledge/", "")
                else:
                    assert key["prefix"] == f"inbox/{name}/"
                assert trig["sourceArn"].endswith(":" + DOC["vars"]["bucket"])
                assert trig["invocationRole"]
                filters.append((key["prefix"], key.get("suffix", "")))
    assert len(filters) <= 10  # native OSS triggers per bucket
    # OSS refuses two triggers whose filters can match one key
    for i, (pa, sa) in enumerate(filters):
        for pb, sb in filters[i + 1:]:
            assert not ((pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa)))


def test_every_scenario_role_is_bound_to_a_declared_oss_triggered_function():
    triggered = {name for name, props in RESOURCES.items()
                 if any(t["triggerType"] == "oss" for t in props.get("triggers", []))}
    for sc in scenarios.builtin().values():
        for role in sc["roles"]:
            assert role["function"] in triggered, (sc["id"], role["name"])


def test_on_failure_destinations_name_declared_functions():
    names = {props["functionName"] for props in RESOURCES.values()}
    for props in RESOURCES.values():
        dest = props.get("asyncInvokeConfig", {}).get("destinationConfig", {}).get("onFailure", {}).get("destination")
        if dest:
            assert dest.split(":functions/")[-1] in names


def test_every_role_function_declares_its_instance_limit():
    # each function that calls the LLM is capped, so that together they stay under the model's rate
    # limit (the comments in s.yaml and the README's deploy section give the arithmetic)
    from infra.local import spec as specs

    for f in specs.load(os.path.join(ROOT, "s.yaml")):
        if any(t["prefix"].startswith("inbox/") for t in f.oss_triggers):
            assert f.max_instances is not None and f.max_instances >= 1, f.id


def test_an_instance_limit_of_zero_is_refused(tmp_path):
    from infra.local import spec as specs

    path = tmp_path / "s.yaml"
    path.write_text("edition: 3.0.0\nname: x\nresources:\n  f:\n    component: fc3\n    props:\n"
                    "      functionName: f\n      code: ./f\n      handler: index.handler\n"
                    "      concurrencyConfig: {reservedConcurrency: 0}\n")
    with pytest.raises(specs.SpecError, match="reservedConcurrency"):
        specs.load(str(path))


def test_gateway_has_the_http_trigger():
    trig, = RESOURCES["gateway"]["triggers"]
    assert trig["triggerType"] == "http" and {"GET", "POST"} <= set(trig["triggerConfig"]["methods"])


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_every_function_has_its_own_role_and_policy(name):
    # RAM role names take letters, digits, dots and hyphens only
    assert RESOURCES[name]["role"].endswith(f":role/troupe-{name.replace('_', '-')}")
    assert os.path.exists(os.path.join(ROOT, "infra", "ram", f"{name}.json"))


def test_gateway_knows_which_functions_may_play_roles():
    declared = set(RESOURCES["gateway"]["environmentVariables"]["TROUPE_ROLE_FUNCTIONS"].split(","))
    triggered = {name for name, props in RESOURCES.items()
                 if any(t["triggerType"] == "oss" for t in props.get("triggers", []))
                 and name not in ("director", "pipeline", "indexer")}
    assert declared == triggered
