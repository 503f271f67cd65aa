"""Module-level imports moved into the functions that use them: the AST rewrite behind
`shared.lean.HOISTED`.

A MetaGPT module a role needs may import a heavy SDK at module level only to name it in an
annotation or call it inside a function (`metagpt.provider.base_llm` imports the openai SDK for
one annotation; `metagpt.utils.token_counter` imports openai, anthropic and tiktoken for three
functions no SOP role calls). `hoist(tree, roots)` takes such a module's syntax tree and, for
each top-level `import X...` / `from X... import ...` whose top package is in `roots`, proves
that the names it binds are only

  * read inside function bodies (the import is then repeated as the first statement of each
    outermost function that reads them: it runs at the first call, as cheap as a dict lookup
    afterwards), or
  * named in annotations Python does not evaluate: postponed annotations (PEP 563) of function
    signatures, and of class bodies whose bases cannot evaluate them (no bases, `object`, `ABC`;
    a pydantic model resolves its field annotations, so its fields keep the import eager),

and never rebound, deleted, declared global or read at module level (a default value, a base
class, a decorator, a module-level statement). A statement any of whose names fails the proof
stays where it is, unchanged. The rewrite never changes what a function computes, only when the
SDK is first imported.
"""

from __future__ import annotations

import ast
import copy

#: class bases that never evaluate their body's annotations
_PLAIN_BASES = {"object", "ABC"}


def hoist(tree: ast.Module, roots: set[str] | frozenset[str], postponed: bool) -> set[str]:
    """Rewrite `tree` in place; return the names whose imports moved into functions.

    `postponed`: annotations are not evaluated (`from __future__ import annotations`, or the
    caller compiles the module with that flag)."""
    candidates = {i: node for i, node in enumerate(tree.body) if _imports_from(node, roots)}
    if not candidates:
        return set()
    names = {name for node in candidates.values() for name in _bound(node)}
    scan = _Scan(names, set(candidates.values()), postponed)
    scan.visit_body(tree.body, None)
    moving = {i: node for i, node in candidates.items() if not (_bound(node) & scan.refused)}
    moved = {name for node in moving.values() for name in _bound(node)}
    for func, used in scan.uses.items():
        wanted = used & moved
        if not wanted:
            continue
        imports = [_only(node, wanted) for node in moving.values()]
        imports = [_at(n, func.body[0]) for n in imports if n is not None]
        at = 1 if _docstring(func) else 0
        func.body[at:at] = imports
    tree.body = [node for i, node in enumerate(tree.body) if i not in moving]
    ast.fix_missing_locations(tree)
    return moved


def _at(node: ast.stmt, where: ast.stmt) -> ast.stmt:
    for n in ast.walk(node):
        n.lineno, n.col_offset = where.lineno, where.col_offset
        n.end_lineno, n.end_col_offset = where.lineno, where.col_offset
    return node


def _imports_from(node: ast.stmt, roots) -> bool:
    if isinstance(node, ast.Import):
        return all(a.name.split(".")[0] in roots for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return not node.level and (node.module or "").split(".")[0] in roots and all(a.name != "*" for a in node.names)
    return False


def _bound(node: ast.Import | ast.ImportFrom) -> set[str]:
    return {(a.asname or a.name).split(".")[0] if isinstance(node, ast.Import) else (a.asname or a.name)
            for a in node.names}


def _only(node: ast.Import | ast.ImportFrom, wanted: set[str]):
    """A copy of the import binding only the wanted names (None if it binds none of them)."""
    aliases = [a for a in node.names
               if ((a.asname or a.name).split(".")[0] if isinstance(node, ast.Import) else (a.asname or a.name))
               in wanted]
    if not aliases:
        return None
    out = copy.deepcopy(node)
    out.names = copy.deepcopy(aliases)
    return out


def _docstring(func) -> bool:
    first = func.body[0]
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


class _Scan:
    """Where each candidate name is used: `uses` per outermost function, `refused` otherwise."""

    def __init__(self, names: set[str], candidates: set[ast.stmt], postponed: bool):
        self.names, self.candidates, self.postponed = names, candidates, postponed
        self.uses: dict[ast.AST, set[str]] = {}
        self.refused: set[str] = set()

    def visit_body(self, body: list[ast.stmt], func) -> None:
        for node in body:
            if node in self.candidates:
                continue
            self.visit(node, func)

    def visit(self, node: ast.AST, func) -> None:
        """`func`: the outermost function whose body this runs in (None: module or class body at import)."""
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._function(node, func)
        elif isinstance(node, ast.ClassDef):
            self._class(node, func)
        elif isinstance(node, ast.Lambda):
            self._expr_list(node.args.defaults + [d for d in node.args.kw_defaults if d], func)
            if func is None:  # a module-level lambda body has no statement to import in
                self._mark(node.body, None)
            else:
                self.visit(node.body, func)
        elif isinstance(node, ast.Name):
            self._name(node, func)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            self.refused |= self.names & set(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            self.refused |= self.names & _bound(node)
        else:
            for child in ast.iter_child_nodes(node):
                self.visit(child, func)

    def _function(self, node, func, binds_global: bool = True) -> None:
        if binds_global:
            self._bind(node.name)
        self._expr_list(node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d], func)
        annotations = [a.annotation for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                                              node.args.vararg, node.args.kwarg) if a is not None and a.annotation]
        if node.returns is not None:
            annotations.append(node.returns)
        if not self.postponed:
            self._expr_list(annotations, func)
        self.visit_body(node.body, func or node)

    def _class(self, node: ast.ClassDef, func) -> None:
        self._bind(node.name)
        self._expr_list(node.decorator_list + node.bases + [k.value for k in node.keywords], func)
        plain = not node.keywords and all(isinstance(b, ast.Name) and b.id in _PLAIN_BASES for b in node.bases)
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):  # a class attribute, not a global
                self._function(stmt, func, binds_global=False)
            elif isinstance(stmt, ast.AnnAssign):
                if not (self.postponed and plain):
                    self.visit(stmt.annotation, func)
                self.visit(stmt.target, func)
                if stmt.value is not None:
                    self.visit(stmt.value, func)
            else:
                self.visit(stmt, func)

    def _expr_list(self, nodes, func) -> None:
        for n in nodes:
            self.visit(n, func)

    def _name(self, node: ast.Name, func) -> None:
        if node.id not in self.names:
            return
        if not isinstance(node.ctx, ast.Load) or func is None:
            self.refused.add(node.id)
        else:
            self.uses.setdefault(func, set()).add(node.id)

    def _mark(self, node: ast.AST, func) -> None:
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                self._name(n, func)

    def _bind(self, name: str) -> None:
        if name in self.names:
            self.refused.add(name)
