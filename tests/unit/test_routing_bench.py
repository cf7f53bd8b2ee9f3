"""The routing benchmark's honest protocol (bench/routing_common.py): the split by query,
stratified by task type, and the judge feedback (no free labels, judge cost counted)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from bench.routing_common import Feedback, Item, load_items, outcome_of, replay, split_items, verdict
from policy_store.policies import FixedPolicy

MODELS = ("gpt-4o", "small")


def _csv(path: Path, rows_per_task: Mapping[str, int]) -> Path:
    """Per task type, inputs answered by gpt-4o ($0.01, right on even query indices) and a small
    model ($0.0001, right on multiples of 3); the file sorted by task type, as the real one."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        header = ["dataset", "split", "query_idx", "model", "correct", "cost_usd", "latency_ms"]
        out.writerow([*header, "tokens_in", "tokens_out", "raw_confidence"])
        for task, n in sorted(rows_per_task.items()):
            for i in range(n):
                out.writerow([task, "train", i, "gpt-4o", i % 2 == 0, 0.01, 500, 100, 10, ""])
                out.writerow([task, "train", i, "small", i % 3 == 0, 0.0001, 100, 100, 10, ""])
    return path


def test_the_split_is_by_query_stratified_by_task_type_and_seeded(tmp_path: Path) -> None:
    tasks = {"gsm8k": 40, "mmlu": 21, "triviaqa": 10}
    items, models = load_items(_csv(tmp_path / "r.csv", tasks))
    assert models == sorted(MODELS)
    parts = split_items(items)
    assert list(parts) == ["tune", "report", "holdout"]
    keys = {name: {i.key for i in part} for name, part in parts.items()}
    assert sum(len(k) for k in keys.values()) == len(items) == 71
    assert not (keys["tune"] & keys["report"]) and not (keys["tune"] & keys["holdout"])
    assert not (keys["report"] & keys["holdout"])
    for task, n in tasks.items():  # every task type in every part, in the shares 50/30/20
        counts = [sum(i.role == task for i in part) for part in parts.values()]
        assert counts == [round(n * 0.5), round(n * 0.8) - round(n * 0.5), n - round(n * 0.8)]
    assert {i.key for i in split_items(items)["report"]} == keys["report"]  # fixed seed
    # not the row order: the first tune inputs of a task are not its first queries
    assert [i.index for i in parts["tune"] if i.role == "gsm8k"] != list(range(20))
    assert {i.key for i in split_items(items, seed=1)["report"]} != keys["report"]


class Recorder(FixedPolicy):
    """A fixed model that keeps what it was told."""

    def __init__(self, models: Sequence[str], model: str) -> None:
        super().__init__(models, model)
        self.seen: list[dict[str, Any]] = []

    def update(self, context: Mapping[str, Any], model: str, outcome: Mapping[str, Any]) -> None:
        self.seen.append(dict(outcome))


def test_the_judge_protocol_labels_a_share_of_calls_and_counts_the_judge(tmp_path: Path) -> None:
    items, models = load_items(_csv(tmp_path / "r.csv", {"qa": 400}))
    feedback = Feedback("judge", 0.25, "gpt-4o")
    policy = Recorder(models, "small")
    result = replay(policy, items, seed=3, feedback=feedback)
    labelled = [o for o in policy.seen if o["quality"] is not None]
    unlabelled = [o for o in policy.seen if o["quality"] is None]
    assert len(labelled) + len(unlabelled) == 400
    assert 70 <= len(labelled) <= 130  # ~25%, a seeded draw per call
    assert all(o["source"] == "judge" for o in labelled)
    assert all(o["source"] == "processor" and o["success"] for o in unlabelled)  # parsed, no label
    # The judge's cost is its own cost on each judged query, counted as spend.
    assert result.judge_cost_usd == pytest.approx(0.01 * len(labelled))
    assert result.cost_usd == pytest.approx(0.0001 * 400 + 0.01 * len(labelled))
    assert result.by_role["qa"][2] == pytest.approx(result.cost_usd)
    assert result.by_role["qa"][3] == pytest.approx(result.judge_cost_usd)
    # Verdicts: exact where the judge (right on even queries) is right; where it is wrong it
    # accepts only answers as wrong as its own.
    by_index = {i.key: i for i in items}
    for o in labelled:
        item = by_index[o["event_id"].split(":", 1)[1].rsplit(":", 1)[0]]
        small_ok = item.rows["small"].correct
        expected = small_ok if item.index % 2 == 0 else not small_ok
        assert o["quality"] == (1.0 if expected else -1.0)
    # The same calls are judged whatever the policy: the draw is per (seed, input, model).
    again = Recorder(models, "small")
    replay(again, items, seed=3, feedback=feedback)
    assert [o["quality"] for o in again.seen] == [o["quality"] for o in policy.seen]


def test_the_oracle_labels_every_call_free_and_the_verdict_rule(tmp_path: Path) -> None:
    items, _ = load_items(_csv(tmp_path / "r.csv", {"qa": 6}))
    item: Item = items[1]  # query 1: gpt-4o wrong, small wrong
    record, cost = outcome_of(item, "small", 0, 0, 1.0)
    assert (record["quality"], record["source"], cost) == (-1.0, "canary", 0.0)
    assert verdict(item, "small", "gpt-4o") is True  # a wrong judge accepts an answer as wrong as its own
    assert verdict(items[0], "small", "gpt-4o") is True  # both right
    assert verdict(items[2], "small", "gpt-4o") is False  # judge right, small wrong
    assert verdict(items[3], "small", "gpt-4o") is False  # judge wrong, small right
    assert verdict(items[1], "gpt-4o", "gpt-4o") is None  # a judge never judges its own model
    judge = Feedback("judge", 1.0, "gpt-4o")
    assert outcome_of(items[0], "gpt-4o", 0, 0, 1.0, judge)[0]["quality"] is None
    assert outcome_of(items[0], "gpt-4o", 0, 0, 1.0, judge)[1] == 0.0
    assert outcome_of(items[0], "small", 0, 0, 1.0, judge)[1] == 0.01
