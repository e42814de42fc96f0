/* The CUDA driver's argument rules for cuMemAllocPitch and cuMemHostAlloc, shared by
 * the fake driver and the interposer so that there is one definition of the
 * driver's rule for both: the same request is refused, or gets the same
 * pitch, whichever of them a program runs on.
 *
 * Include after cuda.h.
 */
#ifndef CEDANA_MEMORY_RULES_H
#define CEDANA_MEMORY_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Rows are padded like the driver's: to the texture alignment
 * (CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT), 512 bytes. */
#define CU_PITCH_ALIGN ((size_t)512)

/* Check cuMemAllocPitch's arguments (`outs_ok`: dptr and pPitch non-NULL)
 * and give the pitch and the bytes to allocate. CUDA_ERROR_INVALID_VALUE for
 * a missing output, an empty area, an element size other than 4, 8 or 16, or
 * a width beyond the device's max pitch; CUDA_ERROR_OUT_OF_MEMORY for an area
 * too large to ever allocate. */
static inline CUresult cu_mem_pitch_rule(bool outs_ok, size_t WidthInBytes, size_t Height,
                                         unsigned int ElementSizeBytes, size_t *pitch,
                                         size_t *bytes) {
  if (!outs_ok || WidthInBytes == 0 || Height == 0) return CUDA_ERROR_INVALID_VALUE;
  if (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16)
    return CUDA_ERROR_INVALID_VALUE;
  if (WidthInBytes > 2147483647u) return CUDA_ERROR_INVALID_VALUE; /* the device's max pitch */
  size_t p = (WidthInBytes + CU_PITCH_ALIGN - 1) / CU_PITCH_ALIGN * CU_PITCH_ALIGN;
  if (Height > (SIZE_MAX >> 2) / p) return CUDA_ERROR_OUT_OF_MEMORY;
  *pitch = p;
  *bytes = p * Height;
  return CUDA_SUCCESS;
}

/* The flags cuMemHostAlloc knows; any other is CUDA_ERROR_INVALID_VALUE. */
#define CU_MEMHOSTALLOC_KNOWN \
  (CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED)

#endif
