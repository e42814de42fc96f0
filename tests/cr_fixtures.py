"""Fixtures of the tests that run the CLI with CRIU (test_cr_*, test_dump_restore).

Loaded for the whole suite by tests/conftest.py (``pytest_plugins``); a module
that wants the native parts checked once says
``pytest.mark.usefixtures("native_parts")`` in its ``pytestmark``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cr_helpers import Cedana, native_ready


@pytest.fixture(scope="module")
def native_parts() -> Path:
    """The native directory, checked once per module: a missing part fails, not skips."""
    return native_ready()


@pytest.fixture
def cedana(tmp_path: Path) -> Iterator[Cedana]:
    """A state directory of the test's own; jobs still running at the end are killed."""
    c = Cedana(tmp_path / "state")
    yield c
    c.kill_all()
