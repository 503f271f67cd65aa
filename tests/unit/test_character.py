"""What a scenario character is asked to say: the prompt its Speak action sends to the LLM."""

from infra.testing.scripted_llm import ScriptedLLM
from infra.testing.harness import Harness


class _Recording(ScriptedLLM):
    """The scripted LLM, keeping every prompt it is sent (per process, for the test)."""

    sent: list[list[dict]] = []

    async def _achat_completion(self, messages, timeout=60):
        _Recording.sent.append(messages)
        return await super()._achat_completion(messages, timeout)


def _prompts(tmp_path, text: str, max_turns: int) -> dict[str, str]:
    _Recording.sent = []
    h = Harness(str(tmp_path / "data"), llm_factory=lambda model=None: _Recording())
    h.start("debate", text=text, max_turns=max_turns)
    h.pump()
    by_speaker = {}
    for messages in _Recording.sent:
        system = " ".join(m["content"] for m in messages if m["role"] == "system")
        name = system.split("named ", 1)[1].split(",", 1)[0]
        by_speaker.setdefault(name, messages[-1]["content"])
    return by_speaker


def test_the_first_speaker_opens_the_scene_and_the_next_replies_to_it(tmp_path):
    prompts = _prompts(tmp_path, "Should cities ban cars?", max_turns=3)
    opening, reply, verdict = prompts["Proponent"], prompts["Opponent"], prompts["Judge"]
    # the topic is the scene's subject, not a speaker to answer
    assert "Scene topic: Should cities ban cars?" in opening
    assert "Turns so far:\n(none yet)" in opening and "You speak first: open the scene" in opening
    assert "reply to user" not in opening.lower() and "user:" not in opening
    # the next speaker sees the first turn and answers its author, briefly
    assert "Turns so far:\nProponent: " in reply and "reply to Proponent" in reply
    assert "at most three sentences" in reply and "in the language of the topic" in reply
    # the closing turn gets the scenario's instruction instead, without the length rule
    assert "Give your verdict" in verdict and "at most three sentences" not in verdict
    assert "Proponent: " in verdict and "Opponent: " in verdict and "The debate is over" not in verdict.split("\n\n")[0]


def test_a_chinese_topic_names_the_language(tmp_path):
    prompts = _prompts(tmp_path, "城市应该禁止汽车吗？", max_turns=2)
    assert "in Chinese (中文)" in prompts["Proponent"]


