"""MetaGPT's own `config2.yaml` as a source of LLM settings.

A MetaGPT user already has `~/.metagpt/config2.yaml` (or names another file in
TROUPE_METAGPT_CONFIG):

    llm:
      api_type: openai          # or dashscope
      model: gpt-4o-mini
      base_url: https://api.openai.com/v1
      api_key: sk-...

`settings()` turns it into troupe's variables (TROUPE_LLM, TROUPE_LLM_MODEL, TROUPE_LLM_BASE_URL,
TROUPE_LLM_API_KEY or DASHSCOPE_API_KEY, and max_token / temperature / timeout). A variable
already set in the environment wins over the file, key by key. The local runtime uses it when
TROUPE_LLM is not set (`python -m infra.local run`); a deployed function reads only its
environment.
"""

from __future__ import annotations

import os
from typing import Mapping

from shared.llm import LLMConfigError

#: MetaGPT api_type -> TROUPE_LLM
KINDS = {"openai": "openai", "dashscope": "dashscope"}


def path(env: Mapping[str, str] = os.environ) -> str | None:
    """The config file in use: TROUPE_METAGPT_CONFIG, else ~/.metagpt/config2.yaml, if it exists."""
    named = (env.get("TROUPE_METAGPT_CONFIG") or "").strip()
    if named:
        if not os.path.isfile(named):
            raise LLMConfigError(f"TROUPE_METAGPT_CONFIG names {named[:200]!r}, which is not a file")
        return named
    home = os.path.join(os.path.expanduser("~"), ".metagpt", "config2.yaml")
    return home if os.path.isfile(home) else None


def settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """troupe's LLM variables from MetaGPT's config2.yaml ({} without one); the environment wins."""
    where = path(env)
    if where is None:
        return {}
    import yaml

    try:
        with open(where, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise LLMConfigError(f"{where}: not readable as YAML ({type(e).__name__})") from None
    llm = doc.get("llm") if isinstance(doc, dict) else None
    if not isinstance(llm, dict):
        raise LLMConfigError(f"{where}: no `llm:` section (api_type, model, base_url, api_key)")
    api_type = str(llm.get("api_type") or "openai").strip().lower()
    if api_type not in KINDS:
        raise LLMConfigError(f"{where}: llm.api_type {api_type[:40]!r} is not one troupe runs: "
                             f"{', '.join(KINDS)} (or set TROUPE_LLM)")
    out = {"TROUPE_LLM": KINDS[api_type]}
    key = str(llm.get("api_key") or "").strip()
    base_url = str(llm.get("base_url") or "").strip()
    if api_type == "openai":
        out.update(TROUPE_LLM_BASE_URL=base_url, TROUPE_LLM_API_KEY=key)
    else:
        out.update(DASHSCOPE_API_KEY=key, DASHSCOPE_HTTP_BASE_URL=base_url)
    out["TROUPE_LLM_MODEL"] = str(llm.get("model") or "").strip()
    for name, var in (("max_token", "TROUPE_LLM_MAX_TOKENS"), ("temperature", "TROUPE_LLM_TEMPERATURE"),
                      ("timeout", "TROUPE_LLM_TIMEOUT")):
        if llm.get(name) is not None:
            out[var] = str(llm[name])
    return {k: v for k, v in out.items() if v and not (env.get(k) or "").strip()}
