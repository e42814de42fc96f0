/* The SIMT interpreter: runs a kernel's blocks one after another on the
 * calling thread, the warps of a block in turn until each reaches a barrier
 * or exits, the lanes of a warp in lockstep (see ptx.h for why and how).
 *
 * Registers are 64-bit slots laid out [register][lane], so an instruction's
 * register operand is an array of 32 values and its work a loop over the
 * lanes that execute it. A value narrower than 64 bits is kept zero-extended
 * (sign-extended after a signed load); every instruction reads its operands
 * at its own type.
 */
#include "ptx_internal.h"

#include <fenv.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FOR_LANES(mask)                                                                  \
  for (uint32_t _m = (mask); _m; _m &= _m - 1)                                          \
    for (int l = __builtin_ctz(_m), _once = 1; _once; _once = 0)

typedef struct warp {
  uint64_t *r;
  uint32_t pc[PTX_WARP];
  uint8_t depth[PTX_WARP];
  uint32_t stack[PTX_WARP][PTX_MAX_CALL_DEPTH]; /* the call instructions to return after */
  uint8_t redval[PTX_WARP]; /* a lane's predicate at bar.red */
  uint8_t cf[PTX_WARP]; /* the carry flag (CC.CF) of add.cc/addc/sub.cc/subc/mad.cc/madc */
  uint32_t live; /* lanes that exist and have not exited */
  uint32_t bar;  /* lanes parked at bar.sync (their pc is the bar) */
  uint32_t wsync; /* lanes parked at a warp-synchronous instruction */
  unsigned id;
  uint32_t tid[3][PTX_WARP];
} warp;

typedef struct block {
  const ptx_module *m;
  ptx_dim3 grid, bdim, ctaid;
  unsigned nthreads, nwarps;
  unsigned char *shared;
  size_t shared_size, dyn_shared;
  unsigned char *local;
  size_t local_size;
  const unsigned char *params;
  size_t params_size;
  warp *warps;
  uint64_t *regs;
  uint64_t tmp[6][PTX_WARP];
  uint64_t sink[PTX_WARP];
  uint64_t clock;
  uint64_t warp_ins, thread_ins;
} block;

/* ---- values ---------------------------------------------------------------------- */

static inline uint64_t mask_of(int bytes) { return bytes >= 8 ? ~0ull : (1ull << (bytes * 8)) - 1; }
static inline uint64_t U(uint64_t v, int bytes) { return v & mask_of(bytes); }
static inline int64_t S(uint64_t v, int bytes) {
  int sh = 64 - bytes * 8;
  return (int64_t)(v << sh) >> sh;
}
static inline float F32(uint64_t v) {
  uint32_t b = (uint32_t)v;
  float f;
  memcpy(&f, &b, 4);
  return f;
}
static inline double F64(uint64_t v) {
  double d;
  memcpy(&d, &v, 8);
  return d;
}
static inline uint64_t PF32(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  return b;
}
static inline uint64_t PF64(double d) {
  uint64_t b;
  memcpy(&b, &d, 8);
  return b;
}
/* Half precision through the compiler's _Float16: values are computed in
 * double (exact for one operation on halves) and rounded once to half. */
static inline double H2D(uint64_t v) {
  uint16_t b = (uint16_t)v;
  _Float16 h;
  memcpy(&h, &b, 2);
  return (double)h;
}
static inline uint64_t D2H(double d) {
  volatile double vd = d; /* rounded in the current rounding mode */
  _Float16 h = (_Float16)vd;
  uint16_t b;
  memcpy(&b, &h, 2);
  if (isnan(d)) b = 0x7fff; /* the canonical NaN */
  return b;
}
static inline float ftz32(float f) { return fpclassify(f) == FP_SUBNORMAL ? copysignf(0.0f, f) : f; }

static int fe_mode(int rnd) {
  switch (rnd) {
  case RND_RZ: case RND_RZI: return FE_TOWARDZERO;
  case RND_RM: case RND_RMI: return FE_DOWNWARD;
  case RND_RP: case RND_RPI: return FE_UPWARD;
  default: return FE_TONEAREST;
  }
}

/* ---- operands ----------------------------------------------------------------------- */

static uint64_t sreg(block *b, warp *w, int id, int l) {
  switch (id) {
  case SR_TID_X: return w->tid[0][l];
  case SR_TID_Y: return w->tid[1][l];
  case SR_TID_Z: return w->tid[2][l];
  case SR_NTID_X: return b->bdim.x;
  case SR_NTID_Y: return b->bdim.y;
  case SR_NTID_Z: return b->bdim.z;
  case SR_CTAID_X: return b->ctaid.x;
  case SR_CTAID_Y: return b->ctaid.y;
  case SR_CTAID_Z: return b->ctaid.z;
  case SR_NCTAID_X: return b->grid.x;
  case SR_NCTAID_Y: return b->grid.y;
  case SR_NCTAID_Z: return b->grid.z;
  case SR_LANEID: return (uint64_t)l;
  case SR_WARPID: return w->id;
  case SR_NWARPID: return 64;
  case SR_SMID: return 0;
  case SR_NSMID: return 132;
  case SR_GRIDID: return 1;
  case SR_LANEMASK_EQ: return 1u << l;
  case SR_LANEMASK_LT: return (1u << l) - 1;
  case SR_LANEMASK_LE: return (uint32_t)((2ull << l) - 1);
  case SR_LANEMASK_GT: return ~(uint32_t)((2ull << l) - 1);
  case SR_LANEMASK_GE: return ~((1u << l) - 1);
  case SR_CLOCK:
  case SR_CLOCK64: return ++b->clock;
  case SR_GLOBALTIMER: {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
  }
  case SR_DYN_SMEM: return b->dyn_shared;
  case SR_TOTAL_SMEM: return b->shared_size;
  default: return 0;
  }
}

/* A source operand as 32 lane values. */
static const uint64_t *src(block *b, warp *w, const ptx_operand *o, int slot, uint32_t mask) {
  uint64_t *t = b->tmp[slot];
  switch (o->kind) {
  case OK_REG:
    if (!o->neg) return &w->r[(size_t)o->reg * PTX_WARP];
    FOR_LANES(mask) t[l] = !w->r[(size_t)o->reg * PTX_WARP + l];
    return t;
  case OK_IMM:
  case OK_ADDR:
    FOR_LANES(mask) t[l] = o->imm;
    return t;
  case OK_SREG: FOR_LANES(mask) t[l] = sreg(b, w, (int)o->imm, l); return t;
  default: memset(t, 0, sizeof b->tmp[0]); return t;
  }
}

static uint64_t *dst(block *b, warp *w, const ptx_operand *o) {
  if (o->kind == OK_REG) return &w->r[(size_t)o->reg * PTX_WARP];
  return b->sink;
}

/* ---- memory ------------------------------------------------------------------------ */

/* The host address of `size` bytes at addr in space sp, for lane l; NULL if
 * outside its window. Global, const and generic addresses are host addresses
 * already (a bad one faults, as a host module's kernel does). */
static inline unsigned char *host_addr(block *b, warp *w, int sp, uint64_t addr, size_t size, int l) {
  switch (sp) {
  case SP_SHARED:
    if (addr > b->shared_size || size > b->shared_size - addr) return NULL;
    return b->shared + addr;
  case SP_LOCAL:
  case SP_PARAM_LOCAL:
    if (addr > b->local_size || size > b->local_size - addr) return NULL;
    return b->local + (size_t)(w->id * PTX_WARP + (unsigned)l) * b->local_size + addr;
  case SP_PARAM_KERNEL:
    if (addr > b->params_size || size > b->params_size - addr) return NULL;
    return (unsigned char *)b->params + addr;
  default: return (unsigned char *)(uintptr_t)addr;
  }
}

static inline int addr_space(const ptx_ins *ins, const ptx_operand *o) {
  return o->space != SP_GENERIC ? o->space : ins->space;
}

static inline uint64_t addr_of(warp *w, const ptx_operand *o, int l) {
  return (o->reg >= 0 ? w->r[(size_t)o->reg * PTX_WARP + l] : 0) + o->imm;
}

/* Fixed-size copies: a memcpy of a run-time size becomes a slow string move. */
static inline uint64_t load_raw(const unsigned char *p, int bytes) {
  switch (bytes) {
  case 1: return *p;
  case 2: { uint16_t v; memcpy(&v, p, 2); return v; }
  case 4: { uint32_t v; memcpy(&v, p, 4); return v; }
  default: { uint64_t v; memcpy(&v, p, 8); return v; }
  }
}

static inline void store_raw(unsigned char *p, uint64_t v, int bytes) {
  switch (bytes) {
  case 1: *p = (unsigned char)v; break;
  case 2: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
  case 4: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
  default: memcpy(p, &v, 8); break;
  }
}

static inline uint64_t load_val(const unsigned char *p, ptx_type t) {
  uint64_t v = load_raw(p, t.bytes);
  if (t.kind == TK_S) v = (uint64_t)S(v, t.bytes);
  return v;
}

static ptx_status do_ld(block *b, warp *w, const ptx_ins *ins, uint32_t em) {
  const ptx_operand *a = &ins->o[1];
  int sp = addr_space(ins, a);
  size_t esz = ins->t.bytes;
  FOR_LANES(em) {
    unsigned char *p = host_addr(b, w, sp, addr_of(w, a, l), esz * ins->vec, l);
    if (!p) return PTX_ILLEGAL_ADDRESS;
    if (ins->vec == 1) {
      uint64_t v = load_val(p, ins->t);
      dst(b, w, &ins->o[0])[l] = v;
    } else {
      for (int i = 0; i < ins->vec; i++) {
        int r = ins->o[0].vregs[i];
        uint64_t v = load_val(p + i * esz, ins->t);
        if (r >= 0) w->r[(size_t)r * PTX_WARP + l] = v;
      }
    }
  }
  return PTX_OK;
}

