"""The gateway's module graph: no import cycles, and the subpackages depend on each other one way.

Read from the source with `ast` (imports under `if TYPE_CHECKING:` and inside functions count too),
so a cycle is found even where Python would tolerate it at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "streaming_gateway"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

#: Subpackage -> the gateway modules it must not import. The transports (api/) sit on top; the
#: chat core (chat/) uses state, llm and agents; those use nothing above them; none of them
#: reaches for the wiring (app, contexts, keys) that assembles them.
WIRING = (f"{PACKAGE}.app", f"{PACKAGE}.contexts", f"{PACKAGE}.keys", f"{PACKAGE}.shutdown")
FORBIDDEN = {
    "chat": (f"{PACKAGE}.api", *WIRING),
    "state": (f"{PACKAGE}.api", f"{PACKAGE}.chat", *WIRING),
    "llm": (f"{PACKAGE}.api", f"{PACKAGE}.chat", f"{PACKAGE}.state", *WIRING),
    "auth": (f"{PACKAGE}.api", f"{PACKAGE}.chat", f"{PACKAGE}.state", *WIRING),
    "agents": (f"{PACKAGE}.api", f"{PACKAGE}.chat", f"{PACKAGE}.state", *WIRING),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def gateway_imports(path: Path, known: set[str]) -> set[str]:
    """The gateway modules one file imports (a `from package import module` names the module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in known and name.startswith(PACKAGE + "."))
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: gateway_imports(path, known) - {name} for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that returns to its start, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_module_map_is_read_whole() -> None:
    """The graph covers the subpackages and sees the app factory's imports (a guard for the check itself)."""
    edges = graph()
    assert {f"{PACKAGE}.{sub}" for sub in FORBIDDEN} <= set(edges)
    assert f"{PACKAGE}.api.messages" in edges[f"{PACKAGE}.app"]
    assert f"{PACKAGE}.chat.action_flow" in edges[f"{PACKAGE}.chat.engine"]


def test_no_import_cycles() -> None:
    """No gateway module imports itself through others, TYPE_CHECKING imports included."""
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()) or [])


def test_cycle_check_finds_a_cycle() -> None:
    """The checker itself reports a cycle when there is one."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_subpackages_depend_one_way() -> None:
    """state, llm, auth and agents never import chat or api; chat never imports api; none imports the wiring."""
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        for sub, forbidden in FORBIDDEN.items()
        if module.startswith(f"{PACKAGE}.{sub}.")
        and any(target == f or target.startswith(f + ".") for f in forbidden)
    ]
    assert wrong == []
