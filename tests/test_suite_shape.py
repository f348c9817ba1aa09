"""The suite's own shape: fixtures are shared as pytest plugins (tests/fixtures) or by a folder's
conftest, never imported from one test module into another; waiting has one helper,
tests/polling.py's `eventually`, and no test counts down a deadline of its own."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TypeGuard

TESTS = Path(__file__).resolve().parent
POLLING = TESTS / "polling.py"


def sources() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def module_path(module: str) -> Path | None:
    """The file of a `tests.` module, or None for anything else."""
    if not module.startswith("tests."):
        return None
    path = TESTS.parent.joinpath(*module.split(".")).with_suffix(".py")
    return path if path.is_file() else None


def is_fixture(node: ast.AST) -> TypeGuard[ast.FunctionDef | ast.AsyncFunctionDef]:
    """A function decorated `@pytest.fixture` or `@pytest.fixture(...)`."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
    return False


def fixtures_in(path: Path) -> set[str]:
    return {node.name for node in ast.parse(path.read_text()).body if is_fixture(node)}


def imported_fixtures(path: Path) -> list[str]:
    """`module.name` for each fixture this file imports from another test module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and (source := module_path(node.module)):
            fixtures = fixtures_in(source)
            found += [f"{node.module}.{alias.name}" for alias in node.names if alias.name in fixtures]
    return found


def counts_down_a_deadline(path: Path) -> bool:
    """`time.monotonic() + ...`: a hand-written wait loop's deadline."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            call = node.left
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "monotonic"
            ):
                return True
    return False


def test_no_fixture_is_imported_between_test_modules() -> None:
    """A fixture another folder needs moves to tests/fixtures (pytest_plugins) instead of being imported."""
    found = {str(path.relative_to(TESTS)): imported_fixtures(path) for path in sources()}
    assert {path: names for path, names in found.items() if names} == {}


def test_only_the_polling_helper_counts_down_a_deadline() -> None:
    """Waiting for something goes through `eventually`; no test writes its own deadline loop."""
    assert counts_down_a_deadline(POLLING)
    assert [str(p.relative_to(TESTS)) for p in sources() if p != POLLING and counts_down_a_deadline(p)] == []


def test_the_checks_see_what_they_forbid(tmp_path: Path) -> None:
    """An imported fixture and a deadline loop are both found (a guard for the checks themselves)."""
    importer = tmp_path / "test_x.py"
    importer.write_text("from tests.fixtures.browser import browser, CHROMIUM\n")
    assert imported_fixtures(importer) == ["tests.fixtures.browser.browser"]
    loop = tmp_path / "test_y.py"
    loop.write_text("import time\ndeadline = time.monotonic() + 5\n")
    assert counts_down_a_deadline(loop)