static ptx_status do_st(block *b, warp *w, const ptx_ins *ins, uint32_t em) {
  const ptx_operand *a = &ins->o[0];
  int sp = addr_space(ins, a);
  size_t esz = ins->t.bytes;
  const uint64_t *v = ins->vec == 1 ? src(b, w, &ins->o[1], 1, em) : NULL;
  FOR_LANES(em) {
    unsigned char *p = host_addr(b, w, sp, addr_of(w, a, l), esz * ins->vec, l);
    if (!p) return PTX_ILLEGAL_ADDRESS;
    if (v) {
      store_raw(p, v[l], (int)esz);
    } else {
      for (int i = 0; i < ins->vec; i++) {
        int r = ins->o[1].vregs[i];
        uint64_t x = r >= 0 ? w->r[(size_t)r * PTX_WARP + l] : 0;
        store_raw(p + i * esz, x, (int)esz);
      }
    }
  }
  return PTX_OK;
}

/* ---- atomics ------------------------------------------------------------------------- */

#define CAS_LOOP(T, ptr, old, expr)                                                         \
  do {                                                                                      \
    T _o = __atomic_load_n((T *)(ptr), __ATOMIC_RELAXED), _n;                               \
    do {                                                                                    \
      T cur = _o;                                                                           \
      (void)cur;                                                                            \
      _n = (expr);                                                                          \
    } while (!__atomic_compare_exchange_n((T *)(ptr), &_o, _n, true, __ATOMIC_SEQ_CST,      \
                                          __ATOMIC_RELAXED));                               \
    old = _o;                                                                               \
  } while (0)

