"""Role functions' cold start, measured (not asserted): `python -m bench.coldstart [--runs 3] [--json]`.

For each role function's import set (MetaGPT's five SOP roles and troupe's Character), a fresh
Python process is started and timed from spawn to "handler ready": `shared.mg` imported, what
the function's handler imports (the role runner, the LLM layer, the environment), the role class
imported and instantiated with a Context from `shared.mg.make_context()`. Each is
measured twice:

  naive   TROUPE_LEAN=0: MetaGPT's package __init__s import every role, action, LLM SDK and tool
  lean    as the functions run (shared.mg installs shared.lean): those __init__s resolve their
          names on first use

Prints, per role and mode, the median wall time from spawn to ready (including the interpreter's
own start), its import and instantiation parts, and the child's peak RSS (ru_maxrss). Targets
per role function: ready in <= 1.5 s, <= 150 MB. One untimed run of each first warms the
bytecode cache and the page cache, as a warm FC instance has them; a first start from a cold
disk is slower.
"""

from __future__ import annotations

import argparse
import json
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="timed runs per role and mode (median reported)")
    ap.add_argument("--roles", default=",".join(ROLES), help="comma-separated subset of " + ",".join(ROLES))
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
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
