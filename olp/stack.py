"""The whole embedded stack as one object (spec sections 5-7): broker, topics, local model server,
policy store and one processor worker, each a child process configured only through `OLP_*`
environment variables, exactly as they would be on Kubernetes.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from olp.catalog import Catalog, ModelSpec, dump_catalog
from olp.embedded import ChildProcess, free_port, http_ok, smollm2_weights, start_broker, start_model_server
from olp.errors import OlpError
from olp.settings import Settings, load_settings
from olp.topics import TopicNames, ensure_topics

LOCAL_MODEL = "smollm2-135m"


def local_catalog(base_url: str) -> Catalog:
    """The embedded pool: SmolLM2-135M behind the local llama.cpp server.

    A local model sends no bill; its price stands for the compute it burns, so Role-RL still
    weighs it against remote models (see README, "Cost of local models").
    """
    return Catalog(
        models=(
            ModelSpec(
                name=LOCAL_MODEL,
                base_url=base_url,
                price_in_per_mtok=0.01,
                price_out_per_mtok=0.05,
                context_window=8192,
                timeout_s=120,
                max_concurrency=1,
                max_output_tokens=384,
            ),
        )
    )


@dataclass
class EmbeddedStack:
    """Start with `start()`, always `stop()` (the CLI does it in a finally block)."""

    run_dir: Path
    catalog: Catalog | None = None
    """Models to use; None starts the local llama.cpp server with SmolLM2."""
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
            server, base_url = start_model_server(self.run_dir, {LOCAL_MODEL: smollm2_weights()})
            self.children.append(server)
            catalog = local_catalog(base_url)
            self.log(f"models      {LOCAL_MODEL} via llama.cpp at {base_url} ({time.monotonic() - t0:.1f}s)")
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
            [sys.executable, "-m", "olp", "policy-store"],
            child_env,
            self.run_dir / "policy-store.log",
        ).start()
        self.children.append(policy_store)
        worker = ChildProcess(
            "worker", [sys.executable, "-m", "olp", "worker"], child_env, self.run_dir / "worker.log"
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
