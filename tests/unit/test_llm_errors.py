"""LLM errors classified on each provider's wire (shared/llm/errors.py): DashScope's native API,
its OpenAI-compatible mode and an OpenAI-compatible endpoint answer with their real error
bodies; a refused request ends the conversation naming role and step, a throttled one is tried
again."""

from __future__ import annotations

import asyncio

import pytest

from shared.llm import errors, make_llm
from tests.llm_endpoints import DashScopeEndpoint, OpenAIEndpoint, Refusal

KEY = "sk-test"
LONG = "Range of input length should be [1, 30720]"


def _compatible_llm(ep):
    """An LLM factory for DashScope's compatible mode at the endpoint `ep`, the openai SDK's own
    retries off (they would only repeat the endpoint's scripted answer)."""
    def factory(model=None):
        llm = make_llm({"TROUPE_LLM": "dashscope-openai", "TROUPE_LLM_BASE_URL": ep.compatible_base_url,
                        "DASHSCOPE_API_KEY": KEY}, model)
        llm.aclient.max_retries = 0
        return llm

    return factory


def _raised(llm) -> BaseException:
    with pytest.raises(Exception) as err:
        asyncio.run(llm.aask("hi"))
    return err.value


def _native(refusal: Refusal):
    with DashScopeEndpoint(key=KEY, script=[refusal]) as ep:
        llm = make_llm({"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": ep.base_url})
        return errors.classify(_raised(llm), llm.key_variable)


def _compatible(refusal: Refusal, kind: str = "dashscope-openai"):
    with OpenAIEndpoint(key=KEY, script=[refusal]) as ep:
        env = {"TROUPE_LLM": kind, "TROUPE_LLM_BASE_URL": ep.compatible_base_url if kind != "openai" else ep.base_url,
               "DASHSCOPE_API_KEY": KEY, "TROUPE_LLM_API_KEY": KEY}
        llm = make_llm(env)
        llm.aclient.max_retries = 0  # the SDK's own retries would only repeat the same answer here
        return errors.classify(_raised(llm), llm.key_variable)


@pytest.mark.parametrize("refusal, kind, says", [
    (Refusal(429, "Throttling.RateQuota", "Requests rate limit exceeded"), errors.THROTTLED, "rate limit"),
    (Refusal(500, "InternalError", "An internal error has occured"), errors.TRANSIENT, "failed"),
    (Refusal(400, "DataInspectionFailed", "Input data may contain inappropriate content."), errors.PERMANENT,
     "content policy"),
    (Refusal(400, "InvalidParameter", LONG), errors.PERMANENT, "longer than the model's context"),
    (Refusal(401, "InvalidApiKey", "Invalid API-key provided."), errors.CONFIG, "set DASHSCOPE_API_KEY"),
    (Refusal(400, "Arrearage", "Access denied, please make sure your account is in good standing."), errors.CONFIG,
     "overdue payment"),
])
def test_dashscope_native_errors_are_classified(refusal, kind, says):
    found = _native(refusal)
    assert found is not None and found.kind == kind and says in found.reason


