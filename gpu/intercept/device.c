/* Initialisation, versions, error strings and devices: all answered locally
 * from the device table the controller wrote into the segment header. */
#include "ic.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

CUresult ic_cuInit_2000(unsigned int Flags) {
  if (Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = ic_attach();
  if (rc) return rc;
  int dead = __atomic_load_n(&ic_dead, __ATOMIC_ACQUIRE);
  if (dead) return (CUresult)dead;
  if (ic.device_count == 0) return CUDA_ERROR_NO_DEVICE;
  __atomic_store_n(&ic_initialized, 1, __ATOMIC_RELEASE);
  return CUDA_SUCCESS;
}

/* Works before cuInit, as the driver's does: the controller's driver version
 * when there is a controller, else the API version this library implements. */
CUresult ic_cuDriverGetVersion_2020(int *driverVersion) {
  if (!driverVersion) return CUDA_ERROR_INVALID_VALUE;
  *driverVersion = ic_attach() == CUDA_SUCCESS ? ic.driver_version : IC_DRIVER_VERSION;
  return CUDA_SUCCESS;
}

/* ---- devices ------------------------------------------------------------------ */

static CUresult get_device(CUdevice dev, const cgs_device **out) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (dev < 0 || dev >= ic.device_count) return CUDA_ERROR_INVALID_DEVICE;
  *out = &ic.h->devices[dev];
  return CUDA_SUCCESS;
}

static int attr(const cgs_device *d, CUdevice_attribute a) {
  return (unsigned)a < CGS_MAX_ATTRIBUTES ? d->attributes[a] : 0;
}

CUresult ic_cuDeviceGetCount_2000(int *count) {
  if (!count) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = ic_need_init();
  if (rc) return rc;
  *count = ic.device_count;
  return CUDA_SUCCESS;
}

CUresult ic_cuDeviceGet_2000(CUdevice_v1 *device, int ordinal) {
  if (!device) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (ordinal < 0 || ordinal >= ic.device_count) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

CUresult ic_cuDeviceGetName_2000(char *name, int len, CUdevice_v1 dev) {
  const cgs_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  snprintf(name, (size_t)len, "%.*s", (int)sizeof d->name, d->name);
  return CUDA_SUCCESS;
}

CUresult ic_cuDeviceGetUuid_11040(CUuuid *uuid, CUdevice_v1 dev) {
  const cgs_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!uuid) return CUDA_ERROR_INVALID_VALUE;
  memcpy(uuid->bytes, d->uuid, sizeof uuid->bytes);
  return CUDA_SUCCESS;
}

CUresult ic_cuDeviceTotalMem_3020(size_t *bytes, CUdevice_v1 dev) {
  const cgs_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!bytes) return CUDA_ERROR_INVALID_VALUE;
  *bytes = (size_t)d->total_mem;
  return CUDA_SUCCESS;
}

CUresult ic_cuDeviceComputeCapability_2000(int *major, int *minor, CUdevice_v1 dev) {
  const cgs_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!major || !minor) return CUDA_ERROR_INVALID_VALUE;
  *major = d->cc_major;
  *minor = d->cc_minor;
  return CUDA_SUCCESS;
}

CUresult ic_cuDeviceGetAttribute_2000(int *pi, CUdevice_attribute attrib, CUdevice_v1 dev) {
  const cgs_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!pi || (int)attrib <= 0 || attrib >= CU_DEVICE_ATTRIBUTE_MAX) return CUDA_ERROR_INVALID_VALUE;
  *pi = attr(d, attrib);
  return CUDA_SUCCESS;
}

static void pci_id(const cgs_device *d, char *out, size_t len) {
  snprintf(out, len, "%04x:%02x:%02x.0", attr(d, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID),
           attr(d, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID), attr(d, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID));
}

CUresult ic_cuDeviceGetPCIBusId_4010(char *pciBusId, int len, CUdevice_v1 dev) {
  const cgs_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!pciBusId || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  char id[32];
  pci_id(d, id, sizeof id);
  snprintf(pciBusId, (size_t)len, "%s", id);
  return CUDA_SUCCESS;
}

CUresult ic_cuDeviceGetByPCIBusId_4010(CUdevice_v1 *dev, const char *pciBusId) {
  if (!dev || !pciBusId) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = ic_need_init();
  if (rc) return rc;
  for (int i = 0; i < ic.device_count; i++) {
    char id[32];
    pci_id(&ic.h->devices[i], id, sizeof id);
    /* The domain may be left out ("bus:device.function"). */
    if (strcasecmp(id, pciBusId) == 0 || strcasecmp(id + 5, pciBusId) == 0) {
      *dev = i;
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_DEVICE;
}

/* Peer access is not forwarded (cuCtxEnablePeerAccess is not supported), so
 * no device reports it. */
CUresult ic_cuDeviceCanAccessPeer_4000(int *canAccessPeer, CUdevice_v1 dev, CUdevice_v1 peerDev) {
  const cgs_device *a, *b;
  CUresult rc = get_device(dev, &a);
  if (!rc) rc = get_device(peerDev, &b);
  if (rc) return rc;
  if (!canAccessPeer) return CUDA_ERROR_INVALID_VALUE;
  *canAccessPeer = 0;
  return CUDA_SUCCESS;
}

CUresult ic_cuDeviceGetProperties_2000(CUdevprop_v1 *prop, CUdevice_v1 dev) {
  const cgs_device *d;
  CUresult rc = get_device(dev, &d);
  if (rc) return rc;
  if (!prop) return CUDA_ERROR_INVALID_VALUE;
  memset(prop, 0, sizeof *prop);
  prop->maxThreadsPerBlock = attr(d, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
  prop->maxThreadsDim[0] = attr(d, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X);
  prop->maxThreadsDim[1] = attr(d, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y);
  prop->maxThreadsDim[2] = attr(d, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z);
  prop->maxGridSize[0] = attr(d, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X);
  prop->maxGridSize[1] = attr(d, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y);
  prop->maxGridSize[2] = attr(d, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z);
  prop->sharedMemPerBlock = attr(d, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK);
  prop->totalConstantMemory = attr(d, CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY);
  prop->SIMDWidth = attr(d, CU_DEVICE_ATTRIBUTE_WARP_SIZE);
  prop->memPitch = attr(d, CU_DEVICE_ATTRIBUTE_MAX_PITCH);
  prop->regsPerBlock = attr(d, CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK);
  prop->clockRate = attr(d, CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
  prop->textureAlign = attr(d, CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT);
  return CUDA_SUCCESS;
}
