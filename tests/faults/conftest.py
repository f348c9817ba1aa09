"""Fault-injection suite: shared fixtures, the `slow` split and the scenario summary.

`make test` runs the fast scenarios; the long ones carry `@pytest.mark.slow` and are deselected
here unless a marker expression is given (`make test-long` runs `pytest -m slow tests/faults`).
Every scenario records one line (scenario, injected, expected, observed); the terminal summary
prints them and writes test-output/faults-summary.txt. Scenarios that other parts of the suite
already cover are listed with the outcome their test had in this session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

# Fixtures reused from the other suites (imported, not copied): the real gateway app factory on a
# TestServer, the scripted upstream, the Cosmos DB server, the sample backend, the function runtime.

SUMMARY_PATH = Path(__file__).resolve().parents[2] / "test-output" / "faults-summary.txt"
HERE = Path(__file__).resolve().parent


@dataclass
class Scenario:
    name: str
    injected: str
    expected: str
    observed: str = "did not finish"
    outcome: str = "not run in this session"


#: Fault scenarios that other suites already test; their outcome in this session is reported.
COVERED_ELSEWHERE = {
    "tests/function_app/test_pipeline_e2e.py::test_killed_worker_action_completes_exactly_once": Scenario(
        "worker SIGKILL mid-action",
        "SIGKILL of `python -m function_app.worker` while the backend call is in flight",
        "a restarted worker completes it: one ticket, one succeeded document",
    ),
    "tests/function_app/test_pipeline_e2e.py::test_exhausted_action_is_dead_lettered_and_replayed": Scenario(
        "backend stays down, then replay",
        "three HTTP 500s (every attempt)",
        "dead-lettered with attempt history; replay after recovery succeeds once",
    ),
    "tests/gateway/test_cancel.py::test_upstream_drop_mid_answer_ends_with_error": Scenario(
        "upstream drops mid-answer (single stream)",
        "scripted upstream closes the connection after 5 chunks",
        "error event then message_end, the stream closes",
    ),
    "tests/action_bus/test_outbox.py": Scenario(
        "bus outage behind the outbox",
        "action bus unavailable while actions are accepted",
        "accepted actions wait in the outbox and are published once the bus is back",
    ),
}

for _prefix, _line in COVERED_ELSEWHERE.items():
    _line.observed = f"covered by {_prefix}"

_recorded: list[Scenario] = []


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Scenario:
    """The summary line of this test; the test fills `observed` as it checks things."""
    marker = request.node.get_closest_marker("scenario")
    if marker is None:
        raise pytest.UsageError(
            f"{request.node.nodeid} needs @pytest.mark.scenario(name, injected, expected)"
        )
    line = Scenario(*marker.args)
    line.outcome = "running"
    _recorded.append(line)
    request.node.stash[_LINE] = line
    return line


_LINE = pytest.StashKey[Scenario]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name, injected, expected): a fault-injection summary line")
    if not config.pluginmanager.has_plugin("faults-covered-elsewhere"):
        config.pluginmanager.register(_CoveredElsewhere(), "faults-covered-elsewhere")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a marker expression (plain `make test`), leave this folder's slow scenarios out."""
    if config.option.markexpr:
        return
    keep: list[pytest.Item] = []
    slow: list[pytest.Item] = []
    for item in items:
        in_faults = HERE in Path(str(item.path)).parents
        (slow if in_faults and item.get_closest_marker("slow") else keep).append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    line = item.stash.get(_LINE, None)
    if line is not None and (report.when == "call" or report.failed):
        line.outcome = _outcome(report)
        if report.failed and line.observed == "did not finish":
            line.observed = str(report.longrepr).strip().splitlines()[-1][:200]


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return (
            "xfailed: known bug, see the test's reason"
            if report.skipped
            else "XPASS: the bug is fixed; drop xfail"
        )
    return "passed" if report.passed else ("skipped" if report.skipped else "FAILED")


class _CoveredElsewhere:
    """Registered as a global plugin: a conftest's own hooks only see the items of its folder."""

    @staticmethod
    def pytest_runtest_logreport(report: pytest.TestReport) -> None:
        for prefix, line in COVERED_ELSEWHERE.items():
            if report.nodeid.startswith(prefix) and (report.when == "call" or report.failed):
                now, previous = _outcome(report), line.outcome
                line.outcome = now if previous in ("not run in this session", "passed") else previous


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = [*_recorded, *COVERED_ELSEWHERE.values()]
    if not _recorded:
        return
    text = ["fault-injection scenarios (scenario | injected | expected | observed | outcome)"]
    for line in lines:
        text.append(f"- {line.name} | {line.injected} | {line.expected} | {line.observed} | {line.outcome}")
    terminalreporter.write_sep("=", "fault-injection summary")
    for row in text:
        terminalreporter.write_line(row)
    SUMMARY_PATH.parent.mkdir(exist_ok=True)
    SUMMARY_PATH.write_text("\n".join(text) + "\n")
