"""What the demo measures: the lag from a sentence's arrival to its final document, the memory of
the stack's process trees, and the model calls per chunk read from the RoleOutcomes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from launcher import demo_report
from launcher.console import console
from launcher.demo_report import (
    CLI,
    MemorySampler,
    PeakMemory,
    SentenceLags,
    call_table,
    group_rss_mb,
    print_calls,
    print_memory,
    print_speed,
    process_groups,
    read_processes,
    stack_processes,
    summarise_lags,
)


def printed(capture: Any) -> str:
    """What was printed, with the console's line wrapping undone."""
    return " ".join(capture.get().split())


def doc(first: int, last: int, final: bool) -> dict[str, Any]:
    return {"first_id": first, "last_id": last, "final": final}


def test_a_sentence_lags_until_the_first_final_document_that_holds_it() -> None:
    lags = SentenceLags()
    for i, at in enumerate([0.0, 0.4, 0.8, 1.2]):
        lags.sent(i, at)
    lags.document(doc(0, 3, final=False), 2.0)  # a draft does not count
    lags.document(doc(0, 1, final=True), 5.0)
    lags.document(doc(0, 2, final=True), 7.0)  # sentences 0 and 1 were final already
    assert lags.final_at == {0: 5.0, 1: 5.0, 2: 7.0}
    assert sorted(lags.lags()) == pytest.approx([4.6, 5.0, 6.2])  # sentence 3: no final document yet


def test_lag_percentiles_interpolate_between_order_statistics() -> None:
    summary = summarise_lags([float(x) for x in range(100, 0, -1)])
    assert summary is not None
    assert (summary.sentences, summary.p50_s, summary.max_s) == (100, 50.5, 100.0)
    assert summary.p99_s == pytest.approx(99.01)
    assert summarise_lags([]) is None
    one = summarise_lags([3.0])
    assert one is not None and (one.p50_s, one.p99_s, one.max_s) == (3.0, 3.0, 3.0)


def test_each_named_process_counts_its_descendants_but_not_another_named_one() -> None:
    # the CLI (1) started the broker (10), the model server (30, which forked 31, which forked
    # 32) and a worker (20, with a helper 21); 99 is someone else's
    parents = {1: 0, 10: 1, 20: 1, 21: 20, 30: 1, 31: 30, 32: 31, 99: 0}
    roots = {CLI: 1, "broker": 10, "worker-0": 20, "model-server": 30}
    groups = process_groups(roots, parents)
    assert groups == {CLI: {1}, "broker": {10}, "worker-0": {20, 21}, "model-server": {30, 31, 32}}
    rss = {1: 80.0, 10: 40.0, 20: 200.0, 21: 5.0, 30: 300.0, 31: 600.0, 99: 1000.0}  # 32 is gone
    assert group_rss_mb(groups, rss) == {CLI: 80.0, "broker": 40.0, "worker-0": 205.0, "model-server": 900.0}


def test_the_peak_total_is_the_highest_sum_at_one_time_not_the_sum_of_the_peaks() -> None:
    peak = PeakMemory()
    peak.add({"a": 100.0, "b": 10.0})
    peak.add({"a": 20.0, "b": 50.0})
    assert peak.per_name_mb == {"a": 100.0, "b": 50.0}
    assert peak.total_mb == 110.0


def test_processes_are_read_from_procfs_status_files(tmp_path: Path) -> None:
    for pid, status in {
        "12": "Name:\tpython\nPPid:\t1\nVmRSS:\t  204800 kB\n",
        "2": "Name:\tkthreadd\nPPid:\t0\n",  # a kernel thread has no VmRSS
    }.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "status").write_text(status)
    (tmp_path / "self").mkdir()
    (tmp_path / "13").mkdir()  # exited between listing and reading
    assert read_processes(tmp_path) == ({12: 1, 2: 0}, {12: 200.0, 2: 0.0})


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux procfs")
def test_the_sampler_measures_this_process() -> None:
    with MemorySampler(lambda: stack_processes({}), interval_s=0.05) as sampler:
        sampler.sample()
    assert 10 < sampler.peak.per_name_mb[CLI] < 4096
    assert stack_processes({"broker": 7}) == {"broker": 7, CLI: os.getpid()}


