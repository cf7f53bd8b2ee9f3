"""Paper replication (spec sections 4 and 9): replay the Role-RL paper's cached, board-judged role
outputs through our learner and compare its selections and cost with the paper's.

    python bench/paper_replication.py --data ../shared/data/role-rl [--iters 6000] [--seeds 3]

Reads `output_dict_judged_by_Gem.txt` and `output_dict_judged_by_Cla.txt` (Python literals:
{task: [per LLM: [topic finder, topic locator, relationship checker, content organizer]]}, each
entry with the judged `reward` and `cost` = [USD per call, judge cost]; LLM order llama3-8b,
mixtral-8x7b, command-r, gpt-4o, gemini-1.5-pro, claude-3-opus). Each judge's verdict k is recovered
from its reward (r = 10k - c - 0.1, the released code's reward with t = 1 s), and the learner
combines the two judges' verdicts with its board weights, as the paper does. `--judge-rate R`
asks the board on a share R of the calls (a draw seeded per call; default 1, the paper's
protocol); an unjudged call reaches the learner without a quality label. The schedule follows the
released code, shortened: a warm-up on Task3, training with random task switches (p = 0.03),
then test phases tough (Task1), easy (Task2), medium (Task3). Prints the kept LLM per role and
test task, the board weights, and the cost saving vs running every role on claude-3-opus (every
call counted; and every call plus the board's verdicts, each judged call costing what the cache
says its verdict cost, for the board members with weight), and
writes a PNG plot if matplotlib is installed (--plot, default bench/out/paper_replication.png).
Exits 0 with a message when the folder is absent; with `--check`, exits 3 when a target (the
paper's selections, >= 74% saving; spec section 9) is NOT MET.
"""

from __future__ import annotations

import argparse
import ast
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from targets import Target, add_check_argument, report_targets

from policy_store.learner import RoleRL, RoleRLParams

LLMS = ("llama3-8b", "mixtral-8x7b", "command-r", "gpt-4o", "gemini-1.5-pro", "claude-3-opus")
ROLES = ("topic_finder", "topic_locator", "relationship_checker", "content_organizer")
JUDGES = {"Gem": "gemini-1.5-pro", "Cla": "claude-3-opus"}
EASY, MEDIUM, TOUGH = "Task2.txt", "Task3.txt", "Task1.txt"  # the released code's File_path order
PAPER = {  # the paper's reported selections (spec section 4)
    "topic_finder": "depends on difficulty",
    "topic_locator": "gemini-1.5-pro",
    "relationship_checker": "command-r",
    "content_organizer": "gemini-1.5-pro",
    "board": "claude-3-opus",
}
Cache = dict[
    str, dict[str, dict[str, dict[str, tuple[float, float, float]]]]
]  # judge -> task -> LLM -> role -> (k, cost, judge cost)


def load(folder: Path) -> Cache:
    """Both judges' verdicts: judge -> task -> LLM -> role -> (k, USD per call, USD the judge's
    verdict on that call cost)."""
    cache: Cache = {}
    for tag, judge in JUDGES.items():
        raw = ast.literal_eval((folder / f"output_dict_judged_by_{tag}.txt").read_text(encoding="utf-8"))
        cache[judge] = {}
        for task, per_llm in raw.items():
            cache[judge][task] = {}
            for llm, entries in zip(LLMS, per_llm, strict=True):
                cache[judge][task][llm] = {}
                for role, entry in zip(ROLES, entries, strict=True):
                    cost, judge_cost = float(entry["cost"][0]), float(entry["cost"][1])
                    k = (float(entry["reward"]) + 0.1 + cost) / 10.0  # r = 10k - 0.1*t - c, t = 1
                    cache[judge][task][llm][role] = (k, cost, judge_cost)
    return cache


def schedule(iters: int, rng: random.Random) -> list[tuple[str, str]]:
    """(phase, task) per iteration, after the released code: warm-up, training, tests."""
    test = 500
    train_end = iters - 4 * test
    out: list[tuple[str, str]] = []
    task, tough = MEDIUM, False
    for i in range(train_end):
        if i >= 500 and rng.random() < 0.03:  # the code's random task switch
            pick = rng.randint(0, 3)
            tough = pick == 3
            task = rng.choice([MEDIUM, TOUGH]) if tough else (EASY, MEDIUM, TOUGH)[pick]
        elif tough:
            task = rng.choice([MEDIUM, TOUGH])
        out.append(("train", task))
    out += [("prepare", rng.choice([MEDIUM, TOUGH])) for _ in range(test)]
    out += [("test tough", TOUGH)] * test + [("test easy", EASY)] * test + [("test medium", MEDIUM)] * test
    return out


