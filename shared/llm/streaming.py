"""Tokens so far, while a long call runs: streamed replies from llama.cpp's server.

A call made without streaming says nothing until its last token, and on the embedded model a
PRD takes about 90 s on 2 cores. With TROUPE_LLM_STREAM=llama.cpp (the local runtime sets it
for its own model server), `stream_counted(llm, base_url)` makes a MetaGPT OpenAI provider
instance stream each reply and tell whoever is `listening` how many tokens have arrived.

llama-cpp-python's server puts no usage in streamed chunks, and MetaGPT would then count with
tiktoken, whose tables are downloaded on first use. So the call's usage is counted by the
server's own tokenizer (`POST /extras/tokenize/count`): the prompt as the server's chat
template renders it (ChatML, which the embedded Qwen model uses) and the reply's text.

The reply and its usage reach MetaGPT as a non-streamed call's would (a ChatCompletion from
`_achat_completion`), so the structured shaping, the journal and the metering above it are
unchanged: a replayed call streams nothing and reports nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Callable

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
    from metagpt.const import USE_CONFIG_TIMEOUT
    from openai.types.chat import ChatCompletion, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice
    from openai.types.completion_usage import CompletionUsage

    root = base_url.rstrip("/").removesuffix("/v1")

    async def count(text: str, timeout: float) -> int:
        import httpx

        async with httpx.AsyncClient(timeout=timeout) as client:
            r = await client.post(f"{root}/extras/tokenize/count", json={"input": text})
            r.raise_for_status()
            return int(r.json()["count"])

    async def _achat_completion(messages: list[dict], timeout=USE_CONFIG_TIMEOUT) -> ChatCompletion:
        seconds = llm.get_timeout(timeout)
        kwargs = llm._cons_kwargs(messages, timeout=seconds)
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
        text = "".join(parts)
        prompt = await count(chatml(kwargs.get("messages", messages)), seconds)
        completion = await count(text, seconds) if text else 0
        usage = CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        llm._update_costs(usage)
        return ChatCompletion(
            id="streamed", object="chat.completion", created=int(time.time()), model=kwargs.get("model", ""),
            choices=[Choice(index=0, finish_reason=finish or "stop",
                            message=ChatCompletionMessage(role="assistant", content=text))],
            usage=usage)

    llm._achat_completion = _achat_completion
    return llm
