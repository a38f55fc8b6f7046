"""Real NFS and SMB clients against a DittoFS pod: thin wrappers with clear failure messages.

NFS: libnfs' command-line tools (libnfs-utils), which need neither a kernel mount nor root
privileges on the server side. NFSv3 reads and writes files (nfs-cp, nfs-cat); NFSv4 lists
(nfs-ls) and tries reads, which libnfs 4.0 refuses against DittoFS v0.29.0 (see read_v4).
A write the server refuses is made through the same libnfs library directly, to learn the
NFS status it answered with (see write_error).
The port is given in the URL (MOUNT shares the NFS port in DittoFS), so no portmapper is
involved. AUTH_SYS as uid/gid 0: the samples' shares set `squash: none`.
SMB: Samba's smbclient, SMB3 only, as a DittoFS user (NTLM from its password); `options`
add smbclient options (a dialect range, signing, encryption). smbclient signs whenever the
server requires it, whatever it is told, so an unsigned session is made with smbprotocol
(unsigned_tree_connect).
There is no rename or delete in libnfs-utils, so those go through SMB and are checked over NFS.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import re
import select
import shlex
import shutil
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smbprotocol.connection import Connection, Dialects
from smbprotocol.exceptions import SMBException
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

NFS_PORT = 12049  # the DittoServer's default container ports
SMB_PORT = 12445
TOOLS = ("nfs-cp", "nfs-cat", "nfs-ls", "smbclient")
DEFAULT_TIMEOUT = 30.0


class ClientError(AssertionError):
    """A client command failed: the message has the command (passwords masked) and output."""


def missing_tools() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if ctypes.util.find_library("nfs") is None:
        missing.append("libnfs")
    return missing


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

NFS_PROGRAM = 100003
AUTH_NONE, AUTH_TLS = 0, 7  # RPC credential flavors; AUTH_TLS is RFC 9289's STARTTLS probe

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

    async def write_error(self, path: str, content: str) -> str | None:
        """Write a file over NFSv3; None if it was written, else libnfs' message for the
        server's refusal, which names the NFS status (e.g. "NFS3ERR_DQUOT")."""
        return await asyncio.to_thread(_libnfs_write, self.url(path), content.encode())

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

    async def null_over_tls(self, certificate: str) -> str:
        """The TLS version of an RPC-over-TLS (RFC 9289) connection that answered an NFSv3
        NULL call: an AUTH_TLS probe, the server's STARTTLS verifier, a TLS 1.3 handshake that
        trusts only `certificate` (PEM), then NULL inside TLS. A ClientError says which step
        failed. libnfs has no RPC-over-TLS, hence this small client."""
        return await asyncio.to_thread(self._null_over_tls, certificate)

    def _null_over_tls(self, certificate: str) -> str:
        trusted = ssl.create_default_context(cadata=certificate)
        trusted.check_hostname = False  # the certificate names no pod IP; its key is checked
        trusted.minimum_version = ssl.TLSVersion.TLSv1_3
        with socket.create_connection((self.host, self.port), timeout=10) as raw:
            raw.sendall(_rpc_null(1, AUTH_TLS))
            verifier, accepted = _rpc_reply(raw)
            if verifier != b"STARTTLS" or not accepted:
                raise ClientError(f"{self}: AUTH_TLS probe answered {verifier!r}, {accepted=}")
            try:
                with trusted.wrap_socket(raw) as sealed:
                    sealed.sendall(_rpc_null(2, AUTH_NONE))
                    _, accepted = _rpc_reply(sealed)
                    version = str(sealed.version())
            except (ssl.SSLError, OSError) as error:
                raise ClientError(f"{self}: TLS after STARTTLS failed: {error}") from None
        if not accepted:
            raise ClientError(f"{self}: NULL over TLS was not accepted")
        return version

    def __str__(self) -> str:
        return f"nfs://{self.host}:{self.port}{self.share}"


class _NfsUrl(ctypes.Structure):
    _fields_ = [("server", ctypes.c_char_p), ("path", ctypes.c_char_p), ("file", ctypes.c_char_p)]


# void (*nfs_cb)(int err, struct nfs_context *nfs, void *data, void *private_data)
_NFS_CALLBACK = ctypes.CFUNCTYPE(
    None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p
)


