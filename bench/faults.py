"""The fault-injection suite at size: `python -m bench.faults [--per-class 50] [--sop-per-class 10]`.

Many debates and software companies (MetaGPT's five SOP roles as five functions, rows `sop:<class>`)
per fault class on the local runtime with the scripted LLM, one class after another (so each has
its own wall time), every one checked against the same conversation run fault-free
(infra/testing/faultsuite.py has the classes, infra/local/faults.py the injection; the fault-free software
companies run in a process of their own, alongside). Prints per class: conversations, turns
expected / committed, lost, duplicated, records that differ, software companies whose final
project files differ and turns whose record disagrees with its workspace, LLM calls of the
fault-free run, journal entries, paid LLM calls (total, the most for one call, and beyond the
fault-free run's, counted by the fake LLM itself so that killed invocations count too), calls
abandoned by a timeout, retries (runtime re-invocations), overlapping invocations of one delivery,
outcomes, faults injected, wall time. Exit status 1 if any conversation lost or duplicated a
turn, differs, did not complete, left other project files, or any LLM call was paid for twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TROUPE_LLM", "fake")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from infra.testing.faultsuite import (ALL_CLASSES, PANEL, PANEL_ALL_CLASSES, SOP, SOP_ALL_CLASSES, SOP_FUNCTIONS,  # noqa: E402
                                      FaultSuite, SopBaseline, baseline, cleanup, format_table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=50, help="debates per fault class")
    p.add_argument("--classes", default=",".join(ALL_CLASSES), help=f"comma-separated, from {','.join(ALL_CLASSES)}")
    p.add_argument("--sop-per-class", type=int, default=10, help="software companies per fault class (0: none)")
    p.add_argument("--sop-classes", default=",".join(SOP_ALL_CLASSES),
                   help=f"comma-separated, from {','.join(SOP_ALL_CLASSES)}")
    p.add_argument("--panel-per-class", type=int, default=5,
                   help=f"newsrooms (a panel of two checkers at turn 3) per class of {','.join(PANEL_ALL_CLASSES)} (0: none)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-turns", type=int, default=5)
    p.add_argument("--persona-timeout", type=int, default=5, help="s.yaml persona timeout (llm_timeout class)")
    p.add_argument("--sop-timeout", type=int, default=10,
                   help="s.yaml timeout of the five SOP functions (llm_timeout class)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800.0, help="per class")
    p.add_argument("--workdir", help="keep everything here (default: a temporary dir, removed at the end)")
    args = p.parse_args(argv)
    classes = [c for c in args.classes.split(",") if c] if args.per_class > 0 else []
    sop_classes = [c for c in args.sop_classes.split(",") if c] if args.sop_per_class > 0 else []
    unknown = (set(classes) - set(ALL_CLASSES)) | (set(sop_classes) - set(SOP_ALL_CLASSES))
    if unknown:
        p.error(f"unknown classes: {', '.join(sorted(unknown))}")
    if not classes and not sop_classes:
        p.error("nothing to run")
    workdir = args.workdir or tempfile.mkdtemp(prefix="troupe-faults-")
    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    print(f"fault bench: {args.per_class} debates per class ({args.rounds} rounds, {args.max_turns} turns), "
          f"classes {', '.join(classes) or '-'}; {args.sop_per_class} software companies per class, classes "
          f"{', '.join(sop_classes) or '-'}; data in {workdir}", flush=True)
    sop_baseline = SopBaseline([FaultSuite.sop_input(c, i) for c in sop_classes for i in range(args.sop_per_class)],
                               workdir) if sop_classes else None
    with FaultSuite(workdir, rounds=args.rounds, max_turns=args.max_turns, persona_timeout=args.persona_timeout,
                    sop_timeout=args.sop_timeout, seed=args.seed) as suite:
        groups = {}
        for cls in dict.fromkeys(classes + sop_classes):
            ran = suite.run([cls] if cls in classes else [], args.per_class, timeout=args.timeout,
                            sop_classes=[cls] if cls in sop_classes else [], sop_per_class=args.sop_per_class)
            groups.update(ran)
            print("  " + "; ".join(f"{label}: {len(cids)} {'software companies' if label.startswith(SOP) else 'debates'}"
                                   f" in {suite.wall[label]} s" for label, cids in ran.items()), flush=True)
        if args.panel_per_class > 0:
            ran = suite.run([], 0, timeout=args.timeout, panel_classes=PANEL_ALL_CLASSES,
                            panel_per_class=args.panel_per_class)
            groups.update(ran)
            print(f"  panels: {sum(len(c) for c in ran.values())} newsrooms in "
                  f"{max(suite.wall[label] for label in ran)} s", flush=True)
        inputs = [suite.input_of[c] for label, cids in groups.items() if not label.startswith(SOP) for c in cids]
        newsrooms = tuple(suite.input_of[c] for label, cids in groups.items() if label.startswith(PANEL) for c in cids)
        expected = baseline(inputs, args.rounds, args.max_turns, workdir, newsrooms)
        expected_sop = sop_baseline.result() if sop_baseline else {}
        results = suite.analyze(groups, expected, expected_sop)
        metrics = suite.rt.metrics()
    total = round(time.time() - t0, 1)
    print()
    print(format_table(results))
    bad = False
    for cls, r in results.items():
        for problem in r["problems"][:5]:
            print(f"  {cls}: {problem}")
        if (r["problems"] or r["lost"] or r["duplicated"] or r["mismatched"] or r["llm_paid_per_call_max"] > 1
                or r["llm_overpaid"] or r.get("records_overpaid") or r.get("files_differ")
                or r.get("workspace_inconsistent") or r["journal_entries"] != r["calls_expected"]
                or r["completed"] != r["conversations"]):
            bad = True
    print()
    for fn in ("persona", *SOP_FUNCTIONS):
        m = metrics.get(fn, {})
        if m.get("invocations"):
            print(f"{fn}: {m.get('invocations')} invocations, {m.get('cold_starts')} cold starts, "
                  f"outcomes {m.get('outcomes')}")
    print(f"total {total} s")
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "results": results, "total_s": total}, f, indent=1)
    if args.workdir is None:
        cleanup(workdir)
    print("RESULT: " + ("FAIL" if bad else "every conversation has the fault-free turns, each once, paid once"
                        + (", and every software company the fault-free project" if sop_classes else "")))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
