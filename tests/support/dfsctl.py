"""dfsctl, DittoFS' own admin CLI (built beside `dfs`), run the way docs/snapshots.md shows it,
so the documented commands are the tested ones. Its login lives in a directory of its own."""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path

from tests.testbed import binaries

TIMEOUT = 120.0


class Dfsctl:
    def __init__(self, config_home: Path) -> None:
        self.binary = binaries.executable("dfs", "dfsctl")
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(config_home), "HOME": str(config_home)}

    async def __call__(self, *args: str) -> str:
        """Run one command; its output, or an AssertionError carrying it when it fails."""
        process = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
        except TimeoutError:
            process.kill()
            raise AssertionError(f"dfsctl {shlex.join(args)}: no answer in {TIMEOUT} s") from None
        text = output.decode(errors="replace")
        if process.returncode != 0:
            raise AssertionError(f"dfsctl {_shown(args)} failed ({process.returncode}):\n{text}")
        return text

    async def login(self, url: str, password: str) -> None:
        await self("login", "--server", url, "--username", "admin", "--password", password)


def _shown(args: tuple[str, ...]) -> str:
    """The command line with the value of --password masked."""
    previous = ("", *args[:-1])
    masked = [
        "***" if flag == "--password" else arg for flag, arg in zip(previous, args, strict=True)
    ]
    return shlex.join(masked)
