"""Exactly-once turns under injected faults, on the local runtime (real worker processes).

A handful of debates per fault class (infra/testing/faultsuite.py, infra/local/faults.py): duplicated
and reordered events, SIGKILL at four points of a turn, racing copies of one delivery,
transient storage errors, an LLM call outliving the function's timeout, the model's rate limit
turning a call away until the turn is handed back. Each must end with
the fault-free run's transcript: no turn lost, none duplicated, at most one paid LLM call per
turn. Next to them, one software company per class (MetaGPT's five SOP roles as five functions,
rows `sop:<class>`, with one more kill point: after the workspace's save, before the commit):
the fault-free run's (turn, role, cause_by) records and replies, every LLM call of a turn paid
once, `completed`, and the same final project files. Then dead letters: retries exhausted →
conversation `failed` naming the function and the reason → cause fixed →
`python -m infra.local redrive` → completed, no turn duplicated. `bench/faults.py` runs the
same at a larger size.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from infra.local.redrive import redrive
from shared.conversation import ConversationStore
from shared.store.disk import DiskStore
from infra.testing.faultsuite import (PANEL, PANEL_SMALL_CLASSES, PANEL_TURN, ROOT, SMALL_CLASSES, SOP,
                                      SOP_SMALL_CLASSES, FaultSuite, SopBaseline, baseline, format_table)

PER_CLASS = 2
SOP_PER_CLASS = 1
FAIL_TURN = 2


def _wait_status(suite, cid, status, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, view = suite.http("GET", f"/conversations/{cid}")
        if view["status"] == status:
            return view
        time.sleep(0.1)
    raise AssertionError(f"{cid} is {view['status']}, not {status}, after {timeout}s")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Everything that needs the runtime up: the fault classes, two conversations that fail until
    their flag file exists, and the re-drive of the first one through the running runtime."""
    workdir = str(tmp_path_factory.mktemp("faults"))
    out = {"workdir": workdir, "failing": {}}
    # the fault-free software companies run (in a process of their own) while the faulted ones do
    sop_baseline = SopBaseline([FaultSuite.sop_input(c, i) for c in SOP_SMALL_CLASSES for i in range(SOP_PER_CLASS)],
                               workdir)
    with FaultSuite(workdir, rounds=2, max_turns=5, persona_timeout=5, sop_timeout=10, seed=7, log=print) as suite:
        for name in ("live", "later"):
            flag = os.path.join(workdir, f"fixed-{name}")
            cid = suite.start(f"Fault suite: dead letters ({name})", {"fail_until": {"flag": flag, "turns": [FAIL_TURN]}},
                              "deadletter")
            out["failing"][name] = {"cid": cid, "flag": flag}
        started = time.time()
        out["groups"] = suite.run(SMALL_CLASSES, PER_CLASS, sop_classes=SOP_SMALL_CLASSES, sop_per_class=SOP_PER_CLASS,
                                  panel_classes=PANEL_SMALL_CLASSES, panel_per_class=1, timeout=150)
        out["run_s"] = round(time.time() - started, 1)
        for name, f in out["failing"].items():
            f["failed_view"] = _wait_status(suite, f["cid"], "failed")
        # the cause of the first one is fixed; it is re-driven through the running runtime's FC API
        live = out["failing"]["live"]
        open(live["flag"], "w").close()
        live["report"] = redrive(suite.data, suite.s_yaml, conversation=live["cid"], endpoint=suite.rt.api_url,
                                 out=lambda line: None)
        live["view"] = _wait_status(suite, live["cid"], "completed")
        suite.rt.wait_idle(30)
        inputs = [suite.input_of[c] for label, cids in out["groups"].items() if not label.startswith(SOP) for c in cids]
        inputs += [suite.input_of[f["cid"]] for f in out["failing"].values()]
        started = time.time()
        newsrooms = tuple(suite.input_of[c] for label, cids in out["groups"].items() if label.startswith(PANEL)
                          for c in cids)
        out["expected"] = baseline(inputs, suite.rounds, suite.max_turns, workdir, newsrooms)
        out["expected_sop"] = sop_baseline.result()
        out["baseline_s"] = round(time.time() - started, 1)
        out["results"] = suite.analyze(out["groups"], out["expected"], out["expected_sop"])
        out["suite"] = suite
    return out


