"""Build what s.yaml deploys: `make package` (python -m infra.package.build).

  build/package/wheels/            manylinux x86_64 wheels for CPython 3.10 (FC's python3.10),
                                   from infra/package/requirements-fc.txt, plus metagpt --no-deps
  build/package/layer.zip          the dependency layer: python/ = those wheels unpacked + troupe's
                                   shared/ library + the deployment's own user_roles/ package (its
                                   MetaGPT roles and scenarios; FC unpacks a layer to /opt and
                                   /opt/python is on the path)
  build/package/functions/<f>.zip  each function's code folder (its index.py)

Checks, each a hard error: every wheel is tagged for CPython 3.10 (cp310, abi3 or py3) on
manylinux x86_64 no newer than glibc 2.28 (FC's python3.10 runs on Debian 10) or any platform;
nothing from tests/, bench/ or the local runtime (infra/) is inside a zip; every zip is at most
100 MB (the API's upload limit). Prints the sizes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import zipfile

import yaml

from infra.package import deps, target

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCK = os.path.join(ROOT, "infra", "package", "requirements-fc.txt")
MAX_ZIP = 100 * 1024 * 1024
MAX_GLIBC = (2, 28)
FORBIDDEN = ("tests/", "bench/", "infra/", "python/tests/", "python/bench/", "python/infra/")
#: sdist-only packages with a pure-Python fallback for their optional C extension (crcmod: the
#: CRC64 oss2 checks uploads with); built locally, they are packaged without the extension
PURE_FALLBACK = {"crcmod"}
#: the test suites some packages ship inside themselves: never imported, tens of MB
PRUNE_DIRS = {"tests", "testing", "__pycache__"}
PRUNE_KEEP = {"numpy/testing", "pandas/_testing"}  # imported by the packages themselves
#: parts of packages troupe never imports: jieba's paddle model, part-of-speech tagger and
#: keyword extraction (the knowledge indexer only cuts words), 30 MB unpacked
PRUNE_PATHS = {"jieba/lac_small", "jieba/posseg", "jieba/analyse"}


class PackageError(Exception):
    pass


# -- wheel tags --------------------------------------------------------------------------------
def wheel_tags(filename: str) -> tuple[str, str, str]:
    """(python, abi, platform) tags of a wheel file name."""
    parts = filename[:-4].split("-")
    if not filename.endswith(".whl") or len(parts) not in (5, 6):
        raise PackageError(f"{filename}: not a wheel file name")
    return parts[-3], parts[-2], parts[-1]


def _platform_ok(plat: str) -> bool:
    if plat == "any":
        return True
    for p in plat.split("."):
        legacy = {"manylinux1_x86_64": (2, 5), "manylinux2010_x86_64": (2, 12), "manylinux2014_x86_64": (2, 17)}
        if p in legacy:
            return legacy[p] <= MAX_GLIBC
        m = re.match(r"^manylinux_(\d+)_(\d+)_x86_64$", p)
        if m and (int(m.group(1)), int(m.group(2))) <= MAX_GLIBC:
            return True
    return False


def check_wheel(filename: str) -> None:
    """Refuse a wheel FC's python3.10 on x86_64 Debian 10 could not load."""
    py, abi, plat = wheel_tags(filename)
    pys = set(py.split("."))
    if not pys & {"cp310", "py3", "py2", "py310", "cp36", "cp37", "cp38", "cp39"} and "abi3" not in abi:
        raise PackageError(f"{filename}: python tag {py} is not for CPython 3.10")
    if abi not in ("none", "abi3", "cp310"):
        raise PackageError(f"{filename}: ABI {abi} is not cp310, abi3 or none")
    if abi == "abi3" and not any(re.match(r"^cp3(\d+)$", t) and int(t[3:]) <= 10 for t in pys):
        raise PackageError(f"{filename}: abi3 wheel for a newer CPython than 3.10")
    if abi == "cp310" and "cp310" not in pys:
        raise PackageError(f"{filename}: ABI cp310 with python tag {py}")
    if not _platform_ok(plat):
        raise PackageError(f"{filename}: platform {plat} is not manylinux x86_64 with glibc <= 2.28, nor any")


# -- steps -------------------------------------------------------------------------------------
def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise PackageError(f"{' '.join(cmd[3:6])}... failed:\n{proc.stderr[-3000:]}")


def _requirements() -> list[str]:
    lines = []
    for path in (LOCK, os.path.join(ROOT, "requirements-metagpt.txt")):
        with open(path, encoding="utf-8") as f:
            lines += [ln.split("#")[0].strip() for ln in f if ln.split("#")[0].strip()]
    return lines


