"""Model gateway against a real HTTP server (the scripted OpenAI-compatible one): token counts,
cost, retries with backoff on 429/5xx/timeouts/dropped connections, permanent errors."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator

import aiohttp
import pytest

from launcher.scripted_llm import Reply, ScriptedLLM
from olp.catalog import Catalog, ModelSpec
from olp.errors import ModelCallError
from processors.model_gateway import ModelGateway, _parse_completion, confidence_from_logprobs


def catalog(url: str, **overrides: object) -> Catalog:
    spec = {
        "name": "m",
        "base_url": url,
        "price_in_per_mtok": 2.0,
        "price_out_per_mtok": 8.0,
        "timeout_s": 2.0,
    }
    return Catalog(models=(ModelSpec(**{**spec, **overrides}),))


@pytest.fixture
def script() -> Iterator[list[Reply]]:
    yield []


@pytest.fixture
def server(script: list[Reply]) -> Iterator[ScriptedLLM]:
    replies = iter(script)
    llm = ScriptedLLM(lambda model, body: next(replies, Reply('{"ok": true}'))).start()
    yield llm
    llm.stop()


async def test_measures_tokens_cost_and_latency(server: ScriptedLLM, script: list[Reply]) -> None:
    script.append(Reply('{"topics": ["wig"]}'))
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(server.base_url), session, {})
        done = await gateway.complete("m", [{"role": "user", "content": "x" * 400}], {"type": "object"})
    assert done.text == '{"topics": ["wig"]}'
    assert (done.tokens_in, done.tokens_out) == (100, 4)
    assert done.cost_usd == pytest.approx((100 * 2.0 + 4 * 8.0) / 1e6)
    assert done.latency_ms > 0
    model, body = server.requests[0]
    assert model == "m" and body["temperature"] == 0.0
    assert body["response_format"] == {"type": "json_object", "schema": {"type": "object"}}


@pytest.mark.parametrize(
    "fault",
    [Reply(status=429, retry_after="0"), Reply(status=503), Reply(drop_connection=True), Reply(delay_s=3.0)],
    ids=["429", "503", "dropped", "timeout"],
)
async def test_transient_faults_are_retried(server: ScriptedLLM, script: list[Reply], fault: Reply) -> None:
    script.extend([fault, Reply("fine")])
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(server.base_url), session, {})
        done = await gateway.complete("m", [{"role": "user", "content": "hi"}])
    assert done.text == "fine"
    assert len(server.requests) == 2


async def test_gives_up_after_the_attempts(server: ScriptedLLM, script: list[Reply]) -> None:
    script.extend(itertools.repeat(Reply(status=500), 5))
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(server.base_url), session, {}, attempts=3)
        with pytest.raises(ModelCallError, match="HTTP 500"):
            await gateway.complete("m", [{"role": "user", "content": "hi"}])
    assert len(server.requests) == 3


async def test_client_errors_and_malformed_bodies_are_not_retried(
    server: ScriptedLLM, script: list[Reply]
) -> None:
    script.extend([Reply(status=400), Reply(truncate=True)])
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(server.base_url), session, {})
        with pytest.raises(ModelCallError, match="HTTP 400"):
            await gateway.complete("m", [{"role": "user", "content": "hi"}])
        with pytest.raises(ModelCallError, match="malformed"):
            await gateway.complete("m", [{"role": "user", "content": "hi"}])
    assert len(server.requests) == 2


async def test_api_key_comes_from_the_named_variable(server: ScriptedLLM) -> None:
    async with aiohttp.ClientSession() as session:
        keyed = catalog(server.base_url, api_key_env="PROVIDER_KEY")
        with pytest.raises(ModelCallError, match="PROVIDER_KEY holds no API key"):
            await ModelGateway(keyed, session, {}).complete("m", [{"role": "user", "content": "hi"}])
        await ModelGateway(keyed, session, {"PROVIDER_KEY": "sk-test"}).complete(
            "m", [{"role": "user", "content": "hi"}]
        )
    assert len(server.requests) == 1


async def test_refused_connection_is_a_model_call_error() -> None:
    from launcher.embedded import free_port

    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(f"http://127.0.0.1:{free_port()}/v1"), session, {}, attempts=2)
        with pytest.raises(ModelCallError, match="ClientConnectorError"):
            await gateway.complete("m", [{"role": "user", "content": "hi"}])


# --- confidence from token logprobs (the cascade's signal) -----------------------------------------


def test_confidence_is_the_mean_token_probability() -> None:
    logprobs = {"content": [{"token": "{", "logprob": 0.0}, {"token": "x", "logprob": math.log(0.5)}]}
    assert confidence_from_logprobs(logprobs) == pytest.approx(0.75)
    assert confidence_from_logprobs(None) is None
    assert confidence_from_logprobs({"content": []}) is None
    assert confidence_from_logprobs({"content": [{"token": "x"}]}) is None  # malformed: no confidence
    assert confidence_from_logprobs({"content": [{"logprob": "-inf"}]}) == 0.0


def test_a_completion_carries_the_confidence_the_server_sent() -> None:
    spec = catalog("http://x/v1").model("m")
    raw = json.dumps(
        {
            "choices": [
                {
                    "message": {"content": "ok"},
                    "finish_reason": "stop",
                    "logprobs": {"content": [{"token": "ok", "logprob": math.log(0.9)}]},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }
    ).encode()
    assert _parse_completion(spec, raw, 1.0).confidence == pytest.approx(0.9)


@pytest.mark.parametrize("asks", [True, False])
async def test_logprobs_are_requested_only_where_the_catalog_says(server: ScriptedLLM, asks: bool) -> None:
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(server.base_url, logprobs=asks), session, {})
        done = await gateway.complete("m", [{"role": "user", "content": "x"}])
    assert ("logprobs" in server.requests[0][1]) is asks
    assert done.confidence is None  # the scripted server sends none
