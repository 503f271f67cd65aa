"""The software company at once (shared/sop/parallel.py): the engineer writes each file and QA
tests each file in an invocation of its own, wave after wave, and every wave's join fires once
with the same merged workspace whatever the duplicates and races."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from infra.testing.harness import Harness
from shared import records
from shared.conversation import ConversationStore
from shared.sop import workspace
from shared.sop.parallel import mentions, waves
from shared.store.disk import DiskStore

FIVE = "A bookkeeping app in five files: models.py, storage.py, reports.py, export.py and main.py"


def _code(h, cid) -> dict[str, str]:
    """The final project's code files, path -> sha256."""
    from shared.artifacts import latest_manifest

    files = latest_manifest(h.convs, cid)["files"]
    return {p: i["sha256"] for p, i in files.items() if p.endswith(".py") and not p.startswith(("tests/", "test_"))}


# -- waves ------------------------------------------------------------------------------------

def test_a_file_whose_logic_names_an_earlier_file_waits_for_its_wave():
    files = ["models.py", "storage.py", "service.py", "main.py"]
    logic = {"storage.py": "Saves records; from models import Transaction",
             "service.py": "Uses storage.py to keep the ledger", "main.py": "Entry point, calls service.py"}
    assert waves(files, logic) == [["models.py"], ["storage.py"], ["service.py"], ["main.py"]]
    # no names: one wave, in the task list's order
    assert waves(files, {}) == [files]
    # a later file named by an earlier one is no dependency (the task list is in dependency order)
    assert waves(["a.py", "b.py"], {"a.py": "see b.py"}) == [["a.py", "b.py"]]


def test_a_wave_holds_at_most_sixteen_files():
    files = [f"m{i}.py" for i in range(20)]
    assert [len(w) for w in waves(files, {})] == [16, 4]


@pytest.mark.parametrize("text, name, named", [
    ("from models import Ledger", "models.py", True), ("import models", "models.py", True),
    ("reads models.py", "models.py", True), ("reads app/models.py", "app/models.py", True),
    ("from app.models import X", "app/models.py", True), ("reads mymodels.py", "models.py", False),
    ("data models for the app", "models.py", False), ("models.pyc", "models.py", False)])
def test_what_counts_as_naming_a_file(text, name, named):
    assert mentions(text, name) is named


# -- the merge ---------------------------------------------------------------------------------

def _put_tree(convs, cid, key, files: dict[str, bytes]) -> str:
    tree = {}
    for path, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        workspace._put_blob(convs, cid, sha, data)
        tree[path] = {"sha256": sha, "size": len(data)}
    workspace._put_manifest(convs, key, "app", tree, sorted(files))
    return key


def test_the_merge_takes_each_branch_file_merges_dependencies_and_is_the_same_every_time(tmp_path):
    convs = ConversationStore(DiskStore(str(tmp_path)))
    cid = "20261203t000000-" + "0" * 24
    base = {"docs/task.json": b"{}", ".dependencies.json": b'{"docs/task.json": ["docs/prd.json"]}'}
    k0 = _put_tree(convs, cid, f"conversations/{cid}/workspace/000004-a.json", base)
    a = _put_tree(convs, cid, f"conversations/{cid}/workspace/000005-b.json", {
        **base, "app/a.py": b"A", "shared.txt": b"from a",
        ".dependencies.json": b'{"docs/task.json": ["docs/prd.json"], "app/a.py": ["docs/task.json"]}'})
    b = _put_tree(convs, cid, f"conversations/{cid}/workspace/000005-c.json", {
        "docs/task.json": b"{}", "app/b.py": b"B", "shared.txt": b"from b",
        ".dependencies.json": b'{"docs/task.json": ["docs/prd.json"], "app/b.py": ["docs/task.json"]}'})
    first = workspace.merge(convs, cid, f"conversations/{cid}/workspace/000005~j.json", k0, [a, b])
    tree = json.loads(convs.store.get(first))
    # each branch's own file; a file both wrote: the first branch's; MetaGPT's dependencies: both
    assert set(tree["files"]) == {"docs/task.json", ".dependencies.json", "app/a.py", "app/b.py", "shared.txt"}
    blob = lambda p: convs.store.get(f"conversations/{cid}/blobs/{tree['files'][p]['sha256']}")  # noqa: E731
    assert blob("shared.txt") == b"from a"
    assert json.loads(blob(".dependencies.json")) == {"docs/task.json": ["docs/prd.json"],
                                                      "app/a.py": ["docs/task.json"], "app/b.py": ["docs/task.json"]}
    # the same inputs merge to the same tree, byte for byte, whatever stored it first
    again = workspace.merge(convs, cid, f"conversations/{cid}/workspace/000005~k.json", k0, [a, b])
    assert convs.store.get(again) == convs.store.get(first)


