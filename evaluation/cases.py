"""Test cases for offline evaluation, from YAML (`cases:` list, or a bare list) or JSONL.

A case is a conversation: user turns, each optionally with expectations; `expect` at the case
level applies to the last turn. Expectations:

    contains / not_contains: [text, ...]      regex: [pattern, ...]
    json_schema: {...}        the reply text parsed as JSON must satisfy it
    tool_calls: [{name, arguments (subset unless exact: true), arguments_schema}]
    no_tool_calls: true       finish_reason: stop      error: <code>
    max_latency_ms, max_ttft_ms, max_tokens (completion tokens)
    judge: {rubric: text, threshold: 0.7}   a model grades the answer against the rubric (0-1)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evaluation.errors import InvalidCases

MAX_CASES = 1000
MAX_TURNS = 20
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_RUBRIC_CHARS = 4000


def _check_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
    return value


class ExpectedToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | None = None
    #: True: the arguments must equal `arguments`; False: they must contain it.
    exact: bool = False
    arguments_schema: dict[str, Any] | None = None

    @field_validator("arguments_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_schema(value)


class JudgeSpec(BaseModel):
    """A graded check: the judge model scores the answer 0-1 against the rubric; pass at threshold."""

    model_config = ConfigDict(extra="forbid")

    rubric: str = Field(min_length=1, max_length=MAX_RUBRIC_CHARS)
    threshold: float = Field(default=0.7, ge=0.0, le=1.0)


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contains: list[str] = Field(default_factory=list)
    not_contains: list[str] = Field(default_factory=list)
    regex: list[str] = Field(default_factory=list)
    json_schema: dict[str, Any] | None = None
    tool_calls: list[ExpectedToolCall] = Field(default_factory=list)
    allow_extra_tool_calls: bool = False
    no_tool_calls: bool = False
    finish_reason: str | None = None
    error: str | None = None
    max_latency_ms: float | None = Field(default=None, gt=0)
    max_ttft_ms: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=0)
    judge: JudgeSpec | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"regex {pattern!r} does not compile: {exc}") from None
        return patterns

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_schema(value)

    @model_validator(mode="after")
    def _consistent(self) -> Expect:
        if self.no_tool_calls and self.tool_calls:
            raise ValueError("no_tool_calls and tool_calls contradict each other")
        return self

    def is_empty(self) -> bool:
        return self == Expect()


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1)
    expect: Expect = Field(default_factory=Expect)
    #: Wait for the actions this turn's tool calls start (needs a running action worker); by
    #: default the evaluation stops at the tool calls and cancels the wait.
    wait_for_actions: bool = False


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,80}$")
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    turns: list[Turn] = Field(min_length=1, max_length=MAX_TURNS)
    expect: Expect | None = None

    @field_validator("turns", mode="before")
    @classmethod
    def _plain_strings_are_turns(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"user": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _case_expect_applies_to_last_turn(self) -> Case:
        if self.expect is not None:
            last = self.turns[-1]
            if not last.expect.is_empty():
                raise ValueError("give expectations either on the last turn or on the case, not both")
            self.turns[-1] = last.model_copy(update={"expect": self.expect})
            self.expect = None
        if all(turn.expect.is_empty() for turn in self.turns):
            raise ValueError("the case checks nothing: add expect to it or to a turn")
        return self


def load_cases(path: str | Path) -> list[Case]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidCases(str(path), f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidCases(str(path), f"is {len(raw)} bytes; the limit is {MAX_FILE_BYTES}")
    items: list[tuple[str, Any]] = []
    try:
        if path.suffix.lower() == ".jsonl":
            for number, line in enumerate(raw.decode().splitlines(), start=1):
                if line.strip():
                    items.append((f"line {number}", json.loads(line)))
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            document = yaml.safe_load(raw)
            listed = document.get("cases") if isinstance(document, dict) else document
            if not isinstance(listed, list):
                raise InvalidCases(str(path), "expected a list of cases (or a mapping with a `cases` list)")
            items = [(f"case {number}", item) for number, item in enumerate(listed, start=1)]
        else:
            raise InvalidCases(str(path), "use a .yaml, .yml, .json or .jsonl file")
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidCases(str(path), f"cannot parse: {exc}") from None
    if not items:
        raise InvalidCases(str(path), "holds no cases")
    if len(items) > MAX_CASES:
        raise InvalidCases(str(path), f"holds {len(items)} cases; the limit is {MAX_CASES}")
    cases: list[Case] = []
    for where, item in items:
        try:
            cases.append(Case.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(case)'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidCases(str(path), f"{where}: {problems}") from None
    ids = [case.id for case in cases]
    duplicates = sorted({case_id for case_id in ids if ids.count(case_id) > 1})
    if duplicates:
        raise InvalidCases(str(path), f"case ids must be unique; repeated: {', '.join(duplicates)}")
    return cases
