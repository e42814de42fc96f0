// One kernel per PTX instruction under test, written as inline PTX so that
// the instruction (type, rounding, saturation, flush) is exactly the one
// named: d[i] = op(a[i], b[i][, c[i]]). Compiled to PTX with NVRTC
// (tests/fake_cuda/ptx_build.py); test_ptx_ops.py computes each expected
// result on the host, edge cases included.

#define IDX int i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= n) return

#define BIN(name, T, R, insn)                                                              \
  extern "C" __global__ void name(const T *a, const T *b, T *d, int n) {                    \
    IDX;                                                                                     \
    T r;                                                                                     \
    asm(insn " %0, %1, %2;" : "=" R(r) : R(a[i]), R(b[i]));                                  \
    d[i] = r;                                                                                \
  }
#define UN(name, T, R, insn)                                                               \
  extern "C" __global__ void name(const T *a, const T *b, T *d, int n) {                    \
    IDX;                                                                                     \
    T r;                                                                                     \
    asm(insn " %0, %1;" : "=" R(r) : R(a[i]));                                               \
    d[i] = r;                                                                                \
  }
#define TER(name, T, R, insn)                                                              \
  extern "C" __global__ void name(const T *a, const T *b, const T *c, T *d, int n) {        \
    IDX;                                                                                     \
    T r;                                                                                     \
    asm(insn " %0, %1, %2, %3;" : "=" R(r) : R(a[i]), R(b[i]), R(c[i]));                     \
    d[i] = r;                                                                                \
  }
// conversions: source type S (register class RS) to destination D (class RD)
#define CVT(name, D, RD, S, RS, insn)                                                      \
  extern "C" __global__ void name(const S *a, D *d, int n) {                                \
    IDX;                                                                                     \
    D r;                                                                                     \
    asm(insn " %0, %1;" : "=" RD(r) : RS(a[i]));                                             \
    d[i] = r;                                                                                \
  }
#define SETP(name, T, R, insn)                                                             \
  extern "C" __global__ void name(const T *a, const T *b, int *d, int n) {                  \
    IDX;                                                                                     \
    int r;                                                                                   \
    asm("{ .reg .pred p; " insn " p, %1, %2; selp.s32 %0, 1, 0, p; }" : "=r"(r) : R(a[i]), R(b[i])); \
    d[i] = r;                                                                                \
  }

#define U32 "r"
#define U64 "l"
#define F32 "f"
#define F64 "d"

BIN(add_u32, unsigned, U32, "add.u32")
BIN(sub_u32, unsigned, U32, "sub.u32")
BIN(mul_lo_u32, unsigned, U32, "mul.lo.u32")
BIN(mul_hi_u32, unsigned, U32, "mul.hi.u32")
BIN(mul_hi_s32, int, U32, "mul.hi.s32")
BIN(div_u32, unsigned, U32, "div.u32")
BIN(rem_u32, unsigned, U32, "rem.u32")
BIN(div_s32, int, U32, "div.s32")
BIN(rem_s32, int, U32, "rem.s32")
BIN(min_s32, int, U32, "min.s32")
BIN(max_u32, unsigned, U32, "max.u32")
BIN(add_sat_s32, int, U32, "add.sat.s32")
BIN(sub_sat_s32, int, U32, "sub.sat.s32")
BIN(and_b32, unsigned, U32, "and.b32")
BIN(or_b32, unsigned, U32, "or.b32")
BIN(xor_b32, unsigned, U32, "xor.b32")
BIN(shl_b32, unsigned, U32, "shl.b32")
BIN(shr_u32, unsigned, U32, "shr.u32")
BIN(shr_s32, int, U32, "shr.s32")
UN(not_b32, unsigned, U32, "not.b32")
UN(neg_s32, int, U32, "neg.s32")
UN(abs_s32, int, U32, "abs.s32")
UN(popc_b32, unsigned, U32, "popc.b32")
UN(clz_b32, unsigned, U32, "clz.b32")
UN(brev_b32, unsigned, U32, "brev.b32")
UN(bfind_u32, unsigned, U32, "bfind.u32")
TER(mad_lo_u32, unsigned, U32, "mad.lo.u32")
TER(bfe_u32, unsigned, U32, "bfe.u32")
TER(bfe_s32, int, U32, "bfe.s32")
TER(prmt_b32, unsigned, U32, "prmt.b32")

