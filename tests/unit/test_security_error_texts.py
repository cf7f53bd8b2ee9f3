"""No secret in any status or error text of the policy store: an error whose message carries a
token (a Kafka error repr'd with its request, say) reaches the caller masked, an unexpected
exception answers a JSON 500 without its message, and the health endpoints hold no secret."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from olp.catalog import Catalog, ModelSpec
from olp.errors import UnavailableError
from olp.settings import load_settings
from policy_store.bus import MemoryBus
from policy_store.service import create_app

ADMIN = "adm1n!planted#token"
READER = "r3ad!planted#token"
SASL = "sasl!planted#password"
SECRETS = (ADMIN, READER, SASL)
CATALOG = Catalog(models=(ModelSpec(name="small", base_url="http://127.0.0.1:9/v1"),))
VERDICT = {"role": "topic_finder", "model": "small", "quality": 1.0}


class LeakyBus(MemoryBus):
    """A bus whose failures quote every secret, as a library's error text might."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def publish_feedback(self, outcome: dict[str, Any]) -> None:
        raise self.error


async def start(aiohttp_client: Callable[..., Any], tmp_path: Path, bus: MemoryBus) -> Any:
    settings = load_settings(
        api_token=ADMIN,
        read_token=READER,
        kafka={
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "olp",
            "sasl_password": SASL,
        },
        learner={"snapshot_path": str(tmp_path / "p.json")},
    )
    return await aiohttp_client(create_app(settings, CATALOG, seed=1, bus=bus))


def leak() -> str:
    return f"request headers {{'Authorization': 'Bearer {ADMIN}'}}, read {READER}, sasl {SASL}"


@pytest.mark.parametrize(
    ("error", "status"),
    [(UnavailableError(f"Kafka did not take the record: {leak()}"), 503), (RuntimeError(leak()), 500)],
    ids=["domain-error", "unexpected-error"],
)
async def test_error_texts_carry_no_secret(
    aiohttp_client: Callable[..., Any], tmp_path: Path, error: Exception, status: int
) -> None:
    client = await start(aiohttp_client, tmp_path, LeakyBus(error))
    resp = await client.post("/v1/feedback", json=VERDICT, headers={"Authorization": f"Bearer {ADMIN}"})
    text = await resp.text()
    assert resp.status == status
    assert "error" in await resp.json()
    assert not [s for s in SECRETS if s in text], text


async def test_status_texts_carry_no_secret(aiohttp_client: Callable[..., Any], tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path, MemoryBus())
    reader = {"Authorization": f"Bearer {READER}"}
    for path in ("/healthz", "/readyz", "/v1/policy", "/v1/dashboard", "/v1/policy/nope", "/metrics"):
        resp = await client.get(path, headers=reader)
        text = await resp.text()
        assert not [s for s in SECRETS if s in text], (path, text)
