"""The deployed artifact is the product: what `make package` built, unpacked as FC unpacks it and
run on CPython 3.10 (FC's python3.10): each function from its own zip's folder, the layer's
python/ on its path, `index.handler` called with the runtime's real OSS and HTTP events.

`make test` builds the package first; run alone, this module needs `make package` (or
TROUPE_PACKAGE_DIR naming a build) and skips, saying so, without it or without a CPython 3.10.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from infra.local.runtime import LocalRuntime
from infra.package import build, deps, target

ROOT = build.ROOT
BUILT = os.environ.get("TROUPE_PACKAGE_DIR") or os.path.join(ROOT, "build", "package")
PY310, NO_PY310 = target.python310()

pytestmark = [
    pytest.mark.skipif(not os.path.isfile(os.path.join(BUILT, "layer.zip")),
                       reason=f"no package at {BUILT}: `make package` builds it (`make test` does so first)"),
    pytest.mark.skipif(PY310 is None, reason=f"the package targets CPython 3.10: {NO_PY310}"),
]


def _http(rt, method, path, token, body=None):
    req = urllib.request.Request(rt.http_url + path, data=json.dumps(body).encode() if body is not None else None,
                                 method=method, headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _run(rt, scenario, text, timeout=180):
    created = _http(rt, "POST", "/conversations", rt.api_key, {"scenario": scenario, "input": text})
    deadline = time.time() + timeout
    while time.time() < deadline:
        conv = _http(rt, "GET", f"/conversations/{created['id']}", created["token"])
        if conv["status"] != "running":
            return created, conv
        time.sleep(0.2)
    raise AssertionError(f"{scenario} did not end in {timeout} s")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    base = tmp_path_factory.mktemp("packaged")
    unpacked = build.unpack(BUILT, str(base / "unpacked"))
    with LocalRuntime(str(base / "data"), os.path.join(ROOT, "s.yaml"), package=unpacked, python=PY310,
                      llm="fake", retry_delay=0.05) as rt:
        yield rt, unpacked


def _worker_pids(rt, cid, token):
    rows = _http(rt, "GET", f"/conversations/{cid}/invocations", token)["invocations"]
    return {(r["function"], r["pid"]) for r in rows if r.get("pid")}


def _assert_runs_from_the_package(pid: int, unpacked: str) -> None:
    exe = os.path.realpath(f"/proc/{pid}/exe")
    assert os.path.realpath(exe) == os.path.realpath(PY310), exe
    with open(f"/proc/{pid}/maps") as f:
        mapped = {line.split()[-1] for line in f if "/" in line}
    native = [m for m in mapped if m.endswith(".so") and "site-packages" not in m and "lib-dynload" not in m
              and not m.startswith(("/usr/", "/lib"))]
    assert native and all(m.startswith(unpacked) for m in native), native  # the layer's compiled packages
    assert not any(m.startswith(os.path.join(ROOT, ".venv")) for m in mapped)


def test_a_debate_completes_on_the_packaged_functions(packaged):
    rt, unpacked = packaged
    created, conv = _run(rt, "debate", "Tea or coffee?")
    assert conv["status"] == "completed" and conv["end"]["reason"] == "deliverable", conv["end"]
    pids = _worker_pids(rt, created["id"], created["token"])
    assert {f for f, _ in pids} >= {"persona"}
    for function, pid in pids:
        if os.path.exists(f"/proc/{pid}"):  # a warm instance
            _assert_runs_from_the_package(pid, unpacked)


def test_a_software_company_completes_on_the_packaged_functions(packaged):
    rt, unpacked = packaged
    created, conv = _run(rt, "software_company", "开发一个记账APP")
    assert conv["status"] == "completed", conv["end"]
    pids = _worker_pids(rt, created["id"], created["token"])
    assert {f for f, _ in pids} >= {"product_manager", "architect", "project_manager", "engineer", "qa_engineer"}
    checked = 0
    for function, pid in pids:
        if os.path.exists(f"/proc/{pid}"):
            _assert_runs_from_the_package(pid, unpacked)
            checked += 1
    assert checked >= 5
    arts = _http(rt, "GET", f"/conversations/{created['id']}/artifacts", created["token"])["artifacts"]
    outputs = [a["path"] for a in arts if a["path"].startswith("test_outputs/")]
    assert outputs  # QA ran the generated tests, confined, on the packaged function, and they passed
    for path in outputs:
        req = urllib.request.Request(f"{rt.http_url}/conversations/{created['id']}/artifacts/{path}",
                                     headers={"Authorization": f"Bearer {created['token']}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            result = json.loads(resp.read())
        assert "## Status:\nPASS" in result["summary"], result


def test_a_deployments_own_roles_and_scenarios_ship_in_the_layer_and_run_from_it(tmp_path):
    # GIVEN a package built with the deployment's own team folder (a MetaGPT role, a scenario)
    team = os.path.join(ROOT, "tests", "functional", "user_roles_pkg", "user_roles")
    out = tmp_path / "package"
    proc = subprocess.run([sys.executable, "-m", "infra.package.build", "--out", str(out), "--user-roles", team,
                           "--wheels", os.path.join(BUILT, "wheels")], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 scenario(s): poetry_slam" in proc.stdout
    unpacked = build.unpack(str(out), str(tmp_path / "unpacked"))
    assert os.path.isfile(os.path.join(unpacked, "layer", "python", "user_roles", "scenarios", "poetry_slam.yaml"))
    # WHEN its scenario runs on the packaged functions, on CPython 3.10
    with LocalRuntime(str(tmp_path / "data"), os.path.join(ROOT, "s.yaml"), package=unpacked, python=PY310,
                      llm="fake", retry_delay=0.05) as rt:
        catalog = [s["id"] for s in _http(rt, "GET", "/scenarios", rt.api_key)["scenarios"]]
        created, conv = _run(rt, "poetry_slam", "the sea at night")
        turns = conv["messages"]
    # THEN the catalog has it, and the user's Role spoke through its own Action
    assert "poetry_slam" in catalog
    assert conv["status"] == "completed", conv["end"]
    assert [m["role"] for m in turns] == ["user", "Poet", "Critic"]
    assert turns[1]["cause_by"].endswith("WriteCouplet")


def test_the_lock_covers_what_the_functions_load_and_matches_the_pins():
    # the probe drives every function's code in one process and maps its imports to packages
    out = subprocess.run([sys.executable, "-m", "infra.package.deps", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    versions, notes = deps.read_lock()
    pinned = {**deps.PY310_PINS, **deps.pins()}
    # every version is the pin, or a release for CPython 3.10 with the reason recorded
    assert deps.stale({d: pinned[d] for d in versions}, versions, notes) == []
    assert notes.get("pycparser", "").startswith(pinned["pycparser"] + " in requirements.txt: Requires-Python >=3.11")


@pytest.mark.skipif(__import__("infra.package.target", fromlist=["x"]).python310()[0] is None,
                    reason="no CPython 3.10 on this machine")
def test_cpython310_names_conflicting_versions_in_a_layer(tmp_path):
    from infra.package import target

    site = tmp_path / "python"
    for name, version, requires in (("alpha", "1.0", ["beta>=2"]), ("beta", "1.5", []),
                                    ("packaging", "24.2", [])):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                       + "".join(f"Requires-Dist: {r}\n" for r in requires))
    # the check imports packaging from the layer: give it the real one
    import packaging
    import shutil

    shutil.copytree(os.path.dirname(packaging.__file__), site / "packaging")
    with pytest.raises(target.TargetError, match="alpha 1.0 requires beta>=2, the layer has beta 1.5"):
        target.check_layer_consistent(target.python310()[0], str(site))
    (site / "beta-1.5.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: beta\nVersion: 2.1\n")
    assert target.check_layer_consistent(target.python310()[0], str(site))["conflicts"] == []


def test_a_throttled_turn_is_handed_back_through_the_layers_fc_sdk(packaged, tmp_path):
    from tests.llm_endpoints import THROTTLING, DashScopeEndpoint

    _, unpacked = packaged
    # GIVEN the packaged functions on MetaGPT's DashScope provider, whose model turns the first call away
    script = lambda rec: THROTTLING if len(ep.requests) == 1 else "Streets are for people."  # noqa: E731
    with DashScopeEndpoint(key="sk-package", script=script) as ep, \
            LocalRuntime(str(tmp_path / "data"), os.path.join(ROOT, "s.yaml"), package=unpacked, python=PY310,
                         llm="dashscope", retry_delay=0.05,
                         extra_env={"DASHSCOPE_API_KEY": ep.key, "DASHSCOPE_HTTP_BASE_URL": ep.base_url,
                                    "TROUPE_THROTTLE_WAIT_S": "0"}) as rt:
        created = _http(rt, "POST", "/conversations", rt.api_key,
                        {"scenario": "debate", "input": "Should cities ban cars?", "limits": {"max_turns": 1}})
        deadline = time.time() + 120
        while (conv := _http(rt, "GET", f"/conversations/{created['id']}", created["token"]))["status"] == "running":
            assert time.time() < deadline, conv
            time.sleep(0.2)
        rows = _http(rt, "GET", f"/conversations/{created['id']}/invocations", created["token"])["invocations"]
    # THEN the turn went back to FC through the layer's FC SDK (a delayed invocation) and then completed,
    # its call paid once
    assert conv["status"] == "completed", conv["end"]
    outcomes = [r["outcome"] for r in sorted(rows, key=lambda r: r["start"]) if r["function"] == "persona"]
    assert outcomes[:2] == ["handed_back", "committed"] and outcomes.count("handed_back") == 1, rows
    assert ep.requests[0].status == 429 and all(r.status == 200 for r in ep.requests[1:]), ep.requests
    assert sum(r.get("llm_paid", 0) for r in rows) == len(ep.requests) - 1
