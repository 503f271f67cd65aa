"""Handing a throttled turn back to FC, to run again later: a delayed invocation of the same function.

An invocation whose LLM call the model's rate limit still turns away after it has waited its
share of the function's timeout (shared.runner.THROTTLE_SHARE) neither fails the turn nor
spends FC's error retries on it (3 by default, gone within seconds). It asks FC to invoke the
same function again, asynchronously and after a delay (InvokeFunction with `x-fc-async-delay`,
0 to 3600 s), with a small event naming the delivery, and then ends without an error.

The later invocation is a new one, with all of FC's retries: it replays the turn's journaled
LLM calls and claims the throttled one again (a turn is handed back only once this invocation
has given its claim on the call back), so the call is still paid once and the turn committed once. A turn goes on being handed back while its
conversation is within its `max_seconds`; past that the conversation stops on its time limit,
as it would have without the throttling.

The delayed invocation goes through alibabacloud-fc20230330 (FC 3.0's API), signed with the
function's credentials (FC: the function role's STS credentials in `context.credentials`; the
local runtime: its invoke API's key), at TROUPE_FC_ENDPOINT or FC's internal endpoint
https://<account>.<region>-internal.fc.aliyuncs.com.
"""

from __future__ import annotations

import json
import os
import random
from urllib.parse import urlsplit

from shared.errors import BadRequest

EVENT = "troupe_handback"
"""The one field of a hand-back event: {"troupe_handback": {"key", "attempt", "first", "due"}}."""
MAX_DELAY = 3600
"""The longest x-fc-async-delay FC accepts, in seconds."""
BASE, CAP = 10.0, 300.0
"""seconds: the k-th hand-back waits about base × 2^(k-1) (at most cap), or what Retry-After says"""
TIMEOUT_MS = 10_000


def event(key: str, attempt: int, first: float, due: float) -> bytes:
    """The event of the `attempt`-th hand-back of the delivery at `key`, first handed back at
    `first`, to run at `due` (epoch seconds)."""
    return json.dumps({EVENT: {"key": key, "attempt": attempt, "first": round(first, 3),
                               "due": round(due, 3)}}).encode("utf-8")


def read(data) -> dict | None:
    """The hand-back an event carries ({key, attempt, first, due}), None if it is not one; BadRequest if
    it is one and malformed (the key itself is checked as any delivery key is)."""
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(data, dict) or EVENT not in data:
        return None
    body = data[EVENT]
    if not isinstance(body, dict) or set(body) != {"key", "attempt", "first", "due"}:
        raise BadRequest(f"{EVENT} must be an object with key, attempt, first and due")
    key, attempt, first, due = body["key"], body["attempt"], body["first"], body["due"]
    if not isinstance(key, str) or not 0 < len(key) <= 1024:
        raise BadRequest(f"{EVENT}.key must be a delivery key")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or not 1 <= attempt <= 1_000_000:
        raise BadRequest(f"{EVENT}.attempt must be a positive integer")
    for name, value in (("first", first), ("due", due)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise BadRequest(f"{EVENT}.{name} must be a time in epoch seconds")
    return {"key": key, "attempt": attempt, "first": float(first), "due": float(due)}


def delay(attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Seconds before the `attempt`-th hand-back runs (shared.llm.errors.backoff), within what FC takes."""
    from shared.llm.errors import backoff

    return min(float(MAX_DELAY), max(1.0, backoff(attempt, retry_after, rng, BASE, CAP)))


class FCHandback:
    """Invokes one function asynchronously after a delay, through FC 3.0's InvokeFunction."""

    def __init__(self, function: str, endpoint: str, access_key_id: str, access_key_secret: str,
                 security_token: str = "", region: str | None = None, qualifier: str | None = None):
        self.function, self.endpoint = function, endpoint
        self.qualifier = qualifier if qualifier and qualifier != "LATEST" else None
        """the version or alias this invocation runs, so the hand-back runs the same code"""
        self._auth = (access_key_id, access_key_secret, security_token or None, region)
        self._client = None

    def __call__(self, payload: bytes, delay_s: float) -> str:
        """Queue `payload` for the function in `delay_s` seconds; FC's request id for it."""
        from alibabacloud_fc20230330 import models
        from darabonba.runtime import RuntimeOptions

        res = self.client().invoke_function_with_options(
            self.function, models.InvokeFunctionRequest(body=payload, qualifier=self.qualifier),
            models.InvokeFunctionHeaders(x_fc_invocation_type="Async",
                                         common_headers={"x-fc-async-delay": str(int(round(delay_s)))}),
            RuntimeOptions(autoretry=False, read_timeout=TIMEOUT_MS, connect_timeout=TIMEOUT_MS))
        headers = {k.lower(): v for k, v in (res.headers or {}).items()}
        return str(headers.get("x-fc-request-id", ""))

    def client(self):
        if self._client is None:  # imported and built on the first hand-back only: a rare path
            from alibabacloud_fc20230330.client import Client
            from alibabacloud_tea_openapi import utils_models

            key_id, secret, token, region = self._auth
            parts = urlsplit(self.endpoint)
            self._client = Client(utils_models.Config(
                access_key_id=key_id, access_key_secret=secret, security_token=token, endpoint=parts.netloc,
                protocol=parts.scheme or "https", region_id=region, read_timeout=TIMEOUT_MS,
                connect_timeout=TIMEOUT_MS))
        return self._client


def from_context(context, env=os.environ) -> FCHandback | None:
    """The hand-back of the function serving `context`, None where it has no credentials to sign
    with (a throttled turn then raises, and FC's error retries take it)."""
    creds = getattr(context, "credentials", None)
    key_id = getattr(creds, "access_key_id", None) or env.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = getattr(creds, "access_key_secret", None) or env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    token = getattr(creds, "security_token", None) or env.get("ALIBABA_CLOUD_SECURITY_TOKEN", "")
    function = getattr(getattr(context, "function", None), "name", None) or env.get("FC_FUNCTION_NAME")
    region = getattr(context, "region", None) or env.get("FC_REGION")
    account = getattr(context, "account_id", None) or env.get("FC_ACCOUNT_ID")
    endpoint = env.get("TROUPE_FC_ENDPOINT") or (
        f"https://{account}.{region}-internal.fc.aliyuncs.com" if account and region else "")
    qualifier = getattr(getattr(context, "function", None), "qualifier", None) or \
        getattr(getattr(context, "service", None), "qualifier", None)
    if not (key_id and secret and function and endpoint):
        return None
    return FCHandback(function, endpoint, key_id, secret, token, region,
                      qualifier if isinstance(qualifier, str) else None)
