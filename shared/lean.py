"""Lazy MetaGPT package __init__s: a role function starts in about a second, not four.

MetaGPT's package __init__ files import everything they export: `metagpt.roles` imports every
role (Searcher, Sales...), `metagpt.actions` the research and notebook actions (nbclient,
Jupyter), `metagpt.provider` every LLM SDK (Google, Anthropic, ZhipuAI, Bedrock...),
`metagpt.tools` the tool libraries (sklearn, scipy). Importing one SOP role pays for all of them.

`install()` puts an import finder first on `sys.meta_path`. For the packages in LAZY it finds
the real spec (same `__path__`, origin, submodule search) and swaps in a loader that reads the
real __init__ source with `ast` and executes it with its own-package imports left out:
each name those imports bind (`from metagpt.roles.engineer import Engineer`) is served by the
module's PEP 562 `__getattr__`, which imports that submodule on first access. Every other
statement runs as written, in order; a statement that reads a lazy name (`class
ActionType(Enum)` in metagpt.actions) runs when a name it binds is first asked for. MetaGPT's
files are not edited and every module that is imported runs unchanged.

Two registries are filled by import side effects, so they are completed on first read:
  * LLM providers: `LLM_REGISTRY.providers` answers a missing key by importing the provider
    module whose `@register_provider` names it (else every provider the real __init__ imports),
    then looks again: `create_llm_instance` works for any api_type as before; troupe's own
    providers (openai, dashscope) stay eager, registered as soon as the registry is;
  * tools: the first read of `TOOL_REGISTRY` (has_tool, get_tool, get_all_tools...) imports
    every tool library the real `metagpt.tools.libs` __init__ imports.

A few MetaGPT modules every role imports load an LLM SDK at module level for an annotation or
a function no SOP role calls (openai in `metagpt.provider.base_llm`, openai, anthropic and
tiktoken in `metagpt.utils.token_counter`, GitPython in `metagpt.utils.git_repository`). For the
modules in HOISTED those imports move into the functions that use them (`shared.hoist`, which
proves from the source that this changes nothing else, and otherwise leaves them as written).

Call once per process, after `import shared.mg` and before the first metagpt import. With
TROUPE_LEAN=0 in the environment it does nothing.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.util
import os
import sys
import threading
import warnings
from types import ModuleType

#: packages whose __init__ is made lazy (each measured with `python -X importtime`)
LAZY = (
    "metagpt.roles",  # every role: searcher (search engines), sales, di roles...
    "metagpt.actions",  # research, di.execute_nb_code (nbclient, IPython), write_analysis_code
    "metagpt.provider",  # every LLM SDK: google-generativeai, anthropic, zhipuai, qianfan, boto3...
    "metagpt.tools",  # tools.libs: sklearn, scipy, pandas
    "metagpt.tools.libs",
    "metagpt.utils",  # read_document (python-docx)
    "metagpt.environment",  # werewolf, stanford_town environments
    "metagpt.document_store",  # faiss
    "metagpt.memory",
)

#: third-party modules loaded on first attribute access (importlib.util.LazyLoader): MetaGPT
#: modules the roles need import them at module level but use them only inside functions
DEFERRED_MODULES = (
    "pandas",  # metagpt.repo_parser (imported by metagpt.schema): one pd.DataFrame in a method
)

#: MetaGPT modules whose module-level imports of these SDKs move into the functions that use
#: them (`shared.hoist`: proven safe from the source when loaded, else left as written)
HOISTED: dict[str, frozenset[str]] = {
    "metagpt.provider.base_llm": frozenset({"openai"}),  # one annotation: AsyncOpenAI (~0.5 s)
    "metagpt.utils.token_counter": frozenset({"openai", "anthropic", "tiktoken"}),  # 3 functions no role calls
    "metagpt.utils.git_repository": frozenset({"git"}),  # GitPython, for GitRepository's methods (~0.1 s)
}

#: imports kept eager inside a lazy package (none: even troupe's own providers, openai and
#: dashscope, load when a function first asks for their api_type, so a function configured for
#: DashScope never imports the openai SDK)
EAGER: dict[str, tuple[str, ...]] = {}

_lock = threading.RLock()
_installed = False


def install() -> bool:
    """Make MetaGPT's heavy package __init__s lazy for this process. Idempotent.

    Returns False when disabled (TROUPE_LEAN=0). A package already imported stays as it is
    (with a warning): install before the first metagpt import.
    """
    global _installed
    if os.environ.get("TROUPE_LEAN", "1").strip() == "0":
        return False
    with _lock:
        if _installed:
            return True
        early = [n for n in (*LAZY, *_HOOKS, *DEFERRED_MODULES, *HOISTED) if n in sys.modules]
        if early:
            warnings.warn(f"shared.lean.install() after {', '.join(early)} was imported: those stay eager",
                          RuntimeWarning, stacklevel=2)
        sys.meta_path.insert(0, _Finder())
        _installed = True
        return True


def installed() -> bool:
    return _installed


def realize(package: str) -> ModuleType:
    """Import everything `package`'s real __init__ imports (and run what it deferred)."""
    module = importlib.import_module(package)
    state = module.__dict__.get("__lean__")
    if state is not None:
        state.realize()
    return module


