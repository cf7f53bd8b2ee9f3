"""`olp models check`: does each catalog model take the requests the roles will send?

`--dry-run` prints, per catalog model and role, the exact request a role call sends (built by
`processors.chat_request.build_request`, as the gateway builds it; API keys masked), without any
network. Without it, one tiny structured request goes to each model and a table tells whether it
answered, how fast, whether it followed the schema, and what the provider said, with the catalog
change that fixes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from olp.catalog import Catalog, ModelSpec, load_catalog
from olp.errors import ConfigError, ModelCallError

PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "boolean"}},
    "required": ["answer"],
    "additionalProperties": False,
}
PROBE_MESSAGES = [
    {"role": "system", "content": "You answer with JSON only."},
    {
        "role": "user",
        "content": 'Is the sky blue on a clear day? Answer with JSON: {"answer": true} or {"answer": false}.',
    },
]
PROBE_MAX_TOKENS = 200
"""Room for a reasoning model's thinking before its few visible tokens."""

_SAMPLE = [
    "Welcome back everyone, today we start with the silk scarf.",
    "This scarf is pure mulberry silk and it costs twenty dollars.",
    "Order now, only ten are left.",
    "Next up is the leather wallet.",
    "The wallet has six card slots and costs thirty dollars.",
]


def sample_role_calls() -> dict[str, tuple[list[dict[str, str]], dict[str, Any]]]:
    """Role -> (messages, answer schema) of one call per LLM role on a five-sentence chunk, built
    with the roles' own prompt and schema functions."""
    from processors import content_organizer, judge, relationship_checker, topic_finder, topic_locator
    from processors.domain import Sentence, TopicSpan

    chunk = [Sentence(100 + i, text) for i, text in enumerate(_SAMPLE)]
    ids = [s.id for s in chunk]
    topics = ["Silk scarf", "Leather wallet"]
    aspects = ["Opening", "Price", "Order Urging", "Product Description"]
    scarf, wallet = TopicSpan("Silk scarf", 100, 102), TopicSpan("Leather wallet", 103, 104)
    calls = {
        "topic_finder": (
            topic_finder.build_prompt(chunk, "ecommerce", "en"),
            topic_finder.answer_schema("ecommerce"),
        ),
        "topic_locator": (
            topic_locator.build_batch_prompt(chunk, topics, "ecommerce", "en"),
            topic_locator.batch_answer_schema(topics, ids),
        ),
        "relationship_checker": (
            relationship_checker.build_prompt(chunk, scarf, wallet, "ecommerce", "en"),
            relationship_checker.answer_schema(),
        ),
        "content_organizer": (
            content_organizer.build_prompt(chunk, chunk[:3], "Silk scarf", aspects, "ecommerce", "en"),
            content_organizer.answer_schema(aspects, ids[:3]),
        ),
    }
    messages, schema = calls["topic_finder"]
    answer = '{"topics": ["Silk scarf", "Leather wallet"]}'
    calls["judge"] = (judge.build_prompt(messages, answer), judge.answer_schema(schema))
    return {role: ([dict(m) for m in msgs], dict(sch)) for role, (msgs, sch) in calls.items()}


