"""Structured generation: a MetaGPT call that expects JSON or code asks the provider for it.

MetaGPT's ActionNode (WritePRD, WriteDesign, WriteTasks...) asks for a JSON object wrapped in
`[CONTENT]...[/CONTENT]` by showing an example in the prompt, then parses and validates the
reply against a pydantic class built from the node's keys. Small models (and sometimes large
ones) break that JSON, and every retry is paid. Providers that can constrain their output are
told what to produce instead:

  * `expect()` marks the call a MetaGPT action is about to make: `install()` wraps
    `ActionNode._aask_v1` (schema "json") to expect the node's JSON schema (`node_schema`), and
    the code writers (`WriteCode.write_code`, `WriteTest.write_code`) to expect one fenced code
    block within a budget sized from the plan (`code_budget`);
  * `adapt(llm, mode)` makes a provider instance send what the mode asks for while a call is
    expected: `schema` (llama.cpp's server: `response_format` json_object with the schema),
    `json_schema` (DashScope's JSON Schema mode, OpenAI's structured outputs), `json_object`
    (DashScope's JSON Object mode: the messages must name JSON), or `off`;
  * the reply is shaped back into what MetaGPT's parser expects: a bare JSON object is wrapped
    in `[CONTENT]` tags; a code block cut off by its budget is cut back to its last complete
    statement and its fence closed (`close_code`); a test file gets the `__main__` guard that
    MetaGPT's RunCode needs to run it (`runnable_test`).

The shaping happens inside the provider, under the journal: the journaled reply is the shaped
one, so a replay returns exactly what the first attempt used, and each call is paid once.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import dataclasses
import functools
import json
import re
import typing
from typing import Any

MODES = ("off", "schema", "json_schema", "json_object")

#: DashScope models with JSON Schema mode (Model Studio, "structured output"); other Qwen
#: models get JSON Object mode
JSON_SCHEMA_MODELS = re.compile(r"^(qwen-plus|qwen-max|qwen-flash|qwen3-max|qwen3\.5-plus|qwen3\.5-flash)")


@dataclasses.dataclass(frozen=True)
class Expected:
    kind: str
    """"json" (an ActionNode's object), "code" (one fenced code block) or "dialogue" (a turn that states its side)"""
    name: str = ""
    schema: dict | None = None
    budget: int | None = None
    """max completion tokens for this call (code: sized from the plan)"""
    fake_root: str | None = None
    """a test file's prompt placed the project under this folder (MetaGPT's WriteTest says
    /data), which is no package: imports through it are taken off (`runnable_test`)"""
    temperature: float | None = None
    """sampling temperature for this call, over the function's (a second try samples wider)"""


_expected: contextvars.ContextVar[Expected | None] = contextvars.ContextVar("troupe_expected", default=None)


@contextlib.contextmanager
def expect(what: Expected):
    token = _expected.set(what)
    try:
        yield what
    finally:
        _expected.reset(token)


def expected() -> Expected | None:
    return _expected.get()


def default_mode(kind: str, model: str) -> str:
    """What a provider kind supports when TROUPE_LLM_JSON does not say."""
    if kind in ("dashscope", "dashscope-openai"):
        return "json_schema" if JSON_SCHEMA_MODELS.match(model or "") else "json_object"
    return "off"  # an OpenAI-compatible endpoint of unknown abilities: unchanged


# -- schemas for MetaGPT's action nodes ----------------------------------------------------

#: a file the engineer writes: lower-case Python module paths, nothing that climbs or is absolute
FILE_PATTERN = r"^[a-z][a-z0-9_]{0,39}(/[a-z][a-z0-9_]{0,39}){0,3}[.]py$"  # [.]: llama-cpp-python writes \. into GBNF as is
PROJECT_PATTERN = r"^[a-z][a-z0-9_]{1,39}$"
PACKAGE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]{0,39}(==[0-9][0-9.]{0,15})?$"

#: per key (lower case): longest string, most list items. llama.cpp's grammar parser refuses a
#: string bound much over 800 characters ("number of rules ... exceeds sane defaults")
MAX_STRING = 800
_LONG = {"competitive quadrant chart": 800, "data structures and interfaces": 800, "program call flow": 800,
         "full api spec": 600, "implementation approach": 600, "requirement analysis": 600,
         "shared knowledge": 400, "ui design draft": 400}
