"""The `olp` command line (spec section 7).

    olp demo                 embedded stack + sample transcript -> printed documents, then exit
    olp up                   embedded stack until Ctrl-C
    olp worker               the processors (Faust worker; one agent per role)
    olp policy-store         the Role-RL policy store (HTTP API + Kafka loop)
    olp topics ensure        create missing topics, report drift
    olp replay FILE          replay a transcript file (OLP-MINI list or JSONL) into olp.transcripts
    olp policy               show the current assignment per role

The feed commands (`olp ingest`, `olp ingest-server`, `olp documents-server`, `olp tail`,
`olp doc`) live in `launcher.cli_feeds`, `olp dlq list` / `olp dlq replay` in `launcher.cli_dlq`; both
are registered on the same group.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launcher.cli_dlq import COMMANDS as DLQ_COMMANDS
from launcher.cli_feeds import COMMANDS as FEED_COMMANDS
from launcher.console import (
    check_kafka,
    cli_settings,
    console,
    friendly_errors,
    print_document,
    progress_bar,
    safe,
    secret_values,
    serve_http,
)
from launcher.demo_report import SAMPLE, SPEECH_SENTENCES_PER_S
from olp.settings import Settings

if TYPE_CHECKING:
    from launcher.clients import DeadLetterSummary, DocumentView
    from launcher.demo_report import SentenceLags
    from launcher.stack import EmbeddedStack

PACES = {"max": 0.0, "live": 1 / SPEECH_SENTENCES_PER_S}
"""Seconds between two replayed sentences: as fast as the broker takes them, or a speaker's pace."""


@click.group()
@click.version_option(package_name="olp-role-rl")
def main() -> None:
    """Online Long-context Processing with Role-RL on Kafka."""


# --- services -------------------------------------------------------------------------------


@main.command()
@click.option(
    "--roles",
    default="all",
    show_default=True,
    help="Comma-separated roles this worker runs (chunk_splitter,topic_finder,...).",
)
def worker(roles: str) -> None:
    """Run the processors: a Faust worker with one agent per OLP role."""
    import faust

    from olp.telemetry import configure_telemetry
    from processors.app import ROLE_AGENTS, create_app

    settings = cli_settings()
    check_kafka(settings)
    configure_telemetry("olp-processors")
    chosen = ROLE_AGENTS if roles == "all" else tuple(r.strip() for r in roles.split(",") if r.strip())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with friendly_errors():
        app, _ = create_app(settings, chosen)
    from olp.telemetry import install_log_redaction, logging_config

    install_log_redaction(secret_values(settings), settings.log_prompts)
    runner = faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        logging_config=logging_config(settings.log_level, settings.log_format == "json"),
    )
    # Faust's terminal spinner sets the root logger to DEBUG so that every log call turns it:
    # each debug call of aiokafka and Faust then builds a record (a third of a busy worker's
    # CPU in bench/pipeline_throughput.py --profile). Without it the configured level holds.
    runner.spinner = None
    runner.execute_from_commandline()


@main.command("policy-store")
def policy_store() -> None:
    """Run the Role-RL policy store: learns from olp.feedback, publishes olp.policy, serves HTTP."""
    from policy_store.service import create_app

    settings = cli_settings()
    serve_http(
        settings,
        "olp-policy-store",
        lambda: create_app(settings),
        settings.policy_store_host,
        settings.policy_store_port,
    )


@main.group()
def topics() -> None:
    """Manage the pipeline's topics."""


@topics.command("ensure")
@click.option("--fix", is_flag=True, help="Also set the wanted configs on existing topics that drift.")
def topics_ensure(fix: bool) -> None:
    """Create missing topics with their partitions and configs (compaction for documents, policy
    and changelogs, retention for the rest); report drift, or fix it with --fix (idempotent).
    Exit 3 while drift remains."""
    from olp.topics import TopicNames, ensure_topics

    settings = cli_settings()
    topics = TopicNames.with_prefix(settings.topic_prefix)
    with friendly_errors():
        report = ensure_topics(
            settings.kafka.confluent_config(),
            topics.all(),
            settings.kafka.partitions,
            settings.kafka.replication_factor,
            configs=topics.configs(),
            fix=fix,
        )
    for name, status in report.items():
        console.print(f"{name:32} {status}", markup=False)
    if any(s.startswith("drift") for s in report.values()):
        sys.exit(3)


