"""Run an operator as a real OS process and observe it through its JSON logs and endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from tests.support import leaks

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now: held open together, so none is handed out twice."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


class OperatorProcess:
    """One operator process; stdout (JSON log lines) goes to a file the test can search."""

    def __init__(self, module: str, args: Sequence[str], log_path: Path) -> None:
        self.health_port, self.metrics_port = free_ports(2)
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            module,
            *args,
            "--bind-address=127.0.0.1",
            f"--health-port={self.health_port}",
            f"--metrics-port={self.metrics_port}",
        ]
        self._log_file = log_path.open("w")
        leaks.watch_log(log_path)
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"event": line})
        return lines

    def logged(self, event: str) -> bool:
        return any(entry.get("event") == event for entry in self.logs())

    async def wait_for_log(self, event: str, timeout: float = 30) -> float:
        return await eventually(lambda: self.logged(event), timeout, f"log event {event!r}", self)

    def metric(self, name: str, /, **labels: str) -> float | None:
        """One sample from /metrics, or None when the series is absent."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, label_text = series.partition("{")
            if metric == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
                return float(value)
        return None

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log_file.close()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    process: OperatorProcess | None = None,
) -> float:
    """Poll until `predicate` holds; return the seconds it took, or fail with context."""
    start = time.monotonic()
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            context = f"\n--- operator log tail ---\n{process.tail()}" if process else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{context}")
        await asyncio.sleep(0.1)
