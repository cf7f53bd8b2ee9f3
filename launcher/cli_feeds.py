"""Command-line ways in and out, as click commands for the `olp` group.

olp ingest FILE --feed NAME      a transcript file (JSONL, OLP-MINI, SRT, WebVTT, RSS/Atom) into
                                 olp.transcripts, paced at its timestamps or as fast as possible,
                                 straight to Kafka or through the ingest service (--url)
olp doc STREAM                   the stream's current documents (from Kafka or the read API)
olp tail                         documents as they are produced (Kafka, or the read API's SSE)
olp ingest-server                the ingest service (HTTP, WebSocket, news pollers)
olp documents-server             the document read API (materialised view, SSE, webhook)

Reads `olp.documents` (TopicDocument) and writes `olp.transcripts` (TranscriptSegment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from launcher.console import (
    cli_settings,
    console,
    friendly_errors,
    print_document,
    progress_bar,
    serve_http,
)
from olp.errors import OlpError
from olp.feeds.formats import FORMATS
from olp.service_settings import check_stream_id, documents_settings, ingest_settings
from olp.settings import Settings


def _feed_meta(settings: Settings, feed: str) -> tuple[str, str]:
    """(domain, lang) of a declared feed."""
    if feed not in settings.feeds:
        raise click.ClickException(
            f"unknown feed {feed!r}; declared feeds: {', '.join(sorted(settings.feeds))}"
        )
    config = settings.feeds[feed]
    return config.domain, config.lang


def _documents_url(settings: Settings, url: str | None) -> str:
    docs = documents_settings(settings)
    return (url or f"http://{docs.host}:{docs.port}").rstrip("/")


def _read_headers(settings: Settings) -> dict[str, str]:
    token = documents_settings(settings).read_token
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}


# --- olp ingest -----------------------------------------------------------------------------


@click.command("ingest")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--feed", default="default", show_default=True, help="Feed name from the configuration.")
@click.option("--stream-id", default=None, help="Stream id (default: the file name without suffix).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", *FORMATS]),
    default="auto",
    show_default=True,
    help="Input format; auto looks at the suffix, then the content.",
)
@click.option(
    "--pace",
    type=click.Choice(["max", "realtime"]),
    default="max",
    show_default=True,
    help="realtime: each segment when its recorded timestamp comes (relative to the first).",
)
@click.option("--speed", default=1.0, show_default=True, help="With --pace realtime: this many times faster.")
@click.option("--follow", is_flag=True, help="Keep reading lines appended to the file (JSONL, SRT, WebVTT).")
@click.option("--no-end", is_flag=True, help="Do not mark the last segment as the end of the stream.")
@click.option("--url", default=None, help="Send through the ingest service at this URL instead of to Kafka.")
@click.option("--batch", default=200, show_default=True, help="Segments per HTTP request (with --url).")
@click.option(
    "--token",
    envvar="OLP_INGEST_TOKEN",
    default=None,
    help="With --url: this sender's token (an `ingest.senders` entry allowed the feed); "
    "env OLP_INGEST_TOKEN.",
)
def ingest_cmd(
    path: Path,
    feed: str,
    stream_id: str | None,
    fmt: str,
    pace: str,
    speed: float,
    follow: bool,
    no_end: bool,
    url: str | None,
    batch: int,
    token: str | None,
) -> None:
    """Send a transcript file's segments into the pipeline, with a progress bar.

    Segment ids come from the file (see `olp.feeds.formats`), so sending a file again changes
    nothing downstream.
    """
    from olp.feeds import ReplayStats, follow_transcript, read_transcript, with_end_marker
    from olp.feeds.timing import paced

    settings: Settings = cli_settings()
    domain, lang = _feed_meta(settings, feed)
    stream = stream_id or path.stem
    try:
        check_stream_id(stream)
    except ValueError as exc:
        raise click.ClickException(f"{exc}; choose one with --stream-id") from exc
    stats = ReplayStats()
    total: int | None = None
    segments: Iterable[dict[str, Any]]
    with friendly_errors():
        if follow:
            segments = follow_transcript(path, stream, stats, fmt=fmt, feed=feed, domain=domain, lang=lang)
        else:
            loaded = list(read_transcript(path, stream, stats, fmt=fmt, feed=feed, domain=domain, lang=lang))
            if not loaded:
                raise click.ClickException(f"{path} holds no sentences")
            segments = loaded if no_end else list(with_end_marker(loaded))
            total = len(loaded)
        if pace == "realtime":
            segments = paced(segments, speed)
        sent = _send_with_bar(
            settings, segments, total, feed, url, token, 1 if pace == "realtime" or follow else batch
        )
    notes = [f"{stats.skipped_empty} empty"] if stats.skipped_empty else []
    if stats.renumbered:
        notes.append(f"{stats.renumbered} cues renumbered")
    if stats.skipped_undated:
        notes.append(f"{stats.skipped_undated} undated articles skipped")
    suffix = f" ({', '.join(notes)})" if notes else ""
    console.print(f"sent {sent} segments of stream {stream} (feed {feed}){suffix}")


def _send_with_bar(
    settings: Settings,
    segments: Iterable[dict[str, Any]],
    total: int | None,
    feed: str,
    url: str | None,
    token: str | None,
    batch: int,
) -> int:
    from launcher.clients import replay

    with progress_bar() as bar:
        task = bar.add_task("ingesting", total=total)
        if url is None:
            return int(replay(settings, segments, on_sent=lambda _s: bar.advance(task)))
        from ingest.client import IngestClient, send_all

        if not token:
            raise click.ClickException(
                "sending through the ingest service needs a sender's token: --token or OLP_INGEST_TOKEN"
            )
        client = IngestClient(url, feed, token)
        result = asyncio.run(
            send_all(client, segments, batch_size=batch, on_sent=lambda n: bar.advance(task, n))
        )
        if result.duplicates:
            console.print(f"[yellow]{result.duplicates} segments had been sent before (ignored)[/]")
        return result.accepted + result.duplicates


# --- olp doc / olp tail ---------------------------------------------------------------------


def _documents_from_kafka(settings: Settings, stream_id: str, idle_s: float = 1.5) -> list[dict[str, Any]]:
    """The stream's newest documents, reading olp.documents until it stays quiet for `idle_s`."""
    from launcher.clients import DocumentView, follow_documents

    view = DocumentView()
    quiet_since = time.monotonic()
    for doc in follow_documents(settings):
        if doc is None:
            if time.monotonic() - quiet_since > idle_s:
                break
            continue
        quiet_since = time.monotonic()
        if doc["stream_id"] == stream_id:
            view.apply(doc)
    return view.stream(stream_id)