# --- data in and out ------------------------------------------------------------------------


def _load_segments(path: Path, stream_id: str, feed: str, domain: str, lang: str) -> list[dict[str, Any]]:
    from olp.feeds import ReplayStats, read_transcript, with_end_marker

    stats = ReplayStats()
    with friendly_errors():
        segments = list(
            with_end_marker(read_transcript(path, stream_id, stats, feed=feed, domain=domain, lang=lang))
        )
    if stats.skipped_empty:
        console.print(f"[yellow]skipped {stats.skipped_empty} empty sentences in {path}[/]")
    if not segments:
        raise click.ClickException(f"{path} holds no sentences")
    return segments


def _replay_with_bar(
    settings: Settings,
    segments: list[dict[str, Any]],
    pace_s: float,
    on_sent: Callable[[Mapping[str, Any]], None] | None = None,
) -> None:
    from launcher.clients import replay

    def sent(segment: Mapping[str, Any]) -> None:
        bar.advance(task)
        if on_sent is not None:
            on_sent(segment)

    with progress_bar() as bar:
        task = bar.add_task("replaying", total=len(segments))
        with friendly_errors():
            replay(settings, segments, on_sent=sent, pace_s=pace_s)


@main.command("replay")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--stream-id", default=None, help="Stream id (default: the file name).")
@click.option("--feed", default="default", show_default=True)
@click.option("--domain", default="ecommerce", show_default=True)
@click.option("--lang", default="en", show_default=True)
@click.option(
    "--pace",
    type=click.Choice(list(PACES)),
    default="max",
    show_default=True,
    help=f"live: {SPEECH_SENTENCES_PER_S} sentences per second, like a speaker.",
)
def replay_cmd(path: Path, stream_id: str | None, feed: str, domain: str, lang: str, pace: str) -> None:
    """Replay a transcript file (OLP-MINI `[[id, text], ...]` or JSONL) into olp.transcripts."""
    settings = cli_settings()
    segments = _load_segments(path, stream_id or path.stem, feed, domain, lang)
    _replay_with_bar(settings, segments, PACES[pace])
    console.print(f"replayed {len(segments)} segments of stream {segments[0]['stream_id']}")


@main.command()
@click.option("--url", default=None, help="Policy store URL (default: from settings).")
@click.option(
    "--explain",
    is_flag=True,
    help="Per role and model: the quality estimate, the evidence behind it by source, and how far "
    "it is from what the gold canaries measured.",
)
def policy(url: str | None, explain: bool) -> None:
    """Show the current assignment per role, with Q-values and the reason."""
    settings = cli_settings()
    base = url or f"http://{settings.policy_store_host}:{settings.policy_store_port}"
    request = urllib.request.Request(f"{base}/v1/policy")
    token = settings.read_token or settings.api_token
    if token is not None:
        request.add_header("Authorization", f"Bearer {token.get_secret_value()}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            data = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise click.ClickException(
                f"the policy store at {base} wants a read token: set OLP_READ_TOKEN (or OLP_API_TOKEN)"
            ) from exc
        raise click.ClickException(f"policy store at {base} answered HTTP {exc.code}") from exc
    except OSError as exc:
        raise click.ClickException(f"policy store at {base} is not reachable: {exc}") from exc
    _print_policy(data)
    if explain:
        _print_evidence(data)


def _print_policy(data: Mapping[str, Any]) -> None:
    """Each role's assignment, then the assignment of each context the learner tells apart
    (indented; the processors use it for chunks of that context)."""
    for role in data["roles"]:
        q = ", ".join(f"{m}={v:.2f}" for m, v in role["q_values"].items())
        name, model, reason = safe(role["role"]), safe(role["model"]), safe(role["reason"])
        console.print(f"  {name:22} -> [bold]{model}[/]  Q: {safe(q)}  ({reason})")
        for ctx in role.get("contexts") or ():
            q = ", ".join(f"{m}={v:.2f}" for m, v in ctx["q_values"].items())
            console.print(f"    {safe(ctx['context']):40} -> [bold]{safe(ctx['model'])}[/]  Q: {safe(q)}")


