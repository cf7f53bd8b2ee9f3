"""QMSum topic recall through the embedded stack, per model choice (spec section 9, "OLP quality").

    python bench/qmsum_recall.py [--data ../shared/data/qmsum/train.jsonl] [--meetings 10]
        [--choices free,llm,encoder] [--chunk-size 40] [--turn-chars 200] [--canary-rate 0.5]
        [--check] [--out bench/out/qmsum_recall.json]

The `--meetings` shortest QMSum meetings (bench/segmentation_eval.py reads them: each turn one
sentence, "speaker: text", cut to `--turn-chars`) go through the embedded stack in OLP mode, the
whole pipeline on Kafka, once per model choice (bench/stack_runner.py: `llm` = every role on the
local LLM, the SmolLM2-only pipeline; `encoder` = every role an encoder can fill on the encoder;
`free` = Role-RL picks per role and context from the default pool). The feed is domain `meeting`
with the bundled English news canaries (the only English non-commerce gold set) and their
aspects, so the learner has a quality signal. Scores per meeting are bench/segmentation_eval.py's
`segmentation_scores` against QMSum's `topic_list` spans (recall with one-to-one matching,
precision, Pk, WindowDiff).

Prints a progress bar, a table per choice (means over meetings; canary k per role beside them)
and the models that served each role on the real chunks; target: the learner's free choice
recalls no less than the SmolLM2-only pipeline (both must be run; `--check` exits 3 when not).
Bounded time: `--meetings 1 --choices free,llm` (run_all's quick mode) stays under 10 minutes on
a quiet 2-core machine (the shortest meeting, 78 turns after empty ones are dropped, took 139-216 s
per choice on a machine loaded 5-6 times over its cores); the second shortest (91 turns, more
topics) took 14 minutes there, so the default (10 meetings, 3 choices) is a run of hours.
Exits 0 with a message when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.segmentation_eval import DEFAULT_DATA, Meeting, load_meetings, segmentation_scores
from bench.stack_runner import (
    CHOICES,
    ROLE_COLUMNS,
    ChoiceRun,
    canary_scores,
    model_shares,
    print_tables,
    role_canary_cells,
    shares_text,
)
from bench.targets import Target, add_check_argument, report_targets
from launcher.console import progress_bar
from launcher.embedded import installed_local_models
from olp.feeds import to_segments, with_end_marker
from olp.feeds.formats import Row
from olp.settings import DEFAULT_ASPECTS, ROLES

FEED = "qmsum"
MEETING_ASPECTS = DEFAULT_ASPECTS["news"]
"""Aspects of a meeting's sentences: the domain has no default set, and the news canaries are
scored only on a feed with their aspects (recall does not use them)."""
FIRST_ID = 1
"""Segment id of turn 0: transcript ids start at 1, as in the bundled sample."""
METRICS = ("recall", "precision", "recall_any", "pk", "window_diff", "predicted_topics")


def meeting_segments(meeting: Meeting, choice: str) -> list[dict[str, Any]]:
    """The meeting's turns as one stream on the QMSum feed (turn i -> segment i + FIRST_ID)."""
    rows = [Row(s.id + FIRST_ID, s.text) for s in meeting.sentences]
    stream = to_segments(rows, f"{choice}-{meeting.meeting_id}", FEED, feed=FEED, domain="meeting", lang="en")
    return list(with_end_marker(stream))


def predicted_turns(documents: Sequence[Mapping[str, Any]]) -> list[set[int]]:
    """Turn ids per predicted topic: the final documents' spans, identical names together (the
    end-of-stream merge of bench/olp_offline.py, so a topic resumed later counts as one)."""
    by_name: dict[str, set[int]] = {}
    for doc in documents:
        if doc["final"]:
            turns = range(int(doc["first_id"]) - FIRST_ID, int(doc["last_id"]) - FIRST_ID + 1)
            by_name.setdefault(str(doc["name"]).strip().casefold(), set()).update(turns)
    return list(by_name.values())


def mean_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {m: statistics.fmean(float(r[m]) for r in rows) for m in METRICS} if rows else {}


