"""The one stack launcher (spec sections 5-7). Every way of running the services as child
processes starts here: `olp up` / `olp demo`, the integration and reliability tests, the benchmarks.

- `ServiceStack`: the policy store and N processor workers on a running broker, each a child
  process configured only through `OLP_*` environment variables, exactly as on Kubernetes; it
  can stop, kill and restart them (what a supervisor does).
- `EmbeddedStack`: the whole development stack: the Tansu broker, the topics, the local model
  pool (`launcher.embedded.LOCAL_MODELS`: SmolLM2-135M, plus the Qwen2.5-Coder models once
  `make models-extra` installed them) and a `ServiceStack` with one worker.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import olp
from launcher.embedded import (
    DEFAULT_LOCAL_MODEL,
    LOCAL_ENCODERS,
    LOCAL_MODELS,
    REFERENCE_USD_PER_HOUR,
    ChildProcess,
    PoolMode,
    Throughput,
    encoder_files,
    free_port,
    http_ok,
    installed_encoders,
    installed_local_models,
    measure_throughput,
    start_broker,
    start_model_pool,
)
from launcher.secure_broker import SecureBroker, start_secure_broker
from olp.catalog import Catalog, EncoderFiles, ModelSpec, dump_catalog
from olp.errors import OlpError
from olp.settings import EMBEDDED_BROKER_ENV, EMBEDDED_BROKER_KAFKA, Settings, load_settings
from olp.topics import TopicNames, ensure_topics

LOCAL_MODEL = DEFAULT_LOCAL_MODEL
SAMPLE_GOLD = Path(olp.__file__).parent / "data" / "sample_livestream.gold.json"
"""Gold labels of the bundled sample stream: the embedded default's canaries and the demo's yardstick."""
LOCAL_CONTEXT = 8192
"""KV cache size the embedded servers give every model (memory and prompt time grow with it)."""


def write_private(path: Path, text: str) -> None:
    """Write a secret (a token) readable by its owner only (0600), also when `path` existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def local_model_spec(
    alias: str,
    base_url: str,
    usd_per_hour: float = REFERENCE_USD_PER_HOUR,
    context_window: int = LOCAL_CONTEXT,
    measured: Throughput | None = None,
) -> ModelSpec:
    """The catalog entry of one pool model served at `base_url`.

    Its price is its compute time (`launcher.embedded.LocalModel`, "Cost rule"): the machine's hourly
    price divided by the model's measured tokens per second (`measured` on this machine now, else
    the speeds recorded on the reference machine), so Role-RL weighs a slow strong local model
    against a fast weak one, and both against remote models, on one dollar scale.
    """
    model = LOCAL_MODELS[alias]
    if measured is not None:
        model = replace(model, prompt_tps=measured.prompt_tps, decode_tps=measured.decode_tps)
    # Slower models need longer: a chunk's prompt of ~4k tokens plus a few hundred out, with
    # room for a machine shared with other work.
    timeout = max(120.0, 3 * (4000 / model.prompt_tps + 400 / model.decode_tps))
    return ModelSpec(
        name=alias,
        base_url=base_url,
        served_name=None,
        api_key_env=None,
        price_in_per_mtok=model.price_in_per_mtok(usd_per_hour),
        price_out_per_mtok=model.price_out_per_mtok(usd_per_hour),
        context_window=min(context_window, model.context_window),
        timeout_s=round(timeout),
        max_concurrency=1,
        max_output_tokens=384,
        structured_output="llama_cpp",
        verify_tls=True,
    )


def local_encoder_spec(alias: str, usd_per_hour: float = REFERENCE_USD_PER_HOUR) -> ModelSpec:
    """The catalog entry of one pool encoder (kind `encoder`), run inside the processors and
    priced by its compute like the LLMs (`launcher.embedded.LocalEncoder`, "Cost rule")."""
    encoder = LOCAL_ENCODERS[alias]
    model_file, tokenizer_file = encoder_files(alias)
    return ModelSpec(
        name=alias,
        kind="encoder",
        encoder=EncoderFiles(
            model_file=str(model_file), tokenizer_file=str(tokenizer_file), sha256=encoder.sha256
        ),
        price_in_per_mtok=encoder.price_in_per_mtok(usd_per_hour),
        timeout_s=60,
        max_concurrency=1,
    )


