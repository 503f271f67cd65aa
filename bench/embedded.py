"""The embedded local model, measured (not asserted): `make bench-embedded`, or
`python -m bench.embedded [--threads N] [--turns 4] [--skip-debate]`.

Prints:
  1. joining/verifying the weights (instant once cached) and the model server's startup seconds;
  2. decode and prompt tokens/s for one chat completion of ~64 tokens: llama.cpp's own timings
     (parsed from the server log, where llama-cpp-python prints them) and the client's view
     (time to first streamed token, then streamed tokens per second);
  3. the server's resident memory (RSS, MB);
  4. a short debate on the local runtime (TROUPE_LLM=local): seconds from runtime start to the
     first committed turn, and seconds per turn.
Targets, on 2 idle cores: decode >= 25 tok/s, server <= 2 GB RSS, first turn <= 15 s after the
stack starts (setup done). Busy cores slow llama.cpp a lot: note the load average it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
import urllib.request
import uuid

from infra.local import model
from shared.roles.copying import copy_rate

TARGETS = {"decode": 25.0, "rss_mb": 2048.0, "first_turn_s": 15.0, "copy_rate": 0.10}
_PROMPT_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
_EVAL = re.compile(r"(?<!prompt )eval time =\s*([\d.]+) ms /\s*(\d+) runs")


def _post(url: str, body: dict, stream: bool = False, token: str | None = None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    return urllib.request.urlopen(req, timeout=300)


def _get(url: str, token: str | None = None) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def speed(srv: model.ModelServer, max_tokens: int = 64) -> dict:
    """One streamed chat completion: client-side TTFT and decode rate, and llama.cpp's timings."""
    nonce = uuid.uuid4().hex[:8]  # a fresh prompt: no KV-cache reuse from an earlier request
    messages = [
        {"role": "system", "content": f"[{nonce}] You are the Proponent in a formal debate. Answer in "
                                      "plain English prose, without lists, and stay in role."},
        {"role": "user", "content": "The motion is: Should cities ban cars? The Opponent said that banning "
                                    "cars would hurt small shops, delivery workers and people with "
                                    "disabilities, and that buses are slow. Answer that point, then make "
                                    "a new one about air quality and street space. Write one long paragraph."},
    ]
    body = {"model": srv.alias, "messages": messages, "max_tokens": max_tokens, "temperature": 0.7,
            "stream": True}
    with open(srv.log_path, "rb") as f:
        f.seek(0, os.SEEK_END)
        log_from = f.tell()
    t0 = time.monotonic()
    first = last = None
    chunks = 0
    with _post(srv.openai_base_url + "/chat/completions", body, stream=True) as resp:
        for raw in resp:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            delta = json.loads(line[5:])["choices"][0].get("delta", {})
            if delta.get("content"):
                now = time.monotonic()
                first = first or now
                last = now
                chunks += 1
    out = {"ttft_s": round(first - t0, 3) if first else None, "streamed_tokens": chunks,
           "client_decode_tps": round((chunks - 1) / (last - first), 1) if chunks > 1 and last > first else None}
    time.sleep(0.3)  # the timings are printed after the last chunk
    with open(srv.log_path, "rb") as f:
        f.seek(log_from)
        tail = f.read().decode("utf-8", "replace")
    pe, ev = _PROMPT_EVAL.findall(tail), _EVAL.findall(tail)
    if pe:
        # llama-cpp-python evaluates the prompt before llama.cpp's perf counters see it (they
        # print ~0 ms), so the count comes from the log and the time from the first token
        n = int(pe[-1][1])
        out.update(prompt_tokens=n, prompt_tps=round(n / out["ttft_s"], 1) if out["ttft_s"] else None)
    if ev:
        ms, n = float(ev[-1][0]), int(ev[-1][1])
        out.update(decode_runs=n, decode_tps=round(n / ms * 1000, 1) if ms else None)
    return out


SIDES = {"Proponent": True, "Opponent": False}
"""a debater's vote on the motion, if it keeps its side"""


def _unheld_debate() -> dict:
    """The built-in debate without its debaters' stances: how the debaters speak unheld."""
    import yaml

    from shared.scenarios import HERE

    with open(os.path.join(HERE, "debate.yaml"), encoding="utf-8") as f:
        data = yaml.safe_load(f)
    data["id"] = "debate_unheld"
    for role in data["roles"]:
        role.pop("stance", None)
    return data


