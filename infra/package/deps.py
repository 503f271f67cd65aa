"""The curated dependency set of troupe's functions: `python -m infra.package.deps`.

MetaGPT's full install is 1.6 GB, far over an FC code package. The functions use a fraction of
it, so the set is measured rather than guessed:

1. one process (with shared/lean.py, as the functions run) drives every function's code in
   process: the gateway, persona, director, deadletter and pipeline, the five SOP roles
   through a whole software company (code review on, tests run), and the DashScope, OpenAI
   and OSS clients built as the functions build them;
2. the third-party modules it loaded are mapped to their distributions;
3. the closure of those distributions' own requirements is added (code paths a run does not
   reach, such as an HTTP client's retry module, still find their packages);
4. versions are taken from requirements.txt (the pinned runtime set the tests run on), then
   resolved for CPython 3.10 (infra/package/target.py): a pin the target cannot use moves to the
   newest release that it can, with the reason as a comment in the lock.

Written to infra/package/requirements-fc.txt (committed); metagpt itself is packaged with
--no-deps, as it is installed. `--check` verifies the committed file instead of writing it
(used by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCK = os.path.join(ROOT, "infra", "package", "requirements-fc.txt")
#: never in a function's package: test, build and local-runtime tools
EXCLUDED = {"pytest", "hypothesis", "pluggy", "iniconfig", "_pytest", "moto", "pip", "setuptools", "wheel",
            "llama-cpp-python", "metagpt",
            # imported only because it is installed: tenacity's optional tornado support
            "tornado"}

#: backports that FC's python3.10 needs and this 3.11 venv does not (requirement markers
#: such as python_version < "3.11"); pinned here, as requirements.txt is resolved on 3.11
PY310_PINS = {"exceptiongroup": "1.2.2", "tomli": "2.0.2", "async-timeout": "4.0.3", "typing-extensions": "4.12.2"}

#: distributions a function reaches only on a path the probe cannot take offline, each with why
REACHED_OFFLINE_UNSEEN = {
    # metagpt.provider.openai_api counts a streamed reply's tokens with it when the endpoint sends
    # no usage (its encodings download on first use; the probe has no network)
    "tiktoken": "an OpenAI-compatible reply without usage is counted with tiktoken",
}

_PROBE = r"""
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
os.environ["TROUPE_LLM"] = "fake"
import shared.mg  # installs shared.lean, as every function does
from infra.testing.harness import Harness
from shared.pipeline import Pipeline
from shared.deadletter import handle_failure
from shared.conversation import ConversationStore

with tempfile.TemporaryDirectory() as tmp:
    h = Harness(tmp)
    h.start("debate", "Tea or coffee?", rounds=1)
    h.http("POST", "/conversations", {"scenario": "digital_employees", "input": "Refund?"})
    h.start("software_company", "开发一个记账APP", options={"code_review": True})
    h.store.put("requests/x.json", json.dumps({"scenario": "debate", "input": "x", "rounds": 1}).encode())
    h.pump()
    h.http("GET", "/scenarios")
    h.http("GET", "/openapi.json")
    handle_failure(b"{}", ConversationStore(h.store))
    # knowledge bases: the indexer (jieba) and a role's search
    from shared.knowledge import reconcile, search, seed_samples
    for path in seed_samples(h.store):
        reconcile(h.store, "lumen", path)
    search(h.store, "lumen", "退款 refund")
    from infra.testing.documents import minimal_pdf  # a PDF document's text (pypdf)
    from shared.knowledge import put_document
    put_document(h.store, "lumen", "manual.pdf", minimal_pdf("Descaling the kettle"))
    reconcile(h.store, "lumen", "manual.pdf")
# the clients the functions build in the cloud (no call is made)
from shared.llm import make_llm
for kind in ("openai", "dashscope", "dashscope-openai"):
    make_llm({"TROUPE_LLM": kind, "DASHSCOPE_API_KEY": "k", "TROUPE_LLM_BASE_URL": "http://127.0.0.1:9/v1"})
