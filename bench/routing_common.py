"""Shared code of the routing benchmarks (spec section 9): load the per-query-per-model CSV and
replay it through any policy of `policy_store.policies`.

Reads a CSV such as `../shared/data/routing/per_query_per_model.train.csv` (columns split, dataset,
query_idx, model, correct, cost_usd, latency_ms, tokens_in, tokens_out, raw_confidence); the
`dataset` column plays the role. Writes nothing. The data stays outside the repository.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy_store.policies import Call, Policy, Query


@dataclass(frozen=True)
class Row:
    """One model's answer to one input."""

    correct: bool
    cost_usd: float
    latency_ms: float
    tokens_in: int
    tokens_out: int
    confidence: float | None


@dataclass(frozen=True)
class Item:
    """One input with every model's answer."""

    key: str  # split/dataset/query_idx
    role: str
    index: int
    rows: dict[str, Row]

    def query(self) -> Query:
        return Query(self.role, {m: (r.correct, r.cost_usd, r.confidence) for m, r in self.rows.items()})


def _confidence(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value):
        return None
    return max(-1e6, value)  # -inf log-probabilities happen; keep them finite and lowest


def load_items(path: Path) -> tuple[list[Item], list[str]]:
    """Items with answers from every model (incomplete inputs are dropped), and the model names."""
    groups: dict[tuple[str, str, str], dict[str, Row]] = {}
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            key = (rec["split"], rec["dataset"], rec["query_idx"])
            groups.setdefault(key, {})[rec["model"]] = Row(
                correct=rec["correct"].strip().lower() in ("true", "1", "1.0"),
                cost_usd=float(rec["cost_usd"]),
                latency_ms=float(rec["latency_ms"]),
                tokens_in=int(float(rec["tokens_in"] or 0)),
                tokens_out=int(float(rec["tokens_out"] or 0)),
                confidence=_confidence(rec.get("raw_confidence", "")),
            )
    models = sorted({m for rows in groups.values() for m in rows})
    items = [
        Item("/".join(key), key[1], int(float(key[2])), rows)
        for key, rows in sorted(groups.items())
        if len(rows) == len(models)
    ]
    return items, models


def reference_model(models: Sequence[str], items: Sequence[Item]) -> str:
    """gpt-4o if present, else the most expensive model: costs are reported as a fraction of it."""
    if "gpt-4o" in models:
        return "gpt-4o"
    return max(models, key=lambda m: sum(i.rows[m].cost_usd for i in items))


@dataclass(frozen=True)
class RunResult:
    accuracy: float
    cost_usd: float
    calls_per_input: float
    window_spend: tuple[float, ...] = ()


def outcome_of(item: Item, model: str, seed: int, ts_ms: int, propensity: float) -> dict[str, Any]:
    """The RoleOutcome a processor would emit for this call once judged: the call worked
    (success), and the judge's verdict is the dataset's correctness (quality +1 / -1)."""
    row = item.rows[model]
    return {
        "event_id": f"{seed}:{item.key}:{model}",
        "role": item.role,
        "model": model,
        "propensity": propensity,
        "feed": "default",
        "latency_ms": row.latency_ms,
        "tokens_in": row.tokens_in,
        "tokens_out": row.tokens_out,
        "cost_usd": row.cost_usd,
        "success": True,
        "error": None,
        "quality": 1.0 if row.correct else -1.0,
        "source": "processor",
        "confidence": row.confidence,
        "ts_ms": ts_ms,
    }


