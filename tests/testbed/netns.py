"""Network and mount namespaces for the testbed node's pods (root only, stdlib only).

Network: each Node owns one Linux bridge on a private /24 of 10.233.0.0/16, with the host's
address .1 on it; each pod gets a network namespace joined to the bridge by a veth pair. The host
(tests, protocol clients) reaches every pod IP directly, pods reach each other over the bridge and
reach host services listening on 0.0.0.0 (or on the gateway) at the gateway address. Services
route through kube-proxy (kubeproxy.py), which forwards only between testbed links: nothing is
routed off this machine, and these addresses exist only here.

Containers: this file is also the small program that starts a container (`python -I -S netns.py
exec`, spec as JSON on stdin, so secrets never appear in argv). It joins the pod's network
namespace, makes a private mount + UTS namespace, builds a root on a fresh tmpfs (the host's /usr,
/etc, ... bound read-only, image files, volumes at their mountPaths), chroots into it, drops to the
container's uid/gid/groups and execs the command with exactly the container's environment. The
mount namespace dies with the process: the host sees no mount and no mountpoint it created.

Bridges and namespaces carry the creating process's pid, so a killed test run's leftovers are
removed by the next `Bridge.create()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NETWORK = ipaddress.IPv4Network("10.233.0.0/16")
# Bridges take 10.233.<index>.0/24 for index < BRIDGE_LIMIT; the rest of NETWORK is the
# Service side: the load balancer's address pool and the host's own address for cluster
# services (kube-proxy.py routes both).
BRIDGE_LIMIT = 240
LOAD_BALANCER_POOL = ipaddress.IPv4Network("10.233.240.0/24")
HOST_SERVICES_IP = ipaddress.IPv4Address("10.233.255.1")
NETNS_DIR = Path("/run/netns")
HELPER = Path(__file__).resolve()

BRIDGE_PREFIX = "dfstb"  # bridges dfstb<k>; netns dfstb<k>-<n>; host veths dfsv<k>x<n>
_ALIAS_PREFIX = "dittofs-testbed pid="
_BRIDGE_NAME = re.compile(rf"^{BRIDGE_PREFIX}(\d+)$")


class NetnsError(RuntimeError):
    """An `ip` command failed; the message carries the command and its output."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS` (iproute2), raising NetnsError with its output on failure."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {(result.stderr or result.stdout).strip()}")
    return result


@dataclass(frozen=True)
class PodNetwork:
    """One pod's network namespace, its address and the host end of its veth pair."""

    netns: str
    ip: ipaddress.IPv4Address
    host_veth: str

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.netns


