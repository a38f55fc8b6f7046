"""A real local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager.

Like controller-runtime's envtest, plus the controller manager, so garbage collection through
ownerReferences, namespace deletion, Deployments/StatefulSets -> Pods and service-account tokens
behave as in a real cluster. There is no scheduler and no kubelet: Pods stay Pending (until a
testbed node, node.py, runs them and serves the kubelet's port-forward endpoint).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import yaml

from . import binaries, pki

# Etcd's default 1.5 MiB request limit is too small for big CRDs (the Percona one is ~3.7 MB).
ETCD_MAX_REQUEST_BYTES = 8 * 1024 * 1024
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Controllers the tests rely on; everything needing nodes, a cloud or a scheduler stays off.
# Names are the 1.35 ones; any missing from the binary's --help list is dropped with a note.
CONTROLLERS = (
    "garbage-collector-controller",  # ownerReferences cascade
    "namespace-controller",  # namespace deletion
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "job-controller",
    "serviceaccount-controller",  # "default" ServiceAccount in each namespace
    "serviceaccount-token-controller",  # legacy token Secrets for SAs that ask for one
    "root-ca-certificate-publisher-controller",  # kube-root-ca.crt ConfigMap
    "clusterrole-aggregation-controller",  # fills the aggregated admin/edit/view ClusterRoles
    "endpoints-controller",
    "endpointslice-controller",
    "persistentvolume-binder-controller",  # binds PVCs to PVs a test provisioner creates
    "persistentvolume-expander-controller",
    "persistentvolumeclaim-protection-controller",  # else PVC deletion hangs on its finalizer
    "persistentvolume-protection-controller",
    "disruption-controller",  # PodDisruptionBudget status
)


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start or died; the message carries its log tail."""


