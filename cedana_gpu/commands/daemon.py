"""``cedana daemon``: the daemon, in the foreground.

    cedana daemon start      serve the API (proto/daemon.proto) on the configured
                             address (/run/cedana.sock, mode 0600) until SIGTERM
    cedana daemon check      is it there? (the HealthCheck RPC, without the node's checks)

Logs go to stderr and to ``<state>/daemon.log``. ``packaging/cedana.service``
runs it under systemd.
"""

from __future__ import annotations

import argparse

from cedana_gpu.commands import CommandError, route


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    daemon = subcommands.add_parser(
        "daemon", help="the cedana daemon (gRPC API)", description="The cedana daemon."
    )
    commands = daemon.add_subparsers(
        title="commands", dest="daemon_command", metavar="COMMAND", required=True
    )
    start = commands.add_parser(
        "start",
        help="run the daemon in the foreground",
        description="Serve the cedana API on the configured address until SIGTERM or Ctrl-C.",
    )
    start.set_defaults(handler=cmd_start)
    check = commands.add_parser(
        "check", help="is the daemon there?", description="Ask the daemon who it is."
    )
    check.set_defaults(handler=cmd_check)


def cmd_start(args: argparse.Namespace) -> int:
    from cedana_gpu.daemon.server import serve

    return serve(route.settings(args))


def cmd_check(args: argparse.Namespace) -> int:
    from cedana_gpu.daemon.remote import connect

    cfg = route.settings(args)
    remote = connect(cfg)
    if remote is None:
        raise CommandError(
            f"no daemon answers at {cfg['address']}: start one with 'cedana daemon start'"
        )
    info = remote.info
    remote.close()
    print(f"cedana daemon {info.version} (pid {info.pid}) at {info.address}")
    print(f"state: {info.state_dir}")
    return 0
