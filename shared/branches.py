"""Branches: N invocations answer one parent at once, and a join that fires once.

A fan-out names its parent (the message or join the branches answer) and its items (a panel's
roles, the files of a wave). Each item gets one delivery, keyed `derive_id(parent, item)`, so
every branch, and therefore the turn record it commits create-only, has a key known in advance
(`branch_key`). After its own commit, every branch tries the join:

  one LIST of the turn's records; unless every branch's key is in it, nothing more (a branch
  still to commit joins when it does). Once they all are: one GET each, and what follows is
  written create-only under a key derived from the parent.

Each branch lists after its own commit, so the last to commit sees them all; branches that
commit at the same moment may both see them all, and so may duplicates and retries: they write
the same keys, so the join's effect happens once. Storage requests per branch are constant
(one LIST), and the reads happen only when the join is due.

Used by scenario panels (shared/routing.py) and the software company's engineers and QA per
file (shared/sop/parallel.py).
"""

from __future__ import annotations

from shared import keys
from shared.ids import derive_id, reply_id

MAX_WIDTH = 16
"""the most branches one fan-out has (a panel's members, the files of one wave)"""


def sop_at_once(meta: dict) -> bool:
    """Whether a software company writes and tests its files at once: its `parallel` option, on
    unless the conversation turned it off (shared/sop/parallel.py)."""
    return meta["scenario"]["flow"] == "sop" and (meta.get("options") or {}).get("parallel", True) is not False


def delivery_id(parent: str, item: str) -> str:
    """The id of the delivery to the branch `item` of the fan-out from `parent`."""
    return derive_id(parent, item)


def joined_id(parent: str) -> str:
    """The id of what follows the join of the fan-out from `parent`."""
    return derive_id(parent, "join")


def branch_key(cid: str, turn: int, parent: str, item: str) -> str:
    """The key the branch `item` commits its turn record under."""
    return keys.message(cid, turn, reply_id(cid, delivery_id(parent, item)))


def arrived(convs, cid: str, turn: int, parent: str, items: list[str]) -> list[dict] | None:
    """Every branch's committed record, in `items` order, once all have committed; else None."""
    wanted = [branch_key(cid, turn, parent, item) for item in items]
    listed = set(convs.turn_keys(cid, turn))
    if not set(wanted) <= listed:
        return None
    found = [convs.read_turn_at(key) for key in wanted]
    return None if any(r is None for r in found) else found


def spent_together(before: dict | None, branches: list[dict]) -> dict:
    """What the conversation had spent at the fan-out plus what each branch spent since."""
    before = before or {}
    return {k: round(before.get(k, 0) + sum((b.get("spent") or {}).get(k, 0) - before.get(k, 0) for b in branches), 8)
            for k in ("tokens", "cost_cny")}
