"""Routing replay benchmark (spec section 9): online, cold-start routing on replayed real LLM results.

    python bench/routing_replay.py --data ../shared/data/routing/per_query_per_model.train.csv [--seeds 5]

Reads a per-query-per-model CSV (see `bench/routing_common.py`); each `dataset` plays a role.
Inputs stream in a seeded random order. Cost is reported as a fraction of always calling the
reference model (gpt-4o) on the same inputs. Two protocols, both scoring every policy on every input
exactly once and never on an input whose labels it was fitted on:

1. Cold start (the main result). Every learning policy (our Role-RL swept over cost weights and
   budgets, the paper's Q-learning, Thompson sampling, cheapest) starts with no data and learns
   online from correctness, measured cost and latency; it pays for its exploration. The tuned
   cascade is the exception, and is *not* cold: it is fitted offline, with every model's label, on a
   train split: `--tune-data FILE` if given, else 2-fold cross-fitting on --data (fold = query index
   parity; an input is routed with the thresholds fitted on the other fold, so it is scored out of
   sample, but it has seen ~half of the data with full information that the online learners lack).
2. Held-out, equal information. The same two folds; for each fold the other fold is the train half.
   The cascade is fitted on the train half as above; the learners get the same information: a warm
   start that replays the train half with full-information feedback (every model's outcome per
   input, `routing_common.warm_start`, not counted as spend), then run online on the test half.
   Results of the two test folds are pooled (each input scored once, by a policy that never saw it).
   Fixed models, random and the oracle do not learn: their numbers are those of protocol 1.

Prints tables and the target checks (targets: protocol 1), the domination checks of both protocols,
and writes a PNG plot if matplotlib is installed. Exits 0 with a message when the data file is
absent; with `--check`, exits 3 when a target is NOT MET. Writes only the plot (--plot, default
bench/out/routing_replay.png).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routing_common import (
    Item,
    Point,
    RunResult,
    average,
    hull_at,
    load_items,
    pool_folds,
    print_table,
    reference_model,
    replay,
    try_pyplot,
    upper_hull,
    warm_start,
)
from targets import Target, add_check_argument, exit_code, print_targets

from policy_store.learner import Budget, RoleRLParams
from policy_store.policies import (
    Call,
    CascadePolicy,
    CascadeStage,
    FollowUp,
    Policy,
    fit_cascade,
    make_policy,
)

ROLE_RL_COST_WEIGHTS = (30.0, 100.0, 300.0, 600.0, 1000.0, 2000.0, 3000.0, 5000.0, 10000.0, 20000.0)
"""k1 (reward points per USD) of the Role-RL sweep; 100 is the paper's default."""
BASELINE_COST_WEIGHTS = (100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)
"""k1 of the cascade and paper Q-learning sweeps."""
WARM_COST_WEIGHTS = (30.0, 300.0, 1000.0, 3000.0, 10000.0)
"""k1 of the warm-started (protocol 2) Role-RL sweep."""
BUDGET_FRACTIONS = (0.25, 0.5)
"""Role-RL with a hard budget per 5-minute window, as a fraction of the reference model's spend."""


class CrossFittedCascade:
    """The tuned cascade, with plans fitted on the other fold of the data (fold = query index parity)."""

    name = "cascade"

    def __init__(self, models: Sequence[str], folds: Mapping[int, Mapping[str, CascadeStage]]) -> None:
        self._by_fold = {f: CascadePolicy(models, plans) for f, plans in folds.items()}
        self._fold: dict[str, int] = {}

    def fold_of(self, context: Mapping[str, Any]) -> CascadePolicy:
        fold = self._fold.get(str(context["input_id"]), 0)
        return self._by_fold[fold]

    def set_folds(self, items: Sequence[Item]) -> None:
        self._fold = {i.key: (i.index % 2 if len(self._by_fold) == 2 else 0) for i in items}

    def select(self, context: Mapping[str, Any], rng: Any) -> tuple[str, float]:
        return self.fold_of(context).select(context, rng)

    def follow_up(self, context: Mapping[str, Any], calls: Sequence[Call], rng: Any) -> FollowUp | None:
        return self.fold_of(context).follow_up(context, calls, rng)

    def update(self, context: Mapping[str, Any], model: str, outcome: Mapping[str, Any]) -> None:
        return None

    def scores(self, context: Mapping[str, Any]) -> dict[str, float]:
        return self.fold_of(context).scores(context)

    def add_model(self, model: str) -> None: ...

    def remove_model(self, model: str) -> None: ...


