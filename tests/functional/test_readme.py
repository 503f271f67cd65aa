"""The README's commands, run as written (data dirs and ports swapped for temporary ones), so
that they cannot rot."""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
BLOCKS = re.findall(r"```[a-z]*\n(.*?)```", README, re.S)
LINES = [line.split("  #")[0].strip() for block in BLOCKS for line in block.splitlines()]


def _commands(prefix):
    found = [line for line in LINES if line.startswith(prefix)]
    assert found, f"README shows no {prefix!r} command"
    return found


def _run(argv, **kw):
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180, **kw)


def test_readme_quick_start_is_make_run_and_make_test():
    quick = BLOCKS[0].split()
    assert quick[:2] == ["make", "run"] and "make" in quick[2:] and "test" in quick[2:]
    make = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    assert re.search(r"^run: setup", make, re.M) and re.search(r"^test: setup", make, re.M)
    assert "make test" in open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()


def test_readme_invoke_command(tmp_path):
    cmd, = _commands("python -m infra.local invoke")
    argv = shlex.split(cmd.replace("--data data", f"--data {tmp_path}"))
    out = _run([sys.executable] + argv[1:])
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["statusCode"] == 200


def test_readme_run_command(tmp_path):
    cmd, = _commands("python -m infra.local run")
    out = _run([sys.executable] + shlex.split(cmd)[1:] + ["--data", str(tmp_path)],
               env={**os.environ, "TROUPE_LLM": "fake"})
    assert out.returncode == 0, out.stderr[-2000:]
    turns = re.findall(r"^\[(\d+)\] (\w+)(?: \([^)]*\))?:", out.stdout, re.M)
    assert [int(t) for t, _ in turns] == [0, 1, 2, 3, 4]
    assert [r for _, r in turns][1:] == ["Proponent", "Opponent", "Proponent", "Judge"]
    assert "status: completed" in out.stdout


@pytest.mark.parametrize("n", [0, 1])
def test_readme_software_company_commands(tmp_path, n):
    cmd = _commands("TROUPE_LLM=fake .venv/bin/python -m infra.local run --scenario software_company")[n]
    argv = shlex.split(cmd)[1:]
    out = _run([sys.executable] + argv[1:] + ["--data", str(tmp_path)], env={**os.environ, "TROUPE_LLM": "fake"})
    assert out.returncode == 0, out.stderr[-2000:]
    speakers = re.findall(r"^\[\d+\] (\w+)(?: \([^)]*\))?:", out.stdout, re.M)
    assert speakers[:5] == ["user", "Alice", "Bob", "Eve", "Alex"] and "Edward" in speakers
    assert "status: completed" in out.stdout
    listed = re.findall(r"^  (\S+) \(\d+ bytes\)$", out.stdout, re.M)
    assert any(p.startswith("docs/prd/") for p in listed) and any(p.startswith("tests/test_") for p in listed)
    assert ("test_outputs/" in out.stdout) == (n == 0)  # the second runs with run_tests=false


README_KEY = "change-me"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    cmd, = _commands("python -m infra.local serve")
    port = _free_port()
    argv = shlex.split(cmd.replace("--port 8000", f"--port {port}").replace("--data data", f"--data {tmp_path}"))
    proc = subprocess.Popen([sys.executable] + argv[1:], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "TROUPE_LLM": "fake", "TROUPE_API_KEY": README_KEY})
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(30)


def test_readme_curl_commands(served):
    curls = _commands("curl")
    state = {}

    def curl(line):
        line = line.replace("localhost:8000", f"127.0.0.1:{served}")
        line = line.replace("<id>", state.get("id", "")).replace("<cursor>", state.get("cursor", ""))
        line = line.replace("$TROUPE_API_KEY", README_KEY).replace("<token>", state.get("token", ""))
        out = _run(shlex.split(line))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    created = curl(curls[0])
    state["id"], state["token"] = created["id"], created["token"]
    assert f"export TROUPE_API_KEY={README_KEY}" in README
    deadline = time.time() + 60
    while time.time() < deadline:
        body = curl(curls[1])
        if body["status"] != "running":
            break
        time.sleep(0.2)
    assert body["status"] == "completed" and len(body["messages"]) == 6
    assert body["deliverable"]["role"] == "Judge"
    state["cursor"] = body["messages"][2]["turn"] and f"{body['messages'][2]['turn']:06d}-{body['messages'][2]['id']}"
    newer = curl(curls[2])
    assert [m["turn"] for m in newer["messages"]] == [3, 4, 5]
    bill = curl(curls[3])
    assert len([r for r in bill["rows"] if r["outcome"] == "committed"]) == 5 and bill["currency"] == "CNY"
    assert any(s["id"] == "debate" for s in curl(curls[4])["scenarios"])


TEAM_README = open(os.path.join(ROOT, "user_roles", "README.md"), encoding="utf-8").read()


@pytest.mark.parametrize("n", [0, 1])
def test_the_team_folders_run_commands(tmp_path, n):
    # user_roles/README.md: a deployment's own scenario, by id and as a file, with its own Role
    lines = [ln for b in re.findall(r"```\n(.*?)```", TEAM_README, re.S) for ln in b.splitlines()
             if " -m infra.local run " in ln]
    words = shlex.split(lines[n])
    env = {**os.environ, **dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))}
    argv = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
    out = _run([sys.executable] + argv[1:] + ["--data", str(tmp_path)], env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    speakers = re.findall(r"^\[\d+\] (\w+)(?: \([^)]*\))?:", out.stdout, re.M)
    assert speakers == ["user", "Poet", "Critic"] and "status: completed" in out.stdout
