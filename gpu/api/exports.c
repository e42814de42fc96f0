/* Every driver API symbol, wired to its implementation or to the
 * "not supported" stub, and the table cuGetProcAddress resolves from. One
 * source for every library built from the generated API table (the fake
 * driver, the interposer), compiled into each with its own names:
 *
 *   CU_EXPORTS_IMPL  prefix of the implementations: an implementation of
 *                    <base> at ABI <version> is <IMPL><base>_<version>
 *                    (fake_cuMemAlloc_3020, ic_cuMemAlloc_3020);
 *   CU_EXPORTS_LIB   prefix of the library's helpers used here:
 *                    <LIB>unsupported(symbol), the thread-local <LIB>tls_ptds
 *                    (the NULL stream means the thread's per-thread default
 *                    stream while it is set), and <LIB>get_proc_address
 *                    defined here for the library's cuGetProcAddress.
 *
 * The entry gate: a library that defines <LIB>gate_enter and <LIB>gate_leave
 * (both optional, weak here) has every implemented call bracketed by them, so
 * it can hold API calls back and know when none is in flight (the fake
 * driver's cuCheckpointProcessLock). An implementation that must never wait
 * there (the checkpoint calls themselves, which a process may make on itself)
 * is named <IMPL>ungated_<base>_<version> instead, and is called as is.
 *
 * With CU_EXPORTS_FORWARD the library can also hand every export over to
 * another driver loaded in the process (<LIB>forward_to, below).
 *
 * Exported functions get their symbol name through an asm label so that
 * cuda.h's renaming macros (cuMemAlloc -> cuMemAlloc_v2) cannot touch them.
 */
#include "impl_names.h"
#include "proc_lookup.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

CU_HIDDEN CUresult CU_LIB(unsupported)(const char *symbol);
CU_HIDDEN extern __thread int CU_LIB(tls_ptds);
CU_HIDDEN void CU_LIB(gate_enter)(void) __attribute__((weak));
CU_HIDDEN void CU_LIB(gate_leave)(void) __attribute__((weak));

/* Return `call` through the library's entry gate, if it has one. */
#define CU_GATED(call)                  \
  do {                                  \
    if (!CU_LIB(gate_enter)) return call; \
    CU_LIB(gate_enter)();               \
    CUresult gated_rc_ = call;          \
    CU_LIB(gate_leave)();               \
    return gated_rc_;                   \
  } while (0)

/* The passthrough, for a library compiled with CU_EXPORTS_FORWARD (the
 * interposer's hand-off of a job to a driver it loads in the process): once
 * <LIB>forward_to(dl) has bound every symbol of the table in `dl`, each
 * export calls that driver's function of the same name instead of the
 * library's own, whatever the gate or implementation. A symbol the driver
 * lacks answers CUDA_ERROR_NOT_SUPPORTED. Generated from the table like the
 * exports, so no function is missed and none is written by hand. */
#ifdef CU_EXPORTS_FORWARD
#include <dlfcn.h>

enum {
#define CU_FN(base, version, symbol, params, args) cu_fwd_##symbol,
#define CU_FN_PTDS(base, version, symbol, dver, params, args) cu_fwd_##symbol,
#include "cuda_api_table.h"
  cu_fwd_count
};
static const char *const cu_fwd_names[cu_fwd_count] = {
#define CU_FN(base, version, symbol, params, args) [cu_fwd_##symbol] = #symbol,
#define CU_FN_PTDS(base, version, symbol, dver, params, args) [cu_fwd_##symbol] = #symbol,
#include "cuda_api_table.h"
};
static void *cu_fwd[cu_fwd_count];
static int cu_forwarding; /* set (release) once cu_fwd is filled, never cleared */

