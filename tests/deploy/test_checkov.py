"""checkov over infra/ (Bicep), aks/ (Kubernetes) and the gateway's Dockerfile: every finding is
either fixed or explained in infra/checkov-skips.yaml, and every explanation still matches one.

checkov runs once per test session (about half a minute), offline: from its own virtualenv under
.local/checkov (scripts/bootstrap.sh installs the pinned version), with its calls home turned off.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import ROOT

CHECKOV = ROOT / ".local" / "checkov" / "bin" / "checkov"
SKIPS = ROOT / "infra" / "checkov-skips.yaml"
FRAMEWORKS = ("bicep", "kubernetes", "dockerfile")


def skip_list() -> dict[str, Any]:
    return yaml.safe_load(SKIPS.read_text())


@cache
def reports() -> dict[str, dict[str, Any]]:
    """check_type -> checkov's JSON report (its output holds one document per scanned root, some repeated)."""
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: scripts/bootstrap.sh installs checkov there")
    command = [
        str(CHECKOV),
        "-d",
        "infra",
        "-d",
        "aks",
        "-d",
        "streaming_gateway",
        "--framework",
        *FRAMEWORKS,
        "--skip-download",
        "--compact",
        "-o",
        "json",
    ]
    for entry in skip_list()["skip_paths"]:
        command += ["--skip-path", entry["path"]]
    # No network: no guideline mapping download, no version check.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_NO_VERSION_CHECK": "1", "LOG_LEVEL": "WARNING"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode not in (0, 1):  # 1 means "findings", which the tests below judge
        pytest.fail(f"checkov failed ({result.returncode}):\n{result.stderr[-2000:]}")
    decoder, text, position, found = json.JSONDecoder(), result.stdout, 0, {}
    while position < len(text):
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        document, position = decoder.raw_decode(text, position)
        for report in document if isinstance(document, list) else [document]:
            found[report["check_type"]] = report
    return found


def findings() -> set[tuple[str, str, str]]:
    return {
        (check["check_id"], check["resource"], check["file_path"])
        for report in reports().values()
        for check in report["results"]["failed_checks"]
    }


def test_checkov_read_every_framework() -> None:
    """checkov parsed the Bicep, the Kubernetes manifests and the Dockerfile without a parsing error."""
    for framework in FRAMEWORKS:
        report = reports().get(framework)
        assert report is not None, f"checkov reported nothing for {framework}"
        assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
        assert report["summary"]["resource_count"] > 0
        print(
            f"\ncheckov {framework}: {report['summary']['passed']} passed, {report['summary']['failed']} failed "
            f"(each failure explained in infra/checkov-skips.yaml)"
        )


def test_every_finding_is_explained() -> None:
    """No checkov finding lacks an entry (check id and resource) in infra/checkov-skips.yaml."""
    explained = {(entry["check"], entry["resource"]) for entry in skip_list()["findings"]}
    unexplained = sorted(
        f"{check} {resource} ({path})"
        for check, resource, path in findings()
        if (check, resource) not in explained
    )
    assert unexplained == []


def test_every_explanation_still_matches_a_finding() -> None:
    """An entry whose finding is gone (fixed, or the resource renamed) is removed rather than left to hide another."""
    current = {(check, resource) for check, resource, _ in findings()}
    stale = [
        f"{e['check']} {e['resource']}"
        for e in skip_list()["findings"]
        if (e["check"], e["resource"]) not in current
    ]
    assert stale == []


def test_every_skip_says_why() -> None:
    """Each skipped path and each accepted finding carries a reason of a sentence or more."""
    for entry in skip_list()["skip_paths"] + skip_list()["findings"]:
        assert len(entry["reason"].split()) >= 6, entry
    for entry in skip_list()["skip_paths"]:
        assert (ROOT / entry["path"]).exists(), entry["path"]


def test_the_dockerfile_has_no_finding() -> None:
    """The gateway's Dockerfile passes every checkov Dockerfile check, with no exception."""
    assert reports()["dockerfile"]["summary"]["failed"] == 0