def replay(
    cache: Cache, params: RoleRLParams, iters: int, seed: int, judge_rate: float = 1.0
) -> dict[str, Any]:
    rng = random.Random(seed)
    learner = RoleRL(
        {role: LLMS for role in ROLES}, params, random.Random(seed), board={"gemini-1.5-pro": 1.0}
    )
    kept: dict[tuple[str, str], Counter[str]] = {}
    spent = {"kept": 0.0, "all calls": 0.0, "claude": 0.0, "judge": 0.0}
    test_spent = {"kept": 0.0, "all calls": 0.0, "claude": 0.0, "judge": 0.0}
    event = 0
    trace: list[tuple[int, str, str, dict[str, float]]] = []
    for step, (phase, task) in enumerate(schedule(iters, rng)):
        for role in ROLES:
            prev = learner.last_state(role)
            plan = learner.assignment(role).sample(rng)
            calls = [plan.primary, *(m for m, _ in plan.extras)]
            cost_of: dict[str, float] = {}
            reward_of: dict[str, float] = {}
            judge_cost = 0.0
            for model in calls:
                verdicts = {j: cache[j][task][model][role][0] for j in JUDGES.values()}
                weights = {j: learner.board_weights().get(j, 0.0) for j in JUDGES.values()}
                total = sum(weights.values()) or 1.0
                cost = sum(weights[j] * cache[j][task][model][role][1] for j in JUDGES.values()) / total
                if not any(weights.values()):
                    cost = statistics.fmean(cache[j][task][model][role][1] for j in JUDGES.values())
                event += 1
                judged = judge_rate >= 1.0 or random.Random(f"judge:{seed}:{event}").random() < judge_rate
                k = learner.combine_verdicts(verdicts) if judged else None
                if judged:  # the board members with weight (all while none has any) are asked
                    board = [j for j in JUDGES.values() if weights[j] > 0] or list(JUDGES.values())
                    judge_cost += sum(cache[j][task][model][role][2] for j in board)
                learner.observe(
                    {
                        "event_id": f"{seed}:{event}",
                        "role": role,
                        "model": model,
                        "policy_version": learner.version(role),
                        "propensity": 1.0,
                        "prev_model": prev[0] if prev else None,
                        "prev_success": prev[1] if prev else True,
                        "latency_ms": 1000.0,
                        "tokens_in": 0,
                        "tokens_out": 0,
                        "cost_usd": cost,
                        "success": True,
                        "error": None,
                        "quality": k,
                        "source": "judge" if judged else "processor",
                        "stream_id": f"{seed}:{step}",
                        "chunk_id": "0",
                        "ts_ms": step * 1000,
                    }
                )
                cost_of[model] = cache["claude-3-opus"][task][model][role][1]
                reward_of[model] = 10.0 * (k or 0.0) - cost - 0.1
            best = max(calls, key=lambda m: reward_of[m])  # the paper keeps the better answer
            for bucket in (spent, test_spent) if phase.startswith("test") else (spent,):
                bucket["kept"] += cost_of[best]
                bucket["all calls"] += sum(cost_of.values())
                bucket["judge"] += judge_cost
                bucket["claude"] += cache["claude-3-opus"][task]["claude-3-opus"][role][1]
            if phase.startswith("test"):
                kept.setdefault((role, phase), Counter())[best] += 1
        if step % 250 == 0:
            trace.append((step, phase, task, dict(learner.board_weights())))
    return {
        "kept": kept,
        "spent": spent,
        "test_spent": test_spent,
        "board": learner.board_weights(),
        "elections": learner.counters["elections"],
        "trace": trace,
    }


