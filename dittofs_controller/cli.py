"""Command line: ``dittofs-controller [run|version|crd|render] [options]``.

``run`` is the default command, so the container entrypoint needs no arguments; every setting
can be given as a flag or a ``DITTOFS_CONTROLLER_*`` environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import structlog

import dittofs_controller
from dittofs_controller import logs, tracing
from dittofs_controller.api import v1alpha1
from dittofs_controller.settings import SettingsError, add_arguments, load_settings

PROG = "dittofs-controller"
# Where install.yaml and the chart put the operator by default (render --operator-namespace).
DEFAULT_OPERATOR_NAMESPACE = "dittofs-system"

Command = Callable[[argparse.Namespace], int]


def _run(args: argparse.Namespace) -> int:
    """Run the operator (its controllers wired onto the runtime's manager) until it is told to
    stop; the manager owns signals and the exit code."""
    try:
        settings = load_settings(args, os.environ)
    except SettingsError as error:
        parser: argparse.ArgumentParser = args.parser
        parser.error(str(error))
    logs.configure_logging(settings.log_level, settings.log_format)
    tracing.configure_tracing(settings)
    structlog.get_logger("dittofs_controller.cli").info(
        "starting dittofs-controller",
        version=dittofs_controller.__version__,
        settings=attrs.asdict(settings),
    )
    from dittofs_controller.runtime import allocator

    allocator.fix_thresholds()
    # Imported here: both pull in the Kubernetes client, which `version` does not need.
    from dittofs_controller.operator import setup
    from dittofs_controller.runtime import manager

    try:
        return asyncio.run(manager.run(settings, setup))
    finally:
        tracing.shutdown_tracing()


def _version(_: argparse.Namespace) -> int:
    print(dittofs_controller.__version__)
    return 0


def _crd(_: argparse.Namespace) -> int:
    # Imported here: `version` and `--help` need not build the schema.
    from dittofs_controller.api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def _render(args: argparse.Namespace) -> int:
    """Print what the operator would create for every DittoServer in the files; exit 2 (and
    print nothing on stdout) when any input is unreadable or invalid."""
    # Imported here: the builders are not needed by the other commands.
    import yaml

    from dittofs_controller.operator import render

    def fail(message: str) -> int:
        print(f"{PROG} render: error: {message}", file=sys.stderr)
        return 2

    output = []
    for source in args.filename:
        label = "<stdin>" if source == "-" else source
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
            documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except OSError as error:
            return fail(f"{label}: {error.strerror or error}")
        except yaml.YAMLError as error:
            return fail(f"{label}: not valid YAML: {error}")
        for index, document in enumerate(documents):
            kind = document.get("kind") if isinstance(document, dict) else None
            if kind != v1alpha1.KIND:
                print(f"{label}: skipped document {index + 1} (kind {kind})", file=sys.stderr)
                continue
            try:
                server, spec = render.load_server(document, args.namespace)
            except render.InvalidManifest as error:
                return fail(f"{label}: {error}")
            objects = render.children(server, spec, args.operator_namespace)
            output.append(render.to_yaml(server, spec, objects))
    if not output:
        return fail(f"no {v1alpha1.KIND} in {', '.join(args.filename)}")
    sys.stdout.write("".join(output))
    return 0


def _namespace(value: str) -> str:
    """An argparse type: a namespace name (a DNS label), so rendered objects stay valid."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid namespace name")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; without a subcommand it parses and runs like ``run``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [COMMAND] [options]",
        description="Kubernetes operator for the DittoFS NFS/SMB file server. "
        "Without COMMAND, runs the operator (same as `run`).",
        epilog="Every option can also be set through the environment variable shown next to "
        "it; a flag wins over the environment, which wins over the default.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_arguments(parser)
    parser.set_defaults(command=_run, parser=parser)

    run = commands.add_parser(
        "run",
        prog=f"{PROG} run",
        help="run the operator (default)",
        usage=f"{PROG} run [options]",
        description="Run the operator: watch DittoFS resources and reconcile them.",
    )
    add_arguments(run)
    run.set_defaults(command=_run, parser=run)

    version = commands.add_parser(
        "version", prog=f"{PROG} version", help="print the version and exit"
    )
    version.set_defaults(command=_version)

    crd = commands.add_parser(
        "crd",
        prog=f"{PROG} crd",
        help="print the DittoServer CustomResourceDefinition (YAML) and exit",
        description="Print the CRD this operator version expects, for "
        "`kubectl apply --server-side -f -` or GitOps.",
    )
    crd.set_defaults(command=_crd)

    render = commands.add_parser(
        "render",
        prog=f"{PROG} render",
        help="print every object the operator would create for DittoServer manifests",
        description="Print, as multi-document YAML, every object the operator would create for "
        "each DittoServer in the files (ConfigMap, PersistentVolumeClaims, PerconaPGCluster, "
        "Services, Ingress, NetworkPolicies, ServiceMonitor, StatefulSet), offline: no cluster "
        "is contacted. The DittoServer's uid and the restart hash are placeholders. The Secrets "
        "the operator generates (JWT, admin password, digest key) are never printed, only named "
        "in a comment: applied through GitOps, a printed value would become a known admin "
        "password; left out, the operator generates random ones in the cluster. Other kinds in "
        "the files are skipped.",
        epilog="The manifest is checked against the CRD's schema (unknown fields, types, enums, "
        "bounds, patterns); an invalid one exits with status 2. CEL rules are checked by the API "
        "server only: `kubectl apply --dry-run=server -f FILE` shows their messages.",
    )
    render.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="a DittoServer manifest, possibly with several YAML documents; - reads standard "
        "input; may be repeated",
    )
    render.add_argument(
        "-n",
        "--namespace",
        metavar="NAMESPACE",
        type=_namespace,
        help="the namespace to render for (default: each manifest's, else 'default')",
    )
    render.add_argument(
        "--operator-namespace",
        metavar="NAMESPACE",
        type=_namespace,
        default=DEFAULT_OPERATOR_NAMESPACE,
        help="where the operator runs, which the API NetworkPolicy admits "
        f"(default: {DEFAULT_OPERATOR_NAMESPACE})",
    )
    render.set_defaults(command=_render, parser=render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (invalid settings exit 2 via argparse, no traceback)."""
    args = build_parser().parse_args(argv)
    command: Command = args.command
    return command(args)
