/* The fake NVML (libnvidia-ml.so.1): describes the fake CUDA driver's
 * devices to management tools (pynvml, nvidia-smi-like listings).
 *
 * It reads the same environment as the fake driver, so both libraries agree
 * on every device's name, UUID, memory size, compute capability and PCI
 * address without talking to each other:
 *   FAKE_CUDA_DEVICE_COUNT       number of devices (default 1, 0..8)
 *   FAKE_CUDA_DEVICE_MEMORY_MIB  memory per device (default 16384, 1..4194304)
 *   FAKE_CUDA_DEVICE_NAME        device name (default "Cedana Fake GPU")
 *   FAKE_CUDA_UUID_SEED          other GPU UUIDs (fake_uuid.h)
 * Device i's UUID is the 15 bytes "cedana-fake-gpu" followed by the byte i
 * (another prefix under FAKE_CUDA_UUID_SEED, see fake_uuid.h); its PCI
 * address is 0000:(0x18 + i):00.0.
 *
 * Error codes follow nvml.h: any call before nvmlInit or after the last
 * nvmlShutdown is NVML_ERROR_UNINITIALIZED, a bad handle, index or NULL
 * output is NVML_ERROR_INVALID_ARGUMENT, a short buffer is
 * NVML_ERROR_INSUFFICIENT_SIZE. */
#include "fake_uuid.h"
#include "nvml_types.h"

#include <cuda.h> /* CUDA_VERSION only */

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NVML_API __attribute__((visibility("default")))

#define FAKE_MAX_DEVICES 8
#define FAKE_DEFAULT_COUNT 1
#define FAKE_DEFAULT_MEMORY_MIB 16384L
#define FAKE_MAX_MEMORY_MIB (1L << 22) /* 4 TiB */
#define FAKE_DEFAULT_NAME "Cedana Fake GPU"
#define FAKE_DRIVER_VERSION "580.00-fake"
#define FAKE_NVML_VERSION "13.580.00-fake"
/* What the fake driver's cuDriverGetVersion answers (see gpu/fake/cuda/fake.h). */
#define FAKE_CUDA_DRIVER_VERSION CUDA_VERSION
#define FAKE_CC_MAJOR 9
#define FAKE_CC_MINOR 0
/* H200 SXM's PCI ids, so tools that key on them see a Hopper part. */
#define FAKE_PCI_DEVICE_ID 0x233510DEu
#define FAKE_PCI_SUBSYSTEM_ID 0x18BE10DEu
/* Device i sits at 0000:(0x18 + i):00.0, as the fake driver reports it. */
#define FAKE_PCI_FIRST_BUS 0x18u

struct nvmlDevice_st {
  unsigned index;
  char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
  char uuid[NVML_DEVICE_UUID_ASCII_LEN];
  unsigned long long total_mem;
  nvmlPciInfo_t pci;
};

/* The configuration is read once per process, like the fake driver's, so a
 * program that changes its environment later still sees one consistent set
 * of devices from both libraries. Written only inside pthread_once. */
static struct {
  unsigned count;
  struct nvmlDevice_st dev[FAKE_MAX_DEVICES];
} cfg;
static pthread_once_t cfg_once = PTHREAD_ONCE_INIT;

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned init_refs; /* guarded by init_lock */

/* An environment integer in [lo, hi]; unset, empty, malformed or
 * out-of-range values give the default. The fake driver (init.c) parses its
 * configuration by the same rule, so both always describe the same devices. */
static long env_long(const char *var, long def, long lo, long hi) {
  const char *s = getenv(var);
  if (!s || !*s)
    return def;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi)
    return def;
  return v;
}

static void format_uuid(char *out, unsigned long seed, unsigned index) {
  unsigned char b[16];
  fake_uuid_bytes(b, seed, index);
  snprintf(out, NVML_DEVICE_UUID_ASCII_LEN,
           "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
           b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
           b[15]);
}