def _get_json(url: str, headers: Mapping[str, str]) -> Any:
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise click.ClickException(f"{url}: HTTP {exc.code} {detail}") from exc
    except OSError as exc:
        raise click.ClickException(f"document service at {url} is not reachable: {exc}") from exc


@click.command("doc")
@click.argument("stream_id")
@click.option("--url", default=None, help="Ask the document service at this URL (default: read Kafka).")
@click.option("--api", is_flag=True, help="Ask the document service at its configured address.")
@click.option("--json", "as_json", is_flag=True, help="Print the documents as JSON.")
def doc_cmd(stream_id: str, url: str | None, api: bool, as_json: bool) -> None:
    """Print a stream's current document: every topic, newest version, with its aspects."""
    settings: Settings = cli_settings()
    if url or api:
        documents = _get_json(
            f"{_documents_url(settings, url)}/v1/streams/{stream_id}", _read_headers(settings)
        )["documents"]
    else:
        with friendly_errors():
            documents = _documents_from_kafka(settings, stream_id)
    if as_json:
        click.echo(json.dumps(documents, indent=2, ensure_ascii=False))
        return
    if not documents:
        raise click.ClickException(f"no documents for stream {stream_id} (yet)")
    for document in documents:
        print_document(document, full=True)


async def _sse_documents(url: str, headers: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
    """Documents from an SSE endpoint, reconnecting with Last-Event-ID when the connection drops."""
    import aiohttp

    from documents.sse import read_events

    last_id: str | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as session:
        while True:
            request_headers = {**headers, **({"Last-Event-ID": last_id} if last_id else {})}
            try:
                async with session.get(url, headers=request_headers) as resp:
                    if resp.status != 200:
                        raise OlpError(f"{url}: HTTP {resp.status} {(await resp.text())[:200]}")
                    async for event in read_events(resp.content):
                        if event.event == "document":
                            last_id = event.id
                            yield event.json()
            except (aiohttp.ClientConnectionError, TimeoutError):
                pass
            await asyncio.sleep(1)


@click.command("tail")
@click.option("--stream", "stream_id", default=None, help="Only this stream.")
@click.option(
    "--url", default=None, help="Follow the document service's events at this URL (default: Kafka)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document per line.")
def tail_cmd(stream_id: str | None, url: str | None, as_json: bool) -> None:
    """Print documents as they are produced (the newest version of each topic)."""
    from launcher.clients import DocumentView, follow_documents

    settings: Settings = cli_settings()
    view = DocumentView()

    def show(doc: Mapping[str, Any]) -> None:
        if stream_id is not None and doc["stream_id"] != stream_id:
            return
        if view.apply(doc):
            if as_json:
                click.echo(json.dumps(doc, ensure_ascii=False))
            else:
                print_document(doc)

    with friendly_errors(), contextlib.suppress(KeyboardInterrupt):
        if url is None:
            for doc in follow_documents(settings):
                if doc is not None:
                    show(doc)
        else:
            path = f"/v1/streams/{stream_id}/events" if stream_id else "/v1/events"

            async def run() -> None:
                async for doc in _sse_documents(f"{url.rstrip('/')}{path}", _read_headers(settings)):
                    show(doc)

            asyncio.run(run())


# --- services -------------------------------------------------------------------------------


@click.command("ingest-server")
def ingest_server_cmd() -> None:
    """Run the ingest service: segments over HTTP and WebSocket, and the configured news pollers."""
    from ingest.service import create_app

    settings: Settings = cli_settings()
    ingest = ingest_settings(settings)
    serve_http(settings, "olp-ingest", lambda: create_app(settings, ingest), ingest.host, ingest.port)


@click.command("documents-server")
def documents_server_cmd() -> None:
    """Run the document read API: materialised view of olp.documents, SSE and the webhook sink."""
    from documents.service import create_app

    settings: Settings = cli_settings()
    docs = documents_settings(settings)
    serve_http(settings, "olp-documents", lambda: create_app(settings, docs), docs.host, docs.port)


COMMANDS: tuple[click.Command, ...] = (ingest_cmd, doc_cmd, tail_cmd, ingest_server_cmd, documents_server_cmd)
"""Register with `for command in COMMANDS: main.add_command(command)` ."""
