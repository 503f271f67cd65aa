"""What troupe's orchestration costs, measured (not asserted): `make bench`, or
`python -m bench.orchestration [--quick]`.

Prints:
  1. storage requests per turn at turn 2 and at turn T (in-process, counted at the store);
  2. on the local runtime, K debates of T turns one after another: per-turn orchestration
     overhead (interval between consecutive commits minus the LLM's time), p50/p95;
     trigger-to-handler latency; worker cold starts;
  3. the same debate run in-process by MetaGPT's Team.run, and the ratio, with the scripted
     LLM answering at once and answering after a delay like a real model;
  4. N concurrent debates on the local runtime: sustained turns per second.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
import urllib.request

from bench.team_baseline import team_seconds_per_turn


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


# --- 1. storage requests per turn ----------------------------------------------------------


def requests_per_turn(turns: int) -> dict[int, dict]:
    from shared.conversation import ConversationStore
    from shared.runner import RoleRunner
    from infra.testing.harness import Harness

    h = Harness(tempfile.mkdtemp(prefix="troupe-bench-"))
    runner = RoleRunner(ConversationStore(h.store), "persona", h.llm_factory)  # its own meta cache
    cid = h.start(max_turns=turns + 1, rounds=100)
    per_turn: dict[int, dict] = {}
    for _ in range(turns + 5):
        batch = h.pending_inbox()
        if not batch:
            break
        for event in batch:
            before = dict(h.store.requests)
            out = runner.handle_event(event)
            delta = {k: v - before.get(k, 0) for k, v in h.store.requests.items() if v - before.get(k, 0)}
            per_turn[out[0].get("turn", -1)] = delta
    assert h.convs.get_end(cid)["status"] == "completed"
    return per_turn


# --- 2-4. on the local runtime -------------------------------------------------------------


TOKENS: dict[str, str] = {}


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url + "/conversations", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {os.environ['TROUPE_API_KEY']}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        created = json.loads(resp.read())
    TOKENS[created["id"]] = created["token"]
    return created


def _status(url: str, cid: str) -> str:
    req = urllib.request.Request(f"{url}/conversations/{cid}?limit=1", headers={"Authorization": f"Bearer {TOKENS[cid]}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())["status"]


def _wait(url: str, cids: list[str], timeout: float) -> None:
    deadline = time.time() + timeout
    pending = list(cids)
    while pending and time.time() < deadline:
        pending = [c for c in pending if _status(url, c) == "running"]
        if pending:
            time.sleep(0.2)
    if pending:
        raise SystemExit(f"{len(pending)} conversations did not end within {timeout}s")


def commit_intervals(store, cid: str) -> tuple[list[float], list[float]]:
    """Per turn after the first: (interval between consecutive commits, that turn's LLM time), ms."""
    from shared.conversation import ConversationStore

    msgs = [m for m in ConversationStore(store).iter_messages(cid) if m.get("invocation")]
    ends = [(m["invocation"]["start"] * 1000 + m["invocation"]["duration_ms"], m["invocation"].get("llm_ms", 0.0))
            for m in msgs]
    intervals, llm = [], []
    for (prev, _), (cur, cur_llm) in zip(ends, ends[1:]):
        intervals.append(cur - prev)
        llm.append(cur_llm)
    return intervals, llm


def runtime_run(convs: int, turns: int, *, concurrent: bool, latency_ms: float = 0.0,
                instances: int = 2) -> dict:
    from infra.local.runtime import LocalRuntime

    data = tempfile.mkdtemp(prefix="troupe-bench-rt-")
    env = {"TROUPE_LLM": "fake", "TROUPE_FAKE_LATENCY_MS": str(latency_ms)}
    with LocalRuntime(data, extra_env=env, max_instances=instances, scale_out_after=0.0) as rt:
        # warm every worker first, so that cold starts are measured apart from steady state
        warm = _post(rt.http_url, {"scenario": "debate", "input": "warm up", "limits": {"max_turns": 2}})
        _wait(rt.http_url, [warm["id"]], 120)
        rt.wait_idle(60)
        cold = [r.cold_start_ms for r in rt.invocation_log if r.cold_start and r.cold_start_ms]
        mark = len(rt.invocation_log)
        started = time.perf_counter()
        cids = []
        if concurrent:
            lock = threading.Lock()

            def start_one(i):
                c = _post(rt.http_url, {"scenario": "debate", "input": f"Motion {i}", "rounds": 100,
                                        "limits": {"max_turns": turns}})
                with lock:
                    cids.append(c["id"])

            threads = [threading.Thread(target=start_one, args=(i,)) for i in range(convs)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            _wait(rt.http_url, cids, 600)
        else:
            for i in range(convs):
                c = _post(rt.http_url, {"scenario": "debate", "input": f"Motion {i}", "rounds": 100,
                                        "limits": {"max_turns": turns}})
                cids.append(c["id"])
                _wait(rt.http_url, [c["id"]], 300)
        wall = time.perf_counter() - started
        rt.wait_idle(60)
        intervals, llm = [], []
        for cid in cids:
            i, l_ = commit_intervals(rt.store, cid)
            intervals += i
            llm += l_
        trig = [r.trigger_latency_ms for r in rt.invocation_log[mark:]
                if r.trigger_latency_ms is not None and r.function_id == "persona"]
        handler = [r.duration_ms for r in rt.invocation_log[mark:] if r.function_id == "persona" and r.duration_ms]
        overhead = [i - l_ for i, l_ in zip(intervals, llm)]
        return {"wall_s": wall, "turns": convs * turns, "turns_per_s": convs * turns / wall,
                "interval_ms": intervals, "overhead_ms": overhead, "trigger_ms": trig, "handler_ms": handler,
                "cold_ms": cold}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--turns", type=int, default=200, help="T for storage requests per turn")
    args = ap.parse_args()
    os.environ.setdefault("TROUPE_LLM", "fake")
    os.environ.setdefault("TROUPE_API_KEY", secrets.token_urlsafe(24))
    T = 30 if args.quick else args.turns
    K, KT = (3, 10) if args.quick else (10, 20)
    N, NT = (20, 6) if args.quick else (100, 10)

    print("== 1. storage requests per turn (in-process, counted at the store)")
    per = requests_per_turn(T)
    for t in (2, T):
        print(f"   turn {t:>4}: {sum(per[t].values())} requests  {per[t]}")
    print(f"   turn    1: {sum(per[1].values())} requests  (first turn an instance sees: + GET meta.json)")
    print(f"   turn {T + 1:>4}: {sum(per[T + 1].values())} requests  (last turn: + PUT end.json)")

    print(f"\n== 2. local runtime: {K} debates x {KT} turns, one after another, scripted LLM at 0 ms")
    seq = runtime_run(K, KT, concurrent=False)
    print(f"   per-turn orchestration overhead: p50 {pct(seq['overhead_ms'], 50):.1f} ms, "
          f"p95 {pct(seq['overhead_ms'], 95):.1f} ms  ({len(seq['overhead_ms'])} turns)")
    print(f"   trigger-to-handler latency:      p50 {pct(seq['trigger_ms'], 50):.1f} ms, "
          f"p95 {pct(seq['trigger_ms'], 95):.1f} ms")
    print(f"   persona handler time:            p50 {pct(seq['handler_ms'], 50):.1f} ms, "
          f"p95 {pct(seq['handler_ms'], 95):.1f} ms")
    print(f"   worker cold starts (spawn to handler ready): {', '.join(f'{c:.0f} ms' for c in seq['cold_ms'])}")

    print("\n== 3. versus the same debate in-process with MetaGPT's Team.run")
    base0 = team_seconds_per_turn(KT) * 1000
    ours0 = statistics.median(seq["interval_ms"])
    print(f"   LLM at 0 ms:   Team.run {base0:.2f} ms/turn, troupe {ours0:.1f} ms/turn, ratio {ours0 / base0:.1f}x")
    lat = 300.0
    os.environ["TROUPE_FAKE_LATENCY_MS"] = str(lat)
    base1 = team_seconds_per_turn(min(KT, 10), runs=1) * 1000
    os.environ["TROUPE_FAKE_LATENCY_MS"] = "0"
    slow = runtime_run(2 if not args.quick else 1, min(KT, 10), concurrent=False, latency_ms=lat)
    ours1 = statistics.median(slow["interval_ms"])
    print(f"   LLM at {lat:.0f} ms: Team.run {base1:.1f} ms/turn, troupe {ours1:.1f} ms/turn, ratio {ours1 / base1:.2f}x")

    print(f"\n== 4. local runtime: {N} concurrent debates x {NT} turns, 2 persona instances")
    conc = runtime_run(N, NT, concurrent=True)
    print(f"   {conc['turns']} turns in {conc['wall_s']:.1f} s: {conc['turns_per_s']:.1f} turns/s; "
          f"persona handler p50 {pct(conc['handler_ms'], 50):.1f} ms, trigger latency p50 "
          f"{pct(conc['trigger_ms'], 50):.1f} ms p95 {pct(conc['trigger_ms'], 95):.1f} ms")


if __name__ == "__main__":
    main()
