"""MetaGPT's own retries stop at errors no retry fixes.

MetaGPT retries an ActionNode's fill and the code writers' calls with tenacity (up to 6 times,
waiting up to 20 or 60 s between tries), whatever the error. Inside a troupe invocation that is
wasted on three kinds of error:

  * a request the model refuses for good, or a refused key (shared.llm.errors: permanent, config):
    the same answer comes back, after minutes of waiting;
  * a call the model's rate limit still turns away after the invocation's own waiting
    (shared.llm.journal backs off first; past that the turn is handed back, shared/handback.py);
  * a call the journal stopped (a budget refused it, or another invocation is making it).

`install` gives those retries a condition that lets such errors through at once. Idempotent.
"""

from __future__ import annotations

from shared.llm import errors as llm_errors

STOPPED = ("BudgetExhausted", "InFlight")
"""TroupeError codes of the calls the journal refuses to make"""
_installed = False


def worth_retrying(error: BaseException) -> bool:
    """Whether MetaGPT should try again after `error` within this invocation."""
    if any(getattr(e, "code", None) in STOPPED for e in llm_errors.causes(error)):
        return False
    found = llm_errors.classify(error)
    return found is None or found.kind == llm_errors.TRANSIENT


def install() -> None:
    global _installed
    if _installed:
        return
    from tenacity import retry_if_exception

    from metagpt.actions.action_node import ActionNode
    from metagpt.actions.summarize_code import SummarizeCode
    from metagpt.actions.write_code import WriteCode
    from metagpt.actions.write_code_review import WriteCodeReview

    for cls, name in ((ActionNode, "_aask_v1"), (WriteCode, "write_code"), (SummarizeCode, "summarize_code"),
                      (WriteCodeReview, "write_code_review_and_rewrite")):
        method = getattr(cls, name)
        if hasattr(method, "retry_with"):  # tenacity's: the same waits and stop, and this condition
            setattr(cls, name, method.retry_with(retry=retry_if_exception(worth_retrying)))
    _installed = True
