"""The software-company SOP: MetaGPT's own roles, one function each, routed by MetaGPT's rules.

One invocation = one delivery = one `Role.run()` of one MetaGPT role (ProductManager,
Architect, ProjectManager, Engineer, QaEngineer), exactly as MetaGPT's Environment would run
it in one round:

  restore the project workspace the delivery names (shared/sop/workspace.py)
  ─► restore the role's state, put the delivered messages in its buffer
  ─► role.run(): observe (MetaGPT's watch filter), think, act; every message the role
     publishes is captured
  ─► save the workspace, commit the turn with the captured messages
  ─► route each message as MetaGPT's Environment does (`is_send_to` on the role's addresses)
     and only to roles that would observe it (cause_by in the role's watch list, or the role
     named in send_to): one delivery per receiving role, carrying all its messages and the
     workspace they refer to.

The conversation ends when a turn sends nothing on (MetaGPT's Team.run stops when every role
is idle), at the turn limit (`n_round`), or on a budget. Everything the turn pipeline gives
holds here too: journaled LLM replies, create-only commits, budgets, the bill.

Options of the scenario (see software_company.yaml): `code_review` switches the Engineer's
WriteCodeReview; `test_rounds` is QaEngineer's `test_round_allowed` (1 by default: tests written and
run once; MetaGPT's 5 lets QA debug and rewrite them); `run_tests` off stops QA's messages that would run code (tests are written,
not run). Generated code runs only in the QA function, through MetaGPT's RunCode, confined by
shared/sop/sandbox.py: the conversation's scratch folder only, no credentials (`SandboxContext`),
no network, no package index, time- and memory-limited. Every path MetaGPT takes from a model's
reply is checked before it touches the file system (shared/sop/confine.py).
"""

from __future__ import annotations

import contextvars
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import shared.mg  # noqa: F401  (pins MetaGPT's root before it is imported)
from metagpt.context import Context
from metagpt.schema import Message
from metagpt.utils.common import any_to_str, is_send_to
from metagpt.utils.file_repository import FileRepository
from metagpt.utils.project_repo import ProjectRepo

from shared import branches, records
from shared.errors import RejectedEvent, StoreError, TransientStoreError
from shared.safe_paths import UnsafePath
from shared.ids import derive_id
from shared.routing import RECENT, end_turn, role_spec
from shared.runner import Outcome, RoleRunner, Turn, role_class
from shared.artifacts import export
from shared.sop import confine, parallel
from shared.llm import structured
from shared.llm.errors import causes
from shared.sop.workspace import TreeRepository, Workspace, read_blob, use_tree_repositories

#: scenario option → the MetaGPT role field it sets (on every role class that has the field)
OPTION_FIELDS = {"code_review": "use_code_review", "test_rounds": "test_round_allowed"}
#: messages that make QA run generated code: dropped when the `run_tests` option is off
RUN_CAUSES = {"metagpt.actions.write_test.WriteTest", "metagpt.actions.debug_error.DebugError"}
#: environment variables generated code may see (everything else, keys included, is left out)
SANDBOX_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONIOENCODING")
MAX_CONTENT = 4000