static void load_config(void) {
  cfg.count = (unsigned)env_long("FAKE_CUDA_DEVICE_COUNT", FAKE_DEFAULT_COUNT, 0, FAKE_MAX_DEVICES);
  unsigned long long mib = (unsigned long long)env_long(
      "FAKE_CUDA_DEVICE_MEMORY_MIB", FAKE_DEFAULT_MEMORY_MIB, 1, FAKE_MAX_MEMORY_MIB);
  const char *name = getenv("FAKE_CUDA_DEVICE_NAME");
  if (!name || !*name)
    name = FAKE_DEFAULT_NAME;
  unsigned long seed;
  fake_uuid_seed(&seed);
  for (unsigned i = 0; i < FAKE_MAX_DEVICES; i++) {
    struct nvmlDevice_st *d = &cfg.dev[i];
    d->index = i;
    /* NVML names fit NVML_DEVICE_NAME_V2_BUFFER_SIZE; a longer configured
     * name is cut there, as no real board name is that long. */
    snprintf(d->name, sizeof d->name, "%s", name);
    format_uuid(d->uuid, seed, i);
    d->total_mem = mib << 20;
    d->pci.domain = 0;
    d->pci.bus = FAKE_PCI_FIRST_BUS + i;
    d->pci.device = 0;
    d->pci.pciDeviceId = FAKE_PCI_DEVICE_ID;
    d->pci.pciSubSystemId = FAKE_PCI_SUBSYSTEM_ID;
    snprintf(d->pci.busIdLegacy, sizeof d->pci.busIdLegacy, "%04X:%02X:%02X.0", d->pci.domain,
             d->pci.bus, d->pci.device);
    snprintf(d->pci.busId, sizeof d->pci.busId, "%08X:%02X:%02X.0", d->pci.domain, d->pci.bus,
             d->pci.device);
  }
}

static bool initialized(void) {
  pthread_mutex_lock(&init_lock);
  bool on = init_refs > 0;
  pthread_mutex_unlock(&init_lock);
  return on;
}

/* The device behind a handle, or NULL when the handle is not one of ours. */
static const struct nvmlDevice_st *device_of(nvmlDevice_t h) {
  for (unsigned i = 0; i < cfg.count; i++)
    if (h == &cfg.dev[i])
      return &cfg.dev[i];
  return NULL;
}

#define NEED_INIT()                    \
  do {                                 \
    if (!initialized())                \
      return NVML_ERROR_UNINITIALIZED; \
  } while (0)

/* Declares `var`, the device behind `handle`, after the checks every device
 * query makes first. */
#define NEED_DEVICE(var, handle)                         \
  NEED_INIT();                                           \
  const struct nvmlDevice_st *var = device_of(handle);   \
  if (!var)                                              \
    return NVML_ERROR_INVALID_ARGUMENT

/* Copies a string into a caller's buffer of `length` bytes, NUL included. */
static nvmlReturn_t copy_out(char *buf, unsigned length, const char *s) {
  if (!buf)
    return NVML_ERROR_INVALID_ARGUMENT;
  size_t need = strlen(s) + 1;
  if (length < need)
    return NVML_ERROR_INSUFFICIENT_SIZE;
  memcpy(buf, s, need);
  return NVML_SUCCESS;
}

/* ---- initialization --------------------------------------------------- */

NVML_API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
  pthread_once(&cfg_once, load_config);
  /* With no devices the NVIDIA kernel module would not be loaded at all. */
  if (cfg.count == 0 && !(flags & NVML_INIT_FLAG_NO_GPUS))
    return NVML_ERROR_DRIVER_NOT_LOADED;
  pthread_mutex_lock(&init_lock);
  init_refs++;
  pthread_mutex_unlock(&init_lock);
  return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

NVML_API nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