@pytest.mark.parametrize("llm, refusal, kind, says", [
    ("dashscope-openai", Refusal(429, "limit_requests", "Requests rate limit exceeded", retry_after=3), errors.THROTTLED,
     "rate limit"),
    ("dashscope-openai", Refusal(503, "ServiceUnavailable", "busy"), errors.TRANSIENT, "failed"),
    ("dashscope-openai", Refusal(400, "data_inspection_failed", "Input data may contain inappropriate content."),
     errors.PERMANENT, "content policy"),
    ("dashscope-openai", Refusal(400, "invalid_parameter_error", LONG), errors.PERMANENT,
     "longer than the model's context"),
    ("dashscope-openai", Refusal(401, "invalid_api_key", "Incorrect API key provided."), errors.CONFIG,
     "set DASHSCOPE_API_KEY"),
    ("openai", Refusal(429, "rate_limit_exceeded", "slow down"), errors.THROTTLED, "rate limit"),
    ("openai", Refusal(400, "context_length_exceeded", "This model's maximum context length is 8192 tokens"),
     errors.PERMANENT, "longer than the model's context"),
    ("openai", Refusal(401, "invalid_api_key", "Incorrect API key provided."), errors.CONFIG, "set TROUPE_LLM_API_KEY"),
    # a 429 that no waiting clears: the key's quota is used up
    ("openai", Refusal(429, "insufficient_quota", "You exceeded your current quota"), errors.CONFIG, "quota"),
])
def test_openai_format_errors_are_classified(llm, refusal, kind, says):
    # DashScope's compatible mode and any OpenAI-compatible endpoint, through the openai SDK
    found = _compatible(refusal, kind=llm)
    assert found is not None and found.kind == kind and says in found.reason
    if refusal.retry_after is not None:
        assert found.retry_after == refusal.retry_after  # Retry-After, as the endpoint said it


def test_an_unreachable_model_is_transient_and_other_errors_are_not_the_llms():
    import httpx
    import openai

    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    for raised in (openai.APIConnectionError(request=request), openai.APITimeoutError(request=request),
                   httpx.ConnectError("refused"), TimeoutError()):
        assert errors.classify(raised).kind == errors.TRANSIENT
    assert errors.classify(ValueError("a parser's complaint")) is None
    # MetaGPT and tenacity wrap what the provider raised: the cause decides
    try:
        try:
            raise RuntimeError("code: DataInspectionFailed, request_id: r1, message: refused")
        except RuntimeError as inner:
            raise Exception("Action failed") from inner
    except Exception as outer:  # noqa: BLE001
        assert errors.classify(outer).kind == errors.PERMANENT


def test_a_refused_request_ends_the_debate_naming_role_and_step_and_a_throttled_one_is_retried(tmp_path):
    from infra.testing.harness import Harness
    from tests.llm_endpoints import OpenAIEndpoint as Endpoint

    # GIVEN a debate whose model refuses the first turn's request on content grounds
    with Endpoint(key=KEY, script=[Refusal(400, "data_inspection_failed", "Input data may contain inappropriate content.")]) as ep:
        h = Harness(str(tmp_path / "a"), llm_factory=_compatible_llm(ep))
        cid = h.start("debate", text="Should cities ban cars?", max_turns=3)
        out = h.runner("persona").handle_event(h.pending_inbox()[0])
    # THEN the invocation ends it at once, as failed, naming who failed where and why; no retry is left to FC
    assert out[0]["outcome"] == "failed" and out[0]["llm_error"] == "permanent"
    end = h.convs.get_end(cid)
    assert end["status"] == "failed" and end["role"] == "Proponent"
    assert "Proponent" in end["reason"] and "at Speak" in end["reason"] and "content policy" in end["reason"]
    assert len(ep.requests) == 1

    # AND a throttled call is not the conversation's end: the invocation raises, so FC tries it again
    with Endpoint(key=KEY, script=[Refusal(429, "Throttling.RateQuota", "Requests rate limit exceeded")]) as ep:
        h = Harness(str(tmp_path / "b"), llm_factory=_compatible_llm(ep))
        cid = h.start("debate", text="Should cities ban cars?", max_turns=3)
        with pytest.raises(Exception):
            h.runner("persona").handle_event(h.pending_inbox()[0])
    assert h.convs.get_end(cid) is None


def _journaling(tmp_path, ep, **kw):
    from infra.testing.harness import Harness
    from shared.llm.journal import JournalingLLM

    h = Harness(str(tmp_path))
    cid = h.start()
    inner = _compatible_llm(ep)()
    return h, cid, JournalingLLM(inner, h.convs, cid, "c" * 16, holder="req-1", **kw)