def cascade_policy(
    models: Sequence[str], items: Sequence[Item], tune: Sequence[Item] | None, k1: float
) -> Policy:
    """The cascade baseline for one cost weight: fitted on --tune-data, or cross-fitted on 2 folds."""
    if tune is not None:
        policy = CrossFittedCascade(models, {0: fit_cascade([i.query() for i in tune], models, k1)})
    else:
        folds = {f: fit_cascade([i.query() for i in items if i.index % 2 == f], models, k1) for f in (0, 1)}
        # an input of parity p is routed with the plan fitted on the other parity
        policy = CrossFittedCascade(models, {1 - f: plans for f, plans in folds.items()})
    policy.set_folds(items)
    return policy


def run(
    name: str, setting: str, build: Any, items: Sequence[Item], seeds: int, ref_cost: float, **kwargs: Any
) -> Point:
    results: list[RunResult] = [replay(build(), items, seed, **kwargs) for seed in range(seeds)]
    return average(name, setting, results, ref_cost)


def role_rl_params(k1: float) -> RoleRLParams:
    return RoleRLParams(cost_weight=k1)


Split = tuple[list[Item], list[Item]]


def parity_splits(items: Sequence[Item]) -> dict[int, Split]:
    """Test fold f (query index parity f) -> (train half = the other parity, test half)."""
    return {
        f: ([i for i in items if i.index % 2 != f], [i for i in items if i.index % 2 == f]) for f in (0, 1)
    }


def learner_for(name: str, models: Sequence[str], params: RoleRLParams, train: Sequence[Item]) -> Policy:
    """A cold learner (protocol 2 warm-starts it on `train` afterwards)."""
    return make_policy(name, models, params=params)


def cascade_for(models: Sequence[str], k1: float, train: Sequence[Item]) -> Policy:
    """The cascade fitted on `train` with every model's label."""
    return CascadePolicy(models, fit_cascade([i.query() for i in train], models, k1))


def run_held_out(
    name: str,
    setting: str,
    build: Callable[[Sequence[Item]], Policy],
    splits: Mapping[int, Split],
    seeds: int,
    ref_cost: float,
    *,
    warm: bool,
) -> Point:
    """Protocol 2: per fold, build the policy from the train half (and warm-start it on the train half
    with full information when `warm`: once per fold, in a fixed order), replay a copy of it online
    on the test half for each seed, and pool the two test folds."""
    prepared: dict[int, Policy] = {}
    for f, (train, _) in splits.items():
        policy = build(train)
        if warm:
            warm_start(policy, train, seed=1000 + f)
        prepared[f] = policy
    results = [
        pool_folds(
            [(replay(copy.deepcopy(prepared[f]), test, seed), len(test)) for f, (_, test) in splits.items()]
        )
        for seed in range(seeds)
    ]
    return average(name, setting, results, ref_cost)