def run_choice(
    choice: str, meetings: Sequence[Meeting], args: argparse.Namespace, bar: Any, task: Any
) -> dict[str, Any]:
    feed = {
        "domain": "meeting",
        "lang": "en",
        "chunk_size": args.chunk_size,
        "aspects": list(MEETING_ASPECTS),
        "canaries": "canaries_news_en.json",
        "canary_rate": args.canary_rate,
    }
    rows = []

    def log(line: str) -> None:
        bar.console.print(f"[dim]{choice:8} {line}[/]")

    with ChoiceRun(choice, args.out.parent / "run" / f"qmsum-{choice}", {FEED: feed}, log) as run:
        for meeting in meetings:
            bar.update(task, description=f"{choice} {meeting.meeting_id}")
            done = [0]

            def advance(n: int, done: list[int] = done) -> None:
                bar.advance(task, n - done[0])
                done[0] = n

            result = run.process(meeting_segments(meeting, choice), args.timeout, advance)
            bar.advance(task, result.sentences - done[0])
            turns = [s.id for s in meeting.sentences]
            scores = segmentation_scores(
                turns, [t for _, t in meeting.topics], predicted_turns(result.documents)
            )
            rows.append(
                {
                    "meeting": meeting.meeting_id,
                    "turns": len(turns),
                    "wall_s": round(result.wall_s, 1),
                    "rtf": round(result.rtf, 3),
                    "dead_lettered": result.dead_lettered,
                    "complete": result.complete,
                    "topics": [d["name"] for d in result.documents],
                    **scores,
                }
            )
            log(
                f"{meeting.meeting_id}: recall {scores['recall']:.3f}, {len(result.documents)} topics,"
                f" {result.wall_s:.0f}s" + ("" if result.complete else " (INCOMPLETE: --timeout reached)")
            )
        return run.summary(rows)


def print_summary(runs: Sequence[Mapping[str, Any]]) -> list[Target]:
    """The tables and the target: the free choice recalls no less than the SmolLM2-only one."""
    from rich.table import Table

    table = Table(
        "choice", "meetings", "recall", "prec.", "rec.any", "Pk", "WD", "topics", "s/meeting", "dead",
        "timed out",
        *(f"k {ROLE_COLUMNS[r]}" for r in ROLES),
        title="QMSum topic segmentation, OLP mode, per model choice (means; Pk/WD lower is better; "
        "k: canary score (calls))",
    )  # fmt: skip
    chosen = Table("choice", "role", "models on real chunks", "policy now", title="models per role")
    recall: dict[str, float] = {}
    for run in runs:
        means = mean_scores(run["rows"])
        recall[run["choice"]] = means.get("recall", 0.0)
        wall = statistics.fmean(r["wall_s"] for r in run["rows"]) if run["rows"] else 0.0
        table.add_row(
            run["choice"],
            str(len(run["rows"])),
            *(f"{means.get(m, 0.0):.3f}" for m in METRICS[:5]),
            f"{means.get('predicted_topics', 0.0):.1f}",
            f"{wall:.0f}",
            str(sum(r["dead_lettered"] for r in run["rows"])),
            str(sum(not r.get("complete", True) for r in run["rows"])),
            *role_canary_cells(canary_scores(run["outcomes"])),
        )
        for (role, lang), shares in model_shares(run["outcomes"]).items():
            chosen.add_row(
                run["choice"], f"{role} ({lang})", shares_text(shares), run["policy"].get(role, "")
            )
    print_tables(table, chosen)
    if "free" in recall and "llm" in recall:
        return [
            Target(
                "QMSum recall, learner's choice >= SmolLM2-only",
                f"{recall['free']:.3f} vs {recall['llm']:.3f}",
                recall["free"] >= recall["llm"],
            )
        ]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--meetings", type=int, default=10, help="the N shortest meetings")
    parser.add_argument("--choices", default=",".join(CHOICES), help="model choices (bench/stack_runner.py)")
    parser.add_argument("--chunk-size", type=int, default=40, help="K: new turns per OLP chunk")
    parser.add_argument("--turn-chars", type=int, default=200, help="characters kept per turn")
    parser.add_argument("--canary-rate", type=float, default=0.5, help="canary chunks per real chunk")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per meeting")
    parser.add_argument("--out", type=Path, default=Path("bench/out/qmsum_recall.json"))
    add_check_argument(parser)
    args = parser.parse_args(argv)
    choices = [c.strip() for c in args.choices.split(",") if c.strip()]
    if set(choices) - set(CHOICES):
        parser.error(f"--choices: expected some of {', '.join(CHOICES)}")
    if not args.data.is_file():
        print(f"QMSum data not found at {args.data}: skipped (pass --data)")
        return 0
    if not installed_local_models():
        print("no local model installed (make install): skipped")
        return 0
    meetings = load_meetings(args.data, args.meetings, "short", args.turn_chars)
    print(
        f"{len(meetings)} meetings: "
        + ", ".join(f"{m.meeting_id} ({len(m.sentences)} turns)" for m in meetings)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    with progress_bar() as bar:
        task = bar.add_task("starting", total=sum(len(m.sentences) for m in meetings) * len(choices))
        for choice in choices:
            runs.append(run_choice(choice, meetings, args, bar, task))
            payload = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}
            args.out.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    targets = print_summary(runs)
    print(f"per-meeting results, topics and feedback: {args.out}")
    return report_targets(targets, args.check)


if __name__ == "__main__":
    raise SystemExit(main())