# --- the embedded stack ---------------------------------------------------------------------


@contextlib.contextmanager
def _stack(run_dir: Path, secure: bool = False) -> Iterator[Any]:
    from launcher.stack import EmbeddedStack

    stack = EmbeddedStack(run_dir=run_dir, secure=secure, log=lambda line: console.print(f"[dim]{line}[/]"))
    # SIGTERM (e.g. from a supervisor) should tear down like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with friendly_errors():
            stack.start()
        yield stack
    finally:
        stack.stop()


def _run_dir() -> Path:
    return Path(".olp") / time.strftime("run-%Y%m%d-%H%M%S")


@main.command()
@click.option(
    "--secure",
    is_flag=True,
    help="Serve the broker over mutual TLS (a TLS proxy in front of Tansu, a throwaway CA), so "
    "clients connect as to a secured cluster.",
)
def up(secure: bool) -> None:
    """Start the embedded stack and keep it running until Ctrl-C."""
    from launcher.stack import write_private

    with _stack(_run_dir(), secure) as stack, contextlib.suppress(KeyboardInterrupt):
        console.print("[bold]stack is up[/]; point clients at it with:")
        for key, value in stack.env.items():
            if key != "OLP_API_TOKEN" and "PASSWORD" not in key:
                console.print(f"  export {key}={value}", markup=False, soft_wrap=True)
        if stack.secure_broker is not None:  # the key's password by its file, never shown
            for line in stack.secure_broker.client_instructions().splitlines():
                if "PASSWORD" in line:
                    console.print(f"  {line}", markup=False, soft_wrap=True)
        console.print(f"  (API token in {stack.run_dir}/.api-token)  Ctrl-C stops everything.")
        write_private(stack.run_dir / ".api-token", stack.env["OLP_API_TOKEN"])
        while True:
            stack.check_alive()
            time.sleep(1)


@main.command()
@click.option(
    "--transcript",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=SAMPLE,
    show_default="the bundled live-commerce sample",
    help="OLP-MINI list or JSONL file.",
)
@click.option("--stream-id", default="demo-live-1", show_default=True)
@click.option(
    "--pace",
    type=click.Choice(list(PACES)),
    default="max",
    show_default=True,
    help=f"live: {SPEECH_SENTENCES_PER_S} sentences per second, like a speaker; the lag of the final "
    "documents behind the speaker is what to watch then.",
)
@click.option(
    "--timeout", "timeout_s", default=1800, show_default=True, help="Give up after this many seconds."
)
def demo(transcript: Path, stream_id: str, pace: str, timeout_s: int) -> None:
    """Embedded stack + a live-commerce transcript -> organised documents, printed as produced;
    then the real-time factor, the lag, the quality, the memory and the model calls per chunk."""
    from launcher import demo_report as report
    from olp.catalog import load_catalog

    started = time.monotonic()
    segments = _load_segments(transcript, stream_id, "default", "ecommerce", "en")
    with _stack(_run_dir()) as stack:
        assert stack.settings is not None
        lags = report.SentenceLags()
        with report.MemorySampler(lambda: report.stack_processes(stack.pids())) as memory:
            first_segment = time.monotonic()  # models are loaded: the real-time clock starts here
            view = _replay_and_follow(stack, segments, PACES[pace], lags, timeout_s)
            processing_s = time.monotonic() - first_segment
        documents = view.stream(stream_id)
        console.rule("organised transcript")
        for doc in documents:
            print_document(doc, full=True)
        console.rule("policy")
        policy = stack.policy()
        _print_policy(policy)
        report.print_calibration(report.calibrations(policy))
        console.rule("measured")
        catalog = load_catalog(stack.settings.catalog_path)
        encoders = {m.name for m in catalog.models if m.kind == "encoder"}
        report.print_calls(report.call_table(report.read_outcomes(stack.settings), stream_id, encoders))
        report.print_memory(memory.peak)
        report.print_speed(len(segments), processing_s, report.summarise_lags(lags.lags()), pace == "live")
        report.print_quality(documents, transcript)
        dead = len(view.dead_lettered.get(stream_id, ()))
        console.print(
            f"[bold green]done[/]: {len(segments)} sentences -> {len(documents)} topics "
            + (f"({dead} sentences dead-lettered, see above) " if dead else "")
            + f"in {time.monotonic() - started:.0f}s; logs in {stack.run_dir}"
        )