def test_every_conversation_has_the_fault_free_turns_exactly_once(run, capsys):
    results = {label: r for label, r in run["results"].items() if not label.startswith((SOP, PANEL))}
    with capsys.disabled():
        print(f"\nfault suite: {PER_CLASS} debates per class (2 rounds, 5 turns) and {SOP_PER_CLASS} software company "
              f"per class (sop:), {run['run_s']} s; fault-free runs {run['baseline_s']} s\n"
              + format_table(run["results"]))
    for cls, r in results.items():
        # THEN every conversation completed with the fault-free run's turns, in order
        assert not r["problems"], (cls, r["problems"])
        assert r["completed"] == r["conversations"] == PER_CLASS, (cls, r)
        assert r["lost"] == 0 and r["duplicated"] == 0 and r["mismatched"] == 0, (cls, r)
        assert r["turns_committed"] == r["turns_expected"], (cls, r)
        # AND every turn's reply was paid for once: one journal entry per turn, one LLM reply
        # produced per turn (counted by the fake LLM itself, so killed invocations count too)
        assert r["journal_entries"] == r["turns_committed"] == r["llm_paid"], (cls, r)
        assert r["llm_paid_per_turn_max"] == 1 and r["records_paid_per_turn_max"] <= 1, (cls, r)
    # AND the faults did happen
    for point in ("before_llm", "after_journal", "after_commit", "after_delivery"):
        assert results[f"kill_{point}"].get("injected_kill") == PER_CLASS, results[f"kill_{point}"]
        assert results[f"kill_{point}"].get("retries", 0) >= PER_CLASS, results[f"kill_{point}"]
    assert results["duplicates"]["event_copies"] == 3 * results["duplicates"]["turns_committed"]
    assert results["transient"].get("injected_transient_before", 0) + results["transient"].get("injected_transient_after", 0) > 0
    timeout = results["llm_timeout"]
    assert timeout.get("injected_stall") == timeout.get("attempts_timeout") == PER_CLASS, timeout
    assert timeout["llm_abandoned"] == PER_CLASS, timeout  # the calls the timeout cut off
    assert results["race"]["event_copies"] == 2 * results["race"]["turns_committed"]
    # the model's rate limit turned each throttled debate's call away 3 times, and past the
    # waiting its turn was handed back to FC (a delayed invocation), which paid the call once
    throttled = results["throttled"]
    assert throttled.get("injected_throttled") == 3 * PER_CLASS, throttled
    assert throttled.get("outcome_handed_back", 0) >= PER_CLASS, throttled
    assert results["race"].get("overlapping", 0) >= 1, results["race"]  # two instances inside one turn at once


def test_every_software_company_has_the_fault_free_turns_and_project_exactly_once(run):
    results = {label[len(SOP):]: r for label, r in run["results"].items() if label.startswith(SOP)}
    assert set(results) == set(SOP_SMALL_CLASSES)
    for cls, r in results.items():
        # THEN every software company completed with the fault-free run's (turn, role, cause_by) records and replies
        assert not r["problems"], (cls, r["problems"])
        assert r["completed"] == r["conversations"] == SOP_PER_CLASS, (cls, r)
        assert r["lost"] == 0 and r["duplicated"] == 0 and r["mismatched"] == 0, (cls, r)
        assert r["turns_committed"] == r["turns_expected"], (cls, r)
        # AND the same project: the same files with the same contents, and every turn's record agrees
        # with the workspace it names
        assert r["files_differ"] == 0 and r["workspace_inconsistent"] == 0, (cls, r)
        # AND every LLM call of every turn was paid for once: as many journal entries and paid calls as
        # the fault-free run made calls, none twice (the fake LLM counts, so killed invocations count too)
        assert r["journal_entries"] == r["calls_expected"] == r["llm_paid"], (cls, r)
        assert r["llm_paid_per_call_max"] == 1 and r["llm_overpaid"] == 0 and r["records_overpaid"] == 0, (cls, r)
    # AND the faults did happen, in the five SOP functions
    for point in ("before_llm", "after_journal", "after_workspace", "after_commit", "after_delivery"):
        assert results[f"kill_{point}"].get("injected_kill") == SOP_PER_CLASS, (point, results[f"kill_{point}"])
        assert results[f"kill_{point}"].get("retries", 0) >= SOP_PER_CLASS, (point, results[f"kill_{point}"])
    # one delivery per committed turn (the opening input's included, the last turn's end excluded)
    assert results["duplicates"]["event_copies"] == 3 * results["duplicates"]["turns_committed"], results["duplicates"]
    assert results["race"]["event_copies"] == 2 * results["race"]["turns_committed"], results["race"]
    # and a software company's call turned away 3 times by the rate limit was handed back, paid once
    assert results["throttled"].get("injected_throttled") == 3 * SOP_PER_CLASS, results["throttled"]
    assert results["throttled"].get("outcome_handed_back", 0) >= SOP_PER_CLASS, results["throttled"]
    assert results["race"].get("overlapping", 0) >= 1, results["race"]
    transient = results["transient"]
    assert transient.get("injected_transient_before", 0) + transient.get("injected_transient_after", 0) > 0, transient
    timeout = results["llm_timeout"]
    assert timeout.get("injected_stall") == timeout.get("attempts_timeout") == SOP_PER_CLASS, timeout
    assert timeout["llm_abandoned"] == SOP_PER_CLASS, timeout


