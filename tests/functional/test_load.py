"""Past the LLM's rate limit: debates at once on a DashScope-wire endpoint that enforces a rate limit
per second slow down, and none fails (infra/testing/load.py; `make bench-load` runs it at full
scale). The hand-back of throttled turns goes through FC 3.0's SDK as a delayed async invocation."""

from __future__ import annotations

import os
import time

from infra.fc.client import make_invoker
from infra.fc.config import Credentials
from infra.testing.load import LoadRun
from tests.llm_endpoints import DashScopeEndpoint


def test_debates_on_a_rate_limited_model_all_complete_each_call_paid_once(tmp_path):
    # GIVEN 8 debates at once on a model allowing 4 requests a second, and role functions that may
    # wait only a second on its rate limit before handing a turn back to FC
    with DashScopeEndpoint(key="sk-load", rpm=240) as ep, \
            LoadRun(str(tmp_path), ep, instances=3, throttle_wait_s=1.0) as run:
        r = run.run(debates=8, turns=3, timeout=240)
    # THEN every debate completed, with each of its turns once, and no call was paid twice
    assert r["not_completed"] == [] and r["lost"] == 0 and r["duplicated"] == 0, r
    assert r["answered_requests"] == r["journal_entries"] == r["paid_in_records"] == 24, r
    assert r["dead_letters"] == 0
    # AND the rate limit was really hit, waited on inside invocations and past that handed back
    assert r["throttled_requests"] > 0 and r["throttled_in_records"] == r["throttled_requests"], r
    assert r["handed_back"] > 0, r


def test_the_invoke_api_delays_an_async_invocation_as_x_fc_async_delay_says(tmp_path):
    from alibabacloud_fc20230330 import models
    from darabonba.runtime import RuntimeOptions
    from Tea.exceptions import TeaException

    from infra.local.runtime import LocalRuntime

    with LocalRuntime(str(tmp_path / "data")) as rt:
        key = rt.api_server.access_key
        client = make_invoker("fc3", rt.api_url, Credentials(key.id, key.secret, "")).client

        def invoke(delay: str):
            return client.invoke_function_with_options(
                "troupe-persona", models.InvokeFunctionRequest(body=b'{"events": []}'),
                models.InvokeFunctionHeaders(x_fc_invocation_type="Async", common_headers={"x-fc-async-delay": delay}),
                RuntimeOptions(autoretry=False))

        # WHEN an async invocation asks to be run 2 s later
        sent = time.time()
        assert invoke("2").status_code == 202
        while not [r for r in rt.scheduler.invocation_log if r.function_id == "persona"] and time.time() - sent < 20:
            time.sleep(0.05)
        ran = [r for r in rt.scheduler.invocation_log if r.function_id == "persona"]
        # THEN it ran once, no sooner than that
        assert len(ran) == 1 and ran[0].start - sent >= 1.9
        # AND a delay FC would refuse is refused with a 400 naming the header
        for bad in ("3601", "soon"):
            try:
                invoke(bad)
            except TeaException as e:
                assert "x-fc-async-delay" in str(e.message) and e.code == "InvalidArgument"
            else:
                raise AssertionError(f"x-fc-async-delay {bad!r} was accepted")
        # AND one still waiting when the runtime stops is a dead letter, not lost
        assert invoke("600").status_code == 202
        rt.stop(timeout=0.5)
        letters = os.listdir(os.path.join(rt.runtime_dir, "deadletters", "persona"))
        assert len(letters) == 1
        with open(os.path.join(rt.runtime_dir, "deadletters", "persona", letters[0])) as f:
            assert "RuntimeStopped" in f.read()
