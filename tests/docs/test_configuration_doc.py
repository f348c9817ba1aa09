"""The configuration reference agrees with the code.

Every environment variable the code reads is documented in docs/configuration.md, and every
variable documented there is read somewhere. The readers are found by parsing the source, not by
listing files: any module that reads the environment through `agent_contracts.settings.Env`,
`os.environ`, `os.getenv` or a mapping copied from `os.environ` is covered wherever it lives.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_contracts.settings import Env

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"

#: Folders that hold no first-party code that runs outside the test suite.
SKIPPED_DIRS = {"tests", "node_modules", "test-output", "__pycache__"}

#: Documented, but read by something other than this repository's Python code.
NOT_READ_BY_PYTHON = {
    # The Functions host reads these itself (the Service Bus trigger's connection); no Python
    # module of ours ever sees them.
    "ServiceBusConnection",
    "ServiceBusConnection__fullyQualifiedNamespace",
    # The Makefile's `token` target: the user the local token is made for.
    "USER_ID",
}

#: Method names that read one variable from an environment mapping or from `Env`.
MAPPING_READS = {"get", "setdefault", "pop"}
ENV_READS = {name for name in vars(Env) if not name.startswith("_")}


def python_sources() -> Iterator[Path]:
    """First-party Python files: the repository without tests, hidden folders and node_modules."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
        yield from (Path(folder) / name for name in sorted(files) if name.endswith(".py"))


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _is_env_helper(node: ast.AST) -> bool:
    """`Env(...)`: the settings helper of agent_contracts."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "Env") or (
        isinstance(func, ast.Attribute) and func.attr == "Env"
    )


def _is_environment_value(node: ast.AST, tainted: set[str], returning: set[str]) -> bool:
    """Whether an expression evaluates to the environment (or a copy of it), not to a value read from it."""

    def inner(n: ast.AST) -> bool:
        return _is_environment_value(n, tainted, returning)

    if _is_os_environ(node) or _is_env_helper(node):
        return True
    if isinstance(node, ast.Name):
        return node.id in tainted
    if isinstance(node, ast.IfExp):
        return inner(node.body) or inner(node.orelse)
    if isinstance(node, ast.BoolOp):
        return any(inner(v) for v in node.values)
    if isinstance(node, ast.Dict):  # {**os.environ, "X": "y"}
        return any(key is None and inner(value) for key, value in zip(node.keys, node.values, strict=True))
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id == "dict" and node.args:
            return inner(node.args[0])
        if isinstance(func, ast.Attribute) and func.attr == "copy":
            return inner(func.value)
        return isinstance(func, ast.Name) and func.id in returning
    return False


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class EnvReads:
    """The environment variables one module reads, found in its syntax tree."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.tainted = self._environment_names()
        self.names: set[str] = set()
        self._collect()

    def _environment_names(self) -> set[str]:
        """Names bound to the environment: `env = Env(...)`, `env = dict(os.environ)`, or the result
        of a function of this module that returns such a name (`env = dev_environment()`)."""
        tainted: set[str] = set()
        returning: set[str] = set()
        changed = True
        while changed:
            changed = False
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                    value = node.value
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    from_env = _is_environment_value(value, tainted, returning)
                    for target in targets:
                        if from_env and isinstance(target, ast.Name) and target.id not in tainted:
                            tainted.add(target.id)
                            changed = True
                if (
                    isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    and node.name not in returning
                    and self._returns_environment(node, tainted, returning)
                ):
                    returning.add(node.name)
                    changed = True
        return tainted

    @staticmethod
    def _returns_environment(
        func: ast.FunctionDef | ast.AsyncFunctionDef, tainted: set[str], returning: set[str]
    ) -> bool:
        return any(
            isinstance(r, ast.Return)
            and r.value is not None
            and _is_environment_value(r.value, tainted, returning)
            for r in ast.walk(func)
        )

    def _is_environment(self, node: ast.AST) -> bool:
        return (
            _is_os_environ(node)
            or _is_env_helper(node)
            or (isinstance(node, ast.Name) and node.id in self.tainted)
        )

    def _key(self, node: ast.AST) -> ast.AST | None:
        """The key expression when `node` reads one variable from the environment, else None."""
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and self._is_environment(func.value)
                and (func.attr in MAPPING_READS or func.attr in ENV_READS)
            ):
                return node.args[0]
            if (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"
            ):
                return node.args[0]
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and self._is_environment(node.value)
        ):
            return node.slice
        return None

    def _collect(self) -> None:
        # Helpers that pass one of their parameters through as the variable's name, e.g.
        # `def read(attr, var): ... env.get(var)`; their callers name the variable.
        passthrough: dict[str, int] = {}
        for node in ast.walk(self.tree):
            key = self._key(node)
            if key is None:
                continue
            name = _literal(key)
            if name is not None:
                self.names.add(name)
        for func in ast.walk(self.tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            params = [a.arg for a in func.args.args]
            for node in ast.walk(func):
                key = self._key(node)
                if isinstance(key, ast.Name) and key.id in params:
                    passthrough[func.name] = params.index(key.id)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in passthrough:
                index = passthrough[node.func.id]
                if index < len(node.args) and (name := _literal(node.args[index])) is not None:
                    self.names.add(name)


@functools.cache
def variables_read() -> dict[str, set[str]]:
    """Variable name -> the modules (relative paths) that read it."""
    found: dict[str, set[str]] = {}
    for path in python_sources():
        for name in EnvReads(ast.parse(path.read_text(), filename=str(path))).names:
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def variables_documented(text: str) -> set[str]:
    """The names in the first column of every table headed `variable` in the page."""
    names: set[str] = set()
    in_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        first = line.strip("|").split("|")[0].strip()
        if first == "variable":
            in_table = True
            continue
        if in_table and not set(first) <= set("-: "):
            names.update(
                n for n in re.findall(r"`([^`]+)`", first) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)
            )
    return names


