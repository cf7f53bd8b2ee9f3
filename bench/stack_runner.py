"""Transcripts through the embedded stack, one model choice at a time, for the quality and speed
benchmarks (spec section 9): bench/olp_mini_rtf.py and bench/segmentation_eval.py `--stack`.

A *model choice* says who fills each role (`role_pins`): `free` leaves every role to Role-RL
(the default pool: the local LLM and the encoder, the learner picks per role and context), `llm`
pins every role to the local LLM, `encoder` pins the roles an encoder can fill
(`olp.catalog.ENCODER_ROLES`, the Topic Finder among them) to the encoder. Pins go through the
policy store's operator API (`PUT /v1/policy/{role}/pin`), as an operator would set them.

`ChoiceRun` starts a fresh `launcher.stack.EmbeddedStack` per choice (the learner starts from
nothing each time), with the feeds given as `OLP_FEEDS` (each may name its gold canaries), then
processes streams one after the other: the clock of a stream runs from its first segment sent to
the moment every sentence lies in a final document (model loading excluded, as in `olp demo`).
At the end it reads every RoleOutcome of `olp.feedback`: the canaries' exact scores per role,
model and language (`canary_scores`) and which model served the real chunks (`model_shares`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.clients import DeadLetterSummary, DocumentView, follow_results, follow_topic, replay
from launcher.console import console
from launcher.embedded import installed_encoders, installed_local_models
from launcher.stack import EmbeddedStack
from olp.catalog import ENCODER_ROLES
from olp.errors import OlpError
from olp.settings import ROLES, Settings
from olp.topics import TopicNames
from processors.evidence import is_canary
from schemas.codec import make_codec

CHOICES = ("free", "llm", "encoder")
"""Model choices, in the order the benchmarks run them (module docstring)."""
SENTENCES_PER_SECOND = 2.5
"""The live pace: ASR sentences a live host speaks per second (RTF 1 keeps up with it)."""


def role_pins(choice: str, llm: str, encoder: str | None) -> dict[str, str]:
    """Role -> pinned model for a choice; empty for `free` (the learner decides)."""
    if choice == "free":
        return {}
    if choice == "llm":
        return dict.fromkeys(ROLES, llm)
    if choice == "encoder":
        if encoder is None:
            raise OlpError("the `encoder` choice needs an installed encoder (make install)")
        return {role: encoder if role in ENCODER_ROLES else llm for role in ROLES}
    raise OlpError(f"unknown model choice {choice!r}; expected one of {', '.join(CHOICES)}")


def rtf(sentences: int, wall_s: float) -> float:
    """Seconds of transcript (at the live pace) per second of wall time."""
    return (sentences / SENTENCES_PER_SECOND) / wall_s if wall_s > 0 else float("inf")


# --- what the feedback says (pure) --------------------------------------------------------------


def canary_scores(outcomes: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], tuple[float, int]]:
    """(role, model, lang) -> (mean canary quality k in [-1, 1], canary calls scored)."""
    got: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for o in outcomes:
        if o.get("source") == "canary" and o.get("quality") is not None:
            got[(str(o["role"]), str(o["model"]), str(o["lang"]))].append(float(o["quality"]))
    return {key: (sum(v) / len(v), len(v)) for key, v in sorted(got.items())}


def model_shares(outcomes: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """(role, lang) -> model -> share of the calls on real chunks (canaries left out): the
    learner's choice per role and language as the processors acted on it."""
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        if o.get("source") == "processor" and not is_canary(str(o.get("stream_id") or "")):
            counts[(str(o["role"]), str(o["lang"]))][str(o["model"])] += 1
    return {key: {m: n / sum(c.values()) for m, n in c.most_common()} for key, c in sorted(counts.items())}


ROLE_COLUMNS = {
    "topic_finder": "finder",
    "topic_locator": "locator",
    "relationship_checker": "checker",
    "content_organizer": "organizer",
}
"""Short role names for the columns of the summary tables."""


def shares_text(shares: Mapping[str, float]) -> str:
    """'minilm-l6-int8 80%, smollm2-135m 20%': the models of one role, most used first."""
    return ", ".join(f"{m} {s:.0%}" for m, s in shares.items())


def role_canary_cells(
    scores: Mapping[tuple[str, str, str], tuple[float, int]], lang: str | None = None
) -> list[str]:
    """Per role (ROLES order): 'k (n)', the canary score over every model, weighted by calls,
    in one language (None: all); '-' for a role no canary scored."""
    cells = []
    for role in ROLES:
        got = [(k, n) for (r, _, lg), (k, n) in scores.items() if r == role and lang in (None, lg)]
        calls = sum(n for _, n in got)
        cells.append(f"{sum(k * n for k, n in got) / calls:+.2f} ({calls})" if calls else "-")
    return cells


def print_tables(*tables: Any) -> None:
    """Rich tables, wide enough for their columns when the output is a file, not a terminal
    (rich caps a print's width at its console's, 80 columns for a file)."""
    from rich.console import Console

    out = console if console.is_terminal else Console(width=160)
    for table in tables:
        out.print(table)


def covered(documents: Sequence[Mapping[str, Any]], segment_ids: Iterable[int]) -> int:
    """Sentences lying in a final document (the progress of one stream)."""
    spans = [(int(d["first_id"]), int(d["last_id"])) for d in documents if d["final"]]
    return sum(1 for i in segment_ids if any(a <= i <= b for a, b in spans))


