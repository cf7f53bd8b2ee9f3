"""Routing replay benchmark (spec section 9): online, cold-start routing on replayed real LLM results,
without free labels.

    python bench/routing_replay.py --data ../shared/data/routing/per_query_per_model.train.csv \
        [--feedback judge --judge-rate 0.1 --judge gpt-4o] [--seeds 3] [--quick] [--holdout] [--check]

Reads a per-query-per-model CSV (see `bench/routing_common.py`); each `dataset` (task type) plays a
role. Cost is reported as a fraction of always calling the reference model (gpt-4o) on the same
inputs, every judge call included.

Feedback (`routing_common.Feedback`): `--feedback judge` (the default, the spec's protocol) asks the
judge model on a share `--judge-rate` of the calls; its verdict follows the judge model's own
correctness on the query (`routing_common.verdict`), its cost is the judge model's cost on that
query, and an unjudged call gives no quality label. `--feedback oracle` gives every call the
dataset's correctness free (the old protocol; an upper bound, labelled as such). Every policy that
learns online (our Role-RL, the paper's Q-learning, Thompson sampling) gets the same feedback and
pays for it; policies that do not learn online (single models, the cascade fitted offline on the
tune part with every label) neither get nor pay for it.

Honest splits (`routing_common.split_items`): the file is split by query, stratified by task type,
with a fixed seed, into tune (50%), report (30%) and holdout (20%). Every learner starts cold on
each part. Settings (the cost weight k1 of each family, the best single model, the cascade's plan)
are chosen on tune and reported on report; the holdout is evaluated only with `--holdout`, for the
settings chosen on tune. Every figure is printed pooled, per task type and on the four knowledge
tasks alone. The cost/accuracy curve of our learner is printed for judge rates 1, 0.2, 0.1, 0.05
(`--rates`).

Targets (on report, or on holdout with `--holdout`; judge feedback, cold start, pooled): gpt-4o's
accuracy at <= 50% of its cost and >= 0.80 at <= 25%, each with the setting chosen on tune;
domination of paper Q-learning, Thompson sampling and the best single model: for each of their
points, our setting chosen on tune for that point's tune cost is at least as accurate at no more
cost on the evaluated part. The gap to the cascade is reported. Exits 0 with a message when the data
file is absent; with `--check`, exits 3 when a target is NOT MET. Writes only the plot (--plot).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routing_common import (
    KNOWLEDGE_TASKS,
    ORACLE,
    Feedback,
    Item,
    Point,
    RunResult,
    group_average,
    load_items,
    print_table,
    reference_model,
    replay,
    split_items,
    try_pyplot,
)
from targets import Target, add_check_argument, exit_code, print_targets

from policy_store.learner import RoleRLParams
from policy_store.policies import CascadePolicy, Policy, fit_cascade, make_policy

ROLE_RL_COST_WEIGHTS = (100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)
"""k1 (reward points per USD) of the Role-RL sweep; 100 is the paper's default."""
BASELINE_COST_WEIGHTS = (100.0, 1000.0, 10000.0, 30000.0)
"""k1 of the paper Q-learning and cascade sweeps."""
CURVE_RATES = (1.0, 0.2, 0.1, 0.05)


@dataclass(frozen=True)
class Setting:
    """One policy setting: how to build it, and whether it learns online (gets and pays feedback)."""

    policy: str
    name: str
    build: Callable[[], Policy]
    learns: bool = True
    seeds: int | None = None  # None: every seed; 1 for policies the input order cannot change


Runs = dict[tuple[str, str], list[RunResult]]


def settings_for(
    models: Sequence[str], tune: Sequence[Item], quick: bool, rate_curve_only: bool = False
) -> list[Setting]:
    """Every policy setting compared: ours, the paper's Q-learning, Thompson sampling, the cascade
    fitted on tune, and every single model."""
    weights = ROLE_RL_COST_WEIGHTS[::2] if quick else ROLE_RL_COST_WEIGHTS
    out = [
        Setting("role_rl", f"k1={k1:g}", lambda k1=k1: make_policy("role_rl", models, params=_ours(k1)))
        for k1 in weights
    ]
    if rate_curve_only:
        return out
    base = BASELINE_COST_WEIGHTS[::2] if quick else BASELINE_COST_WEIGHTS
    out += [
        Setting(
            "paper_q",
            f"k1={k1:g}",
            lambda k1=k1: make_policy("paper_q", models, params=RoleRLParams.paper(cost_weight=k1)),
        )
        for k1 in base
    ]
    out.append(Setting("thompson", "accuracy", lambda: make_policy("thompson", models)))
    queries = [i.query() for i in tune]
    for k1 in base:
        plans = fit_cascade(queries, models, k1)
        out.append(
            Setting("cascade", f"k1={k1:g} fit on tune", lambda p=plans: CascadePolicy(models, p), False, 1)
        )
    out += [Setting("fixed", m, lambda m=m: make_policy("fixed", models, model=m), False, 1) for m in models]
    return out


