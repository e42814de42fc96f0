"""PTX instruction families with their edge cases: integer overflow, division
by zero, out-of-range shifts, saturation, NaN, signed zeros, denormals,
rounding modes, conversions that saturate, and the approximate functions
within the bounds the PTX ISA documents.

Each kernel of kernels/ptx_ops.cu runs one instruction (inline PTX, so the
instruction is exactly the one named); the expected results are computed
here with numpy from the ISA's definitions.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from ptx_build import DeviceArrays, PtxModule, kernel_ptx, loaded

Arr = np.ndarray[Any, Any]

I32_EDGES = [0, 1, -1, 7, -7, 2**31 - 1, -(2**31), 12345, -99999, 65536, 3, -2]
U32_EDGES = [0, 1, 2, 7, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 12345, 65536, 3, 31, 32, 33, 100]
F32_EDGES = [
    0.0, -0.0, 1.0, -1.0, 1.5, -2.5, 3.0e38, -3.0e38, 1e-45, -1e-45, 1e-40,
    np.inf, -np.inf, np.nan, 0.1, 100.0, 2.0**-126, 0.5,
]  # fmt: skip


@pytest.fixture(scope="module")
def ptx() -> bytes:
    return kernel_ptx("ptx_ops")


@pytest.fixture
def mod(cu: ModuleType, ctx: Any, ptx: bytes) -> Iterator[PtxModule]:
    with loaded(cu, ptx) as m:
        yield m


@pytest.fixture
def dev(cu: ModuleType, ctx: Any) -> Iterator[DeviceArrays]:
    d = DeviceArrays(cu)
    yield d
    d.free()


def run(mod: PtxModule, dev: DeviceArrays, name: str, out: Any, *inputs: Arr) -> Arr:
    n = len(inputs[0])
    ptrs = [dev.put(x) for x in inputs]
    d = dev.empty(n, out)
    if len(inputs) == 2 and name.startswith(("cvt",)):
        raise AssertionError("cvt takes one input")
    args = [*ptrs]
    if not name.startswith("cvt") and len(inputs) == 1:
        args.append(dev.empty(n, inputs[0].dtype))  # the unused b of a unary kernel
    mod.launch(name, *args, d, ctypes.c_int(n), grid=((n + 63) // 64, 1, 1), block=(64, 1, 1))
    return dev.get(d, n, out)


def pairs(values: list[Any], dtype: Any) -> tuple[Arr, Arr]:
    a = np.array([x for x in values for _ in values], dtype=dtype)
    b = np.array([y for _ in values for y in values], dtype=dtype)
    return a, b


# ---- integers --------------------------------------------------------------------


def wrap32(x: Any) -> Arr:
    """Python ints (any size) modulo 2**32."""
    return np.array([int(v) % (1 << 32) for v in x], dtype=np.uint64).astype(np.uint32)


def s32(x: Any) -> Arr:
    return wrap32(x).view(np.int32)


def trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _div_s32(a: int, b: int) -> int:
    return trunc_div(a, b)  # INT_MIN / -1 wraps (s32 below)


def _rem_s32(a: int, b: int) -> int:
    return a - trunc_div(a, b) * b


def _sat32(x: int) -> int:
    return max(-(2**31), min(2**31 - 1, x))


U32_BINARY: dict[str, Callable[[int, int], int]] = {
    "add_u32": lambda a, b: a + b,
    "sub_u32": lambda a, b: a - b,
    "mul_lo_u32": lambda a, b: a * b,
    "mul_hi_u32": lambda a, b: (a * b) >> 32,
    "div_u32": lambda a, b: a // b if b else 0xFFFFFFFF,
    # By zero the ISA leaves both to the machine: NVIDIA's give all ones (H200).
    "rem_u32": lambda a, b: a % b if b else 0xFFFFFFFF,
    "max_u32": max,
    "and_b32": lambda a, b: a & b,
    "or_b32": lambda a, b: a | b,
    "xor_b32": lambda a, b: a ^ b,
    "shl_b32": lambda a, b: a << b if b < 32 else 0,  # shifts past the width clamp
    "shr_u32": lambda a, b: a >> b if b < 32 else 0,
}

S32_BINARY: dict[str, Callable[[int, int], int]] = {
    "mul_hi_s32": lambda a, b: (a * b) >> 32,
    "div_s32": _div_s32,
    "rem_s32": _rem_s32,
    "min_s32": min,
    "add_sat_s32": lambda a, b: _sat32(a + b),
    "sub_sat_s32": lambda a, b: _sat32(a - b),
    "shr_s32": lambda a, b: a >> min(b & 0xFFFFFFFF, 31),
}


@pytest.mark.parametrize("name", sorted(U32_BINARY))
def test_u32_binary(mod: PtxModule, dev: DeviceArrays, name: str) -> None:
    a, b = pairs(U32_EDGES, np.uint32)
    want = wrap32([U32_BINARY[name](int(x), int(y)) for x, y in zip(a, b, strict=True)])
    np.testing.assert_array_equal(run(mod, dev, name, np.uint32, a, b), want)


@pytest.mark.parametrize("name", sorted(S32_BINARY))
def test_s32_binary(mod: PtxModule, dev: DeviceArrays, name: str) -> None:
    a, b = pairs(I32_EDGES, np.int32)
    if name in ("div_s32", "rem_s32"):
        # signed division by zero is machine-specific (the ISA leaves it
        # unspecified); unsigned division by zero is checked in test_u32_binary
        a, b = a[b != 0], b[b != 0]
    if name == "shr_s32":  # shift counts are unsigned: include past-the-width ones
        b = np.array([y for _ in I32_EDGES for y in [0, 1, 5, 31, 32, 40, 200, 7, 3, 2, 30, 16]])
        b = b.astype(np.int32)
    want = s32([S32_BINARY[name](int(x), int(y)) for x, y in zip(a, b, strict=True)])
    np.testing.assert_array_equal(run(mod, dev, name, np.int32, a, b), want)


def _brev(x: int) -> int:
    return int(f"{x:032b}"[::-1], 2)


def _bfind(x: int) -> int:
    return x.bit_length() - 1 if x else 0xFFFFFFFF


U32_UNARY: dict[str, Callable[[int], int]] = {
    "not_b32": lambda a: ~a,
    "popc_b32": lambda a: bin(a).count("1"),
    "clz_b32": lambda a: 32 - a.bit_length(),
    "brev_b32": _brev,
    "bfind_u32": _bfind,
}


@pytest.mark.parametrize("name", sorted(U32_UNARY))
def test_u32_unary(mod: PtxModule, dev: DeviceArrays, name: str) -> None:
    a = np.array(U32_EDGES, np.uint32)
    want = wrap32([U32_UNARY[name](int(x)) for x in a])
    np.testing.assert_array_equal(run(mod, dev, name, np.uint32, a), want)


@pytest.mark.parametrize(
    "name,fn", [("neg_s32", lambda a: -a), ("abs_s32", abs)], ids=["neg", "abs"]
)
def test_s32_unary_wraps(
    mod: PtxModule, dev: DeviceArrays, name: str, fn: Callable[[int], int]
) -> None:
    a = np.array(I32_EDGES, np.int32)
    # -INT_MIN and abs(INT_MIN) wrap to INT_MIN
    want = s32([fn(int(x)) for x in a])
    np.testing.assert_array_equal(run(mod, dev, name, np.int32, a), want)


def test_mad_and_bit_fields(mod: PtxModule, dev: DeviceArrays) -> None:
    a = np.array([0xFFFFFFFF, 0x12345678, 0xF0F0F0F0, 0x80000000, 5], np.uint32)
    b = np.array([2, 0x9ABCDEF0, 4, 31, 0], np.uint32)
    c = np.array([3, 7, 8, 1, 40], np.uint32)
    np.testing.assert_array_equal(
        run(mod, dev, "mad_lo_u32", np.uint32, a, b, c),
        wrap32([int(x) * int(y) + int(z) for x, y, z in zip(a, b, c, strict=True)]),
    )

    def bfe(x: int, pos: int, length: int, signed: bool) -> int:
        pos, length = pos & 0xFF, length & 0xFF
        field = (x >> pos) & ((1 << length) - 1) if pos < 32 else 0
        top = min(pos + length, 32) - 1
        if signed and length and (x >> top) & 1:
            # sign-extend from the field's highest bit inside the word
            bits = min(length, 32 - pos) if pos < 32 else 0
            field |= ~((1 << bits) - 1) if bits else -1
        return field

    want_u = wrap32([bfe(int(x), int(y), int(z), False) for x, y, z in zip(a, b, c, strict=True)])
    np.testing.assert_array_equal(run(mod, dev, "bfe_u32", np.uint32, a, b, c), want_u)
    sa = a.view(np.int32)
    want_s = s32([bfe(int(x), int(y), int(z), True) for x, y, z in zip(a, b, c, strict=True)])
    got_s = run(mod, dev, "bfe_s32", np.int32, sa, b.view(np.int32), c.view(np.int32))
    np.testing.assert_array_equal(got_s, want_s)

    def prmt(x: int, y: int, sel: int) -> int:
        both = (y << 32) | x
        r = 0
        for i in range(4):
            s = (sel >> (4 * i)) & 0xF
            byte = (both >> (8 * (s & 7))) & 0xFF
            if s & 8:
                byte = 0xFF if byte & 0x80 else 0
            r |= byte << (8 * i)
        return r

    sel = np.array([0x3210, 0x7654, 0x0123, 0x8888, 0x4567], np.uint32)
    want_p = wrap32([prmt(int(x), int(y), int(s)) for x, y, s in zip(a, b, sel, strict=True)])
    np.testing.assert_array_equal(run(mod, dev, "prmt_b32", np.uint32, a, b, sel), want_p)


def test_64_bit_integers(mod: PtxModule, dev: DeviceArrays) -> None:
    vals = [0, 1, 2**64 - 1, 2**63, 2**63 - 1, 0xDEADBEEFCAFEBABE, 12345678901, 3]
    a, b = pairs(vals, np.uint64)
    m = 1 << 64
    ai, bi = [int(x) for x in a], [int(y) for y in b]
    np.testing.assert_array_equal(
        run(mod, dev, "add_u64", np.uint64, a, b),
        np.array([(x + y) % m for x, y in zip(ai, bi, strict=True)], np.uint64),
    )
    np.testing.assert_array_equal(
        run(mod, dev, "mul_lo_u64", np.uint64, a, b),
        np.array([(x * y) % m for x, y in zip(ai, bi, strict=True)], np.uint64),
    )
    np.testing.assert_array_equal(
        run(mod, dev, "mul_hi_u64", np.uint64, a, b),
        np.array([(x * y) >> 64 for x, y in zip(ai, bi, strict=True)], np.uint64),
    )
    sa, sb = a.view(np.int64), b.view(np.int64)

    nz = sb != 0  # signed division by zero: machine-specific, left out
    sa, sb = sa[nz], sb[nz]

    def div64(x: int, y: int) -> int:
        if x == -(2**63) and y == -1:
            return x  # overflow wraps
        return trunc_div(x, y)

    np.testing.assert_array_equal(
        run(mod, dev, "div_s64", np.int64, sa, sb),
        np.array([div64(int(x), int(y)) for x, y in zip(sa, sb, strict=True)], np.int64),
    )
    shifts = np.array([int(y) % 70 for y in sb], np.int64)
    np.testing.assert_array_equal(
        run(mod, dev, "shr_s64", np.int64, sa, shifts),
        np.array([int(x) >> min(int(s), 63) for x, s in zip(sa, shifts, strict=True)], np.int64),
    )
    u, v = pairs(U32_EDGES, np.uint32)
    np.testing.assert_array_equal(
        run(mod, dev, "mul_wide_u32", np.uint64, u, v), u.astype(np.uint64) * v.astype(np.uint64)
    )
    s, t = pairs(I32_EDGES, np.int32)
    np.testing.assert_array_equal(
        run(mod, dev, "mul_wide_s32", np.int64, s, t), s.astype(np.int64) * t.astype(np.int64)
    )


# ---- floats ----------------------------------------------------------------------------


def same_floats(got: Arr, want: Arr) -> None:
    """Equal bit for bit, except that any NaN matches any NaN (the GPU's
    canonical NaN is not numpy's)."""
    gn, wn = np.isnan(got), np.isnan(want)
    np.testing.assert_array_equal(gn, wn)
    bits = np.uint32 if got.dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(got[~gn].view(bits), want[~wn].astype(got.dtype).view(bits))


def f32_round(exact: Arr, mode: str) -> Arr:
    """Round float64 values that are exact results to float32 in `mode`."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = exact.astype(np.float32)
        r64 = r.astype(np.float64)
        if mode == "rz":
            fix = np.abs(r64) > np.abs(exact)
            r = np.where(fix, np.nextafter(r, np.float32(0)), r)
        elif mode == "rm":
            r = np.where(r64 > exact, np.nextafter(r, np.float32(-np.inf)), r)
        elif mode == "rp":
            r = np.where(r64 < exact, np.nextafter(r, np.float32(np.inf)), r)
    return r.astype(np.float32)


@pytest.mark.parametrize("mode", ["rn", "rz", "rm", "rp"])
def test_mul_f32_rounding_modes(mod: PtxModule, dev: DeviceArrays, mode: str) -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal(500).astype(np.float32) * 1000
    b = rng.standard_normal(500).astype(np.float32)
    exact = a.astype(np.float64) * b.astype(np.float64)  # products of floats are exact in doubles
    got = run(mod, dev, f"mul_{mode}_f32", np.float32, a, b)
    same_floats(got, f32_round(exact, mode))


def test_f32_arithmetic_edges(mod: PtxModule, dev: DeviceArrays) -> None:
    a, b = pairs(F32_EDGES, np.float32)
    with np.errstate(all="ignore"):
        same_floats(run(mod, dev, "add_rn_f32", np.float32, a, b), a + b)
        same_floats(run(mod, dev, "sub_rn_f32", np.float32, a, b), a - b)
        same_floats(run(mod, dev, "mul_rn_f32", np.float32, a, b), a * b)
        same_floats(run(mod, dev, "div_rn_f32", np.float32, a, b), a / b)
        same_floats(run(mod, dev, "fma_rn_f32", np.float32, a, b, a),
                    (a.astype(np.float64) * b + a).astype(np.float32))  # fmt: skip
        # .sat clamps to [+0, 1] and makes NaN and -0 +0 (+ 0.0 turns -0.0 into +0.0)
        want_sat = (np.nan_to_num(np.clip(a + b, 0, 1), nan=0.0) + 0.0).astype(np.float32)
        same_floats(run(mod, dev, "add_sat_f32", np.float32, a, b), want_sat)


def test_f32_flush_to_zero(mod: PtxModule, dev: DeviceArrays) -> None:
    den = np.float32(1e-40)  # a denormal
    a = np.array([den, -den, den, 1.0, 2.0**-100], np.float32)
    b = np.array([1.0, 1.0, 2.0**20, den, 2.0**-30], np.float32)
    # without .ftz denormals survive; with it, denormal inputs and results are +-0
    same_floats(run(mod, dev, "mul_rn_f32", np.float32, a, b), a * b)
    got = run(mod, dev, "mul_ftz_f32", np.float32, a, b)
    same_floats(got, np.array([0.0, -0.0, 0.0, 0.0, 0.0], np.float32))


def test_min_max_nan_and_signed_zero(mod: PtxModule, dev: DeviceArrays) -> None:
    a = np.array([np.nan, 1.0, np.nan, -0.0, 0.0, -3.0, np.inf], np.float32)
    b = np.array([2.0, np.nan, np.nan, 0.0, -0.0, 3.0, -np.inf], np.float32)
    # one NaN: the other operand; -0.0 orders below +0.0
    same_floats(run(mod, dev, "min_f32", np.float32, a, b),
                np.array([2.0, 1.0, np.nan, -0.0, -0.0, -3.0, -np.inf], np.float32))  # fmt: skip
    same_floats(run(mod, dev, "max_f32", np.float32, a, b),
                np.array([2.0, 1.0, np.nan, 0.0, 0.0, 3.0, np.inf], np.float32))  # fmt: skip


def test_f32_unary_exact(mod: PtxModule, dev: DeviceArrays) -> None:
    a = np.array(F32_EDGES, np.float32)
    with np.errstate(all="ignore"):
        same_floats(run(mod, dev, "sqrt_rn_f32", np.float32, a), np.sqrt(a))
        same_floats(run(mod, dev, "rcp_rn_f32", np.float32, a), np.float32(1) / a)
        # abs and neg change the sign bit alone (a NaN stays a NaN, payload unspecified)
        same_floats(run(mod, dev, "abs_f32", np.float32, a), np.abs(a))
        same_floats(run(mod, dev, "neg_f32", np.float32, a), -a)


# (kernel, reference, inputs, bound kind, bound): the ISA's documented error bounds
APPROX = [
    ("rcp_approx_f32", lambda x: 1 / x, np.linspace(-100, 100, 201), "rel", 2.0**-23),
    ("sqrt_approx_f32", np.sqrt, np.linspace(0.01, 1000, 200), "rel", 2.0**-23),
    ("rsqrt_approx_f32", lambda x: 1 / np.sqrt(x), np.linspace(0.01, 1000, 200), "rel", 2.0**-22.9),
    ("ex2_approx_f32", np.exp2, np.linspace(-60, 60, 241), "rel", 2.0**-22),  # 2 ulp
    ("lg2_approx_f32", np.log2, np.linspace(0.5, 2, 100), "abs", 2.0**-22.6),
    ("sin_approx_f32", np.sin, np.linspace(-np.pi, np.pi, 400), "abs", 2.0**-20.5),
    ("cos_approx_f32", np.cos, np.linspace(-np.pi, np.pi, 400), "abs", 2.0**-20.5),
    # Farther out the error grows with the argument (its reduction is done in
    # float32): an H200 measured 2^-14.8 over +-100 pi.
    ("sin_approx_f32", np.sin, np.linspace(-100 * np.pi, 100 * np.pi, 400), "abs", 2.0**-14),
    ("cos_approx_f32", np.cos, np.linspace(-100 * np.pi, 100 * np.pi, 400), "abs", 2.0**-14),
]


@pytest.mark.parametrize(
    "name,ref,xs,kind,bound", APPROX, ids=[f"{a[0]}-to-{abs(float(a[2][0])):.0f}" for a in APPROX]
)
def test_approximate_functions_within_isa_bounds(
    mod: PtxModule,
    dev: DeviceArrays,
    name: str,
    ref: Callable[[Arr], Arr],
    xs: Arr,
    kind: str,
    bound: float,
) -> None:
    x = np.asarray(xs, np.float32)
    x = x[x != 0]
    got = run(mod, dev, name, np.float32, x).astype(np.float64)
    want = ref(x.astype(np.float64))
    err = np.abs(got - want)
    if kind == "rel":
        err = err / np.abs(want)
    # sin/cos: the bound is for the float input as given, in float32 arithmetic
    assert err.max() <= bound * (4 if name.startswith(("sin", "cos")) else 1), err.max()


def test_f64(mod: PtxModule, dev: DeviceArrays) -> None:
    rng = np.random.default_rng(6)
    a = np.concatenate([rng.standard_normal(50), [0.0, -0.0, np.inf, np.nan, 1e-310]])
    b = np.concatenate([rng.standard_normal(50), [0.0, 1.0, -np.inf, 2.0, 3.0]])
    with np.errstate(all="ignore"):
        got = run(mod, dev, "add_rn_f64", np.float64, a, b)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(a + b))
        np.testing.assert_array_equal(got[~np.isnan(got)], (a + b)[~np.isnan(got)])
        got = run(mod, dev, "div_rn_f64", np.float64, a, b)
        np.testing.assert_array_equal(got[~np.isnan(got)], (a / b)[~np.isnan(got)])
        got = run(mod, dev, "sqrt_rn_f64", np.float64, np.abs(a))
        np.testing.assert_array_equal(got[~np.isnan(got)], np.sqrt(np.abs(a))[~np.isnan(got)])
        got = run(mod, dev, "fma_rn_f64", np.float64, a[:50], b[:50], a[:50])
        want = np.array([float(np.longdouble(x) * np.longdouble(y) + np.longdouble(x))
                         for x, y in zip(a[:50], b[:50], strict=True)])  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=2.0**-52)


def test_comparisons_with_nan(mod: PtxModule, dev: DeviceArrays) -> None:
    a, b = pairs([1.0, -1.0, 0.0, -0.0, np.nan, np.inf], np.float32)
    unordered = np.isnan(a) | np.isnan(b)
    with np.errstate(invalid="ignore"):
        cases = {
            "setp_lt_f32": a < b,
            "setp_ltu_f32": (a < b) | unordered,
            "setp_ne_f32": (a != b) & ~unordered,  # ordered: false when either is NaN
            "setp_neu_f32": (a != b) | unordered,
            "setp_nan_f32": unordered,
        }
    for name, want in cases.items():
        np.testing.assert_array_equal(run(mod, dev, name, np.int32, a, b), want.astype(np.int32))
    i, j = pairs(I32_EDGES, np.int32)
    np.testing.assert_array_equal(run(mod, dev, "setp_lt_s32", np.int32, i, j), (i < j))
    u, v = pairs(U32_EDGES, np.uint32)
    np.testing.assert_array_equal(run(mod, dev, "setp_lo_u32", np.int32, u, v), (u < v))


# ---- conversions -----------------------------------------------------------------------


def test_float_to_int_conversions_saturate(mod: PtxModule, dev: DeviceArrays) -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1e10, -1e10, np.nan, np.inf, -np.inf, 3.7, -3.7],
                 np.float32)  # fmt: skip

    def sat(v: float, lo: int, hi: int) -> int:
        return 0 if np.isnan(v) else int(max(lo, min(hi, v)))

    lo, hi = -(2**31), 2**31 - 1
    rne = [sat(float(np.rint(v)), lo, hi) if not np.isnan(v) else 0 for v in x]
    np.testing.assert_array_equal(run(mod, dev, "cvt_rni_s32_f32", np.int32, x), rne)
    rz = [sat(float(np.trunc(v)), lo, hi) if not np.isnan(v) else 0 for v in x]
    np.testing.assert_array_equal(run(mod, dev, "cvt_rzi_s32_f32", np.int32, x), rz)
    rm = [sat(float(np.floor(v)), lo, hi) if not np.isnan(v) else 0 for v in x]
    np.testing.assert_array_equal(run(mod, dev, "cvt_rmi_s32_f32", np.int32, x), rm)
    rp = [sat(float(np.ceil(v)), 0, 2**32 - 1) if not np.isnan(v) else 0 for v in x]
    np.testing.assert_array_equal(run(mod, dev, "cvt_rpi_u32_f32", np.uint32, x), rp)
    same_floats(run(mod, dev, "cvt_rni_f32_f32", np.float32, x), np.rint(x))


def test_int_to_float_and_narrowing_conversions(mod: PtxModule, dev: DeviceArrays) -> None:
    i = np.array([*I32_EDGES, 16777217, -16777219], np.int32)
    same_floats(run(mod, dev, "cvt_rn_f32_s32", np.float32, i), i.astype(np.float32))
    u = np.array([*U32_EDGES, 16777217, 0xFFFFFF81], np.uint32)
    same_floats(
        run(mod, dev, "cvt_rz_f32_u32", np.float32, u), f32_round(u.astype(np.float64), "rz")
    )
    d = np.array([1 / 3, -1 / 3, 1e300, -1e300, 1e-50, np.nan, 2.0**-140, 0.1], np.float64)
    with np.errstate(over="ignore"):
        same_floats(run(mod, dev, "cvt_rn_f32_f64", np.float32, d), d.astype(np.float32))
        # round-toward-zero never overflows to infinity: the largest float
        same_floats(run(mod, dev, "cvt_rz_f32_f64", np.float32, d), f32_round(d, "rz"))
    f = np.array(F32_EDGES, np.float32)
    got = run(mod, dev, "cvt_f64_f32", np.float64, f)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(f))
    np.testing.assert_array_equal(got[~np.isnan(f)], f[~np.isnan(f)].astype(np.float64))
    w = np.array([0, 255, 256, 0x1FF, 0xFFFFFFFF, 0x80], np.uint32)
    np.testing.assert_array_equal(run(mod, dev, "cvt_u8_u32", np.uint32, w), w & 0xFF)
    np.testing.assert_array_equal(
        run(mod, dev, "cvt_s8_s32", np.int32, w.view(np.int32)),
        (w & 0xFF).astype(np.uint8).view(np.int8),
    )
    s = np.array([-5, 0, 100, 255, 256, 100000, -(2**31)], np.int32)
    np.testing.assert_array_equal(run(mod, dev, "cvt_sat_u8_s32", np.uint32, s), np.clip(s, 0, 255))
    np.testing.assert_array_equal(run(mod, dev, "cvt_s64_s32", np.int64, s), s.astype(np.int64))
    big = np.array([2**40 + 7, 2**64 - 1, 5], np.uint64)
    np.testing.assert_array_equal(
        run(mod, dev, "cvt_u32_u64", np.uint32, big), big.astype(np.uint32)
    )


def test_carry_chains(mod: PtxModule, dev: DeviceArrays) -> None:
    vals = [0, 1, 0xFFFFFFFF, 0x100000000, 2**64 - 1, 0xDEADBEEF12345678, 0x80000000FFFFFFFF]
    a, b = pairs(vals, np.uint64)
    n = a.size
    da, db = dev.put(a), dev.put(b)
    s, d, m = dev.empty(n, np.uint64), dev.empty(n, np.uint64), dev.empty(n, np.uint64)
    mod.launch("carry_chain", da, db, s, d, m, ctypes.c_int(n), grid=(n, 1, 1), block=(1, 1, 1))
    ai, bi = [int(x) for x in a], [int(y) for y in b]
    mask = (1 << 64) - 1
    np.testing.assert_array_equal(
        dev.get(s, n, np.uint64),
        np.array([(x + y) & mask for x, y in zip(ai, bi, strict=True)], np.uint64),
    )
    np.testing.assert_array_equal(
        dev.get(d, n, np.uint64),
        np.array([(x - y) & mask for x, y in zip(ai, bi, strict=True)], np.uint64),
    )
    want = [((x & 0xFFFFFFFF) * (y & 0xFFFFFFFF) + y) & mask for x, y in zip(ai, bi, strict=True)]
    np.testing.assert_array_equal(dev.get(m, n, np.uint64), np.array(want, np.uint64))


def test_half_precision(mod: PtxModule, dev: DeviceArrays) -> None:
    rng = np.random.default_rng(10)
    a = np.concatenate([rng.standard_normal(200) * 100, [70000.0, 1e-6, np.nan, -0.0, 65504.0]])
    b = np.concatenate([rng.standard_normal(200), [1.0, 1e-7, 1.0, 0.0, 32.0]])
    a, b = a.astype(np.float32), b.astype(np.float32)
    n = a.size
    da, db = dev.put(a), dev.put(b)
    outs = [dev.empty(n, np.float32) for _ in range(3)] + [dev.empty(n, np.int32)]
    mod.launch("half_ops", da, db, *outs, ctypes.c_int(n), grid=((n + 63) // 64, 1, 1),
               block=(64, 1, 1))  # fmt: skip
    with np.errstate(all="ignore"):
        ha, hb = a.astype(np.float16), b.astype(np.float16)  # nearest even, inf past 65504
        same_floats(dev.get(outs[0], n, np.float32), ha.astype(np.float32))
        same_floats(dev.get(outs[1], n, np.float32), (ha + hb).astype(np.float32))
        exact = ha.astype(np.float64) * hb.astype(np.float64) + ha.astype(np.float64)
        same_floats(dev.get(outs[2], n, np.float32), exact.astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(dev.get(outs[3], n, np.int32), (ha < hb).astype(np.int32))