def local_catalog(
    base_url: str | Mapping[str, str],
    aliases: Sequence[str] | None = None,
    measured: Mapping[str, Throughput] | None = None,
    encoders: Sequence[str] = (),
) -> Catalog:
    """The embedded pool behind local llama.cpp servers.

    `base_url` is one URL for every alias (a shared server) or a URL per alias; `aliases`
    default to the keys of that mapping, or to SmolLM2 alone for a single URL. `measured`
    speeds (`launcher.embedded.measure_throughput`) replace the recorded ones in the prices.
    `encoders` (`launcher.embedded.LOCAL_ENCODERS` aliases) join the pool of the roles they can fill.
    """
    if isinstance(base_url, str):
        urls = dict.fromkeys(aliases or (LOCAL_MODEL,), base_url)
    else:
        urls = {alias: base_url[alias] for alias in (aliases or tuple(base_url))}
    speeds = measured or {}
    models = [local_model_spec(alias, url, measured=speeds.get(alias)) for alias, url in urls.items()]
    models += [local_encoder_spec(alias) for alias in encoders]
    judge = strongest_local(list(urls))
    return Catalog(models=tuple(m.model_copy(update={"judge": m.name == judge}) for m in models))


def strongest_local(aliases: Sequence[str]) -> str | None:
    """The pool's judge: its strongest model (the last in `LOCAL_MODELS` order), when the pool
    has another model for it to judge; a model never judges itself, so SmolLM2 alone has none
    and the canaries are the quality signal."""
    known = [a for a in LOCAL_MODELS if a in aliases]
    return known[-1] if len(set(aliases)) > 1 and known else None


@dataclass
class ServiceStack:
    """The policy store and processor workers on the broker at `bootstrap`; `stop()` always.

    Each child's log is `run_dir/<name>.log`; `logs()` gives their tails for error messages."""

    bootstrap: str
    prefix: str
    """Topic prefix (and the Faust app id's), so several stacks can share one broker."""
    run_dir: Path
    catalog: Catalog
    extra_env: Mapping[str, str] = field(default_factory=dict)
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    partitions: int | None = None
    """Partitions of the topics the services create; None: the settings' default."""
    inherit_olp_env: bool = False
    """Pass this process's OLP_* variables on (`olp up`: the user's configuration); otherwise the
    children see only what this stack sets (tests and benchmarks stay reproducible)."""
    children: list[ChildProcess] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    api_url: str = ""
    worker_ports: list[int] = field(default_factory=list)
    _ready: dict[str, str] = field(default_factory=dict, repr=False)
    """Child name -> the readiness URL a restart waits for."""

    def __post_init__(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        catalog_path = self.run_dir / "catalog.yaml"
        dump_catalog(self.catalog, catalog_path)
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.env = {
            "OLP_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            **({"OLP_KAFKA__PARTITIONS": str(self.partitions)} if self.partitions else {}),
            **({"OLP_TOPIC_PREFIX": self.prefix, "OLP_APP_ID": f"{self.prefix}app"} if self.prefix else {}),
            "OLP_CATALOG_PATH": str(catalog_path),
            "OLP_POLICY_STORE_PORT": str(api_port),
            "OLP_API_TOKEN": self.api_token,
            "OLP_LEARNER__SNAPSHOT_PATH": str(self.run_dir / "policy.json"),
            "OLP_DATA_DIR": str(self.run_dir / "data"),
            **EMBEDDED_BROKER_ENV,
            "OLP_RECREATE_LOST_TOPICS": "true",  # a restarted in-memory broker has none
            **self.extra_env,
        }

    def settings(self) -> Settings:
        """What a client of this stack needs (broker, prefix, catalog)."""
        return load_settings(
            kafka={**EMBEDDED_BROKER_KAFKA, "bootstrap_servers": self.bootstrap},
            topic_prefix=self.prefix,
            catalog_path=self.run_dir / "catalog.yaml",
        )

    def _child_env(self, **more: str) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if self.inherit_olp_env or not k.startswith("OLP_")}
        return {**inherited, **self.env, **more}

    def _start(
        self, name: str, argv: list[str], env: dict[str, str], ready: str, timeout_s: float
    ) -> ChildProcess:
        child = ChildProcess(
            name, [sys.executable, "-m", "launcher", *argv], env, self.run_dir / f"{name}.log"
        )
        self.children.append(child.start())
        self._ready[name] = ready
        child.wait_until(lambda: http_ok(ready), timeout_s, name)
        return child

    def start_policy_store(self, timeout_s: float = 60) -> ChildProcess:
        return self._start(
            "policy-store", ["policy-store"], self._child_env(), f"{self.api_url}/readyz", timeout_s
        )

    def start_worker(
        self, roles: str = "all", own_data_dir: bool = False, timeout_s: float = 90
    ) -> ChildProcess:
        """One more processor worker (`worker-<n>`); `own_data_dir` gives it a data directory of its
        own, as separate pods have (the splitter's local table store is per process)."""
        index, port = len(self.worker_ports), free_port()
        self.worker_ports.append(port)
        more = {"OLP_WORKER_WEB_PORT": str(port)}
        if own_data_dir:
            more["OLP_DATA_DIR"] = str(self.run_dir / f"data-worker-{index}")
        ready = f"http://127.0.0.1:{port}/readyz"
        return self._start(
            f"worker-{index}", ["worker", "--roles", roles], self._child_env(**more), ready, timeout_s
        )

    def child(self, name: str) -> ChildProcess:
        return next(c for c in reversed(self.children) if c.name == name)

    def restart(self, child: ChildProcess, timeout_s: float = 90) -> ChildProcess:
        """The same command, environment and log file again, once it answers ready (what a
        supervisor does)."""
        if child.alive():
            child.stop()
        fresh = ChildProcess(child.name, child.argv, child.env, child.log_path).start()
        self.children[self.children.index(child)] = fresh
        ready = self._ready[child.name]
        fresh.wait_until(lambda: http_ok(ready), timeout_s, child.name)
        return fresh

    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self.children if c.proc is not None}

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise OlpError(f"{child.name} died:\n{child.log_tail()}")

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.log_tail(60)}" for c in self.children)

    def stop(self, log: Callable[[str], None] | None = None) -> None:
        for child in reversed(self.children):
            code = child.stop()
            if log is not None:
                log(f"stopped     {child.name} (exit {code})")
        # The children stay listed: their logs are read after the stop (crash lines, leaks).