static uint64_t atomic32(void *p, int aop, ptx_type t, uint32_t v, uint32_t c) {
  uint32_t old;
  switch (aop) {
  case AOP_ADD:
    if (t.kind == TK_F) {
      CAS_LOOP(uint32_t, p, old, (uint32_t)PF32(F32(cur) + F32(v)));
      return old;
    }
    return __atomic_fetch_add((uint32_t *)p, v, __ATOMIC_SEQ_CST);
  case AOP_AND: return __atomic_fetch_and((uint32_t *)p, v, __ATOMIC_SEQ_CST);
  case AOP_OR: return __atomic_fetch_or((uint32_t *)p, v, __ATOMIC_SEQ_CST);
  case AOP_XOR: return __atomic_fetch_xor((uint32_t *)p, v, __ATOMIC_SEQ_CST);
  case AOP_EXCH: return __atomic_exchange_n((uint32_t *)p, v, __ATOMIC_SEQ_CST);
  case AOP_CAS:
    old = v;
    __atomic_compare_exchange_n((uint32_t *)p, &old, c, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return old;
  case AOP_INC: CAS_LOOP(uint32_t, p, old, cur >= v ? 0u : cur + 1u); return old;
  case AOP_DEC: CAS_LOOP(uint32_t, p, old, (cur == 0 || cur > v) ? v : cur - 1u); return old;
  case AOP_MIN:
    if (t.kind == TK_S) CAS_LOOP(uint32_t, p, old, (int32_t)cur < (int32_t)v ? cur : v);
    else if (t.kind == TK_F) CAS_LOOP(uint32_t, p, old, (uint32_t)PF32(fminf(F32(cur), F32(v))));
    else CAS_LOOP(uint32_t, p, old, cur < v ? cur : v);
    return old;
  case AOP_MAX:
    if (t.kind == TK_S) CAS_LOOP(uint32_t, p, old, (int32_t)cur > (int32_t)v ? cur : v);
    else if (t.kind == TK_F) CAS_LOOP(uint32_t, p, old, (uint32_t)PF32(fmaxf(F32(cur), F32(v))));
    else CAS_LOOP(uint32_t, p, old, cur > v ? cur : v);
    return old;
  default: return 0;
  }
}

static uint64_t atomic64(void *p, int aop, ptx_type t, uint64_t v, uint64_t c) {
  uint64_t old;
  switch (aop) {
  case AOP_ADD:
    if (t.kind == TK_F) {
      CAS_LOOP(uint64_t, p, old, PF64(F64(cur) + F64(v)));
      return old;
    }
    return __atomic_fetch_add((uint64_t *)p, v, __ATOMIC_SEQ_CST);
  case AOP_AND: return __atomic_fetch_and((uint64_t *)p, v, __ATOMIC_SEQ_CST);
  case AOP_OR: return __atomic_fetch_or((uint64_t *)p, v, __ATOMIC_SEQ_CST);
  case AOP_XOR: return __atomic_fetch_xor((uint64_t *)p, v, __ATOMIC_SEQ_CST);
  case AOP_EXCH: return __atomic_exchange_n((uint64_t *)p, v, __ATOMIC_SEQ_CST);
  case AOP_CAS:
    old = v;
    __atomic_compare_exchange_n((uint64_t *)p, &old, c, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return old;
  case AOP_MIN:
    if (t.kind == TK_S) CAS_LOOP(uint64_t, p, old, (int64_t)cur < (int64_t)v ? cur : v);
    else if (t.kind == TK_F) CAS_LOOP(uint64_t, p, old, PF64(fmin(F64(cur), F64(v))));
    else CAS_LOOP(uint64_t, p, old, cur < v ? cur : v);
    return old;
  case AOP_MAX:
    if (t.kind == TK_S) CAS_LOOP(uint64_t, p, old, (int64_t)cur > (int64_t)v ? cur : v);
    else if (t.kind == TK_F) CAS_LOOP(uint64_t, p, old, PF64(fmax(F64(cur), F64(v))));
    else CAS_LOOP(uint64_t, p, old, cur > v ? cur : v);
    return old;
  default: return 0;
  }
}

/* atom: d, [a], b[, c]; red: [a], b */
static ptx_status do_atom(block *b, warp *w, const ptx_ins *ins, uint32_t em) {
  bool red = ins->op == OP_RED;
  const ptx_operand *a = &ins->o[red ? 0 : 1];
  const uint64_t *v = src(b, w, &ins->o[red ? 1 : 2], 1, em);
  const uint64_t *c = ins->cmp == AOP_CAS ? src(b, w, &ins->o[3], 2, em) : v;
  uint64_t *d = red ? b->sink : dst(b, w, &ins->o[0]);
  int sp = addr_space(ins, a);
  FOR_LANES(em) {
    unsigned char *p = host_addr(b, w, sp, addr_of(w, a, l), ins->t.bytes, l);
    if (!p) return PTX_ILLEGAL_ADDRESS;
    if ((uintptr_t)p % ins->t.bytes) return PTX_MISALIGNED;
    if (ins->t.bytes == 4) d[l] = atomic32(p, ins->cmp, ins->t, (uint32_t)v[l], (uint32_t)c[l]);
    else if (ins->t.bytes == 8) d[l] = atomic64(p, ins->cmp, ins->t, v[l], c[l]);
    else return PTX_ILLEGAL_ADDRESS;
  }
  return PTX_OK;
}

/* ---- arithmetic ------------------------------------------------------------------------ */

static inline float f32_min(float a, float b, bool nan) {
  if (isnan(a) || isnan(b)) {
    if (nan || (isnan(a) && isnan(b))) return F32(0x7fffffff);
    return isnan(a) ? b : a;
  }
  if (a == b) return signbit(a) ? a : b; /* -0 < +0 */
  return a < b ? a : b;
}
static inline float f32_max(float a, float b, bool nan) {
  if (isnan(a) || isnan(b)) {
    if (nan || (isnan(a) && isnan(b))) return F32(0x7fffffff);
    return isnan(a) ? b : a;
  }
  if (a == b) return signbit(a) ? b : a;
  return a > b ? a : b;
}
static inline double f64_min(double a, double b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? F64(0x7fffffffffffffffull) : isnan(a) ? b : a;
  if (a == b) return signbit(a) ? a : b;
  return a < b ? a : b;
}
static inline double f64_max(double a, double b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? F64(0x7fffffffffffffffull) : isnan(a) ? b : a;
  if (a == b) return signbit(a) ? b : a;
  return a > b ? a : b;
}

/* .sat clamps to [+0.0, 1.0]: NaN and -0.0 become +0.0, as on NVIDIA's GPUs. */
static inline float sat32(float f) { return isnan(f) ? 0.0f : f <= 0.0f ? 0.0f : f > 1.0f ? 1.0f : f; }
static inline double sat64(double f) { return isnan(f) ? 0.0 : f <= 0.0 ? 0.0 : f > 1.0 ? 1.0 : f; }

/* A float result at the instruction's type, with .ftz and .sat. */
static inline uint64_t fres32(const ptx_ins *ins, float f) {
  if (ins->mods & M_FTZ) f = ftz32(f);
  if (ins->mods & M_SAT) f = sat32(f);
  if (isnan(f)) return 0x7fffffff; /* the canonical NaN the GPU produces */
  return PF32(f);
}
static inline uint64_t fres64(const ptx_ins *ins, double f) {
  if (ins->mods & M_SAT) f = sat64(f);
  return PF64(f);
}
static inline float fin32(const ptx_ins *ins, uint64_t v) {
  float f = F32(v);
  return ins->mods & M_FTZ ? ftz32(f) : f;
}

static bool compare_f(int cmp, double a, double b) {
  bool un = isnan(a) || isnan(b);
  switch (cmp) {
  case CMP_EQ: return !un && a == b;
  case CMP_NE: return !un && a != b;
  case CMP_LT: return !un && a < b;
  case CMP_LE: return !un && a <= b;
  case CMP_GT: return !un && a > b;
  case CMP_GE: return !un && a >= b;
  case CMP_EQU: return un || a == b;
  case CMP_NEU: return un || a != b;
  case CMP_LTU: return un || a < b;
  case CMP_LEU: return un || a <= b;
  case CMP_GTU: return un || a > b;
  case CMP_GEU: return un || a >= b;
  case CMP_NUM: return !un;
  case CMP_NAN: return un;
  default: return false;
  }
}

static bool compare_i(int cmp, ptx_type t, uint64_t x, uint64_t y) {
  uint64_t ua = U(x, t.bytes), ub = U(y, t.bytes);
  int64_t sa = S(x, t.bytes), sb = S(y, t.bytes);
  bool sgn = t.kind == TK_S;
  switch (cmp) {
  case CMP_EQ: return ua == ub;
  case CMP_NE: return ua != ub;
  case CMP_LT: return sgn ? sa < sb : ua < ub;
  case CMP_LE: return sgn ? sa <= sb : ua <= ub;
  case CMP_GT: return sgn ? sa > sb : ua > ub;
  case CMP_GE: return sgn ? sa >= sb : ua >= ub;
  case CMP_LO: return ua < ub;
  case CMP_LS: return ua <= ub;
  case CMP_HI: return ua > ub;
  case CMP_HS: return ua >= ub;
  default: return false;
  }
}

static bool compare(const ptx_ins *ins, ptx_type t, uint64_t a, uint64_t b) {
  if (t.kind == TK_F) {
    if (t.bytes == 2) return compare_f(ins->cmp, H2D(a), H2D(b));
    if (t.bytes == 4) {
      float x = F32(a), y = F32(b);
      if (ins->mods & M_FTZ) {
        x = ftz32(x);
        y = ftz32(y);
      }
      return compare_f(ins->cmp, x, y);
    }
    return compare_f(ins->cmp, F64(a), F64(b));
  }
  if (t.kind == TK_PRED) return compare_i(ins->cmp, (ptx_type){TK_U, 1}, a != 0, b != 0);
  return compare_i(ins->cmp, t, a, b);
}

static inline bool boolop(int op, bool r, bool c) {
  switch (op) {
  case BOOL_AND: return r && c;
  case BOOL_OR: return r || c;
  case BOOL_XOR: return r != c;
  default: return r;
  }
}

/* float -> integer with PTX's saturation: NaN is 0, out of range clamps. */
static uint64_t f2i(double x, ptx_type t, int rnd) {
  switch (rnd) {
  case RND_RNI: x = nearbyint(x); break;
  case RND_RMI: x = floor(x); break;
  case RND_RPI: x = ceil(x); break;
  default: x = trunc(x); break;
  }
  if (isnan(x)) return 0;
  if (t.kind == TK_S) {
    double lo = -ldexp(1.0, t.bytes * 8 - 1), hi = ldexp(1.0, t.bytes * 8 - 1);
    if (x <= lo) return U((uint64_t)(int64_t)lo, t.bytes);
    if (x >= hi) return U((uint64_t)(((unsigned __int128)1 << (t.bytes * 8 - 1)) - 1), t.bytes);
    return U((uint64_t)(int64_t)x, t.bytes);
  }
  double hi = ldexp(1.0, t.bytes * 8);
  if (x <= 0) return 0;
  if (x >= hi) return mask_of(t.bytes);
  return (uint64_t)x;
}

static uint64_t i_sat(int64_t v, ptx_type t) {
  if (t.bytes >= 8) return (uint64_t)v;
  if (t.kind == TK_S) {
    int64_t lo = -(1ll << (t.bytes * 8 - 1)), hi = (1ll << (t.bytes * 8 - 1)) - 1;
    return U((uint64_t)(v < lo ? lo : v > hi ? hi : v), t.bytes);
  }
  int64_t hi = (int64_t)mask_of(t.bytes);
  return (uint64_t)(v < 0 ? 0 : v > hi ? hi : v);
}

static uint64_t do_cvt1(const ptx_ins *ins, uint64_t a) {
  ptx_type d = ins->t, s = ins->t2;
  if ((s.kind == TK_F && s.bytes == 2) || (d.kind == TK_F && d.bytes == 2)) {
    /* conversions from or to half: through double, one rounding */
    double x;
    if (s.kind == TK_F) x = s.bytes == 2 ? H2D(a) : s.bytes == 4 ? (double)fin32(ins, a) : F64(a);
    else x = s.kind == TK_S ? (double)S(a, s.bytes) : (double)U(a, s.bytes);
    if (d.kind != TK_F) return f2i(x, d, ins->rnd);
    switch (ins->rnd) {
    case RND_RNI: x = nearbyint(x); break;
    case RND_RZI: x = trunc(x); break;
    case RND_RMI: x = floor(x); break;
    case RND_RPI: x = ceil(x); break;
    default: break;
    }
    if (ins->mods & M_SAT) x = sat64(x);
    if (d.bytes == 4) return fres32(ins, (float)x);
    if (d.bytes == 8) return fres64(ins, x);
    int old = fegetround();
    if (ins->rnd >= RND_RZ && ins->rnd <= RND_RP) fesetround(fe_mode(ins->rnd));
    uint64_t r = D2H(x);
    fesetround(old);
    return r;
  }
  if (s.kind == TK_F && d.kind == TK_F) {
    double x = s.bytes == 4 ? (double)fin32(ins, a) : F64(a);
    if (ins->rnd >= RND_RNI) {
      switch (ins->rnd) {
      case RND_RNI: x = nearbyint(x); break;
      case RND_RZI: x = trunc(x); break;
      case RND_RMI: x = floor(x); break;
      default: x = ceil(x); break;
      }
    }
    if (d.bytes == 4) {
      float f;
      if (s.bytes == 8 && ins->rnd >= RND_RZ && ins->rnd <= RND_RP) {
        int old = fegetround();
        fesetround(fe_mode(ins->rnd));
        volatile double vx = x;
        f = (float)vx;
        fesetround(old);
      } else {
        f = (float)x;
      }
      return fres32(ins, f);
    }
    return fres64(ins, x);
  }
  if (s.kind == TK_F) { /* float -> int */
    double x = s.bytes == 4 ? (double)fin32(ins, a) : F64(a);
    return f2i(x, d, ins->rnd);
  }
  if (d.kind == TK_F) { /* int -> float */
    int old = 0;
    bool mode = ins->rnd >= RND_RZ && ins->rnd <= RND_RP;
    if (mode) {
      old = fegetround();
      fesetround(fe_mode(ins->rnd));
    }
    uint64_t r;
    if (s.kind == TK_S) {
      volatile int64_t v = S(a, s.bytes);
      r = d.bytes == 4 ? fres32(ins, (float)v) : fres64(ins, (double)v);
    } else {
      volatile uint64_t v = U(a, s.bytes);
      r = d.bytes == 4 ? fres32(ins, (float)v) : fres64(ins, (double)v);
    }
    if (mode) fesetround(old);
    return r;
  }
  /* int -> int */
  int64_t v = s.kind == TK_S ? S(a, s.bytes) : (int64_t)U(a, s.bytes);
  if (ins->mods & M_SAT) {
    if (s.kind != TK_S && s.bytes == 8 && (uint64_t)v > (uint64_t)INT64_MAX) {
      return d.kind == TK_S ? U(mask_of(d.bytes) >> 1, d.bytes) : mask_of(d.bytes);
    }
    return i_sat(v, d);
  }
  if (d.kind == TK_S) return (uint64_t)S((uint64_t)v, d.bytes);
  return U((uint64_t)v, d.bytes);
}

static uint64_t mulhi(ptx_type t, uint64_t a, uint64_t b) {
  if (t.bytes == 8) {
    if (t.kind == TK_S) return (uint64_t)(((__int128)(int64_t)a * (int64_t)b) >> 64);
    return (uint64_t)(((unsigned __int128)a * b) >> 64);
  }
  int bits = t.bytes * 8;
  if (t.kind == TK_S) return U((uint64_t)((S(a, t.bytes) * S(b, t.bytes)) >> bits), t.bytes);
  return U((U(a, t.bytes) * U(b, t.bytes)) >> bits, t.bytes);
}

static uint64_t mulwide(ptx_type t, uint64_t a, uint64_t b) {
  if (t.kind == TK_S) return (uint64_t)(S(a, t.bytes) * S(b, t.bytes));
  return U(a, t.bytes) * U(b, t.bytes);
}

/* Integer binary operations (add sub mul div rem min max) at type t. */
static uint64_t int_bin(const ptx_ins *ins, uint64_t a, uint64_t b) {
  ptx_type t = ins->t;
  int n = t.bytes;
  bool sg = t.kind == TK_S;
  switch (ins->op) {
  case OP_ADD:
    if (ins->mods & M_SAT) return i_sat(S(a, 4) + S(b, 4), t);
    return U(a + b, n);
  case OP_SUB:
    if (ins->mods & M_SAT) return i_sat(S(a, 4) - S(b, 4), t);
    return U(a - b, n);
  case OP_MUL:
    if (ins->mods & M_HI) return mulhi(t, a, b);
    if (ins->mods & M_WIDE) return mulwide(t, a, b);
    return U(a * b, n);
  case OP_DIV:
    if (sg) {
      int64_t x = S(a, n), y = S(b, n);
      if (y == 0) return mask_of(n); /* what the GPU's division sequence gives: -1 */
      if (y == -1) return U((uint64_t)0 - (uint64_t)x, n); /* INT_MIN / -1 wraps */
      return U((uint64_t)(x / y), n);
    } else {
      uint64_t x = U(a, n), y = U(b, n);
      return y ? x / y : mask_of(n);
    }
  case OP_REM:
    if (sg) {
      int64_t x = S(a, n), y = S(b, n);
      if (y == 0) return U((uint64_t)x, n);
      if (y == -1) return 0;
      return U((uint64_t)(x % y), n);
    } else {
      uint64_t x = U(a, n), y = U(b, n);
      /* By zero: all ones, like the quotient (the ISA leaves it to the
       * machine; an H200 gives 0xffffffff for rem.u32). */
      return y ? x % y : mask_of(n);
    }
  case OP_MIN:
    if (sg) return S(a, n) < S(b, n) ? U(a, n) : U(b, n);
    return U(a, n) < U(b, n) ? U(a, n) : U(b, n);
  case OP_MAX:
    if (sg) return S(a, n) > S(b, n) ? U(a, n) : U(b, n);
    return U(a, n) > U(b, n) ? U(a, n) : U(b, n);
  case OP_AND: return a & b;
  case OP_OR: return a | b;
  case OP_XOR: return a ^ b;
  default: return 0;
  }
}

static uint64_t float_bin(const ptx_ins *ins, uint64_t a, uint64_t b) {
  if (ins->t.bytes == 2) {
    double x = H2D(a), y = H2D(b), r;
    switch (ins->op) {
    case OP_ADD: r = x + y; break;
    case OP_SUB: r = x - y; break;
    case OP_MUL: r = x * y; break;
    case OP_DIV: r = x / y; break;
    case OP_MIN: r = f64_min(x, y); break;
    case OP_MAX: r = f64_max(x, y); break;
    default: r = copysign(y, x); break;
    }
    if (ins->mods & M_SAT) r = sat64(r);
    return D2H(r);
  }
  if (ins->t.bytes == 4) {
    float x = fin32(ins, a), y = fin32(ins, b), r;
    switch (ins->op) {
    case OP_ADD: r = x + y; break;
    case OP_SUB: r = x - y; break;
    case OP_MUL: r = x * y; break;
    case OP_DIV: r = x / y; break;
    case OP_MIN: r = f32_min(x, y, ins->mods & M_NAN); break;
    case OP_MAX: r = f32_max(x, y, ins->mods & M_NAN); break;
    case OP_COPYSIGN: r = copysignf(y, x); break;
    default: r = 0;
    }
    return fres32(ins, r);
  }
  double x = F64(a), y = F64(b), r;
  switch (ins->op) {
  case OP_ADD: r = x + y; break;
  case OP_SUB: r = x - y; break;
  case OP_MUL: r = x * y; break;
  case OP_DIV: r = x / y; break;
  case OP_MIN: r = f64_min(x, y); break;
  case OP_MAX: r = f64_max(x, y); break;
  case OP_COPYSIGN: r = copysign(y, x); break;
  default: r = 0;
  }
  return fres64(ins, r);
}

static uint64_t float_un(const ptx_ins *ins, uint64_t a) {
  if (ins->t.bytes == 2) {
    if (ins->op == OP_NEG) return (a ^ 0x8000u) & 0xffffu;
    if (ins->op == OP_ABS) return a & 0x7fffu;
    double x = H2D(a), r;
    switch (ins->op) {
    case OP_RCP: r = 1.0 / x; break;
    case OP_SQRT: r = sqrt(x); break;
    case OP_RSQRT: r = 1.0 / sqrt(x); break;
    case OP_EX2: r = exp2(x); break;
    case OP_LG2: r = log2(x); break;
    case OP_SIN: r = sin(x); break;
    case OP_COS: r = cos(x); break;
    case OP_TANH: r = tanh(x); break;
    default: r = 0;
    }
    return D2H(r);
  }
  if (ins->t.bytes == 4) {
    float x = fin32(ins, a), r;
    switch (ins->op) {
    case OP_ABS: return fres32(ins, fabsf(x)) | (isnan(x) ? 0 : 0);
    case OP_NEG: r = -x; if (isnan(x)) return PF32(r); break;
    case OP_RCP: r = 1.0f / x; break;
    case OP_SQRT: r = sqrtf(x); break;
    case OP_RSQRT: r = 1.0f / sqrtf(x); break;
    case OP_EX2: r = exp2f(x); break;
    case OP_LG2: r = log2f(x); break;
    case OP_SIN: r = sinf(x); break;
    case OP_COS: r = cosf(x); break;
    case OP_TANH: r = tanhf(x); break;
    default: r = 0;
    }
    return fres32(ins, r);
  }
  double x = F64(a), r;
  switch (ins->op) {
  case OP_ABS: r = fabs(x); break;
  case OP_NEG: r = -x; break;
  case OP_RCP: r = 1.0 / x; break;
  case OP_SQRT: r = sqrt(x); break;
  case OP_RSQRT: r = 1.0 / sqrt(x); break;
  case OP_EX2: r = exp2(x); break;
  case OP_LG2: r = log2(x); break;
  case OP_SIN: r = sin(x); break;
  case OP_COS: r = cos(x); break;
  case OP_TANH: r = tanh(x); break;
  default: r = 0;
  }
  return fres64(ins, r);
}

static uint64_t shift(const ptx_ins *ins, uint64_t a, uint64_t b) {
  int bits = ins->t.bytes * 8;
  uint32_t n = (uint32_t)b;
  if (ins->op == OP_SHL) return n >= (uint32_t)bits ? 0 : U(a << n, ins->t.bytes);
  if (ins->t.kind == TK_S) {
    int64_t x = S(a, ins->t.bytes);
    return U((uint64_t)(x >> (n >= (uint32_t)bits ? bits - 1 : (int)n)), ins->t.bytes);
  }
  return n >= (uint32_t)bits ? 0 : U(a, ins->t.bytes) >> n;
}

static uint64_t bfe(ptx_type t, uint64_t a, uint32_t pos, uint32_t len) {
  int bits = t.bytes * 8;
  pos &= 0xff;
  len &= 0xff;
  uint64_t x = U(a, t.bytes);
  bool sbit;
  if (t.kind == TK_S) {
    uint32_t top = pos + len - 1 > (uint32_t)bits - 1 ? (uint32_t)bits - 1 : pos + len - 1;
    sbit = len == 0 ? false : (x >> top) & 1;
  } else {
    sbit = false;
  }
  uint64_t r = 0;
  for (uint32_t i = 0; i < (uint32_t)bits; i++) {
    bool bit = i < len && pos + i < (uint32_t)bits ? (x >> (pos + i)) & 1 : sbit;
    r |= (uint64_t)bit << i;
  }
  return r;
}

static uint64_t bfi(ptx_type t, uint64_t a, uint64_t b, uint32_t pos, uint32_t len) {
  int bits = t.bytes * 8;
  pos &= 0xff;
  len &= 0xff;
  uint64_t r = U(b, t.bytes);
  for (uint32_t i = 0; i < len && pos + i < (uint32_t)bits; i++) {
    r = (r & ~(1ull << (pos + i))) | (((a >> i) & 1) << (pos + i));
  }
  return r;
}

static uint32_t prmt(uint32_t a, uint32_t b, uint32_t c) {
  uint64_t x = ((uint64_t)b << 32) | a;
  uint32_t r = 0;
  for (int i = 0; i < 4; i++) {
    uint32_t sel = (c >> (4 * i)) & 0xf;
    uint32_t byte = (uint32_t)(x >> (8 * (sel & 7))) & 0xff;
    if (sel & 8) byte = (byte & 0x80) ? 0xff : 0;
    r |= byte << (8 * i);
  }
  return r;
}

static bool testp(int cls, ptx_type t, uint64_t a) {
  double x = t.bytes == 4 ? (double)F32(a) : F64(a);
  int c = t.bytes == 4 ? fpclassify(F32(a)) : fpclassify(x);
  switch (cls) {
  case TP_FINITE: return isfinite(x);
  case TP_INFINITE: return isinf(x);
  case TP_NUMBER: return !isnan(x);
  case TP_NOTANUMBER: return isnan(x);
  case TP_NORMAL: return c == FP_NORMAL;
  case TP_SUBNORMAL: return c == FP_SUBNORMAL;
  default: return false;
  }
}

/* ---- warp-level operations ---------------------------------------------------------------- */

static void do_shfl(block *b, warp *w, const ptx_ins *ins, uint32_t em) {
  /* every lane's value: a lane may read one outside em */
  const uint64_t *a = src(b, w, &ins->o[1], 1, 0xffffffffu);
  const uint64_t *bb = src(b, w, &ins->o[2], 2, em);
  const uint64_t *c = src(b, w, &ins->o[3], 3, em);
  uint64_t vals[PTX_WARP];
  memcpy(vals, a, sizeof vals); /* every lane's a before anyone's d is written */
  uint64_t *d = dst(b, w, &ins->o[0]);
  uint64_t *p = ins->o[5].kind == OK_REG ? dst(b, w, &ins->o[5]) : b->sink;
  FOR_LANES(em) {
    uint32_t bval = (uint32_t)bb[l] & 0x1f, cval = (uint32_t)c[l] & 0x1f;
    uint32_t segmask = ((uint32_t)c[l] >> 8) & 0x1f;
    int lane = l;
    int maxl = (lane & (int)segmask) | ((int)cval & ~(int)segmask);
    int minl = lane & (int)segmask;
    int j;
    bool ok;
    switch (ins->cmp) {
    case SH_UP: j = lane - (int)bval; ok = j >= maxl; break;
    case SH_DOWN: j = lane + (int)bval; ok = j <= maxl; break;
    case SH_BFLY: j = lane ^ (int)bval; ok = j <= maxl; break;
    default: j = minl | ((int)bval & ~(int)segmask); ok = j <= maxl; break;
    }
    if (!ok) j = lane;
    d[l] = U(vals[j], 4);
    p[l] = ok;
  }
}

static void do_vote(block *b, warp *w, const ptx_ins *ins, uint32_t em) {
  const uint64_t *pr = src(b, w, &ins->o[1], 1, em);
  const uint64_t *mm = src(b, w, &ins->o[2], 2, em);
  uint64_t *d = dst(b, w, &ins->o[0]);
  uint32_t ballot[PTX_WARP];
  uint32_t group = em;
  FOR_LANES(em) {
    uint32_t members = (uint32_t)mm[l] & group;
    uint32_t bits = 0;
    FOR_LANES(members) {
      if (pr[l]) bits |= 1u << l;
    }
    ballot[l] = bits;
  }
  FOR_LANES(em) {
    uint32_t members = (uint32_t)mm[l] & group;
    switch (ins->cmp) {
    case VT_BALLOT: d[l] = ballot[l]; break;
    case VT_ALL: d[l] = ballot[l] == members; break;
    case VT_ANY: d[l] = ballot[l] != 0; break;
    default: d[l] = ballot[l] == 0 || ballot[l] == members; break;
    }
  }
}

static void do_match(block *b, warp *w, const ptx_ins *ins, uint32_t em) {
  const uint64_t *a = src(b, w, &ins->o[1], 1, em);
  const uint64_t *mm = src(b, w, &ins->o[2], 2, em);
  uint64_t vals[PTX_WARP];
  memcpy(vals, a, sizeof vals);
  uint64_t *d = dst(b, w, &ins->o[0]);
  uint64_t *p = ins->o[5].kind == OK_REG ? dst(b, w, &ins->o[5]) : b->sink;
  FOR_LANES(em) {
    uint32_t members = (uint32_t)mm[l] & em;
    uint32_t same = 0;
    uint64_t mine = U(vals[l], ins->t.bytes);
    for (uint32_t m = members; m; m &= m - 1) {
      int k = __builtin_ctz(m);
      if (U(vals[k], ins->t.bytes) == mine) same |= 1u << k;
    }
    if (ins->cmp == 1) {
      d[l] = same;
    } else {
      d[l] = same == members ? members : 0;
      p[l] = same == members;
    }
  }
}

static void do_redux(block *b, warp *w, const ptx_ins *ins, uint32_t em) {
  const uint64_t *a = src(b, w, &ins->o[1], 1, em);
  const uint64_t *mm = src(b, w, &ins->o[2], 2, em);
  uint64_t vals[PTX_WARP];
  memcpy(vals, a, sizeof vals);
  uint64_t *d = dst(b, w, &ins->o[0]);
  FOR_LANES(em) {
    uint32_t members = (uint32_t)mm[l] & em;
    uint64_t acc = 0;
    bool first = true;
    for (uint32_t m = members; m; m &= m - 1) {
      uint64_t v = U(vals[__builtin_ctz(m)], 4);
      if (first) {
        acc = v;
        first = false;
        continue;
      }
      switch (ins->cmp) {
      case AOP_ADD: acc = U(acc + v, 4); break;
      case AOP_AND: acc &= v; break;
      case AOP_OR: acc |= v; break;
      case AOP_XOR: acc ^= v; break;
      case AOP_MIN: acc = ins->t.kind == TK_S ? (S(acc, 4) < S(v, 4) ? acc : v) : (acc < v ? acc : v); break;
      case AOP_MAX: acc = ins->t.kind == TK_S ? (S(acc, 4) > S(v, 4) ? acc : v) : (acc > v ? acc : v); break;
      default: break;
      }
    }
    d[l] = acc;
  }
}

/* ---- one instruction ------------------------------------------------------------------------- */

/* Extended-precision arithmetic through the carry flag: add.cc, addc[.cc],
 * sub.cc, subc[.cc] (the flag is a borrow there), mad{.lo,.hi}.cc, madc. */
static void do_carry(block *b, warp *w, const ptx_ins *ins, uint32_t em) {
  const uint64_t *a = src(b, w, &ins->o[1], 1, em);
  const uint64_t *c = src(b, w, &ins->o[2], 2, em);
  const uint64_t *e = ins->op == OP_MAD || ins->op == OP_MADC ? src(b, w, &ins->o[3], 3, em) : NULL;
  uint64_t *d = dst(b, w, &ins->o[0]);
  int n = ins->t.bytes;
  bool in = ins->op == OP_ADDC || ins->op == OP_SUBC || ins->op == OP_MADC;
  bool out = ins->mods & M_CC;
  FOR_LANES(em) {
    unsigned __int128 x = U(a[l], n), y = U(c[l], n), r;
    unsigned cin = in ? w->cf[l] : 0;
    unsigned cout;
    if (ins->op == OP_SUB || ins->op == OP_SUBC) {
      r = x - y - cin;
      cout = x < y + cin; /* borrow */
    } else {
      if (e) {
        unsigned __int128 pr = x * y;
        x = ins->mods & M_HI ? pr >> (n * 8) : pr & mask_of(n);
        y = U(e[l], n);
      }
      r = x + y + cin;
      cout = (unsigned)(r >> (n * 8)) & 1;
    }
    d[l] = U((uint64_t)r, n);
    if (out) w->cf[l] = (uint8_t)cout;
  }
}

/* Everything but control flow (bra, call, ret, exit, bar), for the lanes in em. */
static ptx_status exec1(block *b, warp *w, const ptx_ins *ins, uint32_t em) {
  const ptx_type t = ins->t;
  if ((ins->mods & M_CC) || ins->op == OP_ADDC || ins->op == OP_SUBC || ins->op == OP_MADC) {
    do_carry(b, w, ins, em);
    return PTX_OK;
  }
  switch (ins->op) {
  case OP_NOP: return PTX_OK;
  case OP_LD: return do_ld(b, w, ins, em);
  case OP_ST: return do_st(b, w, ins, em);
  case OP_ATOM:
  case OP_RED: return do_atom(b, w, ins, em);
  case OP_TRAP: return PTX_TRAP;
  case OP_SHFL: do_shfl(b, w, ins, em); return PTX_OK;
  case OP_VOTE: do_vote(b, w, ins, em); return PTX_OK;
  case OP_MATCH: do_match(b, w, ins, em); return PTX_OK;
  case OP_REDUX: do_redux(b, w, ins, em); return PTX_OK;
  case OP_BARWARP: return PTX_OK;
  case OP_ACTIVEMASK: {
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) d[l] = em;
    return PTX_OK;
  }
  case OP_MOV: {
    if (ins->o[0].kind == OK_VEC) { /* unpack: mov.b64 {%r1,%r2}, %rd */
      const uint64_t *a = src(b, w, &ins->o[1], 1, em);
      int n = ins->o[0].nvec, bits = t.bytes * 8 / n;
      FOR_LANES(em) {
        for (int i = 0; i < n; i++) {
          int r = ins->o[0].vregs[i];
          if (r >= 0) w->r[(size_t)r * PTX_WARP + l] = (a[l] >> (i * bits)) & mask_of(bits / 8);
        }
      }
      return PTX_OK;
    }
    uint64_t *d = dst(b, w, &ins->o[0]);
    if (ins->o[1].kind == OK_VEC) { /* pack */
      int n = ins->o[1].nvec, bits = t.bytes * 8 / n;
      FOR_LANES(em) {
        uint64_t v = 0;
        for (int i = 0; i < n; i++) {
          int r = ins->o[1].vregs[i];
          uint64_t x = r >= 0 ? w->r[(size_t)r * PTX_WARP + l] : 0;
          v |= (x & mask_of(bits / 8)) << (i * bits);
        }
        d[l] = v;
      }
      return PTX_OK;
    }
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    uint64_t m = t.kind == TK_PRED ? 1 : mask_of(t.bytes);
    if (t.kind == TK_PRED) FOR_LANES(em) d[l] = a[l] != 0;
    else FOR_LANES(em) d[l] = a[l] & m;
    return PTX_OK;
  }
  case OP_CVTA: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    bool to = ins->mods & M_TO;
    FOR_LANES(em) {
      uint64_t base = 0;
      switch (ins->space) {
      case SP_SHARED: base = (uint64_t)(uintptr_t)b->shared; break;
      case SP_LOCAL: base = (uint64_t)(uintptr_t)(b->local + (size_t)(w->id * PTX_WARP + (unsigned)l) * b->local_size); break;
      case SP_PARAM_KERNEL: base = (uint64_t)(uintptr_t)b->params; break;
      default: break;
      }
      d[l] = U(to ? a[l] - base : a[l] + base, t.bytes);
    }
    return PTX_OK;
  }
  case OP_CVT: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) d[l] = do_cvt1(ins, a[l]);
    return PTX_OK;
  }
  case OP_ADD:
  case OP_SUB:
  case OP_MUL:
  case OP_DIV:
  case OP_REM:
  case OP_MIN:
  case OP_MAX:
  case OP_AND:
  case OP_OR:
  case OP_XOR:
  case OP_COPYSIGN: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    if (t.kind == TK_F && ins->op != OP_AND && ins->op != OP_OR && ins->op != OP_XOR) {
      bool mode = ins->rnd >= RND_RZ && ins->rnd <= RND_RP;
      int old = 0;
      if (mode) {
        old = fegetround();
        fesetround(fe_mode(ins->rnd));
      }
      FOR_LANES(em) d[l] = float_bin(ins, a[l], c[l]);
      if (mode) fesetround(old);
    } else if (t.kind == TK_PRED) {
      FOR_LANES(em) d[l] = int_bin(ins, a[l] != 0, c[l] != 0) & 1;
    } else if (t.bytes == 4 && !(ins->mods & (M_HI | M_WIDE | M_SAT)) &&
               (ins->op == OP_ADD || ins->op == OP_SUB || ins->op == OP_MUL)) {
      /* the common cases (index and address arithmetic), kept tight */
      if (ins->op == OP_ADD) FOR_LANES(em) d[l] = (uint32_t)(a[l] + c[l]);
      else if (ins->op == OP_SUB) FOR_LANES(em) d[l] = (uint32_t)(a[l] - c[l]);
      else FOR_LANES(em) d[l] = (uint32_t)(a[l] * c[l]);
    } else if (t.bytes == 8 && !(ins->mods & (M_HI | M_WIDE | M_SAT)) &&
               (ins->op == OP_ADD || ins->op == OP_SUB || ins->op == OP_MUL)) {
      if (ins->op == OP_ADD) FOR_LANES(em) d[l] = a[l] + c[l];
      else if (ins->op == OP_SUB) FOR_LANES(em) d[l] = a[l] - c[l];
      else FOR_LANES(em) d[l] = a[l] * c[l];
    } else if (t.bytes == 4 && ins->op == OP_MUL && (ins->mods & M_WIDE)) {
      if (t.kind == TK_S) FOR_LANES(em) d[l] = (uint64_t)((int64_t)(int32_t)a[l] * (int32_t)c[l]);
      else FOR_LANES(em) d[l] = (uint64_t)(uint32_t)a[l] * (uint32_t)c[l];
    } else {
      FOR_LANES(em) d[l] = int_bin(ins, a[l], c[l]);
    }
    return PTX_OK;
  }
  case OP_MAD:
  case OP_FMA:
  case OP_MAD24: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    const uint64_t *e = src(b, w, &ins->o[3], 3, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    if (t.kind == TK_F) {
      bool mode = ins->rnd >= RND_RZ && ins->rnd <= RND_RP;
      int old = 0;
      if (mode) {
        old = fegetround();
        fesetround(fe_mode(ins->rnd));
      }
      if (t.bytes == 2) FOR_LANES(em) d[l] = D2H(fma(H2D(a[l]), H2D(c[l]), H2D(e[l])));
      else if (t.bytes == 4) FOR_LANES(em) d[l] = fres32(ins, fmaf(fin32(ins, a[l]), fin32(ins, c[l]), fin32(ins, e[l])));
      else FOR_LANES(em) d[l] = fres64(ins, fma(F64(a[l]), F64(c[l]), F64(e[l])));
      if (mode) fesetround(old);
      return PTX_OK;
    }
    if (ins->op == OP_MAD24) {
      FOR_LANES(em) {
        int64_t x = t.kind == TK_S ? S(a[l], 3) : (int64_t)U(a[l], 3);
        int64_t y = t.kind == TK_S ? S(c[l], 3) : (int64_t)U(c[l], 3);
        uint64_t pr = (uint64_t)(x * y);
        if (ins->mods & M_HI) pr >>= 16;
        d[l] = U(pr + e[l], 4);
      }
      return PTX_OK;
    }
    FOR_LANES(em) {
      uint64_t pr;
      if (ins->mods & M_HI) pr = mulhi(t, a[l], c[l]);
      else if (ins->mods & M_WIDE) pr = mulwide(t, a[l], c[l]);
      else pr = a[l] * c[l];
      int n = ins->mods & M_WIDE ? t.bytes * 2 : t.bytes;
      if (ins->mods & M_SAT) d[l] = i_sat(S(pr, 4) + S(e[l], 4), t);
      else d[l] = U(pr + e[l], n);
    }
    return PTX_OK;
  }
  case OP_SAD: { /* d = c + |a - b| */
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    const uint64_t *e = src(b, w, &ins->o[3], 3, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    int n = t.bytes;
    FOR_LANES(em) {
      uint64_t diff;
      if (t.kind == TK_S) {
        int64_t x = S(a[l], n), y = S(c[l], n);
        diff = x > y ? (uint64_t)x - (uint64_t)y : (uint64_t)y - (uint64_t)x;
      } else {
        uint64_t x = U(a[l], n), y = U(c[l], n);
        diff = x > y ? x - y : y - x;
      }
      d[l] = U(e[l] + diff, n);
    }
    return PTX_OK;
  }
  case OP_MUL24: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) {
      int64_t x = t.kind == TK_S ? S(a[l], 3) : (int64_t)U(a[l], 3);
      int64_t y = t.kind == TK_S ? S(c[l], 3) : (int64_t)U(c[l], 3);
      uint64_t pr = (uint64_t)(x * y);
      d[l] = U(ins->mods & M_HI ? pr >> 16 : pr, 4);
    }
    return PTX_OK;
  }
  case OP_ABS:
  case OP_NEG:
  case OP_NOT:
  case OP_CNOT:
  case OP_RCP:
  case OP_SQRT:
  case OP_RSQRT:
  case OP_EX2:
  case OP_LG2:
  case OP_SIN:
  case OP_COS:
  case OP_TANH:
  case OP_POPC:
  case OP_CLZ:
  case OP_BREV:
  case OP_BFIND: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    int n = t.bytes, bits = n * 8;
    switch (ins->op) {
    case OP_ABS:
      if (t.kind == TK_F) break;
      FOR_LANES(em) {
        int64_t x = S(a[l], n);
        d[l] = U((uint64_t)(x < 0 ? -(uint64_t)x : (uint64_t)x), n);
      }
      return PTX_OK;
    case OP_NEG:
      if (t.kind == TK_F) break;
      FOR_LANES(em) d[l] = U(-a[l], n);
      return PTX_OK;
    case OP_NOT:
      if (t.kind == TK_PRED) FOR_LANES(em) d[l] = !a[l];
      else FOR_LANES(em) d[l] = U(~a[l], n);
      return PTX_OK;
    case OP_CNOT: FOR_LANES(em) d[l] = U(a[l], n) == 0; return PTX_OK;
    case OP_POPC: FOR_LANES(em) d[l] = (uint64_t)__builtin_popcountll(U(a[l], n)); return PTX_OK;
    case OP_CLZ:
      FOR_LANES(em) {
        uint64_t x = U(a[l], n);
        d[l] = x ? (uint64_t)(__builtin_clzll(x) - (64 - bits)) : (uint64_t)bits;
      }
      return PTX_OK;
    case OP_BREV:
      FOR_LANES(em) {
        uint64_t x = U(a[l], n), r = 0;
        for (int i = 0; i < bits; i++) r |= ((x >> i) & 1) << (bits - 1 - i);
        d[l] = r;
      }
      return PTX_OK;
    case OP_BFIND:
      FOR_LANES(em) {
        uint64_t x = U(a[l], n);
        if (t.kind == TK_S && S(x, n) < 0) x = U(~x, n);
        uint64_t r = x ? (uint64_t)(63 - __builtin_clzll(x)) : 0xffffffffu;
        if (x && (ins->mods & M_SHAMT)) r = (uint64_t)(bits - 1) - r;
        d[l] = r;
      }
      return PTX_OK;
    default: break;
    }
    bool mode = ins->rnd >= RND_RZ && ins->rnd <= RND_RP;
    int old = 0;
    if (mode) {
      old = fegetround();
      fesetround(fe_mode(ins->rnd));
    }
    FOR_LANES(em) d[l] = float_un(ins, a[l]);
    if (mode) fesetround(old);
    return PTX_OK;
  }
  case OP_SHL:
  case OP_SHR: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) d[l] = shift(ins, a[l], c[l]);
    return PTX_OK;
  }
  case OP_SHF: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    const uint64_t *e = src(b, w, &ins->o[3], 3, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) {
      uint64_t x = (U(c[l], 4) << 32) | U(a[l], 4);
      uint32_t n = (uint32_t)e[l];
      n = ins->mods & M_SHIFT_CLAMP ? (n > 32 ? 32 : n) : n & 31;
      d[l] = ins->mods & M_SHIFT_LEFT ? U((x << n) >> 32, 4) : U(x >> n, 4);
    }
    return PTX_OK;
  }
  case OP_BFE: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    const uint64_t *e = src(b, w, &ins->o[3], 3, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) d[l] = bfe(t, a[l], (uint32_t)c[l], (uint32_t)e[l]);
    return PTX_OK;
  }
  case OP_BFI: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    const uint64_t *e = src(b, w, &ins->o[3], 3, em);
    const uint64_t *f = src(b, w, &ins->o[4], 4, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) d[l] = bfi(t, a[l], c[l], (uint32_t)e[l], (uint32_t)f[l]);
    return PTX_OK;
  }
  case OP_PRMT: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    const uint64_t *e = src(b, w, &ins->o[3], 3, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) d[l] = prmt((uint32_t)a[l], (uint32_t)c[l], (uint32_t)e[l]);
    return PTX_OK;
  }
  case OP_LOP3: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    const uint64_t *e = src(b, w, &ins->o[3], 3, em);
    const uint64_t *f = src(b, w, &ins->o[4], 4, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) {
      uint32_t lut = (uint32_t)f[l], x = (uint32_t)a[l], y = (uint32_t)c[l], z = (uint32_t)e[l], r = 0;
      for (int i = 0; i < 8; i++) {
        if (!((lut >> i) & 1)) continue;
        uint32_t tx = (i & 4) ? x : ~x, ty = (i & 2) ? y : ~y, tz = (i & 1) ? z : ~z;
        r |= tx & ty & tz;
      }
      d[l] = r;
    }
    return PTX_OK;
  }
  case OP_SETP: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    const uint64_t *pc = ins->boolop ? src(b, w, &ins->o[3], 3, em) : NULL;
    uint64_t *d = dst(b, w, &ins->o[0]);
    uint64_t *q = ins->o[5].kind == OK_REG ? dst(b, w, &ins->o[5]) : NULL;
    FOR_LANES(em) {
      bool r = compare(ins, t, a[l], c[l]);
      bool cc = pc ? pc[l] != 0 : false;
      d[l] = boolop(ins->boolop, r, cc);
      if (q) q[l] = boolop(ins->boolop, !r, cc);
    }
    return PTX_OK;
  }
  case OP_SET: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    const uint64_t *pc = ins->boolop ? src(b, w, &ins->o[3], 3, em) : NULL;
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) {
      bool r = boolop(ins->boolop, compare(ins, ins->t2, a[l], c[l]), pc ? pc[l] != 0 : false);
      if (t.kind == TK_F) d[l] = r ? PF32(1.0f) : 0;
      else d[l] = r ? 0xffffffffu : 0;
    }
    return PTX_OK;
  }
  case OP_SELP:
  case OP_SLCT: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    const uint64_t *c = src(b, w, &ins->o[2], 2, em);
    const uint64_t *e = src(b, w, &ins->o[3], 3, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    if (ins->op == OP_SELP) {
      FOR_LANES(em) d[l] = e[l] ? a[l] : c[l];
    } else {
      FOR_LANES(em) {
        bool ge = ins->t2.kind == TK_F ? !(F32(e[l]) < 0.0f) : S(e[l], 4) >= 0;
        d[l] = ge ? a[l] : c[l];
      }
    }
    return PTX_OK;
  }
  case OP_TESTP: {
    const uint64_t *a = src(b, w, &ins->o[1], 1, em);
    uint64_t *d = dst(b, w, &ins->o[0]);
    FOR_LANES(em) d[l] = testp(ins->cmp, t, a[l]);
    return PTX_OK;
  }
  default: return PTX_TRAP;
  }
}