def download(wheels: str) -> list[str]:
    """Wheels for CPython 3.10 manylinux x86_64, one requirement at a time so that a package
    without such a wheel is named; a pure-Python sdist is built into a py3 wheel instead."""
    os.makedirs(wheels, exist_ok=True)
    reqs = _requirements()
    have = set(os.listdir(wheels))
    for req in reqs:
        if any(_wheel_for(w, req) for w in have):
            continue
        try:
            _pip("download", "--quiet", "--no-deps", "--only-binary=:all:", *target.PIP_TARGET, "-d", wheels, req)
        except PackageError as e:
            why = target._IGNORED.search(str(e))
            version = req.split("==")[-1]
            if why and target._requires_python(why.group(1), version):
                raise PackageError(f"{req} cannot be installed on CPython {target.PYTHON} "
                                   f"({target._requires_python(why.group(1), version)}): the lock was not "
                                   "resolved for the target; run python -m infra.package.deps") from None
            # no wheel for CPython 3.10 on the index: build one from the sdist (check_wheel
            # refuses it unless it is pure Python, or made pure: PURE_FALLBACK)
            sdists = os.path.join(wheels, ".sdist")
            _pip("download", "--quiet", "--no-deps", "--no-binary=:all:", "-d", sdists, req)
            for sdist in os.listdir(sdists):
                _pip("wheel", "--quiet", "--no-deps", "-w", wheels, os.path.join(sdists, sdist))
            shutil.rmtree(sdists)
        have = set(os.listdir(wheels))
    for w in sorted(have):
        dist = w.split("-")[0].lower()
        if w.endswith(".whl") and dist in PURE_FALLBACK and wheel_tags(w)[2] != "any":
            _purify(os.path.join(wheels, w))
    # the folder may hold wheels of an older lock: only this lock's are the layer's
    return sorted(w for w in os.listdir(wheels) if any(_wheel_for(w, req) for req in reqs))


def _wheel_for(wheel: str, requirement: str) -> bool:
    """Whether a wheel file is the distribution and version `name==version` pins."""
    if not wheel.endswith(".whl") or "==" not in requirement:
        return False
    name, version = (x.strip() for x in requirement.split("==", 1))
    dist, wheel_version = wheel.split("-")[:2]
    canon = lambda n: re.sub(r"[-_.]+", "_", n).lower()  # noqa: E731
    return canon(dist) == canon(name) and wheel_version == version


