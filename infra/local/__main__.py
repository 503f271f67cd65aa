"""`python -m infra.local`: run troupe on this machine.

  serve  --port 8000 --data DIR          the whole stack until Ctrl-C (gateway, FC invoke API, OSS endpoint)
  run    --scenario ID|FILE "input"      one conversation, transcript on stdout
  invoke FUNCTION --event FILE --data DIR  one event, synchronously (like `s local invoke -e`)
  redrive --data DIR [--function F] [--conversation CID]   re-drive dead letters (see redrive.py)

`run` and `serve` use the embedded local model (`--llm local`: one shared llama.cpp server)
unless TROUPE_LLM or --llm names another LLM (fake, openai, dashscope), or MetaGPT's
~/.metagpt/config2.yaml exists (`--llm config2`: its llm section, see shared/llm/config2.py).
"""

from __future__ import annotations

import argparse
import json
import os
import logging
import secrets
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from infra.local.runtime import DEFAULT_S_YAML, REPO_ROOT, LocalRuntime

DEFAULT_DATA = ".troupe"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log each invocation")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the local stack until Ctrl-C")
    serve.add_argument("--port", type=int, default=8000, help="the gateway's HTTP trigger")
    serve.add_argument("--api-port", type=int, default=0, help="the FC invoke API (0: any free port)")
    serve.add_argument("--oss-port", type=int, default=0, help="the bucket's OSS endpoint (0: any free port)")
    serve.add_argument("--data", default=DEFAULT_DATA)
    serve.add_argument("--s-yaml", default=DEFAULT_S_YAML)
    serve.add_argument("--max-instances", type=int, default=2)
    serve.add_argument("--llm", help="local (default unless TROUPE_LLM is set or ~/.metagpt/config2.yaml exists), "
                                            "config2, fake, openai, dashscope")

    run = sub.add_parser("run", help="run one conversation and print its transcript")
    run.add_argument("--scenario", required=True,
                     help="a scenario id (built in, or from user_roles/scenarios), or a scenario file (.yaml/.json)")
    run.add_argument("input")
    run.add_argument("--data", help="data directory (default: a temporary one)")
    run.add_argument("--s-yaml", default=DEFAULT_S_YAML)
    run.add_argument("--max-turns", type=int)
    run.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                     help="a scenario option, e.g. --option run_tests=false --option investment=5 (repeatable)")
    run.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    run.add_argument("--keep-serving", action="store_true",
                     help="after the end, keep the stack (and its web page) up until Ctrl-C")
    run.add_argument("--llm", help="local (default unless TROUPE_LLM is set or ~/.metagpt/config2.yaml exists), "
                                            "config2, fake, openai, dashscope")

    inv = sub.add_parser("invoke", help="deliver one event to a function, synchronously")
    inv.add_argument("function", help="resource id (persona) or function name (troupe-persona)")
    inv.add_argument("--event", required=True, help="file with the event bytes, or - for stdin")
    inv.add_argument("--data", default=DEFAULT_DATA)
    inv.add_argument("--s-yaml", default=DEFAULT_S_YAML)

    rd = sub.add_parser("redrive", help="re-invoke dead-lettered events once their cause is fixed")
    rd.add_argument("--data", default=DEFAULT_DATA)
    rd.add_argument("--s-yaml", default=DEFAULT_S_YAML)
    rd.add_argument("--function", help="only this function's dead letters (resource id, e.g. persona)")
    rd.add_argument("--conversation", help="only this conversation's dead letters")
    rd.add_argument("--endpoint", help="the FC invoke API of a running `serve` on DIR (it prints it); "
                                       "default: run a runtime on DIR until the re-driven work is done")
    rd.add_argument("--wait", type=float, default=600.0, help="without --endpoint: wait at most this long")
    rd.add_argument("--dry-run", action="store_true", help="list what would be re-driven")
    rd.add_argument("--llm", help="without --endpoint: as for serve (local unless TROUPE_LLM is set)")
    return p


