"""Packaging for FC: wheel tags FC's python3.10 can load, zips without tests, a lock that covers
what the functions import."""

import os
import subprocess
import sys
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


def test_the_lock_covers_what_the_functions_load_and_matches_the_pins():
    # the probe drives every function's code in one process and maps its imports to packages
    out = subprocess.run([sys.executable, "-m", "infra.package.deps", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    pinned = {**deps.PY310_PINS, **deps.pins()}
    with open(deps.LOCK, encoding="utf-8") as f:
        for line in f:
            if "==" in line and not line.startswith("#"):
                name, version = line.strip().split("==")
                assert deps.PY310_OVERRIDES.get(name, pinned[name]) == version
