"""Which LLM a function uses, chosen by environment: TROUPE_LLM=fake | openai.

`fake` is the scripted test double. `openai` is MetaGPT's own openai provider pointed at
TROUPE_LLM_BASE_URL (any OpenAI-compatible endpoint). Keys come from the environment only.
"""

from __future__ import annotations

import os

from shared.errors import TroupeError


def llm_kind(env=os.environ) -> str:
    return (env.get("TROUPE_LLM") or "fake").strip().lower()


def make_llm(env=os.environ, model: str | None = None):
    """A fresh MetaGPT BaseLLM for one invocation."""
    import shared.mg  # noqa: F401  (pins MetaGPT's root before it is imported)

    kind = llm_kind(env)
    if kind == "fake":
        from shared.llm.fake import ScriptedLLM

        return ScriptedLLM()
    if kind == "openai":
        from metagpt.configs.llm_config import LLMConfig
        from metagpt.provider.llm_provider_registry import create_llm_instance

        base_url = env.get("TROUPE_LLM_BASE_URL")
        if not base_url:
            raise TroupeError("TROUPE_LLM=openai needs TROUPE_LLM_BASE_URL")
        cfg = LLMConfig(api_type="openai", base_url=base_url, api_key=env.get("TROUPE_LLM_API_KEY", "none"),
                        model=model or env.get("TROUPE_LLM_MODEL", "default"), stream=False)
        return create_llm_instance(cfg)
    raise TroupeError(f"unknown TROUPE_LLM={kind!r}: expected 'fake' or 'openai'")
