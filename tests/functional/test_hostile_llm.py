"""LLM output is untrusted input: the software company on the local runtime, its five SOP
functions in their own worker processes, against an OpenAI-compatible endpoint whose replies are
well-formed and hostile. Every case ends with a clear status and leaves a canary folder and a
canary file outside the workspace untouched; generated code reads neither the function's code
nor its credentials."""

import json
import os
import re
import secrets
import time
import urllib.request

import pytest

from infra.local.runtime import LocalRuntime
from shared.safe_paths import check_relative
from tests.hostile_llm import Case, HostileEndpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIMB = "../" * 16
FULLWIDTH_CLIMB = "．．／" * 16  # NFKC folds it into ../../..
OWN_CODE = os.path.join(ROOT, "shared", "sop", "sandbox.py")
OWN_CODE_LINE = "def command_for("  # a line of the function's own code that no artifact has


def _leak_test() -> str:
    return f'''import os
import unittest


class TestLeak(unittest.TestCase):
    def test_leak(self):
        found = [repr(dict(os.environ))]
        for path in ({OWN_CODE!r}, {os.path.join(ROOT, "functions", "qa_engineer", "index.py")!r},
                     "/proc/%d/environ" % os.getppid(), "/proc/self/environ", "/proc/1/environ"):
            try:
                with open(path, "rb") as f:
                    found.append(f.read().decode("latin-1"))
            except Exception as e:
                print("blocked", path, type(e).__name__)
        try:
            found.append(str(sorted(os.listdir({ROOT!r}))))
        except Exception as e:
            print("blocked listing", type(e).__name__)
        print("LEAK", *found)


if __name__ == "__main__":
    unittest.main()
'''


def _symlink_test(canary_dir: str) -> str:
    return f'''import os
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


class TestEscape(unittest.TestCase):
    def test_escape(self):
        link = os.path.join(HERE, "escape")
        for step in (lambda: os.symlink({canary_dir!r}, link),
                     lambda: open(os.path.join(link, "keep.txt"), "w").write("overwritten"),
                     lambda: open(os.path.join({canary_dir!r}, "planted.txt"), "w").write("planted")):
            try:
                step()
            except Exception as e:
                print("blocked", type(e).__name__, e)


if __name__ == "__main__":
    unittest.main()
'''


