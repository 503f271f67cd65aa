"""A user's own MetaGPT role, written the way MetaGPT's examples write one: an Action with a
prompt template, a Role that sets its actions and watches what it answers. troupe runs it
unchanged as a function (tests/unit/test_user_roles.py)."""

from metagpt.actions import Action, UserRequirement
from metagpt.roles import Role
from metagpt.schema import Message


class WriteCouplet(Action):
    PROMPT_TEMPLATE: str = "Write a two-line couplet answering this: {instruction}"
    name: str = "WriteCouplet"

    async def run(self, instruction: str) -> str:
        return await self._aask(self.PROMPT_TEMPLATE.format(instruction=instruction))


class Poet(Role):
    name: str = "Poet"
    profile: str = "poet"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.set_actions([WriteCouplet])
        self._watch([UserRequirement, WriteCouplet])

    async def _act(self) -> Message:
        todo = self.rc.todo
        last = self.get_memories(k=1)[0]
        text = await todo.run(last.content)
        msg = Message(content=text, role=self.profile, cause_by=type(todo), sent_from=self.name)
        self.rc.memory.add(msg)
        return msg