def test_scanner_finds_each_way_of_reading() -> None:
    """The scanner sees Env helpers, os.environ, os.getenv, copied mappings and pass-through helpers."""
    source = """
import os
from agent_contracts.settings import Env

def settings(environ=None):
    env = Env(environ)
    return env.int("A_INT", 1), env.url("A_URL"), env.str("A_STR")

def copied():
    env = dict(os.environ)
    env.setdefault("B_DEFAULT", "x")
    env["B_WRITTEN"] = "not a read"
    return env

def user():
    env = copied()
    return env["C_SUBSCRIPT"], env.get("C_GET")

def telemetry(environ=None):
    env = os.environ if environ is None else environ
    def read(attr, var, default=None):
        return env.get(var) or default
    return read("a", "D_PASSED"), os.environ.get("D_DIRECT"), os.getenv("D_GETENV"), os.environ["D_INDEX"]

headers = {}
headers.get("NOT_AN_ENV_READ")
"""
    names = EnvReads(ast.parse(source)).names
    assert names == {
        "A_INT",
        "A_URL",
        "A_STR",
        "B_DEFAULT",
        "C_SUBSCRIPT",
        "C_GET",
        "D_PASSED",
        "D_DIRECT",
        "D_GETENV",
        "D_INDEX",
    }


def test_every_variable_read_is_documented() -> None:
    """Each environment variable the code reads has a row in docs/configuration.md."""
    documented = variables_documented(CONFIGURATION_DOC.read_text())
    missing = {name: sorted(where) for name, where in variables_read().items() if name not in documented}
    assert not missing, f"read by the code but not documented in docs/configuration.md: {missing}"


def test_every_documented_variable_is_read() -> None:
    """Each variable in docs/configuration.md is read by the code (or is on the commented host list)."""
    documented = variables_documented(CONFIGURATION_DOC.read_text())
    read = set(variables_read())
    stale = sorted(documented - read - NOT_READ_BY_PYTHON)
    assert not stale, f"documented in docs/configuration.md but read nowhere: {stale}"


@pytest.mark.parametrize("name", sorted(NOT_READ_BY_PYTHON))
def test_host_level_variables_are_documented_and_not_read(name: str) -> None:
    """The exceptions list holds only documented variables no Python module reads."""
    assert name in variables_documented(CONFIGURATION_DOC.read_text())
    assert name not in variables_read(), f"{name} is read by the code: drop it from NOT_READ_BY_PYTHON"
