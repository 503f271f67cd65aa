"""The first code a generated program's interpreter runs (passed with `python -c`): it confines
its own process, then runs the program. It imports nothing from troupe, which it cannot read.

    python -I -B -c <this file's text> <config JSON> <script> [args...]

config: {"workspace": dir, "read": [dirs], "path": [dirs for sys.path, inside the workspace],
         "limits": {"cpu_s", "memory_bytes", "file_bytes", "files"}, "require_landlock": bool,
         "layers": ["landlock", "audit_hook"] (tests leave one out to see the other alone)}

Isolated mode (-I): no PYTHON* variable, no user site, no script folder on the path, so nothing
the program's folder holds (a sitecustomize.py, a json.py) runs or shadows a module before the
process is confined; the program's folders join sys.path only afterwards.

1. Resource limits: CPU seconds, address space, the largest file, no core dumps.
2. Landlock, where the kernel has it (Linux 5.13+): from here on the process and whatever it
   starts may read and write only under `workspace`, read only under `read` (the interpreter's
   own prefix and the system libraries), and, with Landlock ABI 4+, open no TCP connection.
   /proc is out of reach: no peeking at the function's own environment through its parent.
3. An audit hook (unless left out): opening, listing, deleting or renaming anything outside those folders,
   starting a process, opening a socket, loading native code through ctypes and importing the
   modules that reach past the hook raise PermissionError. Python says of its audit hooks that
   they are no sandbox against code bent on escaping; here they are the second layer, and the
   only one where the kernel has no Landlock.
"""

import ctypes
import json
import os
import resource
import runpy
import sys

_config = json.loads(sys.argv[1])
_script = sys.argv[2]
sys.argv = sys.argv[2:]
_WS = os.path.realpath(_config["workspace"])
_READ = [os.path.realpath(p) for p in _config["read"]]
_limits = _config.get("limits") or {}

# -- 1. resource limits ------------------------------------------------------------------------
for _name, _key in (("RLIMIT_CPU", "cpu_s"), ("RLIMIT_AS", "memory_bytes"), ("RLIMIT_FSIZE", "file_bytes"),
                    ("RLIMIT_NOFILE", "files")):
    if _limits.get(_key):
        resource.setrlimit(getattr(resource, _name), (int(_limits[_key]), int(_limits[_key])))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

# -- 2. Landlock -------------------------------------------------------------------------------
_SYS_CREATE, _SYS_ADD, _SYS_RESTRICT = 444, 445, 446  # the same on x86_64 and aarch64
_READ_FS = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
_FILE_ONLY = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)  # rights a rule on a file may hold


def _landlock() -> int:
    """Restrict this process; the Landlock ABI used, 0 when the kernel has none."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return 0
    fs = (1 << 13) - 1  # ABI 1: execute .. make_sym
    fs |= (1 << 13) if abi >= 2 else 0  # refer
    fs |= (1 << 14) if abi >= 3 else 0  # truncate
    fs |= (1 << 15) if abi >= 5 else 0  # ioctl_dev

    class Attr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class Beneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    attr = Attr(fs, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)  # tcp bind+connect; unix+signal scope
    size = 8 * (1 + (abi >= 4) + (abi >= 6))
    ruleset = libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")

    def allow(path: str, rights: int) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        if not os.path.isdir(path):
            rights &= _FILE_ONLY
        rule = Beneath(rights & fs, fd)
        if libc.syscall(_SYS_ADD, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)):
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
        os.close(fd)

    allow(_WS, fs)
    for path in _READ:
        allow(path, _READ_FS)
    allow("/dev/null", (1 << 1) | (1 << 2))
    if libc.prctl(38, 1, 0, 0, 0):  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.syscall(_SYS_RESTRICT, ctypes.c_int(ruleset), ctypes.c_uint32(0)):
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(ruleset)
    return abi


try:
    _abi = _landlock() if "landlock" in _config.get("layers", ["landlock"]) else 0
except (OSError, AttributeError) as _e:
    _abi, _why = 0, str(_e)
else:
    _why = "the kernel has none"
if _config.get("require_landlock") and not _abi:  # fail closed: no kernel sandbox, no run
    sys.stderr.write(f"sandbox: Landlock could not be applied ({_why}); the program was not run\n")
    os._exit(126)
os.environ["SANDBOX_LANDLOCK_ABI"] = str(_abi)


# -- 3. the audit hook -------------------------------------------------------------------------
# (helpers bound now, as default arguments: the program cannot swap them for others later)
def _under(path, roots, _realpath=os.path.realpath, _join=os.path.join, _getcwd=os.getcwd,
           _fsdecode=os.fsdecode, _fspath=os.fspath) -> bool:
    if isinstance(path, int):
        return True
    if isinstance(path, bytes):
        path = _fsdecode(path)
    real = _realpath(_join(_getcwd(), _fspath(path)))
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_DENIED = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
           "pty.spawn", "socket.", "ctypes.", "os.kill", "os.killpg", "signal.pthread_kill",
           # reaching into this hook's own state: other objects, frames of other threads, code swaps
           "gc.get_", "sys._current_frames", "sys.setprofile", "sys.settrace")
_MUTATE = ("os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.symlink", "os.link", "os.chmod", "os.chown",
           "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile", "shutil.copytree")
_READABLE = [_WS, *_READ, "/dev/null"]


_NO_IMPORT = ("_posixsubprocess", "_ctypes", "_testcapi", "_testinternalcapi")  # process or memory tricks past the hook


def _hook(event, args, _no_import=_NO_IMPORT, _denied=_DENIED, _mutate=_MUTATE, _ws=[_WS],
          _writable=[_WS, "/dev/null"], _readable=tuple(_READABLE), _under=_under, _pathlike=os.PathLike,
          _write_flags=_WRITE_FLAGS, _protected=()):
    if event == "import" and args[0] in _no_import:
        raise PermissionError(f"sandbox: importing {args[0]} is not allowed for generated code")
    if event.startswith(_denied):
        raise PermissionError(f"sandbox: {event} is not allowed for generated code")
    if event == "object.__setattr__" and (args[1] == "__code__" or any(args[0] is f for f in _protected)):
        raise PermissionError(f"sandbox: replacing {args[1]} of this function is not allowed for generated code")
    if event == "open":
        path, mode, flags = args
        writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & _write_flags)
        if not _under(path, _writable if writing else _readable):
            raise PermissionError(f"sandbox: {path!r} is outside the workspace")
    elif event in ("os.listdir", "os.scandir", "os.chdir"):
        if args and args[0] is not None and not _under(args[0], _readable if event != "os.chdir" else _ws):
            raise PermissionError(f"sandbox: {args[0]!r} is outside the workspace")
    elif event.startswith(_mutate):
        for path in args[:2]:
            if isinstance(path, (str, bytes, _pathlike)) and not _under(path, _ws):
                raise PermissionError(f"sandbox: {event} on {path!r} is outside the workspace")


_hook.__defaults__ = _hook.__defaults__[:-1] + ((_hook, _under),)  # the hook guards its own arguments
if "audit_hook" in _config.get("layers", ["audit_hook"]):
    sys.addaudithook(_hook)
sys.path[:0] = [os.path.dirname(os.path.abspath(_script)), *_config.get("path", [])]
del _config, _landlock, _name, _key
runpy.run_path(_script, run_name="__main__")
