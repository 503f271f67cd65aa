"""Local stand-ins for the cloud LLM endpoints, speaking their wire formats on 127.0.0.1.

* `DashScopeEndpoint`: DashScope's native text generation API, as the dashscope SDK (1.19.x)
  calls it without streaming: POST {base}/services/aigc/text-generation/generation with
  `Authorization: Bearer <key>` and a body {model, input: {messages}, parameters:
  {result_format: "message", max_tokens, ...}}. It answers {output: {choices: [{finish_reason,
  message: {role, content}}]}, usage: {input_tokens, output_tokens, total_tokens}, request_id}
  (the SDK reads `output`, `usage`, `request_id`: dashscope/api_entities/aiohttp_request.py,
  `_handle_response`), and on a wrong key 401 {code: "InvalidApiKey", message, request_id}.
* `LlamaCppEndpoint`: llama-cpp-python's server (0.3.x) as troupe's local model server runs
  it: OpenAI chat completions that, asked to stream, send one `chat.completion.chunk` per word
  and no usage (the server's streamed chunks carry none), and `POST /extras/tokenize/count`
  {input} → {count} (characters // 4 + 1, the rule below).
* `OpenAIEndpoint`: OpenAI chat completions (what DashScope's compatible mode and llama.cpp's
  server speak): POST .../chat/completions under /v1 or /compatible-mode/v1, answering a
  `chat.completion` with usage {prompt_tokens, completion_tokens, total_tokens}; on a wrong
  key 401 {error: {message, type, code: "invalid_api_key"}}.

With `rpm` (60 or more), an endpoint enforces a rate limit per minute and per second, as DashScope
does: at most rpm/60 requests in each second of the clock (a counter per second, so at most rpm
a minute); a request over it is answered 429 with DashScope's throttling body (`THROTTLING`), and
counted in `throttled`.

A script entry may be a `Refusal` instead of a reply: the endpoint then answers with that HTTP
status and the provider's error body ({code, message, request_id} natively; {error: {message,
type, code}} in OpenAI's format), and a Retry-After header when it has one.

Both record every request (path, headers, body, model, messages) with the reply and the usage
they reported, for assertions. Replies are deterministic: `script` is a list of replies used
in order (then cycled), or a function of the recorded request; the default names the model and
the call's number. Token counts are deterministic too: prompt tokens = characters of all the
messages // 4 + 1, completion tokens = characters of the reply // 4 + 1 (or `usage=(p, c)`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence

DASHSCOPE_PATH = "/api/v1/services/aigc/text-generation/generation"
OPENAI_PATHS = ("/v1/chat/completions", "/compatible-mode/v1/chat/completions")


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: dict
    model: str = ""
    messages: list[dict] = field(default_factory=list)
    reply: str = ""
    usage: dict = field(default_factory=dict)
    """What the endpoint reported, always as {prompt_tokens, completion_tokens}."""
    status: int = 200

    @property
    def system(self) -> str:
        return " ".join(m.get("content", "") for m in self.messages if m.get("role") == "system")


@dataclass(frozen=True)
class Refusal:
    """An error answer: HTTP status, the provider's error code and message, Retry-After seconds."""

    status: int
    code: str
    message: str = ""
    retry_after: int | None = None


