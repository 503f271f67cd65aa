"""The fault-injection suite at size: `python -m bench.faults [--per-class 50]`.

Many debates per fault class on the local runtime with the scripted LLM, one class after
another (so each has its own wall time), every one checked against the same debate run
fault-free (tests/faultsuite.py has the classes, infra/local/faults.py the injection).
Prints per class: conversations, turns expected / committed, lost, duplicated, transcripts
that differ, journal entries, paid LLM calls (total and the most for one turn, counted by the
fake LLM itself so that killed invocations count too), calls abandoned by a timeout, retries
(runtime re-invocations), overlapping invocations of one delivery, outcomes, faults injected,
wall time. Exit status 1 if any conversation lost or duplicated a turn, differs, did not
complete, or any turn was paid for twice.
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

from tests.faultsuite import ALL_CLASSES, FaultSuite, baseline, cleanup, format_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=50, help="debates per fault class")
    p.add_argument("--classes", default=",".join(ALL_CLASSES), help=f"comma-separated, from {','.join(ALL_CLASSES)}")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-turns", type=int, default=5)
    p.add_argument("--persona-timeout", type=int, default=5, help="s.yaml persona timeout (llm_timeout class)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800.0, help="per class")
    p.add_argument("--workdir", help="keep everything here (default: a temporary dir, removed at the end)")
    args = p.parse_args(argv)
    classes = [c for c in args.classes.split(",") if c]
    unknown = set(classes) - set(ALL_CLASSES)
    if unknown:
        p.error(f"unknown classes: {', '.join(sorted(unknown))}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="troupe-faults-")
    t0 = time.time()
    print(f"fault bench: {args.per_class} debates per class ({args.rounds} rounds, {args.max_turns} turns), "
          f"classes {', '.join(classes)}; data in {workdir}", flush=True)
    with FaultSuite(workdir, rounds=args.rounds, max_turns=args.max_turns, persona_timeout=args.persona_timeout,
                    seed=args.seed) as suite:
        groups = {}
        for cls in classes:
            groups.update(suite.run([cls], args.per_class, timeout=args.timeout))
            print(f"  {cls}: {args.per_class} debates in {suite.wall[cls]} s", flush=True)
        inputs = [suite.input_of[c] for cids in groups.values() for c in cids]
        expected = baseline(inputs, args.rounds, args.max_turns, workdir)
        results = suite.analyze(groups, expected)
        metrics = suite.rt.metrics()
    total = round(time.time() - t0, 1)
    print()
    print(format_table(results))
    bad = False
    for cls, r in results.items():
        for problem in r["problems"][:5]:
            print(f"  {cls}: {problem}")
        if (r["problems"] or r["lost"] or r["duplicated"] or r["mismatched"] or r["llm_paid_per_turn_max"] > 1
                or r["journal_entries"] != r["turns_committed"]):
            bad = True
    persona = metrics.get("persona", {})
    print(f"\npersona: {persona.get('invocations')} invocations, {persona.get('cold_starts')} cold starts, "
          f"outcomes {persona.get('outcomes')}; total {total} s")
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "results": results, "total_s": total}, f, indent=1)
    if args.workdir is None:
        cleanup(workdir)
    print("RESULT: " + ("FAIL" if bad else "every conversation has the fault-free turns, each once, paid once"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
