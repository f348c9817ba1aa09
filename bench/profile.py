"""Sampling profile of the gateway process under load, with py-spy (attached by pid, no code change).

`py-spy record --format raw` writes collapsed stacks ("frame;frame;... count"); this module sums
them into own time per function and inclusive time per gateway function, the two views that
show where a request's CPU goes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.stats import table

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    binary = py_spy()
    if binary is None:
        raise FileNotFoundError("py-spy is not installed (bench/requirements.txt)")
    argv = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def _package(frame: str) -> str:
    """The top-level package of a frame's file ("redis", "openai", "asyncio", "streaming_gateway", ...)."""
    inner = frame[frame.rfind("(") + 1 :].rstrip(")")
    head = inner.split("/", 1)[0] if "/" in inner else inner.split(".py", 1)[0]
    return head or "?"


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_name(f) for f in stack.split(";") if f.strip()]
        total += n
        if frames:
            own[frames[-1]] += n
            packages[_package(frames[-1])] += n
        for frame in set(frames):
            if "streaming_gateway/" in frame or "action_bus/" in frame:
                inclusive[frame] += n
    if not total:
        return {"samples": 0, "own": [], "gateway_inclusive": []}
    return {
        "samples": total,
        "own_by_package": [(name, round(100 * n / total, 1)) for name, n in packages.most_common(top)],
        "own": [(name, round(100 * n / total, 1)) for name, n in own.most_common(top)],
        "gateway_inclusive": [(name, round(100 * n / total, 1)) for name, n in inclusive.most_common(top)],
    }


def render(result: dict[str, Any]) -> str:
    if not result.get("samples"):
        return "no samples (py-spy missing or not permitted)"
    packages = table(["own time: package", "% samples"], [[n, p] for n, p in result["own_by_package"]])
    own = table(["own time: function", "% samples"], [[n, p] for n, p in result["own"]])
    incl = table(["gateway code, inclusive", "% samples"], [[n, p] for n, p in result["gateway_inclusive"]])
    return f"{result['samples']} samples\n{packages}\n\n{own}\n\n{incl}"
