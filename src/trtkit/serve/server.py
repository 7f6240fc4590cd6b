"""``trtkit serve``: run a real Triton Inference Server on a model repository.

The server binary comes from, in order: ``tritonserver=`` / ``--tritonserver``,
the ``TRTKIT_TRITONSERVER`` environment variable, the ``nvidia-pytriton``
wheel (Triton 2.51 with the Python backend, installed by the ``serve`` setup,
see docs/deploy.md), or ``tritonserver`` on PATH (the NGC container).

What the wheel's binary needs, and trtkit sets up (no manual ``LD_LIBRARY_PATH``):

* its Python-backend stub for the running Python version, copied into a
  private backend directory (the wheel ships one stub per Python version);
* ``LD_LIBRARY_PATH`` with the running interpreter's ``libpython3.X.so``
  (otherwise the stub loads the system's libpython and fails with
  ``'_thread.RLock' object has no attribute '_recursion_count'``) and the
  wheel's bundled libraries;
* ``PATH`` starting with this interpreter's ``bin`` (the embedded stub finds
  its ``sys.prefix``, hence this environment's site-packages, through it);
* ``TRTKIT_SERVE_PYTHONPATH``: the trtkit that started the server, which the
  repository's ``model.py`` shims import.

Servers bind to 127.0.0.1 unless told otherwise; ``close()`` (or leaving the
``with`` block, or Ctrl-C in the CLI) stops the server and its stub processes.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from ..errors import BackendUnavailable, SpecError, TrtkitError

__all__ = ["ServerConfig", "TritonServer", "find_tritonserver", "free_port", "INSTALL_COMMAND", "INSTALL_HINT"]

# The one command that installs the server binary. Not part of the `serve` extra: nvidia-pytriton pins
# numpy<2 for its own Python code (unused by trtkit), so a dependency on it would downgrade NumPy; --no-deps
# installs only its tritonserver binary and Python-backend stubs. PyPI has no other tritonserver wheel
# (the `tritonserver` project is a placeholder there).
INSTALL_COMMAND = "pip install --no-deps nvidia-pytriton==0.7.0"
INSTALL_HINT = f"{INSTALL_COMMAND} (after pip install 'trtkit[serve]'; --no-deps keeps NumPy 2)"


class ServerError(TrtkitError):
    """Triton did not start, or stopped unexpectedly."""


@dataclass(frozen=True)
class ServerConfig:
    """Ports (0 = pick a free one), bind address, Triton log verbosity, timeouts."""

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    log_verbose: int = 0
    tritonserver: str | None = None
    startup_timeout_s: float = 180.0
    exit_timeout_s: int = 5

    def __post_init__(self) -> None:
        for flag, port in (("--http-port", self.http_port), ("--grpc-port", self.grpc_port), ("--metrics-port", self.metrics_port)):
            if not 0 <= port <= 65535:
                raise SpecError(f"{flag} must be in 0..65535 (0 = any free port), got {port}")
        if self.log_verbose < 0:
            raise SpecError(f"--log-verbose must be >= 0, got {self.log_verbose}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class _Install:
    binary: Path
    backends: Path  # backend directory as shipped
    stub: Path | None  # the stub to copy in (pytriton wheel); None when backends/python has one
    libs: tuple[Path, ...]


def _pytriton_install() -> _Install | None:
    spec = importlib.util.find_spec("pytriton")  # find, never import: pytriton's own code wants numpy<2
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise BackendUnavailable(
            f"nvidia-pytriton at {root.parent} has no Python-backend stub for Python {version}; "
            "it ships stubs for Python 3.8-3.13. Run trtkit with one of those"
        )
    return _Install(binary, root / "backends", stub, (root.parent.parent / "nvidia_pytriton.libs",))


def _standard_install(binary: Path) -> _Install:
    root = binary.resolve().parent.parent  # .../tritonserver/bin/tritonserver
    return _Install(binary, root / "backends", None, ())


def find_tritonserver(explicit: str | None = None) -> _Install:
    """Locate a tritonserver binary (see the module docstring for the order)."""
    given = explicit or os.environ.get("TRTKIT_TRITONSERVER")
    if given:
        path = Path(given)
        if not path.is_file() or not os.access(path, os.X_OK):
            source = "--tritonserver" if explicit else "TRTKIT_TRITONSERVER"
            raise BackendUnavailable(f"{source} {given!r} is not an executable file; give the path of the tritonserver binary")
        return _standard_install(path)
    found = _pytriton_install()
    if found is not None:
        return found
    on_path = shutil.which("tritonserver")
    if on_path:
        return _standard_install(Path(on_path))
    raise BackendUnavailable(
        "trtkit serve needs a tritonserver binary and found none (no nvidia-pytriton wheel, none on PATH, "
        f"TRTKIT_TRITONSERVER unset); install it with: {INSTALL_HINT}"
    )


def _libpython_dir() -> str | None:
    """The directory of the running interpreter's shared libpython (None for a static build)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if libdir and name and (Path(libdir) / name).exists():
        return str(libdir)
    return None


def _tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc), for memory figures and clean shutdown."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                continue
    return pids


_SHM_REGION_PREFIX = "triton_python_backend_shm_region_"


