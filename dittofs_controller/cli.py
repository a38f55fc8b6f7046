"""Command line: ``dittofs-controller [run|version|crd] [options]``.

``run`` is the default command, so the container entrypoint needs no arguments; every setting
can be given as a flag or a ``DITTOFS_CONTROLLER_*`` environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

import attrs
import structlog

import dittofs_controller
from dittofs_controller import logs, tracing
from dittofs_controller.settings import SettingsError, add_arguments, load_settings

PROG = "dittofs-controller"

Command = Callable[[argparse.Namespace], int]


def _run(args: argparse.Namespace) -> int:
    """Run the operator until it is told to stop; the manager owns signals and the exit code."""
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
    # Imported here: the manager pulls in the Kubernetes client, which `version` does not need.
    from dittofs_controller import manager

    try:
        return asyncio.run(manager.run(settings))
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

    # New subcommands (e.g. `render`) are registered here the same way:
    # add_parser(...), then set_defaults(command=<function of the parsed args returning the
    # exit code>, parser=<that subparser, for error messages>).
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (invalid settings exit 2 via argparse, no traceback)."""
    args = build_parser().parse_args(argv)
    command: Command = args.command
    return command(args)