NVML_API nvmlReturn_t nvmlShutdown(void) {
  nvmlReturn_t rc = NVML_SUCCESS;
  pthread_mutex_lock(&init_lock);
  if (init_refs == 0)
    rc = NVML_ERROR_UNINITIALIZED;
  else
    init_refs--;
  pthread_mutex_unlock(&init_lock);
  return rc;
}

NVML_API const char *nvmlErrorString(nvmlReturn_t result) {
  switch (result) {
  case NVML_SUCCESS: return "Success";
  case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
  case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
  case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
  case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
  case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
  case NVML_ERROR_NOT_FOUND: return "Not Found";
  case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
  case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
  case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
  case NVML_ERROR_TIMEOUT: return "Timeout";
  case NVML_ERROR_IRQ_ISSUE: return "Interrupt request issue";
  case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
  case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
  case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
  case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
  case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
  case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
  case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
  case NVML_ERROR_IN_USE: return "In use by another client";
  case NVML_ERROR_MEMORY: return "Insufficient Memory";
  case NVML_ERROR_NO_DATA: return "No data";
  case NVML_ERROR_VGPU_ECC_NOT_SUPPORTED: return "ECC is not supported on this vGPU";
  case NVML_ERROR_INSUFFICIENT_RESOURCES: return "Insufficient resources";
  case NVML_ERROR_FREQ_NOT_SUPPORTED: return "Frequency not supported";
  case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
  case NVML_ERROR_DEPRECATED: return "Deprecated";
  case NVML_ERROR_NOT_READY: return "Not ready";
  case NVML_ERROR_GPU_NOT_FOUND: return "GPU not found";
  case NVML_ERROR_INVALID_STATE: return "Invalid state";
  case NVML_ERROR_RESET_TYPE_NOT_SUPPORTED: return "Reset type not supported";
  case NVML_ERROR_UNKNOWN: return "Unknown Error";
  }
  return "Unknown Error";
}

/* ---- system queries ----------------------------------------------------- */

NVML_API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
  NEED_INIT();
  return copy_out(version, length, FAKE_DRIVER_VERSION);
}

NVML_API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
  NEED_INIT();
  return copy_out(version, length, FAKE_NVML_VERSION);
}

/* Answers without nvmlInit, as NVIDIA's NVML does (it asks libcuda). */
NVML_API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) {
  if (!cudaDriverVersion)
    return NVML_ERROR_INVALID_ARGUMENT;
  *cudaDriverVersion = FAKE_CUDA_DRIVER_VERSION;
  return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion) {
  return nvmlSystemGetCudaDriverVersion(cudaDriverVersion);
}

/* ---- device enumeration ------------------------------------------------- */

NVML_API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
  NEED_INIT();
  if (!deviceCount)
    return NVML_ERROR_INVALID_ARGUMENT;
  *deviceCount = cfg.count;
  return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount) {
  return nvmlDeviceGetCount_v2(deviceCount);
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
  NEED_INIT();
  if (!device || index >= cfg.count)
    return NVML_ERROR_INVALID_ARGUMENT;
  *device = &cfg.dev[index];
  return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
  return nvmlDeviceGetHandleByIndex_v2(index, device);
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
  NEED_INIT();
  if (!uuid || !device)
    return NVML_ERROR_INVALID_ARGUMENT;
  for (unsigned i = 0; i < cfg.count; i++) {
    if (strcmp(uuid, cfg.dev[i].uuid) == 0) {
      *device = &cfg.dev[i];
      return NVML_SUCCESS;
    }
  }
  return NVML_ERROR_NOT_FOUND;
}

/* Accepts both spellings NVML prints: "0000:01:00.0" and "00000000:01:00.0",
 * in either case. */
