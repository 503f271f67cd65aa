"""shared.hoist: a module-level SDK import moves into the functions that use it, only when that
is proven not to change what the module does."""

from __future__ import annotations

import ast
import sys
import textwrap

import pytest

from shared.hoist import hoist


@pytest.fixture
def sdk(tmp_path, monkeypatch):
    """A package `heavysdk` that records each time it is imported."""
    pkg = tmp_path / "heavysdk"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import sys\nsys.modules.setdefault('heavysdk_loads', []).append(1)\n"
                                     "class Client:\n    def ping(self=None): return 'pong'\n"
                                     "def version(): return '1.0'\n")
    (pkg / "types.py").write_text("class Usage:\n    def __init__(self, n): self.n = n\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [m for m in sys.modules if m.startswith("heavysdk")]:
        del sys.modules[name]


def _load(source: str, postponed: bool = True) -> tuple[dict, set[str]]:
    tree = ast.parse(textwrap.dedent(source))
    moved = hoist(tree, {"heavysdk"}, postponed)
    flags = __import__("__future__").annotations.compiler_flag if postponed else 0
    ns: dict = {"__name__": "hoisted_example"}
    exec(compile(tree, "<example>", "exec", flags=flags, dont_inherit=True), ns)
    return ns, moved


def _loads() -> int:
    return len(sys.modules.get("heavysdk_loads", []))


def test_imports_used_inside_functions_and_annotations_load_on_first_call(sdk):
    ns, moved = _load('''
        from abc import ABC
        import heavysdk
        from heavysdk.types import Usage as U
        from heavysdk import Client

        class Base(ABC):
            client: Client = None

            def ping(self) -> str:
                """docstring stays first"""
                return Client().ping()

        def usage(n: int) -> U:
            def inner():
                return U(n)
            return inner()

        def version():
            return heavysdk.version()
    ''')
    assert moved == {"heavysdk", "U", "Client"}
    assert _loads() == 0 and "heavysdk" not in ns
    assert ns["Base"].ping.__doc__ == "docstring stays first"
    assert ns["usage"](3).n == 3 and _loads() == 1
    assert ns["Base"]().ping() == "pong" and ns["version"]() == "1.0"
    assert _loads() == 1  # imported once, then found in sys.modules


@pytest.mark.parametrize("use", [
    "VERSION = heavysdk.version()",  # read at module level
    "def f(x=heavysdk.Client): return x",  # a default value
    "class C(heavysdk.Client): pass",  # a base class
    "@heavysdk.Client.ping\ndef f(): pass",  # a decorator
    "heavysdk = None",  # rebound
    "def f():\n    global heavysdk\n    heavysdk = 1",  # declared global
    "def heavysdk(): pass",  # shadowed by a function
    "try:\n    import heavysdk\nexcept ImportError:\n    pass",  # imported again elsewhere
    "from pydantic import BaseModel\nclass M(BaseModel):\n    c: heavysdk.Client = None",  # a model resolves it
    "f = lambda: heavysdk.version()",  # a module-level lambda
])
def test_any_other_use_keeps_the_import_where_it_is(sdk, use):
    ns, moved = _load("import heavysdk\n" + use + "\n")
    assert moved == set()
    assert _loads() == 1


def test_annotations_that_are_evaluated_keep_the_import(sdk):
    ns, moved = _load('''
        from heavysdk import Client
        def f(c: Client) -> None:
            return None
    ''', postponed=False)
    assert moved == set() and _loads() == 1 and ns["f"].__annotations__["c"] is ns["Client"]


def test_a_method_named_like_the_import_is_not_a_rebinding(sdk):
    ns, moved = _load('''
        from heavysdk import version
        class Repo:
            @staticmethod
            def version():
                return version()
    ''')
    assert moved == {"version"} and _loads() == 0
    assert ns["Repo"].version() == "1.0"


def test_only_the_named_sdks_move(sdk):
    ns, moved = _load('''
        import json
        import heavysdk
        def f():
            return json.dumps(heavysdk.version())
    ''')
    assert moved == {"heavysdk"} and "json" in ns and ns["f"]() == '"1.0"'
