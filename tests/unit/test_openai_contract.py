"""Every request the gateway can build, checked against the contract of the service it is for:
the official OpenAI API description (`CreateChatCompletionRequest`, unknown properties as errors)
for the OpenAI-compatible dialects, llama-cpp-python's request model for the llama.cpp one; and
every role's schema against OpenAI's strict structured-output subset."""

from __future__ import annotations

from typing import Any

import pytest

from launcher import openai_contract
from olp.catalog import ModelSpec
from processors import content_organizer, judge, relationship_checker, topic_finder, topic_locator
from processors.chat_request import build_request, strict_schema_problems

needs_contract = pytest.mark.skipif(
    not openai_contract.available(), reason=f"no OpenAI API description at {openai_contract.OPENAI_API}"
)

IDS = list(range(100, 124))
ASPECTS = ["Opening", "Order Urging", "Price", "Product Description"]
MESSAGES = [
    {"role": "system", "content": "You organise live transcripts. Answer with JSON only."},
    {"role": "user", "content": "<transcript>\n[100] Hi.\n</transcript>\n\nAnswer with JSON."},
]


def role_schemas() -> dict[str, dict[str, Any]]:
    """The answer schema of every role call, as the roles build them for a 24-sentence chunk."""
    roles: dict[str, dict[str, Any]] = {
        "topic_finder": topic_finder.answer_schema("ecommerce"),
        "topic_locator": topic_locator.answer_schema(IDS),
        "topic_locator_batch": topic_locator.batch_answer_schema(["Wig", "Lipstick"], IDS),
        "relationship_checker": relationship_checker.answer_schema(),
        "content_organizer": content_organizer.answer_schema(ASPECTS, IDS),
    }
    roles |= {f"judge_{name}": judge.answer_schema(schema) for name, schema in list(roles.items())}
    return roles


ROLE_SCHEMAS = role_schemas()

DIALECTS: dict[str, dict[str, Any]] = {
    "json_schema": {},
    "json_object": {"structured_output": "json_object"},
    "none": {"structured_output": "none"},
    "azure": {"azure": {"deployment": "gpt-4o", "api_version": "2024-10-21"}, "api_key_env": "AZURE_KEY"},
    "reasoning": {"token_limit_field": "max_completion_tokens", "temperature": None},
    "logprobs": {"logprobs": True},
}


def spec(**fields: Any) -> ModelSpec:
    return ModelSpec(
        **{"name": "m", "base_url": "https://api.example.com/v1", "served_name": "gpt-4o", **fields}
    )


@needs_contract
@pytest.mark.parametrize("role", sorted(ROLE_SCHEMAS))
@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_every_openai_dialect_passes_the_contract(dialect: str, role: str) -> None:
    request = build_request(spec(**DIALECTS[dialect]), MESSAGES, ROLE_SCHEMAS[role], api_key="k")
    assert [e.message for e in openai_contract.contract_errors(request.body)] == []


@needs_contract
def test_llama_cpp_form_fails_the_contract_on_response_format_schema() -> None:
    """The body every call sent before the dialects existed: OpenAI answers it with HTTP 400."""
    request = build_request(spec(structured_output="llama_cpp"), MESSAGES, ROLE_SCHEMAS["topic_finder"])
    assert request.body["response_format"]["type"] == "json_object"
    errors = openai_contract.contract_errors(request.body)
    assert errors
    assert openai_contract.openai_error(errors) == {
        "error": {
            "message": "Unknown parameter: 'response_format.schema'.",
            "type": "invalid_request_error",
            "param": "response_format.schema",
            "code": "unknown_parameter",
        }
    }


@needs_contract
@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"top_k": 40}, "top_k"),  # llama.cpp and vLLM take it; OpenAI does not
        ({"messages": [{"role": "user", "content": "hi", "name2": "x"}]}, "messages.0.name2"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "x": 1}}},
            "response_format.json_schema.x",
        ),
    ],
)
def test_the_contract_sees_unknown_properties_at_any_depth(change: dict[str, Any], param: str) -> None:
    body = {**build_request(spec(), MESSAGES).body, **change}
    errors = openai_contract.contract_errors(body)
    assert openai_contract.openai_error(errors)["error"]["param"] == param


@needs_contract
def test_the_contract_still_checks_types() -> None:
    body = {**build_request(spec(), MESSAGES).body, "max_tokens": "many"}
    assert (
        openai_contract.openai_error(openai_contract.contract_errors(body))["error"]["param"] == "max_tokens"
    )


