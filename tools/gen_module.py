#!/usr/bin/env python3
"""Turn a plain CUDA C source into a module for the fake CUDA driver.

Reads the kernels (``extern "C" __global__ void NAME(...)``) and the
file-scope ``__device__`` / ``__constant__`` globals of a .cu file and writes a
C++ translation unit that includes fake_cuda_kernel.h and the .cu itself, and
defines the exported ``fake_cuda_module`` table (fake_cuda_module.h): for each
kernel its grid loop and parameter layout, for each global its address and
size. The parameter types are never parsed here: the compat header deduces
them from the kernel's own signature, so what g++ compiles is what the table
describes.

Used by the build (CMake compiles the output into ``<set>.fake.so``) and at
run time by JIT workloads (``--compile-to`` also runs the host compiler).

    gen_module.py kernels.cu -o kernels.fake.cpp
    gen_module.py kernels.cu -o kernels.fake.cpp --compile-to kernels.fake.so
    gen_module.py kernels.cu --list
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HEADER = "fake_cuda_kernel.h"
_IDENT = re.compile(r"[A-Za-z_]\w*")
_KEYWORDS = {"__device__", "__constant__", "__managed__", "static", "const", "volatile", "extern"}


class ParseError(Exception):
    """The source uses a form this generator does not understand."""


@dataclass
class ModuleSource:
    kernels: list[str] = field(default_factory=list)
    globals: list[str] = field(default_factory=list)


def strip_comments_and_strings(text: str) -> str:
    """Blank out comments, string and character literals and preprocessor lines,
    keeping `extern "C"` recognisable and line structure intact."""
    out: list[str] = []
    i, n = 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == "#":
            # A preprocessor line, with its continuations.
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n and text[i + 1] == "\n":
                    i += 1
                i += 1
            continue
        if c == "/" and text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ParseError("unterminated comment")
            out.append("\n" * text.count("\n", i, end) or " ")
            i = end + 2
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            literal = text[i : j + 1]
            out.append('"C"' if literal == '"C"' else c + c)
            i = j + 1
            at_line_start = False
            continue
        out.append(c)
        if c == "\n":
            at_line_start = True
        elif not c.isspace():
            at_line_start = False
        i += 1
    return "".join(out)


def _matching(text: str, i: int, open_c: str, close_c: str) -> int:
    """Index just past the bracket matching text[i]."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == open_c:
            depth += 1
        elif text[j] == close_c:
            depth -= 1
            if depth == 0:
                return j + 1
    raise ParseError(f"unbalanced {open_c!r}")


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for j, c in enumerate(text):
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(text[start:j])
            start = j + 1
    parts.append(text[start:])
    return parts


def _declarator_name(decl: str) -> str:
    decl = _split_top(decl, "=")[0]
    decl = re.sub(r"\[[^\]]*\]", " ", decl)
    decl = re.sub(r"__align__\s*\([^)]*\)|alignas\s*\([^)]*\)", " ", decl)
    names = [w for w in _IDENT.findall(decl) if w not in _KEYWORDS]
    if not names:
        raise ParseError(f"cannot find the name in {decl.strip()!r}")
    return names[-1]


def _handle_statement(stmt: str, in_extern_c: bool, has_body: bool, src: ModuleSource) -> None:
    words = set(_IDENT.findall(stmt))
    head = stmt.split("{", 1)[0]
    if "__global__" in words:
        head = re.sub(r"__launch_bounds__\s*\([^)]*\)", " ", head)
        paren = head.find("(")
        if paren < 0:
            raise ParseError(f"cannot read kernel declaration {stmt.strip()[:80]!r}")
        before = head[:paren]
        names = _IDENT.findall(before)
        if not names:
            raise ParseError(f"cannot read kernel declaration {stmt.strip()[:80]!r}")
        name = names[-1]
        if not (in_extern_c or re.search(r'extern\s+"C"', before)):
            raise ParseError(
                f'kernel {name} must be declared extern "C" (its name is looked up unmangled)'
            )
        if "template" in words:
            raise ParseError(f'kernel {name}: templates cannot be extern "C" kernels')
        if "void" not in _IDENT.findall(before):
            raise ParseError(f"kernel {name} must return void")
        if name not in src.kernels:
            src.kernels.append(name)
        return
    if not ({"__device__", "__constant__", "__managed__"} & words) or has_body:
        return
    first_part = _split_top(stmt, "=")[0]
    if "(" in first_part:
        return  # a __device__ function declaration
    if re.match(r"\s*extern\b", stmt) and "=" not in stmt:
        return  # declared here, defined elsewhere
    for decl in _split_top(stmt, ","):
        name = _declarator_name(decl)
        if name not in src.globals:
            src.globals.append(name)