static nvmlReturn_t handle_by_bus_id(const char *bus_id, nvmlDevice_t *device) {
  NEED_INIT();
  if (!bus_id || !device)
    return NVML_ERROR_INVALID_ARGUMENT;
  unsigned domain, bus, dev, fn;
  char tail;
  if (sscanf(bus_id, "%x:%x:%x.%x%c", &domain, &bus, &dev, &fn, &tail) != 4)
    return NVML_ERROR_INVALID_ARGUMENT;
  for (unsigned i = 0; i < cfg.count; i++) {
    const nvmlPciInfo_t *p = &cfg.dev[i].pci;
    if (domain == p->domain && bus == p->bus && dev == p->device && fn == 0) {
      *device = &cfg.dev[i];
      return NVML_SUCCESS;
    }
  }
  return NVML_ERROR_NOT_FOUND;
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId,
                                                       nvmlDevice_t *device) {
  return handle_by_bus_id(pciBusId, device);
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device) {
  return handle_by_bus_id(pciBusId, device);
}

/* ---- device queries ----------------------------------------------------- */

NVML_API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
  NEED_DEVICE(d, device);
  if (!index)
    return NVML_ERROR_INVALID_ARGUMENT;
  *index = d->index;
  return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber) {
  NEED_DEVICE(d, device);
  if (!minorNumber)
    return NVML_ERROR_INVALID_ARGUMENT;
  *minorNumber = d->index;
  return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
  NEED_DEVICE(d, device);
  return copy_out(name, length, d->name);
}

NVML_API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
  NEED_DEVICE(d, device);
  return copy_out(uuid, length, d->uuid);
}

NVML_API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
  NEED_DEVICE(d, device);
  if (!memory)
    return NVML_ERROR_INVALID_ARGUMENT;
  /* Each process has its own fake driver, so there is no device-wide usage
   * to report: the whole device is free. */
  memory->total = d->total_mem;
  memory->free = d->total_mem;
  memory->used = 0;
  return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
  NEED_DEVICE(d, device);
  if (!memory)
    return NVML_ERROR_INVALID_ARGUMENT;
  if (memory->version != nvmlMemory_v2)
    return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
  memory->total = d->total_mem;
  memory->reserved = 0;
  memory->free = d->total_mem;
  memory->used = 0;
  return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major,
                                                         int *minor) {
  NEED_DEVICE(d, device);
  (void)d;
  if (!major || !minor)
    return NVML_ERROR_INVALID_ARGUMENT;
  *major = FAKE_CC_MAJOR;
  *minor = FAKE_CC_MINOR;
  return NVML_SUCCESS;
}

static nvmlReturn_t pci_info(nvmlDevice_t device, nvmlPciInfo_t *pci) {
  NEED_DEVICE(d, device);
  if (!pci)
    return NVML_ERROR_INVALID_ARGUMENT;
  *pci = d->pci;
  return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
  return pci_info(device, pci);
}

NVML_API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) {
  return pci_info(device, pci);
}

/* No process ever runs on a fake device: every list is empty, which NVML
 * answers with success and a count of 0 whatever the buffer. */
static nvmlReturn_t no_processes(nvmlDevice_t device, unsigned int *count,
                                 nvmlProcessInfo_t *infos) {
  NEED_DEVICE(d, device);
  (void)d;
  (void)infos;
  if (!count)
    return NVML_ERROR_INVALID_ARGUMENT;
  *count = 0;
  return NVML_SUCCESS;
}

/* Every version of the running-process queries has the same arguments and
 * the same empty answer. */
#define NO_PROCESSES(name)                                                                  \
  NVML_API nvmlReturn_t name(nvmlDevice_t device, unsigned int *infoCount,                  \
                             nvmlProcessInfo_t *infos) {                                    \
    return no_processes(device, infoCount, infos);                                          \
  }
NO_PROCESSES(nvmlDeviceGetComputeRunningProcesses_v3)
NO_PROCESSES(nvmlDeviceGetComputeRunningProcesses_v2)
NO_PROCESSES(nvmlDeviceGetComputeRunningProcesses)
NO_PROCESSES(nvmlDeviceGetGraphicsRunningProcesses_v3)
NO_PROCESSES(nvmlDeviceGetGraphicsRunningProcesses_v2)