def test_a_throttled_call_waits_as_retry_after_says_and_is_paid_once(tmp_path):
    slept: list[float] = []

    async def sleep(seconds):
        slept.append(seconds)

    throttled = Refusal(429, "Throttling.RateQuota", "Requests rate limit exceeded", retry_after=2)
    with OpenAIEndpoint(key=KEY, script=[throttled, "fine"]) as ep:
        h, cid, llm = _journaling(tmp_path, ep, throttle_budget=30, sleep=sleep)
        reply = asyncio.run(llm.acompletion_text([{"role": "user", "content": "hi"}]))
        assert reply == "fine" and len(ep.requests) == 2
    # THEN it waited what Retry-After asked (plus a little jitter), and the wait is not LLM time
    assert len(slept) == 1 and 2.0 <= slept[0] <= 2.2
    assert (llm.throttled, llm.paid) == (1, 1) and llm.waited_ms == slept[0] * 1000
    entry = h.convs.journal_get(cid, "c" * 16, 0)
    assert entry["reply"] == "fine" and entry["waited_ms"] == round(slept[0] * 1000, 1)
    assert llm.llm_ms < 1000  # the 2 s of backing off were not spent in the model


def test_past_its_waiting_budget_a_throttled_call_is_left_to_fcs_retry(tmp_path):
    slept: list[float] = []

    async def sleep(seconds):
        slept.append(seconds)

    throttled = Refusal(429, "Throttling.RateQuota", "Requests rate limit exceeded", retry_after=10)
    with OpenAIEndpoint(key=KEY, script=[throttled]) as ep:
        _, _, llm = _journaling(tmp_path, ep, throttle_budget=25, sleep=sleep)
        with pytest.raises(Exception) as err:
            asyncio.run(llm.acompletion_text([{"role": "user", "content": "hi"}]))
    assert len(slept) == 2 and sum(slept) <= 25 and len(ep.requests) == 3
    assert errors.classify(err.value).kind == errors.THROTTLED and llm.failed_call == 0 and llm.paid == 0


def test_a_turn_throttled_twice_commits_once_and_its_record_shows_the_wait(tmp_path):
    from infra.testing.harness import Harness

    throttled = Refusal(429, "Throttling.RateQuota", "Requests rate limit exceeded", retry_after=0)
    with OpenAIEndpoint(key=KEY, script=[throttled, throttled, "Streets are for people."]) as ep:
        h = Harness(str(tmp_path), llm_factory=_compatible_llm(ep))
        cid = h.start("debate", text="Should cities ban cars?", max_turns=1)
        out = h.runner("persona").handle_event(h.pending_inbox()[0])
    assert out[0]["outcome"] == "committed" and out[0]["llm_paid"] == 1
    assert out[0]["throttled"] == 2 and out[0]["waited_ms"] > 0
    assert [m["content"] for m in h.convs.messages(cid)[0]][1:] == ["Streets are for people."]


