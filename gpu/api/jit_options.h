/* What the CUDA driver writes back into a JIT option array's output options,
 * shared by the fake driver and the interposer so that there is one
 * definition of the driver's rule for both: neither compiles anything, so
 * both answer with an empty log and no time spent, and must do so the same
 * way whichever of them a program runs on.
 *
 * Include after cuda.h.
 */
#ifndef CEDANA_JIT_OPTIONS_H
#define CEDANA_JIT_OPTIONS_H

#include <stdint.h>
#include <string.h>

/* Write back an empty compile: each log buffer gets an empty string, but only
 * when its size option (CU_JIT_{INFO,ERROR}_LOG_BUFFER_SIZE_BYTES) is given
 * and above 0, since cuda.h caps the log at that size including the null
 * terminator; then every log size reads 0 bytes used and CU_JIT_WALL_TIME
 * reads 0.0f ms (a float stored in the option's slot). `options` and
 * `values` must be valid for `n` entries when `n` > 0. */
static inline void cu_jit_write_outputs(unsigned int n, const CUjit_option *options,
                                        void **values) {
  for (unsigned i = 0; i < n; i++) {
    switch (options[i]) {
    case CU_JIT_INFO_LOG_BUFFER:
    case CU_JIT_ERROR_LOG_BUFFER: {
      CUjit_option size_opt = options[i] == CU_JIT_INFO_LOG_BUFFER
                                  ? CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES
                                  : CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES;
      for (unsigned j = 0; j < n; j++) {
        if (options[j] == size_opt && (uintptr_t)values[j] > 0 && values[i])
          *(char *)values[i] = '\0';
      }
      break;
    }
    case CU_JIT_WALL_TIME: {
      float zero = 0.0f;
      memcpy(&values[i], &zero, sizeof zero);
      break;
    }
    default:
      break;
    }
  }
  for (unsigned i = 0; i < n; i++) {
    if (options[i] == CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES ||
        options[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
      values[i] = (void *)(uintptr_t)0;
  }
}

#endif
