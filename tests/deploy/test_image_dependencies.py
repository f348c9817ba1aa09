"""The image installs every third-party package its copied code imports, from its own requirements."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from tests.deploy.dockerfile import copy_sources, stages
from tests.deploy.manifests import ROOT

REQUIREMENTS = ROOT / "streaming_gateway" / "requirements.txt"

#: Imports of commands that never run in the container (file -> module), each with its reason.
DEV_ONLY = {
    # `python -m streaming_gateway.token` prints a local HS256 token for `make dev` only.
    ("streaming_gateway/token.py", "local_stack"),
}


def copied_packages() -> list[Path]:
    return [ROOT / source for source, _ in copy_sources(stages()[0]) if (ROOT / source).is_dir()]


def guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """True when an import sits in `try: ... except ImportError` or under `if TYPE_CHECKING:`."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in {"ImportError", "ModuleNotFoundError"}
            for h in node.handlers
        ):
            return True
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_key(name: str) -> str:
    """The top-level module, or two levels for namespace packages (azure.servicebus, opentelemetry.sdk)."""
    import importlib.util

    parts = name.split(".")
    spec = importlib.util.find_spec(parts[0])
    if spec is not None and spec.origin is None and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def third_party_imports() -> dict[str, str]:
    """Module -> first file importing it, for modules neither stdlib nor copied into the image."""
    local = {p.name for p in copied_packages()}
    found: dict[str, str] = {}
    for package in copied_packages():
        for path in package.rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                where = str(path.relative_to(ROOT))
                for name in names:
                    top = name.split(".")[0]
                    if (
                        top in sys.stdlib_module_names
                        or top in local
                        or guarded(node, parents)
                        or (where, top) in DEV_ONLY
                    ):
                        continue
                    found.setdefault(import_key(name), where)
    return found


def requirement_closure() -> set[str]:
    """Distributions pip installs from the image's requirements file (with extras), by normalized name."""

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pending = [
        Requirement(line)
        for line in REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    seen: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = norm(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        for raw in metadata.requires(requirement.name) or []:
            dependency = Requirement(raw)
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": e}) for e in (requirement.extras or {""})
            ):
                pending.append(dependency)
    return seen


def providers_of(module: str, providers: Mapping[str, list[str]]) -> set[str]:
    """Distributions that ship `module`; for a namespace submodule, those whose files hold it."""
    top, _, sub = module.partition(".")
    candidates = set(providers.get(top, []))
    if not sub:
        return candidates
    prefix = f"{top}/{sub}/"
    return {d for d in candidates if any(str(f).startswith(prefix) for f in metadata.files(d) or [])}


def test_every_imported_package_is_in_the_image_requirements() -> None:
    """Each third-party module the copied packages import comes from streaming_gateway/requirements.txt or its dependencies."""
    providers = metadata.packages_distributions()
    installed = requirement_closure()
    missing = {}
    for module, where in third_party_imports().items():
        distributions = {re.sub(r"[-_.]+", "-", d).lower() for d in providers_of(module, providers)}
        if not distributions & installed:
            missing[module] = where
    assert missing == {}


def test_dependency_check_sees_third_party_imports() -> None:
    """The import scan is live: it finds aiohttp and redis in the gateway's code."""
    assert {"aiohttp", "redis", "azure.servicebus"} <= set(third_party_imports())