def _ours(k1: float) -> RoleRLParams:
    return RoleRLParams(cost_weight=k1)


def run_all(settings: Sequence[Setting], items: Sequence[Item], feedback: Feedback, seeds: int) -> Runs:
    runs: Runs = {}
    for s in settings:
        fb = feedback if s.learns else ORACLE  # the fixed and offline policies ignore feedback: no judge
        runs[(s.policy, s.name)] = [
            replay(s.build(), items, seed, feedback=fb) for seed in range(s.seeds or seeds)
        ]
    return runs


@dataclass(frozen=True)
class Groups:
    """The groups every figure is reported on: pooled, each task type, the knowledge tasks."""

    roles: dict[str, tuple[str, ...]]
    ref_cost: dict[str, float]
    ref_acc: dict[str, float]

    @classmethod
    def of(cls, items: Sequence[Item], ref: str) -> Groups:
        types = sorted({i.role for i in items})
        roles = {"pooled": tuple(types), **{t: (t,) for t in types}}
        knowledge = tuple(t for t in types if t in KNOWLEDGE_TASKS)
        if knowledge and len(knowledge) < len(types):
            roles["knowledge (4 tasks)"] = knowledge
        cost, acc = {}, {}
        for name, rs in roles.items():
            subset = [i for i in items if i.role in rs]
            cost[name] = sum(i.rows[ref].cost_usd for i in subset)
            acc[name] = sum(i.rows[ref].correct for i in subset) / max(1, len(subset))
        return cls(roles, cost, acc)

    def points(self, runs: Runs, group: str) -> dict[tuple[str, str], Point]:
        return {
            key: group_average(key[0], key[1], results, self.roles[group], self.ref_cost[group])
            for key, results in runs.items()
        }


def choose(points: Mapping[tuple[str, str], Point], family: str, max_cost: float) -> tuple[str, str] | None:
    """The family's most accurate setting costing at most `max_cost` (ties: the cheaper); None when
    none is that cheap. Called on the tune part only."""
    fitting = [k for k, p in points.items() if k[0] == family and p.cost_fraction <= max_cost]
    if not fitting:
        return None
    return max(fitting, key=lambda k: (points[k].accuracy, -points[k].cost_fraction))


def chosen_settings(tune: Mapping[tuple[str, str], Point], ref_acc: float) -> dict[str, tuple[str, str]]:
    """Settings chosen on tune: ours at <= 50% and <= 25% of the reference cost (at 50%, the
    cheapest setting reaching the reference accuracy if one does), the best single model, and the
    most accurate point of each baseline family within each budget."""
    out: dict[str, tuple[str, str]] = {}
    reaching = [k for k, p in tune.items() if k[0] == "role_rl" and p.cost_fraction <= 0.5]
    reaching = [k for k in reaching if tune[k].accuracy >= ref_acc]
    half = min(reaching, key=lambda k: tune[k].cost_fraction) if reaching else choose(tune, "role_rl", 0.5)
    quarter = choose(tune, "role_rl", 0.25)
    if half:
        out["ours <= 50%"] = half
    if quarter:
        out["ours <= 25%"] = quarter
    singles = [k for k in tune if k[0] == "fixed"]
    if singles:
        out["best single"] = max(singles, key=lambda k: (tune[k].accuracy, -tune[k].cost_fraction))
    for family in ("paper_q", "thompson", "cascade"):
        for label, bound in (("<= 50%", 0.5), ("<= 25%", 0.25), ("best", float("inf"))):
            key = choose(tune, family, bound)
            if key:
                out[f"{family} {label}"] = key
    return out


