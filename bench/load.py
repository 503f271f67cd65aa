"""Past the LLM's rate limit, at size: `python -m bench.load [--debates 100] [--rpm 60] [--turns 4]`.

The debates start at once on the local runtime, whose role functions call MetaGPT's DashScope
provider against a DashScope-wire endpoint that allows `--rpm` requests a minute, enforced per
second (tests/llm_endpoints.py), answering 429 with DashScope's throttling body. Throttled calls
back off inside the invocation, then are handed back to FC as delayed invocations
(shared/handback.py). Prints completed turns per second against the limit, p50/p95
conversation time, the calls the limit turned away and the turns handed back, and the checks:
every debate completed, 0 turns lost or duplicated, each LLM call paid once, no dead letter.
Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from infra.testing.load import LoadRun, format_report  # noqa: E402
from tests.llm_endpoints import DashScopeEndpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--debates", type=int, default=100)
    p.add_argument("--turns", type=int, default=4, help="turns per debate (its max_turns)")
    p.add_argument("--rpm", type=int, default=60, help="the model's requests a minute (60 or more)")
    p.add_argument("--instances", type=int, default=8,
                   help="the local runtime's instances per function (s.yaml's limits cap it too)")
    p.add_argument("--wait", type=float, default=None,
                   help="TROUPE_THROTTLE_WAIT_S for the role functions (default: a quarter of the timeout)")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--workdir", help="keep everything here (default: a temporary dir, removed at the end)")
    args = p.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="troupe-load-")
    print(f"load bench: {args.debates} debates × {args.turns} turns at once on {args.rpm} requests/min "
          f"(enforced per second), {args.instances} instances per function; "
          f"{time.strftime('%Y-%m-%d')}, {platform.machine()} × {os.cpu_count()} CPUs", flush=True)
    try:
        with DashScopeEndpoint(key="sk-load", rpm=args.rpm) as ep, \
                LoadRun(workdir, ep, instances=args.instances, throttle_wait_s=args.wait) as run:
            r = run.run(args.debates, args.turns, args.timeout)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(format_report(r))
    ok = not r["not_completed"] and not (r["lost"] or r["duplicated"] or r["paid_twice"] or r["dead_letters"])
    ok = ok and r["answered_requests"] == r["journal_entries"] == r["paid_in_records"]
    if r["not_completed"]:
        print("not completed:", *r["not_completed"][:10], sep="\n  ")
    print("checks:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
