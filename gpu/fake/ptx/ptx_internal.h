/* The decoded form of a PTX module, shared by the parser (parse.c) and the
 * interpreter (exec.c). */
#ifndef CEDANA_FAKE_PTX_INTERNAL_H
#define CEDANA_FAKE_PTX_INTERNAL_H

#include "ptx.h"

#define PTX_WARP 32
#define PTX_MAX_CALL_DEPTH 16

/* Scalar types: kind and width. */
enum { TK_NONE, TK_B, TK_U, TK_S, TK_F, TK_PRED };
typedef struct ptx_type {
  uint8_t kind;
  uint8_t bytes;
} ptx_type;

/* State spaces. */
enum { SP_GENERIC, SP_GLOBAL, SP_SHARED, SP_LOCAL, SP_CONST, SP_PARAM_KERNEL, SP_PARAM_LOCAL };

/* Special registers. */
enum {
  SR_TID_X, SR_TID_Y, SR_TID_Z, SR_NTID_X, SR_NTID_Y, SR_NTID_Z, SR_CTAID_X, SR_CTAID_Y,
  SR_CTAID_Z, SR_NCTAID_X, SR_NCTAID_Y, SR_NCTAID_Z, SR_LANEID, SR_WARPID, SR_NWARPID, SR_SMID,
  SR_NSMID, SR_GRIDID, SR_LANEMASK_EQ, SR_LANEMASK_LT, SR_LANEMASK_LE, SR_LANEMASK_GT,
  SR_LANEMASK_GE, SR_CLOCK, SR_CLOCK64, SR_GLOBALTIMER, SR_DYN_SMEM, SR_TOTAL_SMEM,
};

enum { OK_NONE, OK_REG, OK_IMM, OK_SREG, OK_ADDR, OK_VEC, OK_SINK };

typedef struct ptx_operand {
  uint8_t kind;
  uint8_t neg;   /* !%p */
  uint8_t nvec;  /* OK_VEC: elements in vregs (-1: sink) */
  uint8_t space; /* OK_ADDR: resolved space of a symbol base (SP_GENERIC: none) */
  uint8_t fp_literal; /* OK_IMM written as a decimal float (a double) */
  int32_t reg;   /* OK_REG, OK_ADDR base register (-1: none) */
  int32_t vregs[4];
  uint64_t imm;  /* OK_IMM bits, OK_SREG id, OK_ADDR offset */
} ptx_operand;

typedef enum ptx_op {
  OP_NOP, OP_MOV, OP_LD, OP_ST, OP_CVTA, OP_CVT, OP_ADD, OP_SUB, OP_MUL, OP_MAD, OP_FMA, OP_DIV,
  OP_REM, OP_MIN, OP_MAX, OP_ABS, OP_NEG, OP_AND, OP_OR, OP_XOR, OP_NOT, OP_CNOT, OP_SHL, OP_SHR,
  OP_SETP, OP_SELP, OP_SET, OP_BRA, OP_RET, OP_EXIT, OP_BAR, OP_ATOM, OP_RED, OP_SHFL, OP_VOTE,
  OP_ACTIVEMASK, OP_RCP, OP_SQRT, OP_RSQRT, OP_EX2, OP_LG2, OP_SIN, OP_COS, OP_CALL, OP_TRAP,
  OP_POPC, OP_CLZ, OP_BREV, OP_BFIND, OP_BFE, OP_BFI, OP_PRMT, OP_LOP3, OP_SHF, OP_COPYSIGN,
  OP_TESTP, OP_MUL24, OP_MAD24, OP_SLCT, OP_TANH, OP_MATCH, OP_REDUX, OP_BARWARP, OP_ADDC,
  OP_SUBC, OP_MADC, OP_SAD,
} ptx_op;

/* Modifier bits. */
enum {
  M_HI = 1u << 0, M_LO = 1u << 1, M_WIDE = 1u << 2, M_FTZ = 1u << 3, M_SAT = 1u << 4,
  M_APPROX = 1u << 5, M_FULL = 1u << 6, M_TO = 1u << 7, M_UNI = 1u << 8, M_SYNC = 1u << 9,
  M_CC = 1u << 10, M_SHIFT_CLAMP = 1u << 11, M_SHIFT_LEFT = 1u << 12, M_NAN = 1u << 13,
  M_XORSIGN = 1u << 14, M_RELU = 1u << 15, M_SHAMT = 1u << 16, M_ALL = 1u << 17, M_RED = 1u << 18,
};

