"""MetaGPT's file-system seams, held inside the conversation's workspace.

MetaGPT's software-company roles turn model replies into paths: the PRD's "Project Name" renames
the project folder, the design's file list and the task list become source files, and test
files are named after them. Every read, write and delete of a project file goes through
`FileRepository` (save, save_doc, save_pdf, get, delete, get_dependency), the folder rename
through `GitRepository.rename_root` (troupe's TreeRepository), and generated code runs through
`RunCode.run_script`. `install()` puts a check at each of these seams:

  FileRepository   the name is a safe relative path (shared/safe_paths.check_relative) that
                   resolves inside the project folder without passing a symlink; otherwise
                   UnsafePath, and the conversation ends `failed` naming the role, the step
                   and the value
  rename_root      the name is reduced to a slug; see TreeRepository.rename_root
  RunCode          confined (shared/sop/sandbox.py); nothing is pip-installed
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from metagpt.actions.run_code import RunCode
from metagpt.utils.file_repository import FileRepository

from shared.safe_paths import UnsafePath, check_relative, inside
from shared.sop import sandbox

_installed = False


def checked(repo: FileRepository, filename) -> Path:
    """The file `filename` names in `repo`, proven to lie inside the project folder."""
    name = str(filename)
    try:
        if os.path.isabs(name):
            return inside(repo._git_repo.workdir, name, "file name")
        check_relative(name, "file name")  # as written: joining it to a Path would tidy `a//b` or `./a` away
        return inside(repo._git_repo.workdir, Path(repo._relative_path) / name, "file name")
    except UnsafePath as e:
        raise UnsafePath("file name", name, e.why) from None


def _guard(method):
    @functools.wraps(method)
    async def wrapper(self, filename, *args, **kwargs):
        checked(self, filename)
        return await method(self, filename, *args, **kwargs)

    return wrapper


def install() -> None:
    """Idempotent."""
    global _installed
    if _installed:
        return
    for name in ("save", "get", "delete", "get_dependency", "get_changed_dependency"):
        setattr(FileRepository, name, _guard(getattr(FileRepository, name)))
    RunCode.run_script = sandbox.run_script
    RunCode.run_text = classmethod(sandbox.no_run_text)
    RunCode._install_dependencies = staticmethod(sandbox.no_install)
    _installed = True