# -- the finder and loader ------------------------------------------------------------------


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname in _BEFORE:
            _BEFORE[fullname]()
            return None
        if fullname not in LAZY and fullname not in _HOOKS and fullname not in DEFERRED_MODULES \
                and fullname not in HOISTED:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            return spec
        if fullname in DEFERRED_MODULES:
            if isinstance(spec.loader, importlib.abc.Loader) and hasattr(spec.loader, "exec_module"):
                spec.loader = importlib.util.LazyLoader(spec.loader)
            return spec
        readable = hasattr(spec.loader, "get_source")
        lazy = fullname in LAZY and spec.submodule_search_locations is not None and readable
        spec.loader = _Loader(spec.loader, lazy, _HOOKS.get(fullname), HOISTED.get(fullname) if readable else None)
        return spec


class _Loader(importlib.abc.Loader):
    """The real loader, except that a lazy package's __init__ runs through `_LazyInit` and a
    hoisted module's imports of `roots` move into its functions."""

    def __init__(self, real, lazy: bool, hook, roots=None):
        self._real, self._lazy, self._hook, self._roots = real, lazy, hook, roots

    def __getattr__(self, name):  # get_source, get_resource_reader, is_package, ...
        return getattr(self._real, name)

    def create_module(self, spec):
        return self._real.create_module(spec)

    def exec_module(self, module):
        if self._lazy:
            _LazyInit(module, self._real).run()
        elif self._roots:
            _run_hoisted(module, self._real, self._roots)
        else:
            self._real.exec_module(module)
        if self._hook is not None:
            self._hook(module)


