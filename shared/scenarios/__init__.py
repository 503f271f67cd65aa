"""Scenarios as data: the built-in ones live beside this file as YAML and are validated on load.

A scenario names its roles (name, profile, goal, constraints, the function that runs them),
its flow, and its default limits. Errors name the field at fault.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from shared.errors import BadRequest
from shared.ids import check_name

HERE = os.path.dirname(os.path.abspath(__file__))
FLOWS = ("round_robin",)
HARD_MAX_TURNS = 1000
HARD_MAX_SECONDS = 7 * 24 * 3600
MAX_INPUT_CHARS = 8000
HARD_MAX_TOKENS = 100_000_000
HARD_MAX_COST_CNY = 100_000.0
INT_LIMITS = {"max_turns": HARD_MAX_TURNS, "max_seconds": HARD_MAX_SECONDS, "max_tokens": HARD_MAX_TOKENS}


def _text(value: Any, field: str, *, required: bool = True, max_len: int = 2000) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(f"{field} must be a non-empty string", field=field)
    if len(value) > max_len:
        raise BadRequest(f"{field} is longer than {max_len} characters", field=field)
    return value


_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,79}$")


def _model(value: Any, field: str) -> str | None:
    """An LLM model name for one role (e.g. a cheap one for characters, a strong one for a judge)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _MODEL.match(value):
        raise BadRequest(f"{field} must be a model name (letters, digits, . _ : / -)", field=field)
    return value


def check_limits(limits: Any, field: str = "limits", defaults: dict | None = None) -> dict:
    """Integer limits max_turns, max_seconds, max_tokens and a money budget max_cost_cny (a
    positive number); unknown keys are refused."""
    if limits is None:
        limits = {}
    if not isinstance(limits, dict):
        raise BadRequest(f"{field} must be an object", field=field)
    out = dict(defaults or {})
    for key, value in limits.items():
        where = f"{field}.{key}"
        if key == "max_cost_cny":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= HARD_MAX_COST_CNY:
                raise BadRequest(f"{where} must be a number of yuan above 0 and at most {HARD_MAX_COST_CNY}", field=where)
            out[key] = float(value)
            continue
        bound = INT_LIMITS.get(key)
        if bound is None:
            raise BadRequest(f"{where} is not a known limit ({', '.join([*INT_LIMITS, 'max_cost_cny'])})", field=where)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
            raise BadRequest(f"{where} must be an integer between 1 and {bound}", field=where)
        out[key] = value
    return out


def validate_scenario(data: Any, source: str = "scenario") -> dict:
    if not isinstance(data, dict):
        raise BadRequest(f"{source}: a scenario must be a mapping")
    sid = check_name(data.get("id"), f"{source}: id")
    flow = data.get("flow", "round_robin")
    if flow not in FLOWS:
        raise BadRequest(f"{source}: flow must be one of {', '.join(FLOWS)}", field="flow")
    roles = data.get("roles")
    if not isinstance(roles, list) or not roles:
        raise BadRequest(f"{source}: roles must be a non-empty list", field="roles")
    seen = set()
    out_roles = []
    for i, role in enumerate(roles):
        where = f"roles[{i}]"
        if not isinstance(role, dict):
            raise BadRequest(f"{source}: {where} must be a mapping", field=where)
        name = check_name(role.get("name"), f"{source}: {where}.name")
        if name in seen or name == "user":
            raise BadRequest(f"{source}: {where}.name {name!r} is used twice or reserved", field=f"{where}.name")
        seen.add(name)
        out_roles.append({
            "name": name,
            "profile": _text(role.get("profile"), f"{where}.profile", max_len=200),
            "goal": _text(role.get("goal"), f"{where}.goal", required=False),
            "constraints": _text(role.get("constraints"), f"{where}.constraints", required=False),
            "function": check_name(role.get("function", "persona"), f"{source}: {where}.function"),
            "model": _model(role.get("model"), f"{where}.model"),
        })
    limits = check_limits(data.get("limits"), "limits", {"max_turns": 6, "max_seconds": 900})
    return {
        "id": sid,
        "title": data.get("title") or {"en": sid},
        "description": data.get("description") or {"en": ""},
        "flow": flow,
        "limits": limits,
        "roles": out_roles,
    }


def load_file(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return validate_scenario(yaml.safe_load(f), os.path.basename(path))


_BUILTIN: dict[str, dict] | None = None


def builtin() -> dict[str, dict]:
    global _BUILTIN
    if _BUILTIN is None:
        found = {}
        for name in sorted(os.listdir(HERE)):
            if name.endswith((".yaml", ".yml")):
                sc = load_file(os.path.join(HERE, name))
                found[sc["id"]] = sc
        _BUILTIN = found
    return _BUILTIN


def get(scenario_id: Any) -> dict:
    if not isinstance(scenario_id, str):
        raise BadRequest("scenario must be a string naming a scenario", field="scenario")
    found = builtin().get(scenario_id)
    if found is None:
        raise BadRequest(f"unknown scenario {scenario_id[:60]!r}; GET /scenarios lists them", field="scenario")
    return found
