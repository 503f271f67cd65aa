"""The fault-injection suite's driver: debates on the local runtime under injected faults, checked
against the same debates run fault-free. Used by tests/functional/test_faults.py (small) and
bench/faults.py (large).

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
  chaos                duplicates + transient errors + a kill at a random point (bench only)

The fault-free run is the same debates (same inputs) run in-process by tests/harness.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict

import yaml

from infra.local.faults import POINTS, Faults, read_ledger

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_CLASSES = ["none", "duplicates", *(f"kill_{p}" for p in POINTS), "race", "transient", "llm_timeout"]
ALL_CLASSES = SMALL_CLASSES + ["chaos"]


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
    if cls == "chaos":
        return {"copies": {"n": 3, "max_delay": 0.4}, "transient": {"rate": 0.05, "after": 0.3},
                "kill": kill(rng.choice(POINTS))}
    raise ValueError(f"unknown fault class {cls!r}")


def write_s_yaml(workdir: str, persona_timeout: int) -> str:
    """s.yaml with absolute code paths and a short persona timeout (for the llm_timeout class)."""
    with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    for name, res in doc["resources"].items():
        code = res["props"]["code"]
        res["props"]["code"] = os.path.normpath(os.path.join(ROOT, code))
    doc["resources"]["persona"]["props"]["timeout"] = persona_timeout
    path = os.path.join(workdir, "s.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f)
    return path


def baseline(inputs: list[str], rounds: int, max_turns: int, workdir: str) -> dict[str, list[tuple]]:
    """The fault-free transcripts [(turn, role, content)], run in-process."""
    from tests.harness import Harness

    h = Harness(os.path.join(workdir, "baseline"))
    out = {}
    for text in inputs:
        cid = h.start(text=text, rounds=rounds, max_turns=max_turns)
        h.pump()
        assert h.convs.get_end(cid)["status"] == "completed"
        out[text] = [(m["turn"], m["role"], m["content"]) for m in h.transcript(cid)]
    return out


class FaultSuite:
    """One local runtime with a fault plan; conversations are added class by class."""

    def __init__(self, workdir: str, *, rounds: int = 2, max_turns: int = 5, persona_timeout: int = 5,
                 seed: int = 1, max_instances: int = 2, log=print):
        from infra.local.runtime import LocalRuntime

        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.rounds, self.max_turns, self.persona_timeout = rounds, max_turns, persona_timeout
        self.rng = random.Random(seed)
        self.log = log
        self.data = os.path.join(self.workdir, "data")
        self.state_dir = os.path.join(self.workdir, "faults-state")
        self.plan_path = os.path.join(self.workdir, "faults.json")
        self.plan = {"seed": seed, "state_dir": self.state_dir, "retry_base": 0.002,
                     "functions": ["persona", "director"], "by_input": {}}
        self._write_plan()
        self.faults = Faults(self.plan_path, self.data)
        self.s_yaml = write_s_yaml(self.workdir, persona_timeout)
        self.rt = LocalRuntime(self.data, self.s_yaml, retry_delay=0.05, max_instances=max_instances,
                               scale_out_after=0.0, event_delays=self.faults.event_delays,
                               extra_env={"TROUPE_FAULTS": self.plan_path, "TROUPE_LLM": "fake"})
        self.tokens: dict[str, str] = {}
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
        data = json.dumps(body).encode() if body is not None else None
        parts = path.split("?")[0].strip("/").split("/")
        secret = self.rt.api_key if len(parts) == 1 else self.tokens.get(parts[1], "")
        req = urllib.request.Request(self.rt.http_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {secret}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                out = json.loads(resp.read())
                if resp.status == 201 and "token" in out:
                    self.tokens[out["id"]] = out["token"]
                return resp.status, out
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def start(self, text: str, spec: dict, cls: str) -> str:
        self.plan["by_input"][text] = spec
        self._write_plan()
        status, created = self.http("POST", "/conversations", {"scenario": "debate", "input": text, "rounds": self.rounds,
                                                               "limits": {"max_turns": self.max_turns}})
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
    def run(self, classes: list[str], per_class: int, *, sequential: bool = False, timeout: float = 300.0,
            tag: str = "") -> dict[str, list[str]]:
        """Start `per_class` debates of each class (all at once, or one class after another)."""
        groups: dict[str, list[str]] = {}
        order = [[c] for c in classes] if sequential else [classes]
        for batch in order:
            t0 = time.time()
            for cls in batch:
                groups[cls] = [self.start(f"Fault suite{tag}: should cities ban cars? ({cls} #{i})",
                                          class_spec(cls, self.rng, self.max_turns, self.persona_timeout), cls)
                               for i in range(per_class)]
            cids = [c for cls in batch for c in groups[cls]]
            left = self.wait_ended(cids, timeout)
            self.rt.wait_idle(60)  # late copies of events run to their (no-op) end
            for cls in batch:
                ends = [os.stat(os.path.join(self.data, "objects", "conversations", c, "end.json")).st_mtime
                        for c in groups[cls] if c not in left]
                self.wall[cls] = round((max(ends) if ends else time.time()) - t0, 2)
            if left:
                self.log(f"still running after {timeout:g}s: {len(left)} conversations")
        return groups

    # -- checking -------------------------------------------------------------------------
    def analyze(self, groups: dict[str, list[str]], expected: dict[str, list[tuple]]) -> dict[str, dict]:
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
        for cls, cids in groups.items():
            agg = Counter()
            problems: list[str] = []
            paid_max = records_paid_max = 0
            for cid in cids:
                want = expected[self.input_of[cid]]
                msgs = list(convs.iter_messages(cid))
                got = [(m["turn"], m["role"], m["content"]) for m in msgs]
                turns = [m["turn"] for m in msgs]
                end = convs.get_end(cid) or {}
                agg["conversations"] += 1
                agg["completed"] += end.get("status") == "completed"
                agg["turns_expected"] += len(want) - 1
                agg["turns_committed"] += len([t for t in turns if t > 0])
                agg["lost"] += len({t for t, _, _ in want} - set(turns))
                agg["duplicated"] += (len(turns) - len(set(turns))) + (len(msgs) - len({m["id"] for m in msgs}))
                agg["mismatched"] += sum(1 for a, b in zip(got, want) if a != b)
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
                    if r.get("function") == "persona":
                        per_turn[r.get("turn")] += r.get("llm_paid", 0) or 0
                records_paid_max = max([records_paid_max, *per_turn.values()])
                events = by_cid.get(cid, [])
                done = Counter(e["turn"] for e in events if e["ev"] == "llm_done")
                started = Counter(e["turn"] for e in events if e["ev"] == "llm_start")
                paid_max = max([paid_max, *done.values()])
                agg["llm_paid"] += sum(done.values())
                agg["llm_abandoned"] += sum(started.values()) - sum(done.values())
                for e in events:
                    if e["ev"] in ("kill", "stall", "fail"):
                        agg[f"injected_{e['ev']}"] += 1
                    elif e["ev"] == "transient":
                        agg[f"injected_transient_{e['when']}"] += 1
                    elif e["ev"] == "copies":
                        agg["event_copies"] += len(e["delays"])
                if end.get("status") != "completed":
                    problems.append(f"{cid}: {end.get('status', 'running')} {str(end.get('reason', ''))[:200]}")
                elif got != want:
                    problems.append(f"{cid}: transcript differs from the fault-free run: "
                                    f"{[(t, r) for t, r, _ in got]} vs {[(t, r) for t, r, _ in want]}")
            agg["llm_paid_per_turn_max"] = paid_max
            agg["records_paid_per_turn_max"] = records_paid_max
            out[cls] = {**agg, "problems": problems, "wall_s": self.wall.get(cls)}
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
           ("mismatched", "differ"), ("journal_entries", "journal"), ("llm_paid", "paid"),
           ("llm_paid_per_turn_max", "paid/turn max"), ("llm_abandoned", "abandoned"),
           ("retries", "retries"), ("overlapping", "overlaps"), ("outcome_in_flight", "in_flight"),
           ("outcome_replayed", "replayed"), ("outcome_duplicate", "dup-noop"),
           ("wall_s", "wall s")]


def format_table(results: dict[str, dict]) -> str:
    head = ["class"] + [c for _, c in COLUMNS] + ["faults injected"]
    rows = []
    for cls, r in results.items():
        injected = ", ".join(f"{k[9:]}={v}" for k, v in sorted(r.items()) if k.startswith("injected_"))
        if r.get("event_copies"):
            injected = ", ".join(filter(None, [injected, f"event copies={r['event_copies']}"]))
        rows.append([cls] + [str(r.get(k) if r.get(k) is not None else (0 if k != "wall_s" else "-"))
                             for k, _ in COLUMNS] + [injected or "-"])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(head)] + [line(r) for r in rows])


def cleanup(workdir: str) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