def domination(
    tune: Mapping[tuple[str, str], Point], evaluated: Mapping[tuple[str, str], Point], family: str
) -> tuple[int, int, list[str]]:
    """For each point of `family`: our setting chosen on tune within that point's tune cost; does
    it reach the point's accuracy at no more cost on the evaluated part? (dominated, points, lines)"""
    lines, dominated, total = [], 0, 0
    for key in (k for k in evaluated if k[0] == family):
        total += 1
        ours = choose(tune, "role_rl", tune[key].cost_fraction)
        theirs = evaluated[key]
        if ours is None:
            lines.append(f"    {family} {key[1]}: no setting of ours that cheap on tune")
            continue
        mine = evaluated[ours]
        ok = mine.accuracy >= theirs.accuracy and mine.cost_fraction <= theirs.cost_fraction
        dominated += ok
        lines.append(
            f"    {family} {key[1]:<22} acc {theirs.accuracy:.4f} cost {theirs.cost_fraction:.3f}"
            f" | ours {ours[1]:<9} acc {mine.accuracy:.4f} cost {mine.cost_fraction:.3f}"
            f" (acc {mine.accuracy - theirs.accuracy:+.4f}) {'dominated' if ok else 'NOT dominated'}"
        )
    return dominated, total, lines


def print_groups(groups: Groups, runs: Runs, part: str, keys: Sequence[tuple[str, str]] | None) -> None:
    for group in groups.roles:
        points = groups.points(runs, group)
        shown = [points[k] for k in (keys or list(points)) if k in points]
        print_table(
            shown,
            f"[{part}] {group}: {groups.ref_acc[group]:.4f} accuracy for the reference,"
            f" ${groups.ref_cost[group]:.4f}",
        )


def targets_on(
    part: str,
    groups: Groups,
    tune: Mapping[tuple[str, str], Point],
    runs: Runs,
    chosen: Mapping[str, tuple[str, str]],
    ref: str,
) -> list[Target]:
    """The spec's targets on an evaluated part, with the settings chosen on tune."""
    pooled = groups.points(runs, "pooled")
    ref_acc = groups.ref_acc["pooled"]
    targets = []
    half, quarter = chosen.get("ours <= 50%"), chosen.get("ours <= 25%")
    if half:
        p = pooled[half]
        targets.append(
            Target(
                f"[{part}] 1. {ref}'s accuracy {ref_acc:.4f} at <= 50% of its cost"
                f" ({half[1]}, chosen on tune)",
                f"{p.accuracy:.4f} at {p.cost_fraction:.3f}",
                p.accuracy >= ref_acc and p.cost_fraction <= 0.5,
            )
        )
    if quarter:
        p = pooled[quarter]
        targets.append(
            Target(
                f"[{part}] 2. accuracy >= 0.80 at <= 25% of its cost ({quarter[1]}, chosen on tune)",
                f"{p.accuracy:.4f} at {p.cost_fraction:.3f}",
                p.accuracy >= 0.80 and p.cost_fraction <= 0.25,
            )
        )
    print(f"\n[{part}] domination (pooled; our setting chosen on tune at each baseline point's tune cost):")
    best_single = chosen.get("best single")
    families = ["paper_q", "thompson", "fixed" if best_single else None, "cascade"]
    for family in [f for f in families if f]:
        evaluated = {k: p for k, p in pooled.items() if k[0] != "fixed" or k == best_single}
        done, total, lines = domination(tune, evaluated, family)
        name = f"best single ({best_single[1]})" if family == "fixed" and best_single else family
        print(f"  {name}: dominated at {done}/{total} points")
        print("\n".join(lines))
        if family != "cascade":
            targets.append(Target(f"[{part}] 3. dominates {name}", f"{done}/{total} points", done == total))
    return targets


