"""Parallel branches, measured: `make bench-parallel` (`python -m bench.parallel`).

Every LLM call is answered by the scripted LLM after a fixed delay (2 s by default), in one run:

  1. the software company for a five-file requirement, from POST to its end:
       troupe, parallel   the engineer writes each file and QA tests each file in an invocation
                          of its own (shared/sop/parallel.py), on the local runtime;
       troupe, one by one the same with the scenario's `parallel: false`;
       MetaGPT in-process MetaGPT's own Team.run with the same five roles, the same scripted
                          LLM and the same delay (QA's test rounds set to troupe's default, 1).
     Target: parallel <= 0.6x MetaGPT in-process.
  2. a panel of four (scenario roles answering one message at once, shared/routing.py): from
     the end of the turn before it to the start of the turn after its join, against the same
     span when one role answers there. Target: <= 1.3x.
  3. storage requests per branch, in-process: the engineer's first wave of 4 files and of 2;
     every branch but the one that joins makes the same number, whatever the wave's width.

Figures, not assertions: the README and docs/architecture.md record them.

    python -m bench.parallel [--latency 2.0] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

REQUIREMENT = "A bookkeeping app in five files: models.py, storage.py, reports.py, export.py and main.py"
TARGETS = {"company_vs_metagpt": 0.6, "panel_vs_one": 1.3}
PANEL = ["Economist", "Engineer", "Lawyer", "Ethicist"]


def _panel_scenario(sid: str, answering: list) -> dict:
    """A round_robin scenario: a host asks, `answering` (one role, or a panel) answers, the host sums up."""
    roles = [{"name": "Host", "profile": "moderator", "goal": "ask one sharp question, then sum up the answers"}]
    roles += [{"name": n, "profile": n.lower(), "goal": f"answer the host's question as a {n.lower()} would"}
              for n in PANEL]
    return {"id": sid, "title": {"en": sid}, "flow": "round_robin", "rounds": 1, "order": ["Host", answering, "Host"],
            "limits": {"max_turns": 3, "max_seconds": 600}, "roles": roles}


# -- troupe on the local runtime ---------------------------------------------------------------

def _ended(api, cid: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, conv = api.http("GET", f"/conversations/{cid}")
        if conv.get("status") not in ("running", None):
            return conv
        time.sleep(0.1)
    raise TimeoutError(f"{cid} did not end in {timeout:.0f} s")


def troupe_company(rt, api, parallel: bool, timeout: float = 900) -> dict:
    started = time.perf_counter()
    cid = _start(api, {"scenario": "software_company", "input": REQUIREMENT, "options": {"parallel": parallel}})
    conv = _ended(api, cid, timeout)
    wall = time.perf_counter() - started
    assert conv["status"] == "completed", conv.get("end")
    msgs = list(_convs(rt).iter_messages(cid))
    code = sorted(p for p in _tree(rt, cid) if p.endswith(".py") and not p.startswith("tests/"))
    calls = sum(1 for _ in rt.store.iter(f"conversations/{cid}/journal/"))
    return {"wall_s": round(wall, 2), "turns": len({m["turn"] for m in msgs}) - 1, "records": len(msgs) - 1,
            "llm_calls": calls, "code_files": len(code)}


def troupe_panel(rt, api, scenario: str) -> float:
    """From the end of turn 1 (the host's question) to the start of turn 3 (the host's summary)."""
    cid = _start(api, {"scenario": scenario, "input": "Should cities ban cars from their centres?"})
    conv = _ended(api, cid, 300)
    assert conv["status"] == "completed", conv.get("end")
    invs = {}
    for m in _convs(rt).iter_messages(cid):
        inv = m.get("invocation") or {}
        invs.setdefault(m["turn"], []).append(inv)
    first_end = max(i["start"] + i["duration_ms"] / 1000 for i in invs[1])
    last_start = min(i["start"] for i in invs[3])
    return last_start - first_end


def _start(api, body: dict) -> str:
    status, out = api.http("POST", "/conversations", body)
    assert status == 201, out
    return out["id"]


def _convs(rt):
    from shared.conversation import ConversationStore

    return ConversationStore(rt.store)


def _tree(rt, cid: str) -> list[str]:
    from shared.artifacts import latest_manifest

    return sorted((latest_manifest(_convs(rt), cid) or {}).get("files") or {})


# -- storage requests per branch ------------------------------------------------------------------

def requests_per_branch(requirement: str) -> dict:
    """The engineer's first wave, in-process: each branch's storage requests (the one that joins
    reads the others' records and trees, and writes the merged tree and what follows)."""
    import json as _json

    from infra.testing.harness import Harness

    h = Harness(tempfile.mkdtemp(prefix="troupe-bench-branch-"))
    h.start("software_company", requirement)
    wave = []
    for _ in range(20):
        keyed = h.pending_deliveries()
        wave = [e for k, e in keyed if k.startswith("inbox/engineer/") and _json.loads(h.store.get(k)).get("branch")]
        if wave:
            break
        for _, e in keyed:
            h.deliver(e)
    counts = []
    for event in wave:
        before = h.store.total_requests()
        h.deliver(event)
        counts.append(h.store.total_requests() - before)
    return {"width": len(wave), "branch": counts[:-1], "joining": counts[-1]}


# -- MetaGPT in one process ----------------------------------------------------------------------

def metagpt_company(latency: float) -> dict:
    """MetaGPT's Team.run with the software company's five roles and the scripted LLM."""
    import shared.mg
    from metagpt.roles import Architect, Engineer, ProductManager, ProjectManager, QaEngineer
    from metagpt.team import Team

    from infra.testing.scripted_llm import ScriptedLLM

    from metagpt.actions.run_code import RunCode

    # troupe's QA installs nothing (shared/sop/confine.py): nor does the baseline (MetaGPT would
    # pip-install requirements.txt and pytest before each test run)
    RunCode._install_dependencies = staticmethod(lambda working_directory, env: None)
    work = tempfile.mkdtemp(prefix="troupe-bench-metagpt-")
    ctx = shared.mg.make_context(workspace=work)
    llms = []
    roles = [ProductManager(context=ctx), Architect(context=ctx), ProjectManager(context=ctx),
             Engineer(context=ctx), QaEngineer(context=ctx, test_round_allowed=1)]
    for role in roles:
        llm = ScriptedLLM(latency=latency)
        llms.append(llm)
        role.llm = llm
        for action in role.actions:
            action.set_llm(llm, override=True)
    team = Team(context=ctx)
    team.hire(roles)
    team.invest(1000.0)
    started = time.perf_counter()
    asyncio.run(team.run(n_round=12, idea=REQUIREMENT, auto_archive=False))
    wall = time.perf_counter() - started
    code = [p for p in _walk(work) if p.endswith(".py") and "/tests/" not in p and "test_" not in os.path.basename(p)]
    return {"wall_s": round(wall, 2), "llm_calls": sum(sum(llm.calls.values()) for llm in llms),
            "code_files": len(code)}


def _walk(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


# -- the run -------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency", type=float, default=2.0, help="seconds the scripted LLM takes per call")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ["TROUPE_LLM"] = "fake"
    os.environ.setdefault("TROUPE_API_KEY", secrets.token_urlsafe(24))
    from infra.local.runtime import LocalRuntime
    from infra.testing.load import ApiClient

    out: dict = {"latency_s": args.latency, "requirement": REQUIREMENT}
    data = tempfile.mkdtemp(prefix="troupe-bench-parallel-")
    env = {"TROUPE_LLM": "fake", "TROUPE_FAKE_LATENCY_MS": str(int(args.latency * 1000))}
    with LocalRuntime(data, extra_env=env, max_instances=6, scale_out_after=0.0) as rt:
        api = ApiClient(rt)
        for sid, answering in (("bench_panel_of_four", PANEL), ("bench_one_answer", PANEL[0])):
            status, body = api.http("POST", "/scenarios", _panel_scenario(sid, answering))
            assert status == 201, body
        # warm: start every function's instances (the runs below then measure steady state)
        print("warming the functions' instances (one parallel company, two panels) ...", flush=True)
        troupe_company(rt, api, parallel=True)
        troupe_panel(rt, api, "bench_panel_of_four")
        troupe_panel(rt, api, "bench_one_answer")
        rt.wait_idle(60)
        print("1. the software company, five files", flush=True)
        out["troupe_parallel"] = troupe_company(rt, api, parallel=True)
        print(f"   troupe, parallel:        {out['troupe_parallel']}", flush=True)
        out["troupe_sequential"] = troupe_company(rt, api, parallel=False)
        print(f"   troupe, one by one:      {out['troupe_sequential']}", flush=True)
        print("2. a panel of four", flush=True)
        panel = [troupe_panel(rt, api, "bench_panel_of_four") for _ in range(3)]
        one = [troupe_panel(rt, api, "bench_one_answer") for _ in range(3)]
    print("3. storage requests per branch (in-process, the engineer's first wave)", flush=True)
    out["requests"] = [requests_per_branch(REQUIREMENT),
                       requests_per_branch("A bookkeeping app in three files: models.py, report.py and main.py")]
    out["metagpt_in_process"] = metagpt_company(args.latency)
    print(f"   MetaGPT in-process:      {out['metagpt_in_process']}", flush=True)
    out["panel_s"] = round(statistics.median(panel), 2)
    out["one_answer_s"] = round(statistics.median(one), 2)
    par, seq, mg = (out[k]["wall_s"] for k in ("troupe_parallel", "troupe_sequential", "metagpt_in_process"))
    out["ratios"] = {"parallel_vs_metagpt": round(par / mg, 2), "sequential_vs_metagpt": round(seq / mg, 2),
                     "parallel_vs_sequential": round(par / seq, 2),
                     "panel_vs_one": round(out["panel_s"] / out["one_answer_s"], 2)}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    r = out["ratios"]
    print(f"\nLLM at {args.latency:.1f} s a call.")
    print(f"Software company, five files: troupe parallel {par:.1f} s, troupe one by one {seq:.1f} s, "
          f"MetaGPT in-process {mg:.1f} s")
    print(f"  parallel / MetaGPT = {r['parallel_vs_metagpt']}x (target <= {TARGETS['company_vs_metagpt']}x); "
          f"one by one / MetaGPT = {r['sequential_vs_metagpt']}x; parallel / one by one = {r['parallel_vs_sequential']}x")
    print(f"Panel of four: {out['panel_s']:.2f} s against one answer's {out['one_answer_s']:.2f} s "
          f"(median of 3): {r['panel_vs_one']}x (target <= {TARGETS['panel_vs_one']}x)")
    for q in out["requests"]:
        print(f"Storage requests, a wave of {q['width']} files: each branch {q['branch']}, the one that joins "
              f"{q['joining']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
