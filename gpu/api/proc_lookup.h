/* cuGetProcAddress's choice of ABI variant, shared by every library built
 * from the generated API table (the fake driver, the interposer), so they
 * cannot disagree on which function a caller gets.
 *
 * Include after cuda.h. A library lists its exports as cu_proc entries
 * (one per CU_FN / CU_FN_PTDS line of cuda_api_table.h) and asks
 * cu_proc_lookup.
 */
#ifndef CEDANA_PROC_LOOKUP_H
#define CEDANA_PROC_LOOKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

typedef struct cu_proc {
  const char *base;
  int version;
  int per_thread; /* 1 for _ptds/_ptsz */
  void *fn;
} cu_proc;

/* Pick the ABI variant of `symbol` for a caller built against `version`: the
 * newest default variant introduced at or before it, or its per-thread twin
 * when the caller asks for per-thread default streams. A name the table does
 * not know gives pfn = NULL with CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND; one
 * whose every variant is newer than `version` gives VERSION_NOT_SUFFICIENT;
 * both with CUDA_SUCCESS, as the driver answers. The old entry point, which
 * has no `found` to answer in, gets CUDA_ERROR_NOT_FOUND instead and *pfn
 * untouched (NVIDIA's driver 580, seen by tests/fake_cuda/test_driver_symbols.py). */
static inline CUresult cu_proc_lookup(const cu_proc *procs, size_t n, const char *symbol,
                                      int version, int per_thread, void **pfn,
                                      CUdriverProcAddressQueryResult *found) {
  const cu_proc *best = NULL, *best_ptds = NULL;
  bool known = false;
  for (size_t i = 0; i < n; i++) {
    const cu_proc *p = &procs[i];
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
  if (!best && !found) return CUDA_ERROR_NOT_FOUND;
  *pfn = best ? best->fn : NULL;
  if (found) {
    *found = best ? CU_GET_PROC_ADDRESS_SUCCESS
             : known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                     : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  }
  return CUDA_SUCCESS;
}

/* cuGetProcAddress's arguments checked, then the lookup above. */
static inline CUresult cu_get_proc_address(const cu_proc *procs, size_t n, const char *symbol,
                                           void **pfn, int version, cuuint64_t flags,
                                           CUdriverProcAddressQueryResult *found) {
  if (!symbol || !pfn) return CUDA_ERROR_INVALID_VALUE;
  if (flags & ~(cuuint64_t)(CU_GET_PROC_ADDRESS_LEGACY_STREAM |
                            CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
    return CUDA_ERROR_INVALID_VALUE;
  int per_thread = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
  return cu_proc_lookup(procs, n, symbol, version, per_thread, pfn, found);
}

#endif
