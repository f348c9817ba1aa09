"""Child processes on loopback ports, each started, awaited until it answers, and stopped.

Only processes started here are ever stopped here: a Redis that already answers on the
configured URL is used as it is and left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from local_stack.errors import LocalStackError

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"


class ServiceStartError(LocalStackError):
    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name} did not start: {detail}")
        self.name = name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Service:
    """One child process listening on `port` once ready."""

    name: str
    argv: list[str]
    port: int
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Service:
        if self.process is not None and self.process.poll() is None:
            return self
        # The child process owns the log file for its lifetime; None shares our terminal.
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **self.env},
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop children in order
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceStartError(
                    self.name, f"exited with {self.process.returncode}; see {self.log_path}"
                )
            if port_answers(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise ServiceStartError(self.name, f"nothing answered on port {self.port} within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; to the child's whole process group (it leads one,
        started in a new session), so nothing it started itself outlives it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait()
        _signal_group(self.process, signal.SIGKILL)  # whatever of its group is left

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        if self.process is not None and self.process.poll() is None:
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(process.pid, signum)


def redis_server(
    port: int | None = None, data_dir: Path | None = None, log_path: Path | None = None
) -> Service:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceStartError("redis-server", "not installed (make bootstrap installs it)")
    port = port or free_port()
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="redis-"))
    argv = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    return Service("redis-server", argv, port, log_path)


def azurite(location: Path, log_path: Path | None = None, blob_port: int | None = None) -> Service:
    blob_port = blob_port or free_port()
    queue_port, table_port = free_port(), free_port()
    argv = [
        "node",
        str(NODE_MODULES / "azurite/dist/src/azurite.js"),
        "--silent",
        "--location",
        str(location),
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--loose",
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(blob_port),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(queue_port),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(table_port),
    ]
    service = Service("azurite", argv, blob_port, log_path)
    service.env["AZURITE_QUEUE_PORT"], service.env["AZURITE_TABLE_PORT"] = str(queue_port), str(table_port)
    return service


def azurite_connection_string(service: Service) -> str:
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{service.port}/devstoreaccount1;"
        f"QueueEndpoint=http://127.0.0.1:{service.env['AZURITE_QUEUE_PORT']}/devstoreaccount1;"
        f"TableEndpoint=http://127.0.0.1:{service.env['AZURITE_TABLE_PORT']}/devstoreaccount1;"
    )


#: The Cosmos DB emulator's published well-known key; the local server accepts any base64 key.
COSMOS_EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)


def cosmos_server(port: int | None = None, log_path: Path | None = None) -> Service:
    port = port or free_port()
    argv = [
        "node",
        str(NODE_MODULES / "@vercel/cosmosdb-server/lib/cli.js"),
        "-p",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    return Service("cosmosdb-server", argv, port, log_path)


def python_module(
    name: str,
    module: str,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> Service:
    return Service(name, [sys.executable, "-m", module, *args], port, log_path, env=dict(env or {}))
