"""A failed LLM call gives its claim back, so a re-driven delivery is not told to wait for it."""

import json

import pytest


class DownLLM:
    """The scripted LLM, but its endpoint is down until `up` is set."""

    up = False

    def __new__(cls, model=None):
        from infra.testing.scripted_llm import ScriptedLLM

        class _Down(ScriptedLLM):
            async def _achat_completion(self, messages, timeout=60):
                if not DownLLM.up:
                    raise ConnectionError("model endpoint down")
                return await super()._achat_completion(messages, timeout)

        return _Down()


def test_a_failed_llm_call_releases_its_claim_for_a_redrive(tmp_path):
    from infra.testing.harness import Harness

    # GIVEN a delivery whose LLM call fails (the endpoint is down) on every attempt of its request
    DownLLM.up = False
    h = Harness(str(tmp_path), llm_factory=DownLLM)
    cid = h.start(max_turns=2)
    event, = h.pending_inbox()
    for _ in range(3):
        with pytest.raises(Exception):
            h.runner("persona").handle_event(event, request_id="req-failed")
    # WHEN the cause is fixed and the event is re-driven at once, as a new request
    DownLLM.up = True
    out = h.runner("persona").handle_event(event, request_id="req-redrive")
    # THEN it does the turn (it is not told another invocation is making the call)
    assert out[0]["outcome"] == "committed" and out[0]["llm_paid"] == 1
    h.pump()
    assert [m["role"] for m in h.transcript(cid)] == ["user", "Proponent", "Judge"]


def test_a_late_duplicate_does_not_roll_the_role_state_back(tmp_path):
    import threading

    from shared.conversation import ConversationStore
    from shared.runner import RoleRunner
    from infra.testing.harness import Harness

    # GIVEN a 7-turn debate, and a duplicate B of the first delivery that read the Proponent's
    # state (empty) and then stalled before its LLM call
    h = Harness(str(tmp_path))
    cid = h.start(rounds=3, max_turns=7)
    first, = h.pending_inbox()
    gate, waiting = threading.Event(), threading.Event()

    class Stalled(ConversationStore):
        def claim(self, *a, **kw):
            waiting.set()
            gate.wait(30)
            return super().claim(*a, **kw)

    late = RoleRunner(Stalled(h.store), "persona", h.llm_factory)
    out_b = []
    b = threading.Thread(target=lambda: out_b.extend(late.handle_event(first, request_id="req-b")))
    b.start()
    assert waiting.wait(30)
    # WHEN the original does turn 1, and the chain goes on to the Proponent's turn 3
    h.deliver(first)
    for _ in range(2):
        event, = h.pending_inbox()
        h.deliver(event)
    state3 = h.convs.load_state(cid, "Proponent")
    assert state3["turn"] == 3
    # AND only then the stalled duplicate goes on (it replays turn 1 from the journal)
    gate.set()
    b.join(30)
    # THEN the Proponent's state still holds turn 3: the duplicate did not write its stale state
    assert h.convs.load_state(cid, "Proponent") == state3
    h.pump()
    assert [m["turn"] for m in h.transcript(cid)] == list(range(8))


def _selector_scene_with_llm_director(h):
    """A digital_employees scene whose director asks its LLM: (meta, the director's event, its delivery)."""
    cid = h.start(scenario="digital_employees", text="a refund request")
    meta = json.loads(h.store.get(h.convs.meta_key(cid)))
    meta["scenario"]["director"]["mode"] = "llm"
    h.store.put(h.convs.meta_key(cid), json.dumps(meta).encode())
    h.convs._meta_cache.clear()
    event, = h.pending_inbox()
    return meta, event, h.convs.read_delivery(json.loads(event)["events"][0]["oss"]["object"]["key"])