def _llm_choice(args) -> str:
    """--llm, else TROUPE_LLM, else MetaGPT's config2.yaml when there is one, else the embedded model."""
    chosen = (args.llm or os.environ.get("TROUPE_LLM") or "").strip().lower()
    if chosen:
        return chosen
    from shared.llm import config2

    return "config2" if config2.path() else "local"


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _seed_knowledge(rt: LocalRuntime, wait_s: float = 30.0) -> None:
    """The sample knowledge base (lumen) the built-in scenarios draw on, where it is absent; the
    indexer function indexes it through its trigger, and this waits for that."""
    if not any(s.id == "indexer" for s in rt.specs):
        return
    from shared.knowledge import list_documents, seed_samples

    if not seed_samples(rt.store):
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        docs = list_documents(rt.store, "lumen")["docs"]
        if docs and all(d["status"] != "pending" for d in docs):
            print(f"knowledge: the sample base lumen ({len(docs)} documents) is indexed", file=sys.stderr, flush=True)
            return
        time.sleep(0.2)
    print("knowledge: the sample base lumen is still being indexed", file=sys.stderr, flush=True)


def _start(rt: LocalRuntime) -> bool:
    """Start the runtime; False (with the reason on stderr) when the embedded model cannot run."""
    from infra.local.model import ModelUnavailable

    try:
        rt.start()
    except ModelUnavailable as e:
        print(f"error: {e.message}", file=sys.stderr)
        return False
    _seed_knowledge(rt)
    srv = rt.model_server
    if srv is not None:
        print(f"model: {srv.alias} on {srv.openai_base_url} ({srv.threads} threads, started in "
              f"{srv.startup_seconds:.1f} s, RSS {srv.rss_mb():.0f} MB, log {srv.log_path})",
              file=sys.stderr, flush=True)
    return True


def _print_oss(rt) -> None:
    if rt.oss_url:
        print(f"  OSS endpoint: {rt.oss_url}  bucket: {rt.spool.bucket}  AccessKey id {rt.oss_access_key.id}, "
              f"the pair in {rt.runtime_dir}/oss-access-key.json while this runs (put requests/<name>.json, "
              f"read results/<name>.json)", flush=True)


def serve(args) -> int:
    rt = LocalRuntime(args.data, args.s_yaml, http_port=args.port, api_port=args.api_port, oss_port=args.oss_port,
                      max_instances=args.max_instances, llm=_llm_choice(args), model_progress=_progress)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    if not _start(rt):
        return 2
    try:
        print(f"troupe local runtime: {rt.http_url}", flush=True)
        if not os.environ.get("TROUPE_API_KEY"):
            print(f"  API key for this run (set TROUPE_API_KEY to choose one): {rt.api_key}", flush=True)
        for fid, url in rt.http_urls.items():
            print(f"  {fid}: {url}")
        print(f"  FC invoke API: {rt.api_url} (signed requests only; AccessKey id "
              f"{rt.api_server.access_key.id if rt.api_server else '-'}, the pair in "
              f"{rt.data_dir}/runtime/fc-access-key.json while this runs)")
        _print_oss(rt)
        print(f"  data: {rt.data_dir}  logs: {rt.runtime_dir}/logs", flush=True)
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", file=sys.stderr)
        rt.stop()
    return 0


def _request(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"error": "HTTPError", "message": raw.decode("utf-8", "replace")[:500]}


def _tokens(m: dict) -> int | None:
    """Tokens of the LLM call(s) behind a message: the record's `invocation.usage` when the view
    carries it, else the view's prompt/completion token fields; None when neither is there."""
    usage = (m.get("invocation") or {}).get("usage") or m.get("usage")
    if not isinstance(usage, dict):
        usage = m
    counts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens")]
    if all(c is None for c in counts):
        total = usage.get("total_tokens")
        return total if isinstance(total, int) else None
    return sum(c for c in counts if isinstance(c, (int, float))) or None


def _print_message(m: dict, elapsed: float | None = None) -> None:
    """`[turn] Role (x.x s, N tokens): content`; seconds since the conversation started."""
    detail = [f"{elapsed:.1f} s"] if elapsed is not None else []
    tokens = _tokens(m)
    if tokens:
        detail.append(f"{int(tokens)} tokens")
    head = f"[{m.get('turn')}] {m.get('role')}" + (f" ({', '.join(detail)})" if detail else "")
    print(f"{head}: {m.get('content')}", flush=True)


