"""The policy store's reads that show transcript text or the policy (`/v1/policy`,
`/v1/dashboard`, `/v1/history`) need the read token (or the admin token) when one is set; off
loopback the store refuses to start without one unless unauthenticated reads are allowed
explicitly. Health endpoints stay open and carry no secret."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from olp.catalog import Catalog, ModelSpec
from olp.errors import ConfigError
from olp.http import is_loopback
from olp.settings import load_settings
from policy_store.bus import MemoryBus
from policy_store.service import create_app

ADMIN = "adm1n-t0ken-planted"
READER = "r3ad-t0ken-planted"
CATALOG = Catalog(models=(ModelSpec(name="small", base_url="http://127.0.0.1:9/v1"),))
READS = ("/v1/policy", "/v1/policy/topic_finder", "/v1/dashboard", "/v1/history")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def client_for(aiohttp_client: Callable[..., Any], tmp_path: Path, **settings: Any) -> Any:
    values = {"api_token": ADMIN, "learner": {"snapshot_path": str(tmp_path / "p.json")}, **settings}
    return await aiohttp_client(create_app(load_settings(**values), CATALOG, seed=1, bus=MemoryBus()))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.5.0.1", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False), ("olp.example", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_reads_need_the_read_or_admin_token_when_one_is_set(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await client_for(aiohttp_client, tmp_path, read_token=READER)
    for path in READS:
        assert (await client.get(path)).status == 401, path
        assert (await client.get(path, headers=bearer("wrong"))).status == 401, path
        assert (await client.get(path, headers=bearer(READER))).status == 200, path
        assert (await client.get(path, headers=bearer(ADMIN))).status == 200, path
    # The read token changes nothing.
    pin = await client.put("/v1/policy/topic_finder/pin", json={"model": "small"}, headers=bearer(READER))
    assert pin.status == 401


async def test_health_stays_open_and_carries_no_secret(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await client_for(aiohttp_client, tmp_path, read_token=READER)
    for path in ("/healthz", "/readyz"):
        resp = await client.get(path)
        text = await resp.text()
        assert resp.status in (200, 503), path
        assert ADMIN not in text and READER not in text, path


async def test_reads_on_loopback_without_a_read_token_are_open(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await client_for(aiohttp_client, tmp_path)
    for path in READS:
        assert (await client.get(path)).status == 200, path


def test_off_loopback_the_store_refuses_to_start_without_a_read_token(tmp_path: Path) -> None:
    base = {"api_token": ADMIN, "policy_store_host": "0.0.0.0"}
    with pytest.raises(ConfigError, match="read_token"):
        create_app(load_settings(**base), CATALOG, bus=MemoryBus())
    create_app(load_settings(**base, read_token=READER), CATALOG, bus=MemoryBus())
    create_app(load_settings(**base, allow_unauthenticated_reads=True), CATALOG, bus=MemoryBus())
    create_app(load_settings(api_token=ADMIN), CATALOG, bus=MemoryBus())  # loopback: open reads are fine


def test_the_read_token_is_a_secret_of_the_settings() -> None:
    settings = load_settings(read_token=READER)
    assert READER not in repr(settings) and READER in settings.secret_values()