@functools.cache
def _libnfs() -> ctypes.CDLL:
    """libnfs (the library of libnfs-utils' tools), with the signatures of its libnfs.h."""
    name = ctypes.util.find_library("nfs")
    if name is None:
        raise ClientError("libnfs is not installed: apt-get install -y libnfs-utils")
    lib = ctypes.CDLL(name)
    context, text, handle = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "nfs_init_context": (context, []),
        "nfs_destroy_context": (None, [context]),
        "nfs_get_error": (text, [context]),
        "nfs_parse_url_full": (ctypes.POINTER(_NfsUrl), [context, text]),
        "nfs_destroy_url": (None, [ctypes.POINTER(_NfsUrl)]),
        "nfs_mount": (ctypes.c_int, [context, text, text]),
        "nfs_creat": (ctypes.c_int, [context, text, ctypes.c_int, ctypes.POINTER(handle)]),
        "nfs_close": (ctypes.c_int, [context, handle]),
        "nfs_pwrite_async": (
            ctypes.c_int,
            [
                context,
                handle,
                ctypes.c_uint64,
                ctypes.c_uint64,
                text,
                _NFS_CALLBACK,
                ctypes.c_void_p,
            ],
        ),
        "nfs_get_fd": (ctypes.c_int, [context]),
        "nfs_which_events": (ctypes.c_int, [context]),
        "nfs_service": (ctypes.c_int, [context, ctypes.c_int]),
    }
    for function, (result, arguments) in signatures.items():
        getattr(lib, function).restype = result
        getattr(lib, function).argtypes = arguments
    return lib


