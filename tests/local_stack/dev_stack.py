"""`make dev` as the tests run it: `python -m local_stack.dev` in its own process on free ports,
its output in a file, and every process it starts marked so that none can hide after it stops."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from local_stack import processes
from tests.polling import eventually

#: Variables that would make the stack use real services instead of starting its own.
EXTERNAL = (
    "OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL", "COSMOS_ENDPOINT", "COSMOS_KEY",
    "TICKETS_SERVICE_URL", "AzureWebJobsStorage", "SERVICEBUS_CONNECTION_STRING",
    "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE", "GATEWAY_PORT",
)  # fmt: skip
MARKER = "LOCAL_STACK_TEST_MARKER"
#: A stack starts five to seven processes; on a loaded two-core machine that takes a while.
START_DEADLINE_S = 90.0


def free_ports() -> dict[str, str]:
    return {
        "GATEWAY_PORT": str(processes.free_port()),
        "LOCAL_UPSTREAM_PORT": str(processes.free_port()),
        "LOCAL_COSMOS_PORT": str(processes.free_port()),
        "LOCAL_TICKETS_PORT": str(processes.free_port()),
        "LOCAL_AZURITE_PORTS": ",".join(str(processes.free_port()) for _ in range(3)),
    }


class DevStack:
    """One run of the local stack; `env` overrides the caller's environment."""

    def __init__(self, state_dir: Path, env: dict[str, str], name: str = "stack") -> None:
        self.marker = uuid.uuid4().hex
        self.env = {key: value for key, value in os.environ.items() if key not in EXTERNAL}
        self.env.update(
            {"LOCAL_STATE_DIR": str(state_dir), MARKER: self.marker, "PYTHONUNBUFFERED": "1", **env}
        )
        self.log_path = state_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DevStack:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "local_stack.dev"], cwd=processes.ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def ready(self) -> None:
        async def up() -> bool:
            assert self.process is not None and self.process.poll() is None, (
                f"the stack exited:\n{self.output}"
            )
            return "local_stack INFO ready:" in self.output

        await eventually(up, "the local stack to say it is ready", timeout=START_DEADLINE_S)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the stack itself (not its children: it must stop them) and wait for it."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.wait()

    def leftovers(self) -> list[str]:
        """Every live process that carries this run's marker (the stack and all it started)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # gone meanwhile, or not ours to read
            if f"{MARKER}={self.marker}".encode() in environ and command:
                found.append(f"pid {entry.name}: {command[:160]}")
        return found

    def kill_leftovers(self) -> None:
        """After a failed test: SIGKILL what is left, so one failure does not leak into the next tests."""
        for line in self.leftovers():
            pid = int(line.split()[1].rstrip(":"))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
