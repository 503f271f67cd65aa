"""Role functions' cold start, measured (not asserted): `python -m bench.coldstart [--runs 3] [--json]`.

For each role function's import set (MetaGPT's five SOP roles and troupe's Character), a fresh
Python process is started and timed from spawn to "handler ready": `shared.mg` imported, what
the function's handler imports (the role runner, the LLM layer, the environment), the role class
imported and instantiated with a Context from `shared.mg.make_context()`. Each is
measured twice:

  naive   TROUPE_LEAN=0: MetaGPT's package __init__s import every role, action, LLM SDK and tool
  lean    as the functions run (shared.mg installs shared.lean): those __init__s resolve their
          names on first use

With `--package build/package`, the built package is measured instead, as FC runs it: the
layer and each function zip unpacked, a CPython 3.10 process started in the function's folder
with the layer's python/ on its path, the handler module (`index`) imported and, for a role
function, its role created as the handler creates it (with the LLM s.yaml configures for it:
DashScope's provider).

Prints, per role and mode, the median wall time from spawn to ready (including the interpreter's
own start), its import and instantiation parts, and the child's peak RSS (ru_maxrss). Targets
per role function: ready in <= 1.5 s, <= 150 MB. One untimed run of each first warms the
bytecode cache and the page cache, as a warm FC instance has them; a first start from a cold
disk is slower.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"ready_s": 1.5, "rss_mb": 150.0}

#: role function -> (module, class, constructor keywords besides the context)
ROLES = {
    "ProductManager": ("metagpt.roles.product_manager", "ProductManager", {}),
    "Architect": ("metagpt.roles.architect", "Architect", {}),
    "ProjectManager": ("metagpt.roles.project_manager", "ProjectManager", {}),
    "Engineer": ("metagpt.roles.engineer", "Engineer", {}),
    "QaEngineer": ("metagpt.roles.qa_engineer", "QaEngineer", {}),
    "Character": ("shared.roles.character", "Character", {"name": "Alice", "profile": "Proponent"}),
}

#: heavy modules worth naming when a child has them loaded
HEAVY = ("sklearn", "scipy", "pandas", "numpy", "IPython", "nbclient", "google.generativeai", "anthropic",
         "zhipuai", "qianfan", "boto3", "openai", "dashscope", "git", "gymnasium", "tiktoken",
         "metagpt.roles.searcher", "metagpt.actions.di.execute_nb_code", "metagpt.tools.libs.data_preprocess")

_CHILD = r"""
import importlib, json, resource, sys, time
mode, module, cls, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
t0 = time.monotonic()
import shared.mg  # installs shared.lean unless TROUPE_LEAN=0 (the naive mode)
for name in json.loads(sys.argv[6]):  # what the function's handler imports before its first event
    importlib.import_module(name)
role_cls = getattr(importlib.import_module(module), cls)
t1 = time.monotonic()
role = role_cls(context=shared.mg.make_context(), **kwargs)
t2 = time.monotonic()
heavy = json.loads(sys.argv[5])
loaded = [m for m in heavy if m in sys.modules and type(sys.modules[m]).__name__ != "_LazyModule"]
print("COLDSTART " + json.dumps({"ready": t2, "imports_s": t1 - t0, "instantiate_s": t2 - t1,
      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "modules": len(sys.modules),
      "heavy": loaded}))
