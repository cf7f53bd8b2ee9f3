"""Runs the real services (policy store, processor workers) as subprocesses against the test
broker, configured only by OLP_* environment variables as in production."""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olp.catalog import Catalog, ModelSpec, dump_catalog
from launcher.clients import DocumentView, follow_documents, follow_topic
from launcher.embedded import ChildProcess, free_port, http_ok
from olp.settings import Settings, load_settings


def scripted_catalog(base_url: str, names: tuple[str, ...] = ("scripted",)) -> Catalog:
    return Catalog(
        models=tuple(
            ModelSpec(
                name=n, base_url=base_url, price_in_per_mtok=1.0 + i, price_out_per_mtok=2.0 + i, timeout_s=10
            )
            for i, n in enumerate(names)
        )
    )


@dataclass
class ServiceStack:
    """Policy store + N workers for one test; `stop()` returns their logs for failure messages."""

    bootstrap: str
    prefix: str
    run_dir: Path
    catalog: Catalog
    extra_env: Mapping[str, str] = field(default_factory=dict)
    children: list[ChildProcess] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    api_url: str = ""
    worker_ports: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        catalog_path = self.run_dir / "catalog.yaml"
        dump_catalog(self.catalog, catalog_path)
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.env = {
            "OLP_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "OLP_TOPIC_PREFIX": self.prefix,
            "OLP_APP_ID": f"{self.prefix}app",
            "OLP_CATALOG_PATH": str(catalog_path),
            "OLP_POLICY_STORE_PORT": str(api_port),
            "OLP_API_TOKEN": "test-token",
            "OLP_LEARNER__SNAPSHOT_PATH": str(self.run_dir / "policy.json"),
            "OLP_DATA_DIR": str(self.run_dir / "data"),
            "OLP_LEARNER__EPSILON": "0",
            **self.extra_env,
        }

    def settings(self) -> Settings:
        return load_settings(
            kafka={"bootstrap_servers": self.bootstrap},
            topic_prefix=self.prefix,
            catalog_path=self.run_dir / "catalog.yaml",
        )

    def _child_env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OLP_")}
        return {**env, **self.env, **more}

    def start_policy_store(self) -> ChildProcess:
        child = ChildProcess(
            "policy-store",
            [sys.executable, "-m", "launcher", "policy-store"],
            self._child_env(),
            self.run_dir / "policy-store.log",
        ).start()
        self.children.append(child)
        child.wait_until(lambda: http_ok(f"{self.api_url}/readyz"), 60, "policy store")
        return child

    def start_worker(self, roles: str = "all") -> ChildProcess:
        port = free_port()
        index = len(self.worker_ports)
        self.worker_ports.append(port)
        child = ChildProcess(
            f"worker-{index}",
            [sys.executable, "-m", "launcher", "worker", "--roles", roles],
            self._child_env(OLP_WORKER_WEB_PORT=str(port)),
            self.run_dir / f"worker-{index}.log",
        ).start()
        self.children.append(child)
        child.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 90, "worker")
        return child

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.log_tail(60)}" for c in self.children)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def wait_for_documents(
        self, stream_id: str, segment_ids: Iterable[int] | int, timeout_s: float = 120
    ) -> DocumentView:
        """Documents of the stream once every segment id lies in a final one (an int means the
        stream's ids run from its first document's start up to that id)."""
        last = segment_ids if isinstance(segment_ids, int) else None
        ids = [] if isinstance(segment_ids, int) else list(segment_ids)
        view = DocumentView()
        deadline = time.monotonic() + timeout_s
        for doc in follow_documents(self.settings()):
            if doc is not None and doc["stream_id"] == stream_id:
                view.apply(doc)
            docs = view.stream(stream_id)
            if last is not None and docs:
                ids = [i for i in range(int(docs[0]["first_id"]), last + 1)]
                gaps = [(d["last_id"], n["first_id"]) for d, n in itertools.pairwise(docs)]
                ids = [i for i in ids if not any(a < i < b for a, b in gaps)]
            if ids and view.covers(stream_id, ids):
                return view
            if time.monotonic() > deadline:
                held = [(d["topic_id"], d["last_id"], d["final"]) for d in view.stream(stream_id)]
                raise AssertionError(f"documents incomplete after {timeout_s}s: {held}\n{self.logs()}")
            for child in self.children:
                if not child.alive():
                    raise AssertionError(f"{child.name} died\n{self.logs()}")
        raise AssertionError("document stream ended")


def read_topic(
    settings: Settings, topic: str, expected: str, until: Any, timeout_s: float = 60
) -> list[dict[str, Any]]:
    """Decode records of `topic` from the start until `until(records)` is true."""
    from schemas.codec import make_codec

    codec = make_codec(None)
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    for msg in follow_topic(settings, topic):
        if msg is not None:
            records.append(codec.decode(msg.value(), expected))
        if until(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic}: condition not met after {timeout_s}s; got {records[-5:]}")
    raise AssertionError("unreachable")
