"""Roles that draw on knowledge bases: passages in the prompt, citations on the turn, and
experience written back for later conversations."""

import pytest

from shared.knowledge import search, seed_samples
from infra.testing.scripted_llm import ScriptedLLM
from infra.testing.harness import Harness


class Recording(ScriptedLLM):
    """The scripted double, keeping every prompt it was sent."""

    prompts: list = []

    def _reply(self, messages):
        Recording.prompts.append("\n".join(str(m.get("content", "")) for m in messages))
        return super()._reply(messages)


@pytest.fixture()
def h(tmp_path):
    Recording.prompts = []
    script = {"CustomerService": ["Order LX-7781: a full refund of 1299 yuan is approved under the 30-day policy."],
              "Customer": ["My vacuum cleaner stopped working after two weeks. I want a refund, not a repair."]}
    h = Harness(str(tmp_path / "data"), llm_factory=lambda model=None: Recording(script=script))
    seed_samples(h.store)
    h.pump()  # the indexer's trigger indexes the sample base
    return h


def test_a_role_with_knowledge_is_given_passages_and_its_turn_cites_them(h):
    cid = h.start("customer_service", "I want a refund for my broken vacuum cleaner", rounds=1)
    h.pump()
    status, view = h.http("GET", f"/conversations/{cid}")
    assert view["status"] == "completed"
    agent = next(m for m in view["messages"] if m["role"] == "Agent")
    customer = next(m for m in view["messages"] if m["role"] == "Customer")
    assert agent["citations"] and customer["citations"] == []  # only roles with `knowledge:` search
    cited = agent["citations"][0]
    assert cited["kb"] == "lumen" and cited["doc"].endswith(".md") and cited["text"]
    assert {c["doc"] for c in agent["citations"]} & {"refund-policy.md", "warranty.md"}
    # the passages were in the prompt the agent's LLM call got
    prompt = next(p for p in Recording.prompts if "named Agent" in p)
    assert f"[{cited['id']}]" in prompt and cited["text"][:60] in prompt


def test_the_deliverable_is_written_back_and_a_later_conversation_draws_on_it(h):
    first = h.start("digital_employees", "Customer asks about order LX-7781 refund")
    h.pump()
    end = h.convs.get_end(first)
    assert end["status"] == "completed" and end["experience"]["doc"] == f"experience/{first}.md"
    doc = h.store.get(f"knowledge/lumen/docs/experience/{first}.md").decode()
    assert "LX-7781" in doc
    # the indexer indexed it through its trigger: a later conversation's roles find it
    assert any(p["doc"] == f"experience/{first}.md" for p in search(h.store, "lumen", "LX-7781 refund"))
    second = h.start("digital_employees", "What did we decide for order LX-7781?")
    h.pump()
    cited = {c["doc"] for m in h.transcript(second) for c in m.get("citations", [])}
    assert f"experience/{first}.md" in cited


def test_a_scenario_naming_a_bad_knowledge_base_is_refused(h):
    bad = {"id": "kb-bad", "flow": "round_robin", "rounds": 1,
           "roles": [{"name": "A", "profile": "p", "knowledge": ["no/such"]}, {"name": "B", "profile": "p"}]}
    status, body = h.http("POST", "/scenarios", bad)
    assert status == 400 and "knowledge" in body["details"]["field"]
    status, body = h.http("POST", "/scenarios", {**bad, "id": "kb-bad2", "roles": bad["roles"][1:] + [
        {"name": "C", "profile": "p"}], "experience": {"kb": "lumen"}})
    assert status == 400 and body["details"]["field"] == "experience"
    ids = {sc["id"] for sc in h.http("GET", "/scenarios")[1]["scenarios"]}
    assert not {"kb-bad", "kb-bad2"} & ids