#define CU_FORWARD(symbol, params, args)                                        \
  if (__builtin_expect(__atomic_load_n(&cu_forwarding, __ATOMIC_ACQUIRE), 0)) { \
    CUresult(*fwd_) params = (CUresult(*) params)cu_fwd[cu_fwd_##symbol];      \
    return fwd_ ? fwd_ args : CUDA_ERROR_NOT_SUPPORTED;                         \
  }

/* Bind every symbol of the table in `dl` and switch every export to it.
 * Once only: the first caller wins; returns the number of symbols bound. */
CU_HIDDEN int CU_LIB(forward_to)(void *dl) {
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  int bound = 0;
  pthread_mutex_lock(&lock);
  if (!__atomic_load_n(&cu_forwarding, __ATOMIC_ACQUIRE)) {
    for (int i = 0; i < cu_fwd_count; i++) {
      cu_fwd[i] = dlsym(dl, cu_fwd_names[i]);
      if (cu_fwd[i]) bound++;
    }
    __atomic_store_n(&cu_forwarding, 1, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&lock);
  return bound;
}

/* The bound function of `symbol` once forwarding, else NULL. */
CU_HIDDEN void *CU_LIB(forwarded)(const char *symbol) {
  if (!__atomic_load_n(&cu_forwarding, __ATOMIC_ACQUIRE)) return NULL;
  for (int i = 0; i < cu_fwd_count; i++)
    if (strcmp(cu_fwd_names[i], symbol) == 0) return cu_fwd[i];
  return NULL;
}
#else
#define CU_FORWARD(symbol, params, args)
#endif

/* Implementations are weak references: a file that implements a function
 * defines <IMPL><base>_<version>; the others stay NULL and get the stub. */
#define CU_FN(base, version, symbol, params, args)                                           \
  extern CUresult CU_IMPL(base##_##version) params __attribute__((weak, visibility("hidden"))); \
  extern CUresult CU_UNGATED(base##_##version) params                                         \
      __attribute__((weak, visibility("hidden")));
#define CU_FN_PTDS(base, version, symbol, dver, params, args)   \
  extern CUresult CU_IMPL(base##_##version##_ptds) params \
      __attribute__((weak, visibility("hidden")));
#include "cuda_api_table.h"

#define CU_FN(base, version, symbol, params, args)                                          \
  __attribute__((visibility("default"))) CUresult cu_export_##symbol params __asm__(#symbol); \
  CUresult cu_export_##symbol params {                                                      \
    CU_FORWARD(symbol, params, args)                                                        \
    if (CU_UNGATED(base##_##version)) return CU_UNGATED(base##_##version) args;             \
    if (CU_IMPL(base##_##version)) CU_GATED(CU_IMPL(base##_##version) args);                \
    return CU_LIB(unsupported)(#symbol);                                                    \
  }
/* A per-thread variant runs its own implementation if there is one, else the
 * default variant with the NULL stream meaning the thread's default stream. */
#define CU_FN_PTDS(base, version, symbol, dver, params, args)                                \
  static CUresult cu_ptds_##symbol params {                                                 \
    int saved = CU_LIB(tls_ptds);                                                           \
    CU_LIB(tls_ptds) = 1;                                                                   \
    CUresult rc = CU_IMPL(base##_##dver) args;                                              \
    CU_LIB(tls_ptds) = saved;                                                               \
    return rc;                                                                              \
  }                                                                                         \
  __attribute__((visibility("default"))) CUresult cu_export_##symbol params __asm__(#symbol); \
  CUresult cu_export_##symbol params {                                                      \
    CU_FORWARD(symbol, params, args)                                                        \
    if (CU_IMPL(base##_##version##_ptds)) CU_GATED(CU_IMPL(base##_##version##_ptds) args);  \
    if (!CU_IMPL(base##_##dver)) return CU_LIB(unsupported)(#symbol);                       \
    CU_GATED(cu_ptds_##symbol args);                                                        \
  }
#include "cuda_api_table.h"

static const cu_proc cu_procs[] = {
#define CU_FN(base, version, symbol, params, args) {#base, version, 0, (void *)cu_export_##symbol},
#define CU_FN_PTDS(base, version, symbol, dver, params, args) \
  {#base, version, 1, (void *)cu_export_##symbol},
#include "cuda_api_table.h"
};

/* Purely local: resolving symbols needs no device and, in the interposer, no
 * controller, so cuda-bindings can bind every function at import time, before
 * cuInit. */
CU_HIDDEN CUresult CU_LIB(get_proc_address)(const char *symbol, void **pfn, int version,
                                            cuuint64_t flags,
                                            CUdriverProcAddressQueryResult *found) {
  return cu_get_proc_address(cu_procs, sizeof cu_procs / sizeof cu_procs[0], symbol, pfn, version,
                             flags, found);
}

/* Both libraries name an unsupported function once per process, so that a
 * user sees what the workload needs without a flood; each decides how it
 * says so (CU_LIB(unsupported)). Symbols are the string literals of the
 * export table, so a pointer compare usually answers. */
CU_HIDDEN bool CU_LIB(unsupported_first)(const char *symbol) {
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  static const char *seen[1024];
  static size_t nseen;
  bool first = true;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < nseen; i++)
    if (seen[i] == symbol || strcmp(seen[i], symbol) == 0) first = false;
  if (first && nseen < sizeof seen / sizeof seen[0]) seen[nseen++] = symbol;
  pthread_mutex_unlock(&lock);
  return first;
}