def _shm_regions(pids: list[int]) -> list[str]:
    """The shared-memory regions of the Python-backend stubs among ``pids`` (each stub is given its
    region's name on its command line)."""
    names = []
    for pid in pids:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # gone already
            continue
        names += [a.decode() for a in args if a.startswith(_SHM_REGION_PREFIX.encode()) and b"/" not in a]
    return names


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of ``pid`` in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TritonServer:
    """A running ``tritonserver`` on ``repository``; ``with TritonServer(repo) as server: ...``.

    ``log`` receives each line Triton prints (default: written to stderr).
    """

    def __init__(self, repository: str | os.PathLike[str], *, config: ServerConfig | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.repository = Path(repository)
        self.config = config or ServerConfig()
        self._log = log or _stderr_line
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._reader: threading.Thread | None = None
        self._tail: list[str] = []
        self._errors: list[str] = []
        self.ports: dict[str, int] = {}

    # ------------------------------------------------------------ lifetime
    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> "TritonServer":
        if not self.repository.is_dir():
            raise SpecError(f"model repository {str(self.repository)!r} is not a directory; write one with trtkit triton")
        install = find_tritonserver(self.config.tritonserver)
        c = self.config
        self.ports = {k: (p or free_port(c.host)) for k, p in
                      (("http", c.http_port), ("grpc", c.grpc_port), ("metrics", c.metrics_port))}
        self._workdir = Path(tempfile.mkdtemp(prefix="trtkit-triton-"))
        try:
            backends = self._backend_dir(install)
            args = [
                str(install.binary), f"--model-repository={self.repository.resolve()}", f"--backend-directory={backends}",
                f"--http-address={c.host}", f"--grpc-address={c.host}", f"--metrics-address={c.host}",
                f"--http-port={self.ports['http']}", f"--grpc-port={self.ports['grpc']}",
                f"--metrics-port={self.ports['metrics']}", f"--log-verbose={c.log_verbose}",
                f"--exit-timeout-secs={c.exit_timeout_s}", "--disable-auto-complete-config",
            ]
            if install.stub is not None:
                args.append(f"--cache-directory={install.binary.parent.parent / 'caches'}")
            self._proc = subprocess.Popen(
                args, env=self._env(install), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,  # Ctrl-C reaches us; we stop Triton in order
            )
            self._reader = threading.Thread(target=self._pump, name="triton-log", daemon=True)
            self._reader.start()
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop Triton (SIGTERM, then SIGKILL after the exit timeout) and remove the private backend copy."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            pids = _tree_pids(proc.pid)
            regions = _shm_regions(pids[1:])
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.config.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pid in pids[1:]:  # stubs Triton could not reap (it was killed): end them by id
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # Triton unlinks a stub's region when it unloads the model, but not when its exit timeout runs
            # out first, which an idle client's open HTTP keep-alive connection is enough to cause
            # ("Exit timeout expired. Exiting immediately."): 1 MB+ per model instance left in /dev/shm.
            for name in regions:
                Path("/dev/shm", name).unlink(missing_ok=True)
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # ------------------------------------------------------------ facts
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def endpoints(self) -> dict[str, str]:
        h = self.config.host
        return {"http": f"http://{h}:{self.ports['http']}", "grpc": f"{h}:{self.ports['grpc']}",
                "metrics": f"http://{h}:{self.ports['metrics']}/metrics"}

    def memory_bytes(self) -> int:
        """Resident memory of the server and its Python-backend stub processes."""
        return sum(_rss_bytes(p) for p in _tree_pids(self._proc.pid)) if self._proc is not None else 0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and its live Python-backend stubs."""
        if self._proc is None:
            return 0.0
        return sum(_cpu_ticks(p) for p in _tree_pids(self._proc.pid)) / os.sysconf("SC_CLK_TCK")

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        if self._proc is None:
            return 0
        return self._proc.wait()

    # ------------------------------------------------------------ internals
    def _backend_dir(self, install: _Install) -> Path:
        if install.stub is None:
            return install.backends
        assert self._workdir is not None
        target = self._workdir / "backends"
        shutil.copytree(install.backends / "python", target / "python", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(install.stub, target / "python" / "triton_python_backend_stub")
        return target

    def _env(self, install: _Install) -> dict[str, str]:
        env = dict(os.environ)
        libs = [d for d in (_libpython_dir(), *map(str, install.libs)) if d]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["TRTKIT_SERVE_PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        return env

    def _pump(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self._tail = (self._tail + [line])[-40:]
            if line[:1] == "E" or "failed to load" in line:  # Triton's error lines, kept for the startup error
                self._errors = (self._errors + [line])[-10:]
            self._log(line)

    def _wait_ready(self) -> None:
        url = f"http://{self.config.host}:{self.ports['http']}/v2/health/ready"
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise ServerError(
                    f"tritonserver exited (code {code}) before it was ready; its errors:\n  "
                    + "\n  ".join(self._errors or [line for line in self._tail[-15:] if line.strip()])
                    + "\nFix the model named there (trtkit triton validates configs, but a model can still fail to load)"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise ServerError(
            f"tritonserver was not ready after {self.config.startup_timeout_s:.0f} s ({url}); its last lines:\n  "
            + "\n  ".join(self._tail[-15:])
        )


def _stderr_line(line: str, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    out.write(line + "\n")
    out.flush()
