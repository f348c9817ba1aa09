"""A small reader for streaming_gateway/Dockerfile: stages, instructions, ENV, COPY sources."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.manifests import ROOT

DOCKERFILE = ROOT / "streaming_gateway" / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                values[key] = value
        return values

    def exec_form(self, keyword: str) -> list[str]:
        """ENTRYPOINT/CMD in exec (JSON) form; raises if the shell form is used."""
        (args,) = self.all(keyword)
        return json.loads(args)


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    result = []
    for entry in logical:
        keyword, _, args = entry.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    found: list[Stage] = []
    for keyword, args in instructions(path.read_text()):
        if keyword == "FROM":
            parts = args.split()
            found.append(
                Stage(base=parts[0], name=parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None)
            )
        elif found:
            found[-1].instructions.append((keyword, args))
    return found


def copy_sources(stage: Stage) -> list[tuple[str, str]]:
    """(source, destination) of each COPY from the build context (not --from another stage)."""
    pairs = []
    for args in stage.all("COPY"):
        parts = args.split()
        if any(p.startswith("--from") for p in parts):
            continue
        pairs.append((parts[-2], parts[-1]))
    return pairs
