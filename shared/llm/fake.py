"""A scripted LLM registered as a MetaGPT provider: a test double, selected by TROUPE_LLM=fake.

It is a full BaseLLM, so MetaGPT's real roles and actions run on it unchanged. Replies are
scripted by role and step, never by prompt text: a script maps a role name (found in the
system prompt MetaGPT builds, "You are a <profile>, named <name>...") to a list of replies,
used in order; `{n}` in a reply is the call count of that role in this LLM instance, `{h}` a
short digest of the prompt. Roles without a script get a generic reply naming the role.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re

from metagpt.configs.llm_config import LLMConfig
from metagpt.provider.base_llm import BaseLLM
from metagpt.provider.llm_provider_registry import LLM_REGISTRY

PROVIDER_KEY = "troupe_fake"
_NAMED = re.compile(r"named (\w[\w-]*)")


class ScriptedLLM(BaseLLM):
    """Replies from a script; counts calls and tokens like a real provider would report them."""

    def __init__(self, config: LLMConfig | None = None, script: dict[str, list[str]] | None = None,
                 latency: float | None = None, model: str = "troupe-fake", max_token: int = 512):
        self.config = config or LLMConfig(api_type="openai", api_key="unused", model=model, max_token=max_token)
        self.model = self.config.model
        self.script = script if script is not None else _script_from_env()
        self.latency = float(os.environ.get("TROUPE_FAKE_LATENCY_MS", "0")) / 1000 if latency is None else latency
        self.calls: dict[str, int] = {}
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}

    def _reply(self, messages: list[dict]) -> str:
        system = " ".join(m.get("content", "") for m in messages if m.get("role") == "system")
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        found = _NAMED.search(system)
        who = found.group(1) if found else "assistant"
        n = self.calls.get(who, 0) + 1
        self.calls[who] = n
        replies = self.script.get(who) or self.script.get("*")
        digest = hashlib.sha256((users[-1] if users else "").encode()).hexdigest()[:6]
        if replies:
            text = replies[(n - 1) % len(replies)]
        else:
            text = "{who} makes point {h}: the evidence supports my side."
        text = text.replace("{who}", who).replace("{n}", str(n)).replace("{h}", digest)
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1
        self.usage["prompt_tokens"] += prompt_tokens
        self.usage["completion_tokens"] += len(text) // 4 + 1
        return text

    async def _achat_completion(self, messages: list[dict], timeout=60) -> dict:
        if self.latency:
            await asyncio.sleep(self.latency)
        text = self._reply(messages)
        return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0}, "model": self.model}

    async def acompletion(self, messages: list[dict], timeout=60) -> dict:
        return await self._achat_completion(messages, timeout)

    async def _achat_completion_stream(self, messages: list[dict], timeout=60) -> str:
        return self.get_choice_text(await self._achat_completion(messages, timeout))


def _script_from_env() -> dict[str, list[str]]:
    path = os.environ.get("TROUPE_FAKE_SCRIPT")
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        script = json.load(f)
    if not isinstance(script, dict) or not all(isinstance(v, list) for v in script.values()):
        raise ValueError(f"{path}: a fake LLM script maps role names to lists of replies")
    return script


LLM_REGISTRY.register(PROVIDER_KEY, ScriptedLLM)