/* ---- printf and assert ------------------------------------------------------------------------ */

/* One argument of vprintf's buffer: each at its own alignment, floats
 * promoted to double as for any variadic call. */
static uint64_t next_arg(const unsigned char **p, size_t size) {
  uintptr_t a = ((uintptr_t)*p + size - 1) & ~(uintptr_t)(size - 1);
  uint64_t v = 0;
  memcpy(&v, (const void *)a, size);
  *p = (const unsigned char *)(a + size);
  return v;
}

/* CUDA's device printf: the format string and a buffer of the arguments
 * (generic addresses). Written to stdout, one call at a time. */
static int device_printf(const char *fmt, const unsigned char *args) {
  char out[4096];
  size_t n = 0;
  const char *s = fmt;
  while (*s && n < sizeof out - 1) {
    if (*s != '%') {
      out[n++] = *s++;
      continue;
    }
    if (s[1] == '%') {
      out[n++] = '%';
      s += 2;
      continue;
    }
    char spec[32];
    size_t k = 0;
    spec[k++] = *s++;
    while (*s && strchr("-+ #0123456789.", *s) && k < 20) spec[k++] = *s++;
    int longs = 0;
    while (*s && strchr("hlzjtL", *s)) {
      if (*s == 'l' || *s == 'z' || *s == 'j' || *s == 't' || *s == 'L') longs++;
      s++;
    }
    char conv = *s ? *s++ : 0;
    int w;
    switch (conv) {
    case 'd': case 'i': case 'u': case 'x': case 'X': case 'o': case 'c': {
      if (longs) {
        spec[k++] = 'l';
        spec[k++] = 'l';
      }
      spec[k++] = conv;
      spec[k] = 0;
      uint64_t v = next_arg(&args, longs ? 8 : 4);
      if (conv == 'c' || !longs) {
        uint32_t x = (uint32_t)v;
        w = conv == 'd' || conv == 'i' ? snprintf(out + n, sizeof out - n, spec, (int)x)
                                       : snprintf(out + n, sizeof out - n, spec, x);
      } else {
        w = conv == 'd' || conv == 'i' ? snprintf(out + n, sizeof out - n, spec, (long long)v)
                                       : snprintf(out + n, sizeof out - n, spec, (unsigned long long)v);
      }
      break;
    }
    case 'f': case 'F': case 'e': case 'E': case 'g': case 'G': case 'a': case 'A': {
      spec[k++] = conv;
      spec[k] = 0;
      w = snprintf(out + n, sizeof out - n, spec, F64(next_arg(&args, 8)));
      break;
    }
    case 's': {
      spec[k++] = 's';
      spec[k] = 0;
      const char *str = (const char *)(uintptr_t)next_arg(&args, 8);
      w = snprintf(out + n, sizeof out - n, spec, str ? str : "(null)");
      break;
    }
    case 'p': {
      w = snprintf(out + n, sizeof out - n, "%p", (void *)(uintptr_t)next_arg(&args, 8));
      break;
    }
    default: w = 0; break;
    }
    if (w > 0) n += (size_t)w < sizeof out - n ? (size_t)w : sizeof out - n - 1;
  }
  out[n] = 0;
  fputs(out, stdout);
  fflush(stdout);
  return (int)n;
}

