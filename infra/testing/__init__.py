"""Test doubles: what the tests, the benchmarks and the local runtime use in place of a model.

Nothing here is in a function zip or the layer (infra/ is kept out of packages by
infra/package/build.py). `install()` registers the scripted LLM as `TROUPE_LLM=fake` with
shared.llm; the local runtime's worker does so only when the runtime asks for it, and the test
suite does in its harness. On FC nothing registers it: a function configured with `fake` is
refused as an unknown LLM, and one with no TROUPE_LLM at all gets a configuration error.
"""

from __future__ import annotations

from typing import Mapping


def scripted(cls=None):
    """A scripted LLM (`cls`: a subclass of it, such as the fault tests' one), its code replies
    shaped as any provider's."""
    from infra.testing.scripted_llm import ScriptedLLM
    from shared.llm import structured

    return structured.adapt((cls or ScriptedLLM)(), "off")


def _scripted(env: Mapping[str, str]):
    return scripted()


def install() -> None:
    """`TROUPE_LLM=fake` makes the scripted LLM (infra.testing.scripted_llm). Idempotent; cheap:
    the double (and MetaGPT) is imported when the first such LLM is made."""
    from shared.llm import register

    register("fake", _scripted)
