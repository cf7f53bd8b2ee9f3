"""Budget benchmark (spec sections 4 and 9): Role-RL holds a hard spend limit per time window.

    python bench/budget.py --data ../shared/data/routing/per_query_per_model.train.csv \
        [--seeds 3] [--window 60]

Replays the routing CSV (see `bench/routing_common.py`) as a live feed, one input per second,
through Role-RL from a cold start: first without a budget (the unconstrained spend per window),
then with hard budgets per window set below that spend. Feedback is the oracle's (every call
labelled free): this benchmark measures whether the limit holds, not what labels cost; judge spend
is booked by the running system, not by the learner's ledger. Prints, per budget, the largest window
spend as a share of the limit, the windows over it, accuracy and cost, and one run's per-window
series; writes a PNG plot if matplotlib is installed. Exits 0 with a message when the data file is
absent; with `--check`, exits 3 when a budget is exceeded in some window. Writes only the plot
(--plot, default bench/out/budget.png).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routing_common import ORACLE, RunResult, load_items, reference_model, replay, try_pyplot
from targets import Target, add_check_argument, report_targets

from policy_store.learner import Budget, RoleRLParams
from policy_store.policies import make_policy

BUDGET_FRACTIONS = (0.75, 0.5, 0.3)
"""Budgets per window as a share of the unconstrained run's mean spend per window."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data/routing/per_query_per_model.train.csv")
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--window", type=float, default=60.0, help="budget window in seconds (one input per second)"
    )
    parser.add_argument(
        "--cost-weight", type=float, default=100.0, help="k1 of the learner (paper default 100)"
    )
    parser.add_argument("--plot", type=Path, default=Path("bench/out/budget.png"))
    add_check_argument(parser)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"routing data {args.data} not found: skipping the budget benchmark")
        return 0
    started = time.monotonic()
    items, models = load_items(args.data)
    if not items:
        print(f"{args.data} has no input answered by every model: nothing to replay")
        return 0
    ref = reference_model(models, items)
    ref_cost = sum(i.rows[ref].cost_usd for i in items)
    params = RoleRLParams(cost_weight=args.cost_weight)
    window = args.window

    def runs(budget: Budget | None) -> list[RunResult]:
        budgets = {"default": budget} if budget else None
        return [
            replay(
                make_policy("role_rl", models, params=params, budgets=budgets), items, seed, window_s=window
            )
            for seed in range(args.seeds)
        ]

    free = runs(None)
    full_windows = [w for r in free for w in r.window_spend[:-1]]  # the last window is partial
    free_mean = statistics.fmean(full_windows)
    print(
        f"{len(items)} inputs, one per second, windows of {window:g}s; Role-RL k1={args.cost_weight:g}, "
        f"{args.seeds} seeds, cold start; feedback: {ORACLE.describe()}"
    )
    print(
        f"unconstrained: mean ${free_mean:.5f} per window (max ${max(full_windows):.5f}),"
        f" accuracy {statistics.fmean(r.accuracy for r in free):.4f},"
        f" cost {statistics.fmean(r.cost_usd for r in free) / ref_cost:.3f} of always-{ref}"
    )
    print(
        f"\n{'budget/window':>14} {'share':>6} {'max spend/limit':>16} {'windows over':>13}"
        f" {'mean spend/limit':>17} {'accuracy':>9} {'cost/ref':>9}"
    )
    series: dict[float, tuple[float, tuple[float, ...]]] = {}
    windows, windows_over = 0, 0
    for frac in BUDGET_FRACTIONS:
        limit = frac * free_mean
        results = runs(Budget(limit, window))
        spends = [w for r in results for w in r.window_spend]
        over = sum(1 for w in spends if w > limit + 1e-12)
        windows, windows_over = windows + len(spends), windows_over + over
        series[frac] = (limit, results[0].window_spend)
        accuracy = statistics.fmean(r.accuracy for r in results)
        cost = statistics.fmean(r.cost_usd for r in results) / ref_cost
        print(
            f"{'$' + format(limit, '.5f'):>14} {frac:>6.0%} {max(spends) / limit:>16.3f}"
            f" {over:>6}/{len(spends):<6} {statistics.fmean(spends) / limit:>17.3f} {accuracy:>9.4f}"
            f" {cost:>9.3f}"
        )
    print()
    held = Target(
        "every budget held in every window", f"{windows_over} of {windows} windows over", windows_over == 0
    )
    code = report_targets([held], args.check)
    mid = BUDGET_FRACTIONS[len(BUDGET_FRACTIONS) // 2]
    limit, spend = series[mid]
    print(
        f"per-window spend, budget {mid:.0%} (${limit:.5f}), seed 0: "
        + " ".join(f"{w / limit:.2f}" for w in spend)
        + "  (share of the limit)"
    )
    print(f"elapsed {time.monotonic() - started:.0f}s")

    plt = try_pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.plot(free[0].window_spend, "k:", label="no budget")
        for frac, (limit, spend) in series.items():
            line = ax.plot(spend, "-", label=f"budget {frac:.0%} of unconstrained")
            ax.axhline(limit, color=line[0].get_color(), lw=0.8, ls="--")
        ax.set_xlabel(f"window ({window:g}s)")
        ax.set_ylabel("USD spent in the window")
        ax.set_title("Role-RL spend per window under hard budgets (dashed: limits)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