static ptx_status builtin_call(block *b, warp *w, const ptx_ins *ins, uint32_t em) {
  FOR_LANES(em) {
    unsigned char *base = b->local + (size_t)(w->id * PTX_WARP + (unsigned)l) * b->local_size;
    if (ins->cmp == CALL_ASSERTFAIL) {
      uint64_t msg = 0, file = 0;
      uint32_t line = 0;
      if (ins->call_nargs >= 3) {
        memcpy(&msg, base + ins->call_arg_off[0], 8);
        memcpy(&file, base + ins->call_arg_off[1], 8);
        memcpy(&line, base + ins->call_arg_off[2], 4);
      }
      fprintf(stderr, "%s:%u: block [%u,%u,%u], thread [%u,%u,%u] Assertion `%s` failed.\n",
              file ? (const char *)(uintptr_t)file : "?", line, b->ctaid.x, b->ctaid.y, b->ctaid.z,
              w->tid[0][l], w->tid[1][l], w->tid[2][l], msg ? (const char *)(uintptr_t)msg : "?");
      return PTX_ASSERT;
    }
    uint64_t fmt, args;
    memcpy(&fmt, base + ins->call_arg_off[0], 8);
    memcpy(&args, base + ins->call_arg_off[1], 8);
    int r = fmt ? device_printf((const char *)(uintptr_t)fmt, (const unsigned char *)(uintptr_t)args) : -1;
    if (ins->call_ret_off >= 0 && ins->call_ret_size >= 4) memcpy(base + ins->call_ret_off, &r, 4);
  }
  return PTX_OK;
}

