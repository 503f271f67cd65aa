"""Generated code, run confined: what MetaGPT's RunCode runs in the qa_engineer function.

RunCode runs `python <test file>` in the project folder. Here that command runs in a fresh
interpreter that first confines itself (shared/sop/sandbox_boot.py): it may read and write only
the conversation's scratch folder, read only the interpreter's own prefix and the system
libraries, open no connection and start no process; its environment holds no credentials
(SandboxContext.new_environ); it has a CPU, memory and file-size limit and a wall-clock timeout,
after which its whole process group is killed. The function's own code (/code, the layer under
/opt, or this checkout on the local runtime) and the parent's /proc entries are out of its reach.

The interpreter is the base one (not a virtualenv's), so the project's own dependencies are not
on its path either. Nothing is pip-installed for generated code: RunCode's dependency install is
switched off (there is no package index on the function, and a requirements line may name a
local path, which pip would build outside the sandbox).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import json
import logging
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from shared.safe_paths import UnsafePath, inside

log = logging.getLogger("troupe.sandbox")

BOOT = Path(__file__).with_name("sandbox_boot.py")
TIMEOUT_S = 10.0
LIMITS = {"cpu_s": 10, "memory_bytes": 1024 * 1024 * 1024, "file_bytes": 2 * 1024 * 1024, "files": 256}
#: TROUPE_SANDBOX: "landlock" (the default) runs generated code only where the kernel confines
#: it; "hook" also runs it where the audit hook alone stands in the way, which is no boundary
#: against code written to escape it
POLICIES = ("landlock", "hook")
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/etc/ld.so.cache")
LAYERS = ("landlock", "audit_hook")


@functools.lru_cache(maxsize=1)
def landlock_abi() -> int:
    """The Landlock ABI this kernel offers (0: none): what the first layer can do here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return max(int(libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))), 0)
    except (OSError, AttributeError):
        return 0


def interpreter() -> str:
    """The base interpreter (a virtualenv's python would put the function's packages in reach)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def read_roots() -> list[str]:
    prefix = os.path.realpath(sys.base_prefix)
    return [prefix, os.path.dirname(interpreter()), *SYSTEM_READ]


def policy() -> str:
    value = os.environ.get("TROUPE_SANDBOX", "landlock").strip().lower() or "landlock"
    if value not in POLICIES:
        raise UnsafePath("TROUPE_SANDBOX", value, f"expected one of {', '.join(POLICIES)}")
    return value


def command_for(workspace: Path, cwd: Path, command: list, layers: tuple = LAYERS,
                path: list[str] = (), require_landlock: bool = False) -> list[str]:
    """`python <script>` from a RunCode context, as the confined command. Anything else is refused."""
    if not (isinstance(command, list) and len(command) == 2 and command[0] in ("python", "python3")):
        raise UnsafePath("command", " ".join(map(str, command)) if isinstance(command, list) else command,
                         "generated code is run only as `python <file in the project>`")
    script = inside(workspace, cwd / command[1] if not os.path.isabs(command[1]) else command[1], "test file")
    config = {"workspace": str(workspace), "read": read_roots(), "limits": LIMITS, "layers": list(layers),
              "path": list(path), "require_landlock": require_landlock}
    return [interpreter(), "-I", "-B", "-c", BOOT.read_text(), json.dumps(config), str(script)]


def sweep(workspace: Path) -> list[str]:
    """Remove what generated code may leave that is neither a regular file nor a folder: symlinks
    (which the function's own later writes, MetaGPT's .dependencies.json say, would follow out of
    the workspace), FIFOs (a read of one blocks), sockets, devices. Returns their relative paths."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(workspace):  # never follows a symlinked folder
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            mode = os.lstat(full).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                os.unlink(full)  # a link itself, never its target
                removed.append(os.path.relpath(full, workspace))
        dirnames[:] = [d for d in dirnames if os.path.isdir(os.path.join(dirpath, d))
                       and not os.path.islink(os.path.join(dirpath, d))]
    return sorted(removed)


def run(workspace: Path, working_directory, python_paths, command, env: dict,
        timeout: float = TIMEOUT_S, layers: tuple = LAYERS) -> tuple[str, str]:
    """Run `command` confined to `workspace`; (stdout, stderr) as RunCode returns them."""
    workspace = Path(os.path.realpath(workspace))
    cwd = inside(workspace, working_directory, "working directory")
    paths = [str(cwd), *(str(inside(workspace, p, "python path")) for p in python_paths)]
    require = "landlock" in layers and policy() == "landlock"
    if require and not landlock_abi():
        log.warning("generated code not run: this kernel has no Landlock")
        return "", ("troupe: the generated code was not run: this kernel has no Landlock (Linux 5.13+) to confine "
                    "it, and TROUPE_SANDBOX=landlock (the default) runs it only where the kernel does\n")
    env = {k: v for k, v in env.items() if not k.startswith("PYTHON") or k == "PYTHONIOENCODING"}
    env["TMPDIR"] = str(workspace / ".home")
    (workspace / ".home").mkdir(exist_ok=True)
    log.info("running %s confined: %s", command[-1] if command else "", ", ".join(
        f"landlock ABI {landlock_abi()}" if layer == "landlock" else "audit hook" for layer in layers
        if layer != "landlock" or landlock_abi()) or "nothing")
    argv = command_for(workspace, cwd, command, layers, paths, require)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # something outside the group still holds the pipes
            proc.kill()
            out, err = b"", b""
        err += f"\n(troupe: the run was stopped after {timeout:g} s)".encode()
    removed = sweep(workspace)
    if removed:
        log.warning("removed what generated code left that is no regular file: %s", ", ".join(removed[:20]))
        err += f"\n(troupe: removed {len(removed)} link(s) or special file(s) the run left: {', '.join(removed[:5])})".encode()
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


async def run_script(self, working_directory, additional_python_paths=[], command=[]) -> tuple[str, str]:  # noqa: B006
    """RunCode.run_script, confined: the scratch folder that holds the project is the sandbox."""
    repo = self.context.git_repo
    if repo is None or repo.workdir is None:
        raise UnsafePath("working directory", str(working_directory), "there is no project workspace to run it in")
    workspace = Path(repo.workdir).parent
    return await asyncio.to_thread(run, workspace, working_directory, additional_python_paths, command,
                                   self.context.new_environ())


async def no_run_text(cls, code) -> tuple[str, str]:
    """RunCode.run_text execs code in the function's own process: never, for generated code."""
    raise UnsafePath("code", str(code)[:80], "generated code runs only as a file, in the sandbox")


def no_install(working_directory, env) -> None:
    """RunCode._install_dependencies: nothing is installed for generated code."""
    return None
