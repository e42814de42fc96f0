/* Device enumeration and attributes. The fake devices describe themselves as
 * Hopper-class (compute capability 9.0) so code that checks features takes
 * the same paths it would on an H100/H200. */
#include "fake.h"

#include <stdio.h>
#include <string.h>

static CUresult get_device(CUdevice dev, fk_device **out) {
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (dev < 0 || dev >= fk_cfg.device_count) return CUDA_ERROR_INVALID_DEVICE;
  *out = &fk_cfg.devices[dev];
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceGetCount_2000(int *count) {
  if (!count) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = fk_need_init();
  if (rc) return rc;
  *count = fk_cfg.device_count;
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceGet_2000(CUdevice_v1 *device, int ordinal) {
  if (!device) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (ordinal < 0 || ordinal >= fk_cfg.device_count) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceGetName_2000(char *name, int len, CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  snprintf(name, (size_t)len, "%s", d->name);
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceGetUuid_11040(CUuuid *uuid, CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!uuid) return CUDA_ERROR_INVALID_VALUE;
  *uuid = d->uuid;
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceTotalMem_3020(size_t *bytes, CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!bytes) return CUDA_ERROR_INVALID_VALUE;
  *bytes = d->total_mem;
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceComputeCapability_2000(int *major, int *minor, CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!major || !minor) return CUDA_ERROR_INVALID_VALUE;
  *major = 9;
  *minor = 0;
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceGetPCIBusId_4010(char *pciBusId, int len, CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!pciBusId || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  snprintf(pciBusId, (size_t)len, "0000:%02x:00.0", 0x18 + d->ordinal);
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceGetByPCIBusId_4010(CUdevice_v1 *dev, const char *pciBusId) {
  if (!dev || !pciBusId) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = fk_need_init();
  if (rc) return rc;
  for (int i = 0; i < fk_cfg.device_count; i++) {
    char id[32];
    fake_cuDeviceGetPCIBusId_4010(id, sizeof id, i);
    if (strcasecmp(id, pciBusId) == 0 || strcasecmp(id + 5, pciBusId) == 0) {
      *dev = i;
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_DEVICE;
}

CUresult fake_cuDeviceCanAccessPeer_4000(int *canAccessPeer, CUdevice_v1 dev, CUdevice_v1 peerDev) {
  fk_device *a, *b;
  CUresult rc = get_device(dev, &a);
  if (!rc) rc = get_device(peerDev, &b);
  if (rc) return rc;
  if (!canAccessPeer) return CUDA_ERROR_INVALID_VALUE;
  *canAccessPeer = dev != peerDev; /* all fake devices share the host's memory */
  return CUDA_SUCCESS;
}

/* Values of an H100/H200-class part; anything not listed reads 0. */
static int attribute(CUdevice_attribute a, const fk_device *d) {
  switch (a) {
  case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: return 1024;
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: return 1024;
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: return 1024;
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: return 64;
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: return 2147483647;
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: return 65535;
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: return 65535;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: return 49152;
  case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: return 65536;
  case CU_DEVICE_ATTRIBUTE_WARP_SIZE: return 32;
  case CU_DEVICE_ATTRIBUTE_MAX_PITCH: return 2147483647;
  case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: return 65536;
  case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: return 1980000;
  case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: return 512;
  case CU_DEVICE_ATTRIBUTE_GPU_OVERLAP: return 1;
  case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: return 132;
  case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: return 1;
  case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: return 1;
  case CU_DEVICE_ATTRIBUTE_ECC_ENABLED: return 1;
  case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: return 0x18 + d->ordinal;
  case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: return 2619000;
  case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: return 5120;
  case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: return 52428800;
  case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: return 2048;
  case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: return 3;
  case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: return 1;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: return 9;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: return 0;
  case CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED: return 1;
  case CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED: return 1;
  case CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED: return 1;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: return 233472;
  case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: return 65536;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_PREEMPTION_SUPPORTED: return 1;
  case CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM: return 1;
  case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: return 1;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: return 232448;
  case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: return 1;
  case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED: return 1;
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: return 32;
  case CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE: return 32505856;
  case CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED: return 1;
  case CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED: return 1;
  case CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH: return 1;
  case CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS: return 0;
  /* Kernels run on the host's CPU: managed memory is host memory both
   * sides reach at once (managed.c). */
  case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: return 1;
  case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS: return 1;
  case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: return 1;
  case CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES: return CU_MEM_HANDLE_TYPE_NONE;
  default: return 0;
  }
}

CUresult fake_cuDeviceGetAttribute_2000(int *pi, CUdevice_attribute attrib, CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!pi || (int)attrib <= 0 || attrib >= CU_DEVICE_ATTRIBUTE_MAX) return CUDA_ERROR_INVALID_VALUE;
  *pi = attribute(attrib, d);
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceGetProperties_2000(CUdevprop_v1 *prop, CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!prop) return CUDA_ERROR_INVALID_VALUE;
  memset(prop, 0, sizeof *prop);
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->sharedMemPerBlock = 49152;
  prop->totalConstantMemory = 65536;
  prop->SIMDWidth = 32;
  prop->memPitch = 2147483647;
  prop->regsPerBlock = 65536;
  prop->clockRate = 1980000;
  prop->textureAlign = 512;
  return CUDA_SUCCESS;
}