def _libnfs_write(url: str, content: bytes, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """Create the file of `url` and write `content` into it with one WRITE; None when both
    succeed, else libnfs' error. The write is asynchronous because libnfs 4.0's synchronous
    write replaces the message of a refused WRITE with garbage."""
    lib = _libnfs()
    nfs = lib.nfs_init_context()

    def error() -> str:
        return (lib.nfs_get_error(nfs) or b"").decode(errors="replace")

    try:
        parsed = lib.nfs_parse_url_full(nfs, url.encode())
        if not parsed:
            raise ClientError(f"libnfs cannot parse {url}: {error()}")
        try:
            target = parsed.contents
            if lib.nfs_mount(nfs, target.server, target.path) != 0:
                raise ClientError(f"libnfs cannot mount {url}: {error()}")
            handle = ctypes.c_void_p()
            if lib.nfs_creat(nfs, target.file, 0o644, ctypes.byref(handle)) != 0:
                return error()
            try:
                statuses: list[int] = []
                written = _NFS_CALLBACK(lambda status, *_: statuses.append(status))
                if lib.nfs_pwrite_async(nfs, handle, 0, len(content), content, written, None):
                    raise ClientError(f"libnfs cannot send a WRITE to {url}: {error()}")
                deadline = time.monotonic() + timeout
                while not statuses:
                    if time.monotonic() > deadline:
                        raise ClientError(f"NFSv3 write to {url} unanswered after {timeout} s")
                    poller = select.poll()
                    poller.register(lib.nfs_get_fd(nfs), lib.nfs_which_events(nfs))
                    for _, events in poller.poll(100):
                        if lib.nfs_service(nfs, events) < 0:
                            raise ClientError(f"NFSv3 write to {url} failed: {error()}")
                return None if statuses[0] >= 0 else error()
            finally:
                lib.nfs_close(nfs, handle)
        finally:
            lib.nfs_destroy_url(parsed)
    finally:
        lib.nfs_destroy_context(nfs)


def _rpc_null(xid: int, flavor: int) -> bytes:
    """An NFSv3 NULL call with an empty credential of `flavor`, record-marked for TCP."""
    call = struct.pack(">10I", xid, 0, 2, NFS_PROGRAM, 3, 0, flavor, 0, AUTH_NONE, 0)
    return struct.pack(">I", 0x80000000 | len(call)) + call


def _rpc_reply(conn: socket.socket) -> tuple[bytes, bool]:
    """The verifier body of one RPC reply, and whether the call was accepted (SUCCESS)."""
    message = b""
    last = False
    while not last:
        (mark,) = struct.unpack(">I", _received(conn, 4))
        last, size = bool(mark & 0x80000000), mark & 0x7FFFFFFF
        message += _received(conn, size)
    _, kind, replied, _, length = struct.unpack(">5I", message[:20])
    verifier = message[20 : 20 + length]
    padded = 20 + (length + 3) // 4 * 4
    accepted = kind == 1 and replied == 0 and message[padded : padded + 4] == b"\0\0\0\0"
    return verifier, accepted


def _received(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ClientError("the NFS server closed the connection")
        data += chunk
    return data


# -- SMB -----------------------------------------------------------------------------------

_LISTED = re.compile(r"^  (?P<name>\S.*?)\s+[A-Z]*\s+\d+\s+\w{3} \w{3} +\d+ [\d:]+ \d{4}$")
_NT_STATUS = re.compile(r"NT_STATUS_[A-Z_]+")
_SPACE = re.compile(
    r"(?P<blocks>\d+) blocks of size (?P<size>\d+)\. (?P<free>\d+) blocks available"
)
_OWNER_SID = re.compile(r"^\s*Owner SID:\s*(S-[0-9-]+)$", re.MULTILINE)
_GROUP_SID = re.compile(r"^\s*Group SID:\s*(S-[0-9-]+)$", re.MULTILINE)


@dataclass(frozen=True)
class Smb:
    """One SMB share of a DittoFS server as one user, e.g. Smb(ip, "export", "admin", pw)."""

    host: str
    share: str  # without the leading slash
    user: str
    password: str
    port: int = SMB_PORT
    # More smbclient options, e.g. ("--client-protection=off",) for neither signing nor
    # encryption, or ("--option=client max protocol=SMB2_10",) for a dialect range.
    options: tuple[str, ...] = ()

    def _argv(self, commands: str) -> list[str]:
        service = f"//{self.host}/{self.share}"
        auth = ["-U", f"{self.user}%{self.password}"]
        return [
            "smbclient",
            service,
            "-p",
            str(self.port),
            "-m",
            "SMB3",
            *auth,
            *self.options,
            "-c",
            commands,
        ]

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
        local = _upload(scratch, path, content)
        await self.run(f'put "{local}" "{path}"', f"SMB write of {self}{path}")

    async def put_error(self, path: str, content: str, scratch: Path) -> str | None:
        """None if the file was written, else the NT_STATUS the server refused it with."""
        local = _upload(scratch, path, content)
        code, text = await run(*self._argv(f'put "{local}" "{path}"'))
        found = _NT_STATUS.search(text)
        if code == 0 and not found:
            return None
        return found.group(0) if found else f"exit {code}: {text.strip()[-300:]}"

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

    async def space(self) -> tuple[int, int]:
        """The share's size and free bytes as the server tells this user (smbclient's du)."""
        text = await self.run("du", f"SMB free space of {self}")
        found = _SPACE.search(text)
        if found is None:
            raise ClientError(f"no free space in smbclient's du output:\n{text.strip()}")
        blocks, size, available = (int(found.group(name)) for name in ("blocks", "size", "free"))
        return blocks * size, available * size

    async def owner_and_group(self, path: str) -> tuple[str, str]:
        """The owner and group SIDs of a file's security descriptor (smbclient's showacls)."""
        text = await self.run(f'showacls; ls "{path}"', f"SMB security descriptor of {path}")
        owner, group = _OWNER_SID.search(text), _GROUP_SID.search(text)
        if owner is None or group is None:
            raise ClientError(f"no owner or group SID for {self}/{path} in:\n{text.strip()}")
        return owner.group(1), group.group(1)

    async def rename(self, old: str, new: str) -> None:
        await self.run(f'rename "{old}" "{new}"', f"SMB rename {old} -> {new} on {self}")

    async def delete(self, path: str) -> None:
        await self.run(f'del "{path}"', f"SMB delete of {self}/{path}")

    async def mkdir(self, path: str) -> None:
        await self.run(f'mkdir "{path}"', f"SMB mkdir {self}/{path}")

    async def unsigned_tree_connect(self, dialect: str) -> str | None:
        """None if a session of `dialect` ("2.1", "3.0", "3.0.2" or "3.1.1") that signs
        nothing may connect to the share, else why not. smbprotocol logs in (signing the
        session setup where the server demands it), then sends TREE_CONNECT unsigned."""
        return await asyncio.to_thread(self._unsigned_tree_connect, _SMBPROTOCOL_DIALECTS[dialect])

    def _unsigned_tree_connect(self, dialect: int) -> str | None:
        connection = Connection(uuid.uuid4(), self.host, self.port, require_signing=False)
        try:
            connection.connect(dialect=dialect, timeout=10)
            session = Session(connection, self.user, self.password, require_encryption=False)
            session.connect()
            session.signing_required = False
            TreeConnect(session, rf"\\{self.host}\{self.share}").connect()
        except (SMBException, OSError) as error:  # refused, or the connection dropped
            return f"{type(error).__name__}: {error}"
        finally:
            connection.disconnect(close=True)
        return None

    def __str__(self) -> str:
        return f"smb://{self.user}@{self.host}:{self.port}/{self.share}"


def _upload(scratch: Path, path: str, content: str) -> Path:
    """A local file with `content`, to be put at `path`."""
    local = scratch / f"smb-upload-{path.strip('/').replace('/', '_')}"
    local.write_text(content)
    return local


_SMBPROTOCOL_DIALECTS = {
    "2.1": Dialects.SMB_2_1_0,
    "3.0": Dialects.SMB_3_0_0,
    "3.0.2": Dialects.SMB_3_0_2,
    "3.1.1": Dialects.SMB_3_1_1,
}
