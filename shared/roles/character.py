"""A scenario character: a real MetaGPT Role with one real Action, speaking in turn.

The character reacts only to messages addressed to it (MetaGPT's `send_to`), answers with
its Speak action, and addresses its reply to whoever speaks next in the cast. The routing
itself is MetaGPT's own (`is_send_to` over each role's addresses); troupe only carries the
message through OSS.
"""

from __future__ import annotations

from metagpt.actions import Action, UserRequirement
from metagpt.roles.role import Role
from metagpt.schema import Message

HISTORY = 8  # messages of the transcript a character sees when it speaks


class Speak(Action):
    """Say one short turn of the scene, in character."""

    name: str = "Speak"

    async def run(self, topic: str, transcript: str, speaker: str, listener: str) -> str:
        prompt = (
            f"Scene topic: {topic}\n"
            f"Recent turns:\n{transcript or '(none yet)'}\n\n"
            f"You are {speaker}. Reply to {listener} in at most three sentences, in the language "
            f"of the topic, staying in your role. Do not prefix your reply with your name."
        )
        return (await self._aask(prompt)).strip()


class Character(Role):
    cast: list[str] = []
    """Every character's name in speaking order; the reply goes to the next one."""
    topic: str = ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.set_actions([Speak])
        self._watch([UserRequirement, Speak])

    def next_speaker(self) -> str:
        if self.name not in self.cast or len(self.cast) < 2:
            return self.name
        return self.cast[(self.cast.index(self.name) + 1) % len(self.cast)]

    async def _observe(self, ignore_memory=False) -> int:
        await super()._observe(ignore_memory)
        self.rc.news = [m for m in self.rc.news if self.name in m.send_to]
        return len(self.rc.news)

    async def _act(self) -> Message:
        memories = self.get_memories()
        if not self.topic and memories:
            self.topic = memories[0].content
        transcript = "\n".join(f"{m.sent_from or m.role}: {m.content}" for m in memories[-HISTORY:])
        listener = self.next_speaker()
        text = await self.rc.todo.run(self.topic, transcript, self.name, listener)
        msg = Message(content=text, role=self.profile, cause_by=type(self.rc.todo),
                      sent_from=self.name, send_to={listener})
        self.rc.memory.add(msg)
        return msg
