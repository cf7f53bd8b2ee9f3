"""The model catalog (spec section 5): which models exist, what they cost, how long to wait for
them and how many calls each takes at once. Loaded from YAML.

Two kinds of model: `chat`, an OpenAI-compatible chat-completions endpoint (`base_url`), and
`encoder`, a sentence-embedding model run in the processor's own process (`encoder`: its ONNX
file and tokenizer). An encoder can fill the roles in `ENCODER_ROLES`; it writes no text, so it
cannot judge.

API keys are never in the catalog: a model names the *environment variable* that holds its key,
resolved by the model gateway when it calls.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from olp.errors import ConfigError

StructuredOutput = Literal["json_schema", "llama_cpp", "json_object", "none"]
"""How a model is asked for JSON that follows the role's schema:
`json_schema`: OpenAI's standard `{"type": "json_schema", "json_schema": {name, schema, strict}}`
  (OpenAI, Azure OpenAI, vLLM, Ollama, LiteLLM, LM Studio, llama.cpp's llama-server);
`llama_cpp`: llama-cpp-python's own `{"type": "json_object", "schema": ...}` (the embedded pool);
`json_object`: plain JSON mode, no schema (the prompt describes the shape);
`none`: no `response_format` at all; the defensive parser reads whatever JSON the answer holds."""

TokenLimitField = Literal["max_tokens", "max_completion_tokens"]
ModelKind = Literal["chat", "encoder"]
ENCODER_ROLES = frozenset({"topic_finder", "topic_locator", "relationship_checker", "content_organizer"})
"""The roles an encoder model can fill (processors/encoder.py): naming topics with phrases the
speaker says (it cannot invent a name: a learned switch escalates to a chat model), locating a
named topic, same topic or not, the aspect of a sentence."""


class AzureDeployment(BaseModel):
    """Azure OpenAI: the deployment's URL (`{base_url}/openai/deployments/{deployment}/...`),
    its `api-version` query and the `api-key` header instead of a bearer token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deployment: str = Field(min_length=1, description="The deployment name chosen in Azure.")
    api_version: str = Field(min_length=1, description="The `api-version` query, e.g. 2024-10-21.")


class EncoderFiles(BaseModel):
    """Where a local sentence-embedding model is: an ONNX file (mean-pooled token embeddings,
    e.g. all-MiniLM-L6-v2) and the Hugging Face `tokenizer.json` it was trained with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_file: str = Field(min_length=1, description="Path of the ONNX model file.")
    tokenizer_file: str = Field(min_length=1, description="Path of its `tokenizer.json`.")
    sha256: str | None = Field(
        None, pattern="^[0-9a-f]{64}$", description="Of the model file; checked before it is loaded."
    )
    max_tokens: int = Field(128, ge=8, description="Tokens of one sentence that are embedded.")
    threads: int = Field(1, ge=1, description="onnxruntime intra-op threads.")


class ModelSpec(BaseModel):
    """One model: a chat endpoint (`base_url`) or a local encoder (`encoder`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Catalog name, used in assignments and feedback.")
    kind: ModelKind = Field(
        "chat", description="`chat`: a chat-completions endpoint; `encoder`: a local embedding model."
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1 (kind chat only)."
    )
    encoder: EncoderFiles | None = Field(None, description="The local model's files (kind encoder only).")
    served_name: str | None = Field(None, description="`model` sent in the request; default: name.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    price_in_per_mtok: float = Field(0.0, ge=0, description="US dollars per 1M input tokens.")
    price_out_per_mtok: float = Field(0.0, ge=0, description="US dollars per 1M output tokens.")
    context_window: int = Field(8192, gt=0, description="Tokens the model accepts in total.")
    timeout_s: float = Field(60.0, gt=0, description="Per-attempt request timeout.")
    max_concurrency: int = Field(4, ge=1, description="Calls in flight at once from one process.")
    max_output_tokens: int = Field(512, ge=1)
    structured_output: StructuredOutput = Field(
        "json_schema", description="The request form for structured output (see StructuredOutput)."
    )
    token_limit_field: TokenLimitField = Field(
        "max_tokens",
        description="The field that carries the output limit: reasoning models (OpenAI o-series,"
        " gpt-5) accept only `max_completion_tokens`.",
    )
    temperature: float | None = Field(
        0.0, ge=0, le=2, description="Sampling temperature; null: not sent (reasoning models reject it)."
    )
    azure: AzureDeployment | None = Field(None, description="Set for an Azure OpenAI deployment.")
    verify_tls: bool = Field(True, description="Verify the endpoint's TLS certificate.")
    logprobs: bool = Field(
        False,
        description="Ask for token logprobs (`logprobs: true`) to report the answer's confidence;"
        " only for servers that accept it (OpenAI chat models, llama.cpp's llama-server).",
    )

    judge: bool = Field(
        False,
        description="May sit on the board of judges (processors/judge.py) when `judges.models` is unset.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_retired_fields(cls, data: Any) -> Any:
        """A catalog written for the boolean `json_schema` fails with the field that replaced it."""
        if isinstance(data, dict) and "json_schema" in data:
            raise ValueError(
                "`json_schema` was replaced by `structured_output`: use `structured_output: llama_cpp`"
                " for a llama.cpp server (the form `json_schema: true` sent), `json_schema` for the"
                " OpenAI standard (OpenAI, Azure, vLLM, Ollama, LiteLLM) or `none`"
            )
        return data

    @model_validator(mode="after")
    def _kind_has_its_fields(self) -> ModelSpec:
        if self.kind == "chat" and not self.base_url:
            raise ValueError(
                f"model {self.name}: a chat model needs `base_url` (its OpenAI-compatible endpoint)"
            )
        if self.kind == "chat" and self.encoder is not None:
            raise ValueError(f"model {self.name}: `encoder` files belong to `kind: encoder` models")
        if self.kind == "encoder":
            if self.encoder is None:
                raise ValueError(
                    f"model {self.name}: an encoder model needs `encoder: {{model_file, tokenizer_file}}`"
                    " (its local ONNX file and tokenizer.json) instead of a base_url"
                )
            if self.base_url is not None or self.azure is not None:
                raise ValueError(f"model {self.name}: an encoder runs locally; remove `base_url`/`azure`")
            if self.judge:
                raise ValueError(f"model {self.name}: an encoder cannot judge (it writes no text)")
        return self

    @property
    def provider_name(self) -> str:
        """`gen_ai.provider.name` of its calls: the API flavour spoken, which for every
        OpenAI-compatible server is OpenAI's unless it is an Azure deployment."""
        return "azure.ai.openai" if self.azure is not None else "openai"

    @property
    def is_local(self) -> bool:
        """Served on this machine (an encoder, or a loopback host): what it is sent never leaves it."""
        if self.kind == "encoder":
            return True
        host = urlsplit(self.base_url or "").hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def request_model(self) -> str:
        return self.served_name or self.name

    def can_fill(self, role: str) -> bool:
        return self.kind == "chat" or role in ENCODER_ROLES

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in_per_mtok + tokens_out * self.price_out_per_mtok) / 1e6


class Catalog(BaseModel):
    """All models, and optionally which of them may fill each role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[ModelSpec, ...]
    roles: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Role -> allowed model names; a role not listed may use all."
    )

    @model_validator(mode="after")
    def _names_are_known(self) -> Catalog:
        names = [m.name for m in self.models]
        if not names:
            raise ValueError("the catalog lists no models")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names in catalog: {names}")
        for role, pool in self.roles.items():
            unknown = set(pool) - set(names)
            if unknown:
                raise ValueError(f"role {role} names unknown models {sorted(unknown)}")
            unfit = [m.name for m in self.models if m.name in pool and not m.can_fill(role)]
            if unfit:
                raise ValueError(f"role {role} cannot be filled by the encoder models {unfit}")
        if all(m.kind == "encoder" for m in self.models):
            raise ValueError("the catalog lists no chat model: the Topic Finder needs one to name topics")
        return self

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise ConfigError(f"model {name!r} is not in the catalog")

    def pool(self, role: str) -> tuple[str, ...]:
        """The models that may fill `role`: those listed for it, else every model that can."""
        return self.roles.get(role) or tuple(m.name for m in self.models if m.can_fill(role))


def load_catalog(path: Path) -> Catalog:
    """Read and validate a catalog file, with one readable error for any problem."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return Catalog.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read model catalog {path}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"invalid model catalog {path}:\n{exc}") from exc


def dump_catalog(catalog: Catalog, path: Path) -> None:
    path.write_text(yaml.safe_dump(catalog.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
