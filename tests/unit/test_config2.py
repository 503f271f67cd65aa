"""MetaGPT's config2.yaml as a source of LLM settings; troupe's variables win."""

from __future__ import annotations

import argparse

import pytest

from shared.llm import LLMConfigError, config2


def _write(tmp_path, text: str) -> dict:
    f = tmp_path / "config2.yaml"
    f.write_text(text, encoding="utf-8")
    return {"TROUPE_METAGPT_CONFIG": str(f)}


def test_an_openai_compatible_llm_section_becomes_troupes_variables(tmp_path):
    env = _write(tmp_path, "llm:\n  api_type: openai\n  model: gpt-4o-mini\n  base_url: http://127.0.0.1:8080/v1\n"
                           "  api_key: sk-test\n  max_token: 900\n  temperature: 0.2\n")
    assert config2.settings(env) == {"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": "http://127.0.0.1:8080/v1",
                                     "TROUPE_LLM_API_KEY": "sk-test", "TROUPE_LLM_MODEL": "gpt-4o-mini",
                                     "TROUPE_LLM_MAX_TOKENS": "900", "TROUPE_LLM_TEMPERATURE": "0.2"}


def test_dashscope_and_the_environment_winning_key_by_key(tmp_path):
    env = _write(tmp_path, "llm:\n  api_type: dashscope\n  model: qwen-max\n  api_key: k1\n")
    env["TROUPE_LLM_MODEL"] = "qwen-plus"
    assert config2.settings(env) == {"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": "k1"}


@pytest.mark.parametrize("text,says", [("llm:\n  api_type: zhipuai\n", "zhipuai"), ("other: 1\n", "no `llm:`"),
                                       ("llm: [\n", "YAML")])
def test_a_config_troupe_cannot_use_is_named(tmp_path, text, says):
    with pytest.raises(LLMConfigError, match=says):
        config2.settings(_write(tmp_path, text))


def test_no_file_no_settings_and_a_missing_named_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config2.path({}) is None and config2.settings({}) == {}
    with pytest.raises(LLMConfigError, match="not a file"):
        config2.path({"TROUPE_METAGPT_CONFIG": str(tmp_path / "nope.yaml")})


def test_the_local_run_uses_it_only_when_troupe_llm_is_unset(tmp_path, monkeypatch):
    from infra.local.__main__ import _llm_choice

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("TROUPE_LLM", raising=False)
    monkeypatch.delenv("TROUPE_METAGPT_CONFIG", raising=False)
    args = argparse.Namespace(llm=None)
    assert _llm_choice(args) == "local"
    (tmp_path / ".metagpt").mkdir()
    (tmp_path / ".metagpt" / "config2.yaml").write_text("llm:\n  api_type: openai\n  base_url: http://x/v1\n")
    assert _llm_choice(args) == "config2"
    monkeypatch.setenv("TROUPE_LLM", "fake")
    assert _llm_choice(args) == "fake"
