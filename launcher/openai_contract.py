"""The chat-completions request contract of the official OpenAI API description
(`../shared/contracts/openai-openapi.json`, `CreateChatCompletionRequest`), with unknown
properties treated as errors the way the live API treats them, and llama-cpp-python's own
request model for the llama.cpp dialect.

The description is OpenAPI 3.1 and does not close its objects, so `unevaluatedProperties: false`
is added to every object schema that is not itself an `allOf` member (the members stay open:
`unevaluatedProperties` sees through them, and a closed member would reject its siblings'
properties). Validated with jsonschema's Draft 2020-12 validator.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

# `../shared/contracts` beside the repository; OLP_CONTRACTS_DIR points elsewhere (a git worktree).
CONTRACTS = Path(
    os.environ.get("OLP_CONTRACTS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "contracts"
)
OPENAI_API = CONTRACTS / "openai-openapi.json"
REQUEST = "CreateChatCompletionRequest"
_REF_PREFIX = "#/components/schemas/"


def available() -> bool:
    return OPENAI_API.is_file()


@functools.cache
def request_validator() -> Draft202012Validator:
    """A validator of `CreateChatCompletionRequest` bodies with unknown properties as errors."""
    document = json.loads(OPENAI_API.read_text(encoding="utf-8"))
    schemas = copy.deepcopy(document["components"]["schemas"])
    members = _allof_members(schemas.values())
    for name, schema in schemas.items():
        _close(schema, is_member=name in members)
    root = {"$ref": _REF_PREFIX + REQUEST, "components": {"schemas": schemas}}
    return Draft202012Validator(root)


def contract_errors(body: Mapping[str, Any]) -> list[ValidationError]:
    return list(request_validator().iter_errors(body))


def _allof_members(schemas: Iterable[Any]) -> set[str]:
    """Names of the component schemas some `allOf` references as a member."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for member in node.get("allOf") or []:
                ref = member.get("$ref", "") if isinstance(member, dict) else ""
                if ref.startswith(_REF_PREFIX):
                    found.add(ref.removeprefix(_REF_PREFIX))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(list(schemas))
    return found


def _close(schema: Any, is_member: bool = False) -> None:
    """Add `unevaluatedProperties: false` to the object schemas in `schema` (in place)."""
    if not isinstance(schema, dict):
        return
    declares = "properties" in schema or "allOf" in schema
    if declares and not is_member and "additionalProperties" not in schema:
        schema.setdefault("unevaluatedProperties", False)
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            for sub in value.values():
                _close(sub)
        elif key == "allOf" and isinstance(value, list):
            for sub in value:
                _close(sub, is_member=True)
        elif isinstance(value, dict):
            _close(value)
        elif isinstance(value, list):
            for sub in value:
                _close(sub)


# --- the error the live API answers ------------------------------------------------------------

_UNEXPECTED = re.compile(r"'([^']+)' (?:was|were) unexpected|\('([^']+)'")


def openai_error(errors: list[ValidationError]) -> dict[str, Any]:
    """The HTTP 400 body OpenAI sends for a body with these contract errors: an unknown parameter
    is named as the live API names it (`Unknown parameter: 'response_format.schema'.`)."""
    unknown = unknown_parameter(errors)
    if unknown is not None:
        return _error(f"Unknown parameter: '{unknown}'.", unknown, "unknown_parameter")
    first = min(errors, key=lambda e: len(list(e.context or [])))
    param = ".".join(str(p) for p in first.absolute_path)
    return _error(f"Invalid value for '{param}': {first.message[:200]}", param, "invalid_value")


def unknown_parameter(errors: Iterable[ValidationError], prefix: tuple[Any, ...] = ()) -> str | None:
    """The dotted path of an unexpected property: directly, or inside the one branch of an
    `anyOf`/`oneOf` whose only complaint it is (the branch the body meant to use)."""
    for error in errors:
        if error.validator == "unevaluatedProperties":
            names = [a or b for a, b in _UNEXPECTED.findall(error.message)]
            if names:
                return ".".join(str(p) for p in (*prefix, *error.absolute_path, names[0]))
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context or []:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        for branch in branches.values():
            if len(branch) == 1 and (found := unknown_parameter(branch, prefix)) is not None:
                return found
    return None


def _error(message: str, param: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


# --- llama.cpp ---------------------------------------------------------------------------------


def llama_cpp_errors(body: Mapping[str, Any]) -> list[str]:
    """What llama-cpp-python's server model (`llama_cpp.server.types.CreateChatCompletionRequest`)
    rejects in `body`, with unknown fields as errors (the model itself ignores them)."""
    import pydantic
    from llama_cpp.llama_types import ChatCompletionRequestResponseFormat
    from llama_cpp.server.types import CreateChatCompletionRequest

    problems = [f"unknown field {k!r}" for k in body if k not in CreateChatCompletionRequest.model_fields]
    known_format = set(ChatCompletionRequestResponseFormat.__annotations__)
    fmt = body.get("response_format") or {}
    problems += [f"unknown field 'response_format.{k}'" for k in fmt if k not in known_format]
    try:
        CreateChatCompletionRequest.model_validate(dict(body))
    except pydantic.ValidationError as exc:
        problems += [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return problems
