"""A conversation's project workspace, kept in OSS and restored into /tmp for each invocation.

MetaGPT's software-company roles read and write a project repository (docs/, resources/,
the source package, tests/). In one process that directory lives for the whole run; on FC any
invocation may land on a fresh instance and only /tmp is writable, so:

  restore   the files of the workspace as the previous turn left it are written under a
            directory private to this invocation;
  save      after the role ran, every file is hashed; new contents go to
            `conversations/<cid>/blobs/<sha256>` (create-only, so a replay writes nothing) and
            the whole tree, path → hash, to a manifest `workspace/<turn>-<reply id>.json`
            (create-only, keyed like the turn).

A delivery names the manifest its receiver starts from, so a retried invocation restores
exactly what the first attempt restored, whatever later turns saved: the workspace is as
exactly-once as the turns. When the conversation ends, the last tree is exported as plain
objects under `artifacts/<path>`.

Git: MetaGPT asks its repository which files changed since the last commit; within one run
it never commits, so the answer is "every file". `TreeRepository` gives that answer from the
directory itself, so no `git` executable is needed (FC's runtime may not have one).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from gitignore_parser import parse_gitignore
from metagpt.utils.git_repository import ChangeType, GitRepository

from shared import keys
from shared.artifacts import blob_key, check_path, manifest_key
from shared.conversation import ConversationStore
from shared.errors import BadRequest, NoSuchKey, ObjectExists, RejectedEvent
from shared.safe_paths import check_relative, inside, project_slug

IGNORED = ["__pycache__", "*.pyc", ".vs"]
DEPENDENCIES = ".dependencies.json"
"""MetaGPT's record of which document each file was made from, one JSON object for the project:
the one file that branches working on different files all change, merged key by key"""
MAX_FILES = 500
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_TOTAL_BYTES = 20 * 1024 * 1024


class WorkspaceTooLarge(RejectedEvent):
    """The role produced more than a workspace may hold: named, never silently truncated."""

    code = "WorkspaceTooLarge"


class TreeRepository(GitRepository):
    """MetaGPT's GitRepository interface over a plain directory (no git executable).

    Every file not ignored counts as changed (untracked), as in a MetaGPT run before its final
    archive commit; commits are no-ops, because the history lives in the OSS manifests.
    """

    def __init__(self, local_path=None, auto_init=True):
        self._workdir: Path | None = None
        super().__init__(local_path=local_path, auto_init=auto_init)

    def open(self, local_path: Path, auto_init=False):
        path = Path(local_path)
        if not path.is_dir():
            if not auto_init:
                return
            path.mkdir(parents=True, exist_ok=True)
        ignore = path / ".gitignore"
        if not ignore.exists():
            ignore.write_text("\n".join(IGNORED))
        self._workdir = path
        self._repository = None
        self._gitignore_rules = parse_gitignore(full_path=str(ignore))

    _init = open

    @property
    def is_valid(self):
        return self._workdir is not None

    @property
    def workdir(self) -> Path | None:
        return self._workdir

    @property
    def status(self) -> str:
        return ""

    @property
    def changed_files(self) -> dict[str, ChangeType]:
        if self._workdir is None:
            return {}
        only = _ONLY.get()
        return {path: ChangeType.UNTRACTED for path in tree_files(self._workdir, self._gitignore_rules)
                if only is None or path in only}

    def add_change(self, files: dict):
        return None

    def commit(self, comments):
        return None

    def delete_repository(self):
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def rename_root(self, new_dir_name):
        """MetaGPT names the project folder after the PRD's "Project Name", a model's words: the
        name is reduced to a slug (shared/safe_paths.project_slug), so the folder stays beside
        the old one in the conversation's scratch folder, and only a folder proven to lie there
        is replaced."""
        old = self._workdir
        if old is None:
            return
        name = project_slug(new_dir_name)
        if old.name == name:
            return
        new = inside(old.parent, name, "project name")
        if new.exists():
            shutil.rmtree(new)
        shutil.move(str(old), str(new))
        self._dependency = None  # it points into the old path
        self.open(new)


_ONLY: contextvars.ContextVar[frozenset | None] = contextvars.ContextVar("troupe_only_changed", default=None)


@contextlib.contextmanager
def only_changed(paths):
    """Within the block, a TreeRepository counts only `paths` (relative to the project folder) as
    changed: a branch that works on one file sees that file as MetaGPT's changed set."""
    token = _ONLY.set(frozenset(str(p) for p in paths))
    try:
        yield
    finally:
        _ONLY.reset(token)


