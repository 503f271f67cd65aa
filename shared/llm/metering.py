"""Reliable token counts from any MetaGPT provider: `meter(llm)`.

MetaGPT counts tokens in `BaseLLM._update_costs(usage)`, which reads only the OpenAI names
`prompt_tokens` / `completion_tokens` (metagpt/provider/base_llm.py, `_update_costs`).
Providers that report other names lose their tokens silently. MetaGPT 0.8.2's own DashScope
provider is one: it passes `dict(resp.usage)`, whose keys are DashScope's `input_tokens` /
`output_tokens` (metagpt/provider/dashscope_api.py, `_achat_completion`), so every DashScope
call counted zero. Its OpenAI provider creates no CostManager at all (`self.cost_manager =
None` in `OpenAILLM.__init__`), so `_update_costs` does nothing there either.

`meter` fixes both on the instance (no MetaGPT source is touched): it wraps the instance's
`_update_costs` to normalise the usage's keys before MetaGPT reads them, gives the instance a
CostManager if it has none (a CostManager adds up tokens even for models missing from its
price table; it only skips the money), and keeps the last call's normalised usage in
`llm.last_usage`. JournalingLLM then reads the per-call delta from the cost manager's totals.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

#: provider-specific names → the OpenAI names MetaGPT reads
_ALIASES = {
    "prompt_tokens": ("prompt_tokens", "input_tokens"),
    "completion_tokens": ("completion_tokens", "output_tokens"),
}


def normalise_usage(usage: Any) -> dict:
    """{prompt_tokens, completion_tokens, total_tokens} from an OpenAI `CompletionUsage`, a
    DashScope `GenerationUsage` (input_tokens/output_tokens), a plain dict, or None."""
    if usage is None:
        raw: dict = {}
    elif isinstance(usage, BaseModel):
        raw = usage.model_dump()
    elif isinstance(usage, dict):
        raw = dict(usage)
    else:
        raw = {k: getattr(usage, k) for k in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")
               if hasattr(usage, k)}
    out = {}
    for name, sources in _ALIASES.items():
        out[name] = next((_int(raw[s]) for s in sources if raw.get(s) is not None), 0)
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    return out


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def meter(llm, token_costs: dict | None = None):
    """Make `llm` (a MetaGPT BaseLLM instance) count its tokens whatever its provider reports.

    `token_costs` is the price table for a CostManager created here (MetaGPT's own table,
    `metagpt.utils.token_counter.TOKEN_COSTS`, when not given); an existing cost manager is
    kept. Applying `meter` twice is a no-op. Returns `llm`.
    """
    if getattr(llm, "_troupe_metered", False):
        return llm
    from metagpt.utils.cost_manager import CostManager

    if getattr(llm, "cost_manager", None) is None:
        llm.cost_manager = CostManager(token_costs=token_costs) if token_costs is not None else CostManager()
    inner = llm._update_costs  # the bound method of the provider's class
    llm.last_usage = None

    def _update_costs(usage, model: str | None = None, local_calc_usage: bool = True):
        normalised = normalise_usage(usage)
        llm.last_usage = normalised
        return inner(normalised, model=model, local_calc_usage=local_calc_usage)

    llm._update_costs = _update_costs  # an instance attribute shadows the class's method
    llm._troupe_metered = True
    return llm
