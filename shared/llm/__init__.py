"""Which LLM a function uses, chosen by environment: TROUPE_LLM.

    (unset)           a configuration error: a function never guesses its LLM
    openai            MetaGPT's openai provider at TROUPE_LLM_BASE_URL (any OpenAI-compatible
                      endpoint, e.g. a local llama.cpp server); key TROUPE_LLM_API_KEY
    dashscope         MetaGPT's own DashScope provider (Qwen); key DASHSCOPE_API_KEY, endpoint
                      DASHSCOPE_HTTP_BASE_URL (default https://dashscope.aliyuncs.com/api/v1)
    dashscope-openai  DashScope's OpenAI-compatible endpoint through MetaGPT's openai provider;
                      key DASHSCOPE_API_KEY, endpoint TROUPE_LLM_BASE_URL (default
                      https://dashscope.aliyuncs.com/compatible-mode/v1)

The model is the scenario role's own (`model:` in the scenario) when it has one, else
TROUPE_LLM_MODEL (set per function in s.yaml), else a default (qwen-turbo for DashScope).
MetaGPT's own streaming is never used (it counts streamed tokens with tiktoken, which
downloads its tables). Every provider answers with at most TROUPE_LLM_MAX_TOKENS completion tokens (default 1024)
and a TROUPE_LLM_TIMEOUT seconds request timeout (default 60), at TROUPE_LLM_TEMPERATURE
(default 0; the local runtime gives its small embedded model 0.7, which stops it echoing).
A call MetaGPT expects JSON or code from is structured as TROUPE_LLM_JSON says (`schema`,
`json_schema`, `json_object` or `off`; default: DashScope's JSON Schema mode for the models that
have it, its JSON Object mode for the others, `off` for other OpenAI-compatible endpoints; the
local runtime sets `schema` for its llama.cpp server): see shared.llm.structured. With
TROUPE_LLM_STREAM=llama.cpp (the local runtime's model server) replies are streamed so that long
calls show their tokens so far, and counted by the server's tokenizer: see shared.llm.streaming. Keys come from the environment
only and are never logged or stored: they live in the provider's config for one invocation.
Token usage is made reliable by `shared.llm.metering.meter`.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping

from shared.errors import TroupeError

KINDS = ("openai", "dashscope", "dashscope-openai")
"""the product's own kinds; others are registered by their host (`register`)"""
DASHSCOPE_DEFAULT_MODEL = "qwen-turbo"
DASHSCOPE_HTTP_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"
DASHSCOPE_COMPATIBLE_BASE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"
DEFAULT_MAX_TOKENS = 1024
DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 600


class LLMConfigError(TroupeError):
    """The LLM is misconfigured (unknown kind, missing key, bad number): names the variable."""

    code = "LLMConfigError"


_REGISTERED: dict[str, Callable[[Mapping[str, str]], object]] = {}


def register(kind: str, factory: Callable[[Mapping[str, str]], object]) -> None:
    """A kind of LLM that is not the product's own, made by `factory(env)`: the local runtime
    and the tests register their scripted test double as `fake` (infra.testing). Nothing
    registers anything on FC, so there `TROUPE_LLM=fake` is refused as unknown."""
    _REGISTERED[kind] = factory


def llm_kind(env: Mapping[str, str] = os.environ) -> str:
    kind = (env.get("TROUPE_LLM") or "").strip().lower()
    if not kind:
        raise LLMConfigError("TROUPE_LLM is not set: name the function's LLM in its environment "
                             f"({', '.join(KINDS)}; s.yaml sets dashscope; the local runtime sets what "
                             "its --llm or TROUPE_LLM names)")
    return kind


def make_llm(env: Mapping[str, str] = os.environ, model: str | None = None):
    """A fresh MetaGPT BaseLLM for one invocation; `model` (a scenario role's own) wins."""
    import shared.mg  # noqa: F401  (pins MetaGPT's root before it is imported)

    kind = llm_kind(env)
    streamer = _streamer(env)
    if kind in _REGISTERED:
        return _REGISTERED[kind](env)
    if kind not in KINDS:
        raise LLMConfigError(f"unknown TROUPE_LLM={kind[:40]!r}: expected one of {', '.join(KINDS)}")

    from shared.llm import structured
    from shared.llm.metering import meter

    limits = {"max_token": _int_env(env, "TROUPE_LLM_MAX_TOKENS", DEFAULT_MAX_TOKENS, 1, 1_000_000),
              "timeout": _int_env(env, "TROUPE_LLM_TIMEOUT", DEFAULT_TIMEOUT, 1, MAX_TIMEOUT),
              "temperature": _float_env(env, "TROUPE_LLM_TEMPERATURE", 0.0, 0.0, 2.0)}
    if kind == "openai":
        base_url = _url(env, "TROUPE_LLM_BASE_URL", None, kind)
        chosen = _model(model, env, "default")
        llm = _openai(base_url, env.get("TROUPE_LLM_API_KEY") or "none", chosen, limits)
        if streamer == "llama.cpp":
            from shared.llm.streaming import stream_counted

            stream_counted(llm, base_url)
        llm.key_variable = "TROUPE_LLM_API_KEY"  # what a refused key names (shared.llm.errors)
        return structured.adapt(meter(llm), _json_mode(env, kind, chosen))

    from metagpt.utils.token_counter import DASHSCOPE_TOKEN_COSTS

    key = _dashscope_key(env, kind)
    chosen = _model(model, env, DASHSCOPE_DEFAULT_MODEL)
    if kind == "dashscope-openai":
        base_url = _url(env, "TROUPE_LLM_BASE_URL", DASHSCOPE_COMPATIBLE_BASE_URL, kind)
        llm = meter(_openai(base_url, key, chosen, limits), token_costs=DASHSCOPE_TOKEN_COSTS)
    else:
        base_url = _url(env, "DASHSCOPE_HTTP_BASE_URL", DASHSCOPE_HTTP_BASE_URL, kind)
        llm = meter(_dashscope(base_url, key, chosen, limits), token_costs=DASHSCOPE_TOKEN_COSTS)
    llm.key_variable = "DASHSCOPE_API_KEY"
    return structured.adapt(llm, _json_mode(env, kind, chosen))


