"""A real deployment: package, publish the layer, `s deploy`, a debate over the HTTP trigger,
`s remove`. Needs an account; skipped, saying what is missing, otherwise."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEEDED = ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ACCOUNT_ID",
          "DASHSCOPE_API_KEY", "TROUPE_API_KEY")


def _missing() -> list[str]:
    missing = [] if os.environ.get("TROUPE_E2E") == "1" else ["TROUPE_E2E=1"]
    missing += [name for name in NEEDED if not os.environ.get(name)]
    if shutil.which("s") is None:
        missing.append("the Serverless Devs `s` command")
    return missing


pytestmark = pytest.mark.skipif(bool(_missing()), reason="a real FC deployment needs: " + ", ".join(_missing()))


def _run(*argv, timeout=1800):
    out = subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(argv)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _call(base, method, path, token, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_a_debate_runs_on_a_real_deployment():
    _run("make", "package")
    _run(sys.executable, "-m", "infra.fc", "publish-layer")
    deployed = _run("s", "deploy", "-y")
    try:
        urls = re.findall(r"https://[\w.-]+fcapp\.run[\w/.-]*|https://[\w.-]+\.fc\.aliyuncs\.com[\w/.-]*", deployed)
        assert urls, "s deploy printed no HTTP trigger address"
        base = urls[0].rstrip("/")
        created = _call(base, "POST", "/conversations", os.environ["TROUPE_API_KEY"],
                        {"scenario": "debate", "input": "Should cities ban cars?", "rounds": 1})
        deadline = time.time() + 600
        while time.time() < deadline:
            view = _call(base, "GET", f"/conversations/{created['id']}", created["token"])
            if view["status"] != "running":
                break
            time.sleep(3)
        assert view["status"] == "completed", view.get("end")
        roles = [m["role"] for m in view["messages"]]
        assert roles == ["user", "Proponent", "Opponent", "Judge"]
        usage = _call(base, "GET", f"/conversations/{created['id']}/usage", created["token"])
        assert usage["total"]["prompt_tokens"] > 0
    finally:
        subprocess.run(["s", "remove", "-y"], cwd=ROOT, capture_output=True, text=True, timeout=900)