def replay(
    policy: Policy,
    items: Sequence[Item],
    seed: int,
    *,
    interval_ms: int = 1000,
    window_s: float | None = None,
    oracle: bool = False,
    on_step: Callable[[int, Item, str], None] | None = None,
) -> RunResult:
    """Stream the items in a seeded random order through the policy, cold start, learning online.

    The delivered answer is the primary call's, or an escalation's (`deliver`); extra runs
    (warm-up, exploration) cost money but are never delivered: no policy peeks at labels."""
    rng = random.Random(seed)
    order = list(items)
    rng.shuffle(order)
    correct, cost, calls = 0, 0.0, 0
    windows: dict[int, float] = {}
    for step, item in enumerate(order):
        ts = step * interval_ms
        context: dict[str, Any] = {"role": item.role, "input_id": item.key, "ts_ms": ts, "feed": "default"}
        if oracle:
            context["oracle"] = {m: (r.correct, r.cost_usd) for m, r in item.rows.items()}
        model, propensity = policy.select(context, rng)
        delivered = model
        made: list[Call] = []
        spent = 0.0
        while True:
            row = item.rows[model]
            made.append(Call(model, row.confidence))
            spent += row.cost_usd
            policy.update(context, model, outcome_of(item, model, seed, ts, propensity))
            nxt = policy.follow_up(context, made, rng)
            if nxt is None or len(made) > len(item.rows):
                break
            model, propensity = nxt.model, nxt.propensity
            if nxt.deliver:
                delivered = model
        correct += item.rows[delivered].correct
        cost += spent
        calls += len(made)
        if window_s is not None:
            start = ts - ts % int(window_s * 1000)
            windows[start] = windows.get(start, 0.0) + spent
        if on_step is not None:
            on_step(step, item, delivered)
    n = max(1, len(order))
    return RunResult(correct / n, cost, calls / n, tuple(windows[k] for k in sorted(windows)))


def warm_start(policy: Policy, items: Sequence[Item], seed: int) -> None:
    """Full-information warm start: feed the policy every model's outcome on every item (in a
    seeded order, all calls on one item as one input), through `update` only: the information a
    cascade fitted offline on the same items has. Costs nothing in the benchmark's accounting."""
    rng = random.Random(seed)
    order = list(items)
    rng.shuffle(order)
    for item in order:
        context: dict[str, Any] = {
            "role": item.role,
            "input_id": f"warm:{item.key}",
            "ts_ms": 0,
            "feed": "default",
        }
        for model in item.rows:
            outcome = outcome_of(item, model, seed, 0, 1.0)
            outcome["event_id"] = f"warm:{outcome['event_id']}"
            policy.update(context, model, outcome)


def pool_folds(parts: Sequence[tuple[RunResult, int]]) -> RunResult:
    """One result over disjoint test folds: (result on a fold, inputs in the fold) -> pooled."""
    n = max(1, sum(size for _, size in parts))
    return RunResult(
        sum(r.accuracy * size for r, size in parts) / n,
        sum(r.cost_usd for r, _ in parts),
        sum(r.calls_per_input * size for r, size in parts) / n,
    )


@dataclass(frozen=True)
class Point:
    """One policy setting averaged over seeds."""

    policy: str
    setting: str
    accuracy: float
    accuracy_sd: float
    cost_fraction: float
    calls_per_input: float


def average(policy: str, setting: str, results: Sequence[RunResult], reference_cost: float) -> Point:
    accs = [r.accuracy for r in results]
    return Point(
        policy,
        setting,
        statistics.fmean(accs),
        statistics.stdev(accs) if len(accs) > 1 else 0.0,
        statistics.fmean(r.cost_usd for r in results) / reference_cost,
        statistics.fmean(r.calls_per_input for r in results),
    )


def upper_hull(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Upper concave envelope of (cost, accuracy) points, monotone in cost: what mixing settings reaches."""
    pts = sorted(points)
    hull: list[tuple[float, float]] = []
    for p in pts:
        if hull and p[1] <= hull[-1][1]:
            continue  # costs more, not more accurate
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (p[0] - x1) <= (p[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def hull_at(hull: Sequence[tuple[float, float]], cost: float) -> float | None:
    """Accuracy reachable at `cost` on a hull (None below its cheapest point)."""
    if not hull or cost < hull[0][0]:
        return None
    for (x1, y1), (x2, y2) in itertools.pairwise(hull):
        if x1 <= cost <= x2:
            return y1 + (y2 - y1) * (cost - x1) / (x2 - x1) if x2 > x1 else max(y1, y2)
    return hull[-1][1]


def print_table(points: Sequence[Point], title: str) -> None:
    print(f"\n{title}")
    print(f"{'policy':<12} {'setting':<26} {'accuracy':>9} {'±sd':>6} {'cost/ref':>9} {'calls/in':>9}")
    for p in points:
        print(
            f"{p.policy:<12} {p.setting:<26} {p.accuracy:>9.4f} {p.accuracy_sd:>6.3f}"
            f" {p.cost_fraction:>9.3f} {p.calls_per_input:>9.2f}"
        )


def try_pyplot() -> Any:
    """matplotlib.pyplot with a headless backend, or None (and a message) when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install matplotlib)")
        return None
    return plt
