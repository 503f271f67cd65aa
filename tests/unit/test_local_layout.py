"""infra/local's modules import one another without a circle, and the worker, which runs in
every function's process, imports only the standard library and its frame format at its top."""

from __future__ import annotations

import ast
import os
import sys

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "infra", "local")


def _imports(path: str, top_only: bool = False) -> set[str]:
    """Modules of infra.local a file imports (anywhere, or only at its top), TYPE_CHECKING blocks included."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    nodes = tree.body if top_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "infra.local":
                out |= {f"infra.local.{a.name}" for a in node.names}
            elif node.module.startswith("infra.local."):
                out.add(node.module)
            elif top_only:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("infra.local.") or top_only}
    return out


def _graph() -> dict[str, set[str]]:
    mods = {f"infra.local.{n[:-3]}": os.path.join(HERE, n) for n in os.listdir(HERE)
            if n.endswith(".py") and n not in ("__init__.py", "__main__.py")}
    return {m: {d for d in _imports(p) if d in mods and d != m} for m, p in mods.items()}


def test_no_module_of_infra_local_imports_one_that_imports_it_back():
    graph = _graph()
    state: dict[str, int] = {}
    circles = []

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                circles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert circles == []


def test_the_worker_imports_only_the_standard_library_at_its_top():
    top = _imports(os.path.join(HERE, "worker.py"), top_only=True)
    assert top - set(sys.stdlib_module_names) - {"__future__", "typing"} == {"infra.local._frames"}