/* Rounding: none, rn, rz, rm, rp; integer rounding: rni rzi rmi rpi. */
enum { RND_NONE, RND_RN, RND_RZ, RND_RM, RND_RP, RND_RNI, RND_RZI, RND_RMI, RND_RPI };

/* Comparisons (setp/set/slct), boolean ops, atomic ops, shuffle and vote modes. */
enum {
  CMP_EQ = 1, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_LO, CMP_LS, CMP_HI, CMP_HS, CMP_EQU,
  CMP_NEU, CMP_LTU, CMP_LEU, CMP_GTU, CMP_GEU, CMP_NUM, CMP_NAN,
};
enum { BOOL_NONE, BOOL_AND, BOOL_OR, BOOL_XOR };
enum {
  AOP_NONE, AOP_ADD, AOP_MIN, AOP_MAX, AOP_INC, AOP_DEC, AOP_AND, AOP_OR, AOP_XOR, AOP_EXCH,
  AOP_CAS,
};
enum { SH_UP = 1, SH_DOWN, SH_BFLY, SH_IDX };
enum { VT_ALL = 1, VT_ANY, VT_UNI, VT_BALLOT };
/* bar.red's reductions (ins->cmp). */
enum { BRED_POPC = 1, BRED_AND, BRED_OR };
/* Calls to functions the driver provides (ins->cmp of a call). */
enum { CALL_PTX, CALL_VPRINTF, CALL_ASSERTFAIL };
enum { TP_FINITE = 1, TP_INFINITE, TP_NUMBER, TP_NOTANUMBER, TP_NORMAL, TP_SUBNORMAL };

typedef struct ptx_ins {
  uint16_t op;
  uint8_t space;
  uint8_t vec;   /* .v2/.v4: 2 or 4, else 1 */
  uint8_t rnd;
  uint8_t cmp;   /* also atomic op, shuffle mode, vote mode, testp class */
  uint8_t boolop;
  uint8_t nops;
  ptx_type t, t2; /* the instruction's type(s): cvt.t.t2, set.t.t2, mul.wide: t is the source */
  uint32_t mods;
  int32_t guard; /* predicate register or -1 */
  uint8_t guard_neg;
  uint8_t warp_sync; /* runs only when every lane of its member mask is there */
  uint32_t target;   /* bra: instruction index; call: callee function index */
  int32_t line;      /* source line, for messages */
  ptx_operand o[6]; /* o[5]: the second destination of setp/shfl (d|p) */
  /* call: argument and return slots in the caller's local window, and sizes */
  int32_t call_nargs;
  int32_t call_ret_off, call_ret_size;
  int32_t *call_arg_off, *call_arg_size;
} ptx_ins;

typedef struct ptx_func {
  char *name;
  bool entry;
  uint32_t start, end; /* instructions [start, end) of the module's code */
  /* .entry: kernel parameters */
  int nparams;
  ptx_param *params;
  size_t params_size;
  /* .func: parameter and return slots in the local window */
  int nargs;
  int32_t *arg_off, *arg_size;
  int32_t ret_off, ret_size;
  int nregs; /* registers this function declares (for CU_FUNC_ATTRIBUTE_NUM_REGS) */
  bool has_dyn_shared;
  /* What a kernel needs, its callees included (computed after parsing). */
  size_t static_shared;
  size_t local_size;
} ptx_func;

struct ptx_module {
  ptx_ins *code;
  uint32_t ncode;
  ptx_func *funcs;
  int nfuncs;
  int *kernels; /* indices into funcs of the .entry functions */
  int nkernels;
  ptx_global *globals;
  int nglobals;
  void **storage; /* one allocation per global variable */
  int nregs;      /* registers of all functions (each function has its own) */
  size_t shared_size; /* every .shared variable of the module, laid out once */
  size_t shared_align;
  size_t local_size;  /* every function's local window laid out once (no recursion) */
};

#endif
