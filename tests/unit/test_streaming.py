"""Streamed replies on the embedded model's wire: tokens so far for progress, usage counted by
the server's tokenizer, everything above the provider unchanged (shared.llm.streaming)."""

from __future__ import annotations

import asyncio

import pytest

from shared.llm import LLMConfigError, make_llm
from shared.llm.streaming import chatml
from shared.llm.structured import Expected, expect
from tests.llm_endpoints import LlamaCppEndpoint

REPLY = "The ledger keeps each entry with its amount, its category and its date."


def _env(ep, **extra):
    return {"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": ep.base_url, "TROUPE_LLM_API_KEY": ep.key,
            "TROUPE_LLM_JSON": "schema", "TROUPE_LLM_STREAM": "llama.cpp", **extra}


def test_a_streamed_reply_is_whole_and_its_usage_is_the_servers_count():
    messages = [{"role": "system", "content": "You are a product manager."}, {"role": "user", "content": "A ledger"}]
    with LlamaCppEndpoint(script=[REPLY]) as ep:
        llm = make_llm(_env(ep))
        text = asyncio.run(llm.acompletion_text(messages))
        (req,) = ep.requests
        counted = list(ep.counted)
    assert text == REPLY and req.body["stream"] is True
    # the prompt as ChatML, then the reply, through /extras/tokenize/count
    assert counted == [chatml(messages), REPLY]
    assert counted[0].endswith("<|im_start|>assistant\n") and "<|im_start|>system\nYou are" in counted[0]
    assert llm.last_usage["prompt_tokens"] == len(chatml(messages)) // 4 + 1
    assert llm.last_usage["completion_tokens"] == len(REPLY) // 4 + 1


def test_tokens_so_far_reach_the_progress_record_and_a_replay_streams_nothing(tmp_path, monkeypatch):
    from shared.llm import journal
    from shared.llm.journal import JournalingLLM
    from infra.testing.harness import Harness

    monkeypatch.setattr(journal, "PROGRESS_EVERY", 0.0)  # every chunk writes (the default is 5 s)
    h = Harness(str(tmp_path))
    cid = h.start()
    seen: list[int] = []
    put = h.convs.set_progress
    monkeypatch.setattr(h.convs, "set_progress", lambda c, rec: (seen.append(rec.get("tokens")), put(c, rec)))
    cut = "```python\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a -"
    with LlamaCppEndpoint(script=[cut]) as ep:
        replies = []
        for holder in ("req-1", "req-2"):  # the invocation, then a duplicate of its event
            llm = JournalingLLM(make_llm(_env(ep)), h.convs, cid, "c" * 16, holder=holder,
                                progress={"role": "Alex", "function": "engineer"})
            with expect(Expected("code", "WriteCode", budget=300)):
                replies.append(asyncio.run(llm.acompletion_text([{"role": "user", "content": "## Code: calc.py"}])))
        assert len(ep.requests) == 1
    words = len([w for w in cut.replace(" ", " \0").split("\0") if w])
    # the start of the call (no count yet), then 1, 2, ... tokens as they arrived
    assert seen[0] is None and seen[1:] == list(range(1, words + 1))
    assert h.convs.progress(cid)["tokens"] == words and h.convs.progress(cid)["step"] == "WriteCode"
    # the streamed reply was shaped as any other (closed at its last whole statement), journaled once
    assert replies[0] == replies[1] == "```python\ndef add(a, b):\n    return a + b\n```"
    entry = h.convs.journal_get(cid, "c" * 16, 0)
    assert entry["completion_tokens"] == len(cut) // 4 + 1 and entry["prompt_tokens"] > 0


def test_an_unknown_streamer_names_the_variable():
    with pytest.raises(LLMConfigError, match="TROUPE_LLM_STREAM"):
        make_llm({"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": "http://127.0.0.1:9/v1", "TROUPE_LLM_STREAM": "sse"})


def test_a_stream_cut_short_is_an_error_not_a_reply():
    from openai import APIConnectionError

    with LlamaCppEndpoint(script=[REPLY], interrupted=True) as ep:
        llm = make_llm(_env(ep))
        with pytest.raises(APIConnectionError, match="stream ended before the reply did"):
            asyncio.run(llm.acompletion([{"role": "user", "content": "A ledger"}]))


def test_a_reply_is_kept_when_the_server_cannot_count_it(caplog):
    with LlamaCppEndpoint(script=[REPLY], counts=False) as ep:
        llm = make_llm(_env(ep))
        text = asyncio.run(llm.acompletion_text([{"role": "user", "content": "A ledger"}]))
    assert text == REPLY and llm.last_usage["completion_tokens"] == len(REPLY) // 3 + 1
    assert "did not count" in caplog.text


def test_the_call_is_bounded_by_the_llm_timeout(monkeypatch):
    import time as _time

    from openai import APITimeoutError

    slow = lambda rec: (_time.sleep(3), REPLY)[1]  # noqa: E731 - the server takes longer than the timeout
    with LlamaCppEndpoint(script=slow) as ep:
        llm = make_llm(_env(ep, TROUPE_LLM_TIMEOUT="1"))
        started = _time.monotonic()
        with pytest.raises(APITimeoutError):
            asyncio.run(llm.acompletion([{"role": "user", "content": "A ledger"}]))
    assert _time.monotonic() - started < 2.5
