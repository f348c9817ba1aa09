"""Read infra/ the way the tests need it: every Bicep file parsed with PyPI `pycep-parser` (no
Bicep compiler installs on these machines), plus small helpers to find resources and to render a
parsed expression back into text (`entra.outputs.apiAppId`, `queueSettings[queueName].lockDuration`)
so tests can assert on wiring as well as on literal values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

from tests.deploy.manifests import ROOT

INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"

Template = Mapping[str, Any]


@cache
def parser() -> BicepParser:
    return BicepParser()


@cache
def template(path: Path) -> Template:
    """The parsed file; a syntax error fails with the file named."""
    try:
        return parser().parse(file_path=path)
    except Exception as exc:  # pycep raises lark's errors and ValueError; both mean "does not parse"
        raise AssertionError(f"{path.relative_to(ROOT)} does not parse: {exc}") from exc


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@dataclass(frozen=True)
class Resource:
    path: Path
    symbol: str
    type: str
    api_version: str
    existing: bool
    looped: bool
    body: dict[str, Any]
    decorators: tuple[Any, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.symbol}"

    @property
    def properties(self) -> dict[str, Any]:
        return self.body.get("properties", {})


def resources(type_: str | None = None, *, include_existing: bool = False) -> list[Resource]:
    """Every resource declared in infra/, optionally of one type (loops unwrapped, nested children included)."""
    found = []
    for path in bicep_files():
        for symbol, raw in template(path).get("resources", {}).items():
            config = raw["config"]
            looped = "loop_type" in config
            body = config["config"] if looped else config
            if "condition" in body and "config" in body and not looped:  # `= if (...) { ... }`
                body = body["config"]
            resource = Resource(
                path,
                symbol,
                raw["type"],
                raw["api_version"],
                raw["existing"],
                looped,
                body,
                tuple(raw.get("decorators", [])),
            )
            if (type_ is None or resource.type == type_) and (include_existing or not resource.existing):
                found.append(resource)
    return found


def one(type_: str) -> Resource:
    found = resources(type_)
    assert len(found) == 1, f"expected one {type_}, found {[r.where for r in found]}"
    return found[0]


def text(node: Any) -> str:
    """A parsed expression rendered back to Bicep-like text, for assertions on wiring."""
    if isinstance(node, str):
        return node
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, (int, float)) or node is None:
        return json.dumps(node)
    if isinstance(node, list):
        return "[" + ", ".join(text(item) for item in node) + "]"
    if isinstance(node, dict):
        if "operator" in node:
            operator = node["operator"]
            operands = operator.get("operands", {})
            if operator["type"] == "property_accessor":
                return f"{text(operands['operand_1'])}.{text(operands['operand_2'])}"
            if operator["type"] == "index_accessor":
                return f"{text(operands['operand_1'])}[{text(operands['operand_2'])}]"
            return f"{operator['type']}(" + ", ".join(text(v) for v in operands.values()) + ")"
        if "function" in node:
            function = node["function"]
            arguments = [text(v) for v in function.get("parameters", {}).values() if v is not None]
            return f"{function['type']}(" + ", ".join(arguments) + ")"
        return "{" + ", ".join(f"{k}: {text(v)}" for k, v in node.items()) + "}"
    return repr(node)


def parameters(path: Path) -> dict[str, Any]:
    return template(path).get("parameters", {})


def parameter_default(path: Path, name: str) -> Any:
    return parameters(path)[name].get("default")


def outputs(path: Path) -> dict[str, Any]:
    return template(path).get("outputs", {})


def modules(path: Path = MAIN) -> dict[str, dict[str, Any]]:
    """symbol -> {'path': module file, 'params': {...}} for each local module a file uses."""
    found = {}
    for symbol, raw in template(path).get("modules", {}).items():
        config = raw["config"]
        if "condition" in config and "config" in config:  # `= if (...) { ... }`
            config = config["config"]
        found[symbol] = {
            "path": (path.parent / raw["detail"]["path"]).resolve(),
            "params": config["params"],
        }
    return found


def loaded_files(node: Any, base: Path) -> list[Path]:
    """Files a template reads with loadTextContent / loadJsonContent, anywhere in a parsed node."""
    found: list[Path] = []
    if isinstance(node, dict):
        function = node.get("function")
        if isinstance(function, dict) and function.get("type") in {"load_text_content", "load_json_content"}:
            found.append((base / function["parameters"]["file_path"]).resolve())
        for value in node.values():
            found.extend(loaded_files(value, base))
    elif isinstance(node, list):
        for value in node:
            found.extend(loaded_files(value, base))
    return found


def role_assignments() -> list[Resource]:
    return resources("Microsoft.Authorization/roleAssignments")