def test_past_its_waiting_a_throttled_turn_is_handed_back_and_the_later_invocation_pays_once(tmp_path):
    from shared import handback
    from shared.runner import RoleRunner

    throttled = Refusal(429, "Throttling.RateQuota", "Requests rate limit exceeded", retry_after=5)
    sent: list[tuple[bytes, float]] = []
    with OpenAIEndpoint(key=KEY, script=[throttled, "Streets are for people."]) as ep:
        h, cid = _debate(tmp_path, ep)
        # GIVEN a persona function that may not wait at all on the rate limit, and can hand turns back
        runner = RoleRunner(h.convs, "persona", h.llm_factory, throttle_wait_s=0.0,
                            handback=lambda event, delay: sent.append((event, delay)) or "req-later")
        out = runner.handle_event(h.pending_inbox()[0], "req-1")
        # THEN the invocation ends without an error, the turn goes back to FC for later, nothing is paid
        assert out[0]["outcome"] == "handed_back" and out[0]["handed_back"] == 1
        assert out[0]["throttled"] == 1 and out[0].get("llm_paid") == 0 and len(ep.requests) == 1
        assert 0 <= out[0]["queued_ms"] < 60_000  # since the OSS event's time
        assert len(sent) == 1 and 5.0 <= sent[0][1] <= 5.6  # Retry-After, with a little jitter
        back = handback.read(sent[0][0])
        assert back["attempt"] == 1 and back["key"].startswith("inbox/persona/")
        assert back["due"] - back["first"] == pytest.approx(sent[0][1], abs=1.0)  # when FC is to run it
        assert h.convs.get_end(cid) is None
        # AND watchers see the turn waiting for the model's rate limit, and until when
        status = h.http("GET", f"/conversations/{cid}")[1]
        assert status["status"] == "running" and status["running"]["waiting"] == "rate_limit"
        assert status["running"]["detail"] == "waiting for the model's rate limit" 
        waiting_role = status["running"]["role"]

        # WHEN FC runs the handed-back invocation (the model has room again)
        later = runner.handle_event(sent[0][0], "req-later")
    # THEN it commits the turn, paying the call once; a replay of the hand-back is a duplicate
    assert later[0]["outcome"] == "committed" and later[0]["llm_paid"] == 1 and len(ep.requests) == 2
    assert [(m["role"], m["content"]) for m in h.convs.messages(cid)[0]][1:] == [(waiting_role, "Streets are for people.")]
    assert runner.handle_event(sent[0][0], "req-again")[0]["outcome"] == "duplicate" and len(ep.requests) == 2
    assert h.http("GET", f"/conversations/{cid}")[1]["running"] is None  # the wait is over
    # AND the bill shows the wait apart from the LLM's part
    bill = h.http("GET", f"/conversations/{cid}/usage")[1]["total"]
    assert (bill["throttled"], bill["handed_back"], bill["llm_calls"]) == (1, 1, 1)


def test_a_hand_back_that_cannot_be_sent_leaves_the_turn_to_fcs_retries_and_bad_ones_are_rejected(tmp_path):
    from shared.runner import RoleRunner

    def broken(event, delay):
        raise OSError("FC API unreachable")

    throttled = Refusal(429, "Throttling.RateQuota", "Requests rate limit exceeded", retry_after=0)
    with OpenAIEndpoint(key=KEY, script=[throttled]) as ep:
        h, cid = _debate(tmp_path, ep)
        runner = RoleRunner(h.convs, "persona", h.llm_factory, throttle_wait_s=0.0, handback=broken)
        with pytest.raises(Exception) as err:
            runner.handle_event(h.pending_inbox()[0], "req-1")
    assert errors.classify(err.value).kind == errors.THROTTLED and h.convs.get_end(cid) is None
    # AND a malformed hand-back event is rejected, naming what is wrong
    for bad in (b'{"troupe_handback": {"key": "inbox/x", "attempt": 0, "first": 1, "due": 2}}',
                b'{"troupe_handback": {"key": "inbox/x", "attempt": 1, "first": 1, "due": "soon"}}',
                b'{"troupe_handback": "inbox/x"}'):
        out = runner.handle_event(bad, "req-2")
        assert out[0]["outcome"] == "rejected" and "troupe_handback" in out[0]["reason"]
    out = runner.handle_event(b'{"troupe_handback": {"key": "inbox/../etc", "attempt": 1, "first": 1, "due": 2}}', "r")
    assert out[0]["outcome"] == "rejected"