def _http(rt, method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(rt.http_url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    canary_dir = base / "canary"
    canary_dir.mkdir()
    (canary_dir / "keep.txt").write_text("canary")
    canary_file = base / "canary.txt"
    canary_file.write_text("canary file")
    key = "hostile-" + secrets.token_hex(12)
    planted = str(canary_dir / "planted.py")
    cases = {
        # the PRD's project name: repaired to a slug, the run completes
        "pn_absolute": Case(project_name=str(canary_dir)),
        "pn_climb": Case(project_name=CLIMB + str(canary_dir).lstrip("/")),
        "pn_long": Case(project_name="x" * 5000),
        "pn_control": Case(project_name="evil\x00name\n" + str(canary_file)),
        "pn_lookalike": Case(project_name=FULLWIDTH_CLIMB + str(canary_dir).lstrip("/").replace("/", "／")),
        # a file of the design and task list: refused, the run fails naming it
        "fn_absolute": Case(file_name=planted),
        "fn_climb": Case(file_name=CLIMB + planted.lstrip("/")),
        "fn_long": Case(file_name="a" * 300 + ".py"),
        "fn_nul": Case(file_name="main\x00.py"),
        "fn_newline": Case(file_name="main.py\n" + CLIMB + "x.py"),
        "fn_lookalike": Case(file_name=FULLWIDTH_CLIMB + "planted.py"),
        "fn_canary_file": Case(file_name=str(canary_file)),
        # generated code run by QA
        "qa_secrets": Case(test_code=_leak_test()),
        "qa_symlink": Case(test_code=_symlink_test(str(canary_dir))),
    }
    with HostileEndpoint(cases, key=key) as ep:
        env = {"TROUPE_LLM_BASE_URL": ep.base_url, "TROUPE_LLM_API_KEY": key, "TROUPE_LLM_MODEL": "hostile"}
        with LocalRuntime(str(base / "data"), os.path.join(ROOT, "s.yaml"), retry_delay=0.05, llm="openai",
                          extra_env=env) as rt:
            started = {}
            for name in cases:
                body = _http(rt, "POST", "/conversations", rt.api_key,
                             {"scenario": "software_company", "input": f"A todo app, hostile-case-{name}"})
                started[name] = (body["id"], body["token"])
            ends = {}
            deadline = time.time() + 240
            while len(ends) < len(started) and time.time() < deadline:
                for name, (cid, token) in started.items():
                    if name not in ends:
                        conv = _http(rt, "GET", f"/conversations/{cid}", token)
                        if conv["status"] != "running":
                            ends[name] = conv
                time.sleep(0.2)
            artifacts = {name: _http(rt, "GET", f"/conversations/{cid}/artifacts", token)["artifacts"]
                         for name, (cid, token) in started.items()}
            yield {"ends": ends, "artifacts": artifacts, "canary_dir": canary_dir, "canary_file": canary_file,
                   "key": key, "endpoint": ep, "data": base / "data", "cases": cases}


def test_every_hostile_case_ends_and_the_canaries_are_untouched(world):
    assert set(world["ends"]) == set(world["cases"]), f"still running: {set(world['cases']) - set(world['ends'])}"
    canary_dir = world["canary_dir"]
    assert sorted(p.name for p in canary_dir.iterdir()) == ["keep.txt"]
    assert (canary_dir / "keep.txt").read_text() == "canary"
    assert world["canary_file"].read_text() == "canary file"
    for name, conv in world["ends"].items():
        for a in world["artifacts"][name]:
            assert check_relative(a["path"]) == a["path"]


@pytest.mark.parametrize("name", ["pn_absolute", "pn_climb", "pn_long", "pn_control", "pn_lookalike"])
def test_a_hostile_project_name_is_reduced_to_a_slug(world, name):
    conv = world["ends"][name]
    assert conv["status"] == "completed", conv["end"]
    roots = {a["path"].split("/")[0] for a in world["artifacts"][name] if a["path"].endswith(".py")
             and not a["path"].startswith("tests/")}
    assert len(roots) == 1, roots
    (root,) = roots
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,63}", root), root


@pytest.mark.parametrize("name", ["fn_absolute", "fn_climb", "fn_long", "fn_nul", "fn_newline", "fn_lookalike",
                                  "fn_canary_file"])
def test_a_hostile_file_name_fails_the_conversation_naming_role_step_and_value(world, name):
    conv = world["ends"][name]
    assert conv["status"] == "failed", conv
    reason = conv["end"]["reason"]
    assert "Traceback" not in reason and len(reason) < 600, reason
    assert re.search(r"^\w[\w ]* \(\w+\) failed at [\w ]+: refused file name '", reason), reason
    value = world["cases"][name].file_name
    assert repr(value)[:20] in reason, reason


def test_generated_code_reads_neither_the_functions_code_nor_its_credentials(world):
    conv = world["ends"]["qa_secrets"]
    assert conv["status"] == "completed", conv["end"]
    key = world["key"]
    # the run happened: its output is an artifact, and says what was blocked
    outputs = [a["path"] for a in world["artifacts"]["qa_secrets"] if a["path"].startswith("test_outputs/")]
    assert outputs
    stored = b"".join(p.read_bytes() for p in world["data"].rglob("*") if p.is_file() and "runtime" not in p.parts)
    assert b"blocked" in stored and b"PermissionError" in stored
    # neither the key nor the function's code reached storage, or the LLM's prompts
    assert key.encode() not in stored
    assert OWN_CODE_LINE.encode() not in stored
    prompts = json.dumps([r.messages for r in world["endpoint"].requests])
    assert key not in prompts and OWN_CODE_LINE not in prompts


def test_a_symlink_planted_by_generated_code_leads_nowhere(world):
    conv = world["ends"]["qa_symlink"]
    assert conv["status"] == "completed", conv["end"]
    assert not (world["canary_dir"] / "planted.txt").exists()
    assert all("escape" not in a["path"] for a in world["artifacts"]["qa_symlink"])


def test_a_hostile_director_answer_names_no_speaker_key_or_path(tmp_path):
    # GIVEN a selector scene whose director asks an LLM that answers with paths, keys and junk
    from infra.testing.scripted_llm import ScriptedLLM
    from infra.testing.harness import Harness

    hostile = ["../../inbox/gateway/x", "inbox/persona/../../end.json", "/etc/passwd", "<all>", "Nobody\x00",
               "Ｆｉｎａｎｃｅ", "speaker: " + "x" * 5000]
    h = Harness(str(tmp_path / "data"), llm_factory=lambda model=None: ScriptedLLM(script={"assistant": hostile}))
    cid = h.start(scenario="digital_employees", text="a refund request", max_turns=8)
    meta = json.loads(h.store.get(h.convs.meta_key(cid)))
    meta["scenario"]["director"]["mode"] = "llm"
    h.store.put(h.convs.meta_key(cid), json.dumps(meta).encode())
    h.convs._meta_cache.clear()
    before = {i.key for i in h.store.iter("")}
    # WHEN it runs to its end
    h.pump()
    # THEN every speaker is one of the cast, chosen by the rules, and every key stayed in place
    _, conv = h.http("GET", f"/conversations/{cid}")
    assert conv["status"] == "completed", conv["end"]
    cast = {r["name"] for r in meta["scenario"]["roles"]}
    assert {t["role"] for t in h.transcript(cid)[1:]} <= cast
    functions = {r["function"] for r in meta["scenario"]["roles"]} | {"director"}
    for key in {i.key for i in h.store.iter("")} - before:
        parts = key.split("/")
        assert ".." not in parts and "" not in parts[:-1], key
        if parts[0] == "inbox":
            assert parts[1] in functions and parts[2] == cid, key
        elif parts[0] == "knowledge":  # what the conversation learned, named by its id
            assert key.endswith(f"/docs/experience/{cid}.md"), key
        elif parts[0] != "knowledge-index":  # the index of that document, named by hashes
            assert parts[0] == "conversations" and parts[1] == cid, key
    decisions = [json.loads(h.store.get(i.key)) for i in h.store.iter(f"conversations/{cid}/decisions/")]
    assert decisions and all(d.get("how") == "rule" for d in decisions), decisions
    _, inv = h.http("GET", f"/conversations/{cid}/invocations")
    asked = [r for r in inv["invocations"] if r["function"] == "director" and r.get("prompt_tokens")]
    assert len(asked) >= 3, inv  # the LLM was asked, and each answer was set aside