_SHORT = {"language": 20, "programming language": 20, "anything unclear": 200, "issue_type": 20,
          "is_relative": 10, "reason": 200}
_ITEMS = {"product goals": 3, "user stories": 5, "competitive analysis": 5, "requirement pool": 5,
          "file list": 8, "task list": 8, "logic analysis": 8, "required packages": 6,
          "required python packages": 6, "required other language third-party packages": 3}
DEFAULT_STRING = 400
DEFAULT_ITEMS = 6


def node_schema(mapping: dict[str, tuple[Any, Any]]) -> dict:
    """A strict JSON schema for an ActionNode's output mapping {key: (type, FieldInfo)}: every
    key required and no other, strings and lists bounded, file and project names patterned."""
    props = {}
    for key, spec in mapping.items():
        if isinstance(spec, dict):
            props[key] = node_schema(spec)
        else:
            props[key] = _type_schema(key, spec[0])
    return {"type": "object", "properties": props, "required": list(mapping), "additionalProperties": False}


_STATED = {"Original Requirements": re.compile(r"### Original Requirements\n(.*?)\n\s*### ", re.S)}
"""keys whose value the prompt itself states (WritePRD's context), and where it states it"""


def pin_stated(schema: dict, prompt: str) -> dict:
    """`schema` with the keys whose value the prompt states pinned to that value (a one-value
    enum). A small model given MetaGPT's format example copies the example ("Create a 2048
    game") instead of the requirement; writing the real requirement first holds the rest of the
    document to it, as a debater's restated side holds its turn."""
    props = dict(schema.get("properties") or {})
    for key, where in _STATED.items():
        m = where.search(prompt) if key in props else None
        stated = m.group(1).strip() if m else ""
        # llama-cpp-python escapes a quote or backslash in an enum twice, into a grammar
        # llama.cpp rejects (and a bad grammar takes the shared server down): such text is left free
        if stated and len(stated) <= MAX_STRING and not re.search(r'["\\\x00-\x1f]', stated):
            props[key] = {"type": "string", "enum": [stated]}
    return {**schema, "properties": props}


def _type_schema(key: str, tp, item: bool = False) -> dict:
    k = key.strip().lower()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union and type(None) in args:  # Optional[X]: still asked for
        return _type_schema(key, next(a for a in args if a is not type(None)), item)
    if origin in (list, typing.List):
        inner = args[0] if args else str
        if typing.get_origin(inner) in (list, typing.List):  # [[file, what], ...] / [[priority, what], ...]
            first = ({"type": "string", "pattern": FILE_PATTERN} if k.endswith("logic analysis")
                     else {"type": "string", "maxLength": 40})
            element = {"type": "array", "prefixItems": [first, {"type": "string", "maxLength": 300}],
                       "items": False, "minItems": 2, "maxItems": 2}
        else:
            element = _type_schema(key, inner, item=True)
        return {"type": "array", "items": element, "minItems": 1 if k.endswith(("file list", "task list")) else 0,
                "maxItems": _ITEMS.get(_base(k), DEFAULT_ITEMS)}
    if tp is str or tp is Any:
        if item and k.endswith(("file list", "task list")):
            return {"type": "string", "pattern": FILE_PATTERN}
        if item and "packages" in k:
            return {"type": "string", "pattern": PACKAGE_PATTERN}
        if not item and k in ("project name",):
            return {"type": "string", "pattern": PROJECT_PATTERN}
        if item:
            return {"type": "string", "maxLength": 300}
        return {"type": "string", "maxLength": _SHORT.get(_base(k), _LONG.get(_base(k), DEFAULT_STRING))}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is dict or origin is dict:
        return {"type": "object"}
    return {"type": "string", "maxLength": DEFAULT_STRING}


def _base(key: str) -> str:
    return key[len("refined "):] if key.startswith("refined ") else key


OPENING_END = "[,:，：]"
"""what follows a turn's opening words (a character's stance) before the rest of the turn"""


