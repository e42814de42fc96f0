#!/usr/bin/env python3
"""Generate what mirrors the shared-memory protocol from its one definition.

Inputs, the only places a field, a constant or an op is written:

- ``cedana_gpu_shm.h``: constants, enums, request and segment structs;
- ``cedana_gpu_ops.def``: the op table (name, request struct, channel rule,
  minimum length, check, handler);
- ``../controller/cedana_gpu_controller.h``: ``struct cgc_config`` (only its
  field names, for the layout dump; ``native.py`` mirrors it).

Outputs, committed (``tests/test_protocol_generated.py`` regenerates them and
fails on any difference, so a header change without a regeneration cannot
pass the tests):

- ``cedana_gpu/controller/shm_protocol.py``: the Python mirror: constants,
  enums, ctypes structs, the op table (``OPS``);
- ``gpu/include/layout_dump.inc``: the list of every struct field, enum
  member and constant that ``cgs_layout_dump`` prints with the compiler's
  offsets and values, which the test compares with the Python mirror.

Run ``python3 gpu/include/gen_protocol.py`` after editing an input. C is read
with a small parser that knows the header's own forms (fixed-width integer
fields, arrays of constant size, nested structs, object-like ``#define``s)
and stops with an error on anything else, so a construct it does not know
cannot be mirrored wrongly in silence.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SHM_HEADER = HERE / "cedana_gpu_shm.h"
OPS_DEF = HERE / "cedana_gpu_ops.def"
CONTROLLER_HEADER = REPO / "gpu" / "controller" / "cedana_gpu_controller.h"
PY_OUT = REPO / "cedana_gpu" / "controller" / "shm_protocol.py"
DUMP_OUT = HERE / "layout_dump.inc"

# C field types of the header -> ctypes, as the mirror spells them.
SCALARS = {
    "uint8_t": "u8",
    "uint32_t": "u32",
    "int32_t": "i32",
    "uint64_t": "u64",
    "int8_t": "ctypes.c_int8",
    "uint16_t": "ctypes.c_uint16",
    "int16_t": "ctypes.c_int16",
    "int64_t": "ctypes.c_int64",
    "char": "ctypes.c_char",
}
CHANNEL_RULES = ("ASYNC", "SYNC", "DEPENDS")


class ParseError(Exception):
    """The input has a form this generator does not know."""


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str  # C type name
    dims: tuple[str, ...]  # C array dimensions, outermost first


@dataclass(frozen=True)
class Struct:
    name: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class Constant:
    name: str
    value: str  # C expression


@dataclass(frozen=True)
class Enum:
    name: str
    members: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Op:
    name: str
    request: str
    channel: str
    min_len: str  # C expression, "0" for sizeof(request)
    check: str
    handler: str


# ---- parsing -----------------------------------------------------------------


def strip_comments(text: str) -> str:
    # Newlines inside comments are kept so line-based parsing still works.
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n") or " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def parse_ops(text: str) -> list[Op]:
    ops = []
    for line in strip_comments(text).splitlines():
        line = line.strip()
        if not line:
            continue
        m = re.fullmatch(r"CGS_OP\((.*)\)", line)
        if not m:
            raise ParseError(f"{OPS_DEF.name}: not a CGS_OP(...) line: {line!r}")
        args = split_args(m.group(1))
        if len(args) != 6:
            raise ParseError(f"{OPS_DEF.name}: CGS_OP takes 6 arguments: {line!r}")
        op = Op(*args)
        if op.channel not in CHANNEL_RULES:
            raise ParseError(f"{op.name}: channel {op.channel!r} is not one of {CHANNEL_RULES}")
        ops.append(op)
    names = [op.name for op in ops]
    if len(set(names)) != len(names):
        raise ParseError(f"{OPS_DEF.name}: an op is named twice")
    return ops


def split_args(text: str) -> list[str]:
    """Split at the commas outside parentheses."""
    args, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    args.append(cur.strip())
    return args


def parse_constants(text: str) -> list[Constant]:
    consts = []
    for m in re.finditer(r"^\s*#\s*define\s+(CGS_\w+)(?!\w|\()[ \t]+(.+?)\s*$", text, flags=re.M):
        name, value = m.groups()
        if not name.endswith("_H"):
            consts.append(Constant(name, value))
    return consts


def parse_enums(text: str) -> list[Enum]:
    """Enums with their members written out (enum cgs_op comes from the op table)."""
    enums = []
    for m in re.finditer(r"\benum\s+(\w+)\s*\{(.*?)\}\s*;", text, flags=re.S):
        name, body = m.groups()
        if "#include" in body:
            continue
        members, value = [], 0
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            im = re.fullmatch(r"(\w+)(?:\s*=\s*(\w+))?", item)
            if not im:
                raise ParseError(f"enum {name}: cannot parse member {item!r}")
            if im.group(2) is not None:
                value = int(im.group(2), 0)
            members.append((im.group(1), value))
            value += 1
        enums.append(Enum(name, tuple(members)))
    return enums


def parse_structs(text: str) -> list[Struct]:
    structs = []
    for m in re.finditer(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S):
        name, body, alias = m.groups()
        if name != alias:
            raise ParseError(f"struct {name} is typedef'd as {alias}")
        fields: list[Field] = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            dm = re.fullmatch(r"((?:const\s+)?\w+)\s+(.+)", decl)
            if not dm:
                raise ParseError(f"struct {name}: cannot parse {decl!r}")
            ctype = dm.group(1)
            for declarator in split_args(dm.group(2)):
                fm = re.fullmatch(r"(\**)\s*(\w+)((?:\s*\[[^\]]+\])*)", declarator)
                if not fm:
                    raise ParseError(f"struct {name}: cannot parse {declarator!r}")
                stars, fname, dims = fm.groups()
                fields.append(
                    Field(
                        fname,
                        ctype + stars,
                        tuple(d.strip() for d in re.findall(r"\[([^\]]+)\]", dims)),
                    )
                )
        structs.append(Struct(name, tuple(fields)))
    return structs


# ---- C expressions in Python -------------------------------------------------


def py_expr(c: str) -> str:
    """A constant C expression of the header as Python (integer suffixes,
    sizeof of a mirrored struct; one redundant outer pair of parentheses
    dropped, as ruff format would)."""
    if c.startswith('"'):
        return c
    e = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", c)
    e = re.sub(r"\bsizeof\s*\(\s*(\w+)\s*\)", r"ctypes.sizeof(\1)", e)
    e = re.sub(r"\b0[xX]([0-9a-fA-F]+)\b", lambda m: "0x" + m.group(1).upper(), e)
    if re.search(r"[^\w\s()+\-*/<>.\"]", e):
        raise ParseError(f"cannot translate the C expression {c!r}")
    if e.startswith("(") and e.endswith(")") and balanced(e[1:-1]):
        e = e[1:-1]
    return e


def balanced(e: str) -> bool:
    depth = 0
    for ch in e:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def py_type(f: Field, structs: dict[str, Struct]) -> str:
    if f.ctype in SCALARS:
        t = SCALARS[f.ctype]
    elif f.ctype in structs:
        t = f.ctype
    else:
        raise ParseError(f"field {f.name}: type {f.ctype} is not mirrored")
    for d in reversed(f.dims):
        t = f"{t} * {wrap(py_expr(d))}"
    return t


def wrap(e: str) -> str:
    return e if re.fullmatch(r"[\w.]+", e) else f"({e})"


def py_min_len(op: Op) -> str:
    if op.min_len == "0":
        return f"ctypes.sizeof({op.request})"
    m = re.fullmatch(r"offsetof\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*\+\s*(\d+)", op.min_len)
    if not m or m.group(1) != op.request:
        raise ParseError(
            f"{op.name}: min_len must be 0 or offsetof({op.request}, field) + N, not {op.min_len!r}"
        )
    return f"{op.request}.{m.group(2)}.offset + {m.group(3)}"


# ---- output ------------------------------------------------------------------

PY_HEAD = '''"""The shared-memory protocol in Python: GENERATED, do not edit.

