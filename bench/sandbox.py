"""What confining generated code costs: `python -m bench.sandbox [--runs 15]`.

QA's RunCode runs one test file per run. Each is timed (median wall time, spawn to exit) as:

  plain      `python <file>` in the project folder, MetaGPT's own way
  confined   shared/sop/sandbox.run: resource limits, Landlock (where the kernel has it), the
             audit hook, then the file

The file is a small unittest module of the size the SOP writes (a class, four tests).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.sop import sandbox

TEST = '''import unittest


class Ledger:
    def __init__(self):
        self.items = []

    def add(self, amount):
        self.items.append(amount)

    def balance(self):
        return round(sum(self.items), 2)


class TestLedger(unittest.TestCase):
    def test_empty(self):
        self.assertEqual(Ledger().balance(), 0)

    def test_add(self):
        ledger = Ledger()
        ledger.add(5.0)
        self.assertEqual(ledger.balance(), 5.0)

    def test_many(self):
        ledger = Ledger()
        for i in range(100):
            ledger.add(i)
        self.assertEqual(ledger.balance(), 4950)

    def test_negative(self):
        ledger = Ledger()
        ledger.add(-2.5)
        self.assertEqual(ledger.balance(), -2.5)


if __name__ == "__main__":
    unittest.main()
'''


def _time(fn, runs: int) -> float:
    fn()  # warm the page cache
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sandbox", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        (ws / "proj" / "tests").mkdir(parents=True)
        (ws / "proj" / "tests" / "test_ledger.py").write_text(TEST)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}

        def plain():
            proc = subprocess.run([sandbox.interpreter(), "tests/test_ledger.py"], cwd=ws / "proj", env=env,
                                  capture_output=True)
            assert proc.returncode == 0, proc.stderr

        def confined(layers=sandbox.LAYERS):
            out, err = sandbox.run(ws, ws / "proj", [], ["python", "tests/test_ledger.py"], env, layers=layers)
            assert err.rstrip().endswith("OK"), err

        rows = [("plain python", _time(plain, args.runs)),
                ("audit hook only", _time(lambda: confined(("audit_hook",)), args.runs)),
                ("landlock + audit hook", _time(confined, args.runs))]
    print(f"sandbox: one test file run, median of {args.runs}; Landlock ABI {sandbox.landlock_abi()}, "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    base = rows[0][1]
    for label, ms in rows:
        print(f"  {label:<24}{ms:>8.1f} ms   {ms - base:+.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