# -- the company -------------------------------------------------------------------------------

def test_five_files_are_written_in_two_waves_and_tested_at_once(tmp_path):
    h = Harness(str(tmp_path))
    cid = h.start("software_company", FIVE)
    h.pump()
    assert h.convs.get_end(cid)["status"] == "completed"
    turns = h.transcript(cid)
    plan = next(t for t in turns if t["next"]["kind"] == "branches" and t["role"] == "Alex")
    assert plan["fan_out"]["waves"] == [["models.py", "storage.py", "reports.py", "export.py"], ["main.py"]]
    assert "in 2 waves" in plan["content"]
    by_turn = {}
    for t in turns:
        if t.get("branch"):
            by_turn.setdefault((t["role"], t["turn"]), []).append(t["branch"]["item"])
    assert sorted(by_turn[("Alex", plan["turn"] + 1)]) == sorted(plan["fan_out"]["waves"][0])
    assert by_turn[("Alex", plan["turn"] + 2)] == ["main.py"]
    assert len(next(v for (role, _), v in by_turn.items() if role == "Edward")) == 5
    # every file is in the project, and the tests QA ran per file all passed
    code = _code(h, cid)
    assert sorted(p.rsplit("/", 1)[1] for p in code) == ["export.py", "main.py", "models.py", "reports.py",
                                                         "storage.py"]
    _, arts = h.http("GET", f"/conversations/{cid}/artifacts")
    assert len([a for a in arts["artifacts"] if a["path"].startswith("test_outputs/")]) == 5
    # the same project as one by one, and the same on every run
    again = Harness(str(tmp_path / "again"))
    cid2 = again.start("software_company", FIVE)
    again.pump()
    assert _code(again, cid2).keys() == code.keys()
    seq = Harness(str(tmp_path / "seq"))
    cid3 = seq.start("software_company", FIVE, options={"parallel": False})
    seq.pump()
    assert not [t for t in seq.transcript(cid3) if t.get("branch") or t["next"]["kind"] == "branches"]
    assert set(_code(seq, cid3)) == set(code)


def test_every_wave_joins_once_whatever_the_duplicates_and_races(tmp_path):
    h = Harness(str(tmp_path))
    cid = h.start("software_company", FIVE)
    # up to the engineer's plan, and its first wave's four deliveries
    wave = []
    for _ in range(20):
        events = h.pending_deliveries()
        wave = [(k, e) for k, e in events if json.loads(h.store.get(k)).get("branch")]
        if wave:
            break
        for _, event in events:
            h.deliver(event)
    assert len(wave) == 4
    # WHEN every branch's event arrives three times, the copies racing in threads
    errors = h.deliver_racing([event for _, event in wave])
    assert not [e for e in errors if "InFlight" not in type(e).__name__], errors
    # THEN four branch records, and the next wave's one delivery, written once
    nxt = h.pending_deliveries()
    assert len(nxt) == 1 and json.loads(h.store.get(nxt[0][0]))["branch"]["item"] == "main.py"
    merged = [o.key for o in h.store.iter(f"conversations/{cid}/workspace/") if "~" in o.key]
    assert len(merged) == 1
    h.deliver(nxt[0][1])
    h.pump()
    assert h.convs.get_end(cid)["status"] == "completed"
    branch_records = [(t["turn"], t["branch"]["item"]) for t in h.transcript(cid) if t.get("branch")]
    assert len(branch_records) == len(set(branch_records)) == 10


def _branch_delivery() -> dict:
    branch = {"parent": "p1", "work": "code", "item": "a.py", "items": ["a.py", "b.py"], "waves": [["c.py"]],
              "messages": [{"content": "tasks"}], "then": [{"message": {"content": "x"}, "to": ["Alex"]}],
              "base": None, "spent": {"tokens": 1, "cost_cny": 0.0}}
    return records.delivery(to="Alex", turn=4, message={"content": "tasks"}, hops=5, branch=branch)


