"""The bill: what each invocation cost in LLM tokens, money and FC compute, and budgets.

Money is in CNY. LLM prices come from `shared/pricing.yaml` (or the file TROUPE_PRICING names);
an unknown model is priced by the table's `default`, never as free. FC compute is memory size
times duration (GB-s) at the table's unit price.
"""

from __future__ import annotations

import math
import os
import re
from functools import lru_cache

import yaml

from shared.errors import TroupeError

HERE = os.path.dirname(os.path.abspath(__file__))
_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


class BudgetExhausted(TroupeError):
    """A budget would be exceeded by the next LLM call: the conversation ends instead."""

    status = 402
    code = "BudgetExhausted"


@lru_cache(maxsize=4)
def load_prices(path: str | None = None) -> dict:
    path = path or os.environ.get("TROUPE_PRICING") or os.path.join(HERE, "pricing.yaml")
    with open(path, encoding="utf-8") as f:
        table = yaml.safe_load(f)
    for name, p in {**table["llm"], "default": table["default"]}.items():
        if not (isinstance(p, dict) and p.get("input", -1) >= 0 and p.get("output", -1) >= 0):
            raise TroupeError(f"{path}: price of {name!r} needs non-negative input and output")
    if not table.get("fc", {}).get("gb_second", -1) >= 0:
        raise TroupeError(f"{path}: fc.gb_second must be a non-negative number")
    return table


def model_price(model: str | None, prices: dict | None = None) -> dict:
    prices = prices or load_prices()
    return prices["llm"].get(model or "", prices["default"])


def llm_cost(model: str | None, prompt_tokens: int, completion_tokens: int, prices: dict | None = None) -> float:
    p = model_price(model, prices)
    return (prompt_tokens * p["input"] + completion_tokens * p["output"]) / 1000


def compute(memory_mb: float | None, duration_ms: float, prices: dict | None = None) -> tuple[float, float]:
    """(GB-seconds, yuan) of one invocation."""
    prices = prices or load_prices()
    gb_s = (memory_mb or 0) / 1024 * max(duration_ms, 0) / 1000
    return gb_s, gb_s * prices["fc"]["gb_second"]


def estimate_tokens(messages: list[dict]) -> int:
    """An upper estimate of a prompt's tokens: a CJK character is at most one token, and other
    text at most one token per three characters (Qwen's tokenizer averages ~4 in English)."""
    total = 0
    for m in messages:
        text = m.get("content", "")
        text = text if isinstance(text, str) else str(text)
        cjk = len(_CJK.findall(text))
        total += cjk + math.ceil((len(text) - cjk) / 3) + 4
    return total


class Budget:
    """Spending limits of one conversation, checked before every paid LLM call.

    `spent` is what the conversation had spent before this invocation (carried along the
    messages); calls made during the invocation are added as they complete. A call is refused
    if what is spent plus the call's worst case (its prompt estimate plus the reply's maximum
    length) would pass a limit, so a limit is never overshot by more than the estimate's error.
    """

    def __init__(self, limits: dict, spent: dict | None, model: str | None, max_reply_tokens: int):
        self.max_tokens = limits.get("max_tokens")
        self.max_cost = limits.get("max_cost_cny")
        spent = spent or {}
        self.tokens = int(spent.get("tokens", 0))
        self.cost = float(spent.get("cost_cny", 0.0))
        self.model = model
        self.max_reply = max_reply_tokens

    def check(self, messages: list[dict]) -> None:
        prompt = estimate_tokens(messages)
        worst_tokens = self.tokens + prompt + self.max_reply
        if self.max_tokens is not None and worst_tokens > self.max_tokens:
            raise BudgetExhausted(
                f"token budget max_tokens={self.max_tokens} would be exceeded: {self.tokens} spent, "
                f"the next call may use up to {prompt + self.max_reply}", budget="max_tokens")
        worst_cost = self.cost + llm_cost(self.model, prompt, self.max_reply)
        if self.max_cost is not None and worst_cost > self.max_cost:
            raise BudgetExhausted(
                f"money budget max_cost_cny={self.max_cost} would be exceeded: {self.cost:.6f} spent, "
                f"the next call may cost up to {worst_cost - self.cost:.6f}", budget="max_cost_cny")

    def add(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> None:
        self.tokens += prompt_tokens + completion_tokens
        self.cost += llm_cost(model, prompt_tokens, completion_tokens)


def bill_fields(model: str | None, prompt_tokens: int, completion_tokens: int, memory_mb: float | None,
                duration_ms: float) -> dict:
    """The money fields of one invocation record."""
    llm_cny = llm_cost(model, prompt_tokens, completion_tokens)
    gb_s, compute_cny = compute(memory_mb, duration_ms)
    return {"model": model, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "llm_cny": round(llm_cny, 8), "memory_mb": memory_mb, "gb_s": round(gb_s, 6),
            "compute_cny": round(compute_cny, 10), "cost_cny": round(llm_cny + compute_cny, 8)}


_SUMMED = ("prompt_tokens", "completion_tokens", "llm_cny", "gb_s", "compute_cny", "cost_cny",
           "throttled", "waited_ms", "handed_back", "queued_ms")


def usage_report(rows: list[dict]) -> dict:
    """Per-invocation rows, totals per role and for the conversation (sums of the rows).

    Time spent on the model's rate limit shows apart: `throttled` (calls it turned away),
    `waited_ms` (backing off inside invocations: the instance is held, so it is in the compute
    part, never in the LLM part, which is priced by tokens) and `handed_back` (the turn given
    back to FC to run again later, shared/handback.py: nothing is billed while it waits), and
    `queued_ms`, the time an event waited before its invocation started (FC's queue, behind a
    function's instance limit: not billed either)."""
    out_rows, by_role = [], {}
    total = {k: 0 for k in _SUMMED} | {"invocations": 0, "llm_calls": 0}
    for r in rows:
        row = {"function": r.get("function"), "role": r.get("role"), "turn": r.get("turn"),
               "request_id": r.get("request_id"), "outcome": r.get("outcome"), "start": r.get("start"),
               "duration_ms": r.get("duration_ms"), "llm_calls": r.get("llm_paid", 0)}
        row.update({k: r.get(k) or 0 for k in _SUMMED})
        row["handed_back"] = 1 if r.get("outcome") == "handed_back" else 0
        row["model"] = r.get("model")
        row["memory_mb"] = r.get("memory_mb")
        out_rows.append(row)
        role = by_role.setdefault(row["role"] or row["function"], {k: 0 for k in _SUMMED} | {"invocations": 0, "llm_calls": 0})
        for acc in (role, total):
            acc["invocations"] += 1
            acc["llm_calls"] += row["llm_calls"]
            for k in _SUMMED:
                acc[k] += row[k]
    for acc in [total, *by_role.values()]:
        for k in ("llm_cny", "compute_cny", "cost_cny", "gb_s"):
            acc[k] = round(acc[k], 10)
        acc["waited_ms"], acc["queued_ms"] = round(acc["waited_ms"], 1), round(acc["queued_ms"], 1)
    return {"currency": "CNY", "rows": out_rows, "by_role": by_role, "total": total}
