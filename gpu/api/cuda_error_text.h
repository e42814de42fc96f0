/* The CUDA driver's own short error descriptions (what cuGetErrorString
 * answers on NVIDIA's driver), shared by the fake driver and the interposer
 * so that a program prints, and a test matches, the same text whichever of
 * them it runs on. Codes not listed here have no short text of the driver's
 * on record: callers fall back to the first sentence of cuda.h's comment
 * (cuda_error_table.h, generated).
 */
#ifndef CEDANA_CUDA_ERROR_TEXT_H
#define CEDANA_CUDA_ERROR_TEXT_H

#include <cuda.h>

#include <stddef.h>

/* The driver's text for `code`, or NULL if it is not on record. */
static inline const char *cu_driver_error_text(CUresult code) {
  switch (code) {
  case CUDA_SUCCESS: return "no error";
  case CUDA_ERROR_INVALID_VALUE: return "invalid argument";
  case CUDA_ERROR_OUT_OF_MEMORY: return "out of memory";
  case CUDA_ERROR_NOT_INITIALIZED: return "initialization error";
  case CUDA_ERROR_DEINITIALIZED: return "driver shutting down";
  case CUDA_ERROR_DEVICE_UNAVAILABLE: return "CUDA-capable device(s) is/are busy or unavailable";
  case CUDA_ERROR_NO_DEVICE: return "no CUDA-capable device is detected";
  case CUDA_ERROR_INVALID_DEVICE: return "invalid device ordinal";
  case CUDA_ERROR_INVALID_IMAGE: return "device kernel image is invalid";
  case CUDA_ERROR_INVALID_CONTEXT: return "invalid device context";
  case CUDA_ERROR_NO_BINARY_FOR_GPU:
    return "no kernel image is available for execution on the device";
  case CUDA_ERROR_UNSUPPORTED_LIMIT: return "limit is not supported on this architecture";
  case CUDA_ERROR_INVALID_PTX: return "a PTX JIT compilation failed";
  case CUDA_ERROR_JIT_COMPILER_NOT_FOUND: return "PTX JIT compiler library not found";
  case CUDA_ERROR_INVALID_SOURCE: return "invalid source";
  case CUDA_ERROR_FILE_NOT_FOUND: return "file not found";
  case CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND: return "link to a shared object failed to resolve";
  case CUDA_ERROR_SHARED_OBJECT_INIT_FAILED: return "shared object initialization failed";
  case CUDA_ERROR_INVALID_HANDLE: return "invalid resource handle";
  case CUDA_ERROR_ILLEGAL_STATE: return "resource in illegal state";
  case CUDA_ERROR_NOT_FOUND: return "named symbol not found";
  case CUDA_ERROR_NOT_READY: return "device not ready";
  case CUDA_ERROR_ILLEGAL_ADDRESS: return "an illegal memory access was encountered";
  case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "too many resources requested for launch";
  case CUDA_ERROR_LAUNCH_TIMEOUT: return "the launch timed out and was terminated";
  case CUDA_ERROR_CONTEXT_IS_DESTROYED: return "context is destroyed";
  case CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED:
    return "part or all of the requested memory range is already mapped";
  case CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED:
    return "pointer does not correspond to a registered memory region";
  case CUDA_ERROR_ILLEGAL_INSTRUCTION: return "an illegal instruction was encountered";
  case CUDA_ERROR_MISALIGNED_ADDRESS: return "misaligned address";
  case CUDA_ERROR_LAUNCH_FAILED: return "unspecified launch failure";
  case CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE: return "too many blocks in cooperative launch";
  case CUDA_ERROR_NOT_PERMITTED: return "operation not permitted";
  case CUDA_ERROR_NOT_SUPPORTED: return "operation not supported";
  case CUDA_ERROR_UNKNOWN: return "unknown error";
  default: return NULL;
  }
}

/* cuGetErrorName and cuGetErrorString, over every CUresult in cuda.h (the
 * generated table): the driver's short text where it is known, else the
 * first sentence of cuda.h's comment. */
typedef struct cu_error_entry {
  CUresult code;
  const char *name;
  const char *doc;
} cu_error_entry;

static inline const cu_error_entry *cu_error_find(CUresult e) {
  static const cu_error_entry table[] = {
#define CU_ERR(name, value, text) {(CUresult)(value), #name, text},
#include "cuda_error_table.h"
  };
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (table[i].code == e) return &table[i];
  return NULL;
}

static inline CUresult cu_error_name(CUresult error, const char **pStr) {
  if (!pStr) return CUDA_ERROR_INVALID_VALUE;
  const cu_error_entry *e = cu_error_find(error);
  *pStr = e ? e->name : NULL;
  return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

static inline CUresult cu_error_string(CUresult error, const char **pStr) {
  if (!pStr) return CUDA_ERROR_INVALID_VALUE;
  const cu_error_entry *e = cu_error_find(error);
  const char *text = e ? cu_driver_error_text(error) : NULL;
  *pStr = text ? text : e ? e->doc : NULL;
  return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

#endif
