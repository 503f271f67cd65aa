"""Read s.yaml (Serverless Devs, fc3 component) into the function specs the local runtime runs.

s.yaml is the one list of functions and triggers: the cloud deploy and the local runtime both
read it. Only what the runtime needs is kept; defaults are those of the fc3 schema.
"""

from __future__ import annotations

import dataclasses
import logging
import json
import os
import re
from typing import Any, Mapping

import yaml

log = logging.getLogger(__name__)

LOCAL_ACCOUNT_ID = "1234567890"
DEFAULT_MEMORY = 512
DEFAULT_TIMEOUT = 3
DEFAULT_RETRIES = 3
DEFAULT_MAX_EVENT_AGE = 18000

_REF = re.compile(r"\$\{\s*([^}]*?)\s*\}")
_CALL = re.compile(r"""^(config|env)\(\s*['"]?([^'")]*)['"]?\s*\)$""")
_FUNCTION_ARN = re.compile(r"^acs:fc:[^:]*:[^:]*:(?:services/[^/]+/)?functions/([^/:]+)")


class SpecError(ValueError):
    """s.yaml cannot be read into function specs."""


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
    id: str
    """The resource key in s.yaml, e.g. "persona"."""
    name: str
    """props.functionName, e.g. "troupe-persona"."""
    code: str
    """Absolute path of the code directory."""
    handler: str
    runtime: str
    memory: int
    """MB"""
    timeout: int
    """seconds"""
    env: dict[str, str]
    http: dict | None
    """{"methods": [...], "authType": ...} for a function with an HTTP trigger."""
    oss_triggers: list[dict]
    """[{"name", "events", "prefix", "suffix"}]"""
    retries: int = DEFAULT_RETRIES
    """asyncInvokeConfig.maxAsyncRetryAttempts: an async event runs at most 1 + retries times."""
    max_event_age: int = DEFAULT_MAX_EVENT_AGE
    on_failure: str | None = None
    """Id of the function that receives failure records, when it is declared in s.yaml."""
    on_failure_arn: str | None = None
    """The onFailure destination as written (it may name something not run locally)."""
    region: str = "cn-hangzhou"
    max_instances: int | None = None
    """concurrencyConfig.reservedConcurrency: at most this many instances at once; FC queues what
    exceeds it (the local runtime does too)."""

    @property
    def handler_module(self) -> str:
        return self.handler.rpartition(".")[0]

    @property
    def handler_attr(self) -> str:
        return self.handler.rpartition(".")[2]

    def arn(self, account_id: str = LOCAL_ACCOUNT_ID) -> str:
        return f"acs:fc:{self.region}:{account_id}:functions/{self.name}"


# --- variable resolution --------------------------------------------------------------------


#: variables only a cloud deployment needs (the local runtime picks its own LLM): not warned about
CLOUD_ONLY_ENV = {"DASHSCOPE_API_KEY"}
_warned: set[str] = set()


def resolve(value: Any, variables: Mapping[str, Any], *, account_id: str = LOCAL_ACCOUNT_ID,
            environ: Mapping[str, str] | None = None, _depth: int = 0) -> Any:
    """Replace ${vars.x}, ${config('AccountID')} and ${env('X')} throughout `value`."""
    if _depth > 20:
        raise SpecError("s.yaml variables refer to each other in a cycle")
    environ = os.environ if environ is None else environ
    kw = dict(account_id=account_id, environ=environ)
    if isinstance(value, dict):
        return {k: resolve(v, variables, **kw, _depth=_depth) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, variables, **kw, _depth=_depth) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def one(ref: str) -> Any:
        if ref.startswith("vars."):
            name = ref[5:]
            if name not in variables:
                raise SpecError(f"s.yaml refers to ${{{ref}}} but vars has no {name!r}")
            return resolve(variables[name], variables, **kw, _depth=_depth + 1)
        call = _CALL.match(ref)
        if call and call.group(1) == "config":
            if call.group(2) == "AccountID":
                return account_id
            raise SpecError(f"unsupported ${{{ref}}} in s.yaml")
        if call and call.group(1) == "env":
            if call.group(2) not in environ and call.group(2) not in _warned and call.group(2) not in CLOUD_ONLY_ENV:
                _warned.add(call.group(2))
                log.warning("s.yaml refers to ${%s}, which is not set: using ''", ref)
            return environ.get(call.group(2), "")
        raise SpecError(f"unsupported reference ${{{ref}}} in s.yaml")

    whole = _REF.fullmatch(value)
    if whole:  # a lone reference keeps the referenced value's type
        return one(whole.group(1))
    return _REF.sub(lambda m: str(one(m.group(1))), value)


