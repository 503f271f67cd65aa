"""Tokens so far, while a long call runs: streamed replies from llama.cpp's server.

A call made without streaming says nothing until its last token, and on the embedded model a
PRD takes about 90 s on 2 cores. With TROUPE_LLM_STREAM=llama.cpp (the local runtime sets it
for its own model server), `stream_counted(llm, base_url)` makes a MetaGPT OpenAI provider
instance stream each reply and tell whoever is `listening` how many tokens have arrived.

llama-cpp-python's server puts no usage in streamed chunks, and MetaGPT would then count with
tiktoken, whose tables are downloaded on first use. So the call's usage is counted by the
server's own tokenizer (`POST /extras/tokenize/count`): the prompt as the server's chat
template renders it (ChatML, which the embedded Qwen model uses) and the reply's text.

The whole call is bounded by the function's LLM timeout (a stream's read timeout alone never
fires: the server pings), a stream that ends without a finish reason is an error (MetaGPT's
retry applies), and the server is started with `--interrupt_requests false`, so a request
from another worker waits its turn instead of cutting this reply short.

The reply and its usage reach MetaGPT as a non-streamed call's would (a ChatCompletion from
`_achat_completion`), so the structured shaping, the journal and the metering above it are
unchanged: a replayed call streams nothing and reports nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from typing import Callable

log = logging.getLogger("troupe.llm")

STREAMERS = ("off", "llama.cpp")

_listener: contextvars.ContextVar[Callable[[int], None] | None] = contextvars.ContextVar(
    "troupe_stream_listener", default=None)


@contextlib.contextmanager
def listening(callback: Callable[[int], None]):
    """Calls streamed inside this block report their tokens so far to `callback(n)`."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def chatml(messages: list[dict]) -> str:
    """The prompt as a ChatML template renders it, up to the assistant's turn."""
    parts = [f"<|im_start|>{m.get('role', 'user')}\n{m.get('content') or ''}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


def stream_counted(llm, base_url: str):
    """Make `llm` (MetaGPT's OpenAILLM on a llama-cpp-python server) stream its replies and
    count their usage with the server's tokenizer. Returns `llm`."""
    import httpx
    from metagpt.const import USE_CONFIG_TIMEOUT
    from openai import APIConnectionError, APITimeoutError
    from openai.types.chat import ChatCompletion, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice
    from openai.types.completion_usage import CompletionUsage

    root = base_url.rstrip("/").removesuffix("/v1")

    async def count(client, text: str) -> int:
        """Tokens in `text` by the server's tokenizer; an estimate (about 3 characters a token,
        as the budget's) when the server cannot say: the reply is already paid for."""
        try:
            r = await client.post(f"{root}/extras/tokenize/count", json={"input": text},
                                  headers={"Authorization": f"Bearer {llm.config.api_key}"})
            r.raise_for_status()
            return int(r.json()["count"])
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as e:
            log.warning("the model server did not count the call's tokens (%s): estimated", type(e).__name__)
            return len(text) // 3 + 1

    async def stream(kwargs: dict) -> tuple[str, str]:
        response = await llm.aclient.chat.completions.create(**kwargs, stream=True)
        report = _listener.get()
        parts: list[str] = []
        finish = None
        async for chunk in response:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.delta is not None and choice.delta.content:
                parts.append(choice.delta.content)
                if report is not None:
                    report(len(parts))
            finish = choice.finish_reason or finish
        if finish is None:  # the stream ended without saying why: the reply may be cut short
            raise APIConnectionError(message="the model server's stream ended before the reply did",
                                     request=httpx.Request("POST", f"{root}/v1/chat/completions"))
        return "".join(parts), finish

    async def _achat_completion(messages: list[dict], timeout=USE_CONFIG_TIMEOUT) -> ChatCompletion:
        seconds = llm.get_timeout(timeout)
        kwargs = llm._cons_kwargs(messages, timeout=seconds)
        started = time.monotonic()
        try:  # the whole call within the timeout: a stream's read timeout alone never fires (SSE pings)
            text, finish = await asyncio.wait_for(stream(kwargs), seconds)
        except asyncio.TimeoutError:
            raise APITimeoutError(request=httpx.Request("POST", f"{root}/v1/chat/completions")) from None
        left = max(seconds - (time.monotonic() - started), 5.0)
        async with httpx.AsyncClient(timeout=left) as client:  # one connection for both counts
            prompt = await count(client, chatml(kwargs.get("messages", messages)))
            completion = await count(client, text) if text else 0
        usage = CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        llm._update_costs(usage)
        return ChatCompletion(
            id="streamed", object="chat.completion", created=int(time.time()), model=kwargs.get("model", ""),
            choices=[Choice(index=0, finish_reason=finish,
                            message=ChatCompletionMessage(role="assistant", content=text))],
            usage=usage)

    llm._achat_completion = _achat_completion
    return llm