import shared.store.oss, oss2  # noqa
oss2.Bucket(oss2.StsAuth("a", "b", "c"), "http://127.0.0.1:9", "troupe-probe")
# the FC client a role function hands a throttled turn back with (shared/handback.py)
from shared.handback import FCHandback
FCHandback("troupe-persona", "http://127.0.0.1:9", "a", "b", "c").client()
import alibabacloud_fc20230330.models, darabonba.runtime  # noqa
print("MODULES " + json.dumps(sorted({m.split(".")[0] for m in list(sys.modules)})))
"""


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: str = os.path.join(ROOT, "requirements.txt")) -> dict[str, str]:
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                out[_canon(name.split("[")[0])] = version.strip()
    return out


def loaded_modules() -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, ROOT], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "TROUPE_LLM": "fake", "OMP_NUM_THREADS": "1"})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"the probe failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(line[len("MODULES "):])


def _requires(dist: str) -> set[str]:
    """A distribution's unconditional requirements (no extras, markers true on Linux py3.10)."""
    from packaging.requirements import Requirement

    out = set()
    try:
        specs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return out  # needed only on 3.10 (PY310_PINS): not installed in this 3.11 venv
    for spec in specs:
        req = Requirement(spec)
        if req.marker is not None:
            env = {"python_version": "3.10", "python_full_version": "3.10.13", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
            if not req.marker.evaluate(env):
                continue
        out.add(_canon(req.name))
    return out


def curated(modules: list[str]) -> dict[str, str]:
    """Distribution → pinned version, for what the functions load and what that needs."""
    owners = metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    found = set()
    for mod in modules:
        if mod in stdlib or mod in ("shared", "tests", "infra", "functions", "__main__"):
            continue
        for dist in owners.get(mod, []):
            found.add(_canon(dist))
    found |= set(REACHED_OFFLINE_UNSEEN)
    found -= {_canon(x) for x in EXCLUDED}
    todo, closure = list(found), set(found)
    while todo:
        for dep in _requires(todo.pop()):
            if dep not in closure and dep not in {_canon(x) for x in EXCLUDED}:
                closure.add(dep)
                todo.append(dep)
    pinned = {**PY310_PINS, **pins()}
    missing = sorted(d for d in closure if d not in pinned)
    if missing:
        raise RuntimeError(f"not pinned in requirements.txt: {', '.join(missing)}")
    return {d: pinned[d] for d in sorted(closure)}


def render(deps: dict[str, str], notes: dict[str, str] | None = None) -> str:
    head = ("# troupe's FC dependency layer: what the functions load, and what that needs, pinned as in\n"
            "# requirements.txt and resolved for CPython 3.10 on manylinux x86_64 (FC's python3.10): a\n"
            "# release the target cannot use is replaced by the newest one it can, and the comment says why.\n"
            "# Generated by `python -m infra.package.deps`; metagpt is added --no-deps.\n")
    notes = notes or {}
    return head + "".join(f"{d}=={v}" + (f"  # {notes[d]}" if d in notes else "") + "\n" for d, v in deps.items())


def read_lock(path: str = LOCK) -> tuple[dict[str, str], dict[str, str]]:
    """({name: version}, {name: note}) of a lock file."""
    versions, notes = {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            spec, _, note = line.partition("#")
            if "==" in spec:
                name, version = (x.strip() for x in spec.split("=="))
                versions[name] = version
                if note.strip():
                    notes[name] = note.strip()
    return versions, notes


def stale(wanted: dict[str, str], locked: dict[str, str], notes: dict[str, str]) -> list[str]:
    """What is wrong with a lock for `wanted` (name → requirements.txt pin): a distribution missing
    or extra, or a version that is neither the pin nor a move for the target recorded against it."""
    problems = [f"{d} is missing" for d in sorted(set(wanted) - set(locked))]
    problems += [f"{d} is not needed" for d in sorted(set(locked) - set(wanted))]
    for d in sorted(set(wanted) & set(locked)):
        moved = notes.get(d, "").startswith(f"{wanted[d]} in requirements.txt:")
        if locked[d] != wanted[d] and not moved:
            problems.append(f"{d}=={locked[d]}, but requirements.txt pins {wanted[d]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infra.package.deps", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed lock, write nothing")
    args = ap.parse_args(argv)
    wanted = curated(loaded_modules())
    if args.check:
        problems = stale(wanted, *read_lock())
        if problems:
            print(f"{os.path.relpath(LOCK, ROOT)} is out of date ({'; '.join(problems)}): "
                  "run python -m infra.package.deps", file=sys.stderr)
            return 1
        print("the lock matches what the functions load")
        return 0
    from infra.package import target

    try:
        versions, notes = target.resolve(wanted)
    except target.TargetError as e:
        print(f"deps: {e}", file=sys.stderr)
        return 1
    with open(LOCK, "w", encoding="utf-8") as f:
        f.write(render(versions, notes))
    print(f"wrote {os.path.relpath(LOCK, ROOT)}: {len(versions)} distributions")
    for name, note in notes.items():
        print(f"  {name}=={versions[name]} for CPython {target.PYTHON}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