# --- loading --------------------------------------------------------------------------------


def load(path: str, *, account_id: str = LOCAL_ACCOUNT_ID,
         environ: Mapping[str, str] | None = None) -> list[FunctionSpec]:
    """The fc3 functions declared in s.yaml, in file order."""
    path = os.path.abspath(path)
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    variables = doc.get("vars") or {}
    resources = doc.get("resources") or {}
    if not isinstance(resources, dict):
        raise SpecError(f"{path}: 'resources' must be a mapping")
    base = os.path.dirname(path)
    raw = []
    for rid, res in resources.items():
        if not isinstance(res, dict) or res.get("component") != "fc3":
            continue
        props = resolve(res.get("props") or {}, variables, account_id=account_id, environ=environ)
        raw.append((rid, props))
    by_name = {props.get("functionName", rid): rid for rid, props in raw}
    return [_function(rid, props, base, by_name) for rid, props in raw]


def _function(rid: str, props: dict, base: str, by_name: dict[str, str]) -> FunctionSpec:
    code = props.get("code")
    if isinstance(code, dict):  # {src: ...} form
        code = code.get("src")
    if not isinstance(code, str):
        raise SpecError(f"resource {rid!r}: props.code must name a directory")
    handler = props.get("handler") or "index.handler"
    if "." not in handler:
        raise SpecError(f"resource {rid!r}: handler {handler!r} is not 'module.function'")
    http, oss = None, []
    for trig in props.get("triggers") or []:
        kind = trig.get("triggerType")
        conf = trig.get("triggerConfig") or {}
        if kind == "http":
            http = {"name": trig.get("triggerName", "http"),
                    "methods": [m.upper() for m in conf.get("methods") or ["GET", "POST"]],
                    "authType": conf.get("authType", "anonymous")}
        elif kind == "oss":
            key = (conf.get("filter") or {}).get("key") or {}
            oss.append({"name": trig.get("triggerName", "oss"), "events": list(conf.get("events") or []),
                        "prefix": key.get("prefix") or "", "suffix": key.get("suffix") or ""})
        elif kind == "eventbridge" and (rules := _oss_rule(conf)) is not None:
            oss += [{"name": trig.get("triggerName", "eventbridge"), **rule} for rule in rules]
        else:
            log.warning("resource %r: %s trigger is not run locally", rid, kind)
    async_conf = props.get("asyncInvokeConfig") or {}
    arn = ((async_conf.get("destinationConfig") or {}).get("onFailure") or {}).get("destination")
    return FunctionSpec(
        id=rid,
        name=props.get("functionName", rid),
        code=os.path.normpath(os.path.join(base, code)),
        handler=handler,
        runtime=props.get("runtime", ""),
        memory=int(props.get("memorySize", DEFAULT_MEMORY)),
        timeout=int(props.get("timeout", DEFAULT_TIMEOUT)),
        env={str(k): str(v) for k, v in (props.get("environmentVariables") or {}).items()},
        http=http,
        oss_triggers=oss,
        retries=int(async_conf.get("maxAsyncRetryAttempts", DEFAULT_RETRIES)),
        max_event_age=int(async_conf.get("maxAsyncEventAgeInSeconds", DEFAULT_MAX_EVENT_AGE)),
        on_failure=_destination(arn, by_name, rid),
        on_failure_arn=arn,
        region=props.get("region", "cn-hangzhou"),
        max_instances=_instance_limit(props, rid),
    )


