"""Scenarios as data: the built-in ones live beside this file as YAML and are validated on load.

A scenario names its roles (name, profile, goal, constraints, the function that runs them),
its flow, and its default limits. Errors name the field at fault.

A deployment adds its own in the `user_roles` package, beside its own MetaGPT Role subclasses:
`user_roles/scenarios/*.yaml` (see user_roles/README.md). `make package` ships that package in
the layer; on the local runtime it is importable from the checkout. They join the catalog as
the built-in ones do; a file that does not validate, or reuses a built-in id, is named.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from shared.errors import BadRequest
from shared.ids import check_name

HERE = os.path.dirname(os.path.abspath(__file__))
FLOWS = ("round_robin", "selector", "sop")
HARD_MAX_TURNS = 1000
HARD_MAX_SECONDS = 7 * 24 * 3600
MAX_INPUT_CHARS = 8000
HARD_MAX_TOKENS = 100_000_000
HARD_MAX_COST_CNY = 100_000.0
MAX_ROLES = 12
RESERVED = {"user", "director", "human", "system"}
_CLASS = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
INT_LIMITS = {"max_turns": HARD_MAX_TURNS, "max_seconds": HARD_MAX_SECONDS, "max_tokens": HARD_MAX_TOKENS,
              "max_invocations": 5000}


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


def _bilingual(value: Any, field: str, source: str) -> dict:
    if isinstance(value, str):
        value = {"en": value}
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= 2000 for k, v in value.items()):
        raise BadRequest(f"{source}: {field} must be a text or a mapping of language to text", field=field)
    return value


def validate_scenario(data: Any, source: str = "scenario", functions: set[str] | None = None) -> dict:
    """Check a scenario given as data; every error names the field. `functions`, when given, are
    the functions that may host roles (those s.yaml declares with an inbox trigger)."""
    if not isinstance(data, dict):
        raise BadRequest(f"{source}: a scenario must be a mapping")
    known = {"id", "title", "description", "flow", "roles", "order", "rounds", "closing", "end_when",
             "limits", "director", "input", "options", "experience", "on_dead_letter"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadRequest(f"{source}: unknown field(s) {', '.join(unknown)[:200]}", field=unknown[0])
    sid = check_name(data.get("id"), f"{source}: id")
    flow = data.get("flow", "round_robin")
    if flow not in FLOWS:
        raise BadRequest(f"{source}: flow must be one of {', '.join(FLOWS)}, not {str(flow)[:40]!r}", field="flow")
    roles = data.get("roles")
    if not isinstance(roles, list) or not roles:
        raise BadRequest(f"{source}: roles must be a non-empty list", field="roles")
    if len(roles) > MAX_ROLES:
        raise BadRequest(f"{source}: at most {MAX_ROLES} roles", field="roles")
    seen = set()
    out_roles = []
    for i, role in enumerate(roles):
        where = f"roles[{i}]"
        if not isinstance(role, dict):
            raise BadRequest(f"{source}: {where} must be a mapping", field=where)
        extra = sorted(set(role) - {"name", "profile", "goal", "constraints", "function", "model", "human", "class",
                                    "knowledge", "stance"})
        if extra:
            raise BadRequest(f"{source}: {where} has unknown field(s) {', '.join(extra)[:100]}", field=f"{where}.{extra[0]}")
        name = check_name(role.get("name"), f"{source}: {where}.name")
        if name.lower() in seen or name.lower() in RESERVED:
            raise BadRequest(f"{source}: {where}.name {name!r} is used twice or reserved", field=f"{where}.name")
        seen.add(name.lower())
        function = check_name(role.get("function", "persona"), f"{source}: {where}.function")
        if functions is not None and function not in functions:
            raise BadRequest(f"{source}: {where}.function {function!r} is not a function s.yaml declares with an "
                             f"inbox trigger ({', '.join(sorted(functions))})", field=f"{where}.function")
        human = role.get("human", False)
        if not isinstance(human, bool):
            raise BadRequest(f"{source}: {where}.human must be true or false", field=f"{where}.human")
        cls = role.get("class")
        if cls is not None and (not isinstance(cls, str) or not _CLASS.match(cls)):
            raise BadRequest(f"{source}: {where}.class must be an import path like 'package.module:RoleClass'",
                             field=f"{where}.class")
        out_roles.append({
            "name": name,
            "profile": _text(role.get("profile"), f"{where}.profile", max_len=200),
            "goal": _text(role.get("goal"), f"{where}.goal", required=False),
            "constraints": _text(role.get("constraints"), f"{where}.constraints", required=False),
            "function": function,
            "model": _model(role.get("model"), f"{where}.model"),
            "human": human,
            "class": cls,
            "knowledge": _kbs(role.get("knowledge"), f"{source}: {where}.knowledge"),
            "stance": _stance(role.get("stance"), f"{where}.stance", source),
        })
    names = [r["name"] for r in out_roles]
    by_name = {r["name"].lower(): r["name"] for r in out_roles}

    def role_ref(value: Any, field: str) -> str:
        if not isinstance(value, str) or value.lower() not in by_name:
            raise BadRequest(f"{source}: {field} must name one of the roles ({', '.join(names)})", field=field)
        return by_name[value.lower()]

    closing = data.get("closing")
    if closing is not None:
        if not isinstance(closing, dict) or set(closing) - {"role", "instruction", "title"}:
            raise BadRequest(f"{source}: closing must be a mapping of role, instruction, title", field="closing")
        closing = {"role": role_ref(closing.get("role"), "closing.role"),
                   "instruction": _text(closing.get("instruction"), "closing.instruction"),
                   "title": _bilingual(closing.get("title") or "Deliverable", "closing.title", source)}
    end_when = data.get("end_when")
    if end_when is not None:
        if not isinstance(end_when, dict) or set(end_when) - {"role", "contains"}:
            raise BadRequest(f"{source}: end_when must be a mapping of role and contains", field="end_when")
        end_when = {"role": role_ref(end_when.get("role"), "end_when.role"),
                    "contains": _text(end_when.get("contains"), "end_when.contains", max_len=100)}
    order = data.get("order")
    if order is None:
        order = [n for n in names if not closing or n != closing["role"]]
    elif not isinstance(order, list) or not order:
        raise BadRequest(f"{source}: order must be a non-empty list of role names", field="order")
    order = [_panel(n, f"order[{i}]", role_ref, out_roles, flow, source) if isinstance(n, list)
             else role_ref(n, f"order[{i}]") for i, n in enumerate(order)]
    rounds = data.get("rounds")
    if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 100):
        raise BadRequest(f"{source}: rounds must be an integer between 1 and 100", field="rounds")
    director = data.get("director") or {}
    if not isinstance(director, dict) or set(director) - {"mode", "max_consecutive", "model"}:
        raise BadRequest(f"{source}: director must be a mapping of mode, max_consecutive, model", field="director")
    mode = director.get("mode", "rule")
    if mode not in ("rule", "llm"):
        raise BadRequest(f"{source}: director.mode must be 'rule' or 'llm'", field="director.mode")
    max_consecutive = director.get("max_consecutive", 1)
    if isinstance(max_consecutive, bool) or not isinstance(max_consecutive, int) or not 1 <= max_consecutive <= 10:
        raise BadRequest(f"{source}: director.max_consecutive must be an integer between 1 and 10",
                         field="director.max_consecutive")
    if flow == "selector" and len([r for r in out_roles if not closing or r["name"] != closing["role"]]) < 2:
        raise BadRequest(f"{source}: a selector flow needs at least two speakers to choose from", field="roles")
    if flow == "sop":
        _check_sop(out_roles, closing, end_when, rounds, source)
        order = order[:1]
    options = _options(data.get("options"), source)
    experience = data.get("experience")
    if experience is not None:
        if not isinstance(experience, dict) or set(experience) - {"kb"} or "kb" not in experience:
            raise BadRequest(f"{source}: experience must be a mapping with kb (the knowledge base the "
                             "conversation's deliverable is written back to)", field="experience")
        if not closing:
            raise BadRequest(f"{source}: experience needs a closing role (its deliverable is what is written back)",
                             field="experience")
        experience = {"kb": _kbs([experience["kb"]], f"{source}: experience.kb")[0]}
    on_dead_letter = data.get("on_dead_letter", "fail")
    if on_dead_letter not in DEAD_LETTER_POLICIES:
        raise BadRequest(f"{source}: on_dead_letter must be one of {', '.join(DEAD_LETTER_POLICIES)}",
                         field="on_dead_letter")
    if on_dead_letter == "continue" and flow == "sop":
        raise BadRequest(f"{source}: on_dead_letter: continue is for panels; a software company missing a file "
                         f"fails", field="on_dead_letter")
    limits = check_limits(data.get("limits"), "limits", {"max_turns": 6, "max_seconds": 900})
    if "max_turns" not in (data.get("limits") or {}) and rounds is None and end_when is None:
        raise BadRequest(f"{source}: no termination: give limits.max_turns, rounds or end_when", field="limits")
    return {
        "id": sid,
        "title": _bilingual(data.get("title") or sid, "title", source),
        "description": _bilingual(data.get("description") or "", "description", source),
        "input": _bilingual(data.get("input") or "Topic", "input", source),
        "flow": flow,
        "order": order,
        "rounds": rounds,
        "closing": closing,
        "end_when": end_when,
        "director": {"mode": mode, "max_consecutive": max_consecutive, "model": _model(director.get("model"), "director.model")},
        "limits": limits,
        "options": options,
        "experience": experience,
        "on_dead_letter": on_dead_letter,
        "roles": out_roles,
    }


def _panel(value: list, field: str, role_ref, roles: list[dict], flow: str, source: str) -> list[str]:
    """A slot of `order` that is a panel: 2 to MAX_PANEL distinct roles answering at once."""
    from shared.flows import MAX_PANEL

    if flow not in ("round_robin", "selector"):
        raise BadRequest(f"{source}: {field}: a panel (a list of roles answering at once) is for round_robin "
                         f"and selector flows, not {flow}", field=field)
    if not 2 <= len(value) <= MAX_PANEL:
        raise BadRequest(f"{source}: {field}: a panel has 2 to {MAX_PANEL} roles, not {len(value)}", field=field)
    members = [role_ref(n, f"{field}[{j}]") for j, n in enumerate(value)]
    if len(set(members)) != len(members):
        raise BadRequest(f"{source}: {field}: a panel names each role once", field=field)
    human = [r["name"] for r in roles if r["name"] in members and r["human"]]
    if human:
        raise BadRequest(f"{source}: {field}: {human[0]} is played by a person, who cannot answer in a panel",
                         field=field)
    return members


DEAD_LETTER_POLICIES = ("fail", "continue")
"""what a panel member's dead letter does: fail the conversation, or go on with the answers that
arrived, naming the member that is missing (shared/deadletter.py)"""

MAX_ROLE_KBS = 5
_STANCE = re.compile(r"^[^\W_][\w ,'’，、-]{0,59}$")


def _stance(value: Any, field: str, source: str) -> dict | None:
    """The words each of a character's turns opens with, per language ("I oppose the motion"):
    a small model held to them keeps its side (shared/roles/character.py). They become part of
    a grammar, so only words, spaces, commas, apostrophes and hyphens, at most 60 characters."""
    if value is None:
        return None
    value = _bilingual(value, field, source)
    for lang, text in value.items():
        if not _STANCE.match(text):
            raise BadRequest(f"{source}: {field}.{lang} must be at most 60 characters of words, spaces, commas, "
                             "apostrophes and hyphens, starting with a word", field=field)
    return value


def _kbs(value: Any, field: str) -> list[str]:
    """Knowledge bases a role draws on: a list of names (shared/knowledge)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ROLE_KBS:
        raise BadRequest(f"{field} must be a list of at most {MAX_ROLE_KBS} knowledge base names",
                         field=field.split(": ")[-1])
    for v in value:
        try:
            check_name(v, "knowledge base name")  # the names shared/knowledge accepts
        except BadRequest as e:
            raise BadRequest(f"{field}: {e.message}", field=field.split(": ")[-1]) from None
    return list(value)


