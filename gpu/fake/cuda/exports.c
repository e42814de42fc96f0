/* Every driver API symbol, wired to its implementation or to the
 * "not supported" stub, and the table cuGetProcAddress resolves from.
 *
 * Exported functions get their symbol name through an asm label so that
 * cuda.h's renaming macros (cuMemAlloc -> cuMemAlloc_v2) cannot touch them.
 */
#include "fake.h"

#include "proc_lookup.h"

/* Implementations are weak references: an area that implements a function
 * defines fake_<base>_<version>; the others stay NULL and get the stub. */
#define CU_FN(base, version, symbol, params, args) \
  extern CUresult fake_##base##_##version params __attribute__((weak, visibility("hidden")));
#define CU_FN_PTDS(base, version, symbol, dver, params, args) \
  extern CUresult fake_##base##_##version##_ptds params __attribute__((weak, visibility("hidden")));
#include "cuda_api_table.h"

#define CU_FN(base, version, symbol, params, args)                                       \
  __attribute__((visibility("default"))) CUresult fk_export_##symbol params __asm__(#symbol); \
  CUresult fk_export_##symbol params {                                                   \
    if (fake_##base##_##version) return fake_##base##_##version args;                    \
    return fk_unsupported(#symbol);                                                      \
  }
/* A per-thread variant runs its own implementation if there is one, else the
 * default variant with the NULL stream meaning the thread's default stream. */
#define CU_FN_PTDS(base, version, symbol, dver, params, args)                              \
  __attribute__((visibility("default"))) CUresult fk_export_##symbol params __asm__(#symbol); \
  CUresult fk_export_##symbol params {                                                     \
    if (fake_##base##_##version##_ptds) return fake_##base##_##version##_ptds args;        \
    if (!fake_##base##_##dver) return fk_unsupported(#symbol);                             \
    int saved = fk_tls_ptds;                                                               \
    fk_tls_ptds = 1;                                                                       \
    CUresult rc = fake_##base##_##dver args;                                               \
    fk_tls_ptds = saved;                                                                   \
    return rc;                                                                             \
  }
#include "cuda_api_table.h"

static const cu_proc fk_procs[] = {
#define CU_FN(base, version, symbol, params, args) {#base, version, 0, (void *)fk_export_##symbol},
#define CU_FN_PTDS(base, version, symbol, dver, params, args) \
  {#base, version, 1, (void *)fk_export_##symbol},
#include "cuda_api_table.h"
};

FK_HIDDEN CUresult fk_get_proc_address(const char *symbol, void **pfn, int version,
                                       cuuint64_t flags, CUdriverProcAddressQueryResult *found) {
  return cu_get_proc_address(fk_procs, sizeof fk_procs / sizeof fk_procs[0], symbol, pfn, version,
                             flags, found);
}