def print_curve(
    models: Sequence[str],
    parts: Mapping[str, Sequence[Item]],
    feedback: Feedback,
    rates: Sequence[float],
    seeds: int,
    quick: bool,
    ref: str,
) -> None:
    """Our learner's cost/accuracy points for each judge rate: settings chosen on tune, figures on report."""
    print(f"\nCost/accuracy curve of role_rl by judge rate (judge {feedback.judge}):")
    print(
        f"{'rate':>6} {'group':<22} {'setting':<10} {'accuracy':>9} {'cost/ref':>9}"
        f" {'tune acc':>9} {'tune cost':>9}"
    )
    for rate in rates:
        fb = Feedback("judge", rate, feedback.judge)
        settings = settings_for(models, parts["tune"], quick, rate_curve_only=True)
        tune_groups, report_groups = Groups.of(parts["tune"], ref), Groups.of(parts["report"], ref)
        tune_runs = run_all(settings, parts["tune"], fb, seeds)
        report_runs = run_all(settings, parts["report"], fb, seeds)
        for group in ("pooled", "knowledge (4 tasks)"):
            if group not in tune_groups.roles:
                continue
            tune = tune_groups.points(tune_runs, group)
            report = report_groups.points(report_runs, group)
            for key in sorted(report, key=lambda k: report[k].cost_fraction):
                p, t = report[key], tune[key]
                print(
                    f"{rate:>6g} {group:<22} {key[1]:<10} {p.accuracy:>9.4f} {p.cost_fraction:>9.3f}"
                    f" {t.accuracy:>9.4f} {t.cost_fraction:>9.3f}"
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data/routing/per_query_per_model.train.csv")
    )
    parser.add_argument("--feedback", choices=("judge", "oracle"), default="judge")
    parser.add_argument("--judge-rate", type=float, default=0.1, help="share of calls judged")
    parser.add_argument("--judge", default="gpt-4o", help="the judge model (a model of the file)")
    parser.add_argument(
        "--rates",
        default=",".join(f"{r:g}" for r in CURVE_RATES),
        help="judge rates of the curve ('' skips it)",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--holdout", action="store_true", help="also evaluate the holdout part (once, at the end)"
    )
    parser.add_argument("--plot", type=Path, default=Path("bench/out/routing_replay.png"))
    parser.add_argument("--quick", action="store_true", help="fewer settings (smoke test)")
    add_check_argument(parser)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"routing data {args.data} not found: skipping the routing benchmark")
        return 0
    started = time.monotonic()
    items, models = load_items(args.data)
    if not items:
        print(f"{args.data} has no input answered by every model: nothing to replay")
        return 0
    ref = reference_model(models, items)
    if args.feedback == "judge" and args.judge not in models:
        print(f"judge {args.judge!r} is not a model of {args.data}")
        return 2
    feedback = Feedback(args.feedback, args.judge_rate if args.feedback == "judge" else 1.0, args.judge)
    parts = split_items(items)
    print(
        f"{len(items)} inputs x {len(models)} models; reference {ref}; feedback: {feedback.describe()};"
        f" seeds {args.seeds}; split by query, stratified by task type: "
        + ", ".join(f"{name} {len(part)}" for name, part in parts.items())
    )
    settings = settings_for(models, parts["tune"], args.quick)
    tune_groups = Groups.of(parts["tune"], ref)
    tune_runs = run_all(settings, parts["tune"], feedback, args.seeds)
    tune = tune_groups.points(tune_runs, "pooled")
    chosen = chosen_settings(tune, tune_groups.ref_acc["pooled"])
    print_table(list(tune.values()), "[tune] pooled, every setting (settings are chosen here)")
    print("\nchosen on tune: " + "; ".join(f"{label}: {k[0]} {k[1]}" for label, k in chosen.items()))

    evaluated = {"report": parts["report"], **({"holdout": parts["holdout"]} if args.holdout else {})}
    targets: list[Target] = []
    report_runs: Runs = {}
    for part, part_items in evaluated.items():
        groups = Groups.of(part_items, ref)
        runs = run_all(settings, part_items, feedback, args.seeds)
        report_runs = runs if part == "report" else report_runs
        print_groups(groups, runs, part, None)
        print(f"\n[{part}] the settings chosen on tune, per group:")
        keys = list(dict.fromkeys(chosen.values()))
        print_groups(groups, runs, part, keys)
        targets += targets_on(part, groups, tune, runs, chosen, ref)
    print()
    print_targets(targets)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if rates and args.feedback == "judge":
        print_curve(models, parts, feedback, rates, args.seeds, args.quick, ref)
    print(f"elapsed {time.monotonic() - started:.0f}s")
    plot(Groups.of(parts["report"], ref).points(report_runs, "pooled"), args.plot, feedback)
    return exit_code(targets, args.check)


def plot(points: Mapping[tuple[str, str], Point], path: Path, feedback: Feedback) -> None:
    plt = try_pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for family, style in (("role_rl", "o-"), ("paper_q", "s--"), ("cascade", "^--")):
        pts = sorted((p.cost_fraction, p.accuracy) for k, p in points.items() if k[0] == family)
        if pts:
            ax.plot([c for c, _ in pts], [a for _, a in pts], style, label=family)
    for key, p in points.items():
        if key[0] in ("thompson", "fixed"):
            ax.scatter([p.cost_fraction], [p.accuracy], s=18)
            ax.annotate(key[1] if key[0] == "fixed" else key[0], (p.cost_fraction, p.accuracy), fontsize=7)
    ax.axvline(0.5, color="grey", lw=0.6, ls=":")
    ax.axvline(0.25, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("cost / always-reference cost (judge calls included)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Online routing, report part; feedback: {feedback.mode} {feedback.rate:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
