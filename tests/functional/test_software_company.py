"""MetaGPT's software company, one function per role, driven by the SOP-shaped scripted LLM."""

import ast
import base64
import io
import json
import re
import zipfile

import pytest

from infra.local.events import make_http_event
from infra.testing.harness import SOP_FUNCTIONS, Harness

IDEA = "开发一个记账APP"


@pytest.fixture()
def h(tmp_path):
    return Harness(str(tmp_path / "data"))


def _get(h, cid, path):
    resp = h.gateway.handle(make_http_event("GET", f"/conversations/{cid}{path}",
                                            headers={"Authorization": f"Bearer {h.tokens[cid]}"}))
    body = resp["body"]
    return resp["statusCode"], (base64.b64decode(body) if resp.get("isBase64Encoded") else body.encode()), resp


def _files(h, cid):
    status, body = h.http("GET", f"/conversations/{cid}/artifacts")
    assert status == 200, body
    return {a["path"]: a for a in body["artifacts"]}


def _shape(files):
    return sorted(re.sub(r"\d{14}", "<time>", p) for p in files)


def test_the_sop_runs_each_role_as_its_own_invocation_and_leaves_the_project(h):
    cid = h.start("software_company", IDEA)
    h.pump()
    status, conv = h.http("GET", f"/conversations/{cid}")
    assert conv["status"] == "completed", conv["end"]
    turns = h.transcript(cid)
    speakers = [t["role"] for t in turns[1:]]
    # MetaGPT's order, decided by its watch rules: PM, architect, project manager, engineer, QA
    assert speakers[:4] == ["Alice", "Bob", "Eve", "Alex"]
    assert "Edward" in speakers
    _, inv = h.http("GET", f"/conversations/{cid}/invocations")
    functions = {r["function"] for r in inv["invocations"] if r.get("outcome") == "committed"}
    assert set(SOP_FUNCTIONS) <= functions
    files = _files(h, cid)
    prd = [p for p in files if p.startswith("docs/prd/") and p.endswith(".json")]
    design = [p for p in files if p.startswith("docs/system_design/") and p.endswith(".json")]
    tasks = [p for p in files if p.startswith("docs/task/") and p.endswith(".json")]
    assert prd and design and tasks, sorted(files)
    _, raw, _ = _get(h, cid, f"/artifacts/{prd[0]}")
    prd_doc = json.loads(raw)
    for section in ("Product Goals", "User Stories", "Requirement Pool"):
        assert prd_doc.get(section), section
    _, raw, _ = _get(h, cid, f"/artifacts/{design[0]}")
    design_doc = json.loads(raw)
    assert "classDiagram" in design_doc["Data structures and interfaces"]
    assert design_doc.get("Program call flow")
    _, raw, _ = _get(h, cid, f"/artifacts/{tasks[0]}")
    task_list = json.loads(raw)["Task list"]
    assert task_list
    root = next(iter({p.split("/")[0] for p in files if p.endswith(".py") and not p.startswith("tests/")}))
    for name in task_list:
        path = f"{root}/{name}"
        assert path in files, (path, sorted(files))
        _, code, _ = _get(h, cid, f"/artifacts/{path}")
        ast.parse(code.decode())
    tests = [p for p in files if p.startswith("tests/") and p.endswith(".py")]
    assert tests
    # QA ran them, confined (shared/sop/sandbox.py), and they passed
    outputs = [p for p in files if p.startswith("test_outputs/")]
    assert len(outputs) == len(tests)
    for p in outputs:
        result = json.loads(_get(h, cid, f"/artifacts/{p}")[1])
        assert "## Status:\nPASS" in result["summary"] and result["stderr"].rstrip().endswith("OK"), result
    for p in tests:
        ast.parse(_get(h, cid, f"/artifacts/{p}")[1].decode())
    # the zip holds the same files; the final tree is also exported as plain objects
    status, raw, resp = _get(h, cid, "/artifacts.zip")
    assert status == 200 and resp["headers"]["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(raw)).namelist()
    assert len(names) == len(files)
    exported = {i.key.split("/artifacts/", 1)[1] for i in h.store.iter(f"conversations/{cid}/artifacts/")}
    assert exported == set(files)


def test_duplicated_events_change_nothing(h, tmp_path):
    cid = h.start("software_company", IDEA)
    h.pump(copies=3)
    turns = h.transcript(cid)
    once = Harness(str(tmp_path / "once"))
    cid2 = once.start("software_company", IDEA)
    once.pump()
    assert [t["role"] for t in turns] == [t["role"] for t in once.transcript(cid2)]
    # MetaGPT names documents by the time they were written: compare the trees without the stamps
    assert _shape(_files(h, cid)) == _shape(_files(once, cid2))
    # one record a turn, but for the branches of a wave (one per file)
    assert len({(t["turn"], (t.get("branch") or {}).get("item")) for t in turns}) == len(turns)
    assert [t["branch"]["item"] for t in turns if t.get("branch") and t["role"] == "Alex"] == ["models.py", "main.py"]
    _, inv = h.http("GET", f"/conversations/{cid}/invocations")
    assert sum(r.get("llm_paid", 0) for r in inv["invocations"]) == \
        sum(r.get("llm_paid", 0) for r in once.http("GET", f"/conversations/{cid2}/invocations")[1]["invocations"])


def test_options_code_review_and_no_test_runs(h):
    cid = h.start("software_company", IDEA, options={"code_review": True, "run_tests": False, "n_round": 20})
    h.pump()
    status, conv = h.http("GET", f"/conversations/{cid}")
    assert conv["status"] == "completed"
    assert conv["limits"]["max_turns"] == 20
    turns = h.transcript(cid)
    assert any(t["cause_by"].endswith("WriteCodeReview") for t in turns)
    # QA wrote tests but never ran them
    assert not any(t["role"] == "Edward" and "RunCode" in json.dumps(t.get("outbox")) for t in turns)
    assert any(p.startswith("tests/") for p in _files(h, cid))
    assert not any(p.startswith("test_outputs/") for p in _files(h, cid))


def test_rounds_cap_the_sop(h):
    cid = h.start("software_company", IDEA, options={"n_round": 2})
    h.pump()
    _, conv = h.http("GET", f"/conversations/{cid}")
    assert conv["status"] == "completed" and conv["end"]["reason"] == "turn_limit"
    assert [t["role"] for t in h.transcript(cid)][1:] == ["Alice", "Bob"]


@pytest.mark.parametrize("body, field", [
    ({"input": "   "}, "input"),
    ({"input": "x" * 9000}, "input"),
    ({"input": IDEA, "options": {"budget": 3}}, "options.budget"),
    ({"input": IDEA, "options": {"code_review": "yes"}}, "options.code_review"),
    ({"input": IDEA, "options": {"n_round": 0}}, "options.n_round"),
    ({"input": IDEA, "options": {"test_rounds": 6}}, "options.test_rounds"),
    ({"input": IDEA, "options": {"investment": -1}}, "options.investment"),
    ({"input": IDEA, "options": []}, "options"),
])
def test_bad_input_is_refused_and_starts_nothing(h, body, field):
    status, resp = h.http("POST", "/conversations", {"scenario": "software_company", **body})
    assert 400 <= status < 500, resp
    assert resp.get("details", {}).get("field") == field, resp
    assert h.pending_inbox() == []


def test_an_llm_that_cannot_give_the_structure_fails_the_conversation_naming_role_and_step(tmp_path, monkeypatch):
    import tenacity
    from metagpt.actions.action_node import ActionNode

    from infra.testing.scripted_llm import ScriptedLLM

    # MetaGPT's own retry of a structured reply, without its waits (1-20 s each)
    from metagpt.utils.repair_llm_raw_output import retry_parse_json_text

    monkeypatch.setattr(ActionNode._aask_v1.retry, "wait", tenacity.wait_none())
    monkeypatch.setattr(retry_parse_json_text.retry, "wait", tenacity.wait_none())
    class Unstructured(ScriptedLLM):
        def _reply(self, messages):
            return "I would rather not fill in a form."

    h = Harness(str(tmp_path / "data"), llm_factory=lambda model=None: Unstructured())
    cid = h.start("software_company", IDEA)
    h.pump()
    _, conv = h.http("GET", f"/conversations/{cid}")
    assert conv["status"] == "failed"
    end = conv["end"]
    assert end["role"] == "Alice" and end["step"] == "WritePRD" and end["function"] == "product_manager"
    assert "Product Manager (Alice) failed at WritePRD" in end["reason"] and "attempts" in end["reason"]
    # MetaGPT retried the call (6 attempts), and the failure cost one invocation, not FC's retries
    _, inv = h.http("GET", f"/conversations/{cid}/invocations")
    pm = [r for r in inv["invocations"] if r["function"] == "product_manager"]
    assert len(pm) == 1 and pm[0]["outcome"] == "failed" and pm[0]["llm_calls"] == 6
    assert h.pending_inbox() == []


def test_the_running_step_is_shown_while_a_role_pays_for_it_and_not_after(h):
    cid = h.start("software_company", IDEA)
    for _ in range(3):  # the product manager, the architect and the project manager run
        for _name, event in h.pending():
            h.deliver(event)
    _, view = h.http("GET", f"/conversations/{cid}")
    assert view["status"] == "running"
    running = view["running"]
    assert running["role"] in {"Alice", "Bob", "Eve"} and running["step"] in {"WritePRD", "WriteDesign", "WriteTasks"}
    assert running["since"] > 0
    h.pump()
    _, view = h.http("GET", f"/conversations/{cid}")
    assert view["status"] == "completed" and view["running"] is None
    # a debate's turns are short: they write no progress (its storage requests per turn stay as they were)
    debate = h.start("debate", "Tea or coffee?", rounds=1)
    h.pump()
    assert h.convs.progress(debate) is None
