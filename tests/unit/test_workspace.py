"""The SOP's project workspace: a git-free repository for MetaGPT, saved to and restored from
the store per invocation; and the sandboxed environment generated code runs in."""

import asyncio
import json
import os

import pytest

import shared.mg  # noqa: F401
from metagpt.utils.project_repo import ProjectRepo

from shared.conversation import ConversationStore
from shared.errors import RejectedEvent
from shared.ids import new_conversation_id
from shared.sop import confine
from shared.sop.runner import SandboxContext
from shared.sop.workspace import TreeRepository, Workspace, WorkspaceTooLarge
from shared.store.disk import DiskStore


@pytest.fixture()
def convs(tmp_path):
    return ConversationStore(DiskStore(str(tmp_path / "data")))


def test_tree_repository_reports_every_file_as_changed_like_an_uncommitted_git_repo(tmp_path):
    repo = TreeRepository(local_path=tmp_path / "proj", auto_init=True)
    project = ProjectRepo(repo)
    asyncio.run(project.docs.prd.save(filename="a.json", content="{}"))
    (repo.workdir / "pkg" / "__pycache__").mkdir(parents=True)
    (repo.workdir / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"x")
    (repo.workdir / "pkg" / "m.py").write_text("x = 1\n")
    assert set(repo.changed_files) == {"docs/prd/a.json", "pkg/m.py"}
    assert set(project.docs.prd.changed_files) == {"a.json"}
    repo.rename_root("ledger")
    assert repo.workdir.name == "ledger" and (repo.workdir / "pkg" / "m.py").exists()
    assert not (tmp_path / "proj").exists()


def test_save_then_restore_gives_the_same_tree_and_a_replay_writes_nothing_new(convs, tmp_path):
    cid = new_conversation_id()
    ws = Workspace(convs, cid, str(tmp_path / "one"))
    root = ws.dir / "ledger"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "prd.json").write_text('{"a": 1}')
    (root / "main.py").write_text("print('hi')\n")
    key, changed = ws.save(root, 1, "a" * 16)
    assert sorted(changed) == ["docs/prd.json", "main.py"]
    objects = sorted(i.key for i in convs.store.iter(f"conversations/{cid}/"))
    assert ws.save(root, 1, "a" * 16) == (key, changed)  # the same turn replayed
    assert sorted(i.key for i in convs.store.iter(f"conversations/{cid}/")) == objects
    # the next invocation starts from that tree and stores only what it changed
    nxt = Workspace(convs, cid, str(tmp_path / "two"))
    root2 = nxt.restore(key)
    assert root2.name == "ledger" and (root2 / "main.py").read_text() == "print('hi')\n"
    (root2 / "main.py").write_text("print('bye')\n")
    key2, changed2 = nxt.save(root2, 2, "b" * 16)
    assert changed2 == ["main.py"]
    blobs = [i for i in convs.store.iter(f"conversations/{cid}/blobs/")]
    assert len(blobs) == 3
    # a retry of turn 2 restores the tree turn 1 left, whatever turn 2 saved
    again = Workspace(convs, cid, str(tmp_path / "three")).restore(key)
    assert (again / "main.py").read_text() == "print('hi')\n"
    assert json.loads(convs.store.get(key2))["files"]["docs/prd.json"] == json.loads(convs.store.get(key))["files"]["docs/prd.json"]


def test_a_manifest_outside_the_conversation_or_with_escaping_paths_is_refused(convs, tmp_path):
    cid, other = new_conversation_id(), new_conversation_id()
    ws = Workspace(convs, cid, str(tmp_path / "w"))
    with pytest.raises(RejectedEvent, match="outside its conversation"):
        ws.restore(f"conversations/{other}/workspace/000001-{'a' * 16}.json")
    bad = f"conversations/{cid}/workspace/000001-{'a' * 16}.json"
    convs.store.put(bad, json.dumps({"root": "p", "files": {"../../etc/x": {"sha256": "0" * 64, "size": 1}}}).encode())
    with pytest.raises(RejectedEvent, match="corrupt"):
        ws.restore(bad)
    assert not (tmp_path / "etc").exists()


def test_a_workspace_over_its_limits_is_refused_by_name(convs, tmp_path, monkeypatch):
    import shared.sop.workspace as w

    monkeypatch.setattr(w, "MAX_FILE_BYTES", 10)
    ws = Workspace(convs, new_conversation_id(), str(tmp_path / "w"))
    (ws.dir / "p").mkdir(parents=True)
    (ws.dir / "p" / "big.py").write_text("x = 1234567890\n")
    with pytest.raises(WorkspaceTooLarge, match="big.py"):
        ws.save(ws.dir / "p", 1, "c" * 16)


def test_generated_code_runs_without_credentials(tmp_path, monkeypatch):
    from metagpt.actions.run_code import RunCode
    from metagpt.schema import RunCodeContext

    for name in ("DASHSCOPE_API_KEY", "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_SECURITY_TOKEN",
                 "TROUPE_API_KEY", "TROUPE_LLM_API_KEY", "OSS_ACCESS_KEY_SECRET"):
        monkeypatch.setenv(name, "planted-secret-" + name)
    confine.install()
    ctx = shared.mg.make_context(context_class=SandboxContext)
    ctx.git_repo = TreeRepository(local_path=tmp_path / "proj")
    (tmp_path / "proj" / "dump.py").write_text("import os, json\nprint(json.dumps(dict(os.environ)))\n")
    run = RunCode(i_context=RunCodeContext(command=["python", "dump.py"], working_directory=str(tmp_path / "proj"),
                                           mode="script"), context=ctx)
    out, err = asyncio.run(run.run_script(working_directory=str(tmp_path / "proj"), command=["python", "dump.py"]))
    seen = json.loads(out)
    assert "planted-secret" not in out and "planted-secret" not in err
    assert seen["PIP_NO_INDEX"] == "1" and seen["HOME"] == str(tmp_path / ".home")
    assert not any(k.startswith(("ALIBABA", "DASHSCOPE", "TROUPE", "OSS")) for k in seen)
    assert os.environ["DASHSCOPE_API_KEY"].startswith("planted")  # the function's own environment is untouched


def test_a_warm_instance_restores_from_its_blob_cache_and_a_bad_copy_is_not_trusted(convs, tmp_path, monkeypatch):
    import shared.sop.workspace as w

    monkeypatch.setattr(w, "BLOB_CACHE", tmp_path / "cache")
    cid = new_conversation_id()
    ws = Workspace(convs, cid, str(tmp_path / "one"))
    root = ws.dir / "p"
    root.mkdir(parents=True)
    (root / "a.py").write_text("a = 1\n")
    (root / "b.py").write_text("b = 2\n")
    key, _ = ws.save(root, 1, "d" * 16)
    reads = []
    real_get = convs.store.get
    monkeypatch.setattr(convs.store, "get", lambda k: reads.append(k) or real_get(k))
    again = Workspace(convs, cid, str(tmp_path / "two")).restore(key)
    assert (again / "a.py").read_text() == "a = 1\n"
    assert [k for k in reads if "/blobs/" in k] == []  # both blobs came from the cache
    # a cached copy that does not hash to its name is fetched again
    sha = json.loads(real_get(key))["files"]["a.py"]["sha256"]
    (tmp_path / "cache" / sha).write_bytes(b"tampered")
    third = Workspace(convs, cid, str(tmp_path / "three")).restore(key)
    assert (third / "a.py").read_text() == "a = 1\n"
    assert [k for k in reads if "/blobs/" in k] == [f"conversations/{cid}/blobs/{sha}"]
