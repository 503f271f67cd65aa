"""Names and paths that come from outside, an LLM reply above all, checked before they reach a
file system or an object key.

A model can be wrong, or steered by a prompt injection in a requirement, a scenario, a knowledge
document or a human turn. Whatever it names (a project, a file of the design, a test) is
untrusted: it may become a path only through `check_relative` (refuse) or `project_slug`
(repair), and a file is touched only through `inside`, which resolves the path and proves that
it lies under the workspace root without passing a symlink.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
from pathlib import Path

from shared.errors import RejectedEvent

MAX_PATH_CHARS = 400
MAX_PART_CHARS = 120
MAX_DEPTH = 12
MAX_SLUG_CHARS = 64
SHOWN = 80
"""How much of a refused value an error message repeats."""

_DRIVE = re.compile(r"^[A-Za-z]:")
_SLUG_DROP = re.compile(r"[^a-z0-9_]+")


class UnsafePath(RejectedEvent):
    """A name or path, typically from a model's reply, that would leave its conversation."""

    code = "UnsafePath"

    def __init__(self, what: str, value, why: str):
        self.what, self.value, self.why = what, shown(value), why
        super().__init__(f"refused {what} {self.value}: {why}", field=what)


def shown(value) -> str:
    """`value` for an error message: repr'd (control characters visible) and truncated."""
    text = repr(value if isinstance(value, str) else str(value))
    return text if len(text) <= SHOWN else text[:SHOWN] + f"…' ({len(str(value))} characters)"


def _problem(path: str) -> str | None:
    if not path:
        return "it is empty"
    if len(path) > MAX_PATH_CHARS:
        return f"it is longer than {MAX_PATH_CHARS} characters"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in path):
        return "it holds a control or invisible character"
    if "\\" in path:
        return "it holds a backslash"
    if path.startswith("/") or _DRIVE.match(path):
        return "it is absolute"
    parts = path.split("/")
    if ".." in parts:
        return "it climbs out with '..'"
    if any(p in ("", ".") for p in parts):
        return "it is not normalised (an empty or '.' part)"
    if len(parts) > MAX_DEPTH:
        return f"it is deeper than {MAX_DEPTH} folders"
    if any(len(p) > MAX_PART_CHARS for p in parts):
        return f"a part is longer than {MAX_PART_CHARS} characters"
    if any(p.strip() != p for p in parts):
        return "a part starts or ends with a space"
    return None


def check_relative(path, what: str = "path") -> str:
    """`path` if it is a safe relative POSIX path: no absolute, drive or UNC form, no `..`, no
    control characters, bounded length and depth; also after Unicode compatibility folding, so
    that a look-alike (a fullwidth dot or solidus) cannot become a `..` or a `/` downstream.
    Raises UnsafePath naming `what`."""
    if not isinstance(path, str):
        raise UnsafePath(what, path, "it is not a string")
    why = _problem(path)
    if why is None:
        folded = unicodedata.normalize("NFKC", path)
        if folded != path:
            why = _problem(folded)
            if why is not None:
                why = f"its Unicode look-alike form {shown(folded)} is unsafe: {why}"
    if why is not None:
        raise UnsafePath(what, path, why)
    assert posixpath.normpath(path) == path
    return path


def project_slug(name, fallback: str = "project") -> str:
    """A project name reduced to a safe folder name: lower-case ASCII letters, digits and
    underscores, at most MAX_SLUG_CHARS, starting with a letter; `fallback` when nothing is left.
    A model's "Project Name" is repaired this way rather than refused: any name will do."""
    text = unicodedata.normalize("NFKD", name if isinstance(name, str) else "").encode("ascii", "ignore").decode()
    slug = _SLUG_DROP.sub("_", text.lower()).strip("_")[:MAX_SLUG_CHARS].strip("_")
    if not slug:
        return fallback
    return slug if slug[0].isalpha() else f"p_{slug}"[:MAX_SLUG_CHARS]


def inside(root: str | os.PathLike, path: str | os.PathLike, what: str = "path") -> Path:
    """The absolute path `path` names under `root` (`path` relative to `root`, or absolute and
    already under it), proven to stay inside: the relative part passes `check_relative`, and no
    existing component on the way, the last one included, is a symlink. Raises UnsafePath."""
    base = Path(os.path.realpath(root))
    p = Path(path)
    if p.is_absolute():
        try:
            rel = p.relative_to(base) if p.is_relative_to(base) else p.relative_to(Path(os.path.abspath(root)))
        except ValueError:
            raise UnsafePath(what, str(path), "it is outside the workspace") from None
    else:
        rel = p
    rel_text = rel.as_posix()
    if rel_text == ".":
        return base
    check_relative(rel_text, what)
    current = base
    for part in rel.parts:
        current = current / part
        if os.path.islink(current):
            raise UnsafePath(what, str(path), f"{shown(current.relative_to(base).as_posix())} is a symlink")
    return current
