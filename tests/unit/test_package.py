"""Packaging for FC: wheel tags FC's python3.10 can load, zips without tests, a lock that covers
what the functions import."""

import os
import zipfile

import pytest

from infra.package import build, deps

ROOT = build.ROOT


@pytest.mark.parametrize("name", [
    "pydantic_core-2.23.4-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "cryptography-43.0.3-cp39-abi3-manylinux_2_28_x86_64.whl",
    "PyYAML-6.0.1-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "openai-1.39.0-py3-none-any.whl",
    "six-1.17.0-py2.py3-none-any.whl",
    "numpy-1.26.4-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
])
def test_wheels_fc_python310_can_load_pass(name):
    build.check_wheel(name)


@pytest.mark.parametrize("name, why", [
    ("pillow-13.0.0-cp311-cp311-manylinux_2_28_x86_64.whl", "python tag"),
    ("tornado-6.6.1-cp311-abi3-manylinux_2_28_x86_64.whl", "newer CPython"),
    ("numpy-2.2.0-cp310-cp310-manylinux_2_34_x86_64.whl", "glibc"),
    ("x-1.0-cp310-cp310-macosx_11_0_arm64.whl", "platform"),
    ("x-1.0-cp310-cp310-manylinux_2_17_aarch64.whl", "platform"),
    ("crcmod-1.7-cp311-cp311-linux_x86_64.whl", "python tag"),
])
def test_wheels_fc_python310_cannot_load_are_refused(name, why):
    with pytest.raises(build.PackageError, match=why):
        build.check_wheel(name)


def test_a_pure_fallback_wheel_loses_its_extension_and_becomes_py3(tmp_path):
    src = tmp_path / "crcmod-1.7-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("crcmod/__init__.py", "from crcmod.crcmod import *\n")
        z.writestr("crcmod/_crcfunext.cpython-311-x86_64-linux-gnu.so", b"\x7fELF")
        z.writestr("crcmod-1.7.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-linux_x86_64\n")
        z.writestr("crcmod-1.7.dist-info/RECORD", "")
    out = build._purify(str(src))
    build.check_wheel(os.path.basename(out))
    with zipfile.ZipFile(out) as z:
        assert "crcmod/__init__.py" in z.namelist() and not any(n.endswith(".so") for n in z.namelist())
        assert "Tag: py3-none-any" in z.read("crcmod-1.7.dist-info/WHEEL").decode()


def test_zips_with_tests_or_the_local_runtime_are_refused(tmp_path):
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("python/shared/x.py", "")
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("python/infra/local/runtime.py", "")
    assert build.check_zip(str(good)) > 0
    with pytest.raises(build.PackageError, match="infra/local"):
        build.check_zip(str(bad))


def test_every_declared_function_has_a_package(tmp_path):
    zips = build.build_functions(str(tmp_path))
    for rid, path in zips.items():
        with zipfile.ZipFile(path) as z:
            assert "index.py" in z.namelist(), rid
    assert set(zips) == set(build.functions_in_s_yaml())


def test_a_stale_lock_is_named():
    wanted = {"filelock": "4.2.12", "six": "1.17.0", "attrs": "26.1.0"}
    locked = {"filelock": "4.1.0", "six": "1.16.0", "tornado": "6.4"}
    notes = {"filelock": "4.2.12 in requirements.txt: Requires-Python >=3.11"}
    assert deps.stale(wanted, locked, notes) == ["attrs is missing", "tornado is not needed",
                                                 "six==1.16.0, but requirements.txt pins 1.17.0"]
    assert any(p.startswith("filelock==4.1.0") for p in deps.stale(wanted, locked, {"filelock": "4.2.11 in requirements.txt: ..."}))


def test_resolving_for_the_target_moves_a_pin_python310_cannot_install(monkeypatch):
    from infra.package import target

    # GIVEN an index where filelock 4.2.12 requires Python >= 3.11 and crcmod has no wheel at all
    asked = []

    def dry_run(reqs, sdist_ok):
        asked.append((list(reqs), set(sdist_ok)))
        if "filelock==4.2.12" in reqs:
            return None, ("ERROR: Ignored the following versions that require a different python version: "
                          "4.2.11 Requires-Python >=3.11; 4.2.12 Requires-Python >=3.11\n"
                          "ERROR: Could not find a version that satisfies the requirement filelock==4.2.12 "
                          "(from versions: 3.16.1, 4.1.0)\nERROR: No matching distribution found for filelock==4.2.12")
        if "crcmod" not in sdist_ok:
            return None, ("ERROR: Could not find a version that satisfies the requirement crcmod==1.7 (from versions: "
                          "none)\nERROR: No matching distribution found for crcmod==1.7")
        return {"filelock": "4.1.0", "crcmod": "1.7", "six": "1.17.0"}, ""

    monkeypatch.setattr(target, "_dry_run", dry_run)
    # WHEN the lock is resolved
    versions, notes = target.resolve({"filelock": "4.2.12", "crcmod": "1.7", "six": "1.17.0"})
    # THEN filelock moved to the newest release 3.10 can install, saying why; crcmod is built from source
    assert versions == {"filelock": "4.1.0", "crcmod": "1.7", "six": "1.17.0"}
    assert notes == {"filelock": "4.2.12 in requirements.txt: Requires-Python >=3.11"}
    assert "filelock<=4.2.12" in asked[-1][0] and "crcmod" in asked[-1][1]


