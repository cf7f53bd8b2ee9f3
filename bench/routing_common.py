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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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


KNOWLEDGE_TASKS = ("medmcqa", "mmlu", "triviaqa", "truthfulqa")
"""The training file's knowledge tasks: reported apart, because gsm8k alone carries pooled figures."""
PARTS = (("tune", 0.5), ("report", 0.3), ("holdout", 0.2))
"""How `split_items` divides the file: settings are chosen on tune, reported on report; the
holdout is looked at once, at the end."""
SPLIT_SEED = 20261203


def split_items(
    items: Sequence[Item], seed: int = SPLIT_SEED, parts: Sequence[tuple[str, float]] = PARTS
) -> dict[str, list[Item]]:
    """Split by query, stratified by task type (role), with a fixed seed: each role's queries are
    shuffled and cut by the parts' shares, so every part holds every role and no query is in two
    parts. Never by row order: the file is sorted by task type."""
    out: dict[str, list[Item]] = {name: [] for name, _ in parts}
    total = sum(share for _, share in parts)
    for role in sorted({i.role for i in items}):
        queries = sorted((i for i in items if i.role == role), key=lambda i: i.key)
        random.Random(f"{seed}:{role}").shuffle(queries)
        start, acc = 0, 0.0
        for n, (name, share) in enumerate(parts):
            acc += share
            end = len(queries) if n == len(parts) - 1 else round(len(queries) * acc / total)
            out[name].extend(queries[start:end])
            start = end
    return out


@dataclass(frozen=True)
class Feedback:
    """What the learners are told about each call (spec section 9: no free labels).

    oracle: every call gets the dataset's correctness as an exact label, free (an upper bound no
    deployment has). judge: a judge model is asked on a share `rate` of the calls (a draw seeded
    per call, so every policy's same call is judged alike); its verdict follows `verdict`, its
    cost is the judge model's own cost on that query, counted as spend; an unjudged call gives
    no quality label (it parsed: success, cost and latency only)."""

    mode: str = "oracle"
    rate: float = 1.0
    judge: str = "gpt-4o"

    def describe(self) -> str:
        if self.mode == "oracle":
            return "oracle (every call labelled with the dataset's correctness, free)"
        return f"judge {self.judge} on {self.rate:g} of calls (its cost counted; unjudged calls unlabelled)"

    def judged(self, seed: int, item: Item, model: str) -> bool:
        if self.mode == "oracle":
            return True
        return random.Random(f"judge:{seed}:{item.key}:{model}").random() < self.rate


ORACLE = Feedback()


def verdict(item: Item, model: str, judge: str) -> bool | None:
    """The judge's verdict on `model`'s answer, from the judge model's own correctness on the query.

    A judge that answered the query right verifies exactly (verdict = the answer's correctness).
    One that answered it wrong cannot: it accepts an answer only when it agrees with its own, and
    we assume wrong answers agree (a wrong judge calls a right answer wrong and a wrong one
    right). The rule is the pessimistic end for multiple choice, where wrong answers often
    coincide. A judge never judges its own model's answers (it would always accept them): None,
    no verdict, and nothing asked or paid."""
    if model == judge:
        return None
    return item.rows[model].correct == item.rows[judge].correct


@dataclass(frozen=True)
class RunResult:
    accuracy: float
    cost_usd: float  # every call, judge calls included
    calls_per_input: float
    window_spend: tuple[float, ...] = ()
    by_role: Mapping[str, tuple[int, int, float, float]] = field(default_factory=dict)
    """role -> (inputs answered correctly, inputs, USD spent: calls and judge, USD of the judge)"""
    judge_cost_usd: float = 0.0


def outcome_of(
    item: Item,
    model: str,
    seed: int,
    ts_ms: int,
    propensity: float,
    feedback: Feedback = ORACLE,
) -> tuple[dict[str, Any], float]:
    """The RoleOutcome of this call under the feedback, and what labelling it cost.

    Every call works (it parsed: success). Oracle: the dataset's correctness as an exact label
    (`source = canary`, the exact kind). Judge: a judged call carries the verdict (`source =
    judge`) and costs the judge model's own cost on the query; an unjudged one has no quality."""
    row = item.rows[model]
    judged = feedback.judged(seed, item, model)
    record = {
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
        "quality": None,
        "source": "processor",
        "confidence": row.confidence,
        "ts_ms": ts_ms,
    }
    if feedback.mode == "oracle":
        record.update(quality=1.0 if row.correct else -1.0, source="canary")
        return record, 0.0
    ok = verdict(item, model, feedback.judge) if judged else None
    if ok is None:
        return record, 0.0
    record.update(quality=1.0 if ok else -1.0, source="judge")
    return record, item.rows[feedback.judge].cost_usd