BIN(add_u64, unsigned long long, U64, "add.u64")
BIN(mul_lo_u64, unsigned long long, U64, "mul.lo.u64")
BIN(mul_hi_u64, unsigned long long, U64, "mul.hi.u64")
BIN(div_s64, long long, U64, "div.s64")
// A shift amount is a .u32 whatever the shifted type (NVIDIA's JIT refuses a
// 64-bit one): the shift's own kernel.
extern "C" __global__ void shr_s64(const long long *a, const long long *b, long long *d, int n) {
  IDX;
  long long r;
  asm("shr.s64 %0, %1, %2;" : "=l"(r) : "l"(a[i]), "r"((unsigned)b[i]));
  d[i] = r;
}
extern "C" __global__ void mul_wide_u32(const unsigned *a, const unsigned *b, unsigned long long *d, int n) {
  IDX;
  unsigned long long r;
  asm("mul.wide.u32 %0, %1, %2;" : "=l"(r) : "r"(a[i]), "r"(b[i]));
  d[i] = r;
}
extern "C" __global__ void mul_wide_s32(const int *a, const int *b, long long *d, int n) {
  IDX;
  long long r;
  asm("mul.wide.s32 %0, %1, %2;" : "=l"(r) : "r"(a[i]), "r"(b[i]));
  d[i] = r;
}

BIN(add_rn_f32, float, F32, "add.rn.f32")
BIN(sub_rn_f32, float, F32, "sub.rn.f32")
BIN(mul_rn_f32, float, F32, "mul.rn.f32")
BIN(mul_rz_f32, float, F32, "mul.rz.f32")
BIN(mul_rm_f32, float, F32, "mul.rm.f32")
BIN(mul_rp_f32, float, F32, "mul.rp.f32")
BIN(mul_ftz_f32, float, F32, "mul.rn.ftz.f32")
BIN(add_sat_f32, float, F32, "add.rn.sat.f32")
BIN(div_rn_f32, float, F32, "div.rn.f32")
BIN(min_f32, float, F32, "min.f32")
BIN(max_f32, float, F32, "max.f32")
TER(fma_rn_f32, float, F32, "fma.rn.f32")
UN(sqrt_rn_f32, float, F32, "sqrt.rn.f32")
UN(rcp_rn_f32, float, F32, "rcp.rn.f32")
UN(abs_f32, float, F32, "abs.f32")
UN(neg_f32, float, F32, "neg.f32")
UN(rcp_approx_f32, float, F32, "rcp.approx.f32")
UN(sqrt_approx_f32, float, F32, "sqrt.approx.f32")
UN(rsqrt_approx_f32, float, F32, "rsqrt.approx.f32")
UN(ex2_approx_f32, float, F32, "ex2.approx.f32")
UN(lg2_approx_f32, float, F32, "lg2.approx.f32")
UN(sin_approx_f32, float, F32, "sin.approx.f32")
UN(cos_approx_f32, float, F32, "cos.approx.f32")
BIN(add_rn_f64, double, F64, "add.rn.f64")
BIN(div_rn_f64, double, F64, "div.rn.f64")
TER(fma_rn_f64, double, F64, "fma.rn.f64")
UN(sqrt_rn_f64, double, F64, "sqrt.rn.f64")

SETP(setp_lt_f32, float, F32, "setp.lt.f32")
SETP(setp_ltu_f32, float, F32, "setp.ltu.f32")
SETP(setp_ne_f32, float, F32, "setp.ne.f32")
SETP(setp_neu_f32, float, F32, "setp.neu.f32")
SETP(setp_nan_f32, float, F32, "setp.nan.f32")
SETP(setp_lt_s32, int, U32, "setp.lt.s32")
SETP(setp_lo_u32, unsigned, U32, "setp.lo.u32")

