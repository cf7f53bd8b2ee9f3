"""The whole embedded stack as one object (spec sections 5-7): broker, topics, the local model
pool (`launcher.embedded.LOCAL_MODELS`: SmolLM2-135M, plus the Qwen2.5-Coder models once
`make models-extra` installed them), policy store and one processor worker, each a child process
configured only through `OLP_*` environment variables, exactly as they would be on Kubernetes.
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

from launcher.embedded import (
    DEFAULT_LOCAL_MODEL,
    LOCAL_MODELS,
    REFERENCE_USD_PER_HOUR,
    ChildProcess,
    PoolMode,
    Throughput,
    free_port,
    http_ok,
    installed_local_models,
    measure_throughput,
    start_broker,
    start_model_pool,
)
from olp.catalog import Catalog, ModelSpec, dump_catalog
from olp.errors import OlpError
from olp.settings import Settings, load_settings
from olp.topics import TopicNames, ensure_topics

LOCAL_MODEL = DEFAULT_LOCAL_MODEL
LOCAL_CONTEXT = 8192
"""KV cache size the embedded servers give every model (memory and prompt time grow with it)."""


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
        json_schema=True,
        verify_tls=True,
    )


def local_catalog(
    base_url: str | Mapping[str, str],
    aliases: Sequence[str] | None = None,
    measured: Mapping[str, Throughput] | None = None,
) -> Catalog:
    """The embedded pool behind local llama.cpp servers.

    `base_url` is one URL for every alias (a shared server) or a URL per alias; `aliases`
    default to the keys of that mapping, or to SmolLM2 alone for a single URL. `measured`
    speeds (`launcher.embedded.measure_throughput`) replace the recorded ones in the prices.
    """
    if isinstance(base_url, str):
        urls = dict.fromkeys(aliases or (LOCAL_MODEL,), base_url)
    else:
        urls = {alias: base_url[alias] for alias in (aliases or tuple(base_url))}
    speeds = measured or {}
    return Catalog(
        models=tuple(local_model_spec(alias, url, measured=speeds.get(alias)) for alias, url in urls.items())
    )


@dataclass
class EmbeddedStack:
    """Start with `start()`, always `stop()` (the CLI does it in a finally block)."""

    run_dir: Path
    catalog: Catalog | None = None
    """Models to use; None serves the local model pool with llama.cpp."""
    local_models: Sequence[str] | None = None
    """The local pool when `catalog` is None; None: every installed pool model (SmolLM2, plus
    the Qwen models after `make models-extra`)."""
    pool_mode: PoolMode = "shared"
    """One llama.cpp server swapping models (least memory) or one server per model."""
    judges: Sequence[str] = ()
    """Catalog models on the board of judges (processors/judge.py); empty: no judging."""
    judge_sample_rate: float = 0.05
    """Share of role calls the board judges."""
    calibrate: bool = False
    """Measure each local model's speed at start-up and price it from that (cost rule in
    olp/embedded.py); otherwise the speeds recorded on the reference machine price it."""
    partitions: int = 4
    log: Callable[[str], None] = print
    children: list[ChildProcess] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    settings: Settings | None = None
    api_url: str = ""

    def start(self) -> Settings:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        broker, bootstrap = start_broker(self.run_dir)
        self.children.append(broker)
        self.log(f"broker      Tansu on {bootstrap} ({time.monotonic() - started:.1f}s)")

        catalog = self.catalog
        if catalog is None:
            t0 = time.monotonic()
            aliases = list(self.local_models or installed_local_models())
            if not aliases:
                raise OlpError("no local model installed: run `make install` (and `make models-extra`)")
            servers, urls = start_model_pool(self.run_dir, aliases, self.pool_mode, n_ctx=LOCAL_CONTEXT)
            self.children.extend(servers)
            measured = {a: measure_throughput(urls[a], a) for a in aliases} if self.calibrate else None
            for alias, speed in (measured or {}).items():
                self.log(f"models      {alias}: {speed.prompt_tps}/{speed.decode_tps} tokens/s in/out")
            catalog = local_catalog(urls, measured=measured)
            self.log(
                f"models      {', '.join(aliases)} via llama.cpp ({self.pool_mode}) at "
                f"{', '.join(sorted(set(urls.values())))} ({time.monotonic() - t0:.1f}s)"
            )
        catalog_path = self.run_dir / "catalog.yaml"
        dump_catalog(catalog, catalog_path)

        api_port, worker_port = free_port(), free_port()
        self.env = {
            "OLP_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "OLP_KAFKA__PARTITIONS": str(self.partitions),
            "OLP_CATALOG_PATH": str(catalog_path),
            "OLP_API_TOKEN": secrets.token_urlsafe(24),
            "OLP_POLICY_STORE_PORT": str(api_port),
            "OLP_WORKER_WEB_PORT": str(worker_port),
            "OLP_LEARNER__SNAPSHOT_PATH": str(self.run_dir / "policy-state.json"),
            "OLP_DATA_DIR": str(self.run_dir / "data"),
        }
        if self.judges:
            self.env["OLP_JUDGES"] = json.dumps(
                {"models": list(self.judges), "sample_rate": self.judge_sample_rate}
            )
        settings = load_settings(
            kafka={"bootstrap_servers": bootstrap, "partitions": self.partitions},
            catalog_path=catalog_path,
        )
        self.settings = settings
        topics = TopicNames.with_prefix(settings.topic_prefix)
        report = ensure_topics(settings.kafka.confluent_config(), topics.all(), self.partitions)
        self.log(f"topics      {len(report)} ready ({', '.join(sorted(set(report.values())))})")

        child_env = {**os.environ, **self.env}
        policy_store = ChildProcess(
            "policy-store",
            [sys.executable, "-m", "launcher", "policy-store"],
            child_env,
            self.run_dir / "policy-store.log",
        ).start()
        self.children.append(policy_store)
        worker = ChildProcess(
            "worker", [sys.executable, "-m", "launcher", "worker"], child_env, self.run_dir / "worker.log"
        ).start()
        self.children.append(worker)
        self.api_url = f"http://127.0.0.1:{api_port}"
        policy_store.wait_until(lambda: http_ok(f"{self.api_url}/readyz"), 60, "policy store")
        worker.wait_until(lambda: http_ok(f"http://127.0.0.1:{worker_port}/readyz"), 120, "processors")
        self.log(
            f"roles       6 agents in one worker; policy store API at {self.api_url} "
            f"({time.monotonic() - started:.1f}s in all)"
        )
        return settings

    def policy(self) -> Mapping[str, object]:
        with urllib.request.urlopen(f"{self.api_url}/v1/policy", timeout=5) as resp:
            return dict(json.load(resp))

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise OlpError(f"{child.name} died:\n{child.log_tail()}")

    def stop(self) -> None:
        for child in reversed(self.children):
            code = child.stop()
            self.log(f"stopped     {child.name} (exit {code})")
        self.children.clear()