/* ---- scheduling ------------------------------------------------------------------------------ */

static uint32_t guard_mask(warp *w, const ptx_ins *ins, uint32_t g) {
  if (ins->guard < 0) return g;
  const uint64_t *p = &w->r[(size_t)ins->guard * PTX_WARP];
  uint32_t m = 0;
  FOR_LANES(g) {
    if ((p[l] != 0) != ins->guard_neg) m |= 1u << l;
  }
  return m;
}

static void set_pc(warp *w, uint32_t lanes, uint32_t pc) {
  FOR_LANES(lanes) w->pc[l] = pc;
}

/* Backward branches a group may take in a row while other threads wait for
 * it to let them run: a loop that spins on what another thread will do
 * (a lock another lane holds, a flag another warp sets) must let that thread
 * progress, as Volta's independent thread scheduling does. */
#define SPIN_LIMIT 4096

/* Run the warp until all its live lanes are parked at a barrier or exited,
 * or until it has spun SPIN_LIMIT times while other warps of the block
 * (others_runnable) could run. */
static ptx_status run_warp(block *b, warp *w, bool others_runnable) {
  const ptx_module *m = b->m;
  unsigned spins = 0;
  bool pick_max = false;
  for (;;) {
    uint32_t runnable = w->live & ~w->bar & ~w->wsync;
    bool force = false;
    uint32_t from = runnable;
    if (!runnable) {
      if (!w->wsync) return PTX_OK;
      /* Lanes wait at warp-synchronous instructions for members that will
       * never come (exited, or at a barrier): run the earliest anyway. */
      from = w->wsync;
      force = true;
    }
    uint32_t pc = pick_max ? 0 : UINT32_MAX;
    FOR_LANES(from) {
      if (pick_max ? w->pc[l] > pc : w->pc[l] < pc) pc = w->pc[l];
    }
    uint32_t g = 0;
    uint32_t next_other = UINT32_MAX;
    FOR_LANES(from) {
      if (w->pc[l] == pc) g |= 1u << l;
      else if (!pick_max && w->pc[l] < next_other) next_other = w->pc[l];
    }
    pick_max = false; /* the lanes furthest ahead run once, until they stop */
    if (force) w->wsync &= ~g;
    for (;;) {
      const ptx_ins *ins = &m->code[pc];
      if (ins->warp_sync) {
        const ptx_operand *mo = &ins->o[ins->op == OP_BARWARP ? 0 : ins->op == OP_SHFL ? 4 : 2];
        uint32_t members = (uint32_t)src(b, w, mo, 5, g)[__builtin_ctz(g)];
        uint32_t here = g;
        FOR_LANES(w->wsync) {
          if (w->pc[l] == pc) here |= 1u << l;
        }
        if (!force && (members & w->live & ~here)) {
          set_pc(w, g, pc);
          w->wsync |= g;
          break;
        }
        w->wsync &= ~here;
        g = here;
      }
      force = false;
      b->warp_ins++;
      b->thread_ins += (uint64_t)__builtin_popcount(g);
      uint32_t em = guard_mask(w, ins, g);
      switch (ins->op) {
      case OP_BRA: {
        uint32_t rest = g & ~em;
        if (!rest) {
          if (ins->target <= pc && ++spins > SPIN_LIMIT) {
            spins = 0;
            uint32_t waiting = w->live & ~w->bar & ~w->wsync & ~g;
            if (waiting || others_runnable) {
              set_pc(w, g, ins->target);
              if (waiting) {
                pick_max = true; /* the lanes ahead may hold what this loop waits for */
                goto resched;
              }
              return PTX_OK; /* another warp's turn; this one stays runnable */
            }
          }
          pc = ins->target;
        } else if (!em) {
          pc++;
        } else {
          set_pc(w, em, ins->target);
          set_pc(w, rest, pc + 1);
          goto resched;
        }
        break;
      }
      case OP_EXIT:
        w->live &= ~em;
        g &= ~em;
        if (!g) goto resched;
        pc++;
        break;
      case OP_RET: {
        uint32_t rest = g & ~em;
        FOR_LANES(em) {
          if (!w->depth[l]) {
            w->live &= ~(1u << l);
            continue;
          }
          uint32_t call = w->stack[l][--w->depth[l]];
          const ptx_ins *ci = &m->code[call];
          const ptx_func *f = &m->funcs[ci->target];
          if (ci->call_ret_off >= 0 && f->ret_off >= 0) {
            unsigned char *base = b->local + (size_t)(w->id * PTX_WARP + (unsigned)l) * b->local_size;
            memcpy(base + ci->call_ret_off, base + f->ret_off,
                   (size_t)(ci->call_ret_size < f->ret_size ? ci->call_ret_size : f->ret_size));
          }
          w->pc[l] = call + 1;
        }
        set_pc(w, rest, pc + 1);
        goto resched;
      }
      case OP_CALL: {
        if (ins->cmp != CALL_PTX) {
          ptx_status st = builtin_call(b, w, ins, em);
          if (st) return st;
          pc++;
          break;
        }
        const ptx_func *f = &m->funcs[ins->target];
        FOR_LANES(em) {
          if (w->depth[l] >= PTX_MAX_CALL_DEPTH) return PTX_TRAP;
          unsigned char *base = b->local + (size_t)(w->id * PTX_WARP + (unsigned)l) * b->local_size;
          for (int i = 0; i < ins->call_nargs && i < f->nargs; i++) {
            int32_t n = ins->call_arg_size[i] < f->arg_size[i] ? ins->call_arg_size[i] : f->arg_size[i];
            memmove(base + f->arg_off[i], base + ins->call_arg_off[i], (size_t)n);
          }
          w->stack[l][w->depth[l]++] = pc;
        }
        uint32_t rest = g & ~em;
        if (!rest) {
          pc = f->start;
        } else {
          set_pc(w, em, f->start);
          set_pc(w, rest, pc + 1);
          goto resched;
        }
        break;
      }
      case OP_BAR: {
        uint32_t rest = g & ~em;
        if (ins->mods & M_RED) {
          const uint64_t *c = src(b, w, &ins->o[2], 1, em);
          FOR_LANES(em) w->redval[l] = c[l] != 0;
        }
        set_pc(w, em, pc);
        w->bar |= em;
        set_pc(w, rest, pc + 1);
        goto resched;
      }
      default: {
        ptx_status st = exec1(b, w, ins, em);
        if (st) return st;
        pc++;
        break;
      }
      }
      if (pc >= next_other) { /* other lanes are at or before this pc: join them */
        set_pc(w, g, pc);
        break;
      }
    }
  resched:;
  }
}

