/* Every driver API symbol, wired to its implementation or to the
 * "not supported" stub, and the table cuGetProcAddress resolves from. The
 * same wiring as the fake driver's (tests/fake_cuda/src/exports.c), with the
 * interposer's ic_ prefix.
 *
 * Exported functions get their symbol name through an asm label so that
 * cuda.h's renaming macros (cuMemAlloc -> cuMemAlloc_v2) cannot touch them.
 */
#include "ic.h"

#include "proc_lookup.h"

/* Implementations are weak references: a file that implements a function
 * defines ic_<base>_<version>; the others stay NULL and get the stub. */
#define CU_FN(base, version, symbol, params, args) \
  extern CUresult ic_##base##_##version params __attribute__((weak, visibility("hidden")));
#define CU_FN_PTDS(base, version, symbol, dver, params, args) \
  extern CUresult ic_##base##_##version##_ptds params __attribute__((weak, visibility("hidden")));
#include "cuda_api_table.h"

#define CU_FN(base, version, symbol, params, args)                                        \
  __attribute__((visibility("default"))) CUresult ic_export_##symbol params __asm__(#symbol); \
  CUresult ic_export_##symbol params {                                                    \
    if (ic_##base##_##version) return ic_##base##_##version args;                         \
    return ic_unsupported(#symbol);                                                       \
  }
/* A per-thread variant runs its own implementation if there is one, else the
 * default variant with the NULL stream meaning the thread's default stream. */
#define CU_FN_PTDS(base, version, symbol, dver, params, args)                              \
  __attribute__((visibility("default"))) CUresult ic_export_##symbol params __asm__(#symbol); \
  CUresult ic_export_##symbol params {                                                     \
    if (ic_##base##_##version##_ptds) return ic_##base##_##version##_ptds args;            \
    if (!ic_##base##_##dver) return ic_unsupported(#symbol);                               \
    int saved = ic_tls_ptds;                                                               \
    ic_tls_ptds = 1;                                                                       \
    CUresult rc = ic_##base##_##dver args;                                                 \
    ic_tls_ptds = saved;                                                                   \
    return rc;                                                                             \
  }
#include "cuda_api_table.h"

static const cu_proc ic_procs[] = {
#define CU_FN(base, version, symbol, params, args) {#base, version, 0, (void *)ic_export_##symbol},
#define CU_FN_PTDS(base, version, symbol, dver, params, args) \
  {#base, version, 1, (void *)ic_export_##symbol},
#include "cuda_api_table.h"
};

/* Purely local: resolving symbols needs no controller, so cuda-bindings can
 * bind every function at import time, before cuInit. */
static CUresult get_proc(const char *symbol, void **pfn, int version, cuuint64_t flags,
                         CUdriverProcAddressQueryResult *found) {
  return cu_get_proc_address(ic_procs, sizeof ic_procs / sizeof ic_procs[0], symbol, pfn, version,
                             flags, found);
}

IC_HIDDEN CUresult ic_cuGetProcAddress_11030(const char *symbol, void **pfn, int driverVersion,
                                             cuuint64_t flags) {
  return get_proc(symbol, pfn, driverVersion, flags, NULL);
}

IC_HIDDEN CUresult ic_cuGetProcAddress_12000(const char *symbol, void **pfn, int driverVersion,
                                             cuuint64_t flags,
                                             CUdriverProcAddressQueryResult *symbolFound) {
  return get_proc(symbol, pfn, driverVersion, flags, symbolFound);
}