def _purify(path: str) -> str:
    """Rewrite a locally built wheel of a PURE_FALLBACK package as py3-none-any, without its
    compiled extension modules (the package then runs its pure-Python code)."""
    name = os.path.basename(path)
    dist, version = name.split("-")[:2]
    dest = os.path.join(os.path.dirname(path), f"{dist}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            if info.filename.endswith((".so", ".pyd")) or info.filename.endswith(".dist-info/RECORD"):
                continue
            data = src.read(info.filename)
            if info.filename.endswith(".dist-info/WHEEL"):
                text = data.decode()
                text = re.sub(r"^Root-Is-Purelib: .*$", "Root-Is-Purelib: true", text, flags=re.M)
                text = re.sub(r"^Tag: .*$", "Tag: py3-none-any", text, flags=re.M)
                data = text.encode()
            out.writestr(info.filename, data)
    os.remove(path)
    return dest


def _prune(top: str) -> None:
    for dirpath, dirnames, _ in os.walk(top):
        rel = os.path.relpath(dirpath, top).replace(os.sep, "/")
        for d in list(dirnames):
            path = f"{rel}/{d}" if rel != "." else d
            if (d in PRUNE_DIRS and not any(path.endswith(k) for k in PRUNE_KEEP)) or path in PRUNE_PATHS:
                shutil.rmtree(os.path.join(dirpath, d))
                dirnames.remove(d)


def _zip_dir(src: str, dest: str, prefix: str = "", keep_pyc: bool = False) -> None:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(".pyc") and not keep_pyc:
                    continue
                full = os.path.join(dirpath, name)
                z.write(full, prefix + os.path.relpath(full, src).replace(os.sep, "/"))


def role_functions() -> set[str]:
    """Functions that may play scenario roles: s.yaml's gateway lists them (TROUPE_ROLE_FUNCTIONS)."""
    with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    env = doc["resources"].get("gateway", {}).get("props", {}).get("environmentVariables", {})
    return {f.strip() for f in str(env.get("TROUPE_ROLE_FUNCTIONS", "persona")).split(",") if f.strip()}


def check_user_roles(src: str) -> list[str]:
    """The deployment's own team folder (a `user_roles` package): every scenario file validates
    against this deployment's functions and keeps clear of the built-in ids, and every role class
    it names imports as a MetaGPT Role subclass. Returns the scenario ids; raises PackageError
    naming the file and the problem."""
    from shared import scenarios
    from shared.errors import TroupeError

    parent = os.path.dirname(os.path.abspath(src))
    if os.path.basename(os.path.abspath(src)) != "user_roles":
        raise PackageError(f"{src}: the team folder must be named user_roles (it is imported as that package)")
    def forget() -> None:  # the folder's modules are imported afresh, whatever was imported before
        for name in [m for m in sys.modules if m == "user_roles" or m.startswith("user_roles.")]:
            del sys.modules[name]

    forget()
    sys.path.insert(0, parent)
    try:
        taken = set(scenarios.shipped())
        ids = []
        for path in scenarios.deployment_files([src]):
            where = os.path.relpath(path, parent)
            try:
                sc = scenarios.load_file(path, functions=role_functions())
            except TroupeError as e:
                raise PackageError(f"{where}: {e.message}") from None
            if sc["id"] in taken:
                raise PackageError(f"{where}: scenario id {sc['id']!r} is taken (built in, or another file)")
            taken.add(sc["id"])
            ids.append(sc["id"])
            for role in sc["roles"]:
                if (role.get("class") or "").startswith("user_roles."):
                    from shared.runner import role_class

                    try:
                        role_class.__wrapped__(role["class"])  # not the cached answer
                    except TroupeError as e:
                        raise PackageError(f"{where}: role {role['name']!r}: {e.message}") from None
        return ids
    finally:
        sys.path.remove(parent)
        forget()


def build_layer(wheels: str, names: list[str], out: str, user_roles: str | None = None) -> str:
    stage = os.path.join(out, "layer")
    shutil.rmtree(stage, ignore_errors=True)
    site = os.path.join(stage, "python")
    os.makedirs(site)
    for name in names:
        with zipfile.ZipFile(os.path.join(wheels, name)) as z:
            z.extractall(site)
    _prune(site)
    shutil.copytree(os.path.join(ROOT, "shared"), os.path.join(site, "shared"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if user_roles and os.path.isdir(user_roles):
        shutil.copytree(user_roles, os.path.join(site, "user_roles"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "README.md"))
    dest = os.path.join(out, "layer.zip")
    compiled = compile_layer(site)
    _zip_dir(stage, dest, keep_pyc=compiled)
    return dest


def compile_layer(site: str) -> bool:
    """Bytecode for CPython 3.10, shipped in the layer: FC's /opt is read-only, so without it every
    cold start compiles each module it imports from source. Compiled by a real CPython 3.10 with
    hash-based, unchecked .pyc files (valid whatever mtimes the unzip gives; a layer version never
    changes). Returns False, saying why, where no CPython 3.10 exists."""
    python, why = target.python310()
    if python is None:
        print(f"bytecode: not compiled ({why}); cold starts on FC compile from source")
        return False
    proc = subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                           site], capture_output=True, text=True)
    if proc.returncode:  # a file the target cannot compile (3.11-only syntax in troupe's own code, say)
        errors = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines() if ln.strip()]
        raise PackageError(f"CPython 3.10 cannot compile the layer:\n" + "\n".join(errors[-20:]))
    print("bytecode: compiled by CPython 3.10 into the layer (unchecked-hash .pyc)")
    return True


def check_layer_covers(site: str, modules: list[str]) -> None:
    """Every top-level module the functions loaded (infra.package.deps' probe) is in the layer."""
    from importlib import metadata

    stdlib = set(sys.stdlib_module_names)
    owners = metadata.packages_distributions()
    excluded = {deps._canon(x) for x in deps.EXCLUDED} | {"setuptools", "pytest"}
    # modules of tools that stay out of the layer (pytest's `py`, setuptools' `pkg_resources`,
    # which jieba tries and falls back from) are not needed there
    modules = [m for m in modules if not (owners.get(m) and all(deps._canon(d) in excluded for d in owners[m]))]
    present = set()
    for name in os.listdir(site):
        present.add(name.split(".")[0].split("-")[0])
    missing = sorted(m for m in modules if m not in stdlib and m not in present and not m.startswith("_")
                     and m not in ("tests", "infra", "functions", "__main__", "cython_runtime")
                     and m not in deps.EXCLUDED)
    if missing:
        raise PackageError(f"the layer lacks modules the functions load: {', '.join(missing)}")


def functions_in_s_yaml() -> dict[str, str]:
    """Resource id → its code folder, for every function s.yaml declares."""
    with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    return {rid: res["props"]["code"] for rid, res in doc["resources"].items() if res.get("component") == "fc3"}


def build_functions(out: str) -> dict[str, str]:
    os.makedirs(os.path.join(out, "functions"), exist_ok=True)
    zips = {}
    for rid, code in functions_in_s_yaml().items():
        src = os.path.normpath(os.path.join(ROOT, code))
        if not os.path.isfile(os.path.join(src, "index.py")):
            raise PackageError(f"function {rid}: {code} has no index.py")
        dest = os.path.join(out, "functions", f"{rid}.zip")
        _zip_dir(src, dest)
        zips[rid] = dest
    return zips


