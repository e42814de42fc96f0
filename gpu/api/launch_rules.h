/* The CUDA driver's checks on cuLaunchKernelEx's launch attributes and on the
 * cache and shared-memory preferences of contexts, functions and kernels, shared by
 * the fake driver and the interposer so that there is one definition of the
 * driver's rule for both: a program gets the same answer to the same launch
 * configuration whichever of them it runs on.
 *
 * Include after cuda.h.
 */
#ifndef CEDANA_LAUNCH_RULES_H
#define CEDANA_LAUNCH_RULES_H

#include <stdbool.h>

/* Check config->attrs (config non-NULL, attrs non-NULL when numAttrs > 0) and
 * say whether the launch is cooperative. CUDA_ERROR_INVALID_CLUSTER_SIZE for a
 * cluster shape that does not tile the grid; CUDA_ERROR_INVALID_VALUE for an
 * attribute neither implementation carries out. */
static inline CUresult cu_launch_attrs_check(const CUlaunchConfig *config, bool *cooperative) {
  *cooperative = false;
  for (unsigned i = 0; i < config->numAttrs; i++) {
    const CUlaunchAttribute *a = &config->attrs[i];
    switch (a->id) {
    case CU_LAUNCH_ATTRIBUTE_COOPERATIVE:
      *cooperative = a->value.cooperative != 0;
      break;
    case CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION: {
      /* The grid must be a whole number of clusters of at most 8 blocks
       * (portable size; 16 with the non-portable opt-in, not modelled). */
      unsigned x = a->value.clusterDim.x, y = a->value.clusterDim.y, z = a->value.clusterDim.z;
      if (!x || !y || !z || (unsigned long long)x * y * z > 8 || config->gridDimX % x ||
          config->gridDimY % y || config->gridDimZ % z)
        return CUDA_ERROR_INVALID_CLUSTER_SIZE;
      break;
    }
    case CU_LAUNCH_ATTRIBUTE_IGNORE:
    case CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW:
    case CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
    case CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION:
    case CU_LAUNCH_ATTRIBUTE_PRIORITY:
    case CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP:
    case CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN:
    case CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION:
    case CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
    case CU_LAUNCH_ATTRIBUTE_NVLINK_UTIL_CENTRIC_SCHEDULING:
      break; /* scheduling hints: accepted, no effect (the kernel runs with the defaults) */
    default:
      /* Programmatic events, completion events and graph-only attributes
       * need machinery neither the fake driver nor the controller has. */
      return CUDA_ERROR_INVALID_VALUE;
    }
  }
  return CUDA_SUCCESS;
}

/* A cache preference (cuCtxSetCacheConfig, cuFuncSetCacheConfig,
 * cuKernelSetCacheConfig): any the driver names is accepted; neither
 * implementation has a cache split to act on. */
static inline CUresult cu_cache_config_rule(CUfunc_cache config) {
  return (unsigned)config <= CU_FUNC_CACHE_PREFER_EQUAL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* A shared-memory bank size (cuFuncSetSharedMemConfig): likewise. */
static inline CUresult cu_shared_config_rule(CUsharedconfig config) {
  return (unsigned)config <= CU_SHARED_MEM_CONFIG_EIGHT_BYTE_BANK_SIZE ? CUDA_SUCCESS
                                                                       : CUDA_ERROR_INVALID_VALUE;
}

#endif