@dataclass
class EmbeddedStack:
    """Broker, topics, models and a `ServiceStack`: start with `start()`, always `stop()` (the CLI
    does it in a finally block)."""

    run_dir: Path
    catalog: Catalog | None = None
    """Models to use; None serves the local model pool with llama.cpp."""
    local_models: Sequence[str] | None = None
    """The local pool when `catalog` is None; None: every installed pool model (SmolLM2, plus
    the Qwen models after `make models-extra`)."""
    encoders: Sequence[str] | None = None
    """Encoder models beside the local LLMs when `catalog` is None; None: every installed one."""
    pool_mode: PoolMode = "shared"
    """One llama.cpp server swapping models (least memory) or one server per model."""
    judges: Sequence[str] | None = None
    """Catalog models on the board of judges (processors/judge.py); None: the catalog's judges
    (the strongest local model when the pool has several); empty: no judging."""
    judge_sample_rate: float | None = None
    """Share of an uncertain role's calls the board judges; None: the settings' default."""
    canaries: Path | None = SAMPLE_GOLD
    """Gold canaries of the default feed (processors/canaries.py): chunks of the sample stream
    with its gold labels; None: none. Left to the user when they configure feeds (OLP_FEEDS*)."""
    canary_rate: float = 1.0
    """Canary chunks per real chunk: the demo's sample is short, and the canaries are what
    measures quality on a pool with no judge. One per chunk fits 2 cores in real time because
    the encoders answer them in milliseconds and the LLM runs on them only as the feed's LLM
    time budget allows."""
    calibrate: bool = False
    """Measure each local model's speed at start-up and price it from that (cost rule in
    launcher/embedded.py); otherwise the speeds recorded on the reference machine price it."""
    partitions: int = 4
    secure: bool = False
    """Serve the broker over mutual TLS (a TLS proxy in front of Tansu, a throwaway CA in
    `run_dir/broker`), so clients are configured as for a secured cluster."""
    log: Callable[[str], None] = print
    secure_broker: SecureBroker | None = None
    children: list[ChildProcess] = field(default_factory=list)
    """The broker and the model servers (the services are `services.children`)."""
    services: ServiceStack | None = None
    settings: Settings | None = None

    @property
    def env(self) -> dict[str, str]:
        """The OLP_* variables that point a client or another service at this stack."""
        return self.services.env if self.services else {}

    @property
    def api_url(self) -> str:
        return self.services.api_url if self.services else ""

    def start(self) -> Settings:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        security: dict[str, object] = {}
        if self.secure:
            self.secure_broker = start_secure_broker(self.run_dir / "broker")
            bootstrap, security = self.secure_broker.bootstrap, dict(self.secure_broker.kafka_settings())
            took = time.monotonic() - started
            self.log(f"broker      Tansu behind a TLS proxy on {bootstrap} ({took:.1f}s)")
        else:
            broker, bootstrap = start_broker(self.run_dir)
            self.children.append(broker)
            self.log(f"broker      Tansu on {bootstrap} ({time.monotonic() - started:.1f}s)")
        catalog = self.catalog or self._start_models()

        self.services = ServiceStack(
            bootstrap,
            "",
            self.run_dir,
            catalog,
            {**self._quality_env(), **(self.secure_broker.env() if self.secure_broker else {})},
            partitions=self.partitions,
            inherit_olp_env=True,
        )
        settings = load_settings(
            kafka={
                **EMBEDDED_BROKER_KAFKA,
                **security,
                "bootstrap_servers": bootstrap,
                "partitions": self.partitions,
            },
            catalog_path=self.run_dir / "catalog.yaml",
        )
        self.settings = settings
        topics = TopicNames.with_prefix(settings.topic_prefix)
        report = ensure_topics(
            settings.kafka.confluent_config(), topics.all(), self.partitions, configs=topics.configs()
        )
        self.log(f"topics      {len(report)} ready ({', '.join(sorted(set(report.values())))})")

        self.services.start_policy_store()
        self.services.start_worker(timeout_s=120)
        self.log(
            f"roles       6 agents in one worker; policy store API at {self.api_url} "
            f"({time.monotonic() - started:.1f}s in all)"
        )
        return settings

    def _quality_env(self) -> dict[str, str]:
        """The board and the canaries, as OLP_* variables for the services."""
        env: dict[str, str] = {}
        judges: dict[str, object] = {}
        if self.judges is not None:
            judges["models"] = list(self.judges)
        if self.judge_sample_rate is not None:
            judges["sample_rate"] = self.judge_sample_rate
        if judges:
            env["OLP_JUDGES"] = json.dumps(judges)
        if self.canaries is not None and not any(k.startswith("OLP_FEEDS") for k in os.environ):
            env["OLP_FEEDS__DEFAULT__CANARIES"] = str(self.canaries)
            env["OLP_FEEDS__DEFAULT__CANARY_RATE"] = str(self.canary_rate)
        return env

    def _start_models(self) -> Catalog:
        """Serve the local pool with llama.cpp and return its catalog."""
        t0 = time.monotonic()
        aliases = list(self.local_models or installed_local_models())
        if not aliases:
            raise OlpError("no local model installed: run `make install` (and `make models-extra`)")
        servers, urls = start_model_pool(self.run_dir, aliases, self.pool_mode, n_ctx=LOCAL_CONTEXT)
        self.children.extend(servers)
        measured = {a: measure_throughput(urls[a], a) for a in aliases} if self.calibrate else None
        for alias, speed in (measured or {}).items():
            self.log(f"models      {alias}: {speed.prompt_tps}/{speed.decode_tps} tokens/s in/out")
        self.log(
            f"models      {', '.join(aliases)} via llama.cpp ({self.pool_mode}) at "
            f"{', '.join(sorted(set(urls.values())))} ({time.monotonic() - t0:.1f}s)"
        )
        encoders = list(installed_encoders() if self.encoders is None else self.encoders)
        if encoders:
            self.log(f"models      encoders {', '.join(encoders)} in the processors")
        return local_catalog(urls, measured=measured, encoders=encoders)

    def policy(self) -> Mapping[str, object]:
        with urllib.request.urlopen(f"{self.api_url}/v1/policy", timeout=5) as resp:
            return dict(json.load(resp))

    def pids(self) -> dict[str, int]:
        """Child name -> pid: the broker, the model servers and the services."""
        own = {c.name: c.proc.pid for c in self.children if c.proc is not None}
        return {**own, **(self.services.pids() if self.services else {})}

    def check_alive(self) -> None:
        if self.services is not None:
            self.services.check_alive()
        for child in self.children:
            if not child.alive():
                raise OlpError(f"{child.name} died:\n{child.log_tail()}")

    def stop(self) -> None:
        if self.services is not None:
            self.services.stop(self.log)
        for child in reversed(self.children):
            code = child.stop()
            self.log(f"stopped     {child.name} (exit {code})")
        if self.secure_broker is not None:
            self.secure_broker.stop()
            self.log("stopped     secure broker")
        self.children.clear()
