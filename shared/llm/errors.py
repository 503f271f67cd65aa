"""What an LLM error means, whichever provider raised it: DashScope's native API (through
MetaGPT's DashScopeLLM and the dashscope SDK), DashScope's OpenAI-compatible mode and any
OpenAI-compatible endpoint (through the openai SDK).

  throttled   the model's rate limit or quota (HTTP 429, DashScope `Throttling*`): try later
  transient   5xx, timeouts, a connection that failed: try again
  permanent   the request itself is refused (invalid, over the context, a content policy):
              trying again gets the same answer, so the conversation ends naming role and step
  config      the key is missing, wrong or not allowed: a deployer must set a variable

`classify` walks an error's causes (MetaGPT and tenacity wrap the provider's error) and
returns None when none of them is an LLM error.
"""

from __future__ import annotations

import dataclasses
import random
import re

THROTTLED, TRANSIENT, PERMANENT, CONFIG = "throttled", "transient", "permanent", "config"

#: DashScope's error codes (its native API's `code`, and the compatible mode's `error.code`)
_DASHSCOPE_CODES = [
    (re.compile(r"^Throttling|^RequestLimitExceeded"), THROTTLED, "the model's rate limit or quota"),
    # an overdue payment: no waiting clears it, the account's owner must top it up
    (re.compile(r"^Arrearage"), CONFIG, "the model provider refused the account: it has an overdue payment "
                                        "(Arrearage); top up the Alibaba Cloud account"),
    # an OpenAI-compatible key whose quota or billing limit is used up: no waiting clears it either
    (re.compile(r"^(insufficient_quota|billing_hard_limit_reached)"), CONFIG,
     "the model provider's quota or billing limit for this key is used up; raise it or use another key"),
    (re.compile(r"^(InvalidApiKey|AccessDenied|Unauthorized|invalid_api_key)"), CONFIG, ""),  # "": _config names the variable
    (re.compile(r"^(DataInspectionFailed|data_inspection_failed)"), PERMANENT,
     "the model's content policy refused the request"),
    (re.compile(r"^(InternalError|ServiceUnavailable|RequestTimeOut|SystemError)"), TRANSIENT, "the model service failed"),
    (re.compile(r"^(InvalidParameter|invalid_parameter_error|BadRequest|ModelNotFound|model_not_found)"), PERMANENT,
     "the model refused the request"),
]
_CONTEXT = re.compile(r"context length|context_length|maximum context|Range of input length|too long|"
                      r"exceeds? the (model's )?(maximum|context)", re.I)
_NATIVE = re.compile(r"code: (?P<code>[\w.]+), request_id: \S*, message: (?P<message>.*)", re.S)


@dataclasses.dataclass(frozen=True)
class LLMError:
    kind: str
    reason: str
    retry_after: float | None = None
    """seconds the provider asked to wait (Retry-After), when it said"""


def classify(error: BaseException, key_variable: str | None = None) -> LLMError | None:
    """What `error` (or what caused it) means for the turn; None if it is no LLM error.
    `key_variable` is what a refused key names (the provider's: shared.llm.make_llm sets it)."""
    for e in causes(error):
        found = _one(e, key_variable or "the LLM's API key variable")
        if found is not None:
            return found
    return None


def _one(e: BaseException, key_variable: str) -> LLMError | None:
    module = type(e).__module__.split(".")[0]
    if module == "openai":
        return _openai(e, key_variable)
    if module in ("httpx", "aiohttp", "requests") or isinstance(e, (TimeoutError, ConnectionError)):
        return LLMError(TRANSIENT, f"the model could not be reached ({type(e).__name__})")
    m = _NATIVE.match(str(e)) if type(e) is RuntimeError else None
    if m:  # MetaGPT's DashScopeLLM: RuntimeError("code: ..., request_id: ..., message: ...")
        return _coded(m.group("code"), m.group("message").strip(), None, key_variable)
    return None


def _openai(e: BaseException, key_variable: str) -> LLMError:
    name = type(e).__name__
    status = getattr(e, "status_code", None)
    body = getattr(e, "body", None)
    code = (body or {}).get("code") if isinstance(body, dict) else None
    message = (body or {}).get("message") if isinstance(body, dict) else None
    message = str(message or getattr(e, "message", "") or e)
    if name in ("APITimeoutError", "APIConnectionError"):
        return LLMError(TRANSIENT, f"the model could not be reached ({name})")
    retry_after = _retry_after(getattr(e, "response", None))
    if code:
        coded = _coded(str(code), message, retry_after, key_variable, status)
        if coded is not None:
            return coded
    if status == 429:
        return LLMError(THROTTLED, "the model's rate limit or quota", retry_after)
    if status in (401, 403):
        return _config(key_variable)
    if status is not None and status >= 500:
        return LLMError(TRANSIENT, f"the model service failed (HTTP {status})", retry_after)
    if status is not None and 400 <= status < 500:
        return _permanent(message)
    return LLMError(TRANSIENT, f"the model call failed ({name})")


def _coded(code: str, message: str, retry_after: float | None, key_variable: str,
           status: int | None = None) -> LLMError | None:
    for pattern, kind, what in _DASHSCOPE_CODES:
        if pattern.search(code):
            if kind == CONFIG:
                return LLMError(CONFIG, what) if what else _config(key_variable)
            if kind == PERMANENT:
                return _permanent(message, what)
            return LLMError(kind, what, retry_after)
    if code in ("context_length_exceeded", "string_above_max_length") or _CONTEXT.search(message):
        return _permanent(message)
    if status == 429:
        return LLMError(THROTTLED, "the model's rate limit or quota", retry_after)
    return None


def _permanent(message: str, what: str = "the model refused the request") -> LLMError:
    if _CONTEXT.search(message or ""):
        what = "the prompt is longer than the model's context"
    detail = " ".join((message or "").split())[:200]
    return LLMError(PERMANENT, f"{what}: {detail}" if detail else what)


def _config(key_variable: str) -> LLMError:
    return LLMError(CONFIG, f"the model refused its API key: set {key_variable} in the function's environment "
                            "to a key this model accepts")


def _retry_after(response) -> float | None:
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def backoff(attempt: int, retry_after: float | None, rng: random.Random, base: float, cap: float) -> float:
    """Seconds to wait before the `attempt`-th try after the rate limit turned one away: what
    Retry-After asks plus up to a tenth more, else about base × 2^(attempt-1) (at most cap) with
    full jitter, so that throttled callers spread out."""
    if retry_after is not None:
        return retry_after + rng.uniform(0, max(0.1, retry_after / 10))
    return rng.uniform(base / 2, min(cap, base * 2 ** (attempt - 1)))


def causes(error: BaseException) -> list[BaseException]:
    """The error and what caused it: MetaGPT re-raises a role's error as a plain Exception,
    tenacity wraps the last attempt's."""
    out, seen, todo = [], set(), [error]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        last = getattr(e, "last_attempt", None)
        if last is not None and getattr(last, "failed", False):
            todo.append(last.exception())
        todo += [e.__cause__, e.__context__]
    return out
