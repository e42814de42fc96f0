"""The generated mirrors of the protocol are what their generator makes now.

``gpu/include/gen_protocol.py`` writes the Python mirror
(``cedana_gpu/controller/shm_protocol.py``) and the layout dump's list
(``gpu/include/layout_dump.inc``) from the C header and the op table. Both
outputs are committed; this test regenerates them in memory and fails on any
difference, so a header or op table edited without running the generator
cannot pass.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "gpu" / "include" / "gen_protocol.py"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protocol", GENERATOR)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is made.
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    return mod


def test_generated_files_are_up_to_date(gen: ModuleType) -> None:
    for path, text in gen.render().items():
        rel = path.relative_to(REPO)
        assert path.read_text() == text, f"{rel} is stale: run python3 gpu/include/gen_protocol.py"


def test_min_len_forms(gen: ModuleType) -> None:
    op = gen.Op("X", "cgs_symbol", "SYNC", "offsetof(cgs_symbol, name) + 1", "c", "h")
    assert gen.py_min_len(op) == "cgs_symbol.name.offset + 1"
    assert gen.py_min_len(gen.Op("X", "cgs_mem", "SYNC", "0", "c", "h")) == "ctypes.sizeof(cgs_mem)"
    # Another struct than the op's own would silently mirror the wrong length.
    with pytest.raises(gen.ParseError):
        gen.py_min_len(gen.Op("X", "cgs_mem", "SYNC", "offsetof(cgs_symbol, name) + 1", "c", "h"))


def test_unknown_forms_are_refused(gen: ModuleType) -> None:
    with pytest.raises(gen.ParseError):
        gen.parse_ops("CGS_OP(X, cgs_req, SOMETIMES, 0, check_none, op_nop)\n")
    with pytest.raises(gen.ParseError):
        gen.parse_ops("CGS_OP(X, cgs_req, SYNC, 0, check_none)\n")
    with pytest.raises(gen.ParseError):
        gen.py_expr("CGS_A ? 1 : 2")
    structs = gen.parse_structs("typedef struct s { float f; } s;")
    with pytest.raises(gen.ParseError):
        gen.py_type(structs[0].fields[0], {})


def test_c_expressions_in_python(gen: ModuleType) -> None:
    assert gen.py_expr("(CGS_SLOT_SIZE - 8u)") == "CGS_SLOT_SIZE - 8"
    assert gen.py_expr("0xffffffffu") == "0xFFFFFFFF"
    assert gen.py_expr("(1u << 20)") == "1 << 20"
    assert gen.py_expr("(A - sizeof(cgs_launch))") == "A - ctypes.sizeof(cgs_launch)"
    assert gen.py_expr("(A) * (B)") == "(A) * (B)"
