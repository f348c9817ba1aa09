"""streaming_gateway/README.md names every gateway module once in its module map, and every module
path it names (the map, the sequence diagram of one turn) exists: a new, moved or deleted module
fails here until the page says so."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "streaming_gateway"
PAGE = GATEWAY / "README.md"
MODULE = re.compile(r"`([a-z_]+\.py)`")
PATH = re.compile(r"(?<![\w/])([a-z_]+/[a-z_]+\.py)\b")


def modules() -> set[str]:
    """Every module of the gateway, relative to the package (package markers left out)."""
    return {str(path.relative_to(GATEWAY)) for path in GATEWAY.rglob("*.py") if path.name != "__init__.py"}


def module_map(text: str) -> list[str]:
    """The modules the map's table names: a row whose first cell is a subpackage (`api/`) names
    modules inside it; any other row names top-level modules."""
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    named: list[str] = []
    for row in re.findall(r"^\| (.+) \|$", section, re.MULTILINE):
        first, _, rest = row.partition(" | ")
        if first in {"where", "---"}:
            continue
        package = re.fullmatch(r"`([a-z_]+)/`", first)
        if package:
            # A module of another package named in passing (agent_registry/...) is not a gateway module.
            rest = PATH.sub("", rest)
            named.extend(f"{package.group(1)}/{name}" for name in MODULE.findall(rest))
        else:
            named.extend(MODULE.findall(first))
    return named


def test_the_map_names_every_module_once() -> None:
    """Each gateway module is in the module map exactly once, and the map names no module that is gone."""
    named = module_map(PAGE.read_text())
    assert sorted(name for name in set(named) if named.count(name) > 1) == []
    assert sorted(modules() - set(named)) == [], "modules missing from streaming_gateway/README.md"
    assert sorted(set(named) - modules()) == [], "streaming_gateway/README.md names modules that do not exist"


def test_every_module_path_on_the_page_exists() -> None:
    """`chat/engine.py`, `state/log_hub.py`, ...: each path the page names (diagram included) is a real file."""
    text = PAGE.read_text()
    missing = [
        path
        for path in sorted(set(PATH.findall(text)))
        if not (GATEWAY / path).is_file() and not (ROOT / path).is_file()
    ]
    assert missing == []


def test_the_check_sees_a_stale_map() -> None:
    """A map naming a module that does not exist, or leaving one out, is caught (a guard for the check)."""
    text = PAGE.read_text()
    stale = text.replace("`leases.py` (", "`lease_keeper.py` (", 1)
    assert "state/lease_keeper.py" in module_map(stale)
    assert "state/leases.py" not in module_map(stale)
