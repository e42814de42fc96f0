"""The ``cedana`` command groups, one module each.

Each module exposes ``register(subcommands)``, which adds its parser to the
``cedana`` parser's subcommands and sets ``handler`` on it: a function taking
the parsed arguments and returning the exit status.
"""

from __future__ import annotations

from cedana_gpu.errors import CedanaError


class CommandError(CedanaError):
    """An error the user can act on: printed as one line, exit status 1."""