@dataclass
class _Process:
    """One child process with its command line and log file."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass(frozen=True)
class ExternalCluster:
    """An already running cluster given by kubeconfig (e.g. `python -m tests.testbed up`)."""

    kubeconfig_path: Path
    server_url: str

    @classmethod
    def from_kubeconfig(cls, path: Path) -> ExternalCluster:
        config = yaml.safe_load(path.read_text())
        current = config.get("current-context")
        ctx = next(c for c in config["contexts"] if c["name"] == current)["context"]
        cluster = next(c for c in config["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        return cls(kubeconfig_path=path, server_url=cluster["server"])


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager as local processes.

    Everything lives in one temporary work dir on tmpfs (/dev/shm): PKI, kubeconfigs, logs and
    etcd's data, so nothing touches a disk and `stop()` leaves nothing behind.
    """

    def __init__(
        self,
        *,
        work_dir: Path | None = None,
        keep_work_dir: bool = False,
        start_timeout: float = 90.0,
        verbose: bool = True,
        admission_plugins: tuple[str, ...] = (),
    ) -> None:
        self._given_work_dir = work_dir
        # Enabled on top of the defaults below, e.g. OwnerReferencesPermissionEnforcement, on
        # by default in OpenShift and hardened clusters.
        self.admission_plugins = admission_plugins
        self._keep_work_dir = keep_work_dir
        self.start_timeout = start_timeout
        self.verbose = verbose
        self.work_dir: Path | None = None
        self.pki: pki.PKI | None = None
        self.timings: dict[str, float] = {}
        self.etcd_port = 0
        self.etcd_peer_port = 0
        self.apiserver_port = 0
        self.controller_manager_port = 0
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._controller_manager: _Process | None = None
        self._lock = threading.Lock()

    # -- public API ---------------------------------------------------------------------------

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubeconfig_path(self) -> Path:
        """Admin kubeconfig (CN=admin, O=system:masters), client cert embedded."""
        return self._work / "admin.kubeconfig"

    @property
    def ca_path(self) -> Path:
        """CA that signed the apiserver's serving cert (also the client CA)."""
        return self._pki.ca.cert

    @property
    def kubernetes_bin_dir(self) -> Path:
        """Directory holding kube-apiserver, kube-controller-manager and kubectl."""
        return binaries.component_dir("kubernetes")

    def start(self) -> Self:
        """Start etcd, kube-apiserver and kube-controller-manager; return once all work.

        Binaries missing from the cache are built first (see binaries.ensure); the start-up
        time printed and kept in `timings` excludes that build.
        """
        etcd_bin = binaries.executable("etcd", "etcd")
        kube_dir = binaries.ensure("kubernetes")
        t0 = time.monotonic()
        try:
            for attempt in range(_PORT_ATTEMPTS):
                try:
                    self._start(etcd_bin, kube_dir)
                    break
                except ControlPlaneError as exc:
                    # Free ports are picked, released, then bound by the children: another
                    # process can grab one in between. Rare; retry with fresh ports.
                    if "address already in use" not in str(exc) or attempt == _PORT_ATTEMPTS - 1:
                        raise
                    self._say(f"port taken while starting, retrying: {str(exc).splitlines()[0]}")
                    self.stop()
                    self.timings.clear()
        except ControlPlaneError as exc:
            # Keep the logs of a failed start for a post-mortem; stale dirs of dead test runs
            # are reaped by the next start.
            self._stop_processes()
            if self.work_dir is not None:
                shutil.rmtree(self.work_dir / "etcd", ignore_errors=True)
                exc.add_note(f"logs kept in {self.work_dir}")
            raise
        except BaseException:  # e.g. Ctrl-C: nothing to investigate, leave nothing behind
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        self._say(
            f"control plane up in {self.timings['total']:.1f} s (ready after: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items() if k != "total")
            + f"); kubeconfig {self.kubeconfig_path}"
        )
        return self

    def stop(self) -> None:
        """Terminate all processes (SIGTERM, then SIGKILL) and remove the work dir."""
        self._stop_processes()
        if self.work_dir is not None and self._given_work_dir is None and not self._keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        elif self.work_dir is not None:
            shutil.rmtree(self.work_dir / "etcd", ignore_errors=True)

    def restart_apiserver(self, *, restart_controller_manager: bool = True) -> None:
        """Stop kube-apiserver and start it again on the same port; data lives on in etcd.

        The controller manager is restarted too by default. Left alone it survives, but each
        outage doubles its client-go reflectors' retry backoff (0.8 s up to 30 s plus jitter,
        forgiven only after 2 quiet minutes): after two or three restarts its controllers
        resume only a minute later, and later tests would wait for ServiceAccounts or garbage
        collection that long. Pass False to observe exactly that.
        """
        proc = self._require(self._apiserver)
        t0 = time.monotonic()
        _terminate([proc])
        self._spawn(proc, note="restart")
        self._wait_apiserver_ready(proc)
        if restart_controller_manager:
            kcm = self._require(self._controller_manager)
            _terminate([kcm])
            self._spawn(kcm, note="restart after kube-apiserver restart")
            self._wait("kube-controller-manager", kcm, self._kcm_healthy)
        self._say(f"kube-apiserver restarted in {time.monotonic() - t0:.1f} s")

    @contextlib.contextmanager
    def controller_manager_paused(self) -> Iterator[None]:
        """Freeze kube-controller-manager (SIGSTOP) while the block runs, then let it go on.

        Changes made meanwhile reach its controllers together, as one state, the way a busy
        controller manager sees changes that land between two of its syncs.
        """
        kcm = self._require(self._controller_manager)
        assert kcm.popen is not None
        kcm.popen.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            kcm.popen.send_signal(signal.SIGCONT)

    def etcd_revision(self) -> int:
        """Current etcd revision (the latest resourceVersion of the whole cluster)."""
        # Any range request returns the store revision in its header; "/" is a valid key.
        reply = self._etcd_post("/v3/kv/range", {"key": _b64(b"/"), "count_only": True})
        return int(reply["header"]["revision"])

    def compact_etcd(self) -> int:
        """Physically compact etcd up to its current revision, as the apiserver does every 5 min.

        Like kube-apiserver's own compactor, this first records the revision under etcd's
        `compact_rev_key`, which every apiserver watches: the watch cache then drops its list
        snapshots older than it (it polls every 15 s), so lists at an older resourceVersion go to
        etcd and get 410 Gone. Watches at an older resourceVersion are still served from the
        watch cache's event window until it rolls over or the apiserver restarts, as in a real
        cluster. Returns the compacted revision.
        """
        revision = self.etcd_revision()
        self._etcd_post(
            "/v3/kv/put", {"key": _b64(_COMPACT_REV_KEY), "value": _b64(str(revision).encode())}
        )
        try:
            self._etcd_post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        except ControlPlaneError as e:
            # Already compacted at (or past) this revision: etcd refuses, the goal is met.
            if "required revision has been compacted" not in str(e):
                raise
        return revision

    def wait_compaction_seen(self, revision: int, path: str, timeout: float = 40.0) -> None:
        """Wait until lists of `path` (e.g. "/api/v1/namespaces") before `revision` get 410.

        Each resource's watch cache notices compaction on its own 15 s timer, so probe the
        resource the test is about.
        """
        query = f"resourceVersion={revision - 1}&resourceVersionMatch=Exact&limit=1"
        url = f"{self.server_url}{path}?{query}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, context=self._client_tls(), timeout=10):
                    pass
            except urllib.error.HTTPError as e:
                if e.code == 410:
                    return
                raise ControlPlaneError(f"GET {url}: HTTP {e.code}: {e.read().decode()}") from e
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{path} still lists revision {revision - 1} after compaction"
                )
            time.sleep(0.5)

    def check_alive(self) -> None:
        """Raise ControlPlaneError if any process has died (with its log tail)."""
        for proc in (self._etcd, self._apiserver, self._controller_manager):
            if proc is not None and not proc.running():
                raise ControlPlaneError(
                    f"{proc.name} exited with code {proc.popen and proc.popen.returncode}\n"
                    + _tail(proc.log_path)
                )

    def log_path(self, name: str) -> Path:
        """Log file of "etcd", "kube-apiserver" or "kube-controller-manager"."""
        return self._work / f"{name}.log"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start-up -----------------------------------------------------------------------------

    def _start(self, etcd_bin: Path, kube_dir: Path) -> None:
        _reap_stale_work_dirs()
        self._etcd = self._apiserver = self._controller_manager = None
        self.work_dir = self._given_work_dir or Path(
            tempfile.mkdtemp(prefix=f"{_WORK_PREFIX}{os.getpid()}-", dir=_tmpfs())
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(4)
        self.etcd_port, self.etcd_peer_port, self.apiserver_port = ports[:3]
        self.controller_manager_port = ports[3]

        # etcd and the PKI are independent, and kube-apiserver retries etcd until it answers,
        # so start etcd first and overlap its boot with the key generation and apiserver boot.
        t0 = time.monotonic()

        def mark(event: str) -> None:
            self.timings[event] = time.monotonic() - t0

        self._etcd = self._process("etcd", self._etcd_args(etcd_bin))
        self._spawn(self._etcd)
        self.pki = pki.generate(self.work_dir / "pki")
        self._write_kubeconfig(self.kubeconfig_path, self._pki.admin, "admin")
        kcm_kubeconfig = self._work / "controller-manager.kubeconfig"
        self._write_kubeconfig(kcm_kubeconfig, self._pki.controller_manager, "controller-manager")
        mark("pki")

        self._apiserver = self._process(
            "kube-apiserver", self._apiserver_args(kube_dir / "kube-apiserver")
        )
        self._spawn(self._apiserver)
        self._wait("etcd", self._etcd, self._etcd_healthy)
        mark("etcd")
        self._wait_apiserver_ready(self._apiserver)
        mark("kube-apiserver")

        kcm_bin = kube_dir / "kube-controller-manager"
        kcm = self._process(
            "kube-controller-manager", self._controller_manager_args(kcm_bin, kcm_kubeconfig)
        )
        self._controller_manager = kcm
        self._spawn(kcm)
        self._wait("kube-controller-manager", kcm, self._kcm_healthy)
        mark("kube-controller-manager")
        # Healthy is not yet working: controllers start once their informers have synced.
        # Wait for two of them to act, so the first test does not pay for (or trip over) it.
        self._wait("kube-controller-manager controllers", kcm, self._controllers_working)
        mark("controllers")

    def _etcd_args(self, exe: Path) -> list[str]:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        return [
            str(exe),
            "--name=testbed",
            f"--data-dir={self._work / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=testbed={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",
            f"--max-request-bytes={ETCD_MAX_REQUEST_BYTES}",
            "--enable-grpc-gateway=true",  # the default; compact_etcd() relies on it
            # A lone member still waits one election timeout (1 s) before it leads; shorten it.
            "--heartbeat-interval=10",
            "--election-timeout=100",
            "--log-level=warn",
        ]

    def _apiserver_args(self, exe: Path) -> list[str]:
        p = self._pki
        return [
            str(exe),
            f"--etcd-servers={self.etcd_url}",
            # On every address, so that pods reach it through the `kubernetes` Service once a
            # testbed node routes Services (kubeproxy.publish_apiserver writes its endpoint).
            "--bind-address=0.0.0.0",
            "--advertise-address=127.0.0.1",
            # The `kubernetes` Service cannot point at 127.0.0.1 (Endpoints reject loopback IPs,
            # the default reconciler would log that every 10 s): host clients use 127.0.0.1.
            "--endpoint-reconciler-type=none",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self._work / 'apiserver'}",  # default /var/run/kubernetes is global
            f"--tls-cert-file={p.apiserver.cert}",
            f"--tls-private-key-file={p.apiserver.key}",
            f"--client-ca-file={p.ca.cert}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={p.service_account_pub}",
            f"--service-account-signing-key-file={p.service_account_key}",
            f"--service-cluster-ip-range={pki.SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            # Streaming (port-forward) goes to the testbed node's kubelet endpoint at its
            # InternalIP (its Hostname resolves nowhere), with a client certificate it checks.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={p.kubelet_client.cert}",
            f"--kubelet-client-key={p.kubelet_client.key}",
            # All on by default; named so that nobody "simplifies" them away: PodSecurity
            # enforces pod-security.kubernetes.io labels, ServiceAccount mounts tokens.
            "--enable-admission-plugins="
            + ",".join(
                ("NamespaceLifecycle", "ServiceAccount", "PodSecurity", *self.admission_plugins)
            ),
            "--profiling=false",
            # On SIGTERM the HTTP server otherwise waits up to 60 s for open watches (the
            # controller manager always has some); with this it gives them 2 s.
            "--shutdown-send-retry-after=true",
        ]

    def _controller_manager_args(self, exe: Path, kubeconfig: Path) -> list[str]:
        p = self._pki
        return [
            str(exe),
            f"--kubeconfig={kubeconfig}",
            # Client certs for its own endpoints come from --client-ca-file; no delegated
            # authentication (it would want a requestheader CA this cluster does not have).
            f"--client-ca-file={p.ca.cert}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.controller_manager_port}",
            f"--cert-dir={self._work / 'controller-manager'}",
            f"--tls-cert-file={p.controller_manager_serving.cert}",
            f"--tls-private-key-file={p.controller_manager_serving.key}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p.service_account_key}",
            f"--root-ca-file={p.ca.cert}",
            f"--controllers={','.join(_available_controllers(exe))}",
            "--profiling=false",
        ]

    # -- readiness ----------------------------------------------------------------------------

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as r:
            return bool(json.load(r).get("health") == "true")

    def _apiserver_ready(self) -> bool:
        return _https_ok(f"{self.server_url}/readyz", self._client_tls())

    def _kcm_healthy(self) -> bool:
        url = f"https://127.0.0.1:{self.controller_manager_port}/healthz"
        return _https_ok(url, self._client_tls())

    def _controllers_working(self) -> bool:
        ctx = self._client_tls()
        return all(
            _https_ok(f"{self.server_url}/api/v1/namespaces/default/{path}", ctx)
            for path in ("serviceaccounts/default", "configmaps/kube-root-ca.crt")
        )

    def _wait_apiserver_ready(self, proc: _Process) -> None:
        self._wait("kube-apiserver", proc, self._apiserver_ready)

    def _wait(self, what: str, proc: _Process, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not proc.running():
                code = proc.popen.returncode if proc.popen else None
                raise ControlPlaneError(
                    f"{what} exited with code {code} while starting:\n{_tail(proc.log_path)}"
                )
            # Refused/reset connections and TLS errors are OSErrors; half-written replies from a
            # server still starting are HTTPExceptions.
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{what} not ready after {self.start_timeout:.0f} s:\n{_tail(proc.log_path)}"
                )
            time.sleep(0.05)

    def _client_tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self._pki.ca.cert))
        ctx.load_cert_chain(str(self._pki.admin.cert), str(self._pki.admin.key))
        return ctx

    # -- processes ----------------------------------------------------------------------------

    def _process(self, name: str, args: list[str]) -> _Process:
        return _Process(name=name, args=args, log_path=self.log_path(name))

    def _spawn(self, proc: _Process, note: str = "start") -> None:
        if proc.log_file is None:
            proc.log_file = proc.log_path.open("ab")
        proc.log_file.write(f"\n===== testbed: {note} {time.ctime()} =====\n".encode())
        proc.log_file.flush()
        # Own session: a Ctrl-C in the terminal reaches us, and we stop children in order.
        proc.popen = subprocess.Popen(
            proc.args,
            stdin=subprocess.DEVNULL,
            stdout=proc.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=kill_with_parent if _in_main_thread() else None,
        )

    def _stop_processes(self) -> None:
        with self._lock:
            # Clients of etcd first, so they do not spend their shutdown retrying a dead etcd.
            _terminate([p for p in (self._controller_manager, self._apiserver) if p])
            _terminate([p for p in (self._etcd,) if p])
            for proc in (self._controller_manager, self._apiserver, self._etcd):
                if proc is not None and proc.log_file is not None:
                    proc.log_file.close()
                    proc.log_file = None

    # -- helpers ------------------------------------------------------------------------------

    @property
    def _work(self) -> Path:
        if self.work_dir is None:
            raise ControlPlaneError("control plane not started")
        return self.work_dir

    @property
    def _pki(self) -> pki.PKI:
        if self.pki is None:
            raise ControlPlaneError("control plane not started")
        return self.pki

    @staticmethod
    def _require(proc: _Process | None) -> _Process:
        if proc is None:
            raise ControlPlaneError("control plane not started")
        return proc

    def _write_kubeconfig(self, path: Path, pair: pki.KeyPair, user: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority-data": _b64(self._pki.ca.cert.read_bytes()),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(pair.cert.read_bytes()),
                        "client-key-data": _b64(pair.key.read_bytes()),
                    },
                }
            ],
            "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
            "current-context": "testbed",
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(config, f)

    def _etcd_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.etcd_url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                reply: dict[str, Any] = json.load(r)
        except urllib.error.HTTPError as e:
            raise ControlPlaneError(f"etcd {path}: HTTP {e.code}: {e.read().decode()}") from e
        return reply

    def _say(self, message: str) -> None:
        if self.verbose:
            print(f"[testbed] {message}", file=sys.stderr, flush=True)


