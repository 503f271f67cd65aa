"""What counts as a turn copying what was said before: one definition for the characters, which
drop copied sentences, and for bench/embedded.py, which measures the copy rate."""

from __future__ import annotations

import re

COPY_N = 8
"""words in a row that count as copying"""


def words(text: str) -> list[str]:
    """Words, and each CJK character as one."""
    return re.findall(r"[\u4e00-\u9fff]|[^\s\u4e00-\u9fff]+", (text or "").lower())


def sequences(ws: list[str], n: int = COPY_N) -> list[tuple[str, ...]]:
    """Every run of n words in a row, in order."""
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def _sentences(reply: str, earlier: str) -> list[tuple[str, bool]]:
    """The reply's sentences, each with whether it was copied: most of its 8-word sequences
    were said already."""
    seen = set(sequences(words(earlier)))
    out = []
    for sentence in re.findall(r"[^.!?。！？]+(?:[.!?。！？]+[\"'”’)]*|$)\s*", reply):
        grams = set(sequences(words(sentence)))
        out.append((sentence, bool(grams) and len(grams & seen) * 2 >= len(grams)))
    return out


def drop_copied(reply: str, earlier: str) -> str:
    """The reply without the sentences it copied from what was said before (the topic, the
    turns so far, the prompt's instructions). A small model asked for something new still
    repeats earlier turns verbatim. A reply that is all copy is kept as it is (a turn is never
    empty); the LLM's reply stays in the journal, so a replay drops the same sentences."""
    sentences = _sentences(reply, earlier)
    kept = [s for s, copied in sentences if not copied]
    out = "".join(kept).strip()
    return out if out and len(kept) < len(sentences) else reply


def all_copied(reply: str, earlier: str) -> bool:
    """Whether every sentence of the reply was copied from what was said before."""
    sentences = _sentences(reply, earlier)
    return bool(sentences) and all(copied for _, copied in sentences)


def copy_rate(turns: list[str], n: int = COPY_N) -> float | None:
    """The share of the turns' n-word sequences (after the first turn, the input) that were
    already said earlier in the conversation: 0 when every turn says something new."""
    seen: set[tuple[str, ...]] = set()
    copied = total = 0
    for i, text in enumerate(turns):
        grams = sequences(words(text), n)
        if i > 0:
            total += len(grams)
            copied += sum(g in seen for g in grams)
        seen.update(grams)
    return round(copied / total, 3) if total else None