def use_tree_repositories() -> None:
    """Make MetaGPT's PrepareDocuments (the one place a run creates its repository) build a
    TreeRepository inside the workspace. Idempotent."""
    from metagpt.actions import prepare_documents

    prepare_documents.GitRepository = TreeRepository
    action = prepare_documents.PrepareDocuments
    if not getattr(action._init_repo, "troupe_confined", False):
        action._init_repo = _confined_init_repo(action._init_repo)


def _confined_init_repo(init_repo):
    """PrepareDocuments._init_repo removes and recreates `<workspace>/<project name>`: the name is
    a slug and any preset project path must lie inside the workspace."""

    def _init_repo(self):
        config = self.config
        if config.project_name:
            config.project_name = project_slug(config.project_name)
        if config.project_path:
            config.project_path = inside(config.workspace.path, config.project_path, "project path")
        return init_repo(self)

    _init_repo.troupe_confined = True
    return _init_repo


def tree_files(root: Path, ignored=None) -> list[str]:
    """Relative POSIX paths of the regular files under `root`, sorted; .gitignore itself and
    ignored files are left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if rel == ".gitignore" or not stat.S_ISREG(os.lstat(full).st_mode):
                continue  # symlinks, FIFOs, sockets: never part of a project tree
            if ignored is not None and ignored(full):
                continue
            out.append(rel)
    return sorted(out)


#: blobs this instance has read or written, by hash, so a warm instance restores a workspace
#: without reading what it already holds; cleared when it outgrows BLOB_CACHE_BYTES (/tmp is small)
BLOB_CACHE = Path(tempfile.gettempdir()) / "troupe-blobs"
BLOB_CACHE_BYTES = 64 * 1024 * 1024
_cached_bytes = 0


def _cache_blob(sha: str, data: bytes) -> None:
    global _cached_bytes
    if _cached_bytes + len(data) > BLOB_CACHE_BYTES:
        shutil.rmtree(BLOB_CACHE, ignore_errors=True)
        _cached_bytes = 0
    try:
        BLOB_CACHE.mkdir(parents=True, exist_ok=True)
        tmp = BLOB_CACHE / f".{sha}.{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, BLOB_CACHE / sha)
        _cached_bytes += len(data)
    except OSError:
        pass  # a cache only


def read_blob(convs: ConversationStore, cid: str, sha: str) -> bytes:
    """A blob's bytes: from this instance's cache when a warm instance has seen it (contents are
    addressed by hash, so a cached copy that hashes right is never stale), else from the store."""
    try:
        data = (BLOB_CACHE / sha).read_bytes()
        if hashlib.sha256(data).hexdigest() == sha:
            return data
    except OSError:
        pass
    data = convs.store.get(blob_key(convs, cid, sha))
    _cache_blob(sha, data)
    return data


class Workspace:
    """Restore and save one conversation's project tree for one invocation."""

    def __init__(self, convs: ConversationStore, cid: str, scratch_root: str | None = None):
        self.convs = convs
        self.cid = cid
        self.dir = Path(scratch_root) if scratch_root else Path(tempfile.mkdtemp(prefix="troupe-ws-"))
        """The scratch directory the project folder lives in."""
        self.base_files: dict[str, dict] = {}

    # -- restore ---------------------------------------------------------------------------
    def restore(self, key: str | None) -> Path | None:
        """Write the tree `manifest_key` names under this invocation's directory; its project
        folder, or None when there is no workspace yet (the first turn)."""
        if not key:
            return None
        if not isinstance(key, str) or not key.startswith(keys.workspaces(self.cid)):
            raise RejectedEvent("delivery names a workspace outside its conversation", key=str(key)[:200])
        try:
            manifest = json.loads(self.convs.store.get(key))
        except NoSuchKey:
            raise RejectedEvent("delivery names a workspace that does not exist", key=key[:200]) from None
        try:
            root = self.dir / check_path(manifest["root"])
            root.mkdir(parents=True)
            for path, info in manifest["files"].items():
                target = root / check_path(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(read_blob(self.convs, self.cid, info["sha256"]))
        except BadRequest as e:
            raise RejectedEvent(f"the workspace manifest is corrupt: {e.message}", key=key[:200]) from None
        self.base_files = manifest["files"]
        return root

    # -- save ------------------------------------------------------------------------------
    def save(self, root: Path, turn: int, msgid: str) -> tuple[str, list[str]]:
        """Store the tree under `root` as of now: (manifest key, paths added or changed)."""
        files: dict[str, dict] = {}
        changed: list[str] = []
        total = 0
        paths = tree_files(root, parse_gitignore(str(root / ".gitignore")) if (root / ".gitignore").exists() else None)
        if len(paths) > MAX_FILES:
            raise WorkspaceTooLarge(f"the workspace has {len(paths)} files, more than {MAX_FILES}")
        check_relative(root.name, "project name")
        for path in paths:  # every name first: a refused tree stores nothing
            check_relative(path, "workspace file")
        for path in paths:
            data = (root / path).read_bytes()
            if len(data) > MAX_FILE_BYTES:
                raise WorkspaceTooLarge(f"{path} is {len(data)} bytes, more than {MAX_FILE_BYTES}")
            total += len(data)
            if total > MAX_TOTAL_BYTES:
                raise WorkspaceTooLarge(f"the workspace holds more than {MAX_TOTAL_BYTES} bytes")
            sha = hashlib.sha256(data).hexdigest()
            files[path] = {"sha256": sha, "size": len(data)}
            if self.base_files.get(path, {}).get("sha256") != sha:
                changed.append(path)
                self._put_blob(sha, data)
        key = manifest_key(self.convs, self.cid, turn, msgid)
        _put_manifest(self.convs, key, root.name, files, changed)
        return key, changed

    def _put_blob(self, sha: str, data: bytes) -> None:
        _put_blob(self.convs, self.cid, sha, data)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _put_blob(convs: ConversationStore, cid: str, sha: str, data: bytes) -> None:
    try:
        convs.store.put(blob_key(convs, cid, sha), data, create_only=True)
    except ObjectExists:
        pass
    _cache_blob(sha, data)


def _put_manifest(convs: ConversationStore, key: str, root: str, files: dict, changed: list[str]) -> None:
    body = json.dumps({"root": root, "files": files, "changed": changed}, ensure_ascii=False,
                      sort_keys=True).encode("utf-8")
    try:
        convs.store.put(key, body, create_only=True)
    except ObjectExists:
        pass  # a replay stored the same tree


def merge(convs: ConversationStore, cid: str, key: str, base: str | None, branches: list[str | None]) -> str:
    """Store under `key` the tree of `base` with what each branch's tree (in this order) changed
    in it, and return `key`. Deterministic, so every run of a join stores the same tree:

      a file one branch changed or added: that branch's version;
      a file several branches changed: the first branch's (in the order given), except
      DEPENDENCIES, whose objects are merged key by key (first branch first) while each is a
      JSON object (generated code may have written anything there: then, as any file);
      a file a branch deleted: deleted.
    A merged tree over the workspace's limits is WorkspaceTooLarge, named."""
    def load(k):
        if not isinstance(k, str) or not k.startswith(keys.workspaces(cid)):
            raise RejectedEvent("a join names a workspace outside its conversation", key=str(k)[:200])
        return json.loads(convs.store.get(k))

    def as_object(info) -> dict | None:
        try:
            found = json.loads(read_blob(convs, cid, info["sha256"]))
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    start = load(base) if base else {"root": None, "files": {}}
    before: dict = start["files"]
    files, changed, taken, deps = dict(before), set(), set(), []
    trees = [load(k) for k in branches if k]
    for tree in trees:
        for path, info in tree["files"].items():
            if before.get(path) == info:
                continue
            if path == DEPENDENCIES and as_object(info) is not None:
                deps.append(info)
            elif path not in taken:
                taken.add(path)
                files[path] = info
                changed.add(path)
        for path in before:
            if path not in tree["files"]:
                files.pop(path, None)
    if deps and DEPENDENCIES not in taken:
        merged = (as_object(before[DEPENDENCIES]) if DEPENDENCIES in before else None) or {}
        base_deps = dict(merged)
        for info in deps:
            for name, value in as_object(info).items():
                if base_deps.get(name) != value and (name not in merged or merged[name] == base_deps.get(name)):
                    merged[name] = value
        data = json.dumps(merged).encode("utf-8")
        sha = hashlib.sha256(data).hexdigest()
        _put_blob(convs, cid, sha, data)
        files[DEPENDENCIES] = {"sha256": sha, "size": len(data)}
        changed.add(DEPENDENCIES)
    root = next((t["root"] for t in trees), start["root"]) or project_slug(cid)
    if len(files) > MAX_FILES:
        raise WorkspaceTooLarge(f"the merged workspace has {len(files)} files, more than {MAX_FILES}")
    if sum(int(i.get("size", 0)) for i in files.values()) > MAX_TOTAL_BYTES:
        raise WorkspaceTooLarge(f"the merged workspace holds more than {MAX_TOTAL_BYTES} bytes")
    _put_manifest(convs, key, root, dict(sorted(files.items())), sorted(changed))
    return key