def _run_debate(rt, key: str, scenario: str, motion: str, turns: int, t0: float) -> dict:
    with _post(rt.http_url + "/conversations", {"scenario": scenario, "input": motion,
                                                "limits": {"max_turns": turns}}, token=key) as resp:
        created = json.loads(resp.read())
    cid, token = created["id"], created.get("token") or key
    seen: dict[int, float] = {}
    messages: list[dict] = []
    view: dict = {}
    deadline = time.monotonic() + 60 * turns + 60
    while time.monotonic() < deadline:
        view = _get(f"{rt.http_url}/conversations/{cid}", token)
        for m in view.get("messages") or []:
            if m["turn"] not in seen:
                seen[m["turn"]] = time.monotonic() - t0
                messages.append(m)
        if view.get("status") != "running":
            break
        time.sleep(0.1)
    return {"status": view.get("status"), "seen": seen, "messages": sorted(messages, key=lambda m: m["turn"])}


def debate(turns: int, threads: int | None, motions: list[str], unheld: bool = False) -> dict:
    """Debates on the local runtime with the embedded model: first-turn and per-turn seconds of
    the first; for every one, its copy rate and which debater turns keep their side (`unheld`:
    each motion again without the stances, for a before/after in one run)."""
    from bench import sides
    from infra.local.runtime import LocalRuntime

    key = os.environ.setdefault("TROUPE_API_KEY", uuid.uuid4().hex)
    runs = []
    with tempfile.TemporaryDirectory(prefix="troupe-bench-") as tmp:
        t0 = time.monotonic()
        rt = LocalRuntime(tmp, llm="local", model_threads=threads)
        rt.start()
        try:
            started = time.monotonic() - t0
            if unheld:
                with _post(rt.http_url + "/scenarios", _unheld_debate(), token=key):
                    pass
            for variant in (["debate", "debate_unheld"] if unheld else ["debate"]):
                for motion in motions:
                    runs.append({"scenario": variant, "motion": motion,
                                 **_run_debate(rt, key, variant, motion, turns, t0)})
            rss = rt.model_server.rss_mb()
            srv = rt.model_server
            judged = sides.accuracy(srv.openai_base_url, srv.alias)
            for run in runs:
                run["sides"] = [(m["role"], sides.votes_yes(srv.openai_base_url, srv.alias, run["motion"],
                                                            m["content"]) == SIDES[m["role"]])
                                for m in run["messages"] if m["role"] in SIDES]
        finally:
            rt.stop(timeout=10)
    first = runs[0]
    messages, seen = first["messages"], first["seen"]
    commits = [seen[t] for t in sorted(seen) if t >= 1]
    gaps = [b - a for a, b in zip(commits, commits[1:])]
    turns_of = [m for m in messages if m["turn"] >= 1]
    return {"status": first["status"], "turns": len(commits), "roles": [m["role"] for m in turns_of],
            "stack_start_s": round(started, 2), "first_turn_s": round(commits[0], 2) if commits else None,
            "first_turn_after_stack_s": round(commits[0] - started, 2) if commits else None,
            "s_per_turn_after_first": round(statistics.fmean(gaps), 2) if gaps else None,
            "turn_duration_s": [round(m["duration_ms"] / 1000, 2) for m in turns_of if m.get("duration_ms")],
            "llm_s": [round(m["llm_ms"] / 1000, 2) for m in turns_of if m.get("llm_ms")],
            "completion_tokens": [m.get("completion_tokens") or 0 for m in turns_of], "server_rss_mb_after": rss,
            "copy_rate": copy_rate([m["content"] for m in messages]), "judge": judged,
            "debates": [{"scenario": r["scenario"], "motion": r["motion"], "status": r["status"],
                         "copy_rate": copy_rate([m["content"] for m in r["messages"]]), "sides": r["sides"],
                         "turns": [f"{m['role']}: {m['content']}" for m in r["messages"] if m["turn"] >= 1]}
                        for r in runs]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.embedded", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, help="llama.cpp threads (default: TROUPE_LLM_THREADS or all cores)")
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--skip-debate", action="store_true")
    p.add_argument("--motion", action="append", dest="motions",
                   help="a debate's motion (repeat for several; default: Should cities ban cars?)")
    p.add_argument("--unheld", action="store_true",
                   help="also run each motion without the debaters' stances (before/after in one run)")
    p.add_argument("--json-mode", choices=["schema", "off"],
                   help="TROUPE_LLM_JSON for the debate: schema (the default: each turn restates its side first) "
                        "or off (free text, as before)")
    p.add_argument("--wait-policy", help="OMP_WAIT_POLICY of the server: default (OpenMP's, the default), "
                                         "PASSIVE, ACTIVE")
    p.add_argument("--hugepages", choices=["on", "off"], help="weights on transparent huge pages (default on)")
    args = p.parse_args(argv)
    if args.json_mode:
        os.environ["TROUPE_LLM_JSON"] = args.json_mode
    if args.wait_policy:
        os.environ["TROUPE_LLM_WAIT_POLICY"] = args.wait_policy
    if args.hugepages:
        os.environ["TROUPE_LLM_HUGEPAGES"] = "1" if args.hugepages == "on" else "0"
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)

    t0 = time.monotonic()
    path = model.ensure_model(progress=lambda s: print(s, flush=True))
    print(f"weights ready in {time.monotonic() - t0:.2f} s: {path}", flush=True)
    log = os.path.join(tempfile.gettempdir(), f"troupe-bench-model-{os.getpid()}.log")
    with model.ModelServer(path, threads=args.threads, log_path=log) as srv:
        rss_loaded = srv.rss_mb()
        warm = srv.warm_up()
        s = speed(srv, args.max_tokens)
        rss = srv.rss_mb()
        huge = srv.huge_pages_mb()
        threads, policy = srv.threads, srv.wait_policy
    rows = [
        ("model server startup (to /v1/models answering)", f"{srv.startup_seconds:.2f} s", ""),
        ("first token after startup (warm-up)", f"{warm:.2f} s", ""),
        ("decode, llama.cpp timings", _tps(s.get("decode_tps")), f">= {TARGETS['decode']:g} tok/s"),
        ("decode, client (streamed tokens after the first)", _tps(s.get("client_decode_tps")), ""),
        (f"prompt ({s.get('prompt_tokens', '?')} tokens / time to first token)", _tps(s.get("prompt_tps")), ""),
        ("time to first streamed token", f"{s['ttft_s']:.2f} s" if s.get("ttft_s") else "n/a", ""),
        ("server RSS loaded / after a completion", f"{rss_loaded:.0f} / {rss:.0f} MB",
         f"<= {TARGETS['rss_mb']:g} MB"),
        ("of which on transparent huge pages", f"{huge:.0f} MB" if huge is not None else "n/a", ""),
    ]
    if not args.skip_debate:
        d = debate(args.turns, args.threads, args.motions or ["Should cities ban cars?"], args.unheld)
        rows += [
            (f"debate ({d['turns']} turns, {d['status']}): stack start", f"{d['stack_start_s']:.2f} s", ""),
            ("runtime start -> first committed turn", f"{d['first_turn_s']:.2f} s" if d["first_turn_s"] else "n/a",
             f"<= {TARGETS['first_turn_s']:g} s"),
            ("seconds per turn after the first (commit to commit)", f"{d['s_per_turn_after_first']:.2f} s"
             if d["s_per_turn_after_first"] else "n/a", ""),
            ("turn durations (persona invocation)", ", ".join(f"{x:.1f}" for x in d["turn_duration_s"]) + " s", ""),
            ("LLM time per turn", ", ".join(f"{x:.1f}" for x in d["llm_s"]) + " s", ""),
            ("completion tokens per turn", ", ".join(map(str, d["completion_tokens"])), ""),
            ("copy rate: 8-word sequences already said earlier", f"{d['copy_rate']:.1%}" if d["copy_rate"] is not None
             else "n/a", f"<= {TARGETS['copy_rate']:.0%}"),
        ]
    print(f"\nembedded model: {model.MODEL_ALIAS} Q4_K_M, {threads} llama.cpp threads, "
          f"OMP_WAIT_POLICY {policy}, huge pages {'on' if srv.hugepages else 'off'}, "
          f"load average now {os.getloadavg()[0]:.2f}")
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"  {name:<{width}}  {value:>16}  {target}")
    if not args.skip_debate:
        right, asked = d["judge"]
        print(f"\nsides, judged by the model (right on {right} of {asked} labelled statements):")
        for r in d["debates"]:
            kept = sum(ok for _, ok in r["sides"])
            lost = ", ".join(f"{who}" for who, ok in r["sides"] if not ok) or "none"
            rate = f"{r['copy_rate']:.1%}" if r["copy_rate"] is not None else "n/a"
            print(f"  {r['scenario']:<14} {r['motion'][:40]:<40} {r['status']:<9} copy rate {rate:>6}, "
                  f"debater turns on their side {kept} of {len(r['sides'])} (off side: {lost})")
        for r in d["debates"]:
            print(f"\n  {r['scenario']}: {r['motion']}")
            for t in r["turns"]:
                print(f"    {t[:300]}")
    return 0


def _tps(v) -> str:
    return f"{v:.1f} tok/s" if isinstance(v, (int, float)) else "n/a"


if __name__ == "__main__":
    raise SystemExit(main())