CVT(cvt_rni_s32_f32, int, U32, float, F32, "cvt.rni.s32.f32")
CVT(cvt_rzi_s32_f32, int, U32, float, F32, "cvt.rzi.s32.f32")
CVT(cvt_rmi_s32_f32, int, U32, float, F32, "cvt.rmi.s32.f32")
CVT(cvt_rpi_u32_f32, unsigned, U32, float, F32, "cvt.rpi.u32.f32")
CVT(cvt_rn_f32_s32, float, F32, int, U32, "cvt.rn.f32.s32")
CVT(cvt_rz_f32_u32, float, F32, unsigned, U32, "cvt.rz.f32.u32")
CVT(cvt_rn_f32_f64, float, F32, double, F64, "cvt.rn.f32.f64")
CVT(cvt_rz_f32_f64, float, F32, double, F64, "cvt.rz.f32.f64")
CVT(cvt_f64_f32, double, F64, float, F32, "cvt.f64.f32")
CVT(cvt_rni_f32_f32, float, F32, float, F32, "cvt.rni.f32.f32")
CVT(cvt_u8_u32, unsigned, U32, unsigned, U32, "cvt.u32.u8")
CVT(cvt_s8_s32, int, U32, int, U32, "cvt.s32.s8")
CVT(cvt_sat_u8_s32, unsigned, U32, int, U32, "cvt.sat.u8.s32")
CVT(cvt_s64_s32, long long, U64, int, U32, "cvt.s64.s32")
CVT(cvt_u32_u64, unsigned, U32, unsigned long long, U64, "cvt.u32.u64")

// 64-bit addition and multiplication-accumulation from 32-bit halves through
// the carry flag (add.cc/addc, sub.cc/subc, mad.lo.cc/madc.hi), as multiword
// arithmetic and libdevice's argument reductions use it.
extern "C" __global__ void carry_chain(const unsigned long long *a, const unsigned long long *b,
                                       unsigned long long *sum, unsigned long long *diff,
                                       unsigned long long *mac, int n) {
  IDX;
  unsigned al = (unsigned)a[i], ah = (unsigned)(a[i] >> 32);
  unsigned bl = (unsigned)b[i], bh = (unsigned)(b[i] >> 32);
  unsigned sl, sh, dl, dh, ml, mh;
  asm("add.cc.u32 %0, %2, %4;\n\taddc.u32 %1, %3, %5;" : "=r"(sl), "=r"(sh) : "r"(al), "r"(ah), "r"(bl), "r"(bh));
  asm("sub.cc.u32 %0, %2, %4;\n\tsubc.u32 %1, %3, %5;" : "=r"(dl), "=r"(dh) : "r"(al), "r"(ah), "r"(bl), "r"(bh));
  // (al * bl) + b as a 64-bit value: low word with carry out, high word with carry in
  asm("mad.lo.cc.u32 %0, %2, %3, %4;\n\tmadc.hi.u32 %1, %2, %3, %5;" : "=r"(ml), "=r"(mh) : "r"(al), "r"(bl), "r"(bl), "r"(bh));
  sum[i] = ((unsigned long long)sh << 32) | sl;
  diff[i] = ((unsigned long long)dh << 32) | dl;
  mac[i] = ((unsigned long long)mh << 32) | ml;
}

// Half precision (.f16 in 16-bit registers): conversions, arithmetic, compare.
extern "C" __global__ void half_ops(const float *a, const float *b, float *rt, float *sum,
                                    float *fma, int *lt, int n) {
  IDX;
  unsigned short ha, hb, hs, hf;
  float r0, r1, r2;
  int p;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(ha) : "f"(a[i]));
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(hb) : "f"(b[i]));
  asm("cvt.f32.f16 %0, %1;" : "=f"(r0) : "h"(ha));
  asm("add.rn.f16 %0, %1, %2;" : "=h"(hs) : "h"(ha), "h"(hb));
  asm("cvt.f32.f16 %0, %1;" : "=f"(r1) : "h"(hs));
  asm("fma.rn.f16 %0, %1, %2, %1;" : "=h"(hf) : "h"(ha), "h"(hb));
  asm("cvt.f32.f16 %0, %1;" : "=f"(r2) : "h"(hf));
  asm("{ .reg .pred q; setp.lt.f16 q, %1, %2; selp.s32 %0, 1, 0, q; }" : "=r"(p) : "h"(ha), "h"(hb));
  rt[i] = r0;
  sum[i] = r1;
  fma[i] = r2;
  lt[i] = p;
}