def test_a_turn_whose_claim_could_not_be_given_back_is_not_handed_back(tmp_path):
    from shared.runner import RoleRunner

    sent = []
    throttled = Refusal(429, "Throttling.RateQuota", "Requests rate limit exceeded", retry_after=0)
    with OpenAIEndpoint(key=KEY, script=[throttled]) as ep:
        h, cid = _debate(tmp_path, ep)

        def release_fails(*args):
            raise OSError("storage unreachable")

        h.convs.release_claim = release_fails
        runner = RoleRunner(h.convs, "persona", h.llm_factory, throttle_wait_s=0.0,
                            handback=lambda event, delay: sent.append(event) or "req-later")
        # THEN the invocation raises: FC's retry, under the same request id, takes the claim over as
        # its own, where a hand-back (another request id) would stand down behind it for good
        with pytest.raises(Exception) as err:
            runner.handle_event(h.pending_inbox()[0], "req-1")
    assert errors.classify(err.value).kind == errors.THROTTLED and sent == [] and h.convs.get_end(cid) is None


def _debate(tmp_path, ep):
    from infra.testing.harness import Harness

    h = Harness(str(tmp_path), llm_factory=_compatible_llm(ep))
    return h, h.start("debate", text="Should cities ban cars?", max_turns=2)


def test_a_software_company_role_refused_for_good_asks_the_model_once_not_metagpts_six_times(tmp_path):
    from infra.testing.harness import Harness

    refused = Refusal(400, "data_inspection_failed", "Input data may contain inappropriate content.")
    with OpenAIEndpoint(key=KEY, script=[refused]) as ep:
        h = Harness(str(tmp_path), llm_factory=_compatible_llm(ep))
        cid = h.start("software_company", text="A command-line todo list")
        # WHEN the product manager's PRD call is refused on content grounds
        out = h.runner("product_manager").handle_event(h.pending_inbox()[0])
    # THEN MetaGPT's retries (6 tries, minutes of waiting) stop at once: one request, the conversation failed
    assert len(ep.requests) == 1
    assert out[0]["outcome"] == "failed" and out[0]["llm_error"] == "permanent"
    end = h.convs.get_end(cid)
    assert end["status"] == "failed" and "content policy" in end["reason"] and end.get("step")


def test_a_call_tried_again_after_an_error_keeps_its_index_in_the_journal(tmp_path):
    from shared.llm.retries import worth_retrying

    # GIVEN a call that fails once (the model service), then is answered
    with OpenAIEndpoint(key=KEY, script=[Refusal(500, "InternalError", "An internal error has occured"),
                                         "fine"]) as ep:
        h, cid, llm = _journaling(tmp_path, ep)
        messages = [{"role": "user", "content": "hi"}]

        async def twice():
            try:
                await llm.acompletion_text(messages)
            except Exception as e:  # noqa: BLE001
                assert worth_retrying(e)  # a transient error: MetaGPT may try again
            else:
                raise AssertionError("the first try was answered")
            # WHEN it is tried again in the same invocation (as MetaGPT's tenacity retry does)
            return await llm.acompletion_text(messages)

        assert asyncio.run(twice()) == "fine"
    # THEN the answer is journaled as the invocation's first call, so a replay finds it there
    assert h.convs.journal_get(cid, "c" * 16, 0)["reply"] == "fine" and llm.calls == 1 and llm.paid == 1
    # AND if the turn fails later, the answered call's claim is kept (a retry replays it, never pays again)
    assert llm.abandon() and h.convs.get_claim(cid, "c" * 16, 0) is not None
    # AND what no retry fixes is not retried
    for refusal in (Refusal(400, "data_inspection_failed", "inappropriate"), Refusal(429, "Throttling.RateQuota")):
        with OpenAIEndpoint(key=KEY, script=[refusal]) as ep:
            _, _, other = _journaling(tmp_path / refusal.code, ep)
            with pytest.raises(Exception) as err:
                asyncio.run(other.acompletion_text(messages))
        assert not worth_retrying(err.value)


def test_an_events_time_reads_as_oss_writes_it():
    from shared.events import iso_epoch

    assert iso_epoch("1970-01-01T00:00:01.250Z") == 1.25 and iso_epoch("2026-12-03T09:00:00Z") == 1796288400
    assert iso_epoch("") is None and iso_epoch("yesterday") is None and iso_epoch("2026-13-03T09:00:00Z") is None