static ptx_status run_block(block *b) {
  for (;;) {
    bool any = false;
    /* run every warp until it parks at a barrier or exits; one that spins
     * hands over to the others and gets its turn again */
    for (bool ran = true; ran;) {
      ran = false;
      for (unsigned i = 0; i < b->nwarps; i++) {
        warp *w = &b->warps[i];
        if (!(w->live & ~w->bar)) continue;
        bool others = false;
        for (unsigned j = 0; j < b->nwarps && !others; j++)
          others = j != i && (b->warps[j].live & ~b->warps[j].bar);
        ptx_status st = run_warp(b, w, others);
        if (st) return st;
        ran = true;
      }
    }
    /* every live lane is at a barrier (or none is left): release them,
     * with bar.red's reduction over every thread that arrived */
    uint64_t count = 0;
    bool all = true, one = false;
    for (unsigned i = 0; i < b->nwarps; i++) {
      warp *w = &b->warps[i];
      FOR_LANES(w->bar) {
        count += w->redval[l];
        all = all && w->redval[l];
        one = one || w->redval[l];
      }
    }
    for (unsigned i = 0; i < b->nwarps; i++) {
      warp *w = &b->warps[i];
      if (!w->bar) continue;
      any = true;
      FOR_LANES(w->bar) {
        const ptx_ins *ins = &b->m->code[w->pc[l]];
        if (ins->mods & M_RED) {
          uint64_t r = ins->cmp == BRED_POPC ? count : ins->cmp == BRED_AND ? all : one;
          w->r[(size_t)ins->o[0].reg * PTX_WARP + l] = r;
          w->redval[l] = 0;
        }
        w->pc[l]++;
      }
      w->bar = 0;
    }
    if (!any) return PTX_OK;
  }
}

