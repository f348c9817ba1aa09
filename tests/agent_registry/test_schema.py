"""The configuration schema and version ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_registry import InvalidConfig, read_document, validate_document, version_of
from tests.agent_registry.conftest import DEFAULT_CONFIG


def test_shipped_default_config_is_valid_and_versioned_by_its_content() -> None:
    """agent_configs/default.json validates; its version is label@ the sha256 prefix of its canonical JSON."""
    document = read_document(DEFAULT_CONFIG)
    config = validate_document(document)
    assert config.agent == "default"
    tool = config.tool("create_ticket")
    assert tool is not None and tool.action == "create_ticket"
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert version_of(document) == f"default@{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def test_yaml_and_json_of_the_same_content_have_one_version(tmp_path: Path, document: dict[str, Any]) -> None:
    """The hash is over canonical JSON: key order and file format do not matter."""
    as_yaml = tmp_path / "c.yaml"
    as_yaml.write_text(yaml.safe_dump(dict(reversed(list(document.items())))))
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps(document, indent=4))
    assert version_of(read_document(as_yaml)) == version_of(read_document(as_json))


def test_any_change_makes_a_new_version(document: dict[str, Any]) -> None:
    """Changing one character of the prompt, or the label, changes the version id."""
    changed = {**document, "system_prompt": document["system_prompt"] + "!"}
    relabelled = {**document, "label": "canary"}
    versions = {version_of(document), version_of(changed), version_of(relabelled)}
    assert len(versions) == 3
    assert version_of(relabelled).startswith("canary@")


def test_label_option_replaces_the_files_label(tmp_path: Path, document: dict[str, Any]) -> None:
    """--label overrides the label in the file."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))
    assert read_document(path, label="v2")["label"] == "v2"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"temperature": 3}, "temperature"),
        ({"model": ""}, "model"),
        ({"label": "has space"}, "label"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"limits": {"max_output_tokens": 0}}, "max_output_tokens"),
        ({"tools": [{"name": "t", "action": "a", "parameters": {"type": "nonsense"}}]}, "valid JSON schema"),
        ({"tools": [{"name": "t", "action": "a", "parameters": {"type": "string"}}]}, "object"),
        ({"tools": [{"name": "t", "action": "a"}, {"name": "t", "action": "b"}]}, "unique"),
        ({"tools": [{"name": "bad name", "action": "a"}]}, "name"),
    ],
)
def test_invalid_configs_are_refused_with_the_field(
    document: dict[str, Any], change: dict, problem: str
) -> None:
    """Each schema violation raises InvalidConfig naming what is wrong."""
    with pytest.raises(InvalidConfig, match=problem):
        validate_document({**document, **change}, "test")


def test_unreadable_and_unparseable_files_are_clear_errors(tmp_path: Path) -> None:
    """Missing, malformed, non-mapping and non-JSON-representable files fail with InvalidConfig."""
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "date.yaml").write_text("label: x\nmodel: m\nsystem_prompt: hi\nextra_date: 2024-01-01\n")
    for name, problem in [
        ("missing.json", "cannot read"),
        ("bad.json", "cannot parse"),
        ("list.yaml", "mapping"),
        ("date.yaml", "JSON cannot represent"),
    ]:
        with pytest.raises(InvalidConfig, match=problem):
            read_document(tmp_path / name)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    """A config file above the 1 MiB limit is refused before parsing."""
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"label": "x", "model": "m", "system_prompt": "a" * (1024 * 1024)}))
    with pytest.raises(InvalidConfig, match="limit"):
        read_document(path)
