"""Model gateway against a real HTTP server (the scripted OpenAI-compatible one): token counts,
cost, retries with backoff on 429/5xx/timeouts/dropped connections, permanent errors named by
model, parameter and the provider's words, input faults, refusals, answers without usage,
reasoning tokens, Azure's URL and header."""

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
from processors.model_gateway import (
    InputRejected,
    ModelGateway,
    RequestRejected,
    _parse_completion,
    confidence_from_logprobs,
)


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
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": False},
    }


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


# --- provider errors and answers of OpenAI-style providers -----------------------------------------

UNKNOWN_PARAMETER = {
    "error": {
        "message": "Unknown parameter: 'response_format.schema'.",
        "type": "invalid_request_error",
        "param": "response_format.schema",
        "code": "unknown_parameter",
    }
}


async def test_a_rejected_request_names_model_parameter_message_and_fix(
    server: ScriptedLLM, script: list[Reply]
) -> None:
    script.append(Reply(status=400, error=UNKNOWN_PARAMETER))
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(server.base_url, served_name="gpt-4o"), session, {})
        with pytest.raises(RequestRejected) as caught:
            await gateway.complete("m", [{"role": "user", "content": "hi"}], {"type": "object"})
    assert str(caught.value) == (
        "model m (gpt-4o): HTTP 400 invalid_request_error unknown_parameter (parameter"
        " response_format.schema): Unknown parameter: 'response_format.schema'."
        " -> this endpoint rejects response_format.schema: set structured_output: json_schema"
    )
    assert caught.value.error.param == "response_format.schema"
    assert len(server.requests) == 1  # permanent: not retried


async def test_the_key_is_masked_in_a_named_error(server: ScriptedLLM, script: list[Reply]) -> None:
    echo = {"error": {"message": "Incorrect API key provided: sk-secret-1234.", "code": "invalid_api_key"}}
    script.append(Reply(status=401, error=echo))
    async with aiohttp.ClientSession() as session:
        keyed = catalog(server.base_url, api_key_env="PROVIDER_KEY")
        gateway = ModelGateway(keyed, session, {"PROVIDER_KEY": "sk-secret-1234"})
        with pytest.raises(RequestRejected) as caught:
            await gateway.complete("m", [{"role": "user", "content": "hi"}])
    assert "sk-secret" not in str(caught.value) and "sk-secret" not in caught.value.error.message
    assert str(caught.value).endswith(
        "Incorrect API key provided: ***. -> the endpoint refused the API key: check PROVIDER_KEY"
    )


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            Reply(
                status=400,
                error={
                    "error": {
                        "message": "This model's maximum context length is 8192 tokens.",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": "context_length_exceeded",
                    }
                },
            ),
            "context_length_exceeded",
        ),
        # vLLM: a flat body without a code
        (
            Reply(
                status=400,
                error={
                    "object": "error",
                    "message": "This model's maximum context length is 4096"
                    " tokens. However, you requested 5000 tokens.",
                    "code": 400,
                },
            ),
            "context_length_exceeded",
        ),
        (
            Reply(status=400, error={"error": {"message": "filtered", "code": "content_filter"}}),
            "content_filter",
        ),
        (Reply("", finish_reason="content_filter"), "content_filter"),
    ],
    ids=["openai-context", "vllm-context", "azure-filter-400", "finish-content-filter"],
)
async def test_faults_of_the_input_are_input_rejected(
    server: ScriptedLLM, script: list[Reply], reply: Reply, reason: str
) -> None:
    script.append(reply)
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(server.base_url), session, {})
        with pytest.raises(InputRejected) as caught:
            await gateway.complete("m", [{"role": "user", "content": "hi"}])
    assert caught.value.reason == reason
    assert len(server.requests) == 1


async def test_a_refusal_is_a_model_call_error_naming_it(server: ScriptedLLM, script: list[Reply]) -> None:
    script.append(Reply(refusal="I can't help with that."))
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(server.base_url), session, {})
        with pytest.raises(ModelCallError, match=r"^model m refused: I can't help with that\.$"):
            await gateway.complete("m", [{"role": "user", "content": "hi"}])


async def test_an_answer_without_usage_is_estimated_and_marked(
    server: ScriptedLLM, script: list[Reply]
) -> None:
    script.append(Reply('{"topics": ["wig"]}', usage=False))
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(server.base_url), session, {})
        done = await gateway.complete("m", [{"role": "user", "content": "x" * 400}])
    assert (done.tokens_in, done.tokens_out, done.tokens_estimated) == (100, 5, True)
    assert done.cost_usd == pytest.approx((100 * 2.0 + 5 * 8.0) / 1e6)


async def test_reasoning_tokens_are_billed(server: ScriptedLLM, script: list[Reply]) -> None:
    """A reasoning model that spends its whole limit thinking answers nothing, and is still paid."""
    script.append(Reply("", finish_reason="length", reasoning_tokens=300))
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog(server.base_url), session, {})
        done = await gateway.complete("m", [{"role": "user", "content": "x" * 400}])
    assert (done.text, done.finish_reason, done.reasoning_tokens) == ("", "length", 300)
    assert done.tokens_out == 301 and not done.tokens_estimated
    assert done.cost_usd == pytest.approx((100 * 2.0 + 301 * 8.0) / 1e6)


def test_reasoning_tokens_are_never_billed_below_their_count() -> None:
    """A provider that leaves reasoning out of completion_tokens is billed for it all the same."""
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "completion_tokens_details": {"reasoning_tokens": 50},
    }
    raw = json.dumps({"choices": [{"message": {"content": "{}"}}], "usage": usage}).encode()
    done = _parse_completion(catalog("http://x/v1").model("m"), raw, 1.0)
    assert (done.tokens_out, done.reasoning_tokens) == (50, 50)


async def test_azure_deployment_url_header_and_version(server: ScriptedLLM) -> None:
    azure = {"deployment": "gpt-4o-prod", "api_version": "2024-10-21"}
    keyed = catalog(server.base_url.removesuffix("/v1"), api_key_env="AZURE_KEY", azure=azure)
    async with aiohttp.ClientSession() as session:
        done = await ModelGateway(keyed, session, {"AZURE_KEY": "az-key"}).complete(
            "m", [{"role": "user", "content": "hi"}]
        )
    assert done.text == '{"ok": true}'
    call = server.calls[0]
    assert call.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert call.query == {"api-version": "2024-10-21"}
    assert call.headers["api-key"] == "az-key" and "Authorization" not in call.headers


async def test_reasoning_model_fields(server: ScriptedLLM) -> None:
    reasoning = catalog(server.base_url, token_limit_field="max_completion_tokens", temperature=None)
    async with aiohttp.ClientSession() as session:
        await ModelGateway(reasoning, session, {}).complete(
            "m", [{"role": "user", "content": "hi"}], None, 99
        )
    body = server.requests[0][1]
    assert body["max_completion_tokens"] == 99
    assert "max_tokens" not in body and "temperature" not in body