def test_a_pin_no_release_of_can_serve_the_target_is_named(monkeypatch):
    from infra.package import target

    monkeypatch.setattr(target, "_dry_run", lambda reqs, sdist_ok: (None, (
        "ERROR: Could not find a version that satisfies the requirement newpkg<=2.0 (from versions: 3.0)\n"
        "ERROR: No matching distribution found for newpkg<=2.0") if "newpkg<=2.0" in reqs else (
        "ERROR: Ignored the following versions that require a different python version: 2.0 Requires-Python >=3.12\n"
        "ERROR: No matching distribution found for newpkg==2.0")))
    with pytest.raises(target.TargetError, match="newpkg: no release up to 2.0 can be installed on CPython 3.10"):
        target.resolve({"newpkg": "2.0"})


SLAM = """id: {id}
title: {{en: Slam, zh: 擂台}}
flow: round_robin
rounds: 1
roles:
  - {{name: Poet, profile: poet, class: "{cls}", function: {function}}}
  - {{name: Critic, profile: critic}}
"""


@pytest.mark.parametrize("sid, cls, function, module, needle", [
    ("slam", "user_roles.bard:Bard", "persona", "from metagpt.roles import Role\nclass Bard(Role):\n    name: str = 'Poet'\n", None),
    ("slam", "user_roles.missing:Bard", "persona", "", "role 'Poet': role class 'user_roles.missing:Bard' cannot be imported"),
    ("slam", "user_roles.bard:Bard", "persona", "class Bard:\n    pass\n", "is not a MetaGPT Role subclass"),
    ("slam", "user_roles.bard:Bard", "persona", "def broken(:\n", "cannot be imported"),
    ("slam", "user_roles.bard:Bard", "ghost", "", "ghost"),
    ("debate", "user_roles.bard:Bard", "persona", "", "scenario id 'debate' is taken"),
])
def test_a_deployments_team_folder_is_checked_before_it_ships(tmp_path, sid, cls, function, module, needle):
    team = tmp_path / "user_roles"
    (team / "scenarios").mkdir(parents=True)
    (team / "__init__.py").write_text("")
    (team / "bard.py").write_text(module)
    (team / "scenarios" / "slam.yaml").write_text(SLAM.format(id=sid, cls=cls, function=function))
    if needle is None:
        assert build.check_user_roles(str(team)) == ["slam"]
        return
    with pytest.raises(build.PackageError, match="user_roles/scenarios/slam.yaml") as e:
        build.check_user_roles(str(team))
    assert needle in str(e.value)


def test_a_bad_scenario_file_is_named_with_its_field(tmp_path):
    team = tmp_path / "user_roles"
    (team / "scenarios").mkdir(parents=True)
    (team / "scenarios" / "bad.yaml").write_text("id: bad\nflow: chaos\nroles: []\n")
    with pytest.raises(build.PackageError, match="bad.yaml.*flow"):
        build.check_user_roles(str(team))
    (team / "scenarios" / "bad.yaml").write_text("id: [unclosed\n")
    with pytest.raises(build.PackageError, match="bad.yaml: cannot be read as YAML"):
        build.check_user_roles(str(team))
    with pytest.raises(build.PackageError, match="must be named user_roles"):
        build.check_user_roles(str(tmp_path))


def test_only_the_locks_wheels_reach_the_layer():
    # a wheel folder kept from an older lock holds other versions and dropped distributions
    assert build._wheel_for("GitPython-3.1.40-py3-none-any.whl", "gitpython==3.1.40")
    assert build._wheel_for("typing_extensions-4.12.2-py3-none-any.whl", "typing-extensions==4.12.2")
    assert not build._wheel_for("filelock-4.2.12-py3-none-any.whl", "filelock==4.1.0")
    assert not build._wheel_for("anthropic-0.18.1-py3-none-any.whl", "openai==1.0.0")
    assert not build._wheel_for("anthropic-0.18.1.tar.gz", "anthropic==0.18.1")
