"""The software company on the embedded model, measured: `make bench-sop` (`python -m bench.sop`).

Runs each requirement below as a `software_company` conversation on the local runtime with the
embedded model (one shared llama.cpp server, 2 threads), one after another, and prints per
requirement:

  * whether it completed, and its wall time;
  * each step (the role function and the MetaGPT action its turn ran): completion tokens and
    seconds;
  * structured calls (ActionNode JSON fills) whose first attempt was valid: the reply parses
    as one JSON object and the node was not asked again in that turn;
  * the generated project: how many `.py` files compile, and how many of QA's tests passed
    (from the test runs QA recorded).

Targets on 2 idle cores: all complete; first-attempt valid structure 100%; <= 15 min each;
generated code compiles in >= 4 of 5. Figures, not assertions: the README records them.

    python -m bench.sop [--only 1,3] [--timeout 1200] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import secrets
import sys
import tempfile
import time
import urllib.request
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

#: (label, requirement): English and Chinese; a CLI, a library, a game
REQUIREMENTS = [
    ("todo CLI (en)", "A todo list CLI"),
    ("ledger app (zh)", "开发一个记账APP"),
    ("unit library (en)", "A small Python library that converts lengths, weights and temperatures between units"),
    ("snake game (en)", "A snake game for the terminal"),
    ("word count CLI (zh)", "写一个统计文本文件中单词频率的命令行工具"),
]
TARGETS = {"minutes": 15, "first_attempt_valid": 1.0, "compiles_in": 4}


def _http(method: str, url: str, body: dict | None = None, token: str | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        raw = r.read()
    return json.loads(raw) if r.headers.get("Content-Type", "").startswith("application/json") else raw


def run_one(rt, api_key: str, requirement: str, timeout: float) -> dict:
    started = time.monotonic()
    created = _http("POST", f"{rt.http_url}/conversations", {"scenario": "software_company", "input": requirement},
                    token=api_key)
    cid, token = created["id"], created.get("token")
    status = "running"
    while status == "running" and time.monotonic() - started < timeout:
        time.sleep(2)
        status = _http("GET", f"{rt.http_url}/conversations/{cid}", token=token).get("status", status)
    wall = time.monotonic() - started
    view = _http("GET", f"{rt.http_url}/conversations/{cid}", token=token)
    out = {"cid": cid, "status": status, "reason": (view.get("end") or {}).get("reason"), "wall_s": round(wall, 1)}
    out["steps"] = steps(rt.store, cid)
    out["structured"] = structured_calls(rt.store, cid)
    out["code"] = project(rt, cid, token)
    return out


def steps(store, cid: str) -> list[dict]:
    """Each paid LLM call of the conversation, in order: the role's step, tokens, seconds."""
    rows = []
    for info in store.iter(f"conversations/{cid}/journal/"):
        entry = json.loads(store.get(info.key))
        rows.append({"key": info.key.rsplit("/", 1)[-1], "expects": entry.get("expects", ""),
                     "completion_tokens": entry.get("completion_tokens", 0), "prompt_tokens": entry.get("prompt_tokens", 0),
                     "seconds": round(entry.get("duration_ms", 0) / 1000, 1), "at": entry.get("at", 0)})
    rows.sort(key=lambda r: r["at"])
    return rows


def structured_calls(store, cid: str) -> dict:
    """ActionNode fills: how many, and how many were valid on their first attempt."""
    by_trigger: dict[str, list[dict]] = {}
    for info in store.iter(f"conversations/{cid}/journal/"):
        entry = json.loads(store.get(info.key))
        if str(entry.get("expects", "")).startswith("json:"):
            trigger = info.key.rsplit("/", 1)[-1].rsplit("-", 1)[0]
            by_trigger.setdefault(trigger, []).append(entry)
    fills = valid = 0
    for entries in by_trigger.values():
        entries.sort(key=lambda e: e["n"])
        i = 0
        while i < len(entries):
            node = entries[i]["expects"]
            j = i
            while j + 1 < len(entries) and entries[j + 1]["expects"] == node:
                j += 1  # asked again: MetaGPT's retry of the same fill
            fills += 1
            valid += int(j == i and _json_object(entries[i]["reply"]))
            i = j + 1
    return {"fills": fills, "first_attempt_valid": valid}


def _json_object(reply: str) -> bool:
    m = re.search(r"\[CONTENT\](.*)\[/CONTENT\]", reply, re.S)
    try:
        return isinstance(json.loads(m.group(1) if m else reply), dict)
    except ValueError:
        return False