# What the fixtures hand out: the testbed's own processes, or a cluster reused by kubeconfig.
Cluster = ControlPlane | ExternalCluster


# -- module helpers ---------------------------------------------------------------------------

_WORK_PREFIX = "dittofs-testbed-"
_PORT_ATTEMPTS = 3
# k8s.io/apiserver/pkg/storage/etcd3/compact.go: where apiservers record the last compaction.
_COMPACT_REV_KEY = b"compact_rev_key"


def _tmpfs() -> str | None:
    """/dev/shm when present: etcd on tmpfs makes its writes (and cold start) fast."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _reap_stale_work_dirs() -> None:
    """Remove work dirs of testbeds whose process is gone (killed runs leak tmpfs memory)."""
    root = Path(_tmpfs() or tempfile.gettempdir())
    for d in root.glob(f"{_WORK_PREFIX}*-*"):
        m = re.fullmatch(rf"{_WORK_PREFIX}(\d+)-\w+", d.name)
        if m and not _pid_alive(int(m[1])):
            shutil.rmtree(d, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _https_ok(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
            return bool(r.status == 200)
    except urllib.error.HTTPError:
        return False  # e.g. 500 from /readyz while post-start hooks still run


def _terminate(procs: list[_Process], timeout: float = 15.0) -> None:
    """SIGTERM the processes' groups together, SIGKILL whatever outlives `timeout`."""
    live = [p for p in procs if p.popen is not None and p.popen.poll() is None]
    for p in live:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in live:
        assert p.popen is not None
        try:
            p.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(p, signal.SIGKILL)
            p.popen.wait()


def _signal_group(proc: _Process, sig: signal.Signals) -> None:
    assert proc.popen is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, sig)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def kill_with_parent() -> None:
    """Runs in the child: get SIGKILLed if the parent dies, so no etcd outlives a killed pytest.

    Only armed when spawned from the main thread: Linux sends the signal when the *thread* that
    forked exits, which for a worker thread would be far too early.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


_controllers_cache: dict[Path, list[str]] = {}


def _available_controllers(exe: Path) -> list[str]:
    """CONTROLLERS minus those this kube-controller-manager does not know (names change)."""
    if exe not in _controllers_cache:
        help_text = subprocess.run(
            [str(exe), "--help"], capture_output=True, text=True, check=False
        ).stdout
        m = re.search(r"All controllers:\s*(.*?)\n\s*Disabled-by-default", help_text, re.S)
        known = set(re.findall(r"[\w-]+", m[1])) if m else set(CONTROLLERS)
        missing = [c for c in CONTROLLERS if c not in known]
        if missing:
            print(f"[testbed] kube-controller-manager lacks {missing}", file=sys.stderr)
        _controllers_cache[exe] = [c for c in CONTROLLERS if c in known]
    return _controllers_cache[exe]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(f"    {line}" for line in text[-lines:])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