#: the part of the local runtime that plays FC's own runtime inside a function instance: it
#: reads requests and calls `index.handler` (standard library only); the part that plays the
#: bucket's notifications around the function's store (spool.py, events.py); and the scripted LLM it
#: registers for tests that run the package with TROUPE_LLM=fake
BOOTSTRAP = ("infra/__init__.py", "infra/local/__init__.py", "infra/local/worker.py", "infra/local/_frames.py",
             "infra/local/spool.py", "infra/local/events.py", "infra/testing/__init__.py",
             "infra/testing/scripted_llm.py")


def unpack(out: str, dest: str) -> str:
    """Unpack a built package as FC does: the layer to `dest/layer` (its python/ is the layer's
    /opt/python), each function zip to `dest/functions/<id>` (its /code), plus the local runtime's
    worker bootstrap under `dest/runtime`. Returns `dest`, for LocalRuntime(package=dest)."""
    shutil.rmtree(dest, ignore_errors=True)
    with zipfile.ZipFile(os.path.join(out, "layer.zip")) as z:
        z.extractall(os.path.join(dest, "layer"))
    for name in sorted(os.listdir(os.path.join(out, "functions"))):
        with zipfile.ZipFile(os.path.join(out, "functions", name)) as z:
            z.extractall(os.path.join(dest, "functions", name[:-len(".zip")]))
    for rel in BOOTSTRAP:
        os.makedirs(os.path.dirname(os.path.join(dest, "runtime", rel)), exist_ok=True)
        shutil.copyfile(os.path.join(ROOT, rel), os.path.join(dest, "runtime", rel))
    return dest


def check_zip(path: str) -> int:
    size = os.path.getsize(path)
    if size > MAX_ZIP:
        raise PackageError(f"{os.path.relpath(path, ROOT)} is {size / 2**20:.1f} MB, over the 100 MB upload limit")
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.startswith(FORBIDDEN):
                raise PackageError(f"{os.path.relpath(path, ROOT)} contains {name}: tests, bench and the local "
                                   "runtime stay out of packages")
    return size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infra.package.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "package"))
    ap.add_argument("--user-roles", default=os.environ.get("TROUPE_USER_ROLES") or os.path.join(ROOT, "user_roles"),
                    help="the deployment's own roles and scenarios (a folder named user_roles)")
    ap.add_argument("--wheels", help="a folder of wheels already downloaded (default: OUT/wheels)")
    args = ap.parse_args(argv)
    try:
        wheels_dir = args.wheels or os.path.join(args.out, "wheels")
        team = check_user_roles(args.user_roles) if os.path.isdir(args.user_roles) else []
        print(f"user_roles: {os.path.relpath(os.path.abspath(args.user_roles), ROOT)}, "
              f"{len(team)} scenario(s){': ' + ', '.join(team) if team else ''}", flush=True)
        print(f"downloading CPython 3.10 manylinux x86_64 wheels for {len(_requirements())} requirements "
              f"into {os.path.relpath(wheels_dir, ROOT)} (pip's cache makes later builds quick)", flush=True)
        names = download(wheels_dir)
        for name in names:
            check_wheel(name)
        print(f"wheel tags: {len(names)} wheels, all cp310/abi3/py3 for manylinux x86_64 (glibc <= 2.28) or any")
        layer = build_layer(wheels_dir, names, args.out, args.user_roles)
        python, why = target.python310()
        if python:
            seen = target.check_layer_consistent(python, os.path.join(args.out, "layer", "python"))
            print(f"versions: CPython 3.10 ({python}) finds every requirement among the layer's {seen['dists']} "
                  f"distributions met ({len(seen['trimmed'])} left out: never loaded by the functions)")
        else:
            print(f"versions: not checked on CPython 3.10: {why}")
        check_layer_covers(os.path.join(args.out, "layer", "python"), deps.loaded_modules())
        print("layer: holds every module the functions load (infra.package.deps' probe)")
        zips = {"layer (deps, shared/, user_roles/)": layer, **{f"function {k}": v for k, v in build_functions(args.out).items()}}
        print(f"{'package':<32}{'zip MB':>9}{'unpacked MB':>13}")
        for label, path in zips.items():
            size = check_zip(path)
            with zipfile.ZipFile(path) as z:
                unpacked = sum(i.file_size for i in z.infolist())
            print(f"{label:<32}{size / 2**20:>9.2f}{unpacked / 2**20:>13.1f}  {os.path.relpath(path, ROOT)}")
        print("every zip <= 100 MB; none holds tests/, bench/ or infra/")
    except (PackageError, target.TargetError) as e:
        print(f"package: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
