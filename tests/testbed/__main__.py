"""`python -m tests.testbed up [--kubeconfig PATH]`: run the local control plane until stopped.

Used by `nox -s dev`: the kubeconfig file appears (atomically) only once the control plane is
ready, so a script can wait for it; it is removed again at teardown because it would point at a
dead server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .binaries import BinaryBuildError
from .controlplane import ControlPlane, ControlPlaneError

DEFAULT_KUBECONFIG = Path(".testbed/kubeconfig")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start etcd, kube-apiserver, kube-controller-manager")
    up.add_argument(
        "--kubeconfig",
        type=Path,
        default=DEFAULT_KUBECONFIG,
        help=f"where to write the admin kubeconfig (default: {DEFAULT_KUBECONFIG})",
    )
    up.add_argument("--keep-work-dir", action="store_true", help="keep logs and PKI after teardown")
    args = parser.parse_args(argv)
    return _up(args.kubeconfig.absolute(), keep_work_dir=args.keep_work_dir)


def _up(kubeconfig: Path, *, keep_work_dir: bool) -> int:
    stop = threading.Event()
    started = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        print(f"\n[testbed] {signal.Signals(signum).name}: tearing down", file=sys.stderr)
        if not started:
            # Abort start() (or a long first build); it stops whatever it already spawned.
            raise KeyboardInterrupt
        stop.set()

    # SIGTERM must tear down as cleanly as Ctrl-C does: nox and CI stop us with it.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    cp = ControlPlane(keep_work_dir=keep_work_dir)
    try:
        cp.start()
    except (ControlPlaneError, BinaryBuildError) as e:
        print(f"[testbed] failed to start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    started = True
    try:
        kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        tmp = kubeconfig.with_name(f".{kubeconfig.name}.tmp")
        shutil.copyfile(cp.kubeconfig_path, tmp)
        os.chmod(tmp, 0o600)
        tmp.replace(kubeconfig)
        _print_usage(cp, kubeconfig)
        while not stop.wait(1.0):
            cp.check_alive()
        return 0
    except ControlPlaneError as e:
        print(f"[testbed] {e}", file=sys.stderr)
        return 1
    finally:
        kubeconfig.unlink(missing_ok=True)
        cp.stop()
        where = f"; logs kept in {cp.work_dir}" if keep_work_dir else ""
        print(f"[testbed] stopped{where}", file=sys.stderr)


def _print_usage(cp: ControlPlane, kubeconfig: Path) -> None:
    print(
        f"""
Local control plane is ready (etcd, kube-apiserver, kube-controller-manager; no scheduler,
no kubelet: pods stay Pending).

  server      {cp.server_url}
  kubeconfig  {kubeconfig}   (admin: CN=admin, O=system:masters)
  logs        {cp.work_dir}/*.log

Use it:
  export KUBECONFIG={kubeconfig}
  export PATH={cp.kubernetes_bin_dir}:$PATH   # kubectl of the same version
  kubectl get namespaces
  DITTOFS_TEST_KUBECONFIG={kubeconfig} .venv/bin/pytest tests/integration   # reuse it

Press Ctrl-C (or send SIGTERM) to stop and remove everything.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
