"""What every `olp` command shares: the console, settings and errors as click sees them, the
process's logging, a progress bar and how a document is printed."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from olp.catalog import load_catalog
from olp.errors import OlpError
from olp.service_settings import documents_settings, ingest_settings
from olp.settings import Settings, load_settings

if TYPE_CHECKING:
    from aiohttp import web

console = Console(highlight=False)


def cli_settings() -> Settings:
    """The settings, or a click error saying what is wrong with them."""
    try:
        return load_settings()
    except OlpError as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """OlpError as a one-line click error instead of a traceback."""
    try:
        yield
    except OlpError as exc:
        raise click.ClickException(str(exc)) from exc


def check_kafka(settings: Settings) -> None:
    """Before a service starts: a wrong CA, certificate or password stops it at once with the
    setting to fix (Kafka clients would retry it silently forever); a broker that does not answer
    yet is only a warning, since the clients keep retrying until it is back."""
    from olp.errors import UnavailableError
    from olp.kafka_check import check_connection

    try:
        check_connection(settings.kafka)
    except UnavailableError as exc:
        console.print(f"[yellow]warning:[/] {escape(str(exc))}; starting anyway, the clients keep retrying")
    except OlpError as exc:
        raise click.ClickException(str(exc)) from exc


def serve_http(
    settings: Settings, service: str, build: Callable[[], web.Application], host: str, port: int
) -> None:
    """Run one of the HTTP services the way each of them runs: redacted logs, the Kafka settings
    checked before anything starts, telemetry, a one-line error instead of a traceback."""
    from aiohttp import web

    from olp.telemetry import configure_telemetry

    configure_service_logging(settings)
    check_kafka(settings)
    configure_telemetry(service)
    with friendly_errors():
        app = build()
    web.run_app(app, host=host, port=port, print=None)


def configure_service_logging(settings: Settings) -> None:
    """Structured, redacted logs (olp.telemetry): secrets never reach a log line, and prompts
    only with the `log_prompts` debug flag."""
    from olp.telemetry import configure_logging

    configure_logging(
        settings.log_level, settings.log_format == "json", secret_values(settings), settings.log_prompts
    )


def secret_values(settings: Settings) -> list[str]:
    """The settings' secrets, the feed services' tokens and webhook secret, plus the model API
    keys the catalog names (read here, at the entry point, like the gateway's keys)."""
    try:
        names = [m.api_key_env for m in load_catalog(settings.catalog_path).models if m.api_key_env]
    except OlpError:
        names = []
    return (
        settings.secret_values()
        + service_secrets(settings)
        + [os.environ[n] for n in names if os.environ.get(n)]
    )


def service_secrets(settings: Settings) -> list[str]:
    ingest, documents = ingest_settings(settings), documents_settings(settings)
    webhook = documents.webhook
    found = [sender.token for sender in ingest.senders.values()] + [documents.read_token]
    found += [webhook.token, webhook.secret] if webhook is not None else []
    return [secret.get_secret_value() for secret in found if secret is not None]


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
"""C0/C1 control characters (ESC starts a terminal escape sequence) and the invisible or
bidirectional-override marks that make a line read other than it is; tab and newline stay."""


def safe(value: Any) -> str:
    """Text from a transcript, a document or a server, fit for `console.print`: control
    characters removed and rich markup escaped, so `[/bold]` is printed, not interpreted."""
    return escape(CONTROL.sub("", str(value)))


def print_document(doc: Mapping[str, Any], full: bool = False) -> None:
    state = "final" if doc["final"] else "open"
    console.print(
        f"[bold cyan]{safe(doc['stream_id'])}[/] topic {safe(doc['topic_id'])} v{safe(doc['version'])} "
        f"{safe('[' + state + ']')} [bold]{safe(doc['name'])}[/] "
        f"(sentences {safe(doc['first_id'])}-{safe(doc['last_id'])})"
    )
    for aspect in doc["aspects"]:
        sentences = aspect["sentences"]
        if not sentences:
            continue
        console.print(f"    [green]{safe(aspect['name'])}[/] ({len(sentences)})")
        shown = sentences if full else sentences[:2]
        for sentence in shown:
            number = safe(f"[{sentence['id']}]")
            console.print(f"      {number} {safe(sentence['text'])}", soft_wrap=True)
        if len(sentences) > len(shown):
            console.print(f"      ... {len(sentences) - len(shown)} more")
    if doc.get("repairs"):
        console.print(f"    [dim]repairs: {safe('; '.join(doc['repairs']))}[/]")