"""


def run_once(role: str, mode: str) -> dict:
    """One fresh process: seconds from spawn to ready, its parts, peak RSS (MB)."""
    module, cls, kwargs = ROLES[role]
    env = dict(os.environ)
    env.pop("TROUPE_LEAN", None)
    if mode == "naive":
        env["TROUPE_LEAN"] = "0"
    handler_imports = ["shared.runner", "shared.llm", "shared.env"] if role == "Character" else \
        ["shared.sop.runner", "shared.llm", "shared.env"]
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, module, cls, json.dumps(kwargs), json.dumps(HEAVY),
                           json.dumps(handler_imports)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("COLDSTART ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"{role} ({mode}) failed, exit {proc.returncode}:\n{proc.stderr[-3000:]}")
    out = json.loads(line[len("COLDSTART "):])
    out["ready_s"] = out.pop("ready") - started  # CLOCK_MONOTONIC is system-wide on Linux
    return out


def measure(role: str, mode: str, runs: int) -> dict:
    samples = [run_once(role, mode) for _ in range(runs)]
    med = lambda k: statistics.median(s[k] for s in samples)  # noqa: E731
    return {"ready_s": med("ready_s"), "imports_s": med("imports_s"), "instantiate_s": med("instantiate_s"),
            "rss_mb": med("rss_mb"), "modules": int(med("modules")), "heavy": samples[-1]["heavy"],
            "runs": runs}


def interpreter_start(runs: int) -> float:
    """Seconds for `python -c pass`: the floor under every figure."""
    times = []
    for _ in range(runs):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.monotonic() - t)
    return statistics.median(times)


# -- the package, as FC runs it ------------------------------------------------------------------

#: packaged function -> the role its first event instantiates (None: the function has no MetaGPT role)
FUNCTION_ROLES = {"gateway": None, "persona": "Character", "director": None, "product_manager": "ProductManager",
                  "architect": "Architect", "project_manager": "ProjectManager", "engineer": "Engineer",
                  "qa_engineer": "QaEngineer", "pipeline": None, "indexer": None, "deadletter": None}

_PKG_CHILD = r"""
import importlib, json, resource, sys, time
importlib.import_module("index")  # the function's handler module, as FC loads it
if sys.argv[1]:  # its role, created as the handler creates it: with the LLM s.yaml configures
    import shared.mg
    from shared.llm import make_llm
    llm = make_llm(json.loads(sys.argv[4]))
    role = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])(context=shared.mg.make_context(), llm=llm,
                                                                       **json.loads(sys.argv[3]))
print("COLDSTART " + json.dumps({"ready": time.monotonic(), "python": sys.version.split()[0],
      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "modules": len(sys.modules)}))
