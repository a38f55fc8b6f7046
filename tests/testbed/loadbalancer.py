"""MetalLB's controller, run outside the cluster, so LoadBalancer Services get real addresses.

The controller alone assigns addresses from an IPAddressPool and writes them to
status.loadBalancer.ingress, as on a bare-metal cluster. Its speaker, which would announce them
over ARP or BGP, is not run: on this machine the addresses are routed locally (kube-proxy).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import yaml

from . import binaries
from .controlplane import (
    _WORK_PREFIX,
    _in_main_thread,
    _Process,
    _tail,
    _terminate,
    _tmpfs,
    kill_with_parent,
)

NAMESPACE = "metallb-system"
POOL_NAME = "testbed"
FIELD_MANAGER = "dittofs-testbed"
# The controller looks up its own Pod at start (--pod-name) to own its ConfigurationState.
# This stand-in is never run: no kubelet serves metallb-system.
POD_NAME = "controller"
# A Service created and deleted at start: getting it an address proves the controller works.
PROBE_SERVICE = "testbed-probe"


class LoadBalancerError(RuntimeError):
    """The controller failed to start, died, or an API call failed; carries the log tail."""


class LoadBalancerController:
    """MetalLB's controller assigning addresses from one IPAddressPool in `metallb-system`.

    `start()` installs the CRDs, the namespace and the pool (server-side apply, so a reused
    cluster converges), starts the controller and returns once it has given a probe Service an
    address. The process dies with its parent; `stop()` terminates it and removes its log.
    """

    def __init__(
        self,
        kubeconfig: Path,
        pool: str,
        *,
        start_timeout: float = 60.0,
        verbose: bool = True,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.pool = ipaddress.ip_network(pool)
        self.start_timeout = start_timeout
        self.verbose = verbose
        self._work_dir: Path | None = None
        self._process: _Process | None = None

    @property
    def log_path(self) -> Path:
        """The controller's log (gone after `stop()`)."""
        if self._work_dir is None:
            raise LoadBalancerError("load balancer controller not started")
        return self._work_dir / "metallb-controller.log"

    def start(self) -> Self:
        """Install what the controller needs, start it, and return once it assigns addresses."""
        exe = binaries.executable("metallb", "metallb-controller")
        t0 = time.monotonic()
        # Named like the control plane's work dirs: its start reaps those of killed runs.
        prefix = f"{_WORK_PREFIX}{os.getpid()}-metallb"
        self._work_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=_tmpfs()))
        try:
            self._install(binaries.component_dir("metallb") / "crds")
            self._process = _Process("metallb-controller", self._args(exe), self.log_path)
            self._spawn(self._process)
            self._wait_probe_assigned()
        except BaseException:
            self.stop()
            raise
        self._say(f"metallb controller assigning from {self.pool} ({time.monotonic() - t0:.1f} s)")
        return self

    def stop(self) -> None:
        """Terminate the controller (SIGTERM, then SIGKILL) and remove its work dir.

        Its cluster objects stay: they die with the control plane, and a reused cluster is
        brought back in line by the next `start()`.
        """
        if self._process is not None:
            _terminate([self._process])
            if self._process.log_file is not None:
                self._process.log_file.close()
            self._process = None
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def check_alive(self) -> None:
        """Raise LoadBalancerError (with the log tail) if the controller has exited."""
        proc = self._process
        if proc is None or not proc.running():
            code = proc.popen.returncode if proc and proc.popen else None
            raise LoadBalancerError(
                f"metallb-controller is not running (exit code {code})\n{self._log_tail()}"
            )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- set-up -------------------------------------------------------------------------------

    def _install(self, crd_dir: Path) -> None:
        # All of the release's CRDs: the controller's cache is configured for BGP and BFD kinds
        # too, and its manager does not start while any of them is unknown.
        self._kubectl("apply", "--server-side", f"--filename={crd_dir}")
        self._kubectl(
            "wait",
            "--for=condition=Established",
            f"--timeout={self.start_timeout:.0f}s",
            f"--filename={crd_dir}",
        )
        self._kubectl("apply", "--server-side", "--filename=-", stdin=self._manifests())
        # A probe left by an earlier run would already have an address and prove nothing.
        self._kubectl(
            "delete", "service", PROBE_SERVICE, f"--namespace={NAMESPACE}", "--ignore-not-found"
        )

    def _manifests(self) -> str:
        meta = {"namespace": NAMESPACE}
        docs = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": POD_NAME, **meta}},
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": POD_NAME, "labels": {"app": "metallb"}, **meta},
                "spec": {
                    "serviceAccountName": POD_NAME,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "controller",
                            "image": f"quay.io/metallb/controller:{binaries.version('metallb')}",
                        }
                    ],
                },
            },
            {
                "apiVersion": "metallb.io/v1beta1",
                "kind": "IPAddressPool",
                "metadata": {"name": POOL_NAME, **meta},
                # The .0 and .255 of a /24 look like network and broadcast addresses to many
                # tools; MetalLB skips them when asked.
                "spec": {"addresses": [str(self.pool)], "avoidBuggyIPs": True},
            },
        ]
        return yaml.safe_dump_all(docs)

    def _args(self, exe: Path) -> list[str]:
        return [
            str(exe),
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={NAMESPACE}",
            f"--pod-name={POD_NAME}",
            # No webhook server, hence no certificates to generate and rotate in a Secret.
            "--webhook-mode=disabled",
            "--disable-cert-rotation",
            # Port 0 picks a free port for metrics and health probes: nothing here reads them,
            # and fixed ports would clash between test runs. (Leader election is always off.)
            "--port=0",
            "--health-probe-port=0",
        ]

    def _spawn(self, proc: _Process) -> None:
        proc.log_file = proc.log_path.open("ab")
        # Own session, killed with the parent: as the control plane's processes.
        proc.popen = subprocess.Popen(
            proc.args,
            stdin=subprocess.DEVNULL,
            stdout=proc.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=kill_with_parent if _in_main_thread() else None,
        )

    def _wait_probe_assigned(self) -> None:
        probe = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": PROBE_SERVICE, "namespace": NAMESPACE},
            "spec": {
                "type": "LoadBalancer",
                "allocateLoadBalancerNodePorts": False,
                "ports": [{"port": 9, "protocol": "TCP"}],
            },
        }
        self._kubectl("apply", "--server-side", "--filename=-", stdin=json.dumps(probe))
        deadline = time.monotonic() + self.start_timeout
        while not self._probe_address():
            self.check_alive()
            if time.monotonic() > deadline:
                raise LoadBalancerError(
                    f"metallb-controller gave no address to {NAMESPACE}/{PROBE_SERVICE} within "
                    f"{self.start_timeout:.0f} s\n{self._log_tail()}"
                )
            time.sleep(0.2)
        self._kubectl("delete", "service", PROBE_SERVICE, f"--namespace={NAMESPACE}")

    def _probe_address(self) -> str:
        return self._kubectl(
            "get",
            "service",
            PROBE_SERVICE,
            f"--namespace={NAMESPACE}",
            "--output=jsonpath={.status.loadBalancer.ingress[0].ip}",
        )

    # -- helpers ------------------------------------------------------------------------------

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        kubectl = binaries.executable("kubernetes", "kubectl")
        argv = [str(kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        if args[0] == "apply":
            argv += [f"--field-manager={FIELD_MANAGER}", "--force-conflicts"]
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LoadBalancerError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def _log_tail(self) -> str:
        return _tail(self.log_path) if self._work_dir is not None else "(no log)"

    def _say(self, message: str) -> None:
        if self.verbose:
            print(f"[testbed] {message}", file=sys.stderr, flush=True)
