"""The fault-injection suite's driver: debates and software companies on the local runtime under
injected faults, checked against the same conversations run fault-free. Used by
tests/functional/test_faults.py (small) and bench/faults.py (large).

Every conversation gets one fault class (matched by its input text, see infra/local/faults.py):

  none                 no fault: the control group
  duplicates           every trigger event delivered 3 times, each copy after a random delay
                       (copies and conversations interleave out of order)
  kill_<point>         the worker SIGKILLs itself at <point> of one turn (before_llm,
                       after_journal, after_commit, after_delivery); FC-style retry follows
  race                 every event delivered twice at once to two instances (max_instances=2),
                       the LLM slowed so that both are inside the turn together
  transient            a fraction of every kind of storage call fails (503 before the call, or a
                       timeout after it went through), absorbed by the store's retry with backoff
  llm_timeout          one turn's LLM call sleeps past the persona's timeout: the runtime kills
                       the instance, the retry takes the abandoned call over
  throttled            the model's rate limit turns one turn's call away 3 times: it is waited
                       on inside the invocation, then the turn is handed back to FC as a delayed
                       invocation (shared/handback.py), which pays the call once
  chaos                duplicates + transient errors + a kill at a random point (bench only)

Software company (scenario software_company, flow sop: MetaGPT's five roles as five functions,
a workspace restored from and saved to the store each turn): the same classes, applied to the
five SOP functions, in rows named `sop:<class>`. A software-company turn may make several LLM
calls (or none), so a kill or a stall is aimed at the first turn from a given one on where it
applies (`min_turn`, once per conversation), at a given call of the turn: the first conversation
of a class where the fault is most telling (SOP_FIRST_AIMS), the others at random. One more kill
point, kill_after_workspace, is between the workspace's save (blobs and manifest stored) and the
commit. Checked against the fault-free run: the same (turn, role, cause_by) records, each once,
the same reply texts, every LLM call of every turn paid for once (the ledger, and one journal
entry per call of the fault-free run), the conversation `completed`, and the same final project:
the latest workspace manifest's paths and contents, and the export under artifacts/ equal to it.
Compared modulo what legitimately differs between two runs (`normalize*`): MetaGPT's time-stamped
document names (`\d{14}`, in paths and inside files that name them), unittest's "Ran N tests in
0.001s", the conversation's id, and the order of what MetaGPT keeps in Python sets (the lists in
.dependencies.json, the lines of the Engineer's reply naming the files it wrote), which depends
on the process's string hash seed. Each committed turn's record must also agree with the
workspace it names (the manifest exists and holds every path the record says it wrote).

Panel rows (`panel:<class>`): newsrooms, whose turn 3 is a panel of two checkers answering at
once (shared/routing.py), under the debates' faults aimed at that turn: checked as debates are,
a transcript in (turn, role) order, each checker's call paid once, and the join fired once (the
reporter's turn 4 once).

The fault-free run is the same conversations (same inputs) run in-process by infra/testing/harness.py
(the software companies in a process of their own, alongside the faulted run: SopBaseline).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict

import yaml

from infra.local.faults import POINTS, SOP_POINTS, Faults, read_ledger
from infra.testing.load import ApiClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_CLASSES = ["none", "duplicates", *(f"kill_{p}" for p in POINTS), "race", "transient", "llm_timeout",
                 "throttled"]
ALL_CLASSES = SMALL_CLASSES + ["chaos"]
SOP_SMALL_CLASSES = ["none", "duplicates", *(f"kill_{p}" for p in SOP_POINTS), "race", "transient", "llm_timeout",
                     "throttled"]
SOP_ALL_CLASSES = SOP_SMALL_CLASSES + ["chaos"]
SOP = "sop:"
"""The label prefix of software-company rows (`sop:race`)."""
PANEL = "panel:"
"""The label prefix of panel rows (`panel:race`): newsrooms, whose turn 3 is a panel of two checkers
answering at once, joined for the reporter (shared/routing.py); the faults aim at that turn."""
PANEL_TURN = 3
PANEL_SMALL_CLASSES = ["none", "duplicates", "kill_before_llm", "kill_after_commit", "kill_after_delivery", "race",
                       "transient"]
PANEL_ALL_CLASSES = PANEL_SMALL_CLASSES + ["chaos"]
"""the panel rows of `make test` and of the bench (chaos: the bench's, as for software companies)"""
SOP_FUNCTIONS = ("product_manager", "architect", "project_manager", "engineer", "qa_engineer")
SOP_LAST_AIM = 8
"""Software-company faults aim at the first turn from a random one in 1..SOP_LAST_AIM on where they
apply. With the scripted LLM a run has 9 turns: the product manager, architect and project manager
(1 call each); the engineer's plan (4, no call), its two waves of one file each (5 and 6, one call
each, the branches of shared/sop/parallel.py), its code summary (7, two calls); QA's plan (8, no
call) and its two branches at once (9, two calls each: the test, then the run's summary). Every turn
but the last delivers, so every point is reached by some turn at or after 8."""


def class_spec(cls: str, rng: random.Random, turns: int, persona_timeout: float) -> dict:
    """The fault SPEC of one conversation of class `cls` (a debate of `turns` LLM turns)."""
    def kill(point: str) -> dict:
        last = turns - 1 if point == "after_delivery" else turns  # the last turn delivers nothing
        return {"point": point, "turns": [rng.randint(1, last)]}

    if cls == "none":
        return {}
    if cls == "duplicates":
        return {"copies": {"n": 3, "max_delay": 0.4}}
    if cls.startswith("kill_"):
        return {"kill": kill(cls[5:])}
    if cls == "race":
        return {"copies": {"n": 2, "max_delay": 0.0}, "together": 2.0, "llm_latency": 0.3}
    if cls == "transient":
        return {"transient": {"rate": 0.1, "after": 0.3}}
    if cls == "llm_timeout":
        return {"llm_stall": {"turns": [rng.randint(1, turns)], "seconds": persona_timeout + 4}}
    if cls == "throttled":
        return {"throttle": {"turns": [rng.randint(1, turns)], "times": 3}}
    if cls == "chaos":
        return {"copies": {"n": 3, "max_delay": 0.4}, "transient": {"rate": 0.05, "after": 0.3},
                "kill": kill(rng.choice(POINTS)), "throttle": {"turns": [rng.randint(1, turns)], "times": 2}}
    raise ValueError(f"unknown fault class {cls!r}")


def panel_class_spec(cls: str, rng: random.Random, turns: int, persona_timeout: float) -> dict:
    """A debate's fault SPEC (`class_spec`), aimed at the panel's turn: a kill after a member's
    commit is between that commit and the join."""
    spec = class_spec(cls, rng, turns, persona_timeout)
    for fault in ("kill", "llm_stall", "throttle"):
        if fault in spec:
            spec[fault]["turns"] = [PANEL_TURN]
    return spec


SOP_FIRST_AIMS = {"before_llm": (9, 2), "after_journal": (5, 1), "after_workspace": (1, None),
                  "after_commit": (9, None), "after_delivery": (5, None), "llm_timeout": (9, None)}
"""(min_turn, call) of the first software company of each class, where a fault is most telling: QA's
branches at turn 9 (a kill between a branch's commit and the join; a branch stalled or killed at
its second call while the other runs on), the engineer's first wave at turn 5 (a kill after a branch's
journal entry; after the join's delivery to the next wave); the product manager's turn 1 names new
documents by the clock (a retry must not name other files than the workspace an earlier attempt
saved). Later ones are aimed at random."""


def sop_class_spec(cls: str, rng: random.Random, sop_timeout: float, i: int = 0) -> dict:
    """The fault SPEC of the i-th software-company conversation of class `cls`."""
    def aim(what: str, calls: bool = False) -> dict:
        if i == 0 and what in SOP_FIRST_AIMS:
            turn, call = SOP_FIRST_AIMS[what]
        else:
            turn, call = rng.randint(1, SOP_LAST_AIM), rng.randint(1, 2) if calls else None
        return {"turns": None, "min_turn": turn, "once": "conversation", **({"call": call} if call else {})}

    if cls.startswith("kill_"):
        point = cls[5:]
        return {"kill": {"point": point, **aim(point, point in ("before_llm", "after_journal"))}}
    if cls == "llm_timeout":
        return {"llm_stall": {**aim(cls), "seconds": sop_timeout + 4}}
    if cls == "throttled":
        return {"throttle": {**aim(cls), "times": 3}}
    if cls == "chaos":
        point = rng.choice(SOP_POINTS)
        return {"copies": {"n": 3, "max_delay": 0.4}, "transient": {"rate": 0.05, "after": 0.3},
                "kill": {"point": point, **aim("chaos", point in ("before_llm", "after_journal"))}}
    return class_spec(cls, rng, 1, sop_timeout)  # none, duplicates, race, transient: as for debates


def write_s_yaml(workdir: str, persona_timeout: int, sop_timeout: int = 600) -> str:
    """s.yaml with absolute code paths and short persona / SOP timeouts (for the llm_timeout class)."""
    with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    for name, res in doc["resources"].items():
        code = res["props"]["code"]
        res["props"]["code"] = os.path.normpath(os.path.join(ROOT, code))
    doc["resources"]["persona"]["props"]["timeout"] = persona_timeout
    for fn in SOP_FUNCTIONS:
        doc["resources"][fn]["props"]["timeout"] = sop_timeout
    path = os.path.join(workdir, "s.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f)
    return path


def baseline(inputs: list[str], rounds: int, max_turns: int, workdir: str,
             newsrooms: tuple[str, ...] = ()) -> dict[str, list[tuple]]:
    """The fault-free transcripts [(turn, role, content)], run in-process: debates, and the
    `newsrooms` among the inputs (panel rows)."""
    from infra.testing.harness import Harness

    h = Harness(os.path.join(workdir, "baseline"))
    out = {}
    for text in inputs:
        cid = h.start("newsroom", text=text, max_turns=max_turns) if text in newsrooms else \
            h.start(text=text, rounds=rounds, max_turns=max_turns)
        h.pump()
        assert h.convs.get_end(cid)["status"] == "completed"
        out[text] = sorted((m["turn"], m["role"], m["content"]) for m in h.transcript(cid))
    return out


# -- the software company: the fault-free run and what may differ between two runs -----------

_STAMP = re.compile(rb"\d{14}")
_RAN = re.compile(rb"(Ran \d+ tests?) in \d+\.\d+s")


def normalize(data: bytes, cid: str = "") -> bytes:
    """What two runs of the same software company may write differently: MetaGPT's time-stamped
    document names (which other files also name), unittest's timing line, the conversation's id."""
    data = _STAMP.sub(b"<time>", data)
    data = _RAN.sub(rb"\1 in <s>", data)
    return data.replace(cid.encode(), b"<cid>") if cid else data


def normalize_file(path: str, data: bytes, cid: str = "") -> bytes:
    """`normalize`, and MetaGPT's .dependencies.json as sorted lists: it stores Python sets as lists,
    in an order that depends on the process's string hash seed (PYTHONHASHSEED)."""
    data = normalize(data, cid)
    if path.endswith(".dependencies.json"):
        try:
            deps = json.loads(data)
            data = json.dumps({k: sorted(v) if isinstance(v, list) else v for k, v in deps.items()},
                              sort_keys=True).encode()
        except ValueError:
            pass
    return data


def normalize_text(text: str, cid: str = "") -> str:
    """A reply's text as compared: `normalize`d, lines in sorted order (the Engineer's reply lists
    the files it wrote from a Python set, in an order that depends on the hash seed)."""
    return "\n".join(sorted(normalize(text.encode(), cid).decode().splitlines()))


def sop_tree(store, cid: str, manifest: dict | None) -> dict[str, str]:
    """A workspace tree as normalized path -> sha256 of the normalized contents."""
    from shared.artifacts import blob_key
    from shared.conversation import ConversationStore

    convs = ConversationStore(store)
    out = {}
    for path, info in sorted(((manifest or {}).get("files") or {}).items()):
        data = store.get(blob_key(convs, cid, info["sha256"]))
        out[normalize(path.encode(), cid).decode()] = hashlib.sha256(normalize_file(path, data, cid)).hexdigest()
    return out


def sop_calls(store, cid: str) -> dict[int, int]:
    """Journal entries (LLM calls, each paid once) per turn: a journal key names its delivery,
    a delivery key the turn it answers."""
    turn_of = {}
    for fn in SOP_FUNCTIONS:
        for info in store.iter(f"inbox/{fn}/{cid}/"):
            m = re.search(r"/(\d+)-([^/]+)\.json$", info.key)
            if m:
                turn_of[m.group(2)] = int(m.group(1)) + 1
    out = Counter()
    for info in store.iter(f"conversations/{cid}/journal/"):
        trigger = info.key.rsplit("/", 1)[1].rsplit("-", 1)[0]
        out[turn_of.get(trigger, -1)] += 1
    return dict(out)


def sop_view(store, cid: str) -> dict:
    """What a software-company run is compared by: records, reply texts, LLM calls per turn, the
    final tree; and what a run must be consistent with itself in (workspaces, the export)."""
    from shared.artifacts import latest_manifest
    from shared.conversation import ConversationStore

    convs = ConversationStore(store)
    msgs = list(convs.iter_messages(cid))
    problems = []
    for m in msgs:
        if m["turn"] == 0:
            continue
        key = m.get("workspace")
        try:
            files = json.loads(store.get(key))["files"] if key else {}
        except Exception as e:  # noqa: BLE001 - reported
            problems.append(f"turn {m['turn']}: its workspace {key} cannot be read ({type(e).__name__})")
            continue
        missing = [p for p in m.get("changed") or [] if p not in files]
        if missing:
            others = sorted(p for p in files if p not in (m.get("changed") or []))
            problems.append(f"turn {m['turn']} ({m['role']}) says it wrote {missing}, which its workspace "
                            f"{key.rsplit('/', 1)[1]} does not hold (it holds {others[:8]}…)")
    manifest = latest_manifest(convs, cid)
    exported = {i.key.split("/artifacts/", 1)[1]: hashlib.sha256(store.get(i.key)).hexdigest()
                for i in store.iter(f"conversations/{cid}/artifacts/")}
    completed = (convs.get_end(cid) or {}).get("status") == "completed"  # (the export is the end's last step)
    if completed and manifest and exported != {p: i["sha256"] for p, i in manifest["files"].items()}:
        problems.append(f"artifacts/ is not the latest workspace: {sorted(set(exported) ^ set(manifest['files']))}")
    return {"records": [(m["turn"], m["role"], m["cause_by"]) for m in msgs],
            "texts": [normalize_text(m.get("content") or "", cid) for m in msgs],
            "calls": sop_calls(store, cid), "files": sop_tree(store, cid, manifest), "problems": problems}


def baseline_sop(inputs: list[str], workdir: str) -> dict[str, dict]:
    """The fault-free software companies (`sop_view`), run in-process."""
    from infra.testing.harness import Harness

    h = Harness(os.path.join(workdir, "baseline-sop"))
    out = {}
    for text in inputs:
        cid = h.start("software_company", text)
        h.pump()
        end = h.convs.get_end(cid)
        assert end["status"] == "completed", end
        out[text] = sop_view(h.store, cid)
        assert not out[text]["problems"], out[text]["problems"]
    return out


class SopBaseline:
    """`baseline_sop` in a process of its own, started before the faulted run so that the two overlap
    (the fault-free software companies take a few seconds each). `result()` waits for it."""

    def __init__(self, inputs: list[str], workdir: str):
        self.inputs = list(inputs)
        self.path = os.path.join(workdir, "baseline-sop.json")
        self.log_path = os.path.join(workdir, "baseline-sop.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "infra.testing.faultsuite", "baseline-sop", workdir, self.path,
                                          *self.inputs], cwd=ROOT, env={**os.environ, "TROUPE_LLM": "fake"},
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def result(self, timeout: float = 600.0) -> dict[str, dict]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        if code != 0:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                raise AssertionError(f"the fault-free software companies failed ({code}): {f.read()[-3000:]}")
        with open(self.path, encoding="utf-8") as f:
            raw = json.load(f)
        return {text: {**v, "records": [tuple(r) for r in v["records"]],
                       "calls": {int(t): n for t, n in v["calls"].items()}} for text, v in raw.items()}


class FaultSuite:
    """One local runtime with a fault plan; conversations are added class by class."""

    def __init__(self, workdir: str, *, rounds: int = 2, max_turns: int = 5, persona_timeout: int = 5,
                 sop_timeout: int = 10, seed: int = 1, max_instances: int = 2, log=print):
        from infra.local.runtime import LocalRuntime

        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.rounds, self.max_turns, self.persona_timeout = rounds, max_turns, persona_timeout
        self.sop_timeout = sop_timeout
        self.rng = random.Random(seed)
        self.log = log
        self.data = os.path.join(self.workdir, "data")
        self.state_dir = os.path.join(self.workdir, "faults-state")
        self.plan_path = os.path.join(self.workdir, "faults.json")
        self.plan = {"seed": seed, "state_dir": self.state_dir, "retry_base": 0.002,
                     "functions": ["persona", "director", *SOP_FUNCTIONS], "by_input": {}}
        self._write_plan()
        self.faults = Faults(self.plan_path, self.data)
        self.s_yaml = write_s_yaml(self.workdir, persona_timeout, sop_timeout)
        self.rt = LocalRuntime(self.data, self.s_yaml, retry_delay=0.05, max_instances=max_instances,
                               scale_out_after=0.0, event_delays=self.faults.event_delays,
                               # a throttled call (3 tries, at least 0.5 s apart) outlasts a second of
                               # waiting: its turn is handed back
                               extra_env={"TROUPE_FAULTS": self.plan_path, "TROUPE_LLM": "fake",
                                          "TROUPE_THROTTLE_WAIT_S": "1"})
        self.api = ApiClient(self.rt)
        self.cls_of: dict[str, str] = {}
        self.input_of: dict[str, str] = {}
        self.wall: dict[str, float] = {}

    def _write_plan(self) -> None:
        tmp = self.plan_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.plan, f, indent=1)
        os.replace(tmp, self.plan_path)

    def __enter__(self) -> "FaultSuite":
        self.rt.start()
        return self

    def __exit__(self, *exc) -> None:
        self.rt.stop(timeout=30)

    # -- HTTP -------------------------------------------------------------------------------
    def http(self, method: str, path: str, body=None) -> tuple[int, dict]:
        return self.api.http(method, path, body)

    def start(self, text: str, spec: dict, cls: str, scenario: str = "debate") -> str:
        """Start a conversation under fault SPEC; `cls` is its row in the results."""
        self.plan["by_input"][text] = spec
        self._write_plan()
        body = {"scenario": scenario, "input": text}
        if scenario == "debate":
            body.update(rounds=self.rounds, limits={"max_turns": self.max_turns})
        if scenario == "newsroom":
            body.update(limits={"max_turns": self.max_turns})
        status, created = self.http("POST", "/conversations", body)
        assert status == 201, created
        cid = created["id"]
        self.cls_of[cid], self.input_of[cid] = cls, text
        return cid

    def wait_ended(self, cids: list[str], timeout: float) -> list[str]:
        """Waits for every conversation's end marker; returns those still running at the timeout."""
        deadline = time.time() + timeout
        left = list(cids)
        while left and time.time() < deadline:
            left = [c for c in left if self.rt.store.head(f"conversations/{c}/end.json") is None]
            if left:
                time.sleep(0.1)
        return left

    # -- running classes ------------------------------------------------------------------
    @staticmethod
    def panel_input(label: str, i: int, tag: str = "") -> str:
        return f"Fault suite{tag}: a new bridge opens ({label} #{i})"

    @staticmethod
    def sop_input(cls: str, i: int, tag: str = "") -> str:
        # no '#' in it: with one, the scripted LLM's PRD reply does not parse (WritePRD fails)
        return f"Fault suite{tag}: a bookkeeping app ({cls} {i})"

    def run(self, classes: list[str], per_class: int, *, sequential: bool = False, timeout: float = 300.0,
            tag: str = "", sop_classes: list[str] | None = None, sop_per_class: int = 0,
            panel_classes: list[str] | None = None, panel_per_class: int = 0) -> dict[str, list[str]]:
        """Start `per_class` debates of each class, `sop_per_class` software companies of each of
        `sop_classes` (rows `sop:<class>`) and `panel_per_class` newsrooms of each of `panel_classes`
        (rows `panel:<class>`), all at once, or one class after another."""
        groups: dict[str, list[str]] = {}
        sop_classes = list(sop_classes if sop_classes is not None else (classes if sop_per_class else []))
        panel_classes = list(panel_classes or []) if panel_per_class > 0 else []
        labels = [(c, c in classes and per_class > 0, c in sop_classes and sop_per_class > 0)
                  for c in dict.fromkeys(classes + sop_classes)]
        labels = [[c] * debate + [SOP + c] * sop for c, debate, sop in labels if debate or sop]
        labels += [[PANEL + c] for c in panel_classes]
        order = labels if sequential else [[label for batch in labels for label in batch]]
        for batch in order:
            t0 = time.time()
            # the software companies first: theirs are the longer conversations
            for label in sorted(batch, key=lambda label: not label.startswith(SOP)):
                if label.startswith(SOP):
                    cls = label[len(SOP):]
                    groups[label] = [self.start(self.sop_input(cls, i, tag),
                                                sop_class_spec(cls, self.rng, self.sop_timeout, i), label,
                                                "software_company") for i in range(sop_per_class)]
                elif label.startswith(PANEL):
                    groups[label] = [self.start(self.panel_input(label, i, tag), panel_class_spec(
                        label[len(PANEL):], self.rng, self.max_turns, self.persona_timeout), label, "newsroom")
                        for i in range(panel_per_class)]
                else:
                    groups[label] = [self.start(f"Fault suite{tag}: should cities ban cars? ({label} #{i})",
                                                class_spec(label, self.rng, self.max_turns, self.persona_timeout), label)
                                     for i in range(per_class)]
            cids = [c for label in batch for c in groups[label]]
            left = self.wait_ended(cids, timeout)
            self.rt.wait_idle(60)  # late copies of events run to their (no-op) end
            for label in batch:
                ends = [os.stat(os.path.join(self.data, "objects", "conversations", c, "end.json")).st_mtime
                        for c in groups[label] if c not in left]
                self.wall[label] = round((max(ends) if ends else time.time()) - t0, 2)
            if left:
                self.log(f"still running after {timeout:g}s: {len(left)} conversations")
        return groups

    # -- checking -------------------------------------------------------------------------
    def analyze(self, groups: dict[str, list[str]], expected: dict[str, list[tuple]],
                expected_sop: dict[str, dict] | None = None) -> dict[str, dict]:
        """Per row: the counts of the table, and `problems` (one line per conversation that is wrong).
        `expected` is `baseline()`'s for the debates, `expected_sop` `baseline_sop()`'s."""
        from shared.conversation import ConversationStore

        convs = ConversationStore(self.rt.store)
        ledger = read_ledger(self.state_dir)
        by_cid: dict[str, list[dict]] = defaultdict(list)
        rid_cid: dict[str, str] = {}
        for e in ledger:
            if e.get("cid"):
                by_cid[e["cid"]].append(e)
                if e.get("rid"):
                    rid_cid[e["rid"]] = e["cid"]
        out = {}
        for label, cids in groups.items():
            sop = label.startswith(SOP)
            agg = Counter()
            problems: list[str] = []
            paid_max = paid_call_max = records_paid_max = 0
            for cid in cids:
                msgs = list(convs.iter_messages(cid))
                turns = [m["turn"] for m in msgs]
                end = convs.get_end(cid) or {}
                if sop:
                    want_view = expected_sop[self.input_of[cid]]
                    view = sop_view(self.rt.store, cid)
                    # (a wave's branches commit at one turn, in no set order)
                    want = sorted((*r, t) for r, t in zip(want_view["records"], want_view["texts"]))
                    got = sorted((*r, t) for r, t in zip(view["records"], view["texts"]))
                    calls_expected = want_view["calls"]
                else:
                    want = expected[self.input_of[cid]]
                    # (a panel's answers share a turn: a transcript is compared in (turn, role) order)
                    got = sorted((m["turn"], m["role"], m["content"]) for m in msgs)
                    calls_expected = dict(Counter(t for t, *_ in want if t > 0))
                agg["conversations"] += 1
                agg["completed"] += end.get("status") == "completed"
                agg["turns_expected"] += len(want) - 1
                agg["turns_committed"] += len([t for t in turns if t > 0])
                # a turn's records are one per role, and per file for an SOP wave's branches
                spoke = [(m["turn"], m.get("role"), (m.get("branch") or {}).get("item")) for m in msgs]
                agg["lost"] += len({tuple(w[:2]) for w in want} - {s[:2] for s in spoke}) if not sop else \
                    sum((Counter(w[:3] for w in want) - Counter(g[:3] for g in got)).values())
                agg["duplicated"] += (len(spoke) - len(set(spoke))) + (len(msgs) - len({m["id"] for m in msgs}))
                agg["mismatched"] += sum(1 for a, b in zip(got, want) if a != b)
                agg["calls_expected"] += sum(calls_expected.values())
                journal = list(self.rt.store.iter(f"conversations/{cid}/journal/"))
                agg["journal_entries"] += len(journal)
                records = convs.invocations(cid)
                for r in records:
                    if r.get("request_id"):
                        rid_cid[r["request_id"]] = cid
                    agg[f"outcome_{r.get('outcome')}"] += 1
                spans = defaultdict(list)  # invocations of one delivery that ran at the same time
                for r in records:
                    if r.get("trigger") and r.get("start") and r.get("duration_ms") is not None:
                        spans[r["trigger"]].append((r["start"], r["start"] + r["duration_ms"] / 1000))
                for ivs in spans.values():
                    agg["overlapping"] += sum(1 for i, a in enumerate(ivs) for b in ivs[i + 1:]
                                              if a[0] < b[1] and b[0] < a[1])
                per_turn = Counter()
                for r in records:
                    if r.get("function") in (SOP_FUNCTIONS if sop else ("persona",)):
                        per_turn[r.get("turn")] += r.get("llm_paid", 0) or 0
                records_paid_max = max([records_paid_max, *per_turn.values()])
                agg["records_overpaid"] += sum(max(0, n - calls_expected.get(t, 0)) for t, n in per_turn.items())
                events = by_cid.get(cid, [])
                done = Counter(e["turn"] for e in events if e["ev"] == "llm_done")
                done_call = Counter((e["turn"], e.get("d"), e.get("n")) for e in events if e["ev"] == "llm_done")
                started = Counter(e["turn"] for e in events if e["ev"] == "llm_start")
                paid_max = max([paid_max, *done.values()])
                paid_call_max = max([paid_call_max, *done_call.values()])
                agg["llm_paid"] += sum(done.values())
                agg["llm_overpaid"] += sum(max(0, n - calls_expected.get(t, 0)) for t, n in done.items())
                agg["llm_abandoned"] += sum(started.values()) - sum(done.values())
                for e in events:
                    if e["ev"] in ("kill", "stall", "fail", "throttled"):
                        agg[f"injected_{e['ev']}"] += 1
                    elif e["ev"] == "transient":
                        agg[f"injected_transient_{e['when']}"] += 1
                    elif e["ev"] == "copies":
                        agg["event_copies"] += len(e["delays"])
                if sop:
                    agg["files_differ"] += view["files"] != want_view["files"]
                    agg["workspace_inconsistent"] += len(view["problems"])
                    problems += [f"{cid}: {p}" for p in view["problems"]]
                    if end.get("status") == "completed" and view["files"] != want_view["files"]:
                        a, b = view["files"], want_view["files"]
                        problems.append(f"{cid}: the final project differs from the fault-free run's: only here "
                                        f"{sorted(set(a) - set(b))}, only there {sorted(set(b) - set(a))}, other "
                                        f"contents {sorted(p for p in set(a) & set(b) if a[p] != b[p])}")
                    if done != Counter({t: n for t, n in calls_expected.items() if n}):
                        problems.append(f"{cid}: LLM calls paid per turn {dict(sorted(done.items()))}, the fault-free "
                                        f"run made {dict(sorted(calls_expected.items()))}")
                if end.get("status") != "completed":
                    problems.append(f"{cid}: {end.get('status', 'running')} {str(end.get('reason', ''))[:200]}")
                elif got != want:
                    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                    problems.append(f"{cid}: transcript differs from the fault-free run: "
                                    f"{[w[:2 + sop] for w in got]} vs {[w[:2 + sop] for w in want]}; first at #{first}: "
                                    f"{str(got[first:first + 1])[:300]} vs {str(want[first:first + 1])[:300]}")
            agg["llm_paid_per_turn_max"] = paid_max
            agg["llm_paid_per_call_max"] = paid_call_max
            agg["records_paid_per_turn_max"] = records_paid_max
            out[label] = {**agg, "problems": problems, "wall_s": self.wall.get(label)}
            if sop:
                out[label].setdefault("files_differ", 0)
                out[label].setdefault("workspace_inconsistent", 0)
        # runtime-level retries (attempt > 1) and failed attempts, per class
        for rec in list(self.rt.invocation_log):
            cid = rid_cid.get(rec.request_id)
            cls = self.cls_of.get(cid) if cid else None
            if cls in out:
                if rec.attempt > 1:
                    out[cls]["retries"] = out[cls].get("retries", 0) + 1
                if rec.outcome != "ok":
                    key = f"attempts_{rec.outcome}"
                    out[cls][key] = out[cls].get(key, 0) + 1
        return out


COLUMNS = [("conversations", "convs"), ("completed", "done"), ("turns_expected", "turns exp"),
           ("turns_committed", "committed"), ("lost", "lost"), ("duplicated", "dup"),
           ("mismatched", "differ"), ("files_differ", "files differ"), ("workspace_inconsistent", "ws bad"),
           ("calls_expected", "calls exp"), ("journal_entries", "journal"), ("llm_paid", "paid"),
           ("llm_paid_per_call_max", "paid/call max"), ("llm_overpaid", "overpaid"), ("llm_abandoned", "abandoned"),
           ("retries", "retries"), ("overlapping", "overlaps"), ("outcome_in_flight", "in_flight"),
           ("outcome_replayed", "replayed"), ("outcome_duplicate", "dup-noop"),
           ("outcome_handed_back", "handed back"), ("wall_s", "wall s")]
"""The table's columns. `differ`: records unlike the fault-free run's (debates: turn, role, text;
software company: turn, role, cause_by, text modulo `normalize`); `files differ`, `ws bad`: software
companies whose final project differs, turns whose record disagrees with its workspace (- for
debates); `calls exp`: the LLM calls of the fault-free run; `paid`: calls paid for (counted by the
fake LLM, so killed invocations count too); `paid/call max`: the most times one call (turn, index)
was paid for; `overpaid`: calls paid beyond the fault-free run's, per turn."""
_SOP_ONLY = {"files_differ", "workspace_inconsistent"}


def format_table(results: dict[str, dict]) -> str:
    head = ["class"] + [c for _, c in COLUMNS] + ["faults injected"]
    rows = []
    for cls, r in results.items():
        injected = ", ".join(f"{k[9:]}={v}" for k, v in sorted(r.items()) if k.startswith("injected_"))
        if r.get("event_copies"):
            injected = ", ".join(filter(None, [injected, f"event copies={r['event_copies']}"]))
        rows.append([cls] + [str(r.get(k) if r.get(k) is not None else
                                 ("-" if k == "wall_s" or (k in _SOP_ONLY and not cls.startswith(SOP)) else 0))
                             for k, _ in COLUMNS] + [injected or "-"])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(head)] + [line(r) for r in rows])


def cleanup(workdir: str) -> None:
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":  # python -m infra.testing.faultsuite baseline-sop WORKDIR OUT.json INPUT... (SopBaseline)
    if len(sys.argv) < 4 or sys.argv[1] != "baseline-sop":
        sys.exit("usage: python -m infra.testing.faultsuite baseline-sop WORKDIR OUT.json INPUT...")
    result = baseline_sop(sys.argv[4:], sys.argv[2])
    with open(sys.argv[3] + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(sys.argv[3] + ".tmp", sys.argv[3])