class _LazyInit:
    """One lazy package: its plan, the names still to resolve, and its `__getattr__`."""

    def __init__(self, module: ModuleType, real_loader):
        self.module = module
        self.name = module.__name__
        self.filename = real_loader.get_filename(self.name)
        self.source = real_loader.get_source(self.name)
        self.lazy: dict[str, tuple[str, str | None]] = {}
        """bound name -> (module, attribute), attribute None when the name is the module itself"""
        self.deferred: dict[str, int] = {}
        """bound name -> index in self.statements, a statement that reads a lazy name"""
        self.statements: list = []
        self.done: set[int] = set()
        self.flags = 0
        self.submodules: set[str] = set()
        """the package's direct children the real __init__ imports (attributes once imported)"""

    def run(self) -> None:
        tree = ast.parse(self.source, self.filename)
        self.flags = _future_flags(tree)
        ns = self.module.__dict__
        ns["__lean__"] = self
        ns["__getattr__"] = self.getattr
        ns["__dir__"] = self.dir
        keep = set(EAGER.get(self.name, ()))
        shadowed = self._shadowing(tree)
        chunk: list[ast.stmt] = []
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and self._own(node) and not self._star(node):
                source = self._resolve(node)
                if source not in keep and node not in shadowed:
                    for alias in node.names:
                        bound = alias.asname or alias.name
                        # `from metagpt.tools import libs` names the submodule
                        target = (f"{self.name}.{alias.name}", None) if source == self.name else (source, alias.name)
                        self.lazy[bound] = target
                        self.deferred.pop(bound, None)
                        self._child(target[0])
                    continue
            elif _reads(node) & (set(self.lazy) | set(self.deferred)):
                bound = _binds(node)
                if bound:  # runs when one of the names it binds is first asked for
                    index = len(self.statements)
                    self.statements.append(node)
                    for name in bound:
                        self.deferred[name] = index
                        self.lazy.pop(name, None)
                    continue
                # a bare side effect on lazy names (none in MetaGPT 0.8.2): resolve them, run it now
                self._exec(chunk)
                chunk = []
                for name in _reads(node):
                    if name not in ns and (name in self.lazy or name in self.deferred):
                        self.getattr(name)
            for name in _binds(node):  # an eager (re)binding wins over an earlier lazy one
                self.lazy.pop(name, None)
                self.deferred.pop(name, None)
            chunk.append(node)
        self._exec(chunk)

    def _exec(self, nodes: list[ast.stmt]) -> None:
        if nodes:
            code = compile(ast.Module(body=nodes, type_ignores=[]), self.filename, "exec",
                           flags=self.flags, dont_inherit=True)
            exec(code, self.module.__dict__)

    # -- plan helpers
    def _own(self, node: ast.ImportFrom) -> bool:
        source = self._resolve(node)
        return source == self.name or source.startswith(self.name + ".")

    def _shadowing(self, tree: ast.Module) -> list[ast.ImportFrom]:
        """Own-package imports binding a name that is also a child module the __init__ imports
        (metagpt.learn: `from metagpt.learn.text_to_image import text_to_image`). Run eagerly they
        overwrite the submodule attribute; lazily, a later import of the submodule would win."""
        nodes = [n for n in tree.body if isinstance(n, ast.ImportFrom) and self._own(n) and not self._star(n)]
        children = set()
        for node in nodes:
            source = self._resolve(node)
            if source == self.name:
                children.update(a.name for a in node.names)
            else:
                children.add(source[len(self.name) + 1:].split(".", 1)[0])
        return [node for node in nodes
                if any((a.asname or a.name) in children
                       and not (self._resolve(node) == self.name and (a.asname or a.name) == a.name)
                       for a in node.names)]

    @staticmethod
    def _star(node: ast.ImportFrom) -> bool:
        return any(a.name == "*" for a in node.names)

    def _resolve(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = self.name.rsplit(".", node.level - 1)[0] if node.level > 1 else self.name
        return f"{base}.{node.module}" if node.module else base

    def _child(self, module: str) -> None:
        rest = module[len(self.name) + 1:]
        if rest:
            self.submodules.add(rest.split(".", 1)[0])

    # -- the module's __getattr__ / __dir__
    def getattr(self, name: str):
        ns = self.module.__dict__
        if name in ns:
            return ns[name]
        if name in self.lazy:
            source, attr = self.lazy[name]
            module = importlib.import_module(source)  # thread-safe; no lock of ours held
            value = module if attr is None else _from(module, attr, source)
            return ns.setdefault(name, value)
        if name in self.deferred:
            index = self.deferred[name]
            node = self.statements[index]
            for dep in _reads(node):
                if dep not in ns and (dep in self.lazy or dep in self.deferred):
                    self.getattr(dep)
            with _lock:  # the statement itself imports nothing: it reads names now bound
                if index not in self.done:
                    self._exec([node])
                    self.done.add(index)
            if name in ns:
                return ns[name]
        if name in self.submodules:  # after the real __init__, `metagpt.roles.searcher` is there
            return importlib.import_module(f"{self.name}.{name}")
        raise AttributeError(f"module {self.name!r} has no attribute {name!r}")

    def dir(self):
        return sorted(set(self.module.__dict__) | set(self.lazy) | set(self.deferred))

    def realize(self) -> None:
        for name in list(self.lazy) + list(self.deferred):
            self.getattr(name)


def _run_hoisted(module: ModuleType, real_loader, roots: frozenset[str]) -> None:
    """Execute the module's source with its imports of `roots` moved into its functions. A module
    without classes gets postponed annotations (its functions' annotations stay strings)."""
    import __future__

    from shared.hoist import hoist

    name = module.__name__
    filename = real_loader.get_filename(name)
    tree = ast.parse(real_loader.get_source(name), filename)
    flags = _future_flags(tree)
    postponed = __future__.annotations.compiler_flag
    if not flags & postponed and not any(isinstance(n, ast.ClassDef) for n in ast.walk(tree)):
        flags |= postponed
    module.__dict__["__hoisted__"] = frozenset(hoist(tree, roots, bool(flags & postponed)))
    exec(compile(tree, filename, "exec", flags=flags, dont_inherit=True), module.__dict__)


def _from(module: ModuleType, attr: str, source: str):
    """`from source import attr`: an attribute, else a submodule, as the import statement does."""
    try:
        return getattr(module, attr)
    except AttributeError:
        try:
            return importlib.import_module(f"{source}.{attr}")
        except ModuleNotFoundError:
            raise ImportError(f"cannot import name {attr!r} from {source!r}") from None


def _future_flags(tree: ast.Module) -> int:
    import __future__

    flags = 0
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                flags |= getattr(__future__, alias.name).compiler_flag
    return flags


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _binds(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    out = set()
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
    return out


# -- registries filled by import side effects -----------------------------------------------


class _Providers(dict):
    """LLM_REGISTRY.providers: a missing api_type imports the provider module that registers it
    (found in the sources of the modules the real metagpt.provider __init__ imports), else all of
    them, as the eager __init__ had, then looks again."""

    def __missing__(self, key):
        for module in _provider_modules(key):
            importlib.import_module(module)
            if dict.__contains__(self, key):
                return dict.__getitem__(self, key)
        realize("metagpt.provider")
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        raise KeyError(key)


def _provider_modules(key) -> list[str]:
    """Modules of the real metagpt.provider __init__ with `@register_provider(...key...)`."""
    package = sys.modules.get("metagpt.provider")
    state = package.__dict__.get("__lean__") if package else None
    if state is None:
        return []
    names = {str(key), getattr(key, "name", None), getattr(key, "value", None)} - {None}
    found = []
    for module in sorted({source for source, _ in state.lazy.values()}):
        try:
            spec = importlib.util.find_spec(module)
            tree = ast.parse(spec.loader.get_source(module))
        except Exception:  # noqa: BLE001  (unreadable: the full import below still runs)
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for deco in node.decorator_list:
                func = getattr(deco, "func", None)
                if getattr(func, "id", getattr(func, "attr", None)) != "register_provider":
                    continue
                keys = {n.attr for n in ast.walk(deco) if isinstance(n, ast.Attribute)}
                keys |= {n.value for n in ast.walk(deco) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
                if keys & names and module not in found:
                    found.append(module)
    return found


def _provider_registry(module: ModuleType) -> None:
    module.LLM_REGISTRY.providers = _Providers(module.LLM_REGISTRY.providers)


def _tool_registry(module: ModuleType) -> None:
    cls = module.ToolRegistry
    for name in ("has_tool", "get_tool", "get_tools_by_tag", "get_all_tools", "has_tool_tag", "get_tool_tags"):
        method = getattr(cls, name, None)
        if method is None:
            continue

        def reader(self, *args, _method=method, **kwargs):
            _load_tools()
            return _method(self, *args, **kwargs)

        reader.__name__ = reader.__qualname__ = name
        reader.__doc__ = method.__doc__
        reader.__wrapped__ = method
        setattr(cls, name, reader)


_tools_loaded = False


def _load_tools() -> None:
    # no lock of ours: a second thread's import of a module the first is importing waits for it
    # in importlib, so each caller returns with every tool registered
    global _tools_loaded
    if not _tools_loaded:
        realize("metagpt.tools.libs")
        realize("metagpt.tools")
        _tools_loaded = True


def _load_pandas() -> None:
    """Load pandas for real now: qianfan (metagpt.provider.qianfan_api) installs, when pyarrow is
    missing, an import hook serving a fake `pyarrow` that breaks any later first import of pandas.
    Plain MetaGPT always has pandas loaded before (metagpt.tools.libs); so does this."""
    module = sys.modules.get("pandas") or importlib.import_module("pandas")
    getattr(module, "DataFrame", None)


#: imports that must wait for something else to be loaded first (the eager order did that)
_BEFORE = {"qianfan": _load_pandas}

_HOOKS = {
    "metagpt.provider.llm_provider_registry": _provider_registry,
    "metagpt.tools.tool_registry": _tool_registry,
}