@pytest.mark.parametrize("role", sorted(ROLE_SCHEMAS))
def test_llama_cpp_dialect_fits_llama_cpp_pythons_request_model(role: str) -> None:
    pytest.importorskip("llama_cpp.server.types")
    request = build_request(spec(structured_output="llama_cpp"), MESSAGES, ROLE_SCHEMAS[role])
    assert request.body["response_format"]["schema"] == ROLE_SCHEMAS[role]
    assert openai_contract.llama_cpp_errors(request.body) == []


def test_llama_cpp_request_model_rejects_the_openai_form() -> None:
    pytest.importorskip("llama_cpp.server.types")
    request = build_request(spec(), MESSAGES, ROLE_SCHEMAS["topic_finder"])
    problems = openai_contract.llama_cpp_errors(request.body)
    assert "unknown field 'response_format.json_schema'" in problems


# --- OpenAI's strict subset ---------------------------------------------------------------------

STRICT_EXPECTED = {
    "topic_finder": [
        "$.topics[]: keyword 'minLength' is not supported",
        "$.topics[]: keyword 'maxLength' is not supported",
    ],
    "topic_locator": [],
    "topic_locator_batch": [],
    "relationship_checker": ["$.name: keyword 'maxLength' is not supported"],
    "content_organizer": [],
}


@pytest.mark.parametrize("role", sorted(STRICT_EXPECTED))
def test_which_role_schemas_fit_strict_mode(role: str) -> None:
    assert strict_schema_problems(ROLE_SCHEMAS[role]) == STRICT_EXPECTED[role]


@pytest.mark.parametrize("role", sorted(STRICT_EXPECTED))
def test_a_judge_schema_never_fits_strict_mode(role: str) -> None:
    """The judge's correction is optional (not required): outside the strict subset."""
    assert "$: properties ['correction'] are not required" in strict_schema_problems(
        ROLE_SCHEMAS[f"judge_{role}"]
    )


@pytest.mark.parametrize("role", sorted(ROLE_SCHEMAS))
def test_strict_is_sent_exactly_when_the_schema_fits(role: str) -> None:
    body = build_request(spec(), MESSAGES, ROLE_SCHEMAS[role]).body
    assert body["response_format"]["json_schema"]["strict"] is (STRICT_EXPECTED.get(role) == [])


def test_the_documented_limits() -> None:
    def flat(n: int) -> dict[str, Any]:
        keys = [str(i) for i in range(n)]
        props = {k: {"type": "integer"} for k in keys}
        return {"type": "object", "properties": props, "required": keys, "additionalProperties": False}

    assert strict_schema_problems(flat(5000)) == []
    assert strict_schema_problems(flat(5001)) == ["5001 object properties (at most 5000)"]
    # The organiser's labels: one 4-aspect enum per sentence, so at most 250 sentences a call.
    assert strict_schema_problems(content_organizer.answer_schema(ASPECTS, range(250))) == []
    assert strict_schema_problems(content_organizer.answer_schema(ASPECTS, range(251))) == [
        "1004 enum values (at most 1000)"
    ]
    enum = {
        "type": "object",
        "properties": {"a": {"type": "string", "enum": ["x" * 60 + str(i) for i in range(251)]}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert strict_schema_problems(enum) == ["$.a: 251 enum values of 15703 characters (> 15,000)"]
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(10):
        deep = {"type": "object", "properties": {"d": deep}, "required": ["d"], "additionalProperties": False}
    assert strict_schema_problems(deep) == []
    deeper = {"type": "object", "properties": {"d": deep}, "required": ["d"], "additionalProperties": False}
    assert strict_schema_problems(deeper) == ["11 levels of nesting (at most 10)"]
    assert (
        strict_schema_problems({"anyOf": [{"type": "object"}]})[0] == "the root is not a plain object schema"
    )


def test_the_embedded_pool_speaks_llama_cpp() -> None:
    """The local llama-cpp-python servers take only llama.cpp's form (`type` text or json_object)."""
    from launcher.stack import local_catalog

    assert {m.structured_output for m in local_catalog("http://h/v1", ["smollm2-135m"]).models} == {
        "llama_cpp"
    }


def test_a_catalog_with_the_retired_field_names_its_replacement() -> None:
    with pytest.raises(ValueError, match=r"`json_schema` was replaced by `structured_output`"):
        ModelSpec.model_validate({"name": "m", "base_url": "http://h/v1", "json_schema": True})
