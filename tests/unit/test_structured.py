"""shared.llm.structured: the JSON MetaGPT's action nodes expect, asked of the provider in the
form it supports, and code replies that end with a closed fence."""

from __future__ import annotations

import asyncio
import json

import pytest

import shared.mg  # noqa: F401  (pins MetaGPT's root before it is imported)
from shared.llm import make_llm, structured
from shared.llm.structured import Expected, close_code, code_budget, expect, node_schema, request_changes
from tests.llm_endpoints import DashScopeEndpoint, OpenAIEndpoint


def _body(block: str) -> str:
    """The code inside a ```python block."""
    assert block.startswith("```python\n") and block.endswith("\n```"), block
    return block[len("```python\n"):-len("\n```")]


def _prd_mapping():
    from metagpt.actions.write_prd_an import NODES

    return {node.key: (node.expected_type, ...) for node in NODES}


def test_a_prd_schema_requires_every_key_and_bounds_what_can_grow():
    schema = node_schema(_prd_mapping())
    props = schema["properties"]
    assert schema["required"] == list(props) and schema["additionalProperties"] is False
    assert len(props) == 12
    assert props["Project Name"]["pattern"] == structured.PROJECT_PATTERN
    assert props["User Stories"]["maxItems"] == 5 and props["User Stories"]["items"]["maxLength"] == 300
    pool = props["Requirement Pool"]["items"]
    assert pool["minItems"] == pool["maxItems"] == 2 and len(pool["prefixItems"]) == 2
    assert all("maxLength" in p or "pattern" in p for p in props.values() if p["type"] == "string")


def test_file_names_in_designs_and_tasks_are_patterned():
    from metagpt.actions.design_api_an import NODES as DESIGN
    from metagpt.actions.project_management_an import NODES as TASKS

    design = node_schema({n.key: (n.expected_type, ...) for n in DESIGN})["properties"]
    tasks = node_schema({n.key: (n.expected_type, ...) for n in TASKS})["properties"]
    assert design["File list"]["items"]["pattern"] == structured.FILE_PATTERN
    assert design["File list"]["minItems"] == 1
    assert tasks["Task list"]["items"]["pattern"] == structured.FILE_PATTERN
    assert tasks["Logic Analysis"]["items"]["prefixItems"][0]["pattern"] == structured.FILE_PATTERN
    assert design["Data structures and interfaces"]["type"] == "string"  # Optional[str]: still asked for
    import re

    for good in ("main.py", "todo/cli.py", "snake_game.py"):
        assert re.fullmatch(structured.FILE_PATTERN, good)
    for bad in ("../x.py", "/etc/x.py", "a/../../b.py", "README.md", "x.py/..", "C:\\x.py"):
        assert not re.fullmatch(structured.FILE_PATTERN, bad)


def test_each_mode_asks_in_its_providers_form():
    what = Expected("json", "WritePRD", {"type": "object"})
    messages = [{"role": "user", "content": "Write the PRD."}]
    with expect(what):
        assert request_changes("schema", messages, 1500) == {
            "response_format": {"type": "json_object", "schema": {"type": "object"}}}
        assert request_changes("json_schema", messages, 1500)["response_format"] == {
            "type": "json_schema", "json_schema": {"name": "WritePRD", "strict": True, "schema": {"type": "object"}}}
        plain = request_changes("json_object", messages, 1500)
        assert plain["response_format"] == {"type": "json_object"}
        assert "json" in plain["messages"][-1]["content"].lower()  # DashScope refuses it without the word
        assert "messages" not in request_changes("json_object", [{"role": "user", "content": "as JSON"}], 1500)
        assert request_changes("off", messages, 1500) == {}
    assert request_changes("schema", messages, 1500) == {}  # nothing expected: nothing added
    with expect(Expected("code", "WriteCode", budget=600)):
        assert request_changes("schema", messages, 1500) == {"max_tokens": 600}
        assert request_changes("schema", messages, 400) == {}


@pytest.mark.parametrize("kind,model,mode", [("dashscope", "qwen-plus", "json_schema"),
                                             ("dashscope", "qwen-max-latest", "json_schema"),
                                             ("dashscope", "qwen-turbo", "json_object"),
                                             ("dashscope-openai", "qwen-flash", "json_schema"),
                                             ("dashscope-openai", "qwen2.5-7b-instruct", "json_object"),
                                             ("openai", "gpt-4o", "off")])
def test_default_modes(kind, model, mode):
    assert structured.default_mode(kind, model) == mode


