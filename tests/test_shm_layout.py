"""The Python mirror of the wire format against the C header, field by field.

Three views must agree:

- the header's text (gpu/include/cedana_gpu_shm.h and the dispatcher's
  gpu/controller/cedana_gpu_controller.h): which structs, fields, enum
  members and constants exist;
- what the C compiler made of it (``cgs_layout_dump``, built from the same
  headers): sizes, alignments, offsets, values;
- the ctypes mirror (cedana_gpu/controller/shm_layout.py, native.py).

A field added to the header and to neither the dump nor the mirror, a field
moved, resized or renamed on either side, fails here.
"""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import native_build
import pytest

from cedana_gpu.controller import native, shm_layout

REPO = Path(__file__).resolve().parent.parent
SHM_HEADER = REPO / "gpu" / "include" / "cedana_gpu_shm.h"
OPS_DEF = REPO / "gpu" / "include" / "cedana_gpu_ops.def"
CONTROLLER_HEADER = REPO / "gpu" / "controller" / "cedana_gpu_controller.h"

MIRRORS: dict[str, type[ctypes.Structure]] = {
    **shm_layout.STRUCTS,
    "cgc_config": native.cgc_config,
}


# ---- the header's text ---------------------------------------------------------


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def parse_structs(text: str) -> dict[str, list[str]]:
    """``typedef struct NAME { ... } NAME;`` -> field names in order."""
    structs: dict[str, list[str]] = {}
    for m in re.finditer(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S):
        name, body, alias = m.groups()
        assert name == alias, f"struct {name} is typedef'd as {alias}"
        names: list[str] = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            dm = re.fullmatch(r"(?:const\s+)?(?:struct\s+)?\w+\s+(.+)", decl)
            assert dm, f"cannot parse {decl!r} in struct {name}"
            for declarator in dm.group(1).split(","):
                fm = re.match(r"\s*\**\s*(\w+)", declarator)
                assert fm, f"cannot parse {declarator!r} in struct {name}"
                names.append(fm.group(1))
        structs[name] = names
    return structs


def parse_enums(text: str, ops: list[str]) -> dict[str, list[str]]:
    """Enum members in order; an enum that includes the op table has its ops."""
    enums: dict[str, list[str]] = {}
    for m in re.finditer(r"enum\s+(\w+)\s*\{(.*?)\}\s*;", text, flags=re.S):
        body = m.group(2)
        expanded = [f"CGS_OP_{op}" for op in ops] if '#include "cedana_gpu_ops.def"' in body else []
        body = re.sub(r"^\s*#.*$", "", body, flags=re.M)
        members = [e.split("=")[0].strip() for e in body.split(",")]
        enums[m.group(1)] = expanded + [e for e in members if e]
    return enums


def parse_op_names(text: str) -> list[str]:
    """The op table's names in order (its CGS_OP(...) rows)."""
    return re.findall(r"^CGS_OP\(\s*(\w+)\s*,", _strip_comments(text), flags=re.M)


def parse_constants(text: str) -> list[str]:
    """Object-like ``#define CGS_...`` names, without the include guard."""
    names = re.findall(r"^\s*#\s*define\s+(CGS_\w+)\b(?!\()\s+\S", text, flags=re.M)
    return [n for n in names if not n.endswith("_H")]


@pytest.fixture(scope="module")
def header() -> dict[str, Any]:
    shm = _strip_comments(SHM_HEADER.read_text())
    ctl = _strip_comments(CONTROLLER_HEADER.read_text())
    return {
        "structs": {**parse_structs(shm), **parse_structs(ctl)},
        "enums": parse_enums(shm, parse_op_names(OPS_DEF.read_text())),
        "constants": parse_constants(shm),
    }


# ---- what the compiler says ----------------------------------------------------


@pytest.fixture(scope="module")
def dump() -> dict[str, Any]:
    exe = native_build.program("cgs_layout_dump")  # test-only: in the build tree
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


# ---- comparison ----------------------------------------------------------------


def mirror_layout(cls: type[ctypes.Structure]) -> dict[str, Any]:
    return {
        "size": ctypes.sizeof(cls),
        "align": ctypes.alignment(cls),
        "fields": {
            name: [getattr(cls, name).offset, getattr(cls, name).size]
            for name, *_ in cls._fields_  # type: ignore[attr-defined]
        },
    }