THROTTLING = Refusal(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
"""What DashScope answers a request over the account's rate limit."""

Script = Sequence["str | Refusal"] | Callable[[Recorded], "str | Refusal"] | None


class _Endpoint:
    """A threaded HTTP server on 127.0.0.1 (port chosen by the OS); a context manager."""

    def __init__(self, key: str = "test-key", script: Script = None, usage: tuple[int, int] | None = None,
                 rpm: int | None = None):
        self.key = key
        self.script = script
        self.fixed_usage = usage
        if rpm is not None and rpm < 60:
            raise ValueError("rpm: at least 60 (the limit is enforced per second)")
        self.rpm = rpm
        self.per_second = max(1, (rpm or 0) // 60)
        self.throttled = 0
        self._second, self._count = 0, 0
        """the second of the clock being counted, and the requests let through in it"""
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "_Endpoint":
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, extra = endpoint._handle(self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                if isinstance(body, list):  # server-sent events, one per chunk, then [DONE]
                    self.send_response(status)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    try:
                        for chunk in body:
                            self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode("utf-8"))
                            self.wfile.flush()
                        self.wfile.write(b"data: [DONE]\n\n")
                    except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                        pass
                    return
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def origin(self) -> str:
        assert self._server is not None, "endpoint not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- behaviour ---------------------------------------------------------------------------
    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict | list, dict]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        rec = Recorded(path=path, headers=headers, body=body if isinstance(body, dict) else {})
        with self._lock:
            self.requests.append(rec)
            n = len(self.requests)
        if not self._path_ok(path):
            rec.status = 404
            return 404, self._error(404, "not found: " + path), {}
        if headers.get("authorization") != f"Bearer {self.key}":
            rec.status = 401
            return 401, self._error(401, ""), {}
        rec.model, rec.messages = self._parse(rec.body)
        reply = THROTTLING if self.rpm and not self._admit() else self._reply(rec, n)
        if isinstance(reply, Refusal):
            rec.status = reply.status
            return reply.status, self._refusal(reply), (
                {"Retry-After": str(reply.retry_after)} if reply.retry_after is not None else {})
        rec.reply = reply
        prompt = sum(len(str(m.get("content", ""))) for m in rec.messages) // 4 + 1
        completion = len(rec.reply) // 4 + 1
        if self.fixed_usage:
            prompt, completion = self.fixed_usage
        rec.usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        return 200, self._answer(rec, n), {}

    def _admit(self) -> bool:
        """Whether the rate limit lets one more request through now (and count it if so)."""
        second = int(time.time())
        with self._lock:
            if second != self._second:
                self._second, self._count = second, 0
            if self._count >= self.per_second:
                self.throttled += 1
                return False
            self._count += 1
            return True

    def _reply(self, rec: Recorded, n: int) -> str:
        if callable(self.script):
            return self.script(rec)
        if self.script:
            return self.script[(n - 1) % len(self.script)]
        return f"{rec.model} reply {n}."

    def replies(self) -> list[str]:
        return [r.reply for r in self.requests if r.status == 200]

    # wire format, per endpoint
    def _path_ok(self, path: str) -> bool:
        raise NotImplementedError

    def _parse(self, body: dict) -> tuple[str, list[dict]]:
        raise NotImplementedError

    def _answer(self, rec: Recorded, n: int) -> dict:
        raise NotImplementedError

    def _error(self, status: int, detail: str) -> dict:
        raise NotImplementedError

    def _refusal(self, refusal: Refusal) -> dict:
        raise NotImplementedError


class DashScopeEndpoint(_Endpoint):
    """DashScope's native API. The SDK's base URL for it: `base_url` (…/api/v1)."""

    @property
    def base_url(self) -> str:
        return self.origin + "/api/v1"

    def _path_ok(self, path: str) -> bool:
        return path.split("?")[0] == DASHSCOPE_PATH

    def _parse(self, body: dict) -> tuple[str, list[dict]]:
        return body.get("model", ""), list((body.get("input") or {}).get("messages") or [])

    def _answer(self, rec: Recorded, n: int) -> dict:
        p, c = rec.usage["prompt_tokens"], rec.usage["completion_tokens"]
        return {
            "output": {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": rec.reply}}]},
            "usage": {"input_tokens": p, "output_tokens": c, "total_tokens": p + c},
            "request_id": str(uuid.UUID(int=n)),
        }

    def _error(self, status: int, detail: str) -> dict:
        if status == 401:
            return {"code": "InvalidApiKey", "message": "Invalid API-key provided.", "request_id": str(uuid.uuid4())}
        return {"code": "InvalidURL", "message": detail, "request_id": str(uuid.uuid4())}

    def _refusal(self, refusal: Refusal) -> dict:
        return {"code": refusal.code, "message": refusal.message, "request_id": str(uuid.uuid4())}


class OpenAIEndpoint(_Endpoint):
    """OpenAI chat completions. Base URLs: `base_url` (…/v1) and `compatible_base_url`
    (…/compatible-mode/v1, DashScope's)."""

    @property
    def base_url(self) -> str:
        return self.origin + "/v1"

    @property
    def compatible_base_url(self) -> str:
        return self.origin + "/compatible-mode/v1"

    def _path_ok(self, path: str) -> bool:
        return path.split("?")[0] in OPENAI_PATHS

    def _parse(self, body: dict) -> tuple[str, list[dict]]:
        return body.get("model", ""), list(body.get("messages") or [])

    def _answer(self, rec: Recorded, n: int) -> dict:
        p, c = rec.usage["prompt_tokens"], rec.usage["completion_tokens"]
        return {
            "id": f"chatcmpl-{n:08d}", "object": "chat.completion", "created": 1_700_000_000 + n,
            "model": rec.model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": rec.reply},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        }

    def _error(self, status: int, detail: str) -> dict:
        if status == 401:
            return {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                              "param": None, "code": "invalid_api_key"}}
        return {"error": {"message": detail, "type": "invalid_request_error", "param": None, "code": "not_found"}}

    def _refusal(self, refusal: Refusal) -> dict:
        return {"error": {"message": refusal.message, "type": "invalid_request_error", "param": None,
                          "code": refusal.code}}


class LlamaCppEndpoint(OpenAIEndpoint):
    """llama-cpp-python's server: streamed chunks without usage, and its tokenizer's count."""

    def __init__(self, *args, interrupted: bool = False, counts: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.counted: list[str] = []
        self.interrupted = interrupted
        """end each stream without a finish reason, as the server does when another request
        interrupts it (its default `interrupt_requests`)"""
        self.counts = counts
        """False: /extras/tokenize/count answers 500"""

    def _path_ok(self, path: str) -> bool:
        return path.split("?")[0] == "/v1/chat/completions"

    def _handle(self, path: str, headers: dict[str, str], raw: bytes):
        if path.split("?")[0] == "/extras/tokenize/count":
            text = str(json.loads(raw or b"{}").get("input", ""))
            with self._lock:
                self.counted.append(text)
            if not self.counts:
                return 500, {"detail": "tokenizer unavailable"}, {}
            return 200, {"count": len(text) // 4 + 1}, {}
        return super()._handle(path, headers, raw)

    def _answer(self, rec: Recorded, n: int):
        if not rec.body.get("stream"):
            return super()._answer(rec, n)
        base = {"id": f"chatcmpl-{n:08d}", "object": "chat.completion.chunk", "created": 1_700_000_000 + n,
                "model": rec.model}
        words = [w for w in rec.reply.replace(" ", " \0").split("\0") if w]
        chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
        chunks += [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
        if not self.interrupted:
            chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        return chunks
