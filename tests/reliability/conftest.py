"""The reliability suite's table: every scenario adds one row, printed at the end of the
run (`make reliability`) and written as JSON when OLP_RELIABILITY_REPORT names a file.

Columns: scenario, inputs, lost, duplicated, crashes, recovery time (seconds), note. A test adds
its row *before* it asserts, so a failing scenario still shows its numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: the fault-injection suite (`make reliability` prints its table)"
    )


@dataclass
class Row:
    scenario: str
    inputs: str
    lost: int | None
    duplicated: int | None
    crashes: int | None
    recovery_s: float | None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)

    def add(
        self,
        scenario: str,
        inputs: str,
        lost: int | None,
        duplicated: int | None,
        crashes: int | None,
        recovery_s: float | None,
        note: str = "",
    ) -> None:
        self.rows.append(Row(scenario, inputs, lost, duplicated, crashes, recovery_s, note))

    def matrix(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        """An extra table (e.g. the model-fault matrix), printed after the main one."""
        self.details.append((title, header, rows))


_REPORT = Report()


@pytest.fixture(scope="session")
def report() -> Iterator[Report]:
    yield _REPORT


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _REPORT.rows and not _REPORT.details:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability")
    header = ["scenario", "inputs", "lost", "duplicated", "crashes", "recovery s", "note"]
    rows = [
        [
            r.scenario,
            r.inputs,
            _cell(r.lost),
            _cell(r.duplicated),
            _cell(r.crashes),
            _cell(r.recovery_s),
            r.note,
        ]
        for r in _REPORT.rows
    ]
    for text in _table(header, rows):
        write(text)
    for title, head, body in _REPORT.details:
        write("")
        write(title)
        for text in _table(head, body):
            write(text)
    target = os.environ.get("OLP_RELIABILITY_REPORT")
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "rows": [asdict(r) for r in _REPORT.rows],
            "matrices": [{"title": t, "header": h, "rows": b} for t, h, b in _REPORT.details],
        }
        path.write_text(json.dumps(data, indent=2))
        write(f"(written to {path})")