"""


@functools.lru_cache(maxsize=None)
def _llm_env(function: str) -> dict:
    """The LLM settings s.yaml gives the function (a placeholder key: nothing is called)."""
    import yaml

    with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as f:
        props = (yaml.safe_load(f)["resources"].get(function) or {}).get("props") or {}
    env = {k: str(v) for k, v in (props.get("environmentVariables") or {}).items() if k.startswith("TROUPE_LLM")}
    return {**env, "DASHSCOPE_API_KEY": "placeholder"}


def run_packaged(unpacked: str, python: str, function: str, metagpt_root: str) -> dict:
    """One fresh CPython 3.10 process in the function's unpacked folder, the layer on its path:
    seconds from spawn to ready (handler module imported, its role created), peak RSS."""
    role = FUNCTION_ROLES.get(function)
    module, cls, kwargs = ROLES[role] if role else ("", "", {})
    code = os.path.join(unpacked, "functions", function)
    # FC's /code and /opt are read-only: nothing compiled at a cold start is kept for the next one
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join([code, os.path.join(unpacked, "layer", "python")]),
           "METAGPT_PROJECT_ROOT": metagpt_root, "HOME": metagpt_root, "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    proc = subprocess.run([python, "-s", "-c", _PKG_CHILD, module, cls, json.dumps(kwargs),
                           json.dumps(_llm_env(function))], cwd=code, env=env, capture_output=True, text=True,
                          timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("COLDSTART ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"packaged {function} failed, exit {proc.returncode}:\n{proc.stderr[-3000:]}")
    out = json.loads(line[len("COLDSTART "):])
    out["ready_s"] = out.pop("ready") - started
    return out


def _strip_bytecode(top: str) -> int:
    n = 0
    for dirpath, dirnames, _ in os.walk(top):
        if "__pycache__" in dirnames:
            shutil.rmtree(os.path.join(dirpath, "__pycache__"))
            dirnames.remove("__pycache__")
            n += 1
    return n


def main_package(built: str, runs: int, as_json: bool, no_bytecode: bool = False) -> None:
    import tempfile

    from infra.package import build, target

    python, why = target.python310()
    if python is None:
        print(f"== packaged cold start: skipped, {why}")
        return
    with tempfile.TemporaryDirectory(prefix="troupe-coldstart-") as tmp:
        unpacked = build.unpack(built, os.path.join(tmp, "unpacked"))
        if no_bytecode:  # as a layer without compiled bytecode runs
            _strip_bytecode(unpacked)
        functions = [f for f in FUNCTION_ROLES if os.path.isdir(os.path.join(unpacked, "functions", f))]
        root = os.path.join(tmp, "metagpt")
        os.makedirs(root)
        for f in functions:  # warm the page cache and write the bytecode, as a warm host has them
            run_packaged(unpacked, python, f, root)
        results = {}
        for f in functions:
            samples = [run_packaged(unpacked, python, f, root) for _ in range(runs)]
            results[f] = {k: statistics.median(s[k] for s in samples) for k in ("ready_s", "rss_mb", "modules")}
            results[f]["python"] = samples[0]["python"]
    print(f"== packaged function cold start on CPython {results[functions[0]]['python']} ({python}): spawn -> "
          f"handler module imported and its role created; unpacked {os.path.relpath(built, ROOT)}"
          f"{', its bytecode removed' if no_bytecode else ''}, read-only as on FC, median of {runs}, "
          f"{os.cpu_count()} cores")
    print(f"   targets per role function: ready <= {TARGETS['ready_s']} s, peak RSS <= {TARGETS['rss_mb']:.0f} MB")
    print(f"   {'function':<17}{'role':<16}{'ready s':>9}{'RSS MB':>8}{'modules':>9}")
    for f, r in results.items():
        ok = r["ready_s"] <= TARGETS["ready_s"] and r["rss_mb"] <= TARGETS["rss_mb"]
        print(f"   {f:<17}{FUNCTION_ROLES[f] or '-':<16}{r['ready_s']:>9.2f}{r['rss_mb']:>8.0f}{int(r['modules']):>9}"
              f"   {'ok' if ok else 'OVER'}")
    if as_json:
        print(json.dumps({"targets": TARGETS, "packaged": results}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="timed runs per role and mode (median reported)")
    ap.add_argument("--roles", default=",".join(ROLES), help="comma-separated subset of " + ",".join(ROLES))
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    ap.add_argument("--package", metavar="DIR", help="measure the built package (make package: build/package) "
                                                     "instead, each function from its zip on CPython 3.10")
    ap.add_argument("--no-bytecode", action="store_true", help="with --package: as if the layer had no .pyc")
    args = ap.parse_args()
    if args.package:
        main_package(args.package, args.runs, args.json, args.no_bytecode)
        return
    roles = [r for r in args.roles.split(",") if r]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"== role function cold start: spawn -> role instantiated with a Context "
          f"(median of {args.runs}, {os.cpu_count()} cores, load {load:.2f})")
    print(f"   interpreter alone (python -c pass): {interpreter_start(args.runs):.3f} s")
    for mode in ("naive", "lean"):  # warm the bytecode and page caches
        run_once(roles[0], mode)

    results: dict[str, dict] = {}
    for role in roles:
        results[role] = {mode: measure(role, mode, args.runs) for mode in ("naive", "lean")}

    print(f"   targets per role function: ready <= {TARGETS['ready_s']} s, peak RSS <= {TARGETS['rss_mb']:.0f} MB")
    head = (f"   {'role':<15}{'naive s':>9}{'naive MB':>10}{'lean s':>9}{'import':>8}{'init':>7}"
            f"{'lean MB':>9}{'modules naive->lean':>22}   lean vs targets")
    print(head)
    for role, r in results.items():
        n, lean = r["naive"], r["lean"]
        ok = lean["ready_s"] <= TARGETS["ready_s"] and lean["rss_mb"] <= TARGETS["rss_mb"]
        print(f"   {role:<15}{n['ready_s']:>9.2f}{n['rss_mb']:>10.0f}{lean['ready_s']:>9.2f}"
              f"{lean['imports_s']:>8.2f}{lean['instantiate_s']:>7.3f}{lean['rss_mb']:>9.0f}"
              f"{n['modules']:>13} -> {lean['modules']:<5}   {'ok' if ok else 'OVER'}")
    heavy = sorted({m for r in results.values() for m in r["lean"]["heavy"]})
    print(f"   heavy modules still loaded (lean): {', '.join(heavy) or 'none'}")
    if args.json:
        print(json.dumps({"targets": TARGETS, "results": results}, indent=1))


if __name__ == "__main__":
    main()
