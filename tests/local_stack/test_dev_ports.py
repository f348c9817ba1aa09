"""`make dev` checks every port it needs before it starts anything, names each one in use and what to
do, and whatever fails, it leaves no process behind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from local_stack import processes
from tests.local_stack.dev_stack import DevStack, free_ports


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    ("variable", "owner"),
    [("GATEWAY_PORT", "the gateway"), ("LOCAL_COSMOS_PORT", "the Cosmos DB stand-in"),
     ("LOCAL_UPSTREAM_PORT", "the scripted model")],
)  # fmt: skip
def test_busy_port_is_named_and_nothing_starts(
    tmp_path: Path, redis_url: str, stacks: list[DevStack], variable: str, owner: str
) -> None:
    """With one needed port taken, the stack exits 1 before starting anything, naming the port, who
    needs it and the variable that moves it; no process of it is left."""
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        stack = DevStack(tmp_path, {**free_ports(), "REDIS_URL": redis_url, variable: str(port)})
        stacks.append(stack.start())
        assert stack.wait() == 1
    output = stack.output
    assert f"port {port} ({owner}) is already in use" in output, output
    assert f"set {variable} to a free port" in output
    assert "nothing was started" in output and "starting " not in output
    assert stack.leftovers() == []


def test_every_busy_port_is_named_at_once(tmp_path: Path, redis_url: str, stacks: list[DevStack]) -> None:
    """Two ports taken: both are named in the one error, so one attempt tells everything to fix."""
    with listening_socket() as first, listening_socket() as second:
        ports = {"GATEWAY_PORT": first.getsockname()[1], "LOCAL_TICKETS_PORT": second.getsockname()[1]}
        stack = DevStack(
            tmp_path, {**free_ports(), "REDIS_URL": redis_url, **{k: str(v) for k, v in ports.items()}}
        )
        stacks.append(stack.start())
        assert stack.wait() == 1
    for variable, port in ports.items():
        assert f"port {port} " in stack.output and f"set {variable} " in stack.output, stack.output
    assert stack.leftovers() == []


def test_cluster_mode_checks_ports_before_starting_its_cluster(
    tmp_path: Path, stacks: list[DevStack]
) -> None:
    """REDIS_MODE=cluster with a needed port taken: the error comes before the local Redis Cluster is
    started, so nothing at all was started (the cluster's nodes included)."""
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        redis_url = f"redis://127.0.0.1:{processes.free_port()}/0"  # nothing answers: a cluster is wanted
        env = {**free_ports(), "REDIS_URL": redis_url, "REDIS_MODE": "cluster", "GATEWAY_PORT": str(port)}
        stack = DevStack(tmp_path, env)
        stacks.append(stack.start())
        assert stack.wait() == 1
    output = stack.output
    assert f"port {port} (the gateway) is already in use" in output, output
    assert "Redis Cluster" not in output and "starting " not in output, output
    assert stack.leftovers() == []


def test_bad_port_setting_fails_naming_the_variable(
    tmp_path: Path, redis_url: str, stacks: list[DevStack]
) -> None:
    """A malformed port variable stops the stack at start with a line naming it."""
    stack = DevStack(tmp_path, {**free_ports(), "REDIS_URL": redis_url, "LOCAL_AZURITE_PORTS": "10000"})
    stacks.append(stack.start())
    assert stack.wait() == 1
    assert "setting LOCAL_AZURITE_PORTS: expected three ports" in stack.output, stack.output
    assert stack.leftovers() == []


async def test_service_failing_at_start_stops_all_started_before_it(
    tmp_path: Path, redis_url: str, stacks: list[DevStack]
) -> None:
    """The last service (the gateway) exits at start on a bad setting: everything started before it
    (the scripted model, Azurite, the Cosmos DB stand-in, the tickets backend, the worker) is stopped,
    and the stack exits 1 with no process left."""
    stack = DevStack(tmp_path, {**free_ports(), "REDIS_URL": redis_url, "GATEWAY_MAX_BODY_BYTES": "lots"})
    stacks.append(stack.start())
    assert stack.wait(timeout=120) == 1
    output = stack.output
    assert "starting worker" in output and "starting gateway" in output, output
    assert "gateway did not start" in output or "gateway exited" in output, output
    assert stack.leftovers() == []


async def test_interrupted_stack_stops_everything(
    tmp_path: Path, redis_url: str, stacks: list[DevStack]
) -> None:
    """A running stack stopped by SIGTERM (as by Ctrl-C or `timeout`) exits 0 and leaves no process."""
    stack = DevStack(tmp_path, {**free_ports(), "REDIS_URL": redis_url})
    stacks.append(stack.start())
    await stack.ready()
    assert len(stack.leftovers()) >= 6  # the stack, the model, Azurite, Cosmos DB, backend, worker, gateway
    assert stack.stop() == 0
    assert stack.leftovers() == []
