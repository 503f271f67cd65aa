"""The cloud LLM path: make_llm's kinds over HTTP, against local endpoints in the wire formats.

MetaGPT's own providers run unchanged (DashScopeLLM over the dashscope SDK and aiohttp,
OpenAILLM over the openai SDK and httpx); only the endpoints are local (tests/llm_endpoints.py).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os

import pytest

from shared.errors import TroupeError
from shared.llm import LLMConfigError, make_llm
from shared.llm.metering import meter, normalise_usage
from tests.llm_endpoints import DashScopeEndpoint, OpenAIEndpoint

KEY = "test-key"


@pytest.fixture
def dashscope_endpoint():
    with DashScopeEndpoint(key=KEY) as ep:
        yield ep


@pytest.fixture
def openai_endpoint():
    with OpenAIEndpoint(key=KEY) as ep:
        yield ep


def _dashscope_env(ep: DashScopeEndpoint, **extra) -> dict:
    return {"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": ep.base_url, **extra}


def _ask(llm, text="hi") -> str:
    return asyncio.run(llm.aask(text))


# -- each kind, one call ------------------------------------------------------------------------


def test_dashscope_kind_is_metagpts_provider_and_counts_tokens(dashscope_endpoint):
    # GIVEN TROUPE_LLM=dashscope, a key, and the endpoint named only in the env passed to make_llm
    import dashscope
    from metagpt.provider.dashscope_api import DashScopeLLM

    dashscope_endpoint.script = ["Cars out, trees in."]
    sdk_default = dashscope.base_http_api_url
    llm = make_llm(_dashscope_env(dashscope_endpoint))
    # WHEN it is asked once
    text = _ask(llm, "hi")
    # THEN it is MetaGPT's DashScopeLLM, the reply is the endpoint's, and the model is the default
    assert type(llm) is DashScopeLLM
    assert text == "Cars out, trees in."
    assert llm.model == "qwen-turbo"
    (req,) = dashscope_endpoint.requests
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.model == "qwen-turbo"
    assert req.messages[-1] == {"role": "user", "content": "hi"}
    assert req.body["parameters"]["result_format"] == "message"
    # the tokens DashScope reported (input_tokens/output_tokens) reach the cost manager
    assert llm.cost_manager.total_prompt_tokens == req.usage["prompt_tokens"] > 0
    assert llm.cost_manager.total_completion_tokens == req.usage["completion_tokens"] > 0
    assert llm.last_usage == {**req.usage, "total_tokens": sum(req.usage.values())}
    assert llm.cost_manager.total_cost > 0  # qwen-turbo is in MetaGPT's DashScope price table
    # and the SDK's process-wide endpoint was not touched
    assert dashscope.base_http_api_url == sdk_default


def test_metagpt_alone_loses_dashscope_tokens(dashscope_endpoint):
    # GIVEN MetaGPT's DashScopeLLM built directly, without troupe's metering
    from metagpt.configs.llm_config import LLMConfig
    from metagpt.provider.llm_provider_registry import create_llm_instance

    bare = create_llm_instance(LLMConfig(api_type="dashscope", api_key=KEY, model="qwen-turbo", stream=False))
    bare._const_kwargs = _with_base(bare, dashscope_endpoint.base_url)  # the endpoint only
    # WHEN it is asked once
    _ask(bare)
    # THEN it counted nothing: it passes input_tokens/output_tokens to a method that reads
    # prompt_tokens/completion_tokens (the reason meter() exists; if this fails, MetaGPT fixed it)
    assert dashscope_endpoint.requests[-1].usage["prompt_tokens"] > 0
    assert (bare.cost_manager.total_prompt_tokens, bare.cost_manager.total_completion_tokens) == (0, 0)


def _with_base(llm, base_url):
    inner = llm._const_kwargs

    def const_kwargs(messages, stream=False):
        return {**inner(messages, stream=stream), "base_address": base_url}

    return const_kwargs


@pytest.mark.parametrize("kind", ["dashscope-openai", "openai"])
def test_openai_format_kinds_count_tokens(openai_endpoint, kind):
    # GIVEN an OpenAI-compatible endpoint: DashScope's compatible mode, or any (llama.cpp...)
    from metagpt.provider.openai_api import OpenAILLM

    openai_endpoint.script = ["Bikes win."]
    if kind == "dashscope-openai":
        env = {"TROUPE_LLM": kind, "DASHSCOPE_API_KEY": KEY, "TROUPE_LLM_BASE_URL": openai_endpoint.compatible_base_url}
        path, model = "/compatible-mode/v1/chat/completions", "qwen-turbo"
    else:
        env = {"TROUPE_LLM": kind, "TROUPE_LLM_API_KEY": KEY, "TROUPE_LLM_BASE_URL": openai_endpoint.base_url,
               "TROUPE_LLM_MODEL": "qwen2.5-coder-1.5b"}
        path, model = "/v1/chat/completions", "qwen2.5-coder-1.5b"
    llm = make_llm(env)
    # WHEN it is asked once
    text = _ask(llm, "hi")
    # THEN MetaGPT's openai provider called the endpoint with the key and the model, without streaming
    assert type(llm) is OpenAILLM
    assert text == "Bikes win."
    (req,) = openai_endpoint.requests
    assert req.path == path
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.model == model == llm.model
    assert not req.body.get("stream")
    assert req.body["max_tokens"] == 1024
    # and the reported tokens reached a cost manager (MetaGPT's OpenAILLM has none of its own),
    # also for a model name missing from MetaGPT's price tables
    assert llm.cost_manager.total_prompt_tokens == req.usage["prompt_tokens"] > 0
    assert llm.cost_manager.total_completion_tokens == req.usage["completion_tokens"] > 0
    assert llm.last_usage["total_tokens"] == sum(req.usage.values())


def test_dashscope_kinds_default_to_dashscopes_endpoints():
    # GIVEN both DashScope kinds with a key and no endpoint in their environment
    compat = make_llm({"TROUPE_LLM": "dashscope-openai", "DASHSCOPE_API_KEY": KEY})
    native = make_llm({"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": KEY})
    # THEN they point at DashScope's own endpoints, with qwen-turbo, not streaming (nothing is called)
    assert compat.config.base_url == "https://dashscope.aliyuncs.com/compatible-mode/v1"
    assert native._const_kwargs([])["base_address"] == "https://dashscope.aliyuncs.com/api/v1"
    assert compat.model == native.model == "qwen-turbo"
    assert compat.config.stream is native.config.stream is False


def test_limits_reach_the_request(dashscope_endpoint, openai_endpoint):
    # GIVEN a smaller completion budget and a timeout in the environment
    extra = {"TROUPE_LLM_MAX_TOKENS": "256", "TROUPE_LLM_TIMEOUT": "30"}
    ds = make_llm(_dashscope_env(dashscope_endpoint, **extra))
    oa = make_llm({"TROUPE_LLM": "dashscope-openai", "DASHSCOPE_API_KEY": KEY,
                   "TROUPE_LLM_BASE_URL": openai_endpoint.compatible_base_url, **extra})
    # WHEN each is asked once
    _ask(ds)
    _ask(oa)
    # THEN both requests carry max_tokens (MetaGPT's DashScopeLLM alone sends none) and the
    # timeout is the configured one
    assert dashscope_endpoint.requests[0].body["parameters"]["max_tokens"] == 256
    assert openai_endpoint.requests[0].body["max_tokens"] == 256
    assert ds._const_kwargs([])["request_timeout"] == 30
    assert oa.config.timeout == 30


def test_model_precedence():
    # GIVEN TROUPE_LLM_MODEL set for the function
    env = {"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": KEY, "TROUPE_LLM_MODEL": "qwen-plus"}
    # THEN a role's own model wins, else the function's, else qwen-turbo
    assert make_llm(env, model="qwen-max").model == "qwen-max"
    assert make_llm(env).model == "qwen-plus"
    assert make_llm({k: v for k, v in env.items() if k != "TROUPE_LLM_MODEL"}).model == "qwen-turbo"


def test_dashscope_sends_the_system_prompt_for_every_qwen_model(dashscope_endpoint):
    # GIVEN a model MetaGPT's "qwen-" substring check misses
    llm = make_llm(_dashscope_env(dashscope_endpoint), model="qwen2.5-7b-instruct")
    llm.system_prompt = "You are a judge, named Judge."
    # WHEN asked
    _ask(llm)
    # THEN the system prompt went out (MetaGPT alone would drop it for this name)
    assert dashscope_endpoint.requests[0].messages[0] == {"role": "system", "content": "You are a judge, named Judge."}


def test_meter_normalises_and_is_idempotent():
    # GIVEN usages in DashScope's and OpenAI's shapes
    from openai.types import CompletionUsage

    # THEN both normalise to the OpenAI names
    assert normalise_usage({"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}) == \
        {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert normalise_usage(CompletionUsage(prompt_tokens=5, completion_tokens=2, total_tokens=7)) == \
        {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert normalise_usage(None) == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    # and metering twice counts once
    llm = make_llm({"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": KEY})
    assert meter(llm) is llm
    llm._update_costs({"input_tokens": 7, "output_tokens": 3})
    assert (llm.cost_manager.total_prompt_tokens, llm.cost_manager.total_completion_tokens) == (7, 3)


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dashscope", "dashscope-openai"])
def test_missing_key_is_a_clear_error(kind):
    # GIVEN a DashScope kind and no DASHSCOPE_API_KEY (another key name does not count)
    env = {"TROUPE_LLM": kind, "TROUPE_LLM_API_KEY": "sk-other"}
    # WHEN the LLM is made
    with pytest.raises(TroupeError) as err:
        make_llm(env)
    # THEN the message says what to set and how to run without a key, in one plain sentence
    msg = err.value.message
    assert "DASHSCOPE_API_KEY" in msg and "TROUPE_LLM=local" in msg
    assert "Traceback" not in msg and "\n" not in msg and "sk-other" not in msg


def test_unknown_kind_lists_the_kinds():
    # WHEN TROUPE_LLM names no known kind
    with pytest.raises(TroupeError) as err:
        make_llm({"TROUPE_LLM": "gpt-5"})
    # THEN the error lists the valid ones
    for kind in ("openai", "dashscope", "dashscope-openai"):
        assert kind in err.value.message


def test_a_function_with_no_llm_configured_is_refused_not_given_a_test_double():
    # GIVEN a function's environment without TROUPE_LLM
    with pytest.raises(LLMConfigError) as err:
        make_llm({"DASHSCOPE_API_KEY": KEY})
    # THEN it is a configuration error naming the variable and the kinds
    assert "TROUPE_LLM is not set" in err.value.message and "dashscope" in err.value.message


@pytest.mark.parametrize("env, names", [
    ({"TROUPE_LLM": "openai"}, "TROUPE_LLM_BASE_URL"),
    ({"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": KEY, "TROUPE_LLM_MAX_TOKENS": "lots"}, "TROUPE_LLM_MAX_TOKENS"),
    ({"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": KEY, "TROUPE_LLM_TIMEOUT": "0"}, "TROUPE_LLM_TIMEOUT"),
    ({"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": "ftp://x"},
     "DASHSCOPE_HTTP_BASE_URL"),
])
def test_bad_settings_name_the_variable(env, names):
    with pytest.raises(TroupeError) as err:
        make_llm(env)
    assert names in err.value.message


def test_wrong_key_fails_without_echoing_it(dashscope_endpoint):
    # GIVEN a key the endpoint refuses
    llm = make_llm(_dashscope_env(dashscope_endpoint, DASHSCOPE_API_KEY="wrong-secret"))
    # WHEN asked
    with pytest.raises(Exception) as err:
        _ask(llm)
    # THEN the error carries DashScope's code, not the key
    assert "InvalidApiKey" in str(err.value)
    assert "wrong-secret" not in str(err.value)
    assert dashscope_endpoint.requests[0].status == 401


def test_keys_are_not_logged(dashscope_endpoint, openai_endpoint, caplog):
    # GIVEN every log at DEBUG: MetaGPT's loguru logger and the stdlib loggers (dashscope, openai, httpx)
    from metagpt.logs import logger as mg_logger

    buf = io.StringIO()
    sink = mg_logger.add(buf, level="DEBUG")
    caplog.set_level(logging.DEBUG)
    try:
        # WHEN each cloud kind is made and asked
        _ask(make_llm(_dashscope_env(dashscope_endpoint)))
        _ask(make_llm({"TROUPE_LLM": "dashscope-openai", "DASHSCOPE_API_KEY": KEY,
                       "TROUPE_LLM_BASE_URL": openai_endpoint.compatible_base_url}))
    finally:
        mg_logger.remove(sink)
    # THEN the key appears in no log line
    assert buf.getvalue() and caplog.text
    assert KEY not in buf.getvalue()
    assert KEY not in caplog.text


# -- a whole debate on MetaGPT's DashScope provider --------------------------------------------


def _debate(tmp_path, env, scenario="debate"):
    from infra.testing.harness import Harness

    h = Harness(str(tmp_path / "data"), llm_factory=lambda model=None: make_llm(env, model=model))
    cid = h.start(scenario, "Should cities ban cars?", max_turns=3)
    h.pump()
    return h, cid


def test_debate_turns_run_on_metagpts_dashscope_provider(tmp_path, dashscope_endpoint):
    # GIVEN the persona function's LLM is MetaGPT's DashScope provider, talking HTTP to the endpoint
    dashscope_endpoint.script = ["Cars choke our streets.", "Cars carry our commerce.", "The motion carries."]
    env = _dashscope_env(dashscope_endpoint)
    # WHEN a three-turn debate (two debaters, then the judge) runs through the real runner
    h, cid = _debate(tmp_path, env)
    # THEN each turn is the endpoint's reply, spoken by the character whose system prompt it got
    t = h.transcript(cid)
    assert [m["role"] for m in t] == ["user", "Proponent", "Opponent", "Judge"]
    assert [m["content"] for m in t[1:]] == ["Cars choke our streets.", "Cars carry our commerce.", "The motion carries."]
    reqs = dashscope_endpoint.requests
    assert len(reqs) == 3
    assert reqs[0].messages[0]["role"] == "system" and "named Proponent" in reqs[0].system
    assert reqs[1].messages[0]["role"] == "system" and "named Opponent" in reqs[1].system
    assert all(r.headers["authorization"] == f"Bearer {KEY}" and r.model == "qwen-turbo" for r in reqs)
    # and each committed turn's invocation carries the tokens the endpoint reported
    for msg, req in zip(t[1:], reqs):
        inv = msg["invocation"]
        assert inv["usage"]["prompt_tokens"] == req.usage["prompt_tokens"] > 0
        assert inv["usage"]["completion_tokens"] == req.usage["completion_tokens"] > 0
        assert inv["llm_paid"] == 1
        assert inv["llm_cny"] > 0 and inv["model"] == "qwen-turbo"  # qwen-turbo is priced
    assert h.convs.get_end(cid)["status"] == "completed"


def test_api_key_never_reaches_the_store(tmp_path, dashscope_endpoint):
    # GIVEN a debate run on the DashScope provider with a key
    _debate(tmp_path, _dashscope_env(dashscope_endpoint))
    # WHEN every object and spool file under the data directory is read
    found, files = [], 0
    for root, _dirs, names in os.walk(tmp_path / "data"):
        for name in names:
            files += 1
            with open(os.path.join(root, name), "rb") as f:
                if KEY.encode() in f.read():
                    found.append(os.path.join(root, name))
    # THEN none contains the key
    assert files > 5
    assert found == []


def test_role_model_overrides_the_functions(tmp_path, dashscope_endpoint, monkeypatch):
    # GIVEN a debate whose Proponent has its own model, and a function default model
    from shared import scenarios

    spec = scenarios.builtin()["debate"]
    roles = [{**r, "model": "qwen-max"} if r["name"] == "Proponent" else r for r in spec["roles"]]
    custom = scenarios.validate_scenario({**spec, "id": "debate-max", "roles": roles})
    monkeypatch.setitem(scenarios.builtin(), "debate-max", custom)
    env = _dashscope_env(dashscope_endpoint, TROUPE_LLM_MODEL="qwen-plus")
    # WHEN it runs two turns
    h, cid = _debate(tmp_path, env, scenario="debate-max")
    # THEN the Proponent's request names qwen-max and the Opponent's the function's qwen-plus
    reqs = dashscope_endpoint.requests
    assert [(r.model, "named Proponent" in r.system) for r in reqs] == [
        ("qwen-max", True), ("qwen-plus", False), ("qwen-plus", False)]
    # and the journal records which model answered
    journal = [h.convs.journal_get(cid, *_journal_key(h, cid, m)) for m in h.transcript(cid)[1:]]
    assert [j["model"] for j in journal] == ["qwen-max", "qwen-plus", "qwen-plus"]


def _journal_key(h, cid, msg):
    """(trigger, n) of a committed turn's first LLM call: the delivery id from its trigger key."""
    _cid, _turn, delivery = h.convs.parse_delivery_key(msg["function"], msg["invocation"]["trigger"])
    return delivery, 0