class SandboxContext(Context):
    """A MetaGPT Context whose subprocess environment (RunCode's) holds no credentials."""

    def new_environ(self):
        env = {k: os.environ[k] for k in SANDBOX_ENV if k in os.environ}
        # a home of its own beside the project, so tools that write there leave the project alone
        base = self.git_repo.workdir.parent if self.git_repo and self.git_repo.workdir else Path(tempfile.gettempdir())
        home = base / ".home"
        home.mkdir(exist_ok=True)
        env.update(HOME=str(home), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
        return env


class Outbox:
    """Stands in for MetaGPT's Environment during one run: keeps what the role publishes."""

    desc = ""

    def __init__(self):
        self.published: list[Message] = []

    def publish_message(self, message: Message, peekable: bool = True) -> bool:
        self.published.append(message)
        return True

    def set_addresses(self, obj, addresses) -> None:
        return None

    def role_names(self) -> list[str]:
        return []


#: the stamp MetaGPT names new documents with in this invocation (FileRepository.new_filename)
_STAMP: contextvars.ContextVar[str | None] = contextvars.ContextVar("troupe_sop_stamp", default=None)
_clock_filename = FileRepository.new_filename


def _stamped_filename() -> str:
    return _STAMP.get() or _clock_filename()


def use_conversation_stamps() -> None:
    """MetaGPT names new documents by the clock, to the second. Inside an SOP invocation the
    name is the conversation's start instead, so every attempt of a turn writes the same
    paths (the first attempt's saved workspace may be the one that is kept). Idempotent; a
    context variable, so concurrent invocations in one process each see their own."""
    FileRepository.new_filename = staticmethod(_stamped_filename)


@lru_cache(maxsize=16)
def watch_of(path: str) -> frozenset[str]:
    """The causes a MetaGPT role class watches (set by its constructor)."""
    cls = role_class(path)
    return frozenset(cls(context=shared.mg.make_context()).rc.watch)


def receivers(meta: dict, message: Message) -> list[str]:
    """The scenario roles MetaGPT would hand `message` to and that would observe it."""
    out = []
    for spec in meta["scenario"]["roles"]:
        if spec["human"] or not spec.get("class"):
            continue
        addresses = {any_to_str(role_class(spec["class"])), spec["name"]}
        if not is_send_to(message, addresses):
            continue
        if message.cause_by in watch_of(spec["class"]) or spec["name"] in message.send_to:
            out.append(spec["name"])
    return out


def scratch_dir(cid: str, branch: str | None = None) -> Path:
    """The project's directory for this conversation in this instance: the same path in every
    invocation, because MetaGPT keeps absolute paths (e.g. RunCode's working directory) in
    its messages. A branch (shared/sop/parallel.py) works in a folder of its own beside it, and
    its messages name this one."""
    return Path(tempfile.gettempdir()) / "troupe-ws" / (f"{cid}.{branch}" if branch else cid)


def sop_runner(convs, function: str, llm_factory, **kwargs) -> RoleRunner:
    """The turn pipeline of an SOP role function."""
    return RoleRunner(convs, function, llm_factory, strategy=SopStrategy(), **kwargs)


class SopStrategy:
    """MetaGPT's software-company roles, each in the project workspace the delivery names."""

    def progress(self, function: str, turn: Turn) -> dict | None:
        # an SOP step takes minutes on a small model: the page and the terminal show which is running
        return {"role": turn.role_name, "function": function, "turn": turn.turn_in}

    def play(self, runner: RoleRunner, turn: Turn, state: dict | None, llm) -> "SopPlay":
        if turn.meta["scenario"]["flow"] != "sop":
            raise RejectedEvent(f"function {runner.function!r} runs MetaGPT's SOP roles; role {turn.role_name!r} of a "
                                f"{turn.meta['scenario']['flow']} flow belongs on a function such as persona")
        use_tree_repositories()
        use_conversation_stamps()
        confine.install()
        parallel.install()
        structured.install()
        _STAMP.set(time.strftime("%Y%m%d%H%M%S", time.gmtime(turn.meta["created"])))
        play = SopPlay(runner, turn, llm)
        try:
            play.open(state)
        except BaseException:
            play.close()
            raise
        return play

    def follow(self, convs, turn: Turn, record: dict) -> None:
        follow_sop(convs, turn.cid, turn.meta, record)


class SopPlay:
    """One turn of an SOP role: its workspace (restored, then saved), the scratch folder's lock,
    and what the role published."""

    def __init__(self, runner: RoleRunner, turn: Turn, llm):
        self.runner, self.turn, self.llm = runner, turn, llm
        self.lock = self.ws = self.role = None
        self.outbox = Outbox()

    def open(self, state: dict | None) -> None:
        turn = self.turn
        # a branch works beside its wave's other branches: a folder of its own
        where = scratch_dir(turn.cid, turn.delivery_id if turn.branch else None)
        where.parent.mkdir(parents=True, exist_ok=True)
        # one invocation of this conversation at a time uses `where` on this machine: another copy
        # of the delivery (a duplicate, a racing copy) waits here rather than wipe the tree under it;
        # the kernel releases the lock of a killed process
        self.lock = open(where.parent / f"{where.name}.lock", "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        shutil.rmtree(where, ignore_errors=True)  # a crashed invocation's leftovers
        where.mkdir(parents=True)
        self.ws = ws = Workspace(self.runner.convs, turn.cid, where)
        root = ws.restore(turn.delivery.get("workspace"))
        ctx = shared.mg.make_context(context_class=SandboxContext, workspace=str(ws.dir))
        if root is not None:
            ctx.git_repo = TreeRepository(local_path=root)
            ctx.repo = ProjectRepo(ctx.git_repo)
            if (root / root.name).is_dir():
                ctx.src_workspace = root / root.name
        spec = turn.spec
        cls = role_class(spec.get("class"))
        if state:
            saved = json.loads(state["role"])
            role = cls.model_validate(saved)
            # a role's __init__ may reset a counter it keeps (QaEngineer: `test_round = 0`, so its
            # round limit would never be reached across invocations): the saved value wins
            for name, value in saved.items():
                if name in cls.model_fields and isinstance(value, (bool, int, float, str)) \
                        and getattr(role, name, value) != value:
                    setattr(role, name, value)
            # model_validate leaves MetaGPT's context unset (its validators run before the mixin's),
            # and every action must see this invocation's workspace
            role.set_context(ctx)
            for action in role.actions:
                action.set_context(ctx)
        else:
            options = turn.meta.get("options") or {}
            fields = {f: options[o] for o, f in OPTION_FIELDS.items() if o in options and f in cls.model_fields}
            role = cls(context=ctx, llm=self.llm, **fields)
        if role.name != spec["name"]:
            raise RejectedEvent(f"role {spec['name']!r} is played by {spec['class']}, whose MetaGPT name is "
                                f"{role.name!r}: MetaGPT's roles address each other by these names")
        if turn.branch:
            parallel.check_item(turn.branch, role)
        role.rc.env = self.outbox
        self.llm.step_of = lambda: _step(role)  # what the progress record names
        self.role = role

    def feed(self) -> None:
        for raw in self.turn.delivery.get("messages") or [self.turn.delivery["message"]]:
            self.role.put_message(Message.model_validate(raw))

    async def run(self) -> Message | None:
        options = self.turn.meta.get("options") or {}
        self.mode = None
        if self.turn.branch or branches.sop_at_once(self.turn.meta):
            self.mode = parallel.Mode(branch=self.turn.branch, run_tests=options.get("run_tests") is not False)
        token = parallel.MODE.set(self.mode)
        try:
            return await self.role.run()
        finally:
            parallel.MODE.reset(token)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.lock is not None:
            self.lock.close()  # releases the flock

    # -- failures that no retry fixes ----------------------------------------------------------
    def step(self) -> str:
        return _step(self.role)

    def failure(self, error: Exception) -> Outcome | None:
        # an LLM error, a timeout or a lost connection never gets here: the pipeline judged it
        # (shared.llm.errors)
        chain = causes(error)
        if any(isinstance(e, TransientStoreError) or (isinstance(e, StoreError) and not isinstance(e, RejectedEvent))
               for e in chain):
            return None  # FC retries; journaled replies make the retry free
        unsafe = next((e for e in chain if isinstance(e, UnsafePath)), None)
        cause = unsafe.message if unsafe is not None else _describe(chain)
        return Outcome.failed_at(self.turn, self.runner.function, self.role, self.step(), cause)

    def idle(self) -> Outcome:
        if self.turn.branch:
            return Outcome.failed_at(self.turn, self.runner.function, self.role, self.step(),
                                     "the role had nothing to do for its branch")
        # the role observed nothing in what it was sent: this branch of the SOP is idle
        return Outcome("ignored", end=("completed", "idle", {"turns": self.turn.turn_in}))

    # -- record and routing ---------------------------------------------------------------------
    def record(self, rsp: Message, invocation: dict, spent: dict) -> dict:
        turn, role = self.turn, self.role
        rsp.id = turn.out_id  # the message in the role's memory is this same object
        published = [m for m in self.outbox.published if m is not rsp] + [rsp]
        options = turn.meta.get("options") or {}
        branch, plan = turn.branch, self.mode.plan if self.mode else None
        consumed = self.mode.consumed if self.mode else set()
        out = []
        for i, msg in enumerate(published):
            if branch and (msg is rsp or msg.id in consumed):
                continue  # what a branch did itself and said to itself goes nowhere
            if msg is not rsp:
                msg.id = derive_id(turn.out_id, str(i))
            if branch:
                # paths in its messages name the conversation's folder, as every other turn's do
                msg.content = msg.content.replace(str(self.ws.dir), str(scratch_dir(turn.cid)))
            to = receivers(turn.meta, msg)
            if options.get("run_tests") is False and msg.cause_by in RUN_CAUSES:
                to = []
            out.append({"message": json.loads(msg.model_dump_json()), "to": to})
        repo = role.context.git_repo
        workspace, changed = (None, [])
        if repo is not None and repo.workdir is not None and repo.workdir.is_dir():
            try:
                workspace, changed = self.ws.save(repo.workdir, turn.new_turn, turn.out_id)
            except RejectedEvent as e:
                e.message = f"{role.profile} ({role.name}) failed at saving the workspace: {e.message}"
                raise
        delivery = turn.delivery
        content, extra = _summary(rsp, changed), {}
        nxt = records.next_step("sop", roles={r for item in out for r in item["to"]})
        if branch:
            # a branch's messages go on once its wave has joined
            nxt, extra = records.next_step("join"), {"branch": branch}
        elif plan:
            # the files are done at once; what the role says after them goes on after the last wave
            content = f"{parallel.describe(plan)}\n\n{content}".strip()
            nxt, extra, out = records.next_step("branches", roles=[turn.role_name]), {"fan_out": {**plan, "then": out}}, []
        message = json.loads(rsp.model_dump_json())
        return records.turn_record(
            turn=turn.new_turn, id=turn.out_id, role=turn.role_name, profile=turn.spec["profile"],
            function=self.runner.function, content=content, message=message, next=nxt,
            sent_from=rsp.sent_from, send_to=sorted(rsp.send_to), cause_by=rsp.cause_by,
            reply_to=delivery["message"].get("id"), outbox=out, workspace=workspace, changed=changed, closing=False,
            invocation=invocation, spent=spent, recent=(delivery["recent"] + [turn.role_name])[-RECENT:],
            hops=delivery["hops"], **extra)


def follow_sop(convs, cid: str, meta: dict, record: dict) -> None:
    """Deliver a committed SOP turn's messages, or end the conversation; a planning turn's
    branches and a branch's join (shared/sop/parallel.py). Idempotent."""
    kind = record["next"]["kind"]
    if kind == "branches" and record["turn"] < meta["limits"]["max_turns"]:
        parallel.fan_out(convs, cid, meta, record)
        return
    if kind == "join":
        record = parallel.join(convs, cid, meta, record)
        if record is None:
            return
    by_role: dict[str, list] = defaultdict(list)
    for item in record.get("outbox") or []:
        for name in item["to"]:
            by_role[name].append(item["message"])
    turn = record["turn"]
    # work the turn limit cut short: a plan whose files were not written, waves not run
    unfinished = kind == "branches" or bool(record.get("unfinished"))
    if not by_role or turn >= meta["limits"]["max_turns"] or unfinished:
        reason = "turn_limit" if turn >= meta["limits"]["max_turns"] and (by_role or unfinished) else "idle"
        if record.get("workspace"):
            # the files this instance just saved are in its blob cache
            export(convs, cid, json.loads(convs.store.get(record["workspace"])),
                   read=lambda sha: read_blob(convs, cid, sha))
        end_turn(convs, cid, meta, record, reason)
        return
    for name, messages in sorted(by_role.items()):
        spec = role_spec(meta, name)
        convs.deliver(spec["function"], cid, turn, derive_id(record["id"], name), records.delivery(
            to=name, turn=turn, message=messages[-1], messages=messages, spent=record.get("spent"),
            recent=(record.get("recent") or [])[-RECENT:], hops=int(record.get("hops", 0)) + 1,
            workspace=record.get("workspace")))


def _step(role) -> str:
    """The action a role was at: its todo, else the planning that follows what it received."""
    if role.rc.todo is not None:
        return role.rc.todo.name
    news = [m.cause_by.rsplit(".", 1)[-1] for m in role.rc.news if m.cause_by]
    return f"planning after {news[-1]}" if news else "planning"


def _summary(rsp: Message, changed: list[str]) -> str:
    """What the transcript shows for the turn: the reply (clipped) and the files it wrote."""
    text = rsp.content or ""
    if len(text) > MAX_CONTENT:
        text = text[:MAX_CONTENT] + f"… ({len(rsp.content) - MAX_CONTENT} more characters)"
    if changed:
        text += "\n\nFiles written:\n" + "\n".join(f"- {p}" for p in changed[:50])
    return text


def _describe(chain: list[BaseException]) -> str:
    """The innermost error, in one line."""
    inner = chain[-1]
    for e in chain:
        if type(e).__name__ == "RetryError":
            attempts, last = e.last_attempt.attempt_number, e.last_attempt.exception()
            while type(last).__name__ == "RetryError":  # MetaGPT's repair retries inside the action's
                last = last.last_attempt.exception()
            text = str(last).splitlines()[0][:200] if str(last) else ""
            return f"no usable reply after {attempts} attempts ({type(last).__name__}: {text})"
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[-1][:300] if text else ''}"
