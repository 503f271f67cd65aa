"""Names and paths from a model's reply: the rule (shared/safe_paths.py), MetaGPT's file seams
held to it (shared/sop/confine.py, TreeRepository.rename_root), and generated code confined by
two independent layers (shared/sop/sandbox.py: Landlock and an audit hook)."""

import asyncio
import os
import shutil
from pathlib import Path

import pytest

import shared.mg  # noqa: F401
from metagpt.utils.project_repo import ProjectRepo

from shared.artifacts import check_path
from shared.errors import BadRequest
from shared.safe_paths import UnsafePath, check_relative, inside, project_slug
from shared.sop import confine, sandbox
from shared.sop.workspace import TreeRepository, use_tree_repositories

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["main.py", "pkg/mod.py", "docs/prd/20241202.json", "记账/账本.py", "a-b_c.d"])
def test_ordinary_relative_paths_pass(path):
    assert check_relative(path) == path


@pytest.mark.parametrize("path, why", [
    ("/etc/passwd", "absolute"), ("C:/x.py", "absolute"), ("c:x.py", "absolute"), ("//host/share/x", "absolute"),
    ("\\\\host\\share", "backslash"), ("a\\..\\b", "backslash"), ("../x.py", "'..'"), ("a/../../x", "'..'"),
    ("a//b", "not normalised"), ("./a", "not normalised"), ("a/", "not normalised"), ("", "empty"),
    ("main\x00.py", "control"), ("main.py\n../x", "control"), ("a\u202egp.py", "control"),
    ("．．/．．/etc/passwd", "look-alike"), ("a／..／..／b", "look-alike"),
    ("x" * 401, "longer than 400"), ("/".join(["d"] * 13), "deeper"), ("a" * 121 + ".py", "part is longer"),
    (" main.py", "space"), (7, "not a string"), (None, "not a string"),
])
def test_unsafe_paths_are_refused_with_the_reason_and_a_truncated_value(path, why):
    with pytest.raises(UnsafePath) as e:
        check_relative(path, "file name")
    assert why in e.value.why
    assert e.value.message.startswith("refused file name ")
    assert len(e.value.message) < 250


@pytest.mark.parametrize("name, slug", [
    ("bookkeeping_app", "bookkeeping_app"), ("Todo App!", "todo_app"), ("/etc", "etc"), ("../../..", "project"),
    ("．．／．．／root", "root"), ("2048 game", "p_2048_game"), ("记账APP", "app"), ("", "project"), (None, "project"),
    ("x\x00y\nz", "x_y_z"), ("a" * 500, "a" * 64),
])
def test_a_project_name_is_repaired_into_a_slug(name, slug):
    assert project_slug(name) == slug


def test_inside_refuses_a_path_through_a_symlink_and_one_outside(tmp_path):
    root, outside = tmp_path / "ws", tmp_path / "outside"
    (root / "docs").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, root / "docs" / "link")
    assert inside(root, "docs/new.md") == root.resolve() / "docs" / "new.md"
    assert inside(root, root / "docs" / "new.md") == root.resolve() / "docs" / "new.md"
    with pytest.raises(UnsafePath, match="symlink"):
        inside(root, "docs/link/x.md")
    with pytest.raises(UnsafePath, match="outside the workspace"):
        inside(root, outside / "x.md")


def test_the_artifacts_api_refuses_the_same_paths_with_a_400():
    assert check_path("src/main.py") == "src/main.py"
    with pytest.raises(BadRequest, match="climbs out") as e:
        check_path("../other/meta.json")
    assert e.value.status == 400 and e.value.details == {"field": "path"}


# -- MetaGPT's seams ----------------------------------------------------------------------------

@pytest.fixture()
def project(tmp_path):
    confine.install()
    ws = tmp_path / "ws"
    repo = TreeRepository(local_path=ws / "proj", auto_init=True)
    return ProjectRepo(repo)