def dialogue_schema(side: str, longest: int = 600, opening: str = "") -> dict:
    """One turn of dialogue. With an `opening` (a character's stance, "I oppose the motion"), the
    reply itself must start with those words: the model goes on from its own commitment, which
    holds a small model to its side. Without one, the turn first restates the speaker's side,
    word for word, then says it. `opening` must be plain words (scenarios._stance checks it):
    it becomes part of a regular expression, then of a grammar."""
    if opening:
        # no quote or brace inside: a small model that tries to close the JSON early would otherwise
        # write them into the reply and ramble on (a reply is at least a few words)
        reply = {"type": "string", "pattern": f"^{opening}{OPENING_END}[^\\n\"{{}}]{{8,{longest}}}$"}
        return {"type": "object", "properties": {"reply": reply}, "required": ["reply"], "additionalProperties": False}
    return {"type": "object", "properties": {"side": {"type": "string", "enum": [side]},
                                             "reply": {"type": "string", "minLength": 1, "maxLength": longest}},
            "required": ["side", "reply"], "additionalProperties": False}


# -- code budgets --------------------------------------------------------------------------

CODE_BASE_TOKENS = 350
CODE_TOKENS_PER_UNIT = 220
"""a function or class named in the file's plan: its signature, docstring and a body"""