def project(rt, cid: str, token: str | None) -> dict:
    try:
        raw = _http("GET", f"{rt.http_url}/conversations/{cid}/artifacts.zip", token=token)
    except OSError:
        return {"py": 0, "compile": 0, "tests_passed": 0, "tests_run": 0, "test_files": 0, "not_loaded": []}
    py = compiled = 0
    passed = ran = files = 0
    not_loaded: list[str] = []
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        for name in z.namelist():
            text = z.read(name).decode("utf-8", "replace")
            if name.endswith(".py"):
                py += 1
                try:
                    compile(text, name, "exec", dont_inherit=True)
                    compiled += 1
                except (SyntaxError, ValueError):
                    pass
            elif "test_outputs/" in name and name.endswith(".json"):
                p, r = _test_counts(text)
                passed, ran, files = passed + p, ran + r, files + 1
                if not r:
                    not_loaded.append(_load_error(text))
    return {"py": py, "compile": compiled, "tests_passed": passed, "tests_run": ran, "test_files": files,
            "not_loaded": not_loaded}


def _load_error(doc: str) -> str:
    """Why a test file ran no test: the last error line of its run (e.g. a module not installed)."""
    try:
        err = json.loads(doc).get("stderr") or ""
    except (ValueError, AttributeError):
        err = doc
    lines = [line.strip() for line in err.splitlines() if re.match(r"\s*\w+(Error|Exception)\b", line)]
    return lines[-1][:120] if lines else "no test ran"


def _test_counts(doc: str) -> tuple[int, int]:
    """(passed, run) from a RunCode result MetaGPT saved: unittest's or pytest's summary lines."""
    try:
        data = json.loads(doc)
        text = json.dumps(data, ensure_ascii=False).replace("\\n", "\n")
    except ValueError:
        text = doc
    ran = sum(int(n) for n in re.findall(r"Ran (\d+) tests?", text))
    if ran:
        failed = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", text))
        return max(ran - failed, 0), ran
    p = sum(int(n) for n in re.findall(r"(\d+) passed", text))
    f = sum(int(n) for n in re.findall(r"(\d+) (?:failed|error)", text))
    return p, p + f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated 1-based indexes of the requirements to run")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per requirement before giving up")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", metavar="DIR", help="run in DIR and keep it (conversations, journals, projects)")
    args = ap.parse_args()
    chosen = [REQUIREMENTS[int(i) - 1] for i in args.only.split(",")] if args.only else REQUIREMENTS

    from infra.local.runtime import LocalRuntime

    api_key = os.environ.setdefault("TROUPE_API_KEY", secrets.token_urlsafe(24))
    results = []
    with contextlib.ExitStack() as stack:
        tmp = args.keep or stack.enter_context(tempfile.TemporaryDirectory(prefix="troupe-bench-sop-"))
        rt = LocalRuntime(os.path.join(tmp, "data"), llm="local")
        rt.start()
        try:
            for label, requirement in chosen:
                print(f"-- {label}: {requirement}", flush=True)
                r = run_one(rt, api_key, requirement, args.timeout)
                r["label"] = label
                results.append(r)
                _print(r)
        finally:
            rt.stop(timeout=10)
    _summary(results)
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
    return 0


def _print(r: dict) -> None:
    print(f"   {r['status']}{' (' + r['reason'] + ')' if r.get('reason') else ''} in {r['wall_s'] / 60:.1f} min")
    for s in r["steps"]:
        print(f"     {s['key']:<46} {s['expects'] or 'text':<26} {s['prompt_tokens']:>5} in {s['completion_tokens']:>5} out"
              f" {s['seconds']:>6.1f} s")
    st, c = r["structured"], r["code"]
    print(f"   structured fills valid on the first attempt: {st['first_attempt_valid']}/{st['fills']}")
    print(f"   project: {c['compile']}/{c['py']} .py files compile; QA's tests passed {c['tests_passed']}/{c['tests_run']}"
          f" in {c.get('test_files', 0)} test file(s)", flush=True)
    for why in c.get("not_loaded") or []:
        print(f"     a test file ran no test: {why}", flush=True)


def _summary(results: list[dict]) -> None:
    done = sum(r["status"] == "completed" for r in results)
    fills = sum(r["structured"]["fills"] for r in results)
    valid = sum(r["structured"]["first_attempt_valid"] for r in results)
    compiles = sum(r["code"]["py"] > 0 and r["code"]["compile"] == r["code"]["py"] for r in results)
    longest = max((r["wall_s"] for r in results), default=0) / 60
    print(f"== software company on the embedded model ({os.cpu_count()} cores): {done}/{len(results)} completed; "
          f"longest {longest:.1f} min (target <= {TARGETS['minutes']}); structured first-attempt valid "
          f"{valid}/{fills} ({(valid / fills if fills else 0):.0%}, target 100%); every .py compiles in "
          f"{compiles}/{len(results)} (target >= {TARGETS['compiles_in']} of 5)")


if __name__ == "__main__":
    sys.exit(main())
