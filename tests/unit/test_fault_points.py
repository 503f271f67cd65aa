"""The fault tests' store wrapper knows each kill point by the key its write names: built here
with shared.keys, so a change of key layout cannot silently switch a kill point off."""

from __future__ import annotations

from infra.local import faults
from shared import keys
from shared.ids import new_conversation_id


def test_each_step_ending_write_is_a_kill_point_with_its_turn(monkeypatch):
    hits = []
    monkeypatch.setattr(faults, "_kill", lambda point, cid, turn: hits.append((point, cid, turn)))
    monkeypatch.setattr(faults, "_CTX", {"cid": None, "turn": None})
    cid = new_conversation_id()
    msgid = "a" * 16
    faults._CTX.update(cid=cid, turn=7)
    for key in (keys.journal(cid, msgid, 2), keys.message(cid, 7, msgid), keys.workspace(cid, 7, msgid),
                keys.delivery("persona", cid, 7, msgid), keys.claim(cid, msgid, 2), keys.meta(cid)):
        faults._after_write(key)
    assert hits == [("after_journal", cid, 7), ("after_commit", cid, 7), ("after_workspace", cid, 7),
                    ("after_delivery", cid, 7)]  # a claim or the meta ends no step
    assert faults._CLAIM.match(keys.claim(cid, msgid, 3)).group(1) == "003"
    assert faults.cid_of(keys.delivery("persona", cid, 7, msgid)) == cid