def parse(text: str) -> ModuleSource:
    """Find kernels and globals at file scope (and inside `extern "C" {}`)."""
    text = strip_comments_and_strings(text)
    src = ModuleSource()
    i, n = 0, len(text)
    start = 0
    # Stack of open transparent blocks: `extern "C" {` (True) kept as file scope.
    transparent: list[bool] = []
    while i < n:
        c = text[i]
        if c == ";":
            stmt = text[start:i]
            if stmt.strip():
                _handle_statement(stmt, bool(transparent), False, src)
            start = i = i + 1
            continue
        if c == "}":
            if not transparent:
                raise ParseError("unbalanced '}'")
            transparent.pop()
            start = i = i + 1
            continue
        if c == "{":
            stmt = text[start:i]
            s = stmt.strip()
            if re.fullmatch(r'extern\s+"C"', s):
                transparent.append(True)
                start = i = i + 1
                continue
            if re.match(r"(inline\s+)?namespace\b", s):
                if re.search(
                    r"__device__|__constant__|__global__", text[i : _matching(text, i, "{", "}")]
                ):
                    raise ParseError("kernels and globals inside a namespace are not supported")
                start = i = _matching(text, i, "{", "}")
                continue
            end = _matching(text, i, "{", "}")
            eq, paren = s.find("="), s.find("(")
            if eq >= 0 and (paren < 0 or eq < paren):
                # A brace initializer: the declaration goes on to its ';'.
                i = end
                continue
            if re.match(r"(typedef\s+)?(struct|class|union|enum)\b", s) or re.match(
                r"(__device__\s+|__constant__\s+|static\s+|const\s+)*(struct|class|union|enum)\b", s
            ):
                # A type definition, possibly followed by declarators: on to ';'.
                i = end
                continue
            # A function body.
            _handle_statement(stmt, bool(transparent), True, src)
            start = i = end
            continue
        i += 1
    if text[start:].strip():
        raise ParseError("the source ends in the middle of a declaration")
    return src


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate(cu_path: Path, src: ModuleSource, include_as: str | None = None) -> str:
    inc = include_as if include_as is not None else str(cu_path.resolve())
    lines = [
        f"/* Generated by gen_module.py from {cu_path.name}: do not edit. */",
        f'#include "{HEADER}"',
        f"#include {_c_string(inc)}",
        "",
    ]
    if src.kernels:
        lines.append("static const fk_kernel_info fk_kernels[] = {")
        for k in src.kernels:
            t = f"fake_cuda::kernel<{k}>"
            lines.append(
                f"    {{{_c_string(k)}, {t}::nparams, {t}::param_table, {t}::params_size,"
                f" {t}::run}},"
            )
        lines.append("};")
    if src.globals:
        lines.append("static const fk_global_info fk_globals[] = {")
        for g in src.globals:
            lines.append(f"    {{{_c_string(g)}, (void *)&{g}, sizeof({g})}},")
        lines.append("};")
    kernels = "fk_kernels" if src.kernels else "nullptr"
    globs = "fk_globals" if src.globals else "nullptr"
    lines += [
        "",
        'extern "C" __attribute__((visibility("default")))',
        "const fk_module_info fake_cuda_module = {",
        f"    FK_MODULE_MAGIC, FK_MODULE_ABI, {len(src.kernels)}, {kernels},",
        f"    {len(src.globals)}, {globs}}};",
        "",
    ]
    return "\n".join(lines)


def find_include_dir() -> Path:
    """The compat headers: ../include when installed (_native/tools), or the
    fake driver's in the source tree (tools/ -> gpu/fake/include)."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "include", here.parent / "gpu" / "fake" / "include"):
        if (cand / HEADER).is_file():
            return cand
    raise FileNotFoundError(f"{HEADER} not found next to {here}: pass --include-dir")


def compile_module(cpp: Path, out: Path, include_dir: Path, cxx: str | None = None) -> None:
    """Build the module with the host C++ compiler; the result appears
    atomically, so concurrent builders of the same image never see half a file."""
    compiler = shlex.split(cxx or os.environ.get("CXX") or "c++")
    # A fresh name the linker creates itself, so the module gets the usual
    # permissions (mkstemp's file would stay 0600).
    tmp = str(out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    cmd = [
        *compiler,
        "-std=c++17",
        "-O2",
        "-fPIC",
        "-shared",
        "-fvisibility=hidden",
        "-Wall",
        "-Wextra",
        "-I",
        str(include_dir),
        str(cpp),
        "-o",
        tmp,
        "-lm",
    ]
    try:
        subprocess.run(cmd, check=True)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="the CUDA C source (.cu)")
    ap.add_argument("-o", "--output", type=Path, help="the C++ translation unit to write")
    ap.add_argument(
        "--include-as", help="how the output includes the source (default: its absolute path)"
    )
    ap.add_argument(
        "--compile-to", type=Path, help="also build the module (.so) with $CXX (default c++)"
    )
    ap.add_argument("--include-dir", type=Path, help=f"directory holding {HEADER} (default: found)")
    ap.add_argument("--cxx", help="host C++ compiler for --compile-to (default $CXX or c++)")
    ap.add_argument("--list", action="store_true", help="print the kernels and globals as JSON")
    args = ap.parse_args(argv)

    try:
        src = parse(args.source.read_text())
    except (OSError, ParseError) as e:
        print(f"gen_module.py: {args.source}: {e}", file=sys.stderr)
        return 1
    if args.list:
        print(json.dumps({"kernels": src.kernels, "globals": src.globals}))
    if args.output is None:
        if args.compile_to is None:
            if not args.list:
                ap.error("nothing to do: give -o, --compile-to or --list")
            return 0
        args.output = args.compile_to.with_suffix(".cpp")
    text = generate(args.source, src, args.include_as)
    # Rewrite only on change so the build does not recompile needlessly, and
    # atomically, for JIT users building the same module at once.
    if not args.output.exists() or args.output.read_text() != text:
        tmp = args.output.with_name(f".{args.output.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, args.output)
    if args.compile_to is not None:
        try:
            inc = args.include_dir or find_include_dir()
            compile_module(args.output, args.compile_to, inc, args.cxx)
        except subprocess.CalledProcessError as e:
            print(
                f"gen_module.py: cannot build {args.compile_to}: "
                f"{e.cmd[0]} exited with status {e.returncode}",
                file=sys.stderr,
            )
            return 1
        except OSError as e:
            print(f"gen_module.py: cannot build {args.compile_to}: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
