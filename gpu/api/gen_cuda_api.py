#!/usr/bin/env python3
"""Generate the CUDA driver API table from cudaTypedefs.h (and cudaProfilerTypedefs.h).

The table is the one description of the driver API surface: every function,
each ABI variant with the CUDA version that introduced it, and the per-thread
default stream variants. The fake driver and the interposer are both built
from it, so nobody writes hundreds of stubs by hand.

Exported symbol names are not spelled out in cudaTypedefs.h; they follow the
driver's rule that the oldest variant of a function is exported under its base
name and each later one as ``_v2``, ``_v3`` ... in order of version. A
per-thread variant (``_ptds``/``_ptsz``) is the newest default variant at or
before its version plus the suffix. The rule is checked against the renaming
macros in cuda.h, so a header that breaks it fails the build instead of
silently exporting a wrong name.

The profiler control functions (cuProfilerStart, cuProfilerStop,
cuProfilerInitialize) are part of libcuda too, declared in cudaProfiler.h with
their typedefs in cudaProfilerTypedefs.h; clients resolve them like any other
(cuda-bindings raises on a name the driver does not know), so they join the
table. The nvidia-cuda-runtime wheel ships cudaProfilerTypedefs.h without
cudaProfiler.h, which declares them and CUoutput_mode: there only those whose
parameters need no profiler type (cuProfilerStart, cuProfilerStop) join.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

TYPEDEF_RE = re.compile(
    r"typedef\s+CUresult\s*\(\s*CUDAAPI\s*\*\s*PFN_(\w+?)_v(\d+)(_ptds|_ptsz)?\s*\)\s*\((.*?)\)\s*;",
    re.S,
)
RENAME_RE = re.compile(
    r"^#define\s+(cu\w+)\s+(?:__CUDA_API_PT(?:DS|SZ)\(\s*(cu\w+)\s*\)|(cu\w+))\s*$", re.M
)


@dataclass(frozen=True)
class Variant:
    base: str
    version: int
    ptds: str  # "" for the default variant, else "_ptds" or "_ptsz"
    params: str  # "(type a, type b)"
    args: str  # "(a, b)"
    param_types: tuple[str, ...]
    symbol: str = ""
    default_version: int = 0  # for a per-thread variant: the default variant it shadows


C_TYPE_WORDS = {"void", "char", "short", "int", "long", "float", "double", "unsigned", "signed"}
C_QUALIFIERS = {"const", "volatile", "struct", "enum", "restrict"}


def split_params(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    last = "".join(cur).strip()
    if last:
        parts.append(last)
    return [] if parts == ["void"] else parts


def name_and_type(param: str, index: int) -> tuple[str, str, str]:
    """Return (declaration with a name, the name, the type alone)."""
    param = " ".join(param.split())
    fnptr = re.match(r"^(.*\(\s*\w*\s*\*\s*)(\w+)(\s*\).*)$", param)
    if fnptr:
        name = fnptr.group(2)
        return param, name, fnptr.group(1) + fnptr.group(3)
    arr = re.match(r"^(.*?)(\w+)\s*(\[.*\])$", param)
    if arr:
        return param, arr.group(2), arr.group(1).strip() + "*"
    tokens = re.findall(r"\w+", param)
    named_types = [t for t in tokens if t not in C_TYPE_WORDS | C_QUALIFIERS]
    builtin = [t for t in tokens if t in C_TYPE_WORDS]
    has_name = (
        tokens
        and tokens[-1] not in C_TYPE_WORDS | C_QUALIFIERS
        and (len(named_types) >= 2 or (len(named_types) == 1 and builtin))
    )
    if not has_name:
        name = f"a{index}"
        return f"{param} {name}", name, param
    name = tokens[-1]
    return param, name, param[: param.rindex(name)].strip()


def parse_typedefs(text: str) -> list[Variant]:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out: dict[tuple[str, int, str], Variant] = {}
    for base, ver, ptds, params in TYPEDEF_RE.findall(text):
        decls, names, types = [], [], []
        for i, p in enumerate(split_params(params)):
            d, n, t = name_and_type(p, i)
            decls.append(d)
            names.append(n)
            types.append(" ".join(t.split()))
        key = (base, int(ver), ptds or "")
        out[key] = Variant(
            base=base,
            version=int(ver),
            ptds=ptds or "",
            params="(" + (", ".join(decls) or "void") + ")",
            args="(" + ", ".join(names) + ")",
            param_types=tuple(types),
        )
    return sorted(out.values(), key=lambda v: (v.base, v.version, v.ptds))


def assign_symbols(variants: list[Variant]) -> list[Variant]:
    by_base: dict[str, list[Variant]] = {}
    for v in variants:
        by_base.setdefault(v.base, []).append(v)
    result: list[Variant] = []
    for base, vs in by_base.items():
        defaults = sorted((v for v in vs if not v.ptds), key=lambda v: v.version)
        named: list[Variant] = []
        for i, v in enumerate(defaults):
            sym = base if i == 0 else f"{base}_v{i + 1}"
            named.append(Variant(**{**v.__dict__, "symbol": sym}))
        result.extend(named)
        for v in (v for v in vs if v.ptds):
            shadow = [d for d in named if d.version <= v.version] or named[:1]
            if shadow:
                d = shadow[-1]
                # Types are spelled differently at times (Foo vs Foo_v1) but
                # mean the same ABI; the argument count must match.
                same = len(d.param_types) == len(v.param_types)
                result.append(
                    Variant(
                        **{
                            **v.__dict__,
                            "symbol": d.symbol + v.ptds,
                            "default_version": d.version if same else 0,
                        }
                    )
                )
            else:  # a per-thread variant with no default one: keep the base name
                result.append(Variant(**{**v.__dict__, "symbol": base + v.ptds}))
    return sorted(result, key=lambda v: (v.base, v.version, v.ptds))


def check_against_cuda_h(variants: list[Variant], cuda_h: str) -> list[str]:
    """Every derived symbol must be one cuda.h declares or renames a name to."""
    declared = set(re.findall(r"CUDAAPI\s+(cu\w+)\s*\(", cuda_h))
    ptds_macro = re.compile(r"__CUDA_API_(PTDS|PTSZ)\(\s*(cu\w+)\s*\)")
    for kind, target in ptds_macro.findall(cuda_h):
        declared.add(f"{target}_{kind.lower()}")
    symbols = {v.symbol for v in variants}
    errors = []
    for name, ptds_target, plain_target in RENAME_RE.findall(cuda_h):
        target = ptds_target or plain_target
        declared.add(target)
        if name in {v.base for v in variants} and target not in symbols:
            errors.append(f"cuda.h renames {name} to {target}, which the table lacks")
    for v in variants:
        if v.ptds and not v.default_version:
            errors.append(f"{v.symbol}: no default variant with the same arguments")
        if v.symbol not in declared:
            errors.append(f"{v.base} v{v.version}{v.ptds}: {v.symbol} is not in cuda.h")
    return errors


def parse_errors(cuda_h: str) -> list[tuple[str, int, str]]:
    """CUresult names, values and the first sentence of their documentation."""
    m = re.search(r"typedef enum cudaError_enum \{(.*?)\} CUresult;", cuda_h, re.S)
    if not m:
        raise SystemExit("gen_cuda_api: cuda.h has no CUresult enum")
    out = []
    for doc, name, value in re.findall(r"/\*\*(.*?)\*/\s*(CUDA_\w+)\s*=\s*(\d+)", m.group(1), re.S):
        text = " ".join(w for w in doc.replace("*", " ").split() if not w.startswith("\\"))
        text = re.sub(r"::(\w+)", r"\1", text)
        first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")
        out.append((name, int(value), first.replace("\\", "").replace('"', "'")))
    return out


def render_errors(errors: list[tuple[str, int, str]]) -> str:
    lines = [
        "/* Generated by gpu/api/gen_cuda_api.py from cuda.h; do not edit.",
        " * CU_ERR(name, value, description) for every CUresult. */",
    ]
    lines += [f'CU_ERR({n}, {v}, "{d}")' for n, v, d in errors]
    lines += ["#undef CU_ERR", ""]
    return "\n".join(lines)


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def render_header(variants: list[Variant], source: str, cuda_version: int) -> str:
    lines = [
        "/* Generated by gpu/api/gen_cuda_api.py from " + Path(source).name + "; do not edit.",
        " *",
        " * CU_FN(base, version, symbol, params, args): a default ABI variant.",
        " * CU_FN_PTDS(base, version, symbol, default_version, params, args): a",
        " *   per-thread default stream variant; default_version names the default",
        " *   variant with the same arguments.",
        " */",
        f"#define CEDANA_CUDA_API_HEADER_VERSION {cuda_version}",
        f"#define CEDANA_CUDA_API_COUNT {len(variants)}",
        "#ifndef CU_FN_PTDS",
        "#define CU_FN_PTDS(base, version, symbol, default_version, params, args)",
        "#endif",
    ]
    for v in variants:
        if v.ptds:
            lines.append(
                f"CU_FN_PTDS({v.base}, {v.version}, {v.symbol}, {v.default_version}, "
                f"{v.params}, {v.args})"
            )
        else:
            lines.append(f"CU_FN({v.base}, {v.version}, {v.symbol}, {v.params}, {v.args})")
    lines += ["#undef CU_FN", "#undef CU_FN_PTDS", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--include-dir", required=True, help="directory with cuda.h and cudaTypedefs.h")
    ap.add_argument("--header", required=True, help="X-macro header to write")
    ap.add_argument("--errors", help="CUresult X-macro header to write")
    ap.add_argument("--json", help="JSON table to write (for the Python side)")
    opts = ap.parse_args()
    inc = Path(opts.include_dir)
    typedefs = (inc / "cudaTypedefs.h").read_text()
    cuda_h = (inc / "cuda.h").read_text()
    parsed = parse_typedefs(typedefs)
    if (inc / "cudaProfilerTypedefs.h").is_file():
        profiler = parse_typedefs((inc / "cudaProfilerTypedefs.h").read_text())
        if (inc / "cudaProfiler.h").is_file():
            # Declarations are checked against cuda.h's text: add the profiler's.
            cuda_h += (inc / "cudaProfiler.h").read_text()
        else:
            profiler = [v for v in profiler if not v.param_types]
            cuda_h += "".join(f"CUresult CUDAAPI {v.base}(void);\n" for v in profiler)
        parsed = sorted(parsed + profiler, key=lambda v: (v.base, v.version, v.ptds))
    m = re.search(r"#define\s+CUDA_VERSION\s+(\d+)", cuda_h)
    cuda_version = int(m.group(1)) if m else 0
    variants = assign_symbols(parsed)
    errors = check_against_cuda_h(variants, cuda_h)
    if errors:
        for e in errors:
            print(f"gen_cuda_api: {e}", file=sys.stderr)
        return 1
    header = render_header(variants, str(inc / "cudaTypedefs.h"), cuda_version)
    write_if_changed(Path(opts.header), header)
    if opts.errors:
        write_if_changed(Path(opts.errors), render_errors(parse_errors(cuda_h)))
    if opts.json:
        table = {
            "cuda_version": cuda_version,
            "functions": [
                {
                    "base": v.base,
                    "version": v.version,
                    "per_thread": v.ptds[1:] if v.ptds else "",
                    "symbol": v.symbol,
                    "params": list(v.param_types),
                }
                for v in variants
            ],
        }
        write_if_changed(Path(opts.json), json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
