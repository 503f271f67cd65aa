"""Who speaks next: the scenario's flow, decided from the transcript's shape alone.

round_robin  the cast speaks in `order` for `rounds` rounds; then the `closing` role (if any)
             speaks once and the conversation ends. An `end_when` condition met early (a role's
             message containing a phrase) skips straight to the closing role. A slot of `order`
             may be a panel (a list of roles): they answer the same message at once, each in its
             own invocation, and the next slot's role sees all their answers (one turn number).
             A panel meets `end_when` when its role is on the panel and every answer has the phrase.
selector     after every turn the `director` function picks the next speaker (see
             shared/director.py); the same end rules apply.

Decisions depend only on the scenario and the turn just committed, so every replay of a
turn reaches the same decision (nothing here reads storage).
"""

from __future__ import annotations

import dataclasses

from shared.branches import MAX_WIDTH

DIRECTOR = "director"
MAX_PANEL = MAX_WIDTH
"""the most roles one panel may have (a fan-out of that many invocations)"""


@dataclasses.dataclass(frozen=True)
class Next:
    kind: str
    """"speak" (a role speaks next), "director" (ask the director), "end"."""
    role: str | None = None
    closing: bool = False
    """The next turn is the closing one: the role delivers the scenario's deliverable."""
    reason: str = ""
    roles: tuple[str, ...] = ()
    """kind "panel": the roles that answer at once"""


def closing_role(scenario: dict) -> str | None:
    closing = scenario.get("closing")
    return closing["role"] if closing else None


def end_condition_met(scenario: dict, speaker: str, content: str, panel: dict[str, str] | None = None) -> bool:
    """`panel`: the answers of a panel's turn by role (then `speaker` is unused)."""
    cond = scenario.get("end_when")
    if not cond:
        return False
    phrase = cond["contains"].lower()
    if panel is not None:
        return cond["role"] in panel and all(phrase in (text or "").lower() for text in panel.values())
    return cond["role"] == speaker and phrase in (content or "").lower()


def after_turn(scenario: dict, turn: int, speaker: str, content: str, was_closing: bool,
               panel: dict[str, str] | None = None) -> Next:
    """What follows the message of `turn` (0 = the user's opening input) by `speaker`, or the
    answers of a panel's turn (`panel`, by role)."""
    if was_closing:
        return Next("end", reason="deliverable")
    if turn > 0 and end_condition_met(scenario, speaker, content, panel):
        role = closing_role(scenario)
        if role:
            return Next("speak", role, closing=True, reason="end_condition")
        return Next("end", reason="end_condition")
    if scenario["flow"] == "sop":
        # the input goes to the entry role; after that MetaGPT's watch rules route (shared/sop)
        return Next("speak", scenario["order"][0])
    if scenario["flow"] == "selector":
        return Next(DIRECTOR)
    order = scenario["order"]
    rounds = scenario.get("rounds")
    if rounds is not None and turn >= rounds * len(order):
        role = closing_role(scenario)
        if role:
            return Next("speak", role, closing=True, reason="rounds_done")
        return Next("end", reason="rounds_done")
    slot = order[turn % len(order)]
    return Next("panel", roles=tuple(slot)) if isinstance(slot, list) else Next("speak", slot)
