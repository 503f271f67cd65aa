"""The software company at once: the engineer writes each file, and QA tests each file, in an
invocation of its own (the scenario's `parallel` option, on by default).

MetaGPT's Engineer writes the files of a task list one after another in one action
(`_act_write_code` over its code todos) and QaEngineer writes a test for each changed file in one
loop (`_write_test`). Here the role runs as MetaGPT runs it (observe, think, act) up to that
point, and `install()` puts a seam there:

  planning   the turn that would write every file commits instead the plan: the files, in
             waves (`waves`), and what the role would have said after writing them (`then`).
             A file whose logic analysis names an earlier file of the task list (the task list
             is in dependency order) waits for the wave after that file's; with no such names
             there is one wave. A wave holds at most MAX_WIDTH files.
  branches   one delivery per file of the first wave (shared/branches.py). Each is a fresh role
             (no state of its own), fed the same messages, on the workspace as the wave starts;
             it writes its one file (the engineer: MetaGPT's WriteCode, and WriteCodeReview
             when the option is on; QA: WriteTest for that file, then RunCode on it), saves the
             workspace, and commits create-only at the next turn.
  join       once every branch of the wave has committed: the branches' trees are merged onto
             the wave's (shared/sop/workspace.merge, in task-list order, so the result is the
             same on every run), then the next wave fans out from the merged tree; after the
             last wave, the branches' messages and `then` go on as one SOP turn would
             (shared/sop/runner.follow_sop) with the merged tree.

A role with one file to write, or a scenario with `parallel: false`, runs as MetaGPT runs it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import re
import threading
from pathlib import PurePosixPath

from metagpt.actions import WriteCode, WriteCodeReview
from metagpt.roles.engineer import Engineer
from metagpt.roles.qa_engineer import QaEngineer
from metagpt.schema import Message

from shared import branches, keys, records
from shared.errors import RejectedEvent
from shared.routing import RECENT, role_spec
from shared.sop import workspace


@dataclasses.dataclass
class Mode:
    """What the seams do in this invocation: plan (branch None) or work on one branch's item."""

    branch: dict | None
    run_tests: bool = True
    plan: dict | None = None
    """set by a seam in a planning turn: {work, waves, messages}"""
    consumed: set = dataclasses.field(default_factory=set)
    """ids of messages a branch published and handled itself (QA's tests, run in the branch)"""


MODE: contextvars.ContextVar[Mode | None] = contextvars.ContextVar("troupe_parallel", default=None)
_original: dict = {}
_installing = threading.Lock()


def install() -> None:
    """Idempotent, and safe from several threads. Without a Mode set, the roles run exactly as
    MetaGPT's."""
    with _installing:
        if _original:
            return
        _original["code"] = Engineer._act_write_code
        _original["tests"] = QaEngineer._write_test
        Engineer._act_write_code = _act_write_code
        QaEngineer._write_test = _write_test


async def _act_write_code(self: Engineer):
    mode, write = MODE.get(), _original["code"]
    files = [todo.i_context.filename for todo in self.code_todos]
    if mode is None:
        return await write(self)
    if mode.branch is None:
        if not plannable(files):
            return await write(self)
        mode.plan = {"work": "code", "waves": waves(files, logic_analysis(self.code_todos)),
                     "messages": [json.loads(m.model_dump_json()) for m in self.rc.news]}
        # what MetaGPT's Engineer says once every file is written: the last wave's join hands it on
        return Message(content="\n".join(files), role=self.profile,
                       cause_by=WriteCodeReview if self.use_code_review else WriteCode, send_to=self, sent_from=self)
    item = mode.branch["item"]
    self.code_todos = [todo for todo in self.code_todos if todo.i_context.filename == item]
    if not self.code_todos:
        raise RejectedEvent(f"the engineer's task list has no file {item!r} to write")
    return await write(self)


async def _write_test(self: QaEngineer, message: Message) -> None:
    mode, write = MODE.get(), _original["tests"]
    if mode is None:
        return await write(self, message)
    srcs = self.project_repo.with_src_path(self.context.src_workspace).srcs
    if mode.branch is None:
        if mode.plan is not None:
            return None  # another code summary in the same news: the branches test every file
        files = testable(srcs, self.config.reqa_file)
        if not plannable(files):
            return await write(self, message)
        mode.plan = {"work": "tests", "waves": waves(files, {}),
                     "messages": [json.loads(message.model_dump_json())]}
        self.test_round += 1  # the branches run the tests as well: MetaGPT counts that as a round
        return None
    item = mode.branch["item"]
    published = self.rc.env.published
    before = len(published)
    with workspace.only_changed([str(PurePosixPath(str(srcs.root_path)) / item)]):
        await write(self, message)
    if not mode.run_tests:
        return None
    for written in list(published[before:]):
        mode.consumed.add(written.id)
        await self._run_code(written)
    return None


def plannable(files: list[str]) -> bool:
    """Two files or more, each a name a branch delivery may carry (records.check_branch): else the
    role works as MetaGPT's does, one file after another (and a bad name fails there, named)."""
    return len(files) >= 2 and len(set(files)) == len(files) and \
        all(isinstance(f, str) and 0 < len(f) <= records.MAX_ITEM for f in files)


def testable(srcs, reqa_file: str = "") -> list[str]:
    """The files MetaGPT's QaEngineer writes tests for (`_write_test`), in a stable order."""
    changed = set(srcs.changed_files) | ({reqa_file} if reqa_file else set())
    return sorted(f for f in changed if f and "test" not in f and f.endswith(".py"))


