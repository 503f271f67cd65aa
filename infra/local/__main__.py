"""`python -m infra.local`: run troupe on this machine.

  serve  --port 8000 --data DIR          the whole stack until Ctrl-C
  run    --scenario ID "input"           one conversation, transcript on stdout
  invoke FUNCTION --event FILE --data DIR  one event, synchronously (like `s local invoke -e`)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from infra.local.runtime import DEFAULT_S_YAML, LocalRuntime

DEFAULT_DATA = ".troupe"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log each invocation")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the local stack until Ctrl-C")
    serve.add_argument("--port", type=int, default=8000, help="the gateway's HTTP trigger")
    serve.add_argument("--api-port", type=int, default=0, help="the FC invoke API (0: any free port)")
    serve.add_argument("--data", default=DEFAULT_DATA)
    serve.add_argument("--s-yaml", default=DEFAULT_S_YAML)
    serve.add_argument("--max-instances", type=int, default=2)

    run = sub.add_parser("run", help="run one conversation and print its transcript")
    run.add_argument("--scenario", required=True)
    run.add_argument("input")
    run.add_argument("--data", help="data directory (default: a temporary one)")
    run.add_argument("--s-yaml", default=DEFAULT_S_YAML)
    run.add_argument("--max-turns", type=int)
    run.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")

    inv = sub.add_parser("invoke", help="deliver one event to a function, synchronously")
    inv.add_argument("function", help="resource id (persona) or function name (troupe-persona)")
    inv.add_argument("--event", required=True, help="file with the event bytes, or - for stdin")
    inv.add_argument("--data", default=DEFAULT_DATA)
    inv.add_argument("--s-yaml", default=DEFAULT_S_YAML)
    return p


def serve(args) -> int:
    rt = LocalRuntime(args.data, args.s_yaml, http_port=args.port, api_port=args.api_port,
                      max_instances=args.max_instances)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    rt.start()
    try:
        print(f"troupe local runtime: {rt.http_url}", flush=True)
        for fid, url in rt.http_urls.items():
            print(f"  {fid}: {url}")
        print(f"  FC invoke API: {rt.api_url}")
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


def _print_message(m: dict) -> None:
    print(f"[{m.get('turn')}] {m.get('role')}: {m.get('content')}", flush=True)


def converse(base: str, scenario: str, text: str, max_turns: int | None, timeout: float) -> int:
    """Start a conversation on the gateway at `base` and follow it to its end."""
    body: dict = {"scenario": scenario, "input": text}
    if max_turns is not None:
        body["limits"] = {"max_turns": max_turns}
    status, created = _request("POST", f"{base}/conversations", body)
    if status != 201:
        print(f"error {status}: {created.get('error')}: {created.get('message')}", file=sys.stderr)
        return 2
    cid, token = created["id"], created.get("token")
    print(f"conversation {cid}", file=sys.stderr, flush=True)
    cursor, state = None, created.get("status", "running")
    deadline = time.monotonic() + timeout
    while True:
        query = "" if cursor is None else "?" + urllib.parse.urlencode({"after": cursor})
        code, view = _request("GET", f"{base}/conversations/{urllib.parse.quote(cid)}{query}", token=token)
        if code != 200:
            print(f"error {code}: {view.get('error')}: {view.get('message')}", file=sys.stderr)
            return 2
        for m in view.get("messages") or []:
            _print_message(m)
        cursor = view.get("cursor", cursor)
        state = view.get("status", state)
        if state != "running":
            break
        if time.monotonic() > deadline:
            print(f"gave up after {timeout:g}s; the conversation is still running", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"status: {state}", flush=True)
    return 0 if state == "completed" else 1


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="troupe-") as tmp:
        rt = LocalRuntime(args.data or tmp, args.s_yaml)
        rt.start()
        try:
            if rt.http_url is None:
                print("s.yaml declares no function with an HTTP trigger", file=sys.stderr)
                return 2
            return converse(rt.http_url, args.scenario, args.input, args.max_turns, args.timeout)
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return {"serve": serve, "run": run, "invoke": invoke}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
