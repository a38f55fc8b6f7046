"""The README's first command on a fresh machine: `nox -s dev` ends with a share this machine
writes to and reads from. Runs `python -m tests.testbed dev --local` (what the nox session runs,
forced onto a local control plane) and then exactly the commands it prints.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT = 420  # a fresh machine may still build nothing here: the binaries exist by now
REPO = Path(__file__).resolve().parents[2]


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    """stdout lines up to the one containing `marker`."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
        assert time.monotonic() < deadline, f"no {marker!r} after {timeout} s:\n" + "\n".join(
            lines[-40:]
        )
    raise AssertionError(
        f"dev exited ({proc.wait()}) before {marker!r}:\n" + "\n".join(lines[-60:])
    )


def block(lines: list[str], heading: str) -> list[str]:
    """The indented command lines under a heading of the printed usage."""
    start = next(i for i, line in enumerate(lines) if line.startswith(heading)) + 1
    commands = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        commands.append(line[2:])
    return commands


def test_nox_dev_serves_a_share_this_machine_writes_and_reads(tmp_path: Path) -> None:
    log = (tmp_path / "dev.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.testbed", "dev", "--local"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,  # Ctrl-C reaches its whole group, as in a terminal
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = read_until(proc, "Ctrl-C stops", READY_TIMEOUT)
        script = [*block(lines, "Use the cluster"), *block(lines, "Write a file over NFS")]
        assert any(re.search(r"nfs-cp .*nfs://10\.233\.240\.\d+/", c) for c in script), script
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        # nfs-cat and the SMB read each print the file back.
        assert result.stdout.count("hello from the dev server") == 2, result.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
        log.close()
    assert code == 0, (tmp_path / "dev.err").read_text()[-3000:]
    assert "[dev] tearing down" in (tmp_path / "dev.err").read_text()


def test_nox_dev_uses_a_configured_cluster_that_answers(control_plane: Any, tmp_path: Path) -> None:
    """With $KUBECONFIG answering, dev installs the CRD there and runs the operator against it:
    no local control plane, nothing applied."""
    log = tmp_path / "dev.err"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.testbed", "dev"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
            env={**os.environ, "KUBECONFIG": str(control_plane.kubeconfig_path)},
        )
        try:
            read_until(proc, "starting workers", 120)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=60)
    said = log.read_text()
    assert f"[dev] using the cluster of {control_plane.kubeconfig_path}" in said, said
    assert "starting a local control plane" not in said
    assert code == 0, said[-3000:]
