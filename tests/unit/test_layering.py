"""The layers of the code base, enforced: the base (`schemas` and the package `olp`, which
share the codec's errors) imports nothing above it; each service (`processors`, `policy_store`,
`ingest`, `documents`) imports only the base, never another service; only the top layer
`launcher` imports the services.

Every module's imports are read from its syntax tree, those inside functions too (a lazy import
is still a dependency), so a cycle cannot hide behind `def _base(): from x import y`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = ("schemas", "olp")
SERVICES = ("processors", "policy_store", "ingest", "documents")
TOP = ("launcher",)
PROJECT = BASE + SERVICES + TOP


def imported_packages(source: str, module: str) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every import in `source`, relative ones resolved against
    `module` (the dotted name of the file)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, module.split(".")[0]
            elif node.module:
                yield node.lineno, node.module.split(".")[0]


def forbidden(importer: str, imported: str) -> bool:
    """True when a module of package `importer` must not import package `imported`."""
    if imported == importer or imported not in PROJECT:
        return False
    if importer in BASE:
        return imported not in BASE
    if importer in SERVICES:
        return imported not in BASE
    return False


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for line, imported in imported_packages(path.read_text(), module):
            if forbidden(package, imported):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return found


@pytest.mark.parametrize("package", BASE + SERVICES)
def test_package_imports_only_the_layers_below(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file()
    assert violations(package) == []


def test_the_rule_catches_lazy_and_upward_imports() -> None:
    source = "import olp.settings\ndef f():\n    from processors.app import create_app\n"
    assert list(imported_packages(source, "ingest.x")) == [(1, "olp"), (3, "processors")]
    assert [forbidden("ingest", p) for _, p in imported_packages(source, "ingest.x")] == [False, True]
    assert forbidden("olp", "launcher") and forbidden("olp", "documents") and forbidden("schemas", "ingest")
    assert forbidden("policy_store", "processors") and forbidden("documents", "launcher")
    assert not forbidden("launcher", "processors") and not forbidden("processors", "schemas")
    assert not forbidden("olp", "aiohttp")
