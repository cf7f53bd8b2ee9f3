"""A worker's Faust web server: loopback by default, and no page that shows table contents or the
cluster's topology (`/table/...` served buffered transcript sentences, `/router/` the workers'
URLs); the health and metrics pages the chart's probes and scrapers use stay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from olp.settings import load_settings
from processors.app import create_app


@pytest.fixture
async def worker_web(tmp_path: Path) -> AsyncIterator[TestClient]:
    app, _ = create_app(load_settings(data_dir=str(tmp_path)))
    app.web.init_server()  # what the worker does before it binds: blueprints and pages
    async with TestClient(TestServer(app.web.web_app)) as client:
        yield client


async def test_table_router_and_stats_pages_are_not_served(worker_web: TestClient) -> None:
    for path in ("/table/", "/table/chunk-splitter-state/", "/table/chunk-splitter-state/s1/", "/router/"):
        resp = await worker_web.get(path)
        assert resp.status == 404, path
    index = await worker_web.get("/")
    assert index.status == 404 or (await index.json()) == {"status": "OK"}  # never the stats page


async def test_health_and_metrics_pages_stay(worker_web: TestClient) -> None:
    resp = await worker_web.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    assert (await worker_web.get("/readyz")).status == 503  # not started: not ready
    assert (await worker_web.get("/metrics")).status in (200, 404)  # 404: exporter off


def test_worker_web_server_binds_loopback_by_default(tmp_path: Path) -> None:
    app, _ = create_app(load_settings(data_dir=str(tmp_path)))
    assert app.conf.web_bind == "127.0.0.1"
    assert not app.conf.web_tables_enabled and not app.conf.web_router_enabled


def test_worker_web_host_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLP_WORKER_WEB_HOST", "0.0.0.0")  # what the chart sets: kubelet probes the pod IP
    app, _ = create_app(load_settings(data_dir=str(tmp_path)))
    assert app.conf.web_bind == "0.0.0.0"
    assert not app.conf.web_tables_enabled and not app.conf.web_router_enabled
