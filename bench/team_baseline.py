"""The same debate run in one process by MetaGPT's own Team.run: the baseline troupe is compared to.

Same roles (Character), same action (Speak), same scripted LLM; MetaGPT's Environment routes
the messages in memory. Returns seconds per turn.
"""

from __future__ import annotations

import asyncio
import time

import shared.mg  # noqa: F401


def _debater_class():
    from shared.roles.character import Character

    class Debater(Character):
        """In one process MetaGPT's Environment routes by send_to: address the other debater."""

        async def _act(self):
            msg = await super()._act()
            msg.send_to = {next(n for n in self.cast if n != self.name)}
            return msg

    return Debater


def team_seconds_per_turn(turns: int, topic: str = "Should cities ban cars?", runs: int = 3) -> float:
    from metagpt.team import Team

    from infra.testing.scripted_llm import ScriptedLLM
    from shared.scenarios import get

    Character = _debater_class()
    spec = get("debate")
    debaters = [r for r in spec["roles"] if r["name"] in spec["order"]]
    cast = [r["name"] for r in debaters]
    best = float("inf")
    for _ in range(runs):
        ctx = shared.mg.make_context()
        roles = []
        for r in debaters:
            role = Character(name=r["name"], profile=r["profile"], goal=r["goal"], constraints=r["constraints"],
                             cast=cast, topic=topic, context=ctx)
            llm = ScriptedLLM()
            role.llm = llm
            for a in role.actions:
                a.set_llm(llm, override=True)
            roles.append(role)
        team = Team(context=ctx)
        team.hire(roles)
        team.invest(1000.0)
        started = time.perf_counter()
        # a round runs every role once; a reply published early in a round is often answered
        # in the same round, so count the turns actually spoken
        asyncio.run(team.run(n_round=turns, idea=topic, send_to=cast[0], auto_archive=False))
        elapsed = time.perf_counter() - started
        spoken = sum(1 for r in roles for m in r.rc.memory.get() if m.sent_from == r.name)
        assert spoken >= turns, f"Team.run produced {spoken} turns, expected at least {turns}"
        best = min(best, elapsed / spoken)
    return best


if __name__ == "__main__":
    print(f"Team.run: {team_seconds_per_turn(20) * 1000:.2f} ms per turn")
