"""Code, comments and docs say why, never what the tracker says: no "issue 14", "for now",
"(later)" or TODO notes in first-party files. A note like that is stale the day the issue closes;
say the reason, or open an issue instead."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Third-party or generated trees, and the test output.
SKIPPED_DIRS = {"node_modules", "vendor", "test-output", "__pycache__"}
SUFFIXES = {".py", ".sh", ".md", ".toml", ".yaml", ".yml", ".js", ".html", ".css", ".bicep", ".xml"}
NAMES = {"Makefile", "Dockerfile", "run"}
#: Built from parts so this file does not match itself.
NOTES = re.compile(
    "|".join(
        [
            r"\bissues? ?#?\d+\b",
            r"\bfor" + r" now\b",
            r"\(" + r"later\)",
            r"(?-i:\bTO" + r"DO\b)",
            r"(?-i:\bFIX" + r"ME\b)",
        ]
    ),
    re.IGNORECASE,
)


def first_party_files() -> Iterator[Path]:
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix in SUFFIXES or name in NAMES:
                yield path
    yield from sorted((ROOT / ".ci").glob("*"))


def checked_files() -> Iterator[Path]:
    """Every first-party file but this one (its docstring and examples name the notes it forbids)."""
    return (path for path in first_party_files() if path != Path(__file__).resolve())


def notes_in(text: str) -> list[str]:
    return [match.group(0) for match in NOTES.finditer(text)]


def test_no_tracker_notes() -> None:
    """No first-party file refers to the tracker or defers work in a note."""
    found = {
        f"{path.relative_to(ROOT)}:{number}": line.strip()[:120]
        for path in checked_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if notes_in(line)
    }
    assert found == {}


def test_the_check_sees_each_kind_of_note() -> None:
    """Each kind of note is found, and ordinary words around them are not."""
    for note in (
        "see issue 6",
        "issue #12",
        "done this way for" + " now",
        "(" + "later) the client",
        "TO" + "DO: x",
    ):
        assert notes_in(note), note
    for fine in ("tissue 3", "ask me again later", "a todo list", "issues the request"):
        assert notes_in(fine) == [], fine