def layout_differences(name: str, c: dict[str, Any], py: dict[str, Any]) -> list[str]:
    """Every way the mirror's layout of ``name`` differs from the C one."""
    diffs = []
    for key in ("size", "align"):
        if c[key] != py[key]:
            diffs.append(f"{name}: {key} C {c[key]} != Python {py[key]}")
    if list(c["fields"]) != list(py["fields"]):
        diffs.append(f"{name}: fields C {list(c['fields'])} != Python {list(py['fields'])}")
    for field, (off, size) in c["fields"].items():
        if field in py["fields"] and py["fields"][field] != [off, size]:
            got = py["fields"][field]
            diffs.append(
                f"{name}.{field}: C offset {off} size {size} "
                f"!= Python offset {got[0]} size {got[1]}"
            )
    return diffs


def test_dump_names_every_struct_and_field_of_the_headers(
    header: dict[str, Any], dump: dict[str, Any]
) -> None:
    assert sorted(header["structs"]) == sorted(dump["structs"])
    for name, fields in header["structs"].items():
        assert fields == list(dump["structs"][name]["fields"]), name


def test_mirror_has_every_struct(header: dict[str, Any]) -> None:
    assert sorted(MIRRORS) == sorted(header["structs"])


@pytest.mark.parametrize("name", sorted(MIRRORS))
def test_struct_layout_matches_c(name: str, dump: dict[str, Any]) -> None:
    assert name in dump["structs"], f"{name} is mirrored in Python but not in the C header"
    diffs = layout_differences(name, dump["structs"][name], mirror_layout(MIRRORS[name]))
    assert not diffs, "\n".join(diffs)


def test_enums_match(header: dict[str, Any], dump: dict[str, Any]) -> None:
    assert sorted(header["enums"]) == sorted(dump["enums"]) == sorted(shm_layout.ENUMS)
    for name, members in header["enums"].items():
        assert members == list(dump["enums"][name]), name
        py = {m.name: m.value for m in shm_layout.ENUMS[name]}
        assert py == dump["enums"][name], name


def test_constants_match(header: dict[str, Any], dump: dict[str, Any]) -> None:
    assert sorted(header["constants"]) == sorted(dump["constants"])
    assert dump["constants"] == shm_layout.CONSTANTS


def test_op_table_matches_c(dump: dict[str, Any]) -> None:
    """Each op's value, request struct, channel rule and minimum length as the
    compiler computed them from cedana_gpu_ops.def, against the Python table."""
    py = {
        o.name: {
            "value": int(o.op),
            "request": o.request.__name__,
            "channel": int(o.channel),
            "min_len": o.min_len,
        }
        for o in shm_layout.OPS
    }
    assert py == dump["ops"]
    assert list(dump["ops"]) == [o.name for o in shm_layout.OPS]


def test_comparison_catches_drift(dump: dict[str, Any]) -> None:
    """The comparison itself: a moved, resized, renamed or missing field is reported."""

    class moved(ctypes.Structure):
        _fields_ = (("op", ctypes.c_uint32), ("nslots", ctypes.c_uint64))

    c = dump["structs"]["cgs_req"]
    assert layout_differences("cgs_req", c, mirror_layout(moved))
    fields = dict(c["fields"])
    fields["token"] = [fields["token"][0] + 4, fields["token"][1]]
    assert layout_differences("cgs_req", c, dict(c, fields=fields))
    renamed = {("tok" if k == "token" else k): v for k, v in c["fields"].items()}
    assert layout_differences("cgs_req", c, dict(c, fields=renamed))
    assert not layout_differences("cgs_req", c, mirror_layout(shm_layout.cgs_req))


def test_header_parser_sees_multi_declarators() -> None:
    text = "typedef struct s { int32_t a, b; uint8_t c[4]; char *d; } s;"
    assert parse_structs(text) == {"s": ["a", "b", "c", "d"]}


def test_segment_names() -> None:
    assert shm_layout.shm_name("j1") == "/cedana-gpu.j1"
    assert shm_layout.segment_path("j1") == Path("/dev/shm/cedana-gpu.j1")