def _instance_limit(props: dict, rid: str) -> int | None:
    value = (props.get("concurrencyConfig") or {}).get("reservedConcurrency")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise SpecError(f"resource {rid!r}: concurrencyConfig.reservedConcurrency must be a whole number of "
                        f"at least 1 (0 would stop the function), not {value!r}")
    return int(value)


def _oss_rule(conf: dict) -> list[dict] | None:
    """An EventBridge trigger on OSS events (source `Default`, pattern on `acs.oss`) as the OSS
    triggers it amounts to: event types from the pattern's `type`, key prefixes from its `subject`
    prefixes (acs:oss:<region>:<account>:<bucket>/<key prefix>) or `data.oss.object.key`
    prefix/suffix. One per prefix (the pattern ORs them). None for any other EventBridge trigger."""
    source = (conf.get("eventSourceConfig") or {}).get("eventSourceType", "Default")
    try:
        pattern = json.loads(conf.get("eventRuleFilterPattern") or "{}")
    except ValueError as e:
        raise SpecError(f"eventRuleFilterPattern is not JSON: {e}") from None
    if source != "Default" or "acs.oss" not in (pattern.get("source") or []):
        return None
    schema = ((conf.get("eventSinkConfig") or {}).get("deliveryOption") or {}).get("eventSchema") or "CloudEvents"
    events = [t for t in pattern.get("type") or ["oss:ObjectCreated:*"] if isinstance(t, str)]
    prefixes = [s["prefix"].split("/", 1)[1] if "/" in s["prefix"] else "" for s in pattern.get("subject") or []
                if isinstance(s, dict) and isinstance(s.get("prefix"), str)]
    key = ((pattern.get("data") or {}).get("oss") or {}).get("object", {}).get("key") or []
    prefixes += [k["prefix"] for k in key if isinstance(k, dict) and isinstance(k.get("prefix"), str)]
    suffix = next((k["suffix"] for k in key if isinstance(k, dict) and isinstance(k.get("suffix"), str)), "")
    return [{"events": events, "prefix": p, "suffix": suffix, "via": "eventbridge", "schema": schema}
            for p in prefixes or [""]]


def triggers_for(record: Mapping, spec: "FunctionSpec") -> list[dict]:
    """The triggers of `spec` that one OSS record fires."""
    return [t for t in spec.oss_triggers if trigger_matches(record, t)]


def _destination(arn: str | None, by_name: dict[str, str], rid: str) -> str | None:
    if not arn:
        return None
    m = _FUNCTION_ARN.match(arn)
    if m and m.group(1) in by_name:
        return by_name[m.group(1)]
    log.info("resource %r: onFailure destination %s is not a function in s.yaml; "
             "failures go to the dead-letter directory only", rid, arn)
    return None


# --- trigger matching -----------------------------------------------------------------------


def event_matches(event_name: str, pattern: str) -> bool:
    """"ObjectCreated:PutObject" matches "oss:ObjectCreated:PutObject" and "oss:ObjectCreated:*"."""
    name = event_name[4:] if event_name.startswith("oss:") else event_name
    pat = pattern[4:] if pattern.startswith("oss:") else pattern
    if pat.endswith("*"):
        return name.startswith(pat[:-1])
    return name == pat


def trigger_matches(record: Mapping, trigger: Mapping) -> bool:
    """Does one OSS event record fire this trigger (event type and key prefix/suffix)?"""
    name = record.get("eventName", "")
    key = ((record.get("oss") or {}).get("object") or {}).get("key", "")
    if not any(event_matches(name, p) for p in trigger.get("events") or []):
        return False
    return key.startswith(trigger.get("prefix", "")) and key.endswith(trigger.get("suffix", ""))


def functions_for(record: Mapping, specs: list[FunctionSpec]) -> list[FunctionSpec]:
    """Every function with an OSS trigger that this record fires (each at most once)."""
    return [s for s in specs if any(trigger_matches(record, t) for t in s.oss_triggers)]
