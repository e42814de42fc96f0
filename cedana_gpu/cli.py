"""The ``cedana`` command.

Each command group lives in its own module under ``cedana_gpu.commands`` and
registers its parser here. The configuration (``cedana_gpu.config``) is read
once, before the command runs; a verb's work runs in the daemon when one
answers at the configured address, else in this process (``--no-server``
forces that; ``commands.route``). Errors the user can act on are printed as one line,
``cedana: error: ...``, with exit status 1 (2 for a malformed command line);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import cedana_gpu
from cedana_gpu import config
from cedana_gpu.commands import check as check_commands
from cedana_gpu.commands import checkpoint as checkpoint_commands
from cedana_gpu.commands import config as config_commands
from cedana_gpu.commands import daemon as daemon_commands
from cedana_gpu.commands import dump as dump_commands
from cedana_gpu.commands import exec as exec_commands
from cedana_gpu.commands import gpu as gpu_commands
from cedana_gpu.commands import job as job_commands
from cedana_gpu.commands import ps as ps_commands
from cedana_gpu.commands import restore as restore_commands
from cedana_gpu.cr.pipeline import Terminated
from cedana_gpu.errors import CedanaError

PROG = "cedana"

COMMAND_GROUPS = (
    exec_commands,
    ps_commands,
    job_commands,
    dump_commands,
    restore_commands,
    checkpoint_commands,
    gpu_commands,
    daemon_commands,
    config_commands,
    check_commands,
)
"""Modules with a ``register(subcommands)`` function, in ``--help`` order."""


EXIT_USER_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """Reports command-line mistakes in one line, pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Transparent checkpoint/restore of GPU processes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {cedana_gpu.__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the config file (default: $CEDANA_CONFIG, "
        "~/.cedana/config.json, /etc/cedana/config.json)",
    )
    parser.add_argument("--address", help="the daemon's socket path or host:port (address)")
    parser.add_argument("--protocol", choices=("unix", "tcp"), help="unix or tcp (protocol)")
    parser.add_argument("--log-level", help="the daemon's log level (log_level)")
    parser.add_argument(
        "--no-server",
        action="store_true",
        help="run the command in this process, even when a daemon answers",
    )
    subcommands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for group in COMMAND_GROUPS:
        group.register(subcommands)
    return parser


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _configure(args: argparse.Namespace) -> None:
    """Read the configuration; a ``db.path`` names the state directory of everything after."""
    args.cfg = config.load(
        {"address": args.address, "protocol": args.protocol, "log_level": args.log_level},
        config_file=args.config,
    )
    state = args.cfg.state_dir()
    if state is not None:  # everything below finds the state directory there
        os.environ[config.STATE_DIR_ENV] = str(state)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _configure(args)
        status: int = args.handler(args)
        sys.stdout.flush()
    except CedanaError as e:
        return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__, EXIT_USER_ERROR)
    except KeyboardInterrupt:
        return 130
    except Terminated as e:
        # A dump or restore stopped by SIGTERM, its undos done: say what became
        # of the job, and exit as the signal would.
        return _fail(str(e), 128 + e.signum)
    except BrokenPipeError:
        # The reader went away (`cedana gpu info | head`): not an error. Point
        # stdout at /dev/null so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":
    raise SystemExit(main())