def code_budget(prompt: str, cap: int) -> int:
    """Completion tokens for one file, from the plan in the prompt: the file's Logic Analysis
    entry and the design's lines about it name its classes and functions."""
    filename = _code_filename(prompt)
    units = 0
    if filename:
        stem = re.escape(filename.rsplit("/", 1)[-1])
        for line in prompt.splitlines():
            if re.search(stem, line):
                units += len(re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\s*\(", line))
                units += len(re.findall(r"\bclass\s+[A-Z]\w*|\b[A-Z][a-z]+[A-Z]\w*\b", line))
    return max(CODE_BASE_TOKENS, min(cap, CODE_BASE_TOKENS + CODE_TOKENS_PER_UNIT * max(units, 2)))


def _code_filename(prompt: str) -> str | None:
    """The file WriteCode / WriteTest is writing, as its prompt names it."""
    for pattern in (r"##\s*Code:\s*([\w./-]+\.py)", r"Write code with triple quote.*?\b([\w./-]+\.py)",
                    r"test_([\w-]+\.py)", r"\b([\w./-]+\.py)\b"):
        m = re.search(pattern, prompt)
        if m:
            return m.group(1)
    return None


# -- shaping replies -----------------------------------------------------------------------

TEST_WRITERS = ("WriteTest", "DebugError")
"""the code writers whose file may be a test file that RunCode runs as a script"""

_FENCE = re.compile(r"^```[\w+.-]*[ \t]*$", re.M)


def close_code(text: str, lang: str = "python") -> str:
    """One fenced code block that ends with its fence: trailing chatter dropped; a block cut
    off mid-way cut back to its last complete statement (for Python: the longest prefix of whole
    top-level blocks that compiles) and closed."""
    opening = _FENCE.search(text)
    if opening is None:
        body = text.strip("\n")
        head = f"```{lang}"
    else:
        head = opening.group(0).strip()
        rest = text[opening.end() + 1:]
        closing = re.search(r"^```[ \t]*$", rest, re.M)
        if closing is not None:
            return f"{text[:opening.start()]}{head}\n{rest[:closing.start()].rstrip()}\n```"
        body = rest.rstrip("\n")
    if lang == "python" or head in ("```python", "```py", "```"):
        body = _complete_python(body)
    return f"{head}\n{body}\n```"


_BLOCK_START = re.compile(r"[ \t]*(?:async[ \t]+def\b|def\b|class\b|@)")


def _complete_python(body: str) -> str:
    """The longest prefix of whole blocks that compiles: cut before a top-level statement or
    before a member (`def`/`class`/decorator) of a class, so a class cut off mid-way keeps its
    whole methods (and a function is never left half-written)."""
    if _compiles(body):
        return body
    lines = body.split("\n")
    cuts = [i for i in range(len(lines) - 1, 0, -1)
            if lines[i] and (not lines[i][0].isspace() or _class_member(lines, i))]
    for i in cuts:
        candidate = "\n".join(lines[:i]).rstrip()
        if _compiles(candidate):
            return candidate
    return body


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _class_member(lines: list[str], i: int) -> bool:
    """Line i starts a def/class/decorator whose enclosing block is a `class`."""
    if not _BLOCK_START.match(lines[i]):
        return False
    depth = _indent(lines[i])
    for line in reversed(lines[:i]):
        if line.strip() and _indent(line) < depth:
            return bool(re.match(r"[ \t]*class\b", line))
    return False


_TEST_CASE = re.compile(r"^class\s+\w+\s*\([^)]*TestCase[^)]*\)\s*:", re.M)
_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:", re.M)


def runnable_test(block: str, fake_root: str | None = None) -> str:
    """A unittest file that RunCode can run: MetaGPT runs `python <test file>` from the project
    folder, which runs nothing unless the file calls `unittest.main()`, and cannot import the
    code under test through the folder WriteTest's prompt pretends the project is in (/data).
    So imports through `fake_root` lose it, and a block that defines TestCase classes and has
    no `__main__` guard (often the part a budget cut off) gets one."""
    m = re.search(r"^```[^\n]*\n(.*)\n```\s*$", block, re.S | re.M)
    body = m.group(1) if m else block
    fixed = body
    if fake_root:
        fixed = re.sub(rf"^([ \t]*)(from|import)[ \t]+{re.escape(fake_root)}\.", r"\1\2 ", fixed, flags=re.M)
    if _TEST_CASE.search(fixed) and not _MAIN_GUARD.search(fixed):
        fixed = f'{fixed.rstrip()}\n\n\nif __name__ == "__main__":\n    import unittest\n\n    unittest.main()'
    if fixed == body:
        return block
    return block[:m.start(1)] + fixed + block[m.end(1):] if m else fixed


_TEST_PROMPT = re.compile(r"the code to test is at /(\w+)/(\S+?)\.py, we will put your test code at /\1/")


def with_test_import(prompt: str) -> tuple[str, str | None]:
    """WriteTest's prompt, with the module to import named: MetaGPT places the project under a
    made-up /data, and a small model imports `data.<package>`. Returns (prompt, fake root)."""
    m = _TEST_PROMPT.search(prompt)
    if m is None:
        return prompt, None
    module = m.group(2).replace("/", ".")
    return (f"{prompt.rstrip()}\nImport the code under test as `from {module} import ...`: the tests run from "
            f"the project folder, which is on the path (/{m.group(1)} is not a package).\n", m.group(1))


def _compiles(source: str) -> bool:
    try:
        compile(source, "<reply>", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
        return True
    except (SyntaxError, ValueError):
        return False


def shape(text: str, what: Expected | None) -> str:
    """The reply as MetaGPT's parser for the expected call wants it."""
    if what is None or not isinstance(text, str):
        return text
    if what.kind == "json":
        stripped = text.strip()
        if "[CONTENT]" not in stripped and stripped.startswith("{"):
            return f"[CONTENT]\n{stripped}\n[/CONTENT]"
        return text
    if what.kind == "code":
        block = close_code(text)
        return runnable_test(block, what.fake_root) if what.name in TEST_WRITERS else block
    if what.kind == "dialogue":
        try:
            reply = json.loads(text)
        except ValueError:
            return text
        return reply["reply"] if isinstance(reply, dict) and isinstance(reply.get("reply"), str) else text
    return text


# -- the provider side ---------------------------------------------------------------------


def response_format(mode: str, what: Expected) -> dict | None:
    if what.kind not in ("json", "dialogue") or what.schema is None or mode == "off":
        return None
    if what.kind == "dialogue" and mode != "schema":  # only where the side can be enforced token by token
        return None
    if mode == "schema":
        return {"type": "json_object", "schema": what.schema}
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": _schema_name(what.name), "strict": True,
                                                       "schema": what.schema}}
    return {"type": "json_object"}


def _schema_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name or "output")[:64] or "output"


def request_changes(mode: str, messages: list[dict], max_tokens: int | None) -> dict:
    """What the expected call adds to a request: response_format, a smaller max_tokens, and for
    JSON Object mode the word JSON in the messages (DashScope refuses the request without it)."""
    what = expected()
    if what is None:
        return {}
    out: dict = {}
    fmt = response_format(mode, what)
    if fmt is not None:
        out["response_format"] = fmt
        if fmt["type"] == "json_object" and "schema" not in fmt and not any(
                "json" in str(m.get("content", "")).lower() for m in messages):
            out["messages"] = [*messages, {"role": "system", "content": "Reply with one JSON object."}]
    if what.budget and (max_tokens is None or what.budget < max_tokens):
        out["max_tokens"] = what.budget
    if what.temperature is not None:
        out["temperature"] = what.temperature
    return out