def _print_usage(base: str, cid: str, token: str | None) -> None:
    """The conversation's bill, if the gateway has GET /conversations/{id}/usage."""
    code, usage = _request("GET", f"{base}/conversations/{urllib.parse.quote(cid)}/usage", token=token)
    total = usage.get("total") if code == 200 else None
    if not isinstance(total, dict):
        return
    p, c = total.get("prompt_tokens") or 0, total.get("completion_tokens") or 0
    cost = total.get("cost_cny")
    print(f"usage: {total.get('invocations', 0)} invocations, {total.get('llm_calls', 0)} LLM calls, "
          f"{p} prompt + {c} completion tokens" + (f", {cost:.6f} {usage.get('currency', 'CNY')}"
                                                  if isinstance(cost, (int, float)) else ""), flush=True)


def _options(pairs: list[str]) -> dict:
    """NAME=VALUE pairs; a value is JSON when it parses (true, 3, 2.5), else a string."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--option wants NAME=VALUE, not {pair!r}")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


def _print_artifacts(base: str, cid: str, token: str | None) -> None:
    """The project files the conversation produced (software company), if any."""
    code, body = _request("GET", f"{base}/conversations/{urllib.parse.quote(cid)}/artifacts", token=token)
    files = body.get("artifacts") if code == 200 else None
    if not files:
        return
    print(f"artifacts: {len(files)} files ({base}/conversations/{cid}/artifacts.zip with the token)", flush=True)
    for a in files[:60]:
        print(f"  {a['path']} ({a['size']} bytes)", flush=True)


def converse(base: str, scenario: str, text: str, max_turns: int | None, timeout: float,
             api_key: str | None = None, options: dict | None = None) -> int:
    """Start a conversation on the gateway at `base` and follow it to its end."""
    body: dict = {"scenario": scenario, "input": text}
    if max_turns is not None:
        body["limits"] = {"max_turns": max_turns}
    if options:
        body["options"] = options
    t0 = time.monotonic()
    status, created = _request("POST", f"{base}/conversations", body, token=api_key or os.environ.get("TROUPE_API_KEY"))
    if status != 201:
        print(f"error {status}: {created.get('error')}: {created.get('message')}", file=sys.stderr)
        return 2
    cid, token = created["id"], created.get("token")
    print(f"conversation {cid}", file=sys.stderr, flush=True)
    cursor, state, shown = None, created.get("status", "running"), None
    printed: set[str] = set()  # the cursor may re-read a turn whose records commit at once: one line each
    deadline = time.monotonic() + timeout
    while True:
        query = "" if cursor is None else "?" + urllib.parse.urlencode({"after": cursor})
        code, view = _request("GET", f"{base}/conversations/{urllib.parse.quote(cid)}{query}", token=token)
        if code != 200:
            print(f"error {code}: {view.get('error')}: {view.get('message')}", file=sys.stderr)
            return 2
        for m in view.get("messages") or []:
            seen_as = m.get("id") or json.dumps(m, sort_keys=True)
            if seen_as not in printed:
                printed.add(seen_as)
                _print_message(m, time.monotonic() - t0)
        shown = _print_running(view.get("running"), shown)
        cursor = view.get("cursor", cursor)
        state = view.get("status", state)
        if state != "running":
            break
        if time.monotonic() > deadline:
            print(f"gave up after {timeout:g}s; the conversation is still running", file=sys.stderr)
            return 1
        time.sleep(0.2)
    end = view.get("end") or {}
    print(f"status: {state}" + (f" ({end.get('reason')})" if end.get("reason") else ""), flush=True)
    try:
        _print_usage(base, cid, token)
        _print_artifacts(base, cid, token)
    except (OSError, ValueError):
        pass
    return 0 if state == "completed" else 1


def _print_running(running: dict | None, shown: tuple | None) -> tuple | None:
    """A long SOP step, as it runs: who, which step, for how long, and the tokens so far of a
    streamed call (a line when it starts, then every 15 s)."""
    if not running:
        return shown
    key = (running.get("role"), running.get("step"), running.get("since"))
    elapsed = max(time.time() - float(running.get("since") or time.time()), 0)
    if shown is None or shown[:3] != key or elapsed - shown[3] >= 15:
        step = running.get("step") or "thinking"
        tokens = f", {running['tokens']} tokens so far" if running.get("tokens") else ""
        print(f"    ... {running.get('role')} at {step}: {elapsed:.0f} s{tokens}", file=sys.stderr, flush=True)
        return (*key, elapsed)
    return shown


def _scenario_arg(base: str, value: str, api_key: str) -> str | None:
    """`--scenario`: an id from the catalog (built in, or the deployment's user_roles/scenarios),
    or a scenario file, which is validated and added to this runtime's catalog (POST /scenarios)."""
    if not (os.path.isfile(value) or value.endswith((".yaml", ".yml", ".json"))):
        return value
    from shared import scenarios
    from shared.errors import TroupeError

    try:
        sc = scenarios.load_file(value)
    except TroupeError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return None
    team = os.environ.get("TROUPE_USER_ROLES") or os.path.join(REPO_ROOT, "user_roles")
    if any(os.path.samefile(value, f) for f in scenarios.deployment_files([team])):
        return sc["id"]  # one of the deployment's own: already in the catalog
    import yaml

    with open(value, encoding="utf-8") as f:
        status, body = _request("POST", f"{base}/scenarios", yaml.safe_load(f), token=api_key)
    if status == 409 and "already exists" in str(body.get("message")):
        print(f"scenario {sc['id']!r} was added to this data directory before: running that one", file=sys.stderr)
        return sc["id"]
    if status != 201:
        print(f"error {status}: {body.get('message')}", file=sys.stderr)
        return None
    print(f"scenario {sc['id']!r} from {value}", file=sys.stderr, flush=True)
    return sc["id"]


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="troupe-") as tmp:
        # the gateway starts conversations only for the deployment's API key: a one-off key
        # for this run unless TROUPE_API_KEY is set (s.yaml gives it to the gateway)
        api_key = os.environ.setdefault("TROUPE_API_KEY", secrets.token_urlsafe(24))
        rt = LocalRuntime(args.data or tmp, args.s_yaml, llm=_llm_choice(args), model_progress=_progress)
        if not _start(rt):
            return 2
        try:
            if rt.http_url is None:
                print("s.yaml declares no function with an HTTP trigger", file=sys.stderr)
                return 2
            print(f"web: {rt.http_url}/ (up while this command runs)", file=sys.stderr, flush=True)
            scenario = _scenario_arg(rt.http_url, args.scenario, api_key)
            if scenario is None:
                return 2
            code = converse(rt.http_url, scenario, args.input, args.max_turns, args.timeout, api_key,
                            _options(args.option))
            if args.keep_serving:
                print(f"web: {rt.http_url}/ (serving until Ctrl-C)", flush=True)
                _print_oss(rt)
                try:
                    threading.Event().wait()
                except KeyboardInterrupt:
                    pass
            print(f"web: {rt.http_url}/ (stopped with this command; `--keep-serving` keeps it up, or "
                  f"`serve --data DIR` on a kept --data dir)", flush=True)
            return code
        except KeyboardInterrupt:
            return 130
        finally:
            rt.stop(timeout=10)