def test_a_bad_mode_names_the_variable():
    from shared.llm import LLMConfigError

    with pytest.raises(LLMConfigError, match="TROUPE_LLM_JSON"):
        make_llm({"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": "http://127.0.0.1:9/v1", "TROUPE_LLM_JSON": "grammar"})


# -- code ---------------------------------------------------------------------------------------


def test_a_closed_block_loses_only_its_trailing_chatter():
    text = "Here it is:\n```python\ndef f():\n    return 1\n```\nThis function returns one."
    assert close_code(text) == "Here it is:\n```python\ndef f():\n    return 1\n```"


def test_a_block_cut_off_by_its_budget_is_cut_back_to_what_compiles_and_closed():
    text = "```python\nimport os\n\n\ndef f():\n    return 1\n\n\ndef g(x):\n    if x:\n        return [1,"
    out = close_code(text)
    assert out.endswith("\n```") and "def g" not in out
    body = _body(out)
    compile(body, "x", "exec")
    assert "def f" in body


def test_code_without_a_fence_is_fenced():
    assert close_code("print('hi')\n") == "```python\nprint('hi')\n```"


def test_metagpts_parser_reads_the_shaped_code():
    from metagpt.utils.common import CodeParser

    cut = "```python\nclass Todo:\n    def add(self, item):\n        self.items.append(item)\n\nclass Li"
    assert CodeParser.parse_code(block="", text=close_code(cut)).startswith("class Todo:")


def test_a_budget_grows_with_the_plan_and_stays_under_the_cap():
    small = "## Code: cli.py\nLogic Analysis: [[\"cli.py\", \"main() parses args\"]]"
    big = ("## Code: store.py\n[\"store.py\", \"class TodoStore with add(), remove(), done(), list_items(), "
           "save(), load(), search(), clear()\"]")
    assert structured.CODE_BASE_TOKENS <= code_budget(small, 1500) < code_budget(big, 1500) <= 1500
    assert code_budget(big, 800) == 800


# -- at the protocol level ----------------------------------------------------------------------


def _fill(llm, mapping_nodes):
    """Fill a MetaGPT ActionNode the way WritePRD does, through the provider `llm`."""
    from metagpt.actions.action_node import ActionNode

    structured.install()
    node = ActionNode.from_children("WritePRD", mapping_nodes)
    node.set_llm(llm)
    return asyncio.run(node.fill(context="A todo list CLI", llm=llm, schema="json"))


def _prd_reply(_request=None) -> str:
    return json.dumps({
        "Language": "en_us", "Programming Language": "Python", "Original Requirements": "A todo list CLI",
        "Project Name": "todo_cli", "Product Goals": ["Fast"], "User Stories": ["As a user I add todos"],
        "Competitive Analysis": ["todo.txt: plain"], "Competitive Quadrant Chart": "quadrantChart",
        "Requirement Analysis": "Add, list, remove.", "Requirement Pool": [["P0", "add a todo"]],
        "UI Design draft": "A command line.", "Anything UNCLEAR": ""})


@pytest.mark.parametrize("model,fmt", [("qwen-plus", "json_schema"), ("qwen-turbo", "json_object")])
def test_dashscope_gets_its_structured_output_and_metagpt_parses_the_reply(model, fmt):
    from metagpt.actions.write_prd_an import NODES

    with DashScopeEndpoint(script=_prd_reply) as ep:
        llm = make_llm({"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": ep.key, "DASHSCOPE_HTTP_BASE_URL": ep.base_url,
                        "TROUPE_LLM_MODEL": model})
        node = _fill(llm, NODES)
        sent = ep.requests[-1].body["parameters"]
    assert sent["response_format"]["type"] == fmt
    if fmt == "json_schema":
        assert sent["response_format"]["json_schema"]["schema"]["required"][3] == "Project Name"
    else:
        assert any("json" in m["content"].lower() for m in ep.requests[-1].messages)
    assert node.instruct_content.model_dump()["Project Name"] == "todo_cli"


def test_the_embedded_servers_request_carries_the_schema_and_others_are_unchanged():
    from metagpt.actions.write_prd_an import NODES

    with OpenAIEndpoint(script=_prd_reply) as ep:
        local = make_llm({"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": ep.base_url, "TROUPE_LLM_API_KEY": ep.key,
                          "TROUPE_LLM_JSON": "schema"})
        node = _fill(local, NODES)
        schema = ep.requests[-1].body["response_format"]["schema"]
        plain = make_llm({"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": ep.base_url, "TROUPE_LLM_API_KEY": ep.key})
        asyncio.run(plain.aask("hello"))
        assert "response_format" not in ep.requests[-1].body
    assert schema["properties"]["Project Name"]["pattern"] == structured.PROJECT_PATTERN
    assert node.instruct_content.model_dump()["Requirement Pool"] == [["P0", "add a todo"]]