def logic_analysis(code_todos) -> dict[str, str]:
    """The task list's logic analysis, file → what it says (empty if there is none)."""
    out: dict[str, str] = {}
    for todo in code_todos[:1]:
        try:
            task = json.loads(json.loads(todo.i_context.content)["task_doc"]["content"])
        except (ValueError, KeyError, TypeError):
            return out
        for entry in task.get("Logic Analysis") or task.get("Refined Logic Analysis") or []:
            if isinstance(entry, (list, tuple)) and len(entry) >= 2 and isinstance(entry[0], str):
                out[entry[0]] = " ".join(str(x) for x in entry[1:])
    return out


def waves(files: list[str], logic: dict[str, str]) -> list[list[str]]:
    """`files` (in dependency order) in waves: a file whose logic analysis names an earlier file
    comes in the wave after that file's; at most MAX_WIDTH files a wave."""
    level: dict[str, int] = {}
    for i, name in enumerate(files):
        text = logic.get(name, "")
        level[name] = 1 + max((level[dep] for dep in files[:i] if mentions(text, dep)), default=-1)
    out = []
    for n in range(max(level.values(), default=-1) + 1):
        wave = [f for f in files if level[f] == n]
        out += [wave[i:i + branches.MAX_WIDTH] for i in range(0, len(wave), branches.MAX_WIDTH)]
    return out


def mentions(text: str, filename: str) -> bool:
    """Whether `text` names `filename`: as a file, or as a module it imports from."""
    path = PurePosixPath(filename)
    module = ".".join(path.with_suffix("").parts)
    return bool(re.search(rf"(?<![\w.]){re.escape(path.name)}(?!\w)", text) or
                re.search(rf"\b(?:from|import)\s+{re.escape(module)}\b", text))


def describe(plan: dict) -> str:
    """The planning turn's line in the transcript."""
    what = "files" if plan["work"] == "code" else "files' tests"
    count = sum(len(w) for w in plan["waves"])
    if len(plan["waves"]) == 1:
        return f"Working on {count} {what} at once: {', '.join(plan['waves'][0])}."
    waves_text = "; ".join(f"wave {i + 1}: {', '.join(w)}" for i, w in enumerate(plan["waves"]))
    return f"Working on {count} {what} at once, in {len(plan['waves'])} waves ({waves_text})."


# -- fan-out and join ---------------------------------------------------------------------------

def fan_out(convs, cid: str, meta: dict, record: dict) -> None:
    """The first wave of a planning turn's branches. Idempotent."""
    plan = record["fan_out"]
    _wave(convs, cid, meta, role=record["role"], turn=record["turn"], parent=record["id"], work=plan["work"],
          waves=plan["waves"], messages=plan["messages"], then=plan["then"], base=record.get("workspace"),
          spent=record.get("spent"), recent=(record.get("recent") or [])[-RECENT:],
          hops=int(record.get("hops", 0)) + 1)


def _wave(convs, cid: str, meta: dict, *, role: str, turn: int, parent: str, work: str, waves: list,
          messages: list, then: list, base: str | None, spent: dict | None, recent: list, hops: int) -> None:
    function = role_spec(meta, role)["function"]
    branch = {"parent": parent, "work": work, "items": waves[0], "waves": waves[1:], "messages": messages,
              "then": then, "base": base, "spent": spent}
    for item in waves[0]:
        convs.deliver(function, cid, turn, branches.delivery_id(parent, item), records.delivery(
            to=role, turn=turn, message=messages[-1], messages=messages, spent=spent, recent=recent, hops=hops,
            workspace=base, branch={**branch, "item": item}))


def join(convs, cid: str, meta: dict, record: dict) -> dict | None:
    """After a branch's commit: once every branch of its wave has committed, the next wave, or
    (after the last) the record of the joined turn for follow_sop to carry on; else None."""
    b, turn = record["branch"], record["turn"]
    found = branches.arrived(convs, cid, turn, b["parent"], b["items"])
    if found is None:
        return None  # a branch still to commit joins when it does
    joined = branches.joined_id(b["parent"])
    try:
        tree = workspace.merge(convs, cid, keys.joined_workspace(cid, turn, joined), b.get("base"),
                               [r.get("workspace") for r in found])
    except workspace.WorkspaceTooLarge as e:
        convs.end(cid, "failed", f"{record['profile']} ({record['role']}) failed at joining its branches: {e.message}",
                  function=record.get("function"), role=record["role"], turn=turn)
        return None
    spent = branches.spent_together(b.get("spent"), found)
    hops = max(int(r.get("hops", 0)) for r in found)
    recent = (found[0].get("recent") or [])[-RECENT:]
    # what the wave's branches said goes on after the last wave (QA's test results), in file order
    said = [o for r in found for o in r.get("outbox") or []] + b["then"]
    if b["waves"] and turn < meta["limits"]["max_turns"]:
        _wave(convs, cid, meta, role=record["role"], turn=turn, parent=joined, work=b["work"], waves=b["waves"],
              messages=b["messages"], then=said, base=tree, spent=spent, recent=recent, hops=hops + 1)
        return None
    # the last wave, or the turn limit: follow_sop hands on (or ends, exporting the merged tree)
    return {"turn": turn, "id": joined, "role": record["role"], "workspace": tree, "spent": spent,
            "recent": recent, "hops": hops, "outbox": said, "unfinished": bool(b["waves"])}


def check_item(branch: dict, role) -> None:
    """A branch's role is the one its work is for."""
    want = Engineer if branch["work"] == "code" else QaEngineer
    if not isinstance(role, want):
        raise RejectedEvent(f"a branch of work {branch['work']!r} is for a {want.__name__}, not {type(role).__name__}")
