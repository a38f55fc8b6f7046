"""Real NFS and SMB clients against a DittoFS pod: thin wrappers with clear failure messages.

NFS: libnfs' command-line tools (libnfs-utils), which need neither a kernel mount nor root
privileges on the server side. NFSv3 reads and writes files (nfs-cp, nfs-cat); NFSv4 lists
(nfs-ls) and tries reads, which libnfs 4.0 refuses against DittoFS v0.29.0 (see read_v4).
The port is given in the URL (MOUNT shares the NFS port in DittoFS), so no portmapper is
involved. AUTH_SYS as uid/gid 0: the samples' shares set `squash: none`.
SMB: Samba's smbclient, SMB3 only, as a DittoFS user (NTLM from its password).
There is no rename or delete in libnfs-utils, so those go through SMB and are checked over NFS.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NFS_PORT = 12049  # the DittoServer's default container ports
SMB_PORT = 12445
TOOLS = ("nfs-cp", "nfs-cat", "nfs-ls", "smbclient")
DEFAULT_TIMEOUT = 30.0


class ClientError(AssertionError):
    """A client command failed: the message has the command (passwords masked) and output."""


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _shown(argv: Sequence[str]) -> str:
    """The command line with the password of `-U user%password` masked."""
    masked = [
        re.sub(r"%.*", "%***", arg) if argv[i - 1] == "-U" else arg for i, arg in enumerate(argv)
    ]
    return shlex.join(masked)


async def run(
    *argv: str, cwd: Path | None = None, timeout: float = DEFAULT_TIMEOUT
) -> tuple[int, str]:
    """Exit code and combined output; a ClientError if it does not finish in time."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ClientError(f"`{_shown(argv)}` timed out after {timeout} s") from None
    return proc.returncode or 0, output.decode(errors="replace")


async def check(*argv: str, what: str, cwd: Path | None = None) -> str:
    code, text = await run(*argv, cwd=cwd)
    if code != 0:
        raise ClientError(f"{what} failed: `{_shown(argv)}` exited with {code}:\n{text.strip()}")
    return text


# -- NFS -----------------------------------------------------------------------------------

_LIBNFS_V4_ACCESS_REFUSAL = re.compile(r"Insufficient ACCESS\. Wanted [0-9a-f]{8} but got 000001ff")


@dataclass(frozen=True)
class Nfs:
    """One NFS export as one AUTH_SYS identity, e.g. Nfs("10.233.0.2", "/export", uid=1000).

    The identity is what the client asserts (root unless said otherwise), as a kernel client
    sends its local user's UID/GID.
    """

    host: str
    share: str
    port: int = NFS_PORT
    uid: int = 0
    gid: int = 0

    def url(self, path: str = "", version: int = 3) -> str:
        ports = f"nfsport={self.port}" + (f"&mountport={self.port}" if version == 3 else "")
        identity = f"uid={self.uid}&gid={self.gid}"
        return f"nfs://{self.host}{self.share}{path}?version={version}&{ports}&{identity}"

    async def write(self, path: str, content: str, scratch: Path) -> None:
        """Write a file over NFSv3 (nfs-cp of a local copy)."""
        local = scratch / f"nfs-upload-{path.strip('/').replace('/', '_')}"
        local.write_text(content)
        await self.upload(local, path)

    async def upload(self, local: Path, path: str) -> None:
        """Copy a local file to `path` over NFSv3, any size and content."""
        await check("nfs-cp", str(local), self.url(path), what=f"NFSv3 write of {self}{path}")

    async def download(self, path: str, local: Path) -> None:
        """Copy `path` over NFSv3 to a local file, byte for byte."""
        await asyncio.to_thread(local.unlink, missing_ok=True)  # nfs-cp creates it
        await check("nfs-cp", self.url(path), str(local), what=f"NFSv3 read of {self}{path}")

    async def read(self, path: str) -> str:
        """A file's content over NFSv3."""
        return await check("nfs-cat", self.url(path), what=f"NFSv3 read of {self}{path}")

    async def read_v4(self, path: str) -> str | None:
        """A file's content over NFSv4, or None when libnfs refuses to open it for the known reason.

        DittoFS answers ACCESS with `supported` = all nine ACCESS4 bits (RFC 8276's xattr bits
        included) whatever was asked, and libnfs 4.0 treats any `supported` other than the bits it
        asked for as a denial, so every NFSv4 open fails client-side. Any other failure is an error.
        """
        code, text = await run("nfs-cat", self.url(path, version=4))
        if code == 0:
            return text
        if _LIBNFS_V4_ACCESS_REFUSAL.search(text):
            return None
        raise ClientError(f"NFSv4 read of {self}{path} failed with exit {code}:\n{text.strip()}")

    async def listing(self, path: str = "") -> list[str]:
        """Names in a directory over NFSv4 (without . and ..)."""
        text = await check(
            "nfs-ls", self.url(path, version=4), what=f"NFSv4 listing of {self}{path}"
        )
        names = [line.split()[-1] for line in text.splitlines() if line.strip()]
        return [name for name in names if name not in (".", "..")]

    async def reachable(self) -> str | None:
        """None if the export answers an NFSv4 listing, else why not."""
        code, text = await run("nfs-ls", self.url(version=4), timeout=15)
        return None if code == 0 else f"exit {code}: {text.strip()[-500:]}"

    def __str__(self) -> str:
        return f"nfs://{self.host}:{self.port}{self.share}"


