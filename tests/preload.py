"""LD_PRELOAD for the child processes that tests start.

Tests clear a child's LD_PRELOAD (or set it to the interposer alone) so that
the child gets exactly the driver under test. A sanitizer run
(scripts/check-native.sh) needs its runtime loaded first in every process, so
it names the runtime in CEDANA_TEST_PRELOAD, and every child keeps it first.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SANITIZER_PRELOAD_ENV = "CEDANA_TEST_PRELOAD"


def set_child_preload(env: MutableMapping[str, str], *libraries: str) -> None:
    """Make ``env``'s LD_PRELOAD the sanitizer runtime (if any), then ``libraries``."""
    names = [*os.environ.get(SANITIZER_PRELOAD_ENV, "").split(), *libraries]
    if names:
        env["LD_PRELOAD"] = " ".join(names)
    else:
        env.pop("LD_PRELOAD", None)