def replay(
    policy: Policy,
    items: Sequence[Item],
    seed: int,
    *,
    interval_ms: int = 1000,
    window_s: float | None = None,
    oracle: bool = False,
    feedback: Feedback = ORACLE,
    on_step: Callable[[int, Item, str], None] | None = None,
) -> RunResult:
    """Stream the items in a seeded random order through the policy, cold start, learning online.

    The delivered answer is the primary call's, or an escalation's (`deliver`); extra runs
    (warm-up, exploration) cost money but are never delivered: no policy peeks at labels. The
    feedback's labelling cost (judge calls) is spent like any call's."""
    rng = random.Random(seed)
    order = list(items)
    rng.shuffle(order)
    correct, cost, calls, judge_cost = 0, 0.0, 0, 0.0
    windows: dict[int, float] = {}
    by_role: dict[str, tuple[int, int, float, float]] = {}
    for step, item in enumerate(order):
        ts = step * interval_ms
        context: dict[str, Any] = {"role": item.role, "input_id": item.key, "ts_ms": ts, "feed": "default"}
        if oracle:
            context["oracle"] = {m: (r.correct, r.cost_usd) for m, r in item.rows.items()}
        model, propensity = policy.select(context, rng)
        delivered = model
        made: list[Call] = []
        spent, judged = 0.0, 0.0
        while True:
            row = item.rows[model]
            made.append(Call(model, row.confidence))
            record, labelling = outcome_of(item, model, seed, ts, propensity, feedback)
            spent += row.cost_usd + labelling
            judged += labelling
            policy.update(context, model, record)
            nxt = policy.follow_up(context, made, rng)
            if nxt is None or len(made) > len(item.rows):
                break
            model, propensity = nxt.model, nxt.propensity
            if nxt.deliver:
                delivered = model
        ok = item.rows[delivered].correct
        correct += ok
        cost += spent
        judge_cost += judged
        calls += len(made)
        right, n, role_cost, role_judge = by_role.get(item.role, (0, 0, 0.0, 0.0))
        by_role[item.role] = (right + ok, n + 1, role_cost + spent, role_judge + judged)
        if window_s is not None:
            start = ts - ts % int(window_s * 1000)
            windows[start] = windows.get(start, 0.0) + spent
        if on_step is not None:
            on_step(step, item, delivered)
    n = max(1, len(order))
    spend = tuple(windows[k] for k in sorted(windows))
    return RunResult(correct / n, cost, calls / n, spend, by_role, judge_cost)


@dataclass(frozen=True)
class Point:
    """One policy setting averaged over seeds."""

    policy: str
    setting: str
    accuracy: float
    accuracy_sd: float
    cost_fraction: float
    calls_per_input: float
    judge_fraction: float = 0.0  # the judge's share of cost_fraction


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


def group_average(
    policy: str, setting: str, results: Sequence[RunResult], roles: Iterable[str], reference_cost: float
) -> Point:
    """`average` over the inputs of some roles only (a task type, the knowledge tasks); cost as a
    fraction of the reference model's cost on those inputs. Calls per input stay the run's."""
    wanted = set(roles)
    accs, costs, judge = [], [], []
    for r in results:
        cells = [cell for role, cell in r.by_role.items() if role in wanted]
        accs.append(sum(c[0] for c in cells) / max(1, sum(c[1] for c in cells)))
        costs.append(sum(c[2] for c in cells))
        judge.append(sum(c[3] for c in cells))
    scale = 1.0 / reference_cost if reference_cost > 0 else 0.0
    return Point(
        policy,
        setting,
        statistics.fmean(accs),
        statistics.stdev(accs) if len(accs) > 1 else 0.0,
        statistics.fmean(costs) * scale,
        statistics.fmean(r.calls_per_input for r in results),
        statistics.fmean(judge) * scale,
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
    header = f"{'policy':<12} {'setting':<26} {'accuracy':>9} {'±sd':>6} {'cost/ref':>9} {'calls/in':>9}"
    print(header + f" {'judge/ref':>9}")
    for p in points:
        print(
            f"{p.policy:<12} {p.setting:<26} {p.accuracy:>9.4f} {p.accuracy_sd:>6.3f}"
            f" {p.cost_fraction:>9.3f} {p.calls_per_input:>9.2f} {p.judge_fraction:>9.3f}"
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