def test_a_panel_answers_once_per_member_and_joins_once_under_every_fault(run):
    results = {label[len(PANEL):]: r for label, r in run["results"].items() if label.startswith(PANEL)}
    assert set(results) == set(PANEL_SMALL_CLASSES)
    for cls, r in results.items():
        # THEN every newsroom completed with the fault-free run's answers: each checker once at the
        # panel's turn, the reporter after them once (the join fired once), each call paid once
        assert not r["problems"], (cls, r["problems"])
        assert r["completed"] == r["conversations"] == 1, (cls, r)
        assert r["lost"] == 0 and r["duplicated"] == 0 and r["mismatched"] == 0, (cls, r)
        assert r["turns_committed"] == r["turns_expected"] == r["journal_entries"] == r["llm_paid"], (cls, r)
        assert r["llm_paid_per_call_max"] == 1 and r["llm_overpaid"] == 0, (cls, r)
    # AND the faults hit the panel's turn: a kill after a member's commit is before the join
    for point in ("before_llm", "after_commit", "after_delivery"):
        assert results[f"kill_{point}"].get("injected_kill") == 1, results[f"kill_{point}"]
    assert results["duplicates"]["event_copies"] >= 3 * PANEL_TURN


def test_dead_letters_fail_the_conversation_and_redrive_completes_it(run):
    data = run["suite"].data
    convs = ConversationStore(DiskStore(data))
    for name, f in run["failing"].items():
        # GIVEN a persona that failed on every attempt s.yaml allows: the conversation says so
        end = f["failed_view"]["end"]
        assert end["status"] == "failed" and end["function"] == "persona" and end["turn"] == FAIL_TURN - 1
        assert "injected failure" in end["reason"]
        assert [m["turn"] for m in f["failed_view"]["messages"]] == list(range(FAIL_TURN))
    # WHEN the first one's cause was fixed and it was re-driven through the running runtime
    live = run["failing"]["live"]
    # THEN it completed with the fault-free turns, none twice
    want = run["expected"][run["suite"].input_of[live["cid"]]]
    got = [(m["turn"], m["role"], m["content"]) for m in convs.iter_messages(live["cid"])]
    assert got == want and len(live["report"]["redriven"]) == 1
    # WHEN the second one's cause is fixed, with the runtime stopped, and the documented command runs
    later = run["failing"]["later"]
    open(later["flag"], "w").close()
    assert convs.get_end(later["cid"])["status"] == "failed"
    env = {**os.environ, "TROUPE_LLM": "fake"}
    env.pop("TROUPE_FAULTS", None)
    proc = subprocess.run([sys.executable, "-m", "infra.local", "redrive", "--data", data, "--s-yaml", run["suite"].s_yaml,
                           "--llm", "fake", "--wait", "60"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"reopened {later['cid']}" in proc.stdout and f"{later['cid']}: completed" in proc.stdout, proc.stdout
    # THEN it completed with the fault-free turns, none twice, and the letters were moved aside
    want = run["expected"][run["suite"].input_of[later["cid"]]]
    got = [(m["turn"], m["role"], m["content"]) for m in convs.iter_messages(later["cid"])]
    assert got == want
    assert convs.get_end(later["cid"])["status"] == "completed"
    store = convs.store
    assert list(store.iter("deadletters/")) == []
    moved = [json.loads(store.get(i.key)) for i in store.iter("deadletters-redriven/")]
    assert sorted(m["conversation"] for m in moved) == sorted(f["cid"] for f in run["failing"].values())
    assert os.listdir(os.path.join(data, "runtime", "deadletters", "persona")) == []
    # AND a second re-drive finds nothing to do
    again = subprocess.run([sys.executable, "-m", "infra.local", "redrive", "--data", data, "--s-yaml", run["suite"].s_yaml,
                            "--llm", "fake", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "no dead letters" in again.stdout