ptx_status ptx_run(const ptx_module *m, int k, ptx_dim3 grid, ptx_dim3 bdim, unsigned dyn_shared,
                   const void *params, ptx_scratch *scratch) {
  const ptx_func *f = &m->funcs[m->kernels[k]];
  block *b = calloc(1, sizeof *b);
  if (!b) return PTX_NO_MEMORY;
  scratch->blocks = b;
  b->m = m;
  b->grid = grid;
  b->bdim = bdim;
  b->nthreads = bdim.x * bdim.y * bdim.z;
  b->nwarps = (b->nthreads + PTX_WARP - 1) / PTX_WARP;
  b->dyn_shared = dyn_shared;
  b->shared_size = m->shared_size + dyn_shared;
  b->local_size = (m->local_size + 15) & ~(size_t)15;
  b->params = params;
  b->params_size = f->params_size;
  size_t nregs = m->nregs ? (size_t)m->nregs : 1;
  b->warps = calloc(b->nwarps, sizeof *b->warps);
  b->regs = calloc(b->nwarps * nregs * PTX_WARP, sizeof(uint64_t));
  b->shared = calloc(1, b->shared_size ? b->shared_size : 1);
  b->local = calloc((size_t)b->nwarps * PTX_WARP, b->local_size ? b->local_size : 1);
  if (!b->warps || !b->regs || !b->shared || !b->local) return PTX_NO_MEMORY;
  for (unsigned i = 0; i < b->nwarps; i++) {
    warp *w = &b->warps[i];
    w->r = b->regs + (size_t)i * nregs * PTX_WARP;
    w->id = i;
    for (int l = 0; l < PTX_WARP; l++) {
      unsigned t = i * PTX_WARP + (unsigned)l;
      w->tid[0][l] = t % bdim.x;
      w->tid[1][l] = (t / bdim.x) % bdim.y;
      w->tid[2][l] = t / (bdim.x * bdim.y);
    }
  }
  unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
  for (unsigned long long bi = 0; bi < nblocks; bi++) {
    b->ctaid.x = (unsigned)(bi % grid.x);
    b->ctaid.y = (unsigned)((bi / grid.x) % grid.y);
    b->ctaid.z = (unsigned)(bi / ((unsigned long long)grid.x * grid.y));
    /* shared memory starts undefined on a GPU; zero keeps runs repeatable */
    memset(b->shared, 0, b->shared_size);
    for (unsigned i = 0; i < b->nwarps; i++) {
      warp *w = &b->warps[i];
      unsigned first = i * PTX_WARP;
      unsigned n = b->nthreads - first < PTX_WARP ? b->nthreads - first : PTX_WARP;
      w->live = n == PTX_WARP ? 0xffffffffu : (1u << n) - 1;
      w->bar = w->wsync = 0;
      for (int l = 0; l < PTX_WARP; l++) {
        w->pc[l] = f->start;
        w->depth[l] = 0;
      }
    }
    ptx_status st = run_block(b);
    scratch->warp_instructions = b->warp_ins;
    scratch->thread_instructions = b->thread_ins;
    if (st) return st;
  }
  return PTX_OK;
}

void ptx_scratch_free(ptx_scratch *s) {
  block *b = s->blocks;
  if (!b) return;
  free(b->warps);
  free(b->regs);
  free(b->shared);
  free(b->local);
  free(b);
  s->blocks = NULL;
}
