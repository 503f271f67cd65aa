"""A scenario character: a real MetaGPT Role with one real Action, speaking in turn.

The character reacts only to messages addressed to it (MetaGPT's `send_to`) and answers the
last speaker with its Speak action. Who hears the reply is the scenario flow's decision
(shared/flows.py), written into the reply's `send_to` by the runner.
"""

from __future__ import annotations

import re

from metagpt.actions import Action, UserRequirement
from metagpt.roles.role import Role
from metagpt.schema import Message
from metagpt.utils.common import any_to_str

from shared.llm.structured import OPENING_END, Expected, dialogue_schema, expect
from shared.roles.copying import all_copied, drop_copied

_USER_REQUIREMENT = any_to_str(UserRequirement)
HISTORY = 8  # messages of the transcript a character sees when it speaks
RETRY_TEMPERATURE = 1.0
"""a turn that only repeated what was said is asked again once, sampled this wide"""
_CJK = re.compile(r"[\u4e00-\u9fff]")


class Speak(Action):
    """Say one short turn of the scene, in character."""

    name: str = "Speak"

    async def run(self, topic: str, transcript: str, speaker: str, listener: str, instruction: str = "",
                  profile: str = "", goal: str = "", references: str = "", opening: bool = False,
                  stance: str = "") -> str:
        if instruction:  # a closing deliverable: its own task and length
            task, size = instruction, "Write it"
        else:
            task = ("You speak first: open the scene, in your role and towards your goal." if opening
                    else f"It is your turn: reply to {listener}, staying in your role.")
            size = "Write one short paragraph of at most three sentences, with no greeting, list or heading,"
        who = f"You are {speaker}" + (f", the {profile}" if profile else "") + "."
        aim = f" Your goal: {goal}." if goal else ""
        notes = (f"Reference passages from the knowledge base (rely on them where they apply, and cite the "
                 f"ones you use by their [id]):\n{references}\n\n" if references else "")
        prompt = (
            f"Scene topic: {topic}\n"
            f"{notes}"
            f"Turns so far:\n{transcript or '(none yet)'}\n\n"
            f"{who}{aim} {task} Say something new: do not repeat or copy earlier turns.\n"
            f"{size} in {language_of(topic)}, as {speaker}'s own words in the first person, without your name in front."
        )
        # a model that can be held to a schema opens its turn with the character's stance and goes
        # on from there, or else first restates whose side it speaks for: a small model then stays
        # on its side instead of drifting to the other (shared.llm.structured)
        side = f"{speaker}" + (f", {profile}" if profile else "") + (f": {goal}" if goal else "")
        schema = dialogue_schema(side[:200], opening="" if instruction else stance)
        earlier = f"{topic}\n{transcript}\n{prompt}"  # what was said, and the prompt, which a small model echoes
        with expect(Expected("dialogue", "Speak", schema=schema)):
            text = self._unprefixed((await self._aask(prompt)).strip(), speaker)
        if transcript and not instruction and all_copied(text, earlier):
            # a small model that copies an earlier turn whole gets one more try, told so and sampled
            # wider; both calls are journaled, so a replay takes the same path
            again = (f"{prompt}\nYour first answer only repeated what was already said. Give a reason nobody "
                     f"has given yet, in new words.")
            with expect(Expected("dialogue", "Speak", schema=schema, temperature=RETRY_TEMPERATURE)):
                text = self._unprefixed((await self._aask(again)).strip(), speaker)
            if stance and all_copied(text, earlier):
                return stance_alone(stance, topic)  # nothing of its own to say but its side
        return drop_copied(text, earlier)

    @staticmethod
    def _unprefixed(text: str, speaker: str) -> str:
        """Small models often copy the transcript's "Name:" in front of their own turn."""
        return re.sub(rf"^\**{re.escape(speaker)}\**\s*[:：]\s*", "", text, count=1).strip() or text


def stance_for(stance: dict[str, str] | None, topic: str) -> str:
    """The stance's words in the topic's language: Chinese for a Chinese topic when the scenario
    gives them, else English, else whichever it gives."""
    if not stance:
        return ""
    if _CJK.search(topic or "") and "zh" in stance:
        return stance["zh"]
    return stance.get("en") or next(iter(stance.values()))


def stance_alone(stance: str, topic: str) -> str:
    """A turn that says only its side: the stance as a sentence."""
    return f"{stance}。" if _CJK.search(topic or "") else f"{stance}."


def language_of(text: str) -> str:
    """How the prompt names the language to write in. A small model told "the language of the
    topic" often answers a Chinese topic in English; a named language it follows."""
    return "Chinese (中文)" if _CJK.search(text or "") else "the language of the topic"


class Character(Role):
    cast: list[str] = []
    """Every character's name, in the scenario's order."""
    topic: str = ""
    instruction: str = ""
    """This turn's special task (the closing deliverable), set by the runner for one turn."""
    references: str = ""
    """Knowledge-base passages for this turn (the role's `knowledge:`), set by the runner for one turn."""
    stance: dict[str, str] = {}
    """The words each turn opens with, per language (the scenario role's `stance`)."""
    scene: list[dict] | None = None
    """The scene's last turns, {from, content}, set by the runner for one turn from the delivery
    (shared.routing.scene_with); None: the role's own memory stands in."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.set_actions([Speak])
        self._watch([UserRequirement, Speak])

    async def _observe(self, ignore_memory=False) -> int:
        await super()._observe(ignore_memory)
        self.rc.news = [m for m in self.rc.news if self.name in m.send_to]
        return len(self.rc.news)

    async def _act(self) -> Message:
        memories = self.get_memories()
        if not self.topic and memories:
            self.topic = memories[0].content
        last = self.rc.news[-1] if self.rc.news else (memories[-1] if memories else None)
        # the scene's input (the topic) and a closing cue are not turns: the prompt states them, and
        # whoever gets the input before anyone has spoken opens the scene
        if self.scene is not None:
            turns = [(e["from"], e["content"]) for e in self.scene]
        else:
            turns = [(m.sent_from or m.role, m.content) for m in memories if m.cause_by != _USER_REQUIREMENT]
        opening = not turns and not self.instruction
        stance = stance_for(self.stance, self.topic)
        if stance:  # its own earlier openers, left in view, lead a small model to copy what followed them
            own = re.compile(rf"^{re.escape(stance)}{OPENING_END}\s*")
            turns = [(who, own.sub("", said, count=1) if who == self.name else said) for who, said in turns]
        transcript = "\n".join(f"{who}: {said}" for who, said in turns[-HISTORY:])
        listener = (last.sent_from if last and last.sent_from and last.sent_from != self.name else "everyone")
        text = await self.rc.todo.run(self.topic, transcript, self.name, listener, self.instruction,
                                      self.profile, self.goal, self.references, opening, stance)
        msg = Message(content=text, role=self.profile, cause_by=type(self.rc.todo),
                      sent_from=self.name, send_to={listener})
        self.rc.memory.add(msg)
        return msg
