"""No API key or token ends up in stored objects or logs: a run with planted secrets, then grep."""

import json
import os
import time
import urllib.request

from infra.local.runtime import LocalRuntime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLANTED_API_KEY = "planted-api-key-7d1f0c"
PLANTED_DASHSCOPE = "sk-planted-dashscope-93ab"


def _call(url, method, path, secret, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_no_secret_in_the_data_directory_or_logs(tmp_path, monkeypatch):
    # GIVEN a stack whose environment holds a planted API key and a planted DashScope key
    monkeypatch.setenv("TROUPE_API_KEY", PLANTED_API_KEY)
    monkeypatch.setenv("DASHSCOPE_API_KEY", PLANTED_DASHSCOPE)
    data = tmp_path / "data"
    with LocalRuntime(str(data), os.path.join(ROOT, "s.yaml")) as rt:
        # WHEN a conversation runs to its end, read with its token
        created = _call(rt.http_url, "POST", "/conversations", PLANTED_API_KEY,
                        {"scenario": "debate", "input": "Secrets?", "rounds": 1})
        token = created["token"]
        deadline = time.time() + 60
        while _call(rt.http_url, "GET", f"/conversations/{created['id']}", token)["status"] == "running":
            assert time.time() < deadline
            time.sleep(0.1)
        _call(rt.http_url, "GET", f"/conversations/{created['id']}/usage", token)
    # THEN no file under the data directory (objects, events, worker logs, dead letters)
    # contains any of the secrets
    scanned = 0
    for dirpath, _dirs, files in os.walk(data):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                text = f.read()
            scanned += 1
            for secret in (PLANTED_API_KEY, PLANTED_DASHSCOPE, token):
                assert secret.encode() not in text, f"{secret[:12]}... found in {path}"
    assert scanned > 10
