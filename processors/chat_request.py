"""The chat-completions request a catalog model is sent, built by pure functions.

`build_request` is what the model gateway posts and what `olp models check --dry-run` prints, so
the contract tests check exactly what leaves the process. Each catalog entry names its dialect
(`olp.catalog.StructuredOutput`): OpenAI's standard structured output, llama.cpp's own form,
plain JSON mode or none; its token-limit field, whether temperature is sent, and Azure's URL and
header.

OpenAI's strict structured outputs accept only a documented subset of JSON Schema
(`strict_schema_problems`); a schema outside it is sent with `strict: false`, so the call still
works and the defensive parsers check the answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from olp.catalog import ModelSpec
from olp.errors import ConfigError

Messages = Sequence[Mapping[str, str]]

SCHEMA_NAME = "answer"
"""`json_schema.name`: required by OpenAI (a-z, A-Z, 0-9, _ and -, at most 64 characters)."""

# OpenAI's documented limits for strict structured outputs ("Supported schemas").
MAX_OBJECT_PROPERTIES = 5000
MAX_NESTING = 10
MAX_NAMES_CHARS = 120_000
MAX_ENUM_VALUES = 1000
LARGE_ENUM = 250
MAX_LARGE_ENUM_CHARS = 15_000

_COMMON_KEYWORDS = frozenset(
    {"type", "description", "title", "enum", "const", "anyOf", "$ref", "$defs", "definitions"}
)
_KEYWORDS_BY_TYPE = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
    "string": frozenset({"pattern", "format"}),
    "number": frozenset({"multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"}),
    "integer": frozenset({"multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"}),
    "boolean": frozenset(),
    "null": frozenset(),
}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One HTTP request to a chat-completions endpoint."""

    url: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]


def build_request(
    spec: ModelSpec,
    messages: Messages,
    json_schema: Mapping[str, Any] | None = None,
    max_tokens: int | None = None,
    api_key: str | None = None,
) -> ChatRequest:
    """The request `spec` is sent for `messages`, asking for JSON that follows `json_schema`."""
    body: dict[str, Any] = {
        "model": spec.request_model,
        "messages": [dict(m) for m in messages],
        spec.token_limit_field: min(max_tokens or spec.max_output_tokens, spec.max_output_tokens),
    }
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    if json_schema is not None and spec.structured_output != "none":
        body["response_format"] = response_format(spec, json_schema)
    if spec.logprobs:
        body["logprobs"] = True
    return ChatRequest(endpoint_url(spec), _headers(spec, api_key), body)


def response_format(spec: ModelSpec, json_schema: Mapping[str, Any]) -> dict[str, Any]:
    """The `response_format` of `spec`'s dialect; strict only for a schema strict mode accepts."""
    if spec.structured_output == "llama_cpp":
        return {"type": "json_object", "schema": dict(json_schema)}
    if spec.structured_output == "json_object":
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": SCHEMA_NAME,
            "schema": dict(json_schema),
            "strict": not strict_schema_problems(json_schema),
        },
    }


def endpoint_url(spec: ModelSpec) -> str:
    if spec.base_url is None:
        raise ConfigError(f"model {spec.name} has no base_url: a {spec.kind} model takes no chat request")
    base = spec.base_url.rstrip("/")
    if spec.azure is None:
        return base + "/chat/completions"
    deployment = quote(spec.azure.deployment, safe="")
    version = quote(spec.azure.api_version, safe="")
    return f"{base}/openai/deployments/{deployment}/chat/completions?api-version={version}"


def _headers(spec: ModelSpec, api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        if spec.azure is not None:
            headers["api-key"] = api_key
        else:
            headers["Authorization"] = f"Bearer {api_key}"
    return headers


# --- OpenAI's strict subset of JSON Schema ----------------------------------------------------


def strict_schema_problems(schema: Mapping[str, Any]) -> list[str]:
    """Why OpenAI's strict structured outputs would reject `schema` (empty: it fits).

    The rules and limits are the documented ones: the root is an object and not `anyOf`; every
    object lists all its properties as required and sets `additionalProperties: false`; only the
    listed keywords per type (no `minLength`, `allOf`, `not`, `if`, `default`, ...); at most 5000
    object properties, 10 levels of nesting, 1000 enum values, 120,000 characters of property
    names and enum values, and 15,000 characters for an enum of more than 250 strings.
    """
    problems: list[str] = []
    if schema.get("type") != "object" or "anyOf" in schema:
        problems.append("the root is not a plain object schema")
    properties = enum_values = names_chars = 0
    depth = 0
    for path, node, level in _subschemas(schema):
        problems += _node_problems(path, node)
        if node.get("type") == "object" or "properties" in node:
            depth = max(depth, level)
        props = node.get("properties")
        if isinstance(props, Mapping):
            properties += len(props)
            names_chars += sum(len(str(k)) for k in props)
        values = node.get("enum")
        if isinstance(values, list):
            enum_values += len(values)
            chars = sum(len(v) for v in values if isinstance(v, str))
            names_chars += chars
            if len(values) > LARGE_ENUM and chars > MAX_LARGE_ENUM_CHARS:
                problems.append(f"{path}: {len(values)} enum values of {chars} characters (> 15,000)")
    if properties > MAX_OBJECT_PROPERTIES:
        problems.append(f"{properties} object properties (at most {MAX_OBJECT_PROPERTIES})")
    if depth > MAX_NESTING:
        problems.append(f"{depth} levels of nesting (at most {MAX_NESTING})")
    if enum_values > MAX_ENUM_VALUES:
        problems.append(f"{enum_values} enum values (at most {MAX_ENUM_VALUES})")
    if names_chars > MAX_NAMES_CHARS:
        problems.append(f"{names_chars} characters of names and enum values (at most {MAX_NAMES_CHARS})")
    return problems


def _node_problems(path: str, node: Mapping[str, Any]) -> list[str]:
    types = node.get("type")
    type_list = types if isinstance(types, list) else [types] if types else []
    allowed = set(_COMMON_KEYWORDS)
    for t in type_list:
        allowed |= _KEYWORDS_BY_TYPE.get(t, frozenset())
    problems = [f"{path}: keyword {k!r} is not supported" for k in node if k not in allowed]
    if "object" in type_list:
        props = node.get("properties")
        keys = list(props) if isinstance(props, Mapping) else []
        missing = [k for k in keys if k not in (node.get("required") or [])]
        if missing:
            problems.append(f"{path}: properties {missing[:5]} are not required")
        if node.get("additionalProperties") is not False:
            problems.append(f"{path}: additionalProperties is not false")
    return problems


def _subschemas(
    schema: Mapping[str, Any], path: str = "$", level: int = 1
) -> Iterator[tuple[str, Mapping[str, Any], int]]:
    """Every schema inside `schema` (itself included), with its path and its level: 1 + the
    number of objects around it."""
    yield path, schema, level
    deeper = level + 1 if schema.get("type") == "object" or "properties" in schema else level
    props = schema.get("properties")
    if isinstance(props, Mapping):
        for key, sub in props.items():
            if isinstance(sub, Mapping):
                yield from _subschemas(sub, f"{path}.{key}", deeper)
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield from _subschemas(items, f"{path}[]", level)
    for keyword in ("anyOf", "$defs", "definitions"):
        group = schema.get(keyword)
        members = group.items() if isinstance(group, Mapping) else enumerate(group or [])
        for key, sub in members:
            if isinstance(sub, Mapping):
                yield from _subschemas(sub, f"{path}.{keyword}[{key}]", level)
