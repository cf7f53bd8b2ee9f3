"""`olp models check` against the scripted OpenAI-compatible server, lenient and strict, and its
dry run on the embedded catalog; the strict server rejects the llama.cpp form as OpenAI does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from launcher import openai_contract
from launcher.cli import main
from launcher.scripted_llm import Reply, ScriptedLLM, requested_schema
from olp.catalog import Catalog, ModelSpec, dump_catalog
from processors.model_gateway import ModelGateway, RequestRejected

EMBEDDED = Path(__file__).parents[2] / "olp" / "data" / "catalog.yaml"
ROLES = {"topic_finder", "topic_locator", "relationship_checker", "content_organizer", "judge"}
needs_contract = pytest.mark.skipif(not openai_contract.available(), reason="no OpenAI API description")


def answer_probe(model: str, body: dict[str, Any]) -> Reply:
    """A model that follows the schema when it gets one, and chats when it does not."""
    return Reply('{"answer": true}' if requested_schema(body) else "Sure! The sky is blue.")


@pytest.fixture
def lenient() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM(answer_probe).start()
    yield server
    server.stop()


@pytest.fixture
def strict() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM(answer_probe, strict=True).start()
    yield server
    server.stop()


def write_catalog(tmp_path: Path, *specs: dict[str, Any]) -> Path:
    path = tmp_path / "catalog.yaml"
    dump_catalog(Catalog(models=tuple(ModelSpec(**s) for s in specs)), path)
    return path


def check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["models", "check", *args], env={"PROVIDER_KEY": "sk-test"})
    return result.exit_code, result.output


def row(output: str, model: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(f"│ {model} "))
    return [cell.strip() for cell in line.strip("│").split("│")]


def test_dry_run_prints_what_each_role_sends_to_the_embedded_pool() -> None:
    code, output = check("--dry-run", "--catalog", str(EMBEDDED))
    assert code == 0
    requests = json.loads(output)
    assert {r["role"] for r in requests} == ROLES and {r["model"] for r in requests} == {"smollm2-135m"}
    for request in requests:
        assert request["url"] == "http://127.0.0.1:8088/v1/chat/completions"
        assert request["body"]["response_format"]["type"] == "json_object"
        assert request["body"]["response_format"]["schema"]["type"] == "object"
        assert openai_contract.llama_cpp_errors(request["body"]) == []


def test_dry_run_masks_keys_and_sends_no_request(tmp_path: Path, lenient: ScriptedLLM) -> None:
    catalog = write_catalog(
        tmp_path, {"name": "gpt", "base_url": lenient.base_url, "api_key_env": "PROVIDER_KEY"}
    )
    code, output = check("--dry-run", "--role", "topic_finder", "--catalog", str(catalog))
    assert code == 0 and lenient.requests == []
    (request,) = json.loads(output)
    assert request["headers"]["Authorization"] == "Bearer ***" and "sk-test" not in output
    assert request["body"]["response_format"]["json_schema"]["strict"] is False  # minLength: not strict


def test_check_reports_reachable_structured_and_the_ignored_schema(
    tmp_path: Path, lenient: ScriptedLLM
) -> None:
    catalog = write_catalog(
        tmp_path,
        {"name": "standard", "base_url": lenient.base_url, "api_key_env": "PROVIDER_KEY"},
        {"name": "plain", "base_url": lenient.base_url, "structured_output": "none"},
    )
    code, output = check("--catalog", str(catalog))
    assert code == 1  # one model does not give structured output
    standard = row(output, "standard")
    assert standard[1:2] + standard[3:] == ["yes", "yes", "-"] and standard[2].endswith(" ms")
    assert row(output, "plain")[1:2] + row(output, "plain")[3:] == [
        "yes",
        "no: not JSON ('Sure! The sky is blue.')",
        "none sends no schema: try structured_output: json_schema",
    ]
    # The two probes run at once: one with the key of its variable, one without.
    assert sorted(str(c.headers.get("Authorization")) for c in lenient.calls) == ["Bearer sk-test", "None"]


@needs_contract
def test_check_names_the_fix_for_what_a_strict_endpoint_rejects(tmp_path: Path, strict: ScriptedLLM) -> None:
    strict.unsupported["max_tokens"] = (
        "Unsupported parameter: 'max_tokens' is not supported with this model."
        " Use 'max_completion_tokens' instead."
    )
    catalog = write_catalog(
        tmp_path,
        {
            "name": "llama-form",
            "base_url": strict.base_url,
            "structured_output": "llama_cpp",
            "token_limit_field": "max_completion_tokens",
        },
        {"name": "o-series", "base_url": strict.base_url},
        {"name": "fixed", "base_url": strict.base_url, "token_limit_field": "max_completion_tokens"},
    )
    code, output = check("--catalog", str(catalog))
    assert code == 1
    assert row(output, "llama-form")[1:2] + row(output, "llama-form")[3:] == [
        "yes",
        "-",
        "this endpoint rejects response_format.schema: set structured_output: json_schema",
    ]
    assert row(output, "o-series")[4] == (
        "this model takes max_completion_tokens: set token_limit_field: max_completion_tokens"
    )
    assert row(output, "fixed")[3:] == ["yes", "-"]
    assert (
        "llama-form: HTTP 400 invalid_request_error unknown_parameter (parameter response_format.schema):"
        " Unknown parameter: 'response_format.schema'." in output
    )


def test_check_tells_an_unreachable_endpoint(tmp_path: Path) -> None:
    from launcher.embedded import free_port

    catalog = write_catalog(tmp_path, {"name": "gone", "base_url": f"http://127.0.0.1:{free_port()}/v1"})
    code, output = check("--catalog", str(catalog))
    assert code == 1
    assert row(output, "gone")[1:] == ["no", "-", "-", "check base_url, the network and HTTPS_PROXY"]
    assert "gone: model gone: ClientConnectorError" in output


@needs_contract
async def test_the_strict_server_rejects_the_llama_cpp_form_as_openai_does(strict: ScriptedLLM) -> None:
    """The test that would have caught the bug: every call was sent in llama.cpp's form."""
    schema = {"type": "object", "properties": {"answer": {"type": "boolean"}}}
    catalog = Catalog(
        models=(
            ModelSpec(name="old", base_url=strict.base_url, structured_output="llama_cpp"),
            ModelSpec(name="new", base_url=strict.base_url),
        )
    )
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog, session, {})
        with pytest.raises(RequestRejected, match=r"Unknown parameter: 'response_format\.schema'\."):
            await gateway.complete("old", [{"role": "user", "content": "hi"}], schema)
        done = await gateway.complete("new", [{"role": "user", "content": "hi"}], schema)
    assert done.text == '{"answer": true}'
    assert strict.rejected == [
        {
            "error": {
                "message": "Unknown parameter: 'response_format.schema'.",
                "type": "invalid_request_error",
                "param": "response_format.schema",
                "code": "unknown_parameter",
            }
        }
    ]
