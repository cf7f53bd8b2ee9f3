"""Worker crash (issue 7): two workers share four live streams; one of them is killed with SIGKILL
at random points, several times, and restarted as a supervisor would. Every sentence must be in
the final documents exactly once, and the documents must be exactly what a perfect model makes.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from launcher.clients import replay
from launcher.scripted_llm import ScriptedLLM, scripted_catalog
from launcher.scripted_roles import perfect
from schemas.codec import make_codec
from tests.reliability.conftest import Report
from tests.reliability.harness import (
    DocumentCollector,
    Stack,
    audit,
    comparable,
    describe_difference,
    expected_documents,
    interleave,
    read_all,
    read_raw,
    sample_segments,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

STREAMS = ("crash-a", "crash-b", "crash-c", "crash-d")
KILLS = 3
SEED = int(os.environ.get("OLP_CRASH_SEED", "7"))
"""Picks the kill times and victims; 7 kills the same worker three times within 15 s."""


@pytest.fixture
def scripted() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM(perfect).start()
    yield server
    server.stop()


def test_sigkill_of_a_worker_loses_and_duplicates_nothing(
    broker: str, topic_prefix: str, run_dir: Path, scripted: ScriptedLLM, report: Report
) -> None:
    rng = random.Random(SEED)
    stack = Stack(
        broker,
        topic_prefix,
        run_dir,
        scripted_catalog(scripted.base_url),
        {"OLP_FEEDS": json.dumps({"default": {"chunk_size": 30}}), "OLP_CHUNK_TIMEOUT_S": "20"},
    )
    streams = {s: sample_segments(s) for s in STREAMS}
    segments = interleave(*streams.values())
    collector = DocumentCollector(stack.settings())
    kill_times: list[float] = []
    killer_error: list[BaseException] = []
    try:
        stack.start_policy_store()
        stack.start_worker()
        stack.start_worker()
        collector.start()

        def killer() -> None:
            try:
                for _ in range(KILLS):
                    time.sleep(rng.uniform(3.0, 9.0))
                    victim = stack.child(rng.choice(["worker-0", "worker-1"]))
                    kill_times.append(time.monotonic())
                    stack.kill(victim)
                    stack.restart_worker(victim)
            except BaseException as exc:
                killer_error.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=killer, name="killer", daemon=True)
        thread.start()
        # A live pace: ~580 segments over ~25 s, so the kills land mid-stream.
        replay(stack.settings(), segments, pace_s=0.04)
        thread.join(120)
        assert not killer_error, killer_error

        def complete() -> bool:
            return all(collector.covers(s, [x["segment_id"] for x in segs]) for s, segs in streams.items())

        unfinished = ""
        try:
            collector.wait(complete, 150)
        except AssertionError as exc:  # counted and explained below, with the evidence
            unfinished = f"{exc}\n"
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # late duplicates, if any, would arrive now
        audits = {
            s: audit(collector.stream(s), [x["segment_id"] for x in segs]) for s, segs in streams.items()
        }
        dead_letters = read_all(stack.settings(), f"{topic_prefix}dlq", "DeadLetter", quiet_s=1.0)
        recoveries = [(collector.first_arrival_after(t) or time.monotonic()) - t for t in kill_times]
        crashes = stack.crash_lines()
        report.add(
            "worker SIGKILL (2 workers)",
            f"{len(segments)} segments, 4 streams, {len(kill_times)} kills",
            sum(a.lost for a in audits.values()),
            sum(a.duplicated for a in audits.values()),
            len(crashes),
            max(recoveries) if recoveries else None,
            f"recovery = kill -> next document; done in {elapsed:.0f}s; DLQ {len(dead_letters)}; seed {SEED}",
        )
        if not all(a.clean for a in audits.values()):
            chunks = read_all(stack.settings(), f"{topic_prefix}chunks", "Chunk", quiet_s=1.0)
            lines = []
            for stream_id, segs in streams.items():
                if audits[stream_id].clean:
                    continue
                got = comparable(collector.stream(stream_id))
                lines.append(f"{stream_id}: {describe_difference(got, expected_documents(segs))}")
                mine = [
                    (c["chunk_id"], [x["id"] for x in c["sentences"]])
                    for c in chunks
                    if c["stream_id"] == stream_id
                ]
                lines.append(f"  chunks: {mine}")
            codec = make_codec(stack.settings().schema_registry_url)
            transcripts = read_raw(stack.settings(), f"{topic_prefix}transcripts", 1.0)
            for stream_id in streams:
                if audits[stream_id].clean:
                    continue
                order = [
                    (m.offset(), codec.decode(m.value(), "TranscriptSegment")["segment_id"], _clock(m))
                    for m in transcripts
                    if m.key() == stream_id.encode()
                ]
                lines.append(f"  transcripts of {stream_id} (offset, segment_id, time): {order}")
            changelog = read_raw(stack.settings(), f"{topic_prefix}app-chunk-splitter-state-changelog", 1.0)
            for stream_id in streams:
                if audits[stream_id].clean:
                    continue
                history = []
                for m in changelog:
                    if m.key() == json.dumps(stream_id).encode() and m.value():
                        st = json.loads(m.value())  # the head (processors/chunk_splitter.py)
                        history.append(
                            (
                                m.partition(),
                                m.offset(),
                                _clock(m),
                                st["max_id"],
                                st["sent_upto"],
                                st["in_flight"],
                                f"{st['first_id']}..{st['last_id']} in pages {st['pages']}"
                                if st["pages"]
                                else "-",
                            )
                        )
                lines.append(
                    f"  changelog of {stream_id} (partition, offset, time, max_id, sent_upto, in_flight, "
                    "buffer):"
                )
                lines.append(f"  {history}")
            raise AssertionError(
                f"{unfinished}{audits}\n"
                + "\n".join(lines)
                + f"\nkills at {kill_times} (now {time.monotonic()})\n{stack.logs()}"
            )
        assert not dead_letters, dead_letters[:3]
        assert not crashes, crashes[:5]
        for stream_id, segs in streams.items():
            assert comparable(collector.stream(stream_id)) == expected_documents(segs), describe_difference(
                comparable(collector.stream(stream_id)), expected_documents(segs)
            )
    finally:
        collector.stop()
        stack.stop()


def _clock(message: Any) -> str:
    """A record's broker timestamp as the time of day (to line it up with the workers' logs)."""
    return datetime.fromtimestamp(message.timestamp()[1] / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