def _check_sop(roles: list[dict], closing, end_when, rounds, source: str) -> None:
    """An sop flow: MetaGPT's own roles route by their watch rules; `order[0]` gets the input."""
    if closing or end_when or rounds is not None:
        raise BadRequest(f"{source}: an sop flow ends when its roles go idle: no closing, end_when or rounds",
                         field="flow")
    for i, r in enumerate(roles):
        if not r["class"] or r["human"]:
            raise BadRequest(f"{source}: roles[{i}] of an sop flow must name its MetaGPT role class and cannot be "
                             "played by a person", field=f"roles[{i}].class")


OPTION_TYPES = {"boolean": bool, "integer": int, "number": (int, float)}
OPTION_LIMITS = ("max_turns", "max_cost_cny")
MAX_OPTIONS = 12


def _options(value: Any, source: str) -> dict:
    """A scenario's options: name → {type, default, min?, max?, limit?, description}. An option
    with `limit` sets that limit of the conversation (e.g. an investment as max_cost_cny)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_OPTIONS:
        raise BadRequest(f"{source}: options must be a mapping of at most {MAX_OPTIONS} options", field="options")
    out = {}
    for name, spec in value.items():
        where = f"options.{name}"
        check_name(name, f"{source}: option name")
        if not isinstance(spec, dict) or set(spec) - {"type", "default", "min", "max", "limit", "description"}:
            raise BadRequest(f"{source}: {where} must be a mapping of type, default, min, max, limit, description",
                             field=where)
        kind = spec.get("type")
        if kind not in OPTION_TYPES:
            raise BadRequest(f"{source}: {where}.type must be one of {', '.join(OPTION_TYPES)}", field=f"{where}.type")
        limit = spec.get("limit")
        if limit is not None and (limit not in OPTION_LIMITS or kind == "boolean"):
            raise BadRequest(f"{source}: {where}.limit must be one of {', '.join(OPTION_LIMITS)} (numbers only)",
                             field=f"{where}.limit")
        opt = {"type": kind, "min": spec.get("min"), "max": spec.get("max"), "limit": limit,
               "description": _bilingual(spec.get("description") or name, f"{where}.description", source)}
        opt["default"] = check_option(name, opt, spec.get("default"))
        out[name] = opt
    return out


def check_option(name: str, opt: dict, value: Any) -> Any:
    """`value` for option `name`, checked against its type and bounds; errors name the option."""
    where = f"options.{name}"
    kind = opt["type"]
    if isinstance(value, bool) != (kind == "boolean") or not isinstance(value, OPTION_TYPES[kind]):
        raise BadRequest(f"{where} must be {'an' if kind == 'integer' else 'a'} {kind}", field=where)
    if kind != "boolean":
        if (opt["min"] is not None and value < opt["min"]) or (opt["max"] is not None and value > opt["max"]):
            raise BadRequest(f"{where} must be between {opt['min']} and {opt['max']}", field=where)
    return value


def resolve_options(scenario: dict, given: Any) -> tuple[dict, dict]:
    """The conversation's options (defaults filled in) and the limits they set."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise BadRequest("field 'options' must be an object", field="options")
    declared = scenario.get("options") or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(declared) or "none"
        raise BadRequest(f"unknown option(s) {', '.join(unknown)[:100]} for scenario {scenario['id']!r} "
                         f"(known: {known})", field=f"options.{unknown[0][:40]}")
    values, limits = {}, {}
    for name, opt in declared.items():
        value = check_option(name, opt, given[name]) if name in given else opt["default"]
        values[name] = value
        if opt["limit"]:
            limits[opt["limit"]] = float(value) if opt["limit"] == "max_cost_cny" else int(value)
    return values, limits


