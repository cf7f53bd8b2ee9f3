"""bench/targets.py and `--check`: a missed target fails the run only when asked to, and
bench/run_all.py passes the flag to the benchmarks that print targets."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run_all
from bench.targets import TARGET_MISSED, Target, exit_code, report_targets

ROOT = Path(__file__).resolve().parents[2]


def test_a_target_holds_at_its_bound_and_prints_what_was_measured() -> None:
    assert Target.at_least("accuracy >= 0.80", 0.80, 0.80).met
    assert not Target.at_least("accuracy >= 0.80", 0.7999, 0.80).met
    assert Target.below("p99 < 1 s", 999.0, 1000.0, ".0f").met
    assert not Target.below("p99 < 1 s", 1000.0, 1000.0, ".0f").met
    assert Target.at_least("saving >= 74%", 0.593, 0.74, ".1%").line() == (
        "target: saving >= 74%: 59.3% -> NOT MET"
    )
    assert Target("selections", "match", True).line() == "target: selections: match -> MET"


def test_only_check_turns_a_missed_target_into_a_failing_exit(capsys: pytest.CaptureFixture[str]) -> None:
    met = Target.at_least("a", 1.0, 0.5)
    missed = Target.at_least("b", 0.2, 0.5)
    assert exit_code([met, missed], check=False) == 0
    assert exit_code([met], check=True) == 0
    assert exit_code([], check=True) == 0
    capsys.readouterr()
    assert report_targets([met, missed], check=True) == TARGET_MISSED
    out = capsys.readouterr().out
    assert "target: a: 1.0000 -> MET" in out and "target: b: 0.2000 -> NOT MET" in out
    assert "1 of 2 target(s) NOT MET" in out and "  b: 0.2000" in out


def test_run_all_passes_check_only_to_benchmarks_with_targets() -> None:
    by_name = {b.script: b for b in run_all.REGISTRY}
    with_targets = {name for name, b in by_name.items() if b.targets}
    assert with_targets == {
        "propagation_delay.py",
        "pipeline_rtf.py",
        "routing_replay.py",
        "budget.py",
        "paper_replication.py",
        "olp_mini_rtf.py",
        "qmsum_recall.py",
        "switch_eval.py",
        "finder_names.py",
    }
    assert run_all.command(by_name["budget.py"], quick=True, check=True)[-1] == "--check"
    assert "--check" not in run_all.command(by_name["budget.py"], quick=True, check=False)
    assert "--check" not in run_all.command(by_name["broker_limit.py"], quick=True, check=True)
    assert run_all.status_of(0) == "ok"
    assert run_all.status_of(TARGET_MISSED) == "target NOT MET"
    assert run_all.status_of(1) == "failed (exit 1)"


def _routing_csv(path: Path, small_model_correct: bool, inputs: int = 200) -> Path:
    """Inputs answered by gpt-4o (always right, 100x the price) and a small model."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(
            [
                "dataset",
                "split",
                "query_idx",
                "model",
                "correct",
                "cost_usd",
                "latency_ms",
                "tokens_in",
                "tokens_out",
                "raw_confidence",
            ]
        )
        for i in range(inputs):
            out.writerow(["qa", "train", i, "gpt-4o", True, 0.01, 500, 100, 10, ""])
            out.writerow(["qa", "train", i, "small", small_model_correct, 0.0001, 100, 100, 10, ""])
    return path


@pytest.mark.parametrize("small_model_correct", [False, True])
def test_routing_replay_check_fails_exactly_when_a_target_is_missed(
    tmp_path: Path, small_model_correct: bool
) -> None:
    """A small model that is always wrong leaves no way to gpt-4o's accuracy at half its cost;
    one that is always right makes both cost targets easy, and is itself a single model no
    learner dominates (it pays for exploration and the judge): --check fails on that one alone."""
    data = _routing_csv(tmp_path / "routing.csv", small_model_correct)
    argv = [
        sys.executable,
        str(ROOT / "bench" / "routing_replay.py"),
        *("--data", str(data), "--seeds", "1", "--quick", "--rates", ""),
        *("--plot", str(tmp_path / "plot.png")),
    ]
    checked = subprocess.run([*argv, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert checked.returncode == TARGET_MISSED, checked.stdout[-2000:] + checked.stderr[-2000:]
    lines = [line for line in checked.stdout.splitlines() if line.startswith("target: [report]")]
    cost_targets = [line for line in lines if "] 1." in line or "] 2." in line]
    assert len(cost_targets) == 2
    assert all(line.endswith("-> MET") == small_model_correct for line in cost_targets), cost_targets
    single = [line for line in lines if "best single (small)" in line]
    assert single == [] if not small_model_correct else single[0].endswith("NOT MET")
    report = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]


def test_run_all_check_reports_the_missed_target_and_plain_run_stays_a_report(tmp_path: Path) -> None:
    data = _routing_csv(tmp_path / "routing.csv", small_model_correct=False)
    bench = run_all.Benchmark(
        "routing_replay.py",
        "routing on a CSV no router can serve at half the cost",
        args=(
            "--data",
            str(data),
            "--seeds",
            "1",
            "--quick",
            "--rates",
            "",
            "--plot",
            str(tmp_path / "p.png"),
        ),
        timeout_s=120,
        targets=True,
    )
    assert run_all.run(bench, quick=False, check=True).status == "target NOT MET"
    assert run_all.run(bench, quick=False, check=False).status == "ok"