def test_no_string_bound_exceeds_what_llamacpps_grammar_parser_accepts():
    from metagpt.actions.design_api_an import NODES as DESIGN
    from metagpt.actions.project_management_an import NODES as TASKS
    from metagpt.actions.write_prd_an import NODES as PRD

    def bounds(schema):
        if isinstance(schema, dict):
            if "maxLength" in schema:
                yield schema["maxLength"]
            for v in schema.values():
                yield from bounds(v)
        elif isinstance(schema, list):
            for v in schema:
                yield from bounds(v)

    for nodes in (PRD, DESIGN, TASKS):
        assert max(bounds(node_schema({n.key: (n.expected_type, ...) for n in nodes}))) <= structured.MAX_STRING


def test_a_turn_of_dialogue_restates_its_side_only_where_that_can_be_enforced():
    side = "Opponent, debater against the motion: argue against the motion"
    what = Expected("dialogue", "Speak", schema=structured.dialogue_schema(side))
    messages = [{"role": "user", "content": "Your turn."}]
    with expect(what):
        fmt = request_changes("schema", messages, 256)["response_format"]
        assert fmt["schema"]["properties"]["side"]["enum"] == [side]
        assert fmt["schema"]["required"] == ["side", "reply"]
        assert request_changes("json_schema", messages, 256) == {}  # the cloud's models keep their side
        assert request_changes("json_object", messages, 256) == {}
    with expect(Expected("dialogue", "Speak", schema=structured.dialogue_schema(side), temperature=1.0)):
        # a second try of a turn samples wider, on every provider
        assert request_changes("schema", messages, 256)["temperature"] == 1.0
        assert request_changes("json_object", messages, 256) == {"temperature": 1.0}
    reply = json.dumps({"side": side, "reply": "Cars carry the sick and the old."})
    assert structured.shape(reply, what) == "Cars carry the sick and the old."
    assert structured.shape("Plain words.", what) == "Plain words."  # a provider that was not asked
    assert structured.shape('"a json string"', what) == '"a json string"'


def test_a_character_speaks_through_the_side_schema_on_the_embedded_servers_wire():
    from shared.roles.character import Speak

    side_reply = lambda rec: json.dumps({"side": rec.body["response_format"]["schema"]["properties"]["side"]["enum"][0],  # noqa: E731
                                         "reply": "Opponent: Streets are for people."})
    with OpenAIEndpoint(script=side_reply) as ep:
        llm = make_llm({"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": ep.base_url, "TROUPE_LLM_API_KEY": ep.key,
                        "TROUPE_LLM_JSON": "schema"})
        text = asyncio.run(Speak(llm=llm).run("Ban cars?", "Proponent: Yes.", "Opponent", "Proponent",
                                              profile="debater against the motion", goal="argue against"))
        side = ep.requests[-1].body["response_format"]["schema"]["properties"]["side"]["enum"][0]
    assert side == "Opponent, debater against the motion: argue against"
    assert text == "Streets are for people."  # the reply alone, without the name in front


def test_a_character_with_a_stance_opens_its_turn_with_it_on_the_embedded_servers_wire():
    import re

    from shared.roles.character import Speak

    reply = "I oppose the motion, because a ban strands people who cannot walk far."
    said = lambda rec: json.dumps({"reply": reply} if "Sum up" not in str(rec.body) else {"side": "x", "reply": "Done."})  # noqa: E731
    with OpenAIEndpoint(script=said) as ep:
        llm = make_llm({"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": ep.base_url, "TROUPE_LLM_API_KEY": ep.key,
                        "TROUPE_LLM_JSON": "schema"})

        async def both():
            text = await Speak(llm=llm).run("Ban cars?", "Proponent: Yes.", "Opponent", "Proponent",
                                            profile="debater against the motion", stance="I oppose the motion")
            # a closing deliverable is not a turn of the debate: it opens as it likes
            await Speak(llm=llm).run("Ban cars?", "Proponent: Yes.", "Opponent", "everyone",
                                     instruction="Sum up.", stance="I oppose the motion")
            return text

        text = asyncio.run(both())
        turn, closing = (r.body["response_format"]["schema"] for r in ep.requests if "response_format" in r.body)
    assert text == reply
    pattern = turn["properties"]["reply"]["pattern"]
    assert turn["required"] == ["reply"] and pattern.startswith("^I oppose the motion")
    assert re.match(pattern, reply) and not re.match(pattern, "I support the motion, because air matters.")
    assert not re.match(pattern, "I oppose the motion, no.")  # a turn says something
    assert "side" in closing["properties"] and "pattern" not in closing["properties"]["reply"]
    # llama.cpp's server turns the schema into a grammar; the pattern must be one it accepts
    grammar = pytest.importorskip("llama_cpp.llama_grammar")
    gbnf = grammar.json_schema_to_gbnf(json.dumps(turn))
    assert "root ::=" in gbnf and "I oppose the motion" in gbnf.replace('" "', "")  # adjacent literals joined