def test_racing_copies_of_a_director_delivery_name_one_next_speaker(tmp_path):
    import threading

    from shared.director import pick_by_rule
    from infra.testing.scripted_llm import ScriptedLLM
    from infra.testing.harness import Harness

    # GIVEN a selector scene whose director asks a (slow) LLM, which names someone the rules would not
    h = Harness(str(tmp_path), llm_factory=lambda model=None: ScriptedLLM(latency=0.3, script={"assistant": ["Finance"]}))
    meta, event, delivery = _selector_scene_with_llm_director(h)
    assert pick_by_rule(meta["scenario"], delivery["message"]["content"], "user", []) != "Finance"
    # WHEN two copies of its delivery run at once
    outcomes = []
    threads = [threading.Thread(target=lambda r=r: outcomes.extend(h.runner("director").handle_event(event, request_id=r)))
               for r in ("req-a", "req-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN one routes the turn to the LLM's choice and the other stands down: one next speaker,
    # the assessment panel Finance answers in (its three members' deliveries, from one choice)
    assert sorted(o["outcome"] for o in outcomes) == ["in_flight", "routed"]
    nxt = [h.convs.read_delivery(i.key) for i in h.store.iter("inbox/persona/")]
    assert sorted(d["to"] for d in nxt) == ["Finance", "Marketing", "RiskControl"]
    assert len({d["panel"]["parent"] for d in nxt}) == 1


def test_a_commit_whose_answer_was_lost_is_billed_once(harness):
    from shared.errors import TransientStoreError

    # GIVEN a store whose first put of a message goes through but answers with a timeout, so
    # the store's retry meets the object it wrote itself (409)
    disk = harness.store.inner  # the backend under the local runtime's event spool
    real_put = disk._put
    lost = []

    def put(key, data, create_only):
        info = real_put(key, data, create_only)
        if "/messages/" in key and not lost:
            lost.append(key)
            raise TransientStoreError("timeout after the put went through")
        return info

    cid = harness.start(max_turns=2)
    disk._put = put
    # WHEN the debate runs
    out = harness.runner("persona").handle_event(harness.pending_inbox()[0])
    harness.pump()
    # THEN that invocation counts as the turn's committer, with one invocation record, not two
    assert lost and out[0]["outcome"] == "committed"
    rows = [r for r in harness.convs.invocations(cid) if r["function"] == "persona"]
    assert [r["outcome"] for r in rows] == ["committed", "committed"]


def test_a_director_retry_keeps_the_choice_an_earlier_attempt_made_by_the_rules(tmp_path):
    from shared.director import pick_by_rule
    from infra.testing.scripted_llm import ScriptedLLM
    from infra.testing.harness import Harness

    # GIVEN a selector scene whose director's LLM fails once (the rules choose) and then answers
    # with someone the rules would not pick
    calls = []

    class Flaky(ScriptedLLM):
        async def _achat_completion(self, messages, timeout=60):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("the LLM endpoint answered 500")
            return await super()._achat_completion(messages, timeout)

    h = Harness(str(tmp_path), llm_factory=lambda model=None: Flaky(script={"assistant": ["Finance"]}))
    meta, event, delivery = _selector_scene_with_llm_director(h)
    by_rule = pick_by_rule(meta["scenario"], delivery["message"]["content"], "user", [])
    assert by_rule != "Finance"
    # WHEN the delivery is handled, then handled again (a duplicate, or FC's retry)
    first, = h.runner("director").handle_event(event, request_id="req-a")
    second, = h.runner("director").handle_event(event, request_id="req-b")
    # THEN both name the speaker the first attempt chose, and only one delivery exists
    assert first["chosen"] == second["chosen"] == by_rule and first["how"] == "rule"
    nxt = [i.key for i in h.store.iter("inbox/persona/")]
    assert len(nxt) == 1 and h.convs.read_delivery(nxt[0])["to"] == by_rule


def test_a_replay_whose_prompt_differs_from_the_journaled_one_is_counted(tmp_path):
    import asyncio

    from infra.testing.scripted_llm import ScriptedLLM
    from shared.llm.journal import JournalingLLM
    from infra.testing.harness import Harness

    h = Harness(str(tmp_path))
    cid = h.start()
    first = JournalingLLM(ScriptedLLM(), h.convs, cid, "a" * 16, holder="req-1")
    reply = asyncio.run(first.acompletion_text([{"role": "user", "content": "Tea or coffee?"}]))
    same = JournalingLLM(ScriptedLLM(), h.convs, cid, "a" * 16, holder="req-2")
    assert asyncio.run(same.acompletion_text([{"role": "user", "content": "Tea or coffee?"}])) == reply
    assert (same.replayed, same.mismatched, same.paid) == (1, 0, 0)
    other = JournalingLLM(ScriptedLLM(), h.convs, cid, "a" * 16, holder="req-3")
    assert asyncio.run(other.acompletion_text([{"role": "user", "content": "Coffee or tea?"}])) == reply
    assert (other.replayed, other.mismatched, other.paid) == (1, 1, 0)  # replayed, never paid twice