def report(name: str, results: Sequence[dict[str, Any]]) -> tuple[bool, float, float]:
    """Print the kept LLM per role and test phase; True when the selections match the paper's:
    the paper's LLM is the role's most kept one over the three test phases, the topic finder's
    choice changes with difficulty, and the board is led by the paper's judge."""
    print(f"\n=== {name} ({len(results)} seeds) ===")
    phases = ("test tough", "test easy", "test medium")
    print(f"{'role':<22}" + "".join(f"{p:>26}" for p in phases) + f"{'overall':>22}{'paper':>24}")
    matches = 0
    for role in ROLES:
        cells, tops = [], []
        overall: Counter[str] = Counter()
        for phase in phases:
            counts: Counter[str] = Counter()
            for r in results:
                counts.update(r["kept"][(role, phase)])
            overall.update(counts)
            model, n = counts.most_common(1)[0]
            tops.append(model)
            cells.append(f"{model} {n / sum(counts.values()):.0%}")
        top = overall.most_common(1)[0][0]
        ok = len(set(tops)) > 1 if role == "topic_finder" else top == PAPER[role]
        matches += ok
        print(
            f"{role:<22}"
            + "".join(f"{c:>26}" for c in cells)
            + f"{top:>22}{PAPER[role]:>24}"
            + ("" if ok else "  (differs)")
        )
    board: Counter[str] = Counter()
    for r in results:
        board.update(r["board"])
    leader = max(board, key=lambda m: board[m]) if board else "none"
    weights = ", ".join(f"{m} {w / len(results):.2f}" for m, w in board.most_common())
    ok = leader == PAPER["board"]
    matches += ok
    print(
        f"{'board weights':<22}{weights}   -> {leader} (paper: {PAPER['board']})"
        + ("" if ok else "  (differs)")
    )
    for label, key in (("test phases", "test_spent"), ("whole run", "spent")):
        saving_kept = statistics.fmean(1 - r[key]["kept"] / r[key]["claude"] for r in results)
        saving_all = statistics.fmean(1 - r[key]["all calls"] / r[key]["claude"] for r in results)
        saving_judged = statistics.fmean(
            1 - (r[key]["all calls"] + r[key]["judge"]) / r[key]["claude"] for r in results
        )
        print(
            f"cost saving vs all-claude-3-opus, {label}: {saving_all:.1%} counting every call (duels and"
            f" start included), {saving_kept:.1%} counting the kept answers (the paper's accounting),"
            f" {saving_judged:.1%} counting every call and the board's verdicts"
        )
    test = [r["test_spent"] for r in results]
    saving = statistics.fmean(1 - t["all calls"] / t["claude"] for t in test)
    judged = statistics.fmean(1 - (t["all calls"] + t["judge"]) / t["claude"] for t in test)
    return matches == len(ROLES) + 1, saving, judged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/role-rl"))
    parser.add_argument("--iters", type=int, default=10000, help="iterations (the paper ran 50000)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--judge-rate",
        type=float,
        default=1.0,
        help="share of calls the board judges (1: the paper's protocol); unjudged calls carry no label",
    )
    parser.add_argument("--plot", type=Path, default=Path("bench/out/paper_replication.png"))
    add_check_argument(parser)
    args = parser.parse_args(argv)
    if not all((args.data / f"output_dict_judged_by_{t}.txt").is_file() for t in JUDGES):
        print(f"role-rl cache not found in {args.data}: skipping the paper replication")
        return 0
    started = time.monotonic()
    cache = load(args.data)
    # The released code's reward: r = 10k - c - 0.1*t (cost weight 1 per USD, t = 1 s).
    settings = {
        "our Role-RL learner, paper mode": RoleRLParams.paper(cost_weight=1.0, latency_weight=0.1),
        "our Role-RL, extensions on (mode role_rl)": RoleRLParams(
            cost_weight=1.0,
            latency_weight=0.1,
            min_step=0.1,
            cascade=False,
            explore_floor=0.03,
            pool_prior=0.5,
            state_prior=1.0,
            evidence=(("judge", 1.0, 0.0),),  # the board's cached verdicts are this data set's labels
        ),
    }
    summary = []
    runs: dict[str, list[dict[str, Any]]] = {}
    for name, params in settings.items():
        results = runs[name] = [
            replay(cache, params, args.iters, seed, args.judge_rate) for seed in range(args.seeds)
        ]
        same, saving, judged = report(name, results)
        summary.append((name, same, saving, judged))
    print(f"\nthe board judges {args.judge_rate:g} of the calls")
    targets = []
    for name, same, saving, judged in summary:
        targets += [
            Target(f"{name}: the paper's selections", "match" if same else "differ", same),
            Target.at_least(
                f"{name}: cost saving >= 74% in the test phases (every call counted)", saving, 0.74, ".1%"
            ),
            Target.at_least(
                f"{name}: cost saving >= 74% in the test phases (every call and the board's cost counted)",
                judged,
                0.74,
                ".1%",
            ),
        ]
    code = report_targets(targets, args.check)
    print(f"elapsed {time.monotonic() - started:.0f}s")
    plot(runs, args.plot)
    return code


def plot(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Kept LLM shares per role and test phase, and the board weight of claude-3-opus over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install matplotlib)")
        return
    phases = ("test tough", "test easy", "test medium")
    fig, axes = plt.subplots(len(runs), len(ROLES) + 1, figsize=(17, 3.4 * len(runs)), squeeze=False)
    for row, (name, results) in enumerate(runs.items()):
        for col, role in enumerate(ROLES):
            ax = axes[row][col]
            bottoms = [0.0] * len(phases)
            for llm in LLMS:
                shares = []
                for phase in phases:
                    counts: Counter[str] = Counter()
                    for r in results:
                        counts.update(r["kept"][(role, phase)])
                    shares.append(counts[llm] / max(1, sum(counts.values())))
                ax.bar([p.split()[1] for p in phases], shares, bottom=bottoms, label=llm)
                bottoms = [b + s for b, s in zip(bottoms, shares, strict=True)]
            ax.set_title(f"{role}\n{name}", fontsize=8)
            ax.set_ylim(0, 1)
        ax = axes[row][-1]
        for seed, r in enumerate(results):
            steps = [step for step, *_ in r["trace"]]
            ax.plot(steps, [w.get("claude-3-opus", 0.0) for *_, w in r["trace"]], label=f"seed {seed}")
        ax.set_title("board weight of claude-3-opus", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