# --- the stack ---------------------------------------------------------------------------------


@dataclass
class StreamResult:
    stream_id: str
    sentences: int
    wall_s: float
    documents: list[dict[str, Any]]
    dead_lettered: int
    complete: bool = True
    """False when the time limit ended the wait: `documents` are what had arrived by then."""

    @property
    def rtf(self) -> float:
        return rtf(self.sentences, self.wall_s)


@dataclass
class ChoiceRun:
    """The embedded stack under one model choice: `with ChoiceRun(...) as run: run.process(...)`."""

    choice: str
    run_dir: Path
    feeds: Mapping[str, Mapping[str, Any]]
    """`OLP_FEEDS`: feed name -> FeedSettings fields (domain, lang, chunk_size, canaries, ...)."""
    log: Callable[[str], None] = print
    stack: EmbeddedStack | None = None
    pins: dict[str, str] = field(default_factory=dict)

    def __enter__(self) -> ChoiceRun:
        llms, encoders = installed_local_models(), installed_encoders()
        if not llms:
            raise OlpError("no local model installed (make install)")
        # A cold learner each run: a policy snapshot left by an earlier run would start this one
        # with that run's estimates, and its figures would depend on what ran before.
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.pins = role_pins(self.choice, llms[0], encoders[0] if encoders else None)
        # The stack's children take their settings from the environment, as in production.
        os.environ["OLP_FEEDS"] = json.dumps({k: dict(v) for k, v in self.feeds.items()}, default=str)
        self.stack = EmbeddedStack(run_dir=self.run_dir, log=self.log)
        try:
            self.stack.start()
            for role, model in self.pins.items():
                self._pin(role, model)
            if self.pins:
                time.sleep(2.0)  # the worker reads the new assignments from olp.assignments
        except BaseException:
            self.stack.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.stack is not None:
            self.stack.stop()
        os.environ.pop("OLP_FEEDS", None)

    @property
    def settings(self) -> Settings:
        assert self.stack is not None and self.stack.settings is not None
        return self.stack.settings

    def _pin(self, role: str, model: str) -> None:
        assert self.stack is not None
        request = urllib.request.Request(
            f"{self.stack.api_url}/v1/policy/{role}/pin",
            json.dumps({"model": model}).encode(),
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.stack.env['OLP_API_TOKEN']}",
            },
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
        self.log(f"pinned      {role} -> {model}")

    def process(
        self,
        segments: Sequence[Mapping[str, Any]],
        timeout_s: float,
        on_progress: Callable[[int], None] = lambda _n: None,
    ) -> StreamResult:
        """Replay one stream at once and wait until every sentence is in a final document (or a
        dead letter), at most `timeout_s` (then the result is marked incomplete, so one slow
        stream does not lose the others); `on_progress` gets the sentences covered so far."""
        assert self.stack is not None
        stream_id = str(segments[0]["stream_id"])
        ids = [int(s["segment_id"]) for s in segments]
        view, started, complete = DocumentView(), time.monotonic(), True
        replay(self.settings, segments)
        for result in follow_results(self.settings):
            if isinstance(result, DeadLetterSummary):
                if result.stream_id == stream_id:
                    view.apply_dead_letter(result)
            elif result is not None and result["stream_id"] == stream_id and view.apply(result):
                on_progress(covered(view.stream(stream_id), ids))
            if view.covers(stream_id, ids):
                break
            if time.monotonic() - started > timeout_s:
                complete = False
                break
            self.stack.check_alive()
        wall = time.monotonic() - started
        dead = len(view.dead_lettered.get(stream_id, ()))
        return StreamResult(stream_id, len(ids), wall, view.stream(stream_id), dead, complete)

    def feedback(self, idle_s: float = 10.0) -> list[dict[str, Any]]:
        """Every RoleOutcome on olp.feedback so far, read until `idle_s` pass without a new one
        (a canary sent after a stream's last chunk is still being answered)."""
        topics = TopicNames.with_prefix(self.settings.topic_prefix)
        codec = make_codec(self.settings.schema_registry_url)
        outcomes: list[dict[str, Any]] = []
        last = time.monotonic()
        for msg in follow_topic(self.settings, topics.feedback):
            if msg is not None:
                outcomes.append(codec.decode(msg.value(), "RoleOutcome", topic=topics.feedback))
                last = time.monotonic()
            elif time.monotonic() - last > idle_s:
                break
        return outcomes

    def policy(self) -> dict[str, str]:
        """Role -> the learner's role-level choice now (GET /v1/policy)."""
        assert self.stack is not None
        roles: list[dict[str, Any]] = list(self.stack.policy()["roles"])  # type: ignore[call-overload]
        return {str(r["role"]): str(r["model"]) for r in roles}

    def summary(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """What a bench keeps of this choice: its pins, the learner's choices, the rows the bench
        measured and every RoleOutcome of the run."""
        outcomes = self.feedback()  # first: the policy read after it has learned them all
        return {
            "choice": self.choice,
            "pins": self.pins,
            "policy": self.policy(),
            "rows": rows,
            "outcomes": outcomes,
        }
