"""No import cycles anywhere in the first-party code: between packages (the contracts at the bottom,
the deployables above them, the tools on top) and between the modules of every package.

Read from the source with `ast`, so a cycle Python would tolerate at run time is found too. The
gateway's layering inside its own package is tests/gateway/test_module_layout.py's.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.gateway.test_module_layout import find_cycle

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "agent_contracts", "action_bus", "agent_registry", "observability", "streaming_gateway", "function_app",
    "evaluation", "local_stack", "scripted_upstream", "sample_backend", "bench",
)  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The first-party modules a file imports; `from package import module` names the module only."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            names = {alias.name for alias in node.names}
            if len(submodules) < len(names) and node.module in known:
                found.add(node.module)  # some names are the package's own attributes
            found.update(submodules)
    return found


def module_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name} for name, path in found.items()}


def package_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for module, targets in module_graph().items():
        source = module.split(".")[0]
        edges[source].update(
            target.split(".")[0] for target in targets if not target.startswith(source + ".")
        )
        edges[source].discard(source)
    return edges


def test_no_cycle_between_packages() -> None:
    """The first-party packages depend on each other one way (agent_contracts depends on none of them)."""
    edges = package_graph()
    assert edges["agent_contracts"] == set()
    assert "agent_contracts" in edges["streaming_gateway"] and "agent_contracts" in edges["function_app"]
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_no_cycle_between_modules() -> None:
    """No first-party module imports itself through others, TYPE_CHECKING imports included."""
    edges = module_graph()
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])