@pytest.mark.parametrize("name", ["/tmp/planted.py", "../../planted.py", "a\x00.py", "．．/．．/planted.py"])
def test_file_repository_refuses_a_model_made_name_before_touching_the_disk(project, tmp_path, name):
    srcs = project.with_src_path(project.workdir / "proj").srcs
    for call in (lambda: srcs.save(filename=name, content="x"), lambda: srcs.get(name), lambda: srcs.delete(name)):
        with pytest.raises(UnsafePath, match="refused file name"):
            asyncio.run(call())
    assert not Path("/tmp/planted.py").exists() and not (tmp_path / "planted.py").exists()


def test_file_repository_does_not_write_through_a_symlink_an_earlier_step_planted(project, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(project.workdir / "docs", ignore_errors=True)
    os.symlink(outside, project.workdir / "docs")
    with pytest.raises(UnsafePath, match="symlink"):
        asyncio.run(project.docs.prd.save(filename="a.json", content="{}"))
    assert list(outside.iterdir()) == []
    asyncio.run(project.resources.save(filename="ok.md", content="fine"))  # elsewhere, writes go on
    assert (project.workdir / "resources" / "ok.md").read_text() == "fine"


def test_rename_root_takes_a_slug_and_replaces_only_a_folder_inside_the_workspace(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    ws = tmp_path / "ws"
    repo = TreeRepository(local_path=ws / "20241202000000", auto_init=True)
    (repo.workdir / "a.txt").write_text("a")
    for hostile in (str(victim), "../victim", "../../" + str(victim).lstrip("/")):
        repo.rename_root(hostile)
        assert repo.workdir == ws / "victim" or repo.workdir.parent == ws
    assert (victim / "keep.txt").read_text() == "keep"
    assert repo.workdir.parent == ws and (repo.workdir / "a.txt").read_text() == "a"
    # a symlink planted where the new folder would go is refused, not followed
    os.symlink(victim, ws / "ledger")
    with pytest.raises(UnsafePath, match="symlink"):
        repo.rename_root("ledger")
    assert (victim / "keep.txt").read_text() == "keep"


def test_prepare_documents_recreates_the_project_only_inside_the_workspace(tmp_path):
    from metagpt.actions.prepare_documents import PrepareDocuments

    use_tree_repositories()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    ctx = shared.mg.make_context(workspace=str(tmp_path / "ws"))
    ctx.config.project_name = str(victim)
    PrepareDocuments(context=ctx)._init_repo()
    assert ctx.git_repo.workdir.parent == tmp_path / "ws"
    assert ctx.git_repo.workdir.name == ctx.config.project_name == project_slug(str(victim))
    assert (victim / "keep.txt").read_text() == "keep"
    ctx2 = shared.mg.make_context(workspace=str(tmp_path / "ws"))
    ctx2.config.project_path = str(victim)
    with pytest.raises(UnsafePath, match="project path"):
        PrepareDocuments(context=ctx2)._init_repo()
    assert (victim / "keep.txt").read_text() == "keep"


# -- generated code ----------------------------------------------------------------------------

PROBE = """import os, socket, sys
def attempt(name, f):
    try:
        f()
        print(name, "allowed")
    except Exception as e:
        print(name, type(e).__name__)
attempt("own_code", lambda: open(sys.argv[1]).read())
attempt("parent_environ", lambda: open("/proc/%d/environ" % os.getppid(), "rb").read())
attempt("write_outside", lambda: open(sys.argv[2], "w").write("x"))
attempt("list_checkout", lambda: os.listdir(sys.argv[3]))
attempt("connect", lambda: socket.create_connection(("127.0.0.1", 9), 1))
attempt("write_inside", lambda: open("inside.txt", "w").write("x"))
print("environ", sorted(os.environ))
print("landlock", os.environ["SANDBOX_LANDLOCK_ABI"])
"""


def _probe(tmp_path, layers):
    ws = tmp_path / "ws"
    (ws / "proj").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    args = [str(ROOT / "shared" / "sop" / "sandbox.py"), str(outside), str(ROOT)]
    (ws / "proj" / "probe.py").write_text(f"import sys\nsys.argv[1:] = {args!r}\n" + PROBE)
    out, err = sandbox.run(ws, ws / "proj", [], ["python", "probe.py"], {"PATH": os.environ["PATH"]}, layers=layers)
    return dict(line.split(" ", 1) for line in out.splitlines()), err, outside


def test_the_audit_hook_alone_confines_generated_code(tmp_path):
    # GIVEN a kernel without Landlock: only the interpreter's audit hook stands in the way
    seen, err, outside = _probe(tmp_path, layers=("audit_hook",))
    assert seen["landlock"] == "0", (seen, err)
    for attempt in ("own_code", "parent_environ", "write_outside", "list_checkout", "connect"):
        assert seen[attempt] == "PermissionError", (attempt, seen)
    assert not outside.exists()
    assert seen["write_inside"] == "allowed"
    assert "TROUPE_LLM" not in seen["environ"] and "PATH" in seen["environ"]


@pytest.mark.skipif(sandbox.landlock_abi() < 1, reason="this kernel has no Landlock (Linux 5.13+): only the audit hook confines")
def test_the_kernel_layer_alone_confines_generated_code(tmp_path):
    # GIVEN the audit hook left out: only Landlock stands between the code and the machine
    seen, err, outside = _probe(tmp_path, layers=("landlock",))
    assert int(seen["landlock"]) >= 1, (seen, err)
    for attempt in ("own_code", "parent_environ", "write_outside", "list_checkout"):
        assert seen[attempt] == "PermissionError", (attempt, seen)
    if int(seen["landlock"]) >= 4:  # Landlock's TCP rules
        assert seen["connect"] == "PermissionError"
    assert not outside.exists()
    assert seen["write_inside"] == "allowed" and (tmp_path / "ws" / "proj" / "inside.txt").read_text() == "x"


def test_only_python_on_a_file_of_the_project_is_run(tmp_path):
    ws = tmp_path / "ws"
    (ws / "proj").mkdir(parents=True)
    for command in (["sh", "-c", "id"], ["python", "-c", "print(1)"], ["python", "../../x.py"], ["python"]):
        with pytest.raises(UnsafePath):
            sandbox.run(ws, ws / "proj", [], command, {})
    with pytest.raises(UnsafePath, match="working directory"):
        sandbox.run(ws, tmp_path, [], ["python", "x.py"], {})


def test_a_workspace_file_with_an_unsafe_name_is_refused_before_anything_is_stored(tmp_path):
    from shared.conversation import ConversationStore
    from shared.ids import new_conversation_id
    from shared.sop.workspace import Workspace
    from shared.store.disk import DiskStore

    convs = ConversationStore(DiskStore(str(tmp_path / "data")))
    cid = new_conversation_id()
    ws = Workspace(convs, cid, str(tmp_path / "w"))
    (ws.dir / "proj").mkdir(parents=True)
    (ws.dir / "proj" / "a_first.py").write_text("x = 1\n")
    (ws.dir / "proj" / "made\nby code.txt").write_text("junk")
    with pytest.raises(UnsafePath, match="refused workspace file 'made\\\\nby code.txt': it holds a control"):
        ws.save(ws.dir / "proj", 1, "d" * 16)
    assert list(convs.store.iter(f"conversations/{cid}/")) == []


def test_a_sitecustomize_or_a_shadowing_module_in_the_project_runs_only_confined(tmp_path):
    # GIVEN files a model may name, which Python would import at start-up from the program's path
    ws = tmp_path / "ws"
    (ws / "proj").mkdir(parents=True)
    outside = tmp_path / "escaped.txt"
    for name in ("sitecustomize.py", "usercustomize.py", "json.py", "ctypes.py", "runpy.py"):
        (ws / "proj" / name).write_text(f"open({str(outside)!r}, 'w').write({name!r})\n")
    (ws / "proj" / "probe.py").write_text("print('ran')\n")
    # WHEN the program runs, with either layer alone
    for layers in (("audit_hook",), ("landlock",)) if sandbox.landlock_abi() else (("audit_hook",),):
        out, err = sandbox.run(ws, ws / "proj", [], ["python", "probe.py"], {"PATH": os.environ["PATH"]},
                               layers=layers)
        # THEN it ran, and none of them ran before the process was confined
        assert out.strip() == "ran", err
        assert not outside.exists(), (layers, outside.read_text())


@pytest.mark.skipif(sandbox.landlock_abi() < 1, reason="this kernel has no Landlock")
def test_links_and_special_files_generated_code_leaves_are_swept_before_the_function_touches_the_tree(tmp_path):
    # GIVEN code that plants a symlink where MetaGPT keeps its dependency file, and a FIFO
    ws = tmp_path / "ws"
    (ws / "proj" / "tests").mkdir(parents=True)
    target = tmp_path / "victim.json"
    target.write_text('{"keep": true}')
    (ws / "proj" / "tests" / "plant.py").write_text(
        "import os\n"
        f"os.symlink({str(target)!r}, os.path.join({str(ws / 'proj')!r}, '.dependencies.json'))\n"
        f"os.mkfifo(os.path.join({str(ws / 'proj')!r}, 'pipe'))\n")
    # WHEN it runs with the kernel layer alone (the hook would refuse the symlink outright)
    out, err = sandbox.run(ws, ws / "proj", [], ["python", "tests/plant.py"], {"PATH": os.environ["PATH"]},
                           layers=("landlock",))
    # THEN both are gone before anything else reads or writes the tree, and the target is as it was
    assert "removed 2 link(s) or special file(s)" in err, err
    assert not os.path.lexists(ws / "proj" / ".dependencies.json") and not os.path.lexists(ws / "proj" / "pipe")
    assert target.read_text() == '{"keep": true}'


def test_without_landlock_generated_code_is_not_run_unless_the_deployment_says_so(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    (ws / "proj").mkdir(parents=True)
    (ws / "proj" / "probe.py").write_text("print('ran')\n")
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    out, err = sandbox.run(ws, ws / "proj", [], ["python", "probe.py"], {"PATH": os.environ["PATH"]})
    assert out == "" and "was not run: this kernel has no Landlock" in err
    monkeypatch.setenv("TROUPE_SANDBOX", "hook")  # the audit hook alone, by the deployment's choice
    out, err = sandbox.run(ws, ws / "proj", [], ["python", "probe.py"], {"PATH": os.environ["PATH"]})
    assert out.strip() == "ran", err
    monkeypatch.setenv("TROUPE_SANDBOX", "none")
    with pytest.raises(UnsafePath, match="TROUPE_SANDBOX"):
        sandbox.run(ws, ws / "proj", [], ["python", "probe.py"], {})


def test_metagpts_in_process_run_text_is_refused():
    from metagpt.actions.run_code import RunCode

    confine.install()
    with pytest.raises(UnsafePath, match="only as a file"):
        asyncio.run(RunCode.run_text("import os"))


def test_the_hook_keeps_its_own_arguments_and_code_but_lets_namedtuple_set_defaults(tmp_path):
    ws = tmp_path / "ws"
    (ws / "proj").mkdir(parents=True)
    (ws / "proj" / "probe.py").write_text(
        "import collections, sys\n"
        "P = collections.namedtuple('P', 'a b', defaults=(1,))\n"  # sets __new__.__defaults__: fine
        "print('namedtuple', P(0).b)\n"
        "frame = sys._getframe()\n"
        "while frame.f_back is not None:\n"
        "    frame = frame.f_back\n"
        "hook = frame.f_globals['_hook']\n"
        "for attempt in (lambda: setattr(hook, '__defaults__', ()), lambda: setattr(hook, '__code__', (lambda: 0).__code__)):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('swapped')\n"
        "    except PermissionError:\n"
        "        print('refused')\n")
    out, err = sandbox.run(ws, ws / "proj", [], ["python", "probe.py"], {"PATH": os.environ["PATH"]},
                           layers=("audit_hook",))
    assert out.split() == ["namedtuple", "1", "refused", "refused"], (out, err)