def invoke(args) -> int:
    if args.event == "-":
        event = sys.stdin.buffer.read()
    else:
        with open(args.event, "rb") as f:
            event = f.read()
    rt = LocalRuntime(args.data, args.s_yaml)
    rt.start(dispatch=False, serve_http=False)  # events it writes stay spooled for `serve`
    try:
        result = rt.invoke(args.function, event)
    finally:
        rt.stop()
    if not result.ok:
        print(f"{result.error_type}: {result.error_message}", file=sys.stderr)
        if result.traceback:
            print(result.traceback, file=sys.stderr)
        return 1
    if isinstance(result.result, bytes):
        sys.stdout.buffer.write(result.result)
    elif isinstance(result.result, str):
        print(result.result)
    elif result.result is not None:
        print(json.dumps(result.result, ensure_ascii=False, indent=2))
    return 0


def redrive(args) -> int:
    from infra.local.model import ModelUnavailable
    from infra.local.redrive import redrive as run_redrive

    try:
        run_redrive(args.data, args.s_yaml, function=args.function, conversation=args.conversation,
                    endpoint=args.endpoint, wait=args.wait, dry_run=args.dry_run,
                    llm=None if args.endpoint else _llm_choice(args))
    except ModelUnavailable as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return {"serve": serve, "run": run, "invoke": invoke, "redrive": redrive}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