# -- SMB -----------------------------------------------------------------------------------

_LISTED = re.compile(r"^  (?P<name>\S.*?)\s+[A-Z]*\s+\d+\s+\w{3} \w{3} +\d+ [\d:]+ \d{4}$")
_NT_STATUS = re.compile(r"NT_STATUS_[A-Z_]+")


@dataclass(frozen=True)
class Smb:
    """One SMB share of a DittoFS server as one user, e.g. Smb(ip, "export", "admin", pw)."""

    host: str
    share: str  # without the leading slash
    user: str
    password: str
    port: int = SMB_PORT

    def _argv(self, commands: str) -> list[str]:
        service = f"//{self.host}/{self.share}"
        auth = ["-U", f"{self.user}%{self.password}"]
        return ["smbclient", service, "-p", str(self.port), "-m", "SMB3", *auth, "-c", commands]

    async def run(self, commands: str, what: str, cwd: Path | None = None) -> str:
        """smbclient -c `commands`; smbclient exits 0 even when a command fails, so any
        NT_STATUS error in its output is a failure too."""
        argv = self._argv(commands)
        code, text = await run(*argv, cwd=cwd)
        if code != 0 or _NT_STATUS.search(text):
            raise ClientError(
                f"{what} failed: `{_shown(argv)}` exited with {code}:\n{text.strip()}"
            )
        return text

    async def login_error(self) -> str | None:
        """None if the user can log in and list the share, else the NT_STATUS (or output)."""
        code, text = await run(*self._argv("ls"))
        if code == 0 and not _NT_STATUS.search(text):
            return None
        found = _NT_STATUS.search(text)
        return found.group(0) if found else f"exit {code}: {text.strip()[-300:]}"

    async def put(self, path: str, content: str, scratch: Path) -> None:
        local = scratch / f"smb-upload-{path.strip('/').replace('/', '_')}"
        local.write_text(content)
        await self.run(f'put "{local}" "{path}"', f"SMB write of {self}{path}")

    async def read(self, path: str, scratch: Path) -> str:
        local = scratch / f"smb-download-{path.strip('/').replace('/', '_')}"
        local.unlink(missing_ok=True)
        await self.run(f'get "{path}" "{local}"', f"SMB read of {self}{path}")
        return local.read_text()

    async def listing(self, directory: str = "") -> list[str]:
        """Names in a directory (without . and ..)."""
        command = f'cd "{directory}"; ls' if directory else "ls"
        text = await self.run(command, f"SMB listing of {self}/{directory}")
        names = [m.group("name") for line in text.splitlines() if (m := _LISTED.match(line))]
        return [name for name in names if name not in (".", "..")]

    async def rename(self, old: str, new: str) -> None:
        await self.run(f'rename "{old}" "{new}"', f"SMB rename {old} -> {new} on {self}")

    async def delete(self, path: str) -> None:
        await self.run(f'del "{path}"', f"SMB delete of {self}/{path}")

    async def mkdir(self, path: str) -> None:
        await self.run(f'mkdir "{path}"', f"SMB mkdir {self}/{path}")

    def __str__(self) -> str:
        return f"smb://{self.user}@{self.host}:{self.port}/{self.share}"