def load_file(path: str, functions: set[str] | None = None) -> dict:
    """A scenario file (YAML or JSON), validated; errors name the file and the field."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise BadRequest(f"{os.path.basename(path)}: cannot be read as YAML: {str(e).splitlines()[0][:200]}",
                         field="scenario") from None
    return validate_scenario(data, os.path.basename(path), functions)


_BUILTIN: dict[str, dict] | None = None


def shipped() -> dict[str, dict]:
    """troupe's own scenarios, beside this file."""
    found = {}
    for name in sorted(os.listdir(HERE)):
        if name.endswith((".yaml", ".yml")):
            sc = load_file(os.path.join(HERE, name))
            found[sc["id"]] = sc
    return found


def builtin() -> dict[str, dict]:
    """The catalog a deployment ships: troupe's own scenarios, then the deployment's own."""
    global _BUILTIN
    if _BUILTIN is None:
        found = shipped()
        for path in deployment_files():
            sc = load_file(path)
            if sc["id"] in found:
                raise BadRequest(f"{path}: scenario id {sc['id']!r} is taken (built in, or another file)", field="id")
            found[sc["id"]] = sc
        _BUILTIN = found
    return _BUILTIN


def deployment_files(folders: list[str] | None = None) -> list[str]:
    """The deployment's scenario files: `scenarios/*.yaml|*.yml` in each folder of the `user_roles`
    package (found without importing it), or of `folders`."""
    if folders is None:
        import importlib.util

        try:
            spec = importlib.util.find_spec("user_roles")
        except (ImportError, ValueError):
            spec = None
        folders = list(spec.submodule_search_locations or []) if spec else []
    out = []
    for folder in folders:
        where = os.path.join(folder, "scenarios")
        if os.path.isdir(where):
            out += [os.path.join(where, n) for n in sorted(os.listdir(where)) if n.endswith((".yaml", ".yml"))]
    return out


def get(scenario_id: Any) -> dict:
    if not isinstance(scenario_id, str):
        raise BadRequest("scenario must be a string naming a scenario", field="scenario")
    found = builtin().get(scenario_id)
    if found is None:
        raise BadRequest(f"unknown scenario {scenario_id[:60]!r}; GET /scenarios lists them", field="scenario")
    return found
