"""Which side a debate turn argues, judged by the embedded model itself (for bench/embedded.py).

A 1.5B model is a weak judge, so its accuracy is measured first on labelled statements and
printed beside its verdicts. Asked "for or against the motion?" it answers "against" whatever it
reads; asked whether the speaker would vote yes, it is right on most of them.
"""

from __future__ import annotations

import json
import urllib.request

_SCHEMA = {"type": "object", "properties": {"vote": {"type": "string", "enum": ["yes", "no"]}},
           "required": ["vote"], "additionalProperties": False}

LABELLED = [  # (motion, statement, would the speaker vote yes)
    ("Should cities ban cars?", "Banning cars in city centres would cut the air pollution that shortens lives, "
     "and free street space for parks and bike lanes.", True),
    ("Should cities ban cars?", "A ban would hurt small shops and delivery workers, and people with disabilities "
     "depend on cars; buses are too slow to replace them.", False),
    ("Should cities ban cars?", "Electric cars and better public transport already cut emissions without taking "
     "away the freedom to drive, so a ban goes too far.", False),
    ("Should cities ban cars?", "Where cities closed their centres to cars, shops took more money, because people "
     "on foot stop and buy.", True),
    ("Should homework be banned?", "Homework steals the evening from play, sleep and family, and the studies show "
     "it teaches young children almost nothing.", True),
    ("Should homework be banned?", "Practice at home is how a pupil finds out what they did not understand in "
     "class; without it, teachers lose their best signal.", False),
    ("应该禁止学生在校使用手机吗？", "手机让学生在课堂上分心，禁止使用能让他们专心学习，也能减少网络欺凌。", True),
    ("应该禁止学生在校使用手机吗？", "手机是学习工具，也能让家长在紧急情况下联系孩子，一刀切地禁止并不合理。", False),
]


def votes_yes(base_url: str, alias: str, motion: str, statement: str) -> bool:
    """Would the speaker of `statement` vote yes on `motion`, in the model's reading."""
    prompt = (f"Read this statement from a debate on the motion \"{motion}\".\n\n\"{statement}\"\n\n"
              "Would the speaker vote yes on the motion? Answer yes or no.")
    body = {"model": alias, "messages": [{"role": "user", "content": prompt}], "max_tokens": 12,
            "temperature": 0, "response_format": {"type": "json_object", "schema": _SCHEMA}}
    req = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        reply = json.loads(resp.read())["choices"][0]["message"]["content"]
    return json.loads(reply)["vote"] == "yes"


def accuracy(base_url: str, alias: str) -> tuple[int, int]:
    """(right, asked) on the labelled statements."""
    right = sum(votes_yes(base_url, alias, m, s) == yes for m, s, yes in LABELLED)
    return right, len(LABELLED)
