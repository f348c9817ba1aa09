"""Loading and validating case files (YAML and JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation import InvalidCases, load_cases

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_default_cases_load() -> None:
    """evaluation/cases/default.yaml is valid and every case checks something."""
    cases = load_cases(ROOT / "evaluation" / "cases" / "default.yaml")
    assert [case.id for case in cases] == ["greeting", "open-ticket", "ticket-status", "two-turns"]
    assert cases[1].turns[0].expect.tool_calls[0].name == "create_ticket"


def test_jsonl_with_plain_string_turns(tmp_path: Path) -> None:
    """JSONL gives one case per line; plain strings are turns; case expect lands on the last turn."""
    path = tmp_path / "cases.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(c)
            for c in [
                {"id": "a", "turns": ["hi", "again"], "expect": {"contains": ["again"]}},
                {"id": "b", "turns": [{"user": "x", "expect": {"regex": ["x"]}}]},
            ]
        )
        + "\n\n"
    )
    a, b = load_cases(path)
    assert a.turns[0].expect.is_empty() and a.turns[1].expect.contains == ["again"]
    assert b.turns[0].expect.regex == ["x"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("cases: []", "no cases"),
        ("cases: {a: 1}", "list of cases"),
        ("- {id: a, turns: [hi]}", "checks nothing"),
        ("- {id: a, turns: [hi], expect: {regex: ['(']}}", "does not compile"),
        ("- {id: a, turns: [hi], expect: {json_schema: {type: 12}}}", "valid JSON schema"),
        ("- {id: a, turns: [hi], expect: {no_tool_calls: true, tool_calls: [{name: t}]}}", "contradict"),
        (
            "- {id: a, turns: [hi], expect: {contains: [x]}}\n- {id: a, turns: [hi], expect: {contains: [x]}}",
            "unique",
        ),
        ("- {id: a, turns: [], expect: {contains: [x]}}", "turns"),
        ("- {id: a, turns: [hi], expect: {contain: [x]}}", "contain"),
        ("- {id: 'a b', turns: [hi], expect: {contains: [x]}}", "id"),
        ("cases: [", "cannot parse"),
    ],
)
def test_invalid_case_files_say_what_is_wrong(tmp_path: Path, content: str, problem: str) -> None:
    """Each malformed file raises InvalidCases naming the problem."""
    path = tmp_path / "cases.yaml"
    path.write_text(content)
    with pytest.raises(InvalidCases, match=problem):
        load_cases(path)


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    """Only YAML/JSON/JSONL are read; a missing file is a clear error."""
    (tmp_path / "cases.txt").write_text("x")
    with pytest.raises(InvalidCases, match="jsonl"):
        load_cases(tmp_path / "cases.txt")
    with pytest.raises(InvalidCases, match="cannot read"):
        load_cases(tmp_path / "missing.yaml")