@dataclass
class Bridge:
    """A host bridge on 10.233.<index>.0/24 that pod network namespaces attach to."""

    index: int
    _next_host: int = 2
    _used: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return f"{BRIDGE_PREFIX}{self.index}"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{NETWORK.network_address + (self.index << 8)}/24")

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The host's address on the bridge: what pods use to reach host services."""
        return self.network.network_address + 1

    @classmethod
    def create(cls) -> Bridge:
        """Reap dead runs' bridges, then claim the first free index (creation is the lock)."""
        _require_root()
        reap_stale()
        for index in range(BRIDGE_LIMIT):
            bridge = cls(index)
            mac = f"02:33:00:00:{index:02x}:01"  # fixed: a bridge's MAC must not follow its ports
            add = ("link", "add", "name", bridge.name, "address", mac, "type", "bridge")
            result = ip(*add, check=False)
            if result.returncode != 0:
                continue  # taken by another live run
            try:
                ip("link", "set", "dev", bridge.name, "alias", f"{_ALIAS_PREFIX}{os.getpid()}")
                ip("addr", "add", f"{bridge.gateway}/24", "dev", bridge.name)
                ip("link", "set", "dev", bridge.name, "up")
            except BaseException:
                ip("link", "del", bridge.name, check=False)
                raise
            return bridge
        raise NetnsError(f"no free bridge index below {BRIDGE_LIMIT} (that many nodes alive?)")

    def attach(self) -> PodNetwork:
        """Create a pod's network namespace with eth0 on this bridge and a default route."""
        host = self._allocate()
        pod = PodNetwork(
            netns=f"{self.name}-{host}",
            ip=self.network.network_address + host,
            host_veth=f"dfsv{self.index}x{host}",
        )
        try:
            ip("netns", "add", pod.netns)
            ip(
                "link",
                "add",
                pod.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                pod.netns,
            )
            ip("link", "set", "dev", pod.host_veth, "master", self.name, "up")
            # Hairpin, as kubelet sets it: a pod reaching itself through its Service is DNATed
            # in the bridge and sent back out of the port it came in on.
            ip("link", "set", "dev", pod.host_veth, "type", "bridge_slave", "hairpin", "on")
            ip("-n", pod.netns, "link", "set", "dev", "lo", "up")
            ip("-n", pod.netns, "addr", "add", f"{pod.ip}/24", "dev", "eth0")
            ip("-n", pod.netns, "link", "set", "dev", "eth0", "up")
            ip("-n", pod.netns, "route", "add", "default", "via", str(self.gateway))
        except BaseException:
            self.detach(pod)
            raise
        return pod

    def detach(self, pod: PodNetwork) -> None:
        """Kill what still runs in the namespace, delete it (its veth pair goes with it)."""
        _kill_netns_processes(pod.netns)
        ip("netns", "del", pod.netns, check=False)
        ip("link", "del", pod.host_veth, check=False)
        with self._lock:
            self._used.discard(int(pod.ip) - int(self.network.network_address))

    def close(self) -> None:
        """Delete every pod namespace of this bridge, then the bridge."""
        _remove_bridge(self.index)

    def _allocate(self) -> int:
        # Round-robin over .2-.254, so a deleted pod's address is not handed out again at once.
        with self._lock:
            for _ in range(253):
                host = self._next_host
                self._next_host = 2 if host >= 254 else host + 1
                if host not in self._used:
                    self._used.add(host)
                    return host
        raise NetnsError(f"{self.name}: all 253 pod addresses in use")


def reap_stale() -> None:
    """Remove testbed bridges (and their pod namespaces) whose creating process is gone."""
    for link in Path("/sys/class/net").iterdir():
        m = _BRIDGE_NAME.match(link.name)
        if not m:
            continue
        try:
            alias = (link / "ifalias").read_text().strip()
        except OSError:
            continue
        if not alias.startswith(_ALIAS_PREFIX):
            continue  # not ours: never touch it
        with contextlib.suppress(ValueError):
            if not _pid_alive(int(alias.removeprefix(_ALIAS_PREFIX))):
                _remove_bridge(int(m[1]))


def _remove_bridge(index: int) -> None:
    prefix = f"{BRIDGE_PREFIX}{index}-"
    if NETNS_DIR.is_dir():
        for ns in NETNS_DIR.iterdir():
            if ns.name.startswith(prefix):
                _kill_netns_processes(ns.name)
                ip("netns", "del", ns.name, check=False)
    ip("link", "del", f"{BRIDGE_PREFIX}{index}", check=False)


