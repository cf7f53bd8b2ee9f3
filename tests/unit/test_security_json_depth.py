"""Deeply nested JSON is refused before it is parsed (400 with a message, not a 500 from a
RecursionError), by the one helper every service reads JSON with (olp/http.py)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from olp.catalog import Catalog, ModelSpec
from olp.http import MAX_JSON_DEPTH, NestingError, loads_json, nesting_exceeds
from olp.settings import load_settings
from policy_store.bus import MemoryBus
from policy_store.service import create_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CATALOG = Catalog(models=(ModelSpec(name="small", base_url="http://127.0.0.1:9/v1"),))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("{}", 1),
        ('{"a": [1, {"b": null}]}', 3),
        ('"[[[[[[[["', 0),  # brackets inside a string do not nest
        ('["\\"[[[[", {"k": "]]]"}]', 2),  # nor after an escaped quote
        (nested(5), 5),
    ],
)
def test_nesting_is_measured_on_the_raw_text(text: str, depth: int) -> None:
    assert not nesting_exceeds(text, depth)
    assert nesting_exceeds(text, depth - 1) == (depth > 0)


def test_loads_json_refuses_deep_nesting_before_parsing() -> None:
    assert loads_json(nested(MAX_JSON_DEPTH)) == json.loads(nested(MAX_JSON_DEPTH))
    with pytest.raises(NestingError, match="nested deeper than 64"):
        loads_json(nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError):  # callers that catch json's ValueError catch this too
        loads_json('{"a":' * 100_000)


def test_depth_scan_is_linear_on_hostile_strings() -> None:
    hostile = '"' + '\\"' * 200_000  # an unterminated string of escaped quotes
    started = time.perf_counter()
    assert not nesting_exceeds(hostile, 64)
    assert time.perf_counter() - started < 1.0


async def test_feedback_with_deep_nesting_is_400_not_500(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    settings = load_settings(api_token=TOKEN, learner={"snapshot_path": str(tmp_path / "p.json")})
    client = await aiohttp_client(create_app(settings, CATALOG, seed=1, bus=MemoryBus()))
    body = '{"role": "topic_finder", "model": "small", "quality": 1, "x": ' + nested(20_000) + "}"
    resp = await client.post("/v1/feedback", data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    assert "nested deeper than 64" in (await resp.json())["error"]
    pin = await client.put("/v1/policy/topic_finder/pin", data=nested(10_000), headers=AUTH)
    assert pin.status == 400
    ok = await client.put("/v1/policy/topic_finder/pin", json={"model": "small"}, headers=AUTH)
    assert ok.status == 200
    big = await client.post("/v1/feedback", data=b"x" * 100_000, headers=AUTH)
    assert big.status == 413 and "exceeds the limit of 65536" in (await big.json())["error"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(10):
            yield b"x" * 10_000

    streamed = await client.post("/v1/feedback", data=chunked(), headers=AUTH)
    assert streamed.status == 413
