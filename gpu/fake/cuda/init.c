/* Driver initialisation, configuration, version, error strings, symbol
 * lookup and the "not supported" stub. */
#include "fake.h"

#include "fake_uuid.h"
#include "log_line.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fk_config fk_cfg;
bool fk_initialized;
__thread int fk_tls_ptds;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static CUresult init_result = CUDA_ERROR_NOT_INITIALIZED;

static long env_long(const char *name, long dflt, long lo, long hi) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  char *end;
  long x = strtol(v, &end, 10);
  if (*end || x < lo || x > hi) {
    fk_log("ignoring %s=%s (expected %ld..%ld)", name, v, lo, hi);
    return dflt;
  }
  return x;
}

/* Device i's UUID: "cedana-fake-gpu" followed by the ordinal, or another
 * prefix under FAKE_CUDA_UUID_SEED (fake_uuid.h). The fake NVML derives the
 * same bytes, so both report one device identity. */
static void make_uuid(CUuuid *u, unsigned long seed, int ordinal) {
  unsigned char b[16];
  fake_uuid_bytes(b, seed, (unsigned)ordinal);
  memcpy(u->bytes, b, sizeof b);
}

static void do_init(void) {
  fk_cfg.device_count = (int)env_long("FAKE_CUDA_DEVICE_COUNT", 1, 0, FK_MAX_DEVICES);
  long mib = env_long("FAKE_CUDA_DEVICE_MEMORY_MIB", 16384, 1, 1L << 22);
  const char *name = getenv("FAKE_CUDA_DEVICE_NAME");
  fk_cfg.log_all = getenv("FAKE_CUDA_LOG") && strcmp(getenv("FAKE_CUDA_LOG"), "1") == 0;
  unsigned long seed;
  if (!fake_uuid_seed(&seed))
    fk_log("ignoring %s=%s (expected 0..4294967295)", FAKE_UUID_ENV, getenv(FAKE_UUID_ENV));
  for (int i = 0; i < fk_cfg.device_count; i++) {
    fk_device *d = &fk_cfg.devices[i];
    d->ordinal = i;
    snprintf(d->name, sizeof d->name, "%s", name && *name ? name : "Cedana Fake GPU");
    make_uuid(&d->uuid, seed, i);
    d->total_mem = (size_t)mib << 20;
  }
  if (fk_cfg.device_count == 0) {
    init_result = CUDA_ERROR_NO_DEVICE;
    return;
  }
  init_result = fk_mem_init();
  if (init_result != CUDA_SUCCESS) return;
  __atomic_store_n(&fk_initialized, true, __ATOMIC_RELEASE);
  fk_ckpt_start();
}

CUresult fake_cuInit_2000(unsigned int Flags) {
  if (Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  pthread_once(&init_once, do_init);
  return init_result;
}

CUresult fk_need_init(void) {
  return __atomic_load_n(&fk_initialized, __ATOMIC_ACQUIRE) ? CUDA_SUCCESS
                                                            : CUDA_ERROR_NOT_INITIALIZED;
}

/* FAKE_CUDA_DRIVER_VERSION=N (1000 * major + 10 * minor, at most the headers'
 * version) makes the driver report an older CUDA version, as an older NVIDIA
 * driver would: callers that gate features on it (the checkpoint API from
 * 12.5, GPU remapping from 13.0, custom storage from 13.4) can be tested
 * without one. Only the reported number changes. */
CUresult fake_cuDriverGetVersion_2020(int *driverVersion) {
  if (!driverVersion) return CUDA_ERROR_INVALID_VALUE;
  *driverVersion = FK_DRIVER_VERSION;
  const char *v = getenv("FAKE_CUDA_DRIVER_VERSION");
  if (v && *v) {
    char *end;
    long n = strtol(v, &end, 10);
    if (*end == '\0' && n >= 2000 && n <= FK_DRIVER_VERSION) *driverVersion = (int)n;
  }
  return CUDA_SUCCESS;
}

void fk_log(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cu_log_line("fake-cuda", fmt, ap);
  va_end(ap);
}

/* Each unsupported function is named once per process, so a user sees what
 * their workload needs without a flood. */
CUresult fk_unsupported(const char *symbol) {
  if (fk_unsupported_first(symbol) || fk_cfg.log_all) fk_log("%s is not supported by the fake driver", symbol);
  return CUDA_ERROR_NOT_SUPPORTED;
}
