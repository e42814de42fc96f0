"""What both ends of the daemon's API agree on besides the proto: metadata keys
and the error a client raises for the daemon's answer."""

from __future__ import annotations

from cedana_gpu.errors import CedanaError

ERROR_KEY = "cedana-error"
"""Trailing metadata naming the class of the error the daemon answered with."""
TOKEN_KEY = "authorization"
"""Metadata carrying ``Bearer <auth.token>`` (TCP)."""


class RemoteError(CedanaError):
    """An error the daemon answered with (its one line), or losing the daemon."""
