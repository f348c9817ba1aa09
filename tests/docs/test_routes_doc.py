"""Every HTTP route the gateway registers is documented in docs/api.md or docs/web-client.md."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUTE_DOCS = [ROOT / "docs" / "api.md", ROOT / "docs" / "web-client.md"]
METHODS = {"get", "post", "put", "patch", "delete", "head", "view"}


def _normalise(path: str) -> str:
    """Path parameters compared by position only: `{conversation_id}` and `{id}` are the same."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def routes_registered() -> set[str]:
    """`METHOD /path` for each route table decorator or router call under streaming_gateway/;
    a static folder is `GET /prefix/*`."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(ROOT / "streaming_gateway"):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for file in (Path(folder) / f for f in files if f.endswith(".py")):
            for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
                    continue
                first = node.args[0]
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    continue
                attr = node.func.attr.removeprefix("add_")
                if attr in METHODS and first.value.startswith("/"):
                    found.add(f"{'GET' if attr == 'view' else attr.upper()} {_normalise(first.value)}")
                elif attr == "static" and first.value.startswith("/"):
                    found.add(f"GET {first.value.rstrip('/')}/*")
    return found


def routes_documented() -> set[str]:
    text = "\n".join(page.read_text() for page in ROUTE_DOCS)
    return {
        f"{method} {_normalise(path)}"
        for method, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE|HEAD) (/[^`\s]*)`", text)
    }


def test_every_route_is_documented() -> None:
    """Each registered route appears as `METHOD /path` in the API or web client page."""
    registered = routes_registered()
    assert registered, "no routes found under streaming_gateway/"
    missing = sorted(registered - routes_documented())
    assert not missing, f"routes missing from docs/api.md and docs/web-client.md: {missing}"
