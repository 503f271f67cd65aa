"""The bill and the budgets: every invocation priced, totals that add up, caps that hold."""

import pytest

from shared.billing import Budget, BudgetExhausted, bill_fields, estimate_tokens, llm_cost, load_prices
from infra.testing.scripted_llm import ScriptedLLM
from infra.testing.harness import Harness


def priced(name="qwen-max", max_token=100):
    """The scripted LLM, reporting a priced model's name and a short maximum reply."""
    return lambda model=None: ScriptedLLM(model=name, max_token=max_token)


def test_prices_come_from_the_table_and_unknown_models_are_never_free():
    table = load_prices()
    assert llm_cost("qwen-max", 1000, 1000) == pytest.approx(table["llm"]["qwen-max"]["input"] + table["llm"]["qwen-max"]["output"])
    assert llm_cost("qwen2.5-coder-1.5b-instruct", 5000, 5000) == 0
    assert llm_cost("some-new-model", 1000, 0) == pytest.approx(table["default"]["input"]) and table["default"]["input"] > 0


def test_compute_is_memory_times_duration():
    row = bill_fields(None, 0, 0, 1024, 2000)
    assert row["gb_s"] == pytest.approx(2.0)
    assert row["compute_cny"] == pytest.approx(2.0 * load_prices()["fc"]["gb_second"])


def test_estimate_is_an_upper_bound_for_chinese_and_english():
    assert estimate_tokens([{"content": "开发一个记账APP"}]) >= 7
    assert estimate_tokens([{"content": "word " * 100}]) >= 100


def test_money_budget_stops_before_the_call_that_would_exceed_it(tmp_path):
    # GIVEN a debate on a priced model with a money budget for only a few turns
    h = Harness(str(tmp_path), llm_factory=priced())
    cid = h.start(max_turns=50, max_cost_cny=0.004, rounds=20)
    # WHEN it runs
    h.pump()
    # THEN it ended with status budget_exhausted, naming the money budget
    end = h.convs.get_end(cid)
    assert end["status"] == "budget_exhausted" and end["budget"] == "max_cost_cny" and "max_cost_cny" in end["reason"]
    # AND what was paid stays within the budget, and the refused call was never made
    status, bill = h.http("GET", f"/conversations/{cid}/usage")
    assert status == 200
    assert 0 < bill["total"]["llm_cny"] <= 0.004
    turns = [m for m in h.transcript(cid) if m["turn"] > 0]
    assert 2 <= len(turns) < 50
    assert len(list(h.store.iter(f"conversations/{cid}/journal/"))) == len(turns)
    refused = [r for r in bill["rows"] if r["outcome"] == "budget_exhausted"]
    assert len(refused) == 1 and refused[0]["llm_calls"] == 0


def test_token_budget_names_its_budget(tmp_path):
    h = Harness(str(tmp_path), llm_factory=priced("troupe-fake"))
    cid = h.start(max_turns=50, max_tokens=1500, rounds=20)
    h.pump()
    end = h.convs.get_end(cid)
    assert end["status"] == "budget_exhausted" and end["budget"] == "max_tokens"
    spent = sum(m["invocation"]["prompt_tokens"] + m["invocation"]["completion_tokens"]
                for m in h.transcript(cid) if m.get("invocation"))
    assert 0 < spent <= 1500


def test_bill_totals_equal_the_sum_of_rows(tmp_path):
    # GIVEN a finished debate on a priced model, with a duplicate delivery thrown in
    h = Harness(str(tmp_path), llm_factory=priced("qwen-plus"))
    cid = h.start(max_turns=4)
    h.pump(copies=2)
    # WHEN the bill is read
    status, bill = h.http("GET", f"/conversations/{cid}/usage")
    # THEN there is a row per invocation, and the totals (overall and per role) are their sums
    assert status == 200 and bill["currency"] == "CNY"
    rows = bill["rows"]
    assert {r["function"] for r in rows} == {"gateway", "persona"}
    for key in ("prompt_tokens", "completion_tokens", "llm_cny", "cost_cny", "gb_s"):
        assert bill["total"][key] == pytest.approx(sum(r[key] for r in rows))
        assert sum(v[key] for v in bill["by_role"].values()) == pytest.approx(bill["total"][key])
    assert bill["total"]["invocations"] == len(rows)
    committed = [r for r in rows if r["outcome"] == "committed"]
    assert len(committed) == 4 and all(r["llm_cny"] > 0 and r["model"] == "qwen-plus" for r in committed)
    # duplicates paid no LLM call
    assert all(r["llm_cny"] == 0 for r in rows if r["outcome"] == "duplicate")


def test_budget_check_uses_spent_plus_worst_case():
    b = Budget({"max_cost_cny": 0.01}, {"tokens": 0, "cost_cny": 0.0095}, "qwen-max", 100)
    with pytest.raises(BudgetExhausted):
        b.check([{"content": "x"}])
    Budget({"max_cost_cny": 0.01}, {"tokens": 0, "cost_cny": 0.0}, "qwen-max", 100).check([{"content": "x"}])


def test_bad_budgets_are_refused(harness):
    for limits in ({"max_cost_cny": 0}, {"max_cost_cny": "1"}, {"max_tokens": 0}, {"max_cost_cny": True}):
        status, err = harness.http("POST", "/conversations", {"scenario": "debate", "input": "x", "limits": limits})
        assert status == 400 and list(limits)[0] in err["message"]