def test_the_memory_line_names_each_process_and_the_budget() -> None:
    peak = PeakMemory()
    peak.add({"broker": 50.0, "model-server": 1000.0})
    with console.capture() as captured:
        print_memory(peak)
    assert "broker 50, model-server 1000; total 1050 MB, within the 4 GB budget" in printed(captured)
    peak.add({"broker": 50.0, "model-server": 4100.0})
    with console.capture() as captured:
        print_memory(peak)
    assert "total 4150 MB, over the 4 GB budget" in printed(captured)


def outcome(
    role: str, model: str, tokens: int, chunk: str, stream: str = "s1", **more: Any
) -> dict[str, Any]:
    return {
        "role": role,
        "model": model,
        "tokens_in": tokens,
        "chunk_id": chunk,
        "stream_id": stream,
        "source": "processor",
        **more,
    }


def test_calls_are_counted_per_role_with_encoders_and_canaries_apart() -> None:
    outcomes = [
        outcome("topic_finder", "smollm2", 500, "s1:0"),
        outcome("topic_finder", "smollm2", 450, "s1:1"),
        outcome("topic_locator", "smollm2", 300, "s1:0"),
        outcome("topic_locator", "minilm", 40, "s1:1"),
        outcome("topic_finder", "smollm2", 500, "s1:0", source="judge"),  # evidence, not a call
        outcome("topic_finder", "smollm2", 999, "s2:0", stream="s2"),  # another stream
        outcome("topic_finder", "smollm2", 700, "c:0", stream="canary:default:0:ab"),
        outcome("content_organizer", "minilm", 60, "c:0", stream="canary:default:0:ab"),
    ]
    table = call_table(outcomes, "s1", encoders={"minilm"})
    assert table.chunks == 2
    assert list(table.roles) == ["topic_finder", "topic_locator"]
    finder, locator = table.roles["topic_finder"], table.roles["topic_locator"]
    assert (finder.llm_calls, finder.prompt_tokens, finder.encoder_calls) == (2, 950, 0)
    assert (locator.llm_calls, locator.prompt_tokens, locator.encoder_calls) == (1, 300, 1)
    assert (table.canary_chunks, table.canary_llm_calls, table.canary_prompt_tokens) == (1, 1, 700)


def test_the_speed_lines_keep_the_real_time_factor_and_add_the_lag() -> None:
    lags = summarise_lags([1.0, 2.0, 3.0])
    with console.capture() as captured:
        print_speed(145, 29.0, lags, paced=False)
    out = printed(captured)
    assert "real-time factor 2.00 (58 s of speech at 2.5 sentences/s in 29 s of processing)" in out
    assert "lag from a sentence's arrival to its final document: p50 2.0 s, p99 3.0 s, max 3.0 s" in out
    with console.capture() as captured:
        print_speed(145, 70.0, None, paced=True)
    out = printed(captured)
    assert "real-time factor 0.83" in out and "at most 1 by construction" in out and "p50" not in out


def test_the_call_table_prints_a_row_per_role_and_the_total_per_chunk() -> None:
    outcomes = [
        outcome("relationship_checker", "smollm2", 900, "s1:0"),
        outcome("relationship_checker", "smollm2", 700, "s1:1"),
        outcome("content_organizer", "minilm", 60, "s1:1"),
    ]
    with console.capture() as captured:
        print_calls(call_table(outcomes, "s1", encoders={"minilm"}))
    out = printed(captured)
    assert "model calls on the stream's 2 chunks" in out
    assert "relationship_checker 2 1600 1.0 800 0" in out  # not cut to fit the terminal
    assert "content_organizer 0 0 0.0 0 1" in out
    assert "all roles 2 1600 1.0 800 1" in out


def test_calibration_rows_and_verdict_line(capsys: pytest.CaptureFixture[str]) -> None:
    policy = {
        "roles": [
            {
                "role": "topic_finder",
                "evidence": {
                    "smollm2": {"quality": -0.8, "canary": 3, "canary_mean": -0.5, "canary_gap": 0.3},
                    "minilm": {"quality": 0.4, "canary": 2, "canary_mean": 0.45, "canary_gap": 0.05},
                    "untested": {"quality": 0.0, "quality_sd": 1.0},
                },
            }
        ]
    }
    rows = demo_report.calibrations(policy)
    assert [(r.model, round(r.gap, 2)) for r in rows] == [("minilm", 0.05), ("smollm2", 0.3)]
    demo_report.print_calibration(rows)
    assert "calibration: 1 of 2 estimates within 0.15" in capsys.readouterr().out
