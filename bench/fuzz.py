"""10,000 fuzzed requests against the gateway on the local stack; prints the status counts.

    python -m bench.fuzz [--requests N]

Fails (exit 1, with the request) on the first answer of 500 or more.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from infra.local.runtime import LocalRuntime
from infra.testing.fuzz import Target, fuzz


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    args = ap.parse_args()
    with LocalRuntime(tempfile.mkdtemp(prefix="troupe-fuzz-"), llm="fake") as rt:  # scripted: instant turns
        target = Target(rt.http_url, rt.api_key)
        started = time.perf_counter()
        statuses = fuzz(target, args.requests)
        took = time.perf_counter() - started
    total = sum(statuses.values())
    fives = sum(v for k, v in statuses.items() if k >= 500)
    print(f"{total} requests in {took:.1f} s, {fives} with a 5xx; by status: {statuses}")


if __name__ == "__main__":
    main()
