"""What every `olp` command shares: the console, settings and errors as click sees them, the
process's logging, a progress bar and how a document is printed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from olp.catalog import load_catalog
from olp.errors import OlpError
from olp.settings import Settings, load_settings

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


def configure_service_logging(settings: Settings) -> None:
    """Structured, redacted logs (olp.telemetry): secrets never reach a log line, and prompts
    only with the `log_prompts` debug flag."""
    from olp.telemetry import configure_logging

    configure_logging(
        settings.log_level, settings.log_format == "json", secret_values(settings), settings.log_prompts
    )


def secret_values(settings: Settings) -> list[str]:
    """The settings' secrets plus the model API keys the catalog names (read here, at the entry
    point, like the gateway's keys)."""
    try:
        names = [m.api_key_env for m in load_catalog(settings.catalog_path).models if m.api_key_env]
    except OlpError:
        names = []
    return settings.secret_values() + [os.environ[n] for n in names if os.environ.get(n)]


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def print_document(doc: Mapping[str, Any], full: bool = False) -> None:
    state = "final" if doc["final"] else "open"  # shown as \[final]: rich reads [x] as markup
    console.print(
        f"[bold cyan]{doc['stream_id']}[/] topic {doc['topic_id']} v{doc['version']} \\[{state}] "
        f"[bold]{doc['name']}[/] (sentences {doc['first_id']}-{doc['last_id']})"
    )
    for aspect in doc["aspects"]:
        sentences = aspect["sentences"]
        if not sentences:
            continue
        console.print(f"    [green]{aspect['name']}[/] ({len(sentences)})")
        shown = sentences if full else sentences[:2]
        for sentence in shown:
            console.print(f"      [{sentence['id']}] {sentence['text']}", soft_wrap=True)
        if len(sentences) > len(shown):
            console.print(f"      ... {len(sentences) - len(shown)} more")
    if doc.get("repairs"):
        console.print(f"    [dim]repairs: {'; '.join(doc['repairs'])}[/]")