def dominance(title: str, ours: Sequence[Point], families: Mapping[str, Sequence[Point]]) -> None:
    """Print, per baseline family, at how many of its points our hull is at least as accurate at the
    same cost, and the worst accuracy margin (our hull minus the baseline)."""
    our_hull = upper_hull((p.cost_fraction, p.accuracy) for p in ours)
    print(f"domination, {title} (our hull vs each baseline point: accuracy reachable at that point's cost):")
    for family, points in families.items():
        beaten = 0
        worst_gap = None
        for p in points:
            ours_there = hull_at(our_hull, p.cost_fraction)
            gap = None if ours_there is None else ours_there - p.accuracy
            if gap is not None and gap >= 0:
                beaten += 1
            worst_gap = gap if worst_gap is None or (gap is not None and gap < worst_gap) else worst_gap
        worst = "n/a" if worst_gap is None else f"{worst_gap:+.4f}"
        print(f"  {family:<34} dominated at {beaten}/{len(points)} points (worst accuracy margin {worst})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data/routing/per_query_per_model.train.csv")
    )
    parser.add_argument("--tune-data", type=Path, default=None, help="train split for the cascade baseline")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--plot", type=Path, default=Path("bench/out/routing_replay.png"))
    parser.add_argument("--quick", action="store_true", help="fewer settings (smoke test)")
    add_check_argument(parser)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"routing data {args.data} not found: skipping the routing benchmark")
        return 0
    started = time.monotonic()
    items, models = load_items(args.data)
    tune = None
    if args.tune_data is not None:
        if not args.tune_data.is_file():
            print(f"tune data {args.tune_data} not found: skipping the routing benchmark")
            return 0
        tune, tune_models = load_items(args.tune_data)
        models = [m for m in models if m in tune_models]
    if not items:
        print(f"{args.data} has no input answered by every model: nothing to replay")
        return 0
    ref = reference_model(models, items)
    ref_cost = sum(i.rows[ref].cost_usd for i in items)
    ref_acc = sum(i.rows[ref].correct for i in items) / len(items)
    roles = sorted({i.role for i in items})
    print(
        f"{len(items)} inputs x {len(models)} models, roles: {', '.join(roles)}; reference {ref}:"
        f" accuracy {ref_acc:.4f}, cost ${ref_cost:.4f}; seeds {args.seeds}"
    )
    seeds = args.seeds
    weights = ROLE_RL_COST_WEIGHTS[1::2] if args.quick else ROLE_RL_COST_WEIGHTS
    base_weights = BASELINE_COST_WEIGHTS[::2] if args.quick else BASELINE_COST_WEIGHTS

    ours: list[Point] = []
    for k1 in weights:
        ours.append(
            run(
                "role_rl",
                f"k1={k1:g}",
                lambda k1=k1: make_policy("role_rl", models, params=role_rl_params(k1)),
                items,
                seeds,
                ref_cost,
            )
        )
    window_s = 300.0
    per_window = ref_cost / len(items) * window_s  # one input per second
    for frac in () if args.quick else BUDGET_FRACTIONS:
        budget = {"default": Budget(frac * per_window, window_s)}
        ours.append(
            run(
                "role_rl",
                f"budget={frac:.0%}/5min k1=100",
                lambda budget=budget: make_policy("role_rl", models, params=RoleRLParams(), budgets=budget),
                items,
                seeds,
                ref_cost,
                window_s=window_s,
            )
        )
    print_table(ours, "Role-RL (ours): cost-weight and budget sweep")

    baselines: list[Point] = []
    for k1 in base_weights:
        baselines.append(
            run(
                "paper_q",
                f"k1={k1:g}",
                lambda k1=k1: make_policy("paper_q", models, params=RoleRLParams.paper(cost_weight=k1)),
                items,
                seeds,
                ref_cost,
            )
        )
    for k1 in base_weights:
        baselines.append(
            run(
                "cascade",
                f"k1={k1:g} ({'tuned' if tune else '2-fold'}, offline)",
                lambda k1=k1: cascade_policy(models, items, tune, k1),
                items,
                seeds,
                ref_cost,
            )
        )
    baselines.append(
        run("thompson", "accuracy", lambda: make_policy("thompson", models), items, seeds, ref_cost)
    )
    baselines.append(run("random", "", lambda: make_policy("random", models), items, seeds, ref_cost))
    baselines.append(
        run("cheapest", "online", lambda: make_policy("cheapest", models), items, seeds, ref_cost)
    )
    singles = [
        run("fixed", m, lambda m=m: make_policy("fixed", models, model=m), items, 1, ref_cost) for m in models
    ]
    best_single = max(singles, key=lambda p: p.accuracy)
    baselines.extend(sorted(singles, key=lambda p: p.cost_fraction))
    oracle = run(
        "oracle", "per input", lambda: make_policy("oracle", models), items, 1, ref_cost, oracle=True
    )
    print_table([*baselines, oracle], "Baselines (each cold-start and online unless noted)")

    # --- Targets (spec section 9) ----------------------------------------------------------------
    our_hull = upper_hull((p.cost_fraction, p.accuracy) for p in ours)
    print("\nRole-RL accuracy/cost hull:", ", ".join(f"({c:.3f}, {a:.4f})" for c, a in our_hull))
    at_half = max((p.accuracy for p in ours if p.cost_fraction <= 0.5), default=0.0)
    at_quarter = max((p.accuracy for p in ours if p.cost_fraction <= 0.25), default=0.0)
    targets = [
        Target.at_least(
            f"1. accuracy >= {ref}'s {ref_acc:.4f} at <= 50% of its cost (best)", at_half, ref_acc
        ),
        Target.at_least("2. accuracy >= 0.80 at <= 25% of its cost (best)", at_quarter, 0.80),
    ]
    print_targets(targets)
    families: dict[str, list[Point]] = {}
    for p in baselines:
        if p.policy != "fixed" or p is best_single:
            family = p.policy if p.policy != "fixed" else f"best single ({p.setting})"
            if p.policy == "cascade":
                family = "cascade (fitted offline, not cold)"
            families.setdefault(family, []).append(p)
    dominance("protocol 1, cold start", ours, families)

    # --- Protocol 2: held-out, equal information -------------------------------------------------
    splits: dict[int, Split] = {0: (list(tune), list(items))} if tune is not None else parity_splits(items)
    print(
        "\nProtocol 2: the learners first replay the train half with every model's outcome (the"
        " cascade's information), then learn online on the held-out half; "
        + (
            "train = --tune-data, test = --data"
            if tune is not None
            else "two folds by query index parity, pooled"
        )
    )
    warm_weights = WARM_COST_WEIGHTS[1::2] if args.quick else WARM_COST_WEIGHTS
    warm: list[Point] = [
        run_held_out(
            "role_rl",
            f"warm k1={k1:g}",
            partial(learner_for, "role_rl", models, role_rl_params(k1)),
            splits,
            seeds,
            ref_cost,
            warm=True,
        )
        for k1 in warm_weights
    ]
    print_table(warm, "Role-RL (ours), warm-started on the train half, scored on the held-out half")
    held: list[Point] = [
        run_held_out(
            "cascade",
            f"k1={k1:g} (train half)",
            partial(cascade_for, models, k1),
            splits,
            1,  # fixed once fitted: the order of the inputs does not matter
            ref_cost,
            warm=False,
        )
        for k1 in base_weights
    ]
    held += [
        run_held_out(
            "paper_q",
            f"warm k1={k1:g}",
            partial(learner_for, "paper_q", models, RoleRLParams.paper(cost_weight=k1)),
            splits,
            seeds,
            ref_cost,
            warm=True,
        )
        for k1 in base_weights[::2]
    ]
    held.append(
        run_held_out(
            "thompson",
            "warm, accuracy",
            lambda _train: make_policy("thompson", models),
            splits,
            seeds,
            ref_cost,
            warm=True,
        )
    )
    print_table(held, "Baselines with the same information, scored on the held-out half")
    held_families: dict[str, list[Point]] = {}
    for p in held:
        held_families.setdefault(p.policy, []).append(p)
    if tune is None:  # fixed models score the same on the pooled held-out folds (= every input)
        held_families[f"best single ({best_single.setting})"] = [best_single]
    dominance("protocol 2, held-out, equal information", warm, held_families)
    print(f"elapsed {time.monotonic() - started:.0f}s")

    plt = try_pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for family, style in (("role_rl", "o-"), ("paper_q", "s--"), ("cascade", "^--")):
            pts = sorted(
                (p.cost_fraction, p.accuracy)
                for p in [*ours, *baselines]
                if p.policy == family and p.setting.startswith("k1=")
            )
            if pts:
                ax.plot(
                    [c for c, _ in pts],
                    [a for _, a in pts],
                    style,
                    label=f"{family} (k1 sweep{', fitted offline' if family == 'cascade' else ', cold'})",
                )
        budgeted = [p for p in ours if p.setting.startswith("budget")]
        ax.scatter(
            [p.cost_fraction for p in budgeted],
            [p.accuracy for p in budgeted],
            marker="D",
            s=30,
            label="role_rl with a hard budget",
        )
        for p in baselines:
            if p.policy in ("thompson", "random", "cheapest", "fixed"):
                ax.scatter([p.cost_fraction], [p.accuracy], s=18)
                ax.annotate(
                    p.setting if p.policy == "fixed" else p.policy, (p.cost_fraction, p.accuracy), fontsize=7
                )
        pts = sorted((p.cost_fraction, p.accuracy) for p in warm)
        ax.plot([c for c, _ in pts], [a for _, a in pts], "o:", label="role_rl warm-started (protocol 2)")
        ax.scatter([oracle.cost_fraction], [oracle.accuracy], marker="*", s=80, label="oracle (per input)")
        ax.axhline(ref_acc, color="grey", lw=0.6, ls=":")
        ax.axvline(0.5, color="grey", lw=0.6, ls=":")
        ax.axvline(0.25, color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel(f"cost / always-{ref} cost")
        ax.set_ylabel("accuracy")
        ax.set_title(f"Online routing ({len(items)} inputs, {seeds} seeds; every input scored out of sample)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")
    return exit_code(targets, args.check)


if __name__ == "__main__":
    raise SystemExit(main())
