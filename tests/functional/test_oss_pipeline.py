"""OSS pipelines with a real OSS client on the local runtime: `serve` exposes the bucket's OSS
endpoint, and the README's oss2 snippet, run as written against it, starts a conversation with a
request file, reads its result back, and has a knowledge document indexed, then unindexed."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import oss2
import pytest

from shared.knowledge import search
from shared.store.disk import DiskStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
SNIPPET = re.search(r"With oss2, against a running.*?```python\n(.*?)```", README, re.S).group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("oss")
    proc = subprocess.Popen([sys.executable, "-m", "infra.local", "serve", "--port", str(_free_port()),
                             "--data", str(home / "data"), "--llm", "fake"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "TROUPE_LLM": "fake"})
    keyfile = home / "data" / "runtime" / "oss-access-key.json"
    deadline = time.time() + 120
    while not keyfile.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert keyfile.exists(), proc.stdout.read() if proc.poll() is not None else "serve did not start"
    yield home, json.loads(keyfile.read_text())
    proc.terminate()
    out = proc.communicate(timeout=60)[0]
    assert "OSS endpoint: http://127.0.0.1:" in out  # serve printed the endpoint, the bucket, the key id


def _python(code: str, cwd) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _kettle(store) -> list[dict]:
    return [p for p in search(store, "lumen", "descale the kettle every month") if p["doc"] == "kettle.md"]


def test_the_readme_pipeline_runs_against_serve_with_oss2(served):
    home, cfg = served
    lines = SNIPPET.strip().splitlines()
    setup, delete = lines[:3], lines[-1]
    assert delete.startswith("bucket.delete_object(")
    # WHEN the README's steps run as written, up to the knowledge document
    out = _python("\n".join(lines[:-1]), home)
    # THEN the request file started a debate whose result came back through oss2
    status, roles = out.strip().split(" ", 1)
    assert status == "completed" and eval(roles)[:3] == ["user", "Proponent", "Opponent"]  # noqa: S307
    # and the document put through the endpoint fired the indexer, as a function's put would
    store = DiskStore(str(home / "data"))
    deadline = time.time() + 60
    while not _kettle(store) and time.time() < deadline:
        time.sleep(0.3)
    assert _kettle(store), "the document was not indexed"
    # WHEN it is deleted through the endpoint, its passages go (ObjectRemoved)
    _python("\n".join(setup + [delete]), home)
    deadline = time.time() + 60
    while _kettle(store) and time.time() < deadline:
        time.sleep(0.3)
    assert not _kettle(store)


def test_a_wrong_secret_or_an_unsupported_call_gets_an_oss_error_and_changes_nothing(served):
    home, cfg = served
    bad = oss2.Bucket(oss2.Auth(cfg["access_key_id"], "not-the-secret"), cfg["endpoint"], cfg["bucket"])
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        bad.put_object("requests/evil.json", b'{"scenario": "debate", "input": "x"}')
    good = oss2.Bucket(oss2.Auth(cfg["access_key_id"], cfg["access_key_secret"]), cfg["endpoint"], cfg["bucket"])
    assert not good.object_exists("requests/evil.json")
    with pytest.raises(oss2.exceptions.ServerError) as e:
        good.put_object_acl("results/none.json", oss2.OBJECT_ACL_PRIVATE)
    assert (e.value.status, e.value.code) == (501, "NotImplemented")
    # a malformed request file gets the same error result as in the cloud
    good.put_object("requests/broken.json", b"{not json")
    deadline = time.time() + 60
    while not good.object_exists("results/broken.json") and time.time() < deadline:
        time.sleep(0.3)
    result = json.loads(good.get_object("results/broken.json").read())
    assert result["error"]["error"] == "BadRequest"
