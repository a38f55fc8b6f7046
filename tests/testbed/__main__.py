"""Run the local control plane, alone or with the operator on top.

`python -m tests.testbed up [--kubeconfig PATH]`: the control plane until stopped. The kubeconfig
file appears (atomically) only once it is ready, so a script can wait for it; it is removed again
at teardown because it would point at a dead server.

`python -m tests.testbed dev [--sample FILE] [--local] [OPERATOR FLAGS...]` (what `nox -s dev`
runs): the operator in the foreground against $KUBECONFIG (or ~/.kube/config) when that cluster
answers (or not, with --local), else against a local control plane started for the purpose; the
CRD is installed first either way. On the local control plane, as root, it also runs the load
balancer and a node with kube-proxy and cluster DNS, applies the sample (default
samples/badger-filesystem.yaml), waits for Ready and prints commands that write and read a file
over NFS and SMB from this machine (devserver.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from . import devserver
from .binaries import BinaryBuildError
from .controlplane import ControlPlane, ControlPlaneError

DEFAULT_KUBECONFIG = Path(".testbed/kubeconfig")
DEFAULT_SAMPLE = devserver.DEFAULT_SAMPLE.relative_to(devserver.REPO)


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
    dev = sub.add_parser(
        "dev",
        help="run the operator against the current cluster, or a local control plane",
        description="Extra arguments are passed to `python -m dittofs_controller run`.",
    )
    dev.add_argument(
        "--sample",
        type=Path,
        default=DEFAULT_SAMPLE,
        help=f"DittoServer manifest applied on a local control plane (default: {DEFAULT_SAMPLE})",
    )
    dev.add_argument(
        "--local", action="store_true", help="ignore any configured cluster: always run locally"
    )
    args, operator_args = parser.parse_known_args(argv)
    if args.command == "dev":
        return _dev(operator_args, sample=args.sample.absolute(), local=args.local)
    if operator_args:
        parser.error(f"unrecognized arguments: {' '.join(operator_args)}")
    return _up(args.kubeconfig.absolute(), keep_work_dir=args.keep_work_dir)


def _current_kubeconfig() -> Path | None:
    """The kubeconfig a developer has configured, when its cluster answers."""
    candidates = [*os.environ.get("KUBECONFIG", "").split(os.pathsep), "~/.kube/config"]
    for candidate in candidates:
        path = Path(candidate).expanduser() if candidate else None
        if path and path.is_file():
            return path if asyncio.run(_reachable(path)) else None
    return None


async def _reachable(kubeconfig: Path) -> bool:
    from dittofs_controller.kube.client import connect

    try:
        client = await connect(str(kubeconfig), None)
    except Exception as error:  # any unusable kubeconfig means: use a local control plane
        print(f"[dev] {kubeconfig} is not usable ({error})", file=sys.stderr)
        return False
    try:
        async with asyncio.timeout(5):
            await client.request("GET", "/version")
        return True
    except Exception as error:
        print(f"[dev] the cluster of {kubeconfig} does not answer ({error})", file=sys.stderr)
        return False
    finally:
        await client.close()


def _dev(operator_args: list[str], *, sample: Path, local: bool) -> int:
    kubeconfig = None if local else _current_kubeconfig()
    if kubeconfig is not None:
        print(f"[dev] using the cluster of {kubeconfig}", file=sys.stderr)
        return _run_operator(kubeconfig, operator_args)
    print("[dev] no reachable cluster configured: starting a local control plane", file=sys.stderr)
    cp = ControlPlane()
    try:
        cp.start()
    except (ControlPlaneError, BinaryBuildError) as e:
        print(f"[dev] failed to start the control plane: {e}", file=sys.stderr)
        return 1
    try:
        if os.geteuid() != 0:
            print(
                "[dev] not running as root: no node, kube-proxy, cluster DNS or load balancer "
                "(they need network namespaces, routes and nftables), so DittoServer pods stay "
                "Pending and nothing is served. Run as root for a server you can mount; "
                "running the control plane and the operator only.",
                file=sys.stderr,
            )
            _print_usage(
                cp, cp.kubeconfig_path, stop_hint="Stop the operator (Ctrl-C) to tear it down."
            )
            return _run_operator(cp.kubeconfig_path, operator_args)
        return asyncio.run(_dev_server(cp, sample, operator_args))
    except devserver.DevServerError as e:
        print(f"[dev] {e}", file=sys.stderr)
        return 1
    finally:
        cp.stop()


async def _dev_server(cp: ControlPlane, sample: Path, operator_args: list[str]) -> int:
    """Everything of devserver.py, the operator in the foreground, until Ctrl-C or its exit."""
    assert cp.work_dir is not None
    async with devserver.serving(cp, cp.work_dir / "dev"):
        await _install_crd(cp.kubeconfig_path)
        operator = await asyncio.create_subprocess_exec(
            *_operator_command(cp.kubeconfig_path, operator_args)
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        exited = asyncio.create_task(operator.wait())
        stopped = asyncio.create_task(stop.wait())
        serve = asyncio.create_task(devserver.apply_sample(cp, sample))
        try:
            await asyncio.wait({serve, exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if serve.done() and not stopped.done():
                print(devserver.usage(serve.result()), flush=True)
                await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            serve.cancel()
            if operator.returncode is None:
                operator.send_signal(signal.SIGTERM)
            code = await operator.wait()
            stopped.cancel()
        print("[dev] tearing down", file=sys.stderr)
        return code


async def _install_crd(kubeconfig: Path) -> None:
    from dittofs_controller.kube.client import connect
    from tests.support.crds import install_crd

    client = await connect(str(kubeconfig), None)
    try:
        await install_crd(client)
    finally:
        await client.close()


def _operator_command(kubeconfig: Path, operator_args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dittofs_controller",
        "run",
        f"--kubeconfig={kubeconfig}",
        "--log-format=console",
        *operator_args,
    ]


def _run_operator(kubeconfig: Path, operator_args: list[str]) -> int:
    """Install the CRD, then run the operator in the foreground until it exits or is stopped."""
    asyncio.run(_install_crd(kubeconfig))
    print("[dev] CRD installed; starting the operator (Ctrl-C stops it)", file=sys.stderr)
    operator = subprocess.Popen(_operator_command(kubeconfig, operator_args))
    # SIGTERM to us means: stop the operator cleanly (it drains), then we tear down.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: operator.send_signal(signal.SIGTERM))
    try:
        return operator.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the operator too; let it drain and exit
        return operator.wait()


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


def _print_usage(
    cp: ControlPlane,
    kubeconfig: Path,
    stop_hint: str = "Press Ctrl-C (or send SIGTERM) to stop and remove everything.",
) -> None:
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

{stop_hint}
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