def adapt(llm, mode: str):
    """Make a MetaGPT provider instance (openai or dashscope) structured: requests made while a
    call is expected carry what `mode` supports, and replies come back shaped. Returns `llm`."""
    if mode not in MODES:
        raise ValueError(f"structured mode must be one of {', '.join(MODES)}")
    llm.structured_mode = mode
    if hasattr(llm, "_cons_kwargs"):  # MetaGPT's OpenAILLM
        cons = llm._cons_kwargs

        def _cons_kwargs(messages: list[dict], timeout=None, **extra):
            kwargs = cons(messages, timeout=timeout, **extra) if timeout is not None else cons(messages, **extra)
            kwargs.update(request_changes(mode, kwargs.get("messages", messages), kwargs.get("max_tokens")))
            return kwargs

        llm._cons_kwargs = _cons_kwargs
    elif hasattr(llm, "_const_kwargs"):  # MetaGPT's DashScopeLLM
        const = llm._const_kwargs

        def _const_kwargs(messages: list[dict], stream: bool = False) -> dict:
            kwargs = const(messages, stream=stream)
            kwargs.update(request_changes(mode, kwargs.get("messages", messages), kwargs.get("max_tokens")))
            return kwargs

        llm._const_kwargs = _const_kwargs
    completion_text = llm.acompletion_text

    async def acompletion_text(messages: list[dict], stream: bool = False, timeout=None, **kwargs):
        what = expected()
        if timeout is None:
            text = await completion_text(messages, stream=stream, **kwargs)
        else:
            text = await completion_text(messages, stream=stream, timeout=timeout, **kwargs)
        return shape(text, what)

    llm.acompletion_text = acompletion_text
    return llm


# -- the MetaGPT side ----------------------------------------------------------------------

_installed = False


def install(code_cap: int | None = None) -> None:
    """Expect JSON around ActionNode's JSON fills and code around the code writers. Idempotent."""
    global _installed
    if _installed:
        return
    from metagpt.actions.action_node import ActionNode
    from metagpt.actions.debug_error import DebugError
    from metagpt.actions.write_code import WriteCode
    from metagpt.actions.write_test import WriteTest

    from shared.llm import retries

    retries.install()  # first: what follows wraps MetaGPT's retrying methods as they then are
    aask_v1 = ActionNode._aask_v1

    @functools.wraps(aask_v1)  # keeps MetaGPT's tenacity `retry` reachable as before
    async def _aask_v1(self, prompt, output_class_name, output_data_mapping, *args, **kwargs):
        schema = kwargs.get("schema", args[2] if len(args) > 2 else "markdown")
        if schema != "json":
            return await aask_v1(self, prompt, output_class_name, output_data_mapping, *args, **kwargs)
        with expect(Expected("json", output_class_name, pin_stated(node_schema(output_data_mapping), prompt))):
            return await aask_v1(self, prompt, output_class_name, output_data_mapping, *args, **kwargs)

    ActionNode._aask_v1 = _aask_v1
    for action in (WriteCode, WriteTest):
        _expect_code(action, "write_code")
    _expect_code(DebugError, "_aask")  # QA's rewrite of a failing test file: one code block
    _installed = True


def _expect_code(action, method: str) -> None:
    """Calls `action.<method>(prompt, ...)` makes expect one code block sized from `prompt`."""
    inner = getattr(action, method)

    @functools.wraps(inner)
    async def wrapped(self, prompt, *args, **kwargs):
        cap = getattr(getattr(self.llm, "config", None), "max_token", None) or 1024
        fake_root = None
        if action.__name__ == "WriteTest":
            prompt, fake_root = with_test_import(prompt)
        with expect(Expected("code", action.__name__, budget=code_budget(prompt, cap), fake_root=fake_root)):
            return await inner(self, prompt, *args, **kwargs)

    setattr(action, method, wrapped)
