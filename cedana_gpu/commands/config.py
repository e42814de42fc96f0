"""``cedana config show``: every setting, its effective value and where it came from.

    cedana config show [--output table|json]

Values come from flags, then ``CEDANA_<SECTION>_<FIELD>``, then the config
file (``--config``, ``~/.cedana/config.json``, ``/etc/cedana/config.json``),
then the defaults (``cedana_gpu.config``).
"""

from __future__ import annotations

import argparse
import json

from cedana_gpu import config
from cedana_gpu.commands import route
from cedana_gpu.commands.output import add_output_option, table

SECRET = ("auth.token",)


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cfg = subcommands.add_parser(
        "config", help="show the configuration", description="cedana's configuration."
    )
    commands = cfg.add_subparsers(
        title="commands", dest="config_command", metavar="COMMAND", required=True
    )
    show = commands.add_parser(
        "show",
        help="print the effective settings and their sources",
        description="Print every setting's effective value and where it came from.",
    )
    add_output_option(show)
    show.set_defaults(handler=cmd_show)


def _shown(name: str, value: object) -> object:
    return "(set)" if name in SECRET and value else value


def cmd_show(args: argparse.Namespace) -> int:
    cfg = route.settings(args)
    if args.output == "json":
        doc = {
            name: {"value": _shown(name, value), "source": source}
            for name, value, source in cfg.rows()
        }
        print(json.dumps(doc, indent=2))
        return 0
    rows = [("FIELD", "VALUE", "SOURCE")]
    rows += [
        (name, config.format_value(_shown(name, value)), source)
        for name, value, source in cfg.rows()
    ]
    print(table(rows))
    return 0
