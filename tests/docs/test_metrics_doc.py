"""The Prometheus metrics table in docs/operations.md agrees with the metrics the gateway defines."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}


def metrics_defined() -> set[str]:
    """Names passed first to a prometheus_client metric constructor anywhere in the gateway."""
    names: set[str] = set()
    for folder, dirs, files in os.walk(ROOT / "streaming_gateway"):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for file in (Path(folder) / f for f in files if f.endswith(".py")):
            for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                func = node.func
                kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                first = node.args[0]
                if kind in METRIC_TYPES and isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add(first.value)
    return names


def metrics_documented() -> set[str]:
    """First-column names of the table headed `metric` in docs/operations.md."""
    names: set[str] = set()
    in_table = False
    for line in OPERATIONS_DOC.read_text().splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        first = line.strip("|").split("|")[0].strip()
        if first == "metric":
            in_table = True
        elif in_table:
            names.update(re.findall(r"`(gateway_[a-z0-9_]+)`", first))
    return names


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    """Each gateway metric has a row in docs/operations.md, and each row names a real metric."""
    defined, documented = metrics_defined(), metrics_documented()
    assert defined, "no metric definitions found under streaming_gateway/"
    assert not defined - documented, f"not in docs/operations.md: {sorted(defined - documented)}"
    assert not documented - defined, f"documented but not defined: {sorted(documented - defined)}"
