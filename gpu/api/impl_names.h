/* The names of one library's implementation of the driver API, for the
 * sources compiled into every such library (exports.c, abi_variants.c): the
 * library says its prefixes with CU_EXPORTS_IMPL and CU_EXPORTS_LIB (see
 * exports.c) and these macros paste them, so that one text serves the fake
 * driver (fake_, fk_) and the interposer (ic_, ic_).
 */
#ifndef CEDANA_IMPL_NAMES_H
#define CEDANA_IMPL_NAMES_H

#if !defined(CU_EXPORTS_IMPL) || !defined(CU_EXPORTS_LIB)
#error "compile with -DCU_EXPORTS_IMPL=<prefix> -DCU_EXPORTS_LIB=<prefix> (see exports.c)"
#endif

#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
/* The profiler control functions' types, where the table has them (see
 * gen_cuda_api.py: only with this header present). */
#if __has_include(<cudaProfiler.h>)
#include <cudaProfiler.h>
#endif

/* Two levels, so that the prefix macros expand before they are pasted. */
#define CU_PASTE_(a, b) a##b
#define CU_PASTE(a, b) CU_PASTE_(a, b)
#define CU_IMPL(name) CU_PASTE(CU_EXPORTS_IMPL, name)
#define CU_LIB(name) CU_PASTE(CU_EXPORTS_LIB, name)
/* An implementation that bypasses the library's entry gate (see exports.c). */
#define CU_UNGATED(name) CU_PASTE(CU_EXPORTS_IMPL, CU_PASTE(ungated_, name))

#define CU_HIDDEN __attribute__((visibility("hidden")))

/* Defined in exports.c with CU_EXPORTS_FORWARD: switch every export to the
 * same symbols of the driver `dl` (the number bound), and the bound function
 * of one symbol (NULL before the switch or when `dl` lacks it). */
CU_HIDDEN int CU_LIB(forward_to)(void *dl);
CU_HIDDEN void *CU_LIB(forwarded)(const char *symbol);

/* Defined in exports.c: the lookup behind the library's cuGetProcAddress. */
CU_HIDDEN CUresult CU_LIB(get_proc_address)(const char *symbol, void **pfn, int version,
                                            cuuint64_t flags,
                                            CUdriverProcAddressQueryResult *found);

#endif
