"""FC's python3.10, as the package's target: pip's view of it, and a real CPython 3.10 to check with.

FC's python3.10 runtime is CPython 3.10 on x86_64 Debian 10 (glibc 2.28). A lock copied from the
3.11 development venv is not a lock for it: some releases require Python >= 3.11 (filelock 4.2,
pycparser 3.12, httpx2 2.15), and pip, asked for CPython 3.10, finds no file for them. Two tools:

  resolve(pins)     every pin checked against the index for CPython 3.10 on manylinux x86_64;
                    one that has no file for the target moves to the newest release at or below
                    it that has one, and the reason is kept (the index's Requires-Python)
  python310()       a CPython 3.10 on this machine (TROUPE_PYTHON310, python3.10 on PATH, or
                    pyenv's), on which `make package` checks that the layer's versions agree and
                    the packaged functions run; None, with the reason, where there is none
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

PYTHON = "3.10"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
#: pip's options for "files FC's python3.10 on x86_64 can use"
PIP_TARGET = ["--python-version", PYTHON, "--implementation", "cp", "--abi", "cp310", "--abi", "abi3",
              "--abi", "none", *sum((["--platform", p] for p in PLATFORMS), [])]

_UNSATISFIED = re.compile(r"(?:No matching distribution found for|satisfies the requirement) ([A-Za-z0-9_.\-]+)")
_IGNORED = re.compile(r"Ignored the following versions that require a different python version: (.*)")


class TargetError(Exception):
    pass


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dry_run(reqs: list[str], sdist_ok: set[str]) -> tuple[dict[str, str] | None, str]:
    """Ask pip which release of each requirement it would install for the target, binary files
    only (source only for `sdist_ok`). ({name: version}, "") or (None, pip's error)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
               "--ignore-installed", "--no-deps", "--target", os.path.join(tmp, "t"), *PIP_TARGET,
               "--only-binary=:all:", *(["--no-binary", ",".join(sorted(sdist_ok))] if sdist_ok else []),
               "--report", report, *reqs]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            return None, "\n".join(ln for ln in proc.stderr.splitlines() if "WARNING: Location" not in ln)
        with open(report, encoding="utf-8") as f:
            return {_canon(i["metadata"]["name"]): i["metadata"]["version"] for i in json.load(f)["install"]}, ""


def resolve(pins: dict[str, str], sdist_ok: set[str] = frozenset()) -> tuple[dict[str, str], dict[str, str]]:
    """The release of each pinned distribution that the target can use: ({name: version},
    {name: why it differs from its pin}). Raises TargetError naming a distribution the target
    cannot have at all."""
    specs = {name: f"=={version}" for name, version in pins.items()}
    notes: dict[str, str] = {}
    sdist = {_canon(n) for n in sdist_ok}
    for _ in range(2 * len(pins) + 1):
        chosen, err = _dry_run([f"{n}{s}" for n, s in sorted(specs.items())], sdist)
        if chosen is not None:
            return {n: chosen[n] for n in pins}, notes
        m = _UNSATISFIED.search(err)
        name = _canon(m.group(1)) if m else None
        if name not in specs:
            raise TargetError(f"pip cannot resolve the lock for CPython {PYTHON}:\n{err[-2000:]}")
        ignored = _IGNORED.search(err)
        versions = re.search(r"\(from versions: ([^)]*)\)", err)
        if versions and versions.group(1).strip() == "none" and name not in sdist:
            sdist.add(name)  # no binary file at all: a source-only package (build.py checks it is pure)
            continue
        if specs[name].startswith("<="):
            raise TargetError(f"{name}: no release up to {pins[name]} can be installed on CPython {PYTHON} "
                              f"manylinux x86_64{': ' + ignored.group(1)[:300] if ignored else ''}")
        why = _requires_python(ignored.group(1), pins[name]) if ignored else None
        notes[name] = f"{pins[name]} in requirements.txt: " + (why or f"no file for CPython {PYTHON} manylinux x86_64")
        specs[name] = f"<={pins[name]}"
    raise TargetError("the lock did not settle")


def _requires_python(ignored: str, version: str) -> str | None:
    """'Requires-Python >=3.11' for `version` from pip's 'Ignored the following versions' line."""
    m = re.search(rf"(?:^|; ){re.escape(version)} (Requires-Python [^;]+)", ignored)
    return m.group(1).strip() if m else None


@functools.lru_cache(maxsize=1)
def python310() -> tuple[str | None, str]:
    """(path of a CPython 3.10 interpreter, "") or (None, why there is none); looked up once."""
    candidates = [os.environ.get("TROUPE_PYTHON310"), shutil.which("python3.10")]
    try:
        prefix = subprocess.run(["pyenv", "prefix", "3.10"], capture_output=True, text=True, timeout=20).stdout.strip()
        candidates.append(os.path.join(prefix, "bin", "python3.10") if prefix else None)
    except (OSError, subprocess.SubprocessError):
        pass
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(root, "versions", "3.10*", "bin", "python3.10")), reverse=True)
    for path in filter(None, candidates):
        try:
            out = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out == "True":
            return path, ""
    return None, ("no CPython 3.10 found (TROUPE_PYTHON310, python3.10 on PATH, pyenv): "
                  "install one, e.g. `pyenv install 3.10`")


_CONSISTENCY = r"""
import json, sys
from importlib import metadata
sys.path.insert(0, sys.argv[1])
try:
    from packaging.requirements import Requirement
except ImportError:  # the layer need not hold packaging: the interpreter's own pip carries it
    from pip._vendor.packaging.requirements import Requirement
dists = {d.metadata["Name"].lower().replace("_", "-").replace(".", "-"): d for d in metadata.distributions(path=[sys.argv[1]])}
conflicts, trimmed = [], set()
for name, dist in sorted(dists.items()):
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        dep = req.name.lower().replace("_", "-").replace(".", "-")
        if dep not in dists:
            trimmed.add(dep)
        elif req.specifier and not req.specifier.contains(dists[dep].version, prereleases=True):
            conflicts.append(f"{name} {dist.version} requires {req}, the layer has {dep} {dists[dep].version}")
print(json.dumps({"dists": len(dists), "conflicts": conflicts, "trimmed": sorted(trimmed)}))
"""


def check_layer_consistent(python: str, site: str) -> dict:
    """Run by CPython 3.10 itself over the layer's site folder: every requirement of a packaged
    distribution (markers as 3.10 evaluates them) that is packaged too is met by the packaged
    version. Requirements left out on purpose (the layer holds what the functions load) are
    listed as trimmed; the packaged functions' own runs show nothing needed is missing.
    Raises TargetError naming each conflict."""
    proc = subprocess.run([python, "-I", "-c", _CONSISTENCY, site], capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise TargetError(f"the consistency check failed on CPython 3.10 ({python}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["conflicts"]:
        raise TargetError("the layer's versions conflict on CPython 3.10:\n  " + "\n  ".join(result["conflicts"]))
    return result