def _streamer(env: Mapping[str, str]) -> str:
    """TROUPE_LLM_STREAM: `llama.cpp` streams replies (tokens so far for progress), else `off`."""
    from shared.llm.streaming import STREAMERS

    value = (env.get("TROUPE_LLM_STREAM") or "off").strip().lower()
    if value not in STREAMERS:
        raise LLMConfigError(f"TROUPE_LLM_STREAM must be one of {', '.join(STREAMERS)}")
    return value


def _json_mode(env: Mapping[str, str], kind: str, model: str) -> str:
    """TROUPE_LLM_JSON, else what the provider supports (shared.llm.structured)."""
    from shared.llm import structured

    mode = (env.get("TROUPE_LLM_JSON") or "").strip().lower() or structured.default_mode(kind, model)
    if mode not in structured.MODES:
        raise LLMConfigError(f"TROUPE_LLM_JSON must be one of {', '.join(structured.MODES)}")
    return mode


# -- providers ------------------------------------------------------------------------------


def _openai(base_url: str, key: str, model: str, limits: dict):
    from metagpt.configs.llm_config import LLMConfig
    from metagpt.provider.llm_provider_registry import create_llm_instance

    cfg = LLMConfig(api_type="openai", base_url=base_url, api_key=key, model=model, stream=False, **limits)
    return create_llm_instance(cfg)


def _dashscope(base_url: str, key: str, model: str, limits: dict):
    """MetaGPT's DashScopeLLM, told what its `_const_kwargs` leaves out.

    MetaGPT 0.8.2's provider sends neither `max_tokens` nor a request timeout (the config's
    max_token and timeout are ignored, dashscope_api.py `_const_kwargs`), and the dashscope SDK
    takes its endpoint from the process-wide `dashscope.base_http_api_url`, read from
    DASHSCOPE_HTTP_BASE_URL once, when the SDK is imported. The SDK also accepts all three per
    call (`max_tokens` as a parameter, `request_timeout`, `base_address`), so they are added to
    this instance's request arguments: the endpoint named in `env` now is the one called, and
    nothing process-wide changes.
    """
    from metagpt.configs.llm_config import LLMConfig
    from metagpt.provider.llm_provider_registry import create_llm_instance

    cfg = LLMConfig(api_type="dashscope", api_key=key, model=model, stream=False, **limits)
    llm = create_llm_instance(cfg)
    # MetaGPT sends a system message only for model names containing "qwen-" (and a few
    # others): qwen2.5-*, qwen3-*, qwq-* would silently lose the role's system prompt
    llm.use_system_prompt = cfg.use_system_prompt
    const_kwargs = llm._const_kwargs

    def _const_kwargs(messages: list[dict], stream: bool = False) -> dict:
        kwargs = const_kwargs(messages, stream=stream)
        kwargs.update(max_tokens=cfg.max_token, request_timeout=cfg.timeout, base_address=base_url)
        return kwargs

    llm._const_kwargs = _const_kwargs
    return llm


# -- environment ----------------------------------------------------------------------------


def _model(model: str | None, env: Mapping[str, str], default: str) -> str:
    return (model or "").strip() or (env.get("TROUPE_LLM_MODEL") or "").strip() or default


def _dashscope_key(env: Mapping[str, str], kind: str) -> str:
    key = (env.get("DASHSCOPE_API_KEY") or "").strip()
    if not key:
        raise LLMConfigError(
            f"TROUPE_LLM={kind} needs a DashScope API key: set DASHSCOPE_API_KEY in the function's "
            "environment (Model Studio / 百炼 console → API-KEY), or, on the local runtime, use "
            "TROUPE_LLM=local (the embedded model) to run without a key")
    return key


def _url(env: Mapping[str, str], name: str, default: str | None, kind: str) -> str:
    value = (env.get(name) or "").strip() or default
    if not value:
        raise LLMConfigError(f"TROUPE_LLM={kind} needs {name}: the endpoint's base URL, e.g. http://127.0.0.1:8080/v1")
    if not value.startswith(("http://", "https://")):
        raise LLMConfigError(f"{name} must be an http:// or https:// URL")
    return value


def _num_env(env: Mapping[str, str], name: str, default, low, high, kind=int):
    """A number from the environment, within [low, high], else a clear LLMConfigError."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        what = "an integer" if kind is int else "a number"
        raise LLMConfigError(f"{name} must be {what} between {low} and {high}")
    return value


def _int_env(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _num_env(env, name, default, low, high, int)


def _float_env(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _num_env(env, name, default, low, high, float)