Written by ``gpu/include/gen_protocol.py`` from ``gpu/include/cedana_gpu_shm.h``
and ``gpu/include/cedana_gpu_ops.def``, where every constant, field and op is
defined and explained; edit those and run the generator.
``cedana_gpu/controller/shm_layout.py`` re-exports this module with the
helpers that use it.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass

u8, u32, i32, u64 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64
'''

PY_OPINFO = '''

@dataclass(frozen=True)
class OpInfo:
    """One row of the op table (``cedana_gpu_ops.def``)."""

    op: CgsOp
    name: str  # without the CGS_OP_ prefix
    request: type[ctypes.Structure]
    channel: CgsChannelRule
    min_len: int

    @property
    def sync(self) -> bool:
        """The request always needs a completion channel."""
        return self.channel == CgsChannelRule.CGS_CHANNEL_SYNC


'''


def class_name(enum_name: str) -> str:
    return "".join(p.capitalize() for p in enum_name.split("_"))


def render_python(
    consts: list[Constant], enums: list[Enum], structs: list[Struct], ops: list[Op]
) -> str:
    by_name = {s.name: s for s in structs}
    out = [PY_HEAD, "\n# ---- constants " + "-" * 63 + "\n"]
    late = [c for c in consts if "sizeof" in c.value]
    for c in consts:
        if c not in late:
            out.append(f"{c.name} = {py_expr(c.value)}\n")

    out.append("\n\n# ---- enums " + "-" * 67 + "\n")
    op_members = [(f"CGS_OP_{o.name}", i) for i, o in enumerate(ops)]
    all_enums = [Enum("cgs_op", (*op_members, ("CGS_OP_COUNT", len(ops)))), *enums]
    for e in all_enums:
        out.append(f"\n\nclass {class_name(e.name)}(enum.IntEnum):\n")
        out.append(f'    """``enum {e.name}``."""\n\n')
        for member, value in e.members:
            out.append(f"    {member} = {value}\n")
    out.append("\n\nENUMS: dict[str, type[enum.IntEnum]] = {\n")
    for e in all_enums:
        out.append(f'    "{e.name}": {class_name(e.name)},\n')
    out.append("}\n")

    out.append("\n\n# ---- structs " + "-" * 65 + "\n")
    for s in structs:
        out.append(f"\n\nclass {s.name}(ctypes.Structure):\n    _fields_ = (\n")
        for f in s.fields:
            out.append(f'        ("{f.name}", {py_type(f, by_name)}),\n')
        out.append("    )\n")
    out.append("\n\nSTRUCTS: dict[str, type[ctypes.Structure]] = {\n")
    for s in structs:
        out.append(f'    "{s.name}": {s.name},\n')
    out.append("}\n\n")
    for c in late:
        out.append(f"{c.name} = {py_expr(c.value)}\n")
    out.append("\nCONSTANTS: dict[str, int | str] = {\n")
    for c in consts:
        out.append(f'    "{c.name}": {c.name},\n')
    out.append("}\n")

    out.append("\n\n# ---- the op table " + "-" * 60 + "\n")
    out.append(PY_OPINFO)
    out.append("OPS: tuple[OpInfo, ...] = (\n")
    for o in ops:
        if o.request not in by_name:
            raise ParseError(f"{o.name}: request struct {o.request} is not in the header")
        out.append(
            f'    OpInfo(\n        CgsOp.CGS_OP_{o.name},\n        "{o.name}",\n'
            f"        {o.request},\n        CgsChannelRule.CGS_CHANNEL_{o.channel},\n"
            f"        {py_min_len(o)},\n    ),\n"
        )
    out.append(")\n")
    out.append('"""Indexed by op value."""\n')
    return "".join(out)


def render_dump(
    consts: list[Constant], enums: list[Enum], structs: list[Struct], ctl_structs: list[Struct]
) -> str:
    out = [
        "/* GENERATED by gen_protocol.py from cedana_gpu_shm.h and\n"
        " * ../controller/cedana_gpu_controller.h: do not edit. Included by\n"
        " * layout_dump.c, which defines S, F, END, ENUM, E, END_ENUM, C and CS. */\n",
        "#define CGS_LAYOUT_STRUCTS \\\n",
    ]
    lines = []
    for s in [*structs, *ctl_structs]:
        lines.append(f"  S({s.name});")
        lines.extend(f"  F({s.name}, {f.name});" for f in s.fields)
        lines.append("  END();")
    out.append(" \\\n".join(lines) + "\n\n")
    out.append("#define CGS_LAYOUT_ENUMS \\\n")
    lines = []
    for e in enums:
        lines.append(f'  ENUM("{e.name}");')
        lines.extend(f"  E({m});" for m, _ in e.members)
        lines.append("  END_ENUM();")
    out.append(" \\\n".join(lines) + "\n\n")
    out.append("#define CGS_LAYOUT_CONSTANTS \\\n")
    lines = [f"  {'CS' if c.value.startswith(chr(34)) else 'C'}({c.name});" for c in consts]
    out.append(" \\\n".join(lines) + "\n")
    return "".join(out)


def render() -> dict[Path, str]:
    """Every output file and its content."""
    shm = SHM_HEADER.read_text()
    shm_code = strip_comments(shm)
    consts = parse_constants(shm_code)
    enums = parse_enums(shm_code)
    structs = parse_structs(shm_code)
    ctl_structs = parse_structs(strip_comments(CONTROLLER_HEADER.read_text()))
    ops = parse_ops(OPS_DEF.read_text())
    return {
        PY_OUT: render_python(consts, enums, structs, ops),
        DUMP_OUT: render_dump(consts, enums, structs, ctl_structs),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if an output is out of date")
    args = ap.parse_args(argv)
    stale = []
    for path, text in render().items():
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        names = ", ".join(str(p.relative_to(REPO)) for p in stale)
        print(f"out of date: {names}; run python3 gpu/include/gen_protocol.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
