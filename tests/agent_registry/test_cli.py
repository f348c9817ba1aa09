"""The command line: python -m agent_registry publish | list | activate | rollback | show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.agent_registry.conftest import DEFAULT_CONFIG, ROOT


def _cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_registry", "--redis-url", redis_url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_publish_activate_list_rollback_show(
    redis_url: str, tmp_path: Path, document: dict[str, Any]
) -> None:
    """The whole operator flow works from the command line, with readable output."""
    first = _cli(redis_url, "publish", str(DEFAULT_CONFIG), "--activate")
    assert first.returncode == 0, first.stderr
    v1 = first.stdout.split()[1]
    assert f"active version is now {v1} (was none)" in first.stdout

    variant = tmp_path / "v2.yaml"
    variant.write_text(json.dumps({**document, "temperature": 0.9}))  # JSON is valid YAML
    second = _cli(redis_url, "publish", str(variant), "--label", "warmer")
    v2 = second.stdout.split()[1]
    assert v2.startswith("warmer@")

    assert _cli(redis_url, "activate", "default", v2).returncode == 0
    listing = _cli(redis_url, "list", "default").stdout.splitlines()
    assert listing[0].startswith(f"  {v1}") and listing[1].startswith(f"* {v2}")

    rolled = _cli(redis_url, "rollback", "default")
    assert f"active version is now {v1} (was {v2})" in rolled.stdout
    shown = json.loads(_cli(redis_url, "show", v2).stdout)
    assert shown["temperature"] == 0.9 and shown["version"] == v2


def test_refusals_exit_1_with_a_message(redis_url: str, tmp_path: Path) -> None:
    """Unknown versions, empty rollback and invalid files exit 1 and say why on stderr."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"label": "x", "model": "m", "temperature": 9}))
    for args, message in [
        (("show", "nope@000000000000"), "no published agent config version"),
        (("rollback", "default"), "no previously active version"),
        (("publish", str(bad)), "temperature"),
    ]:
        result = _cli(redis_url, *args)
        assert result.returncode == 1
        assert message in result.stderr


def test_unreachable_redis_exits_3(tmp_path: Path) -> None:
    """With nothing listening at the Redis URL the command exits 3 naming the URL."""
    from local_stack.processes import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    result = _cli(url, "list", "default")
    assert result.returncode == 3
    assert url in result.stderr


def test_withdraw_from_the_command_line(redis_url: str, tmp_path: Path, document: dict[str, Any]) -> None:
    """`withdraw` marks a version in `list`, logs it with its reason, and refuses the active version."""
    v1 = _cli(redis_url, "publish", str(DEFAULT_CONFIG), "--activate").stdout.split()[1]
    variant = tmp_path / "v2.json"
    variant.write_text(json.dumps({**document, "temperature": 0.9}))
    v2 = _cli(redis_url, "publish", str(variant), "--label", "warmer").stdout.split()[1]
    withdrawn = _cli(redis_url, "withdraw", v2, "--reason", "leaks the prompt")
    assert withdrawn.returncode == 0 and f"{v2} withdrawn" in withdrawn.stdout
    assert "already withdrawn" in _cli(redis_url, "withdraw", v2).stdout
    assert _cli(redis_url, "list", "default").stdout.splitlines()[1].startswith(f"x {v2}")
    listed = json.loads(_cli(redis_url, "list", "default", "--json").stdout)
    assert [(v["active"], v["withdrawn"]) for v in listed] == [(True, False), (False, True)]
    refused = _cli(redis_url, "activate", "default", v2)
    assert refused.returncode == 1 and "withdrawn" in refused.stderr
    active = _cli(redis_url, "withdraw", v1)
    assert active.returncode == 1 and "active version" in active.stderr
    status = _cli(redis_url, "status", "default").stdout
    assert f"withdraw {v2}" in status and "leaks the prompt" in status