def test_the_scene_window_is_bounded_and_passes_through_a_human_turn(tmp_path):
    from shared.roles.character import HISTORY
    from shared.routing import SCENE, SCENE_CHARS

    _Recording.sent = []
    h = Harness(str(tmp_path / "data"), llm_factory=lambda model=None: _Recording())
    _, body = h.http("POST", "/conversations", {"scenario": "debate", "input": "Should cities ban cars?",
                                                "humans": ["Opponent"], "rounds": 6, "limits": {"max_turns": 20}})
    cid = body["id"]
    h.pump()
    for i in range(6):  # the person answers every time the floor is theirs
        status, _ = h.http("POST", f"/conversations/{cid}/messages",
                           {"role": "Opponent", "content": f"human point {i} " + "x" * 3000})
        assert status == 201
        h.pump()
    prompts = [m[-1]["content"] for m in _Recording.sent if "named Proponent" in m[0]["content"]]
    last = prompts[-1]
    # the person's turns reach the next speaker, cut to SCENE_CHARS, and the window holds at most HISTORY turns
    assert "Opponent: human point 4 " + "x" * (SCENE_CHARS - len("human point 4 ")) + "\n" in last
    transcript = last.split("Turns so far:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(transcript) == HISTORY and transcript[0].startswith(("Proponent: ", "Opponent: "))
    # and every committed turn's record carries a bounded window ending with its own words
    for m in h.transcript(cid)[1:]:
        stored = h.convs.message(cid, m["turn"], m["id"])
        assert 1 <= len(stored["scene"]) <= SCENE and stored["scene"][-1]["from"] == m["role"]


def test_a_copied_name_in_front_of_the_reply_is_dropped():
    import asyncio

    from shared.roles.character import Speak

    class _Says(ScriptedLLM):
        def __init__(self, reply):
            super().__init__()
            self.reply = reply

        async def aask(self, *args, **kwargs):
            return self.reply

    def said(reply, speaker="Opponent"):
        action = Speak()
        action.set_llm(_Says(reply), override=True)
        return asyncio.run(action.run("Motion", "", speaker, "Proponent"))

    assert said("Opponent: Cars feed the shops.") == "Cars feed the shops."
    assert said("**Opponent**： 汽车很重要。") == "汽车很重要。"
    assert said("Proponent: is wrong here.") == "Proponent: is wrong here."  # another name stays
    assert said("Opponent:") == "Opponent:"  # nothing else: kept, not emptied


def test_an_llm_director_is_shown_the_turns_before_the_last(tmp_path):
    import json

    _Recording.sent = []
    h = Harness(str(tmp_path / "data"), llm_factory=lambda model=None: _Recording())
    cid = h.start(scenario="digital_employees", text="a refund request", max_turns=6)
    meta = json.loads(h.store.get(h.convs.meta_key(cid)))
    meta["scenario"]["director"]["mode"] = "llm"
    h.store.put(h.convs.meta_key(cid), json.dumps(meta).encode())
    h.convs._meta_cache.clear()
    h.pump()
    asked = [m[-1]["content"] for m in _Recording.sent if m[-1]["content"].startswith("You direct a scene.")]
    spoken = [m for m in h.transcript(cid) if m["turn"] >= 1]
    assert len(asked) >= 3 and len(spoken) >= 3
    # the first choice has nothing before the opening; a later one sees earlier turns, by speaker
    # (the window holds the last 4: a panel's three answers push the oldest turns out)
    assert "Earlier turns:" not in asked[0]
    earlier = [a.split("Earlier turns:\n", 1)[1].split("Last speaker:", 1)[0] for a in asked if "Earlier turns:" in a]
    assert any(f"{spoken[0]['role']}: {spoken[0]['content'][:60]}" in e for e in earlier), earlier


def test_sentences_copied_from_earlier_turns_are_dropped_and_a_turn_is_never_empty():
    from shared.roles.copying import drop_copied

    earlier = ("Proponent: Cities should ban cars because they pollute the air and make the streets "
               "dangerous for children.\nOpponent: Banning cars would hurt small shops.")
    copied = "Cities should ban cars because they pollute the air and make the streets dangerous for children."
    new = "Buses and bicycles can carry the shoppers those small shops depend on."
    # a copied sentence goes, the new one stays (in either order)
    assert drop_copied(f"{copied} {new}", earlier) == new
    assert drop_copied(f"{new} {copied}", earlier) == new
    # a reply that only repeats is kept whole, and one that copies nothing is untouched
    assert drop_copied(copied, earlier) == copied
    assert drop_copied(new, earlier) == new
    # Chinese counts character by character
    zh_earlier = "正方：城市应该禁止汽车，因为汽车污染空气并且让街道变得危险。"
    assert drop_copied("城市应该禁止汽车，因为汽车污染空气并且让街道变得危险。公交和自行车同样可以服务商店。",
                       zh_earlier) == "公交和自行车同样可以服务商店。"


def test_each_debater_opens_with_its_stance_in_the_topics_language(tmp_path):
    from shared.llm import structured

    asked: list[tuple[str, dict | None]] = []

    class _Expecting(ScriptedLLM):
        async def _achat_completion(self, messages, timeout=60):
            what = structured.expected()
            system = " ".join(m["content"] for m in messages if m["role"] == "system")
            asked.append((system.split("named ", 1)[1].split(",", 1)[0], what.schema if what else None))
            return await super()._achat_completion(messages, timeout)

    def openings(topic):
        asked.clear()
        h = Harness(str(tmp_path / topic[:3]), llm_factory=lambda model=None: _Expecting())
        h.start("debate", text=topic, max_turns=3)
        h.pump()
        return {who: (schema or {}).get("properties", {}).get("reply", {}).get("pattern") for who, schema in asked}

    en = openings("Should cities ban cars?")
    assert en["Proponent"].startswith("^My answer is yes[") and en["Opponent"].startswith("^My answer is no[")
    assert en["Judge"] is None  # no stance: the judge's verdict opens as it likes
    zh = openings("城市应该禁止汽车吗？")
    assert zh["Proponent"].startswith("^我的回答是应该[") and zh["Opponent"].startswith("^我的回答是不应该[")


def test_a_turn_that_only_repeats_is_asked_again_once_and_its_own_openers_are_out_of_view():
    import asyncio

    from shared.llm import structured
    from shared.roles.character import RETRY_TEMPERATURE, Character

    earlier = "Buses are slow and the old need cars to reach the doctor."
    asked: list[tuple[str, float | None]] = []

    async def _said(msg, reply):
        asked.append((msg, structured.expected().temperature))
        return reply

    class _Copies(ScriptedLLM):
        async def aask(self, msg, *args, **kwargs):
            what = structured.expected()
            asked.append((msg, what.temperature))
            return f"My answer is no, {earlier}" if len(asked) == 1 else "My answer is no, shops need deliveries."

    role = Character(name="Opponent", profile="debater against the motion", topic="Ban cars?",
                     stance={"en": "My answer is no"}, llm=_Copies())
    role.scene = [{"from": "Proponent", "content": "My answer is yes, streets are for people."},
                  {"from": "Opponent", "content": f"My answer is no, {earlier}"},
                  {"from": "Proponent", "content": "My answer is yes, the air gets cleaner."}]
    role.rc.news = []
    role._set_state(0)  # its one action, Speak
    said = asyncio.run(role._act()).content
    # the copy was asked again once, told so and sampled wider; the second answer is the turn
    assert said == "My answer is no, shops need deliveries."
    assert len(asked) == 2 and asked[0][1] is None and asked[1][1] == RETRY_TEMPERATURE
    assert "only repeated what was already said" in asked[1][0]
    # its own opener is out of view in the transcript; the other side's stays
    assert f"Opponent: {earlier}" in asked[0][0] and "Proponent: My answer is yes, the air" in asked[0][0]

    # a second answer that copies too leaves the turn its side alone
    asked.clear()
    _Copies.aask = lambda self, msg, *a, **k: _said(msg, f"My answer is no, {earlier}")
    assert asyncio.run(role._act()).content == "My answer is no."
    assert len(asked) == 2

    # an opening turn, with nothing said before, is never asked twice
    asked.clear()
    role.scene = []
    asyncio.run(role._act())
    assert len(asked) == 1
