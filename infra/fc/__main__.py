"""`python -m infra.fc`: troupe's functions through the Function Compute SDKs.

  invoke FUNCTION --event FILE [--async] [--sdk fc3|fc-open|fc2] [--service SVC]
        the function's result (sync) or the request id (async)
  status CONVERSATION --token TOKEN        status, end and turns, through the gateway function
  redrive [--function F] [--conversation C] [--dry-run] [--data DIR]
        re-invoke dead-lettered events (asynchronously) once their cause is fixed
  publish-layer [ZIP] [--name troupe-deps]
        publish `make package`'s layer.zip as a new version of the layer s.yaml's functions use

FUNCTION is a resource id of s.yaml (gateway) or an FC function name (troupe-gateway).
--sdk fc3 (default: alibabacloud-fc20230330, FC 3.0 functions, as s.yaml deploys them);
fc-open (alibabacloud-fc-open20210406) and fc2 (aliyun-fc2) address FC 2.0 functions and need
--service. Settings (see infra/fc/config.py): ALIBABA_CLOUD_ACCESS_KEY_ID,
ALIBABA_CLOUD_ACCESS_KEY_SECRET [, ALIBABA_CLOUD_SECURITY_TOKEN]; TROUPE_FC_ENDPOINT, or
ALIBABA_CLOUD_ACCOUNT_ID [+ TROUPE_FC_REGION]; for redrive, TROUPE_OSS_BUCKET and
TROUPE_OSS_ENDPOINT (or --data DIR for a local runtime's data directory).
Exit codes: 0 done, 1 the call or the function failed, 2 a setting or argument is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import quote

from infra.fc.client import SDKS, FCError, Invoker, make_invoker
from infra.fc.config import ConfigError, Credentials, endpoint_from_env, function_name, load_functions

DEFAULT_S_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "s.yaml")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--sdk", choices=SDKS, default="fc3",
                        help="fc3: alibabacloud-fc20230330 (default); fc-open / fc2: FC 2.0 (need --service)")
    common.add_argument("--service", help="the FC 2.0 service (with --sdk fc-open or fc2)")
    common.add_argument("--s-yaml", default=DEFAULT_S_YAML, help="maps resource ids to FC function names")

    p = argparse.ArgumentParser(prog="python -m infra.fc", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    inv = sub.add_parser("invoke", parents=[common], help="invoke a function with an event")
    inv.add_argument("function", help="resource id (gateway) or function name (troupe-gateway)")
    inv.add_argument("--event", required=True, help="file with the event bytes, or - for stdin")
    inv.add_argument("--async", dest="asynchronous", action="store_true",
                     help="queue it (x-fc-invocation-type: Async) and print the request id")

    st = sub.add_parser("status", parents=[common], help="a conversation's status, through the gateway")
    st.add_argument("conversation")
    st.add_argument("--token", required=True, help="the conversation's token (from POST /conversations)")
    st.add_argument("--gateway", default="gateway", help="the gateway function (default: gateway)")

    rd = sub.add_parser("redrive", parents=[common], help="re-invoke dead-lettered events")
    rd.add_argument("--function", help="only this function's dead letters (resource id, e.g. persona)")
    rd.add_argument("--conversation", help="only this conversation's dead letters")
    rd.add_argument("--dry-run", action="store_true", help="list what would be re-driven")
    rd.add_argument("--data", help="a local runtime's data directory instead of the OSS bucket")
    pl = sub.add_parser("publish-layer", parents=[common], help="publish the dependency layer (FC 3.0 API)")
    pl.add_argument("zip", nargs="?", default=os.path.join(os.path.dirname(DEFAULT_S_YAML), "build", "package",
                                                           "layer.zip"),
                    help="the layer zip (default: build/package/layer.zip from make package)")
    pl.add_argument("--name", default="troupe-deps", help="the layer's name (s.yaml's vars.layer names it)")
    return p


class _Context:
    """What every command needs: the functions of s.yaml and an invoker per region."""

    def __init__(self, args):
        self.args = args
        self.functions = load_functions(args.s_yaml)
        self._credentials: Credentials | None = None
        self._invokers: dict[str, Invoker] = {}

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            self._credentials = Credentials.from_env()
        return self._credentials

    def resolve(self, given: str) -> tuple[str, str | None]:
        """(FC function name, its region in s.yaml if declared)."""
        name, spec = function_name(self.functions, given)
        return name, spec.region if spec else None

    def invoker(self, region: str | None) -> Invoker:
        region = os.environ.get("TROUPE_FC_REGION", "").strip() or region
        key = region or ""
        if key not in self._invokers:
            endpoint = endpoint_from_env(region)
            self._invokers[key] = make_invoker(self.args.sdk, endpoint, self.credentials, region)
        return self._invokers[key]

    def invoke(self, given: str, payload: bytes, asynchronous: bool = False):
        if self.args.sdk != "fc3" and not self.args.service:
            raise ConfigError(f"--sdk {self.args.sdk} addresses FC 2.0 functions: give --service")
        name, region = self.resolve(given)
        return self.invoker(region).invoke(name, payload, asynchronous=asynchronous, service=self.args.service)


def _function_error(body: bytes) -> str:
    try:
        err = json.loads(body)
        return f"{err.get('errorType')}: {err.get('errorMessage')}"
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:500]


def cmd_invoke(ctx: _Context) -> int:
    args = ctx.args
    try:
        event = sys.stdin.buffer.read() if args.event == "-" else open(args.event, "rb").read()
    except OSError as e:
        raise ConfigError(f"cannot read --event {args.event}: {e.strerror}") from None
    res = ctx.invoke(args.function, event, args.asynchronous)
    if res.error_type:
        print(f"function error ({res.error_type}, request {res.request_id}): {_function_error(res.body)}",
              file=sys.stderr)
        return 1
    if args.asynchronous:
        print(res.request_id)
        return 0
    sys.stdout.buffer.write(res.body + (b"" if res.body.endswith(b"\n") else b"\n"))
    sys.stdout.flush()
    return 0


def _gateway_get(ctx: _Context, path: str, token: str, query: dict) -> tuple[int, dict]:
    """GET `path` on the gateway function, invoked synchronously with an HTTP trigger event."""
    from infra.local.events import make_http_event

    event = make_http_event("GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                            query=query)
    res = ctx.invoke(ctx.args.gateway, json.dumps(event).encode("utf-8"))
    if res.error_type:
        raise FCError(f"the gateway failed: {_function_error(res.body)}", res.status, res.error_type, res.request_id)
    try:
        answer = json.loads(res.body)
        body = answer.get("body") or "{}"
        if answer.get("isBase64Encoded"):
            import base64

            body = base64.b64decode(body)
        return int(answer.get("statusCode") or 200), json.loads(body)
    except (ValueError, TypeError, AttributeError):
        raise FCError(f"the gateway answered something else than an HTTP response: {res.body[:200]!r}") from None


def cmd_status(ctx: _Context) -> int:
    args = ctx.args
    path = f"/conversations/{quote(args.conversation, safe='')}"
    query: dict = {"limit": "500"}
    turns, view = 0, {}
    for _ in range(1000):  # pages of 500 messages
        code, view = _gateway_get(ctx, path, args.token, query)
        if code != 200:
            print(f"error: the gateway answered {code}: {view.get('error')}: {view.get('message')}", file=sys.stderr)
            return 1
        messages = view.get("messages") or []
        turns = max([turns, *(int(m.get("turn") or 0) for m in messages)])
        if len(messages) < 500 or not view.get("cursor"):
            break
        query = {"limit": "500", "after": view["cursor"]}
    print(f"status: {view.get('status')}")
    print(f"end: {json.dumps(view.get('end'), ensure_ascii=False)}")
    print(f"turns: {turns}")
    return 0


def cmd_redrive(ctx: _Context) -> int:
    from infra.fc.redrive import redrive_store

    args = ctx.args
    if args.data:
        from shared.store.disk import DiskStore

        if not os.path.isdir(os.path.join(args.data, "objects")):
            raise ConfigError(f"--data {args.data} is not a troupe data directory (no objects/ in it)")
        store = DiskStore(args.data)
        bucket, region = store.bucket, store.region
    else:
        from shared.errors import StoreError
        from shared.store.oss import OssStore

        try:
            store = OssStore.from_env(os.environ)
        except StoreError as e:
            raise ConfigError(e.message if hasattr(e, "message") else str(e)) from None
        bucket = store.bucket.bucket_name
        region = os.environ.get("TROUPE_FC_REGION", "").strip() or (ctx.functions[0].region if ctx.functions else "")
    inbox = [s.id for s in ctx.functions if any(t["prefix"] == f"inbox/{s.id}/" for t in s.oss_triggers)]

    def invoke(function_id: str, event: bytes) -> str:
        res = ctx.invoke(function_id, event, asynchronous=True)
        if not res.ok:
            raise FCError(f"answered {res.status}", res.status, res.error_type or "", res.request_id)
        return res.request_id

    if not args.dry_run:
        # fail on settings before anything in the store is touched
        ctx.invoker(ctx.resolve(ctx.functions[0].id)[1] if ctx.functions else None)
    report = redrive_store(store, invoke, inbox_functions=inbox, bucket=bucket, region=region,
                           account=os.environ.get("ALIBABA_CLOUD_ACCOUNT_ID", "").strip(),
                           function=args.function, conversation=args.conversation, dry_run=args.dry_run,
                           out=lambda line: print(line, flush=True))
    return 1 if report["failed"] else 0


def cmd_publish_layer(ctx: _Context, client=None) -> int:
    """CreateLayerVersion (2023-03-30) with the zip inline, for FC's python3.10 runtime."""
    import base64

    from alibabacloud_fc20230330 import models

    args = ctx.args
    try:
        with open(args.zip, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {args.zip}: {e.strerror}; run make package first") from None
    if len(data) > 100 * 1024 * 1024:
        raise ConfigError(f"{args.zip} is over the API's 100 MB limit")
    if client is None:
        region = os.environ.get("TROUPE_FC_REGION", "").strip() or (ctx.functions[0].region if ctx.functions else None)
        invoker = ctx.invoker(region)
        if not hasattr(invoker, "client"):
            raise ConfigError("publish-layer uses the FC 3.0 API: --sdk fc3")
        client = invoker.client
    request = models.CreateLayerVersionRequest(body=models.CreateLayerVersionInput(
        code=models.InputCodeLocation(zip_file=base64.b64encode(data).decode("ascii")),
        compatible_runtime=["python3.10"], description="troupe: dependencies and shared/ (make package)"))
    from Tea.exceptions import TeaException

    from infra.fc.client import _tea_error

    try:
        res = client.create_layer_version(args.name, request)
    except TeaException as e:
        raise _tea_error(e) from None
    arn = getattr(res.body, "layer_version_arn", None) or ""
    print(f"published {args.name} version {getattr(res.body, 'version', '?')}: {arn}")
    print("s.yaml's vars.layer must name this version before s deploy")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        ctx = _Context(args)
        return {"invoke": cmd_invoke, "status": cmd_status, "redrive": cmd_redrive,
                "publish-layer": cmd_publish_layer}[args.command](ctx)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