@pytest.mark.parametrize("change, needle", [
    (lambda b: b.update(item="z.py"), "its item among them"),
    (lambda b: b.update(items=[]), "1 to 16"),
    (lambda b: b.update(items=["a.py", "a.py"]), "distinct"),
    (lambda b: b.update(items=[f"f{i}.py" for i in range(17)], item="f0.py"), "1 to 16"),
    (lambda b: b.update(waves=[[]]), "later waves"),
    (lambda b: b.update(work="deploy"), "work is one of"),
    (lambda b: b.update(messages=[]), "messages its role works from"),
    (lambda b: b.update(parent=""), "names the turn it branches from"),
    (lambda b: b.update(then=[{"message": "x"}]), "then is a list"),
    (lambda b: b.update(spent={"tokens": "many"}), "spending must be numbers"),
])
def test_a_delivery_naming_a_malformed_branch_is_refused(change, needle):
    delivery = copy.deepcopy(_branch_delivery())
    records.read_delivery(delivery)  # well formed
    change(delivery["branch"])
    with pytest.raises(records.RecordError, match=needle):
        records.read_delivery(delivery)


def test_a_software_company_cannot_go_on_without_a_file():
    import os

    import yaml

    from shared import scenarios
    from shared.errors import BadRequest

    path = os.path.join(os.path.dirname(scenarios.__file__), "software_company.yaml")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    with pytest.raises(BadRequest) as e:
        scenarios.validate_scenario({**raw, "on_dead_letter": "continue"})
    assert e.value.details.get("field") == "on_dead_letter"
    assert scenarios.validate_scenario(raw)["on_dead_letter"] == "fail"


def test_a_dependencies_file_that_is_no_json_object_is_merged_as_any_file(tmp_path):
    # GIVEN a branch whose generated code overwrote MetaGPT's dependencies file with a list
    convs = ConversationStore(DiskStore(str(tmp_path)))
    cid = "20261203t000000-" + "1" * 24
    base = {".dependencies.json": b'{"docs/task.json": []}'}
    k0 = _put_tree(convs, cid, f"conversations/{cid}/workspace/000008-a.json", base)
    bad = _put_tree(convs, cid, f"conversations/{cid}/workspace/000009-b.json", {".dependencies.json": b"[1, 2]"})
    good = _put_tree(convs, cid, f"conversations/{cid}/workspace/000009-c.json",
                     {".dependencies.json": b'{"docs/task.json": [], "tests/t.py": ["a.py"]}'})
    # THEN the join still merges (the first branch's version, as for any file), it never fails
    tree = json.loads(convs.store.get(workspace.merge(convs, cid, f"conversations/{cid}/workspace/000009~j.json",
                                                       k0, [bad, good])))
    sha = tree["files"][".dependencies.json"]["sha256"]
    assert convs.store.get(f"conversations/{cid}/blobs/{sha}") == b"[1, 2]"
    # AND a join naming a tree outside its conversation is refused
    from shared.errors import RejectedEvent

    with pytest.raises(RejectedEvent):
        workspace.merge(convs, cid, f"conversations/{cid}/workspace/000009~k.json", k0, ["conversations/x/y.json"])


def test_the_turn_limit_at_a_plan_ends_the_company_with_its_files_exported(tmp_path):
    # GIVEN a software company whose turn limit falls on the engineer's plan
    h = Harness(str(tmp_path))
    cid = h.start("software_company", FIVE, options={"n_round": 4})
    h.pump()
    # THEN it ends at the limit, the plan committed and no branch run, with the tree exported
    end = h.convs.get_end(cid)
    assert (end["status"], end["reason"]) == ("completed", "turn_limit")
    turns = h.transcript(cid)
    assert turns[-1]["next"]["kind"] == "branches" and not [t for t in turns if t.get("branch")]
    exported = {i.key.split("/artifacts/", 1)[1] for i in h.store.iter(f"conversations/{cid}/artifacts/")}
    assert any(p.startswith("docs/task/") for p in exported)


def test_a_wave_s_messages_go_on_after_the_last_wave(tmp_path, monkeypatch):
    # GIVEN QA's tests in waves of one file (width 1), so that three waves follow each other
    from shared import branches

    monkeypatch.setattr(branches, "MAX_WIDTH", 1)
    h = Harness(str(tmp_path))
    cid = h.start("software_company", "A bookkeeping app in three files: models.py, report.py and main.py")
    h.pump()
    assert h.convs.get_end(cid)["status"] == "completed"
    turns = h.transcript(cid)
    qa = [t for t in turns if t.get("branch") and t["role"] == "Edward"]
    assert len({t["turn"] for t in qa}) == 3
    # THEN every wave's test result (a RunCode message) is in what followed the last wave
    from shared.sop import parallel

    last = qa[-1]
    joined = parallel.join(h.convs, cid, h.convs.meta(cid), last)
    assert joined is not None
    assert sum(o["message"]["cause_by"].endswith("RunCode") for o in joined["outbox"]) == 3
