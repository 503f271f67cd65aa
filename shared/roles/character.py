"""A scenario character: a real MetaGPT Role with one real Action, speaking in turn.

The character reacts only to messages addressed to it (MetaGPT's `send_to`) and answers the
last speaker with its Speak action. Who hears the reply is the scenario flow's decision
(shared/flows.py), written into the reply's `send_to` by the runner.
"""

from __future__ import annotations

from metagpt.actions import Action, UserRequirement
from metagpt.roles.role import Role
from metagpt.schema import Message

HISTORY = 8  # messages of the transcript a character sees when it speaks


class Speak(Action):
    """Say one short turn of the scene, in character."""

    name: str = "Speak"

    async def run(self, topic: str, transcript: str, speaker: str, listener: str, instruction: str = "",
                  profile: str = "", goal: str = "", references: str = "") -> str:
        task = (instruction or f"Reply to {listener} in at most three sentences, staying in your role.")
        who = f"You are {speaker}" + (f", the {profile}" if profile else "") + "."
        aim = f" Your goal: {goal}." if goal else ""
        notes = (f"Reference passages from the knowledge base (rely on them where they apply, and cite the "
                 f"ones you use by their [id]):\n{references}\n\n" if references else "")
        prompt = (
            f"Scene topic: {topic}\n"
            f"{notes}"
            f"Recent turns:\n{transcript or '(none yet)'}\n\n"
            f"{who}{aim} {task} Write in the language of the topic. Say something new: do not "
            f"repeat or copy earlier turns. Do not prefix your reply with your name."
        )
        return (await self._aask(prompt)).strip()


class Character(Role):
    cast: list[str] = []
    """Every character's name, in the scenario's order."""
    topic: str = ""
    instruction: str = ""
    """This turn's special task (the closing deliverable), set by the runner for one turn."""
    references: str = ""
    """Knowledge-base passages for this turn (the role's `knowledge:`), set by the runner for one turn."""

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
        transcript = "\n".join(f"{m.sent_from or m.role}: {m.content}" for m in memories[-HISTORY:])
        last = self.rc.news[-1] if self.rc.news else (memories[-1] if memories else None)
        listener = (last.sent_from if last and last.sent_from and last.sent_from != self.name else "everyone")
        text = await self.rc.todo.run(self.topic, transcript, self.name, listener, self.instruction,
                                      self.profile, self.goal, self.references)
        msg = Message(content=text, role=self.profile, cause_by=type(self.rc.todo),
                      sent_from=self.name, send_to={listener})
        self.rc.memory.add(msg)
        return msg