def dry_run_requests(catalog: Catalog, roles: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per model and role: the URL, headers (keys masked) and body a role call sends."""
    from processors.chat_request import build_request

    calls = sample_role_calls()
    out = []
    for spec in (m for m in catalog.models if m.kind == "chat"):  # an encoder is sent no request
        for role, (messages, schema) in calls.items():
            if roles and role not in roles:
                continue
            request = build_request(spec, messages, schema, api_key="***" if spec.api_key_env else None)
            out.append(
                {
                    "model": spec.name,
                    "role": role,
                    "url": request.url,
                    "headers": dict(request.headers),
                    "body": request.body,
                }
            )
    return out


@dataclass(frozen=True, slots=True)
class ProbeResult:
    model: str
    reachable: bool
    latency_ms: float | None
    structured: str
    """"yes", "no: <what came back>" or "-" (no answer)."""
    fix: str = ""
    """The catalog change that fixes the problem, in plain words; empty when all is well."""
    error: str = ""
    """What the provider (or the connection) said."""

    @property
    def ok(self) -> bool:
        return self.reachable and self.structured == "yes"


def structured_verdict(text: str) -> str:
    """Whether a probe answer follows PROBE_SCHEMA."""
    try:
        value = json.loads(text)
    except ValueError:
        return f"no: not JSON ({text[:40]!r})"
    if isinstance(value, dict) and set(value) == {"answer"} and isinstance(value["answer"], bool):
        return "yes"
    return f"no: {json.dumps(value)[:40]}"


async def probe(catalog: Catalog, api_keys: Mapping[str, str]) -> list[ProbeResult]:
    """One tiny structured request per model, all at once, no retries."""
    import aiohttp

    from processors.model_gateway import ModelGateway

    async with aiohttp.ClientSession(trust_env=True) as session:
        gateway = ModelGateway(catalog, session, api_keys, attempts=1)
        chat = [spec for spec in catalog.models if spec.kind == "chat"]  # encoders run in-process
        return list(await asyncio.gather(*(_probe_one(gateway, spec) for spec in chat)))


async def _probe_one(gateway: Any, spec: ModelSpec) -> ProbeResult:
    from processors.model_gateway import RequestRejected, catalog_fix

    started = time.perf_counter()
    try:
        done = await gateway.complete(spec.name, PROBE_MESSAGES, PROBE_SCHEMA, PROBE_MAX_TOKENS)
    except RequestRejected as exc:
        ms = (time.perf_counter() - started) * 1000
        fix = catalog_fix(spec, exc.error) or "see the provider's message"
        return ProbeResult(spec.name, True, ms, "-", fix, exc.error.describe())
    except ModelCallError as exc:
        fix = "check base_url, the network and HTTPS_PROXY"
        return ProbeResult(spec.name, False, None, "-", fix, str(exc))
    verdict = structured_verdict(done.text)
    fix = ""
    if verdict != "yes" and spec.structured_output in ("json_object", "none"):
        fix = f"{spec.structured_output} sends no schema: try structured_output: json_schema"
    elif verdict != "yes":
        fix = "the endpoint ignored the schema: try structured_output: json_schema or llama_cpp"
    return ProbeResult(spec.name, True, done.latency_ms, verdict, fix)


def print_results(console: Console, results: Sequence[ProbeResult]) -> None:
    """The table, then each provider's message in full (too long for a cell)."""
    table = Table("model", "reachable", "latency", "structured output", "fix")
    for r in results:
        latency = f"{r.latency_ms:.0f} ms" if r.latency_ms is not None else "-"
        table.add_row(r.model, "yes" if r.reachable else "no", latency, r.structured, r.fix or "-")
    console.print(table)
    for r in results:
        if r.error:
            console.print(f"{r.model}: {r.error}", soft_wrap=True)


@click.group()
def models() -> None:
    """Check the model catalog against its endpoints."""


@models.command("check")
@click.option(
    "--catalog",
    "catalog_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Catalog file (default: OLP_CATALOG_PATH or the embedded one).",
)
@click.option("--dry-run", is_flag=True, help="Print the requests a role call sends; no network.")
@click.option("--role", "roles", multiple=True, help="Only these roles (--dry-run); repeatable.")
def check(catalog_path: Path | None, dry_run: bool, roles: tuple[str, ...]) -> None:
    """Probe every catalog model (or, with --dry-run, print what each would be sent)."""
    try:
        catalog = load_catalog(catalog_path or _default_catalog_path())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if dry_run:
        click.echo(json.dumps(dry_run_requests(catalog, roles), indent=2, ensure_ascii=False))
        return
    results = asyncio.run(probe(catalog, dict(os.environ)))
    print_results(Console(highlight=False, width=200), results)
    if not all(r.ok for r in results):
        raise SystemExit(1)


def _default_catalog_path() -> Path:
    from olp.settings import load_settings

    return load_settings().catalog_path
