"""The targets a benchmark prints (spec section 9) and its `--check` flag.

A benchmark builds one `Target` per goal it measures, prints them with `print_targets` (one
`target: ... -> MET | NOT MET` line each) and returns `exit_code(targets, args.check)` from its
`main`: 0 unless `--check` is given and a target is missed. The table is printed either way, so
`make bench` stays a report and `make bench-check` (bench/run_all.py --check) a gate.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

TARGET_MISSED = 3
"""Exit code of a benchmark run with `--check` that missed a target (a crash exits 1)."""


@dataclass(frozen=True)
class Target:
    """One goal: what it asks, what was measured (as printed), and whether it holds."""

    goal: str
    measured: str
    met: bool

    @classmethod
    def at_least(cls, goal: str, value: float, bound: float, fmt: str = ".4f") -> Target:
        return cls(goal, format(value, fmt), value >= bound)

    @classmethod
    def below(cls, goal: str, value: float, bound: float, fmt: str = ".4f") -> Target:
        return cls(goal, format(value, fmt), value < bound)

    def line(self) -> str:
        return f"target: {self.goal}: {self.measured} -> {'MET' if self.met else 'NOT MET'}"


def add_check_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit {TARGET_MISSED} when a target printed is NOT MET (the tables are printed anyway)",
    )


def print_targets(targets: Sequence[Target]) -> None:
    for target in targets:
        print(target.line())


def exit_code(targets: Sequence[Target], check: bool) -> int:
    """TARGET_MISSED when checking and a target is missed (named once more at the end of the
    output, where a reader of a long run looks), else 0."""
    missed = [t for t in targets if not t.met]
    if not check or not missed:
        return 0
    print(f"\n--check: {len(missed)} of {len(targets)} target(s) NOT MET:")
    for target in missed:
        print(f"  {target.goal}: {target.measured}")
    return TARGET_MISSED


def report_targets(targets: Sequence[Target], check: bool) -> int:
    """`print_targets`, then `exit_code`: for a benchmark whose targets come last."""
    print_targets(targets)
    return exit_code(targets, check)