def test_the_journal_keeps_the_shaped_reply_and_a_replay_pays_nothing(tmp_path):
    from shared.llm.journal import JournalingLLM
    from infra.testing.harness import Harness

    h = Harness(str(tmp_path))
    cid = h.start()
    cut = "Sure:\n```python\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a -"
    with OpenAIEndpoint(script=[cut]) as ep:
        env = {"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": ep.base_url, "TROUPE_LLM_API_KEY": ep.key,
               "TROUPE_LLM_JSON": "schema"}
        messages = [{"role": "user", "content": "## Code: calc.py"}]
        replies = []
        for holder in ("req-1", "req-2"):  # the invocation, then a duplicate of its event
            llm = JournalingLLM(make_llm(env), h.convs, cid, "b" * 16, holder=holder)
            with expect(Expected("code", "WriteCode", budget=300)):
                replies.append(asyncio.run(llm.acompletion_text(messages)))
        assert len(ep.requests) == 1 and ep.requests[0].body["max_tokens"] == 300
    assert replies[0] == replies[1] == "```python\ndef add(a, b):\n    return a + b\n```"
    entry = h.convs.journal_get(cid, "b" * 16, 0)
    assert entry["reply"] == replies[0] and entry["expects"] == "code:WriteCode"


def test_a_test_class_cut_off_mid_method_keeps_its_whole_methods():
    cut = ("```python\nimport unittest\nfrom todo import add\n\n\nclass TestAdd(unittest.TestCase):\n"
           "    def test_one(self):\n        self.assertEqual(add(1, 1), 2)\n\n"
           "    @unittest.skip('x')\n    def test_two(self):\n        self.assertEqual(add(")
    body = _body(close_code(cut))
    compile(body, "x", "exec")
    assert "def test_one" in body and "test_two" not in body and "@unittest.skip" not in body


def test_a_method_is_never_left_half_written_at_a_nested_function():
    cut = ("```python\nimport unittest\n\n\nclass TestCalc(unittest.TestCase):\n    def test_ok(self):\n"
           "        self.assertTrue(True)\n\n    def test_a(self):\n        c = 1\n\n        def helper(x):\n"
           "            return x\n\n        self.assertEqual(helper(c), ")
    body = _body(close_code(cut))
    compile(body, "x", "exec")
    assert "def test_ok" in body and "test_a" not in body and "helper" not in body


def test_a_prd_is_pinned_to_the_requirement_its_prompt_states_not_the_format_examples():
    from metagpt.actions.write_prd import CONTEXT_TEMPLATE
    from metagpt.actions.write_prd_an import WRITE_PRD_NODE

    from shared.llm.structured import pin_stated

    # GIVEN WritePRD's own prompt for a requirement (context, then MetaGPT's format example: a 2048 game)
    context = CONTEXT_TEMPLATE.format(requirements="开发一个记账APP", project_name="")
    prompt = WRITE_PRD_NODE.compile(context=context, schema="json", mode="auto")
    assert "Create a 2048 game" in prompt
    # WHEN its schema is made
    schema = pin_stated(node_schema(_prd_mapping()), prompt)
    # THEN the requirement is the one value its field may take; the rest is as before
    assert schema["properties"]["Original Requirements"] == {"type": "string", "enum": ["开发一个记账APP"]}
    assert {k: v for k, v in schema["properties"].items() if k != "Original Requirements"} == {
        k: v for k, v in node_schema(_prd_mapping())["properties"].items() if k != "Original Requirements"}
    # AND a prompt that states nothing, or a node without the key, is left alone
    assert pin_stated(node_schema(_prd_mapping()), "no context") == node_schema(_prd_mapping())
