"""The scripted LLM plays MetaGPT's software company: MetaGPT's own Team, roles and actions run on
it in process, from the idea to a PRD, a design, a task list, code that parses and tests that run."""

import ast
import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

import shared.mg as mg  # pins METAGPT_PROJECT_ROOT under the temp dir before metagpt is imported
from infra.testing.scripted_llm import ScriptedLLM, sop_reply

IDEA = "开发一个记账APP"


class RecordingLLM(ScriptedLLM):
    """Keeps every prompt and reply, to replay them."""

    def __init__(self, log: list):
        super().__init__(script={})
        self.log = log

    def _reply(self, messages):
        text = super()._reply(messages)
        self.log.append((messages, text))
        return text


def _one(pattern: str, root: Path) -> Path:
    found = sorted(root.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.fixture(scope="module")
def company(tmp_path_factory):
    """One run of the five roles on "开发一个记账APP", with code review and tests."""
    mg.wall_off()
    from metagpt.config2 import Config
    from metagpt.configs.llm_config import LLMConfig
    from metagpt.configs.workspace_config import WorkspaceConfig
    from metagpt.context import Context
    from metagpt.roles import Architect, Engineer, ProductManager, ProjectManager, QaEngineer
    from metagpt.team import Team

    workspace = tmp_path_factory.mktemp("ws")
    config = Config(llm=LLMConfig(api_type="openai", api_key="unused", model="troupe-fake"))
    config.workspace = WorkspaceConfig(path=workspace)
    config.mermaid.engine = "none"  # no external renderer for the PRD/design charts
    ctx = Context(config=config)
    log: list = []
    engineer = Engineer(llm=RecordingLLM(log), n_borg=5, use_code_review=True)
    team = Team(context=ctx)
    team.hire([ProductManager(llm=RecordingLLM(log)), Architect(llm=RecordingLLM(log)),
               ProjectManager(llm=RecordingLLM(log)), engineer, QaEngineer(llm=RecordingLLM(log))])
    team.invest(1e9)
    team.run_project(IDEA)
    # QA runs its tests with `python` from PATH (and pip-installs pytest there): use this venv's
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + old_path
    try:
        asyncio.run(team.run(n_round=12))
    finally:
        os.environ["PATH"] = old_path
    return {"ctx": ctx, "workspace": workspace, "root": Path(ctx.git_repo.workdir), "log": log,
            "engineer": engineer}


def test_the_product_manager_writes_a_prd_about_the_idea(company):
    root = company["root"]
    assert root.parent == company["workspace"] and root.name == "bookkeeping_app"  # renamed to the PRD's name
    prd = json.loads(_one("docs/prd/*.json", root).read_text())
    assert prd["Original Requirements"] == IDEA and prd["Project Name"] == "bookkeeping_app"
    for key in ("Product Goals", "User Stories", "Competitive Analysis"):
        assert prd[key] and all(isinstance(s, str) and s for s in prd[key]), key
    assert prd["Competitive Quadrant Chart"].startswith("quadrantChart")
    assert all(len(r) == 2 and r[0] in ("P0", "P1", "P2") for r in prd["Requirement Pool"])
    assert any("transaction" in s for s in prd["User Stories"])  # about bookkeeping, not a 2048 game


def test_design_and_tasks_name_the_same_files(company):
    root = company["root"]
    design = json.loads(_one("docs/system_design/*.json", root).read_text())
    assert design["Data structures and interfaces"].startswith("classDiagram")
    assert design["Program call flow"].startswith("sequenceDiagram")
    tasks = json.loads(_one("docs/task/*.json", root).read_text())
    assert tasks["Task list"] == design["File list"] == ["models.py", "main.py"]
    assert [f for f, _ in tasks["Logic Analysis"]] == tasks["Task list"]
    assert (root / "requirements.txt").read_text() == ""  # stdlib only: RunCode has nothing to pip-install


def test_the_engineer_writes_the_listed_files_and_they_parse(company):
    root, ctx = company["root"], company["ctx"]
    src = Path(ctx.src_workspace)
    assert src == root / root.name
    tasks = json.loads(_one("docs/task/*.json", root).read_text())
    for name in tasks["Task list"]:
        code = (src / name).read_text()
        ast.parse(code, filename=name)
    assert "class Ledger" in (src / "models.py").read_text()
    assert "from models import" in (src / "main.py").read_text()


def test_qa_writes_tests_that_run_and_pass(company):
    from metagpt.schema import RunCodeResult
    from metagpt.utils.common import parse_recipient

    root = company["root"]
    tests = sorted((root / "tests").glob("test_*.py"))
    assert [t.name for t in tests] == ["test_main.py", "test_models.py"]
    for t in tests:
        ast.parse(t.read_text(), filename=t.name)
    for out in sorted((root / "test_outputs").glob("*.json")):
        result = RunCodeResult.loads(out.read_text())
        assert result.stderr.rstrip().endswith("OK"), result.stderr
        assert "## Status:\nPASS" in result.summary and parse_recipient(result.summary) == "NoOne"


def test_every_sop_prompt_is_recognised_and_replayed_identically(company):
    log = company["log"]
    assert len(log) >= 9  # PRD, design, tasks, 2 x (code + review), 2 x test, 2 x run summary
    for messages, text in log:
        assert sop_reply(messages[-1]["content"]) is not None, messages[-1]["content"][:300]
        assert ScriptedLLM(script={})._reply(messages) == text


def test_summarize_is_pass_and_debug_error_shapes(company):
    from metagpt.actions import DebugError
    from metagpt.actions.summarize_code import SummarizeCode
    from metagpt.schema import CodeSummarizeContext, RunCodeContext, RunCodeResult

    # MetaGPT 0.8 pops the only SummarizeCode to-do before running it, so the Team run above
    # skips it; run it (and the engineer's is-pass check on its summary) here
    ctx, root, engineer = company["ctx"], company["root"], company["engineer"]
    design = _one("docs/system_design/*.json", root).relative_to(root)
    task = _one("docs/task/*.json", root).relative_to(root)
    summary_ctx = CodeSummarizeContext(design_filename=str(design), task_filename=str(task),
                                       codes_filenames=["models.py", "main.py"])
    summary = asyncio.run(SummarizeCode(i_context=summary_ctx, context=ctx, llm=ScriptedLLM(script={})).run())
    assert "## Code Review All" in summary and "## TODOs\n{}" in summary
    is_pass, _ = asyncio.run(engineer._is_pass(summary))
    assert is_pass

    # DebugError only runs after a failed test run: fake one, get a test module back
    failed = RunCodeResult(summary="## Status:\nFAIL", stdout="", stderr="FAILED (failures=1)")
    asyncio.run(ctx.repo.test_outputs.save(filename="failed.json", content=failed.model_dump_json()))
    run_ctx = RunCodeContext(code_filename="models.py", test_filename="test_models.py", output_filename="failed.json")
    code = asyncio.run(DebugError(i_context=run_ctx, context=ctx, llm=ScriptedLLM(script={})).run())
    assert "unittest" in code
    ast.parse(code)


def test_non_sop_prompts_keep_the_script():
    llm = ScriptedLLM(script={"Ann": ["point {n} ({h})"]})
    text = llm._reply([{"role": "system", "content": "You are a Debater, named Ann, ..."},
                       {"role": "user", "content": "Your turn."}])
    assert text.startswith("point 1 (") and llm.calls == {"Ann": 1}
    assert sop_reply("Your turn.") is None
