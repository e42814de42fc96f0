/* Every driver API symbol, wired to its implementation or to the
 * "not supported" stub, and the table cuGetProcAddress resolves from.
 *
 * Exported functions get their symbol name through an asm label so that
 * cuda.h's renaming macros (cuMemAlloc -> cuMemAlloc_v2) cannot touch them.
 */
#include "fake.h"

#include <string.h>

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

typedef struct fk_proc {
  const char *base;
  int version;
  int per_thread; /* 1 for _ptds/_ptsz */
  void *fn;
} fk_proc;

static const fk_proc fk_procs[] = {
#define CU_FN(base, version, symbol, params, args) {#base, version, 0, (void *)fk_export_##symbol},
#define CU_FN_PTDS(base, version, symbol, dver, params, args) \
  {#base, version, 1, (void *)fk_export_##symbol},
#include "cuda_api_table.h"
};

/* Pick the ABI variant of `symbol` for a caller built against `version`: the
 * newest default variant introduced at or before it, or its per-thread twin
 * when the caller asks for per-thread default streams. */
FK_HIDDEN CUresult fk_lookup_proc(const char *symbol, int version, int per_thread, void **pfn,
                                  CUdriverProcAddressQueryResult *found) {
  const fk_proc *best = NULL, *best_ptds = NULL;
  bool known = false;
  for (size_t i = 0; i < sizeof fk_procs / sizeof fk_procs[0]; i++) {
    const fk_proc *p = &fk_procs[i];
    if (strcmp(p->base, symbol) != 0) continue;
    known = true;
    if (p->version > version) continue;
    if (p->per_thread) {
      if (!best_ptds || p->version >= best_ptds->version) best_ptds = p;
    } else if (!best || p->version >= best->version) {
      best = p;
    }
  }
  /* The per-thread twin must belong to the chosen default variant: a newer
   * default variant without a twin wins over an older twin. */
  if (per_thread && best_ptds && (!best || best_ptds->version >= best->version)) best = best_ptds;
  *pfn = best ? best->fn : NULL;
  if (found) {
    *found = best ? CU_GET_PROC_ADDRESS_SUCCESS
             : known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                     : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  }
  return CUDA_SUCCESS;
}