def _kill_netns_processes(netns: str) -> None:
    result = ip("netns", "pids", netns, check=False)
    for pid in result.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    """Whether a process runs; a zombie (killed, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _require_root() -> None:
    if os.geteuid() != 0:
        raise NetnsError("the testbed node needs root (network namespaces, mounts, chroot)")


# -- the container starter -------------------------------------------------------------------
#
# Everything below runs in the helper process only (`python -I -S netns.py exec`), between fork
# and the container's exec. It must stay stdlib-only: the helper runs without site-packages.


def helper_command() -> list[str]:
    """argv that starts a container from a JSON spec on stdin (see ContainerSpec keys below)."""
    return [sys.executable, "-I", "-S", str(HELPER), "exec"]


# Host directories visible (read-only) in every container: programs, libraries, /etc.
# Not /opt: images install into it (the operator's venv at /opt/dittofs-operator), and a
# read-only host /opt would leave no place for their mount points.
HOST_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_PR_SET_PDEATHSIG = 1


class _Libc:
    def __init__(self) -> None:
        self.lib = ctypes.CDLL(None, use_errno=True)
        self.lib.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str = ""
    ) -> None:
        def enc(value: str | None) -> bytes | None:
            return value.encode() if value else None

        result = self.lib.mount(enc(source), enc(target), enc(fstype), flags, enc(data))
        self._check(result, f"mount {source or ''} {target}")

    def unshare(self, flags: int) -> None:
        self._check(self.lib.unshare(flags), "unshare")

    def setns(self, path: str, nstype: int) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self._check(self.lib.setns(fd, nstype), f"setns {path}")
        finally:
            os.close(fd)

    def pdeathsig(self, sig: int) -> None:
        self._check(self.lib.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl")


def _exec_container(spec: dict[str, Any]) -> None:
    """Set up the container's namespaces and root, then exec its command (never returns)."""
    libc = _Libc()
    os.umask(0o022)
    if spec.get("netns"):
        libc.setns(spec["netns"], _CLONE_NEWNET)
    libc.unshare(_CLONE_NEWNS | _CLONE_NEWUTS)
    libc.mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    root = spec["root"]
    libc.mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")

    def inside(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    def bind(source: str, target: str, *, readonly: bool) -> None:
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.exists(target):
                with open(target, "w"):
                    pass
        libc.mount(source, target, None, _MS_BIND | _MS_REC)
        if readonly:
            flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
            with contextlib.suppress(OSError):  # keep nosuid/nodev when the source has them
                st = os.statvfs(source)
                flags |= (st.f_flag & os.ST_NOSUID and _MS_NOSUID) | (
                    st.f_flag & os.ST_NODEV and _MS_NODEV
                )
            libc.mount(None, target, None, flags)

    for name in HOST_DIRS:
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), inside(host))
        elif os.path.isdir(host):
            bind(host, inside(host), readonly=True)

    os.makedirs(inside("/proc"))
    libc.mount("proc", inside("/proc"), "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    os.makedirs(inside("/sys"))
    # A sysfs mounted in the pod's network namespace shows that namespace's interfaces.
    libc.mount("sysfs", inside("/sys"), "sysfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    os.makedirs(inside("/dev"))
    libc.mount("tmpfs", inside("/dev"), "tmpfs", _MS_NOSUID, "mode=0755")
    for dev in DEVICES:
        bind(f"/dev/{dev}", inside(f"/dev/{dev}"), readonly=False)
    os.makedirs(inside("/dev/shm"))
    libc.mount("tmpfs", inside("/dev/shm"), "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")
    for link, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, inside(f"/dev/{link}"))
    for path, mode in (("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/run", 0o755), ("/root", 0o700)):
        os.makedirs(inside(path), exist_ok=True)
        os.chmod(inside(path), mode)
    os.makedirs(inside("/home"), exist_ok=True)

    for d in spec.get("dirs", []):  # the image's own directories (its "layers")
        os.makedirs(inside(d["path"]), exist_ok=True)
        os.chown(inside(d["path"]), d["uid"], d["gid"])
        os.chmod(inside(d["path"]), d["mode"])
    # Volumes (and image files) in mountPath order, so /data is mounted before /data/x.
    for m in sorted(spec.get("mounts", []), key=lambda m: m["target"].rstrip("/").count("/")):
        bind(m["source"], inside(m["target"]), readonly=m.get("readonly", False))
    workdir = spec.get("workdir") or "/"
    os.makedirs(inside(workdir), exist_ok=True)
    if spec.get("readonly_root"):
        libc.mount(None, root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])

    os.chroot(root)
    os.chdir(workdir)
    uid, gid = int(spec.get("uid", 0)), int(spec.get("gid", 0))
    os.setgroups([int(g) for g in spec.get("groups", [])])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if spec.get("pdeathsig"):
        # Set after the uid change (which clears it): the container dies with the test process.
        libc.pdeathsig(signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(137)
    env: dict[str, str] = spec["env"]
    argv: list[str] = spec["argv"]
    os.execvpe(argv[0], argv, env)


def _main(args: list[str]) -> int:
    if args != ["exec"]:
        print("usage: netns.py exec  (container spec as JSON on stdin)", file=sys.stderr)
        return 2
    spec = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        _exec_container(spec)
    except OSError as error:
        # What runc reports as a StartError; 127/126 mirror a shell's "not found"/"not executable".
        print(f"testbed: cannot start container: {error}", file=sys.stderr, flush=True)
        missing = isinstance(error, FileNotFoundError)
        return 127 if missing else 126 if isinstance(error, PermissionError) else 128
    return 128


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