class _ReaderGone(Exception):
    """The demo stopped following (an error, Ctrl-C): the replay thread stops too."""


def _replay_and_follow(
    stack: EmbeddedStack, segments: list[dict[str, Any]], pace_s: float, lags: SentenceLags, timeout_s: int
) -> DocumentView:
    """Replay the segments in a thread while printing the stream's documents as they arrive;
    returns the `DocumentView` once every sentence lies in a final document or a dead letter.
    `lags` (`launcher.demo_report.SentenceLags`) learns when each sentence left and was final."""
    from launcher.clients import DeadLetterSummary, DocumentView, follow_results

    settings = stack.settings
    assert settings is not None
    stream_id = str(segments[0]["stream_id"])
    segment_ids = [int(s["segment_id"]) for s in segments]
    view, stopping = DocumentView(), threading.Event()
    deadline = time.monotonic() + timeout_s

    def sent(segment: Mapping[str, Any]) -> None:
        lags.sent(int(segment["segment_id"]), time.monotonic())
        if stopping.is_set():
            raise _ReaderGone

    with ThreadPoolExecutor(1, "replay") as pool:
        replaying = pool.submit(_replay_with_bar, settings, segments, pace_s, sent)
        console.print("[bold]documents[/] (newest version of each topic, as the roles produce them)")
        try:
            for result in follow_results(settings):
                if isinstance(result, DeadLetterSummary):
                    if result.stream_id == stream_id:
                        view.apply_dead_letter(result)
                        _print_dead_letter(result)
                elif result is not None and result["stream_id"] == stream_id and view.apply(result):
                    lags.document(result, time.monotonic())
                    print_document(result)
                if replaying.done():
                    replaying.result()  # the replay's error, if it failed
                if view.covers(stream_id, segment_ids):
                    return view
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        f"no complete documents after {timeout_s}s; logs in {stack.run_dir}"
                    )
                stack.check_alive()
        finally:
            stopping.set()
    raise AssertionError("follow_results ended")  # it follows until told to stop


def _print_dead_letter(letter: DeadLetterSummary) -> None:
    ids = "a record"
    if letter.segment_ids:
        ids = f"sentences {min(letter.segment_ids)}-{max(letter.segment_ids)}"
    console.print(f"[bold red]dead letter[/] ({safe(letter.stage)}): {ids}: {safe(letter.error[:300])}")


EVIDENCE_SOURCES = ("canary", "judge", "agreement", "downstream", "human", "failure", "unlabelled")


def _print_evidence(data: Mapping[str, Any]) -> None:
    """Where each quality estimate comes from; `|est-canary|` is its distance from the truth the
    gold canaries measured (exact labels), the learner's calibration."""
    from rich.table import Table

    table = Table("role", "model", "quality (k)", *EVIDENCE_SOURCES, "canary k", "|est-canary|")
    for role in data["roles"]:
        for model, ev in sorted((role.get("evidence") or {}).items()):
            canary, gap = ev.get("canary_mean"), ev.get("canary_gap")
            table.add_row(
                safe(role["role"]),
                safe(model),
                f"{ev['quality']:+.2f} ± {ev['quality_sd']:.2f}",
                *(f"{ev.get(source, 0):g}" for source in EVIDENCE_SOURCES),
                "" if canary is None else f"{canary:+.2f}",
                "" if gap is None else f"{gap:.2f}",
            )
    console.print(table)


for _command in (*FEED_COMMANDS, *DLQ_COMMANDS):
    main.add_command(_command)
main.add_command(__import__("launcher.cli_models", fromlist=["models"]).models)
