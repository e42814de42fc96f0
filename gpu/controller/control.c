/* The controller's lifecycle: open (segment, driver, devices, address
 * range), start, freeze/unfreeze, stop, close, info. Called by the Python
 * controller through ctypes; see cedana_gpu_controller.h.
 */
#include "cgc_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* ---- errors and logging ---------------------------------------------------*/

void cgc_set_error(cgc_t *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  if (c->log) fprintf(stderr, "cedana-gpu-controller[%s]: %s\n", c->job_id, c->err);
}

void cgc_log(cgc_t *c, const char *fmt, ...) {
  if (!c->log) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "cedana-gpu-controller[%s]: %s\n", c->job_id, buf);
}

const char *cgc_cu_name(cgc_t *c, CUresult rc) {
  static __thread char buf[32];
  const char *name = NULL;
  if (c->drv.cuGetErrorName && c->drv.cuGetErrorName(rc, &name) == CUDA_SUCCESS && name) return name;
  snprintf(buf, sizeof buf, "CUresult %d", (int)rc);
  return buf;
}

/* ---- the driver -----------------------------------------------------------*/

int cgc_driver_load(cgc_t *c) {
  /* The Python controller loaded the driver it chose; find that one by its
   * SONAME rather than loading another. */
  c->dl = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!c->dl) c->dl = dlopen("libcuda.so.1", RTLD_NOW);
  if (!c->dl) {
    cgc_set_error(c, "cannot load the CUDA driver (libcuda.so.1): %s", dlerror());
    return -ENOENT;
  }
  PFN_cuGetProcAddress_v12000 gpa = (PFN_cuGetProcAddress_v12000)dlsym(c->dl, "cuGetProcAddress_v2");
  if (!gpa) {
    cgc_set_error(c, "the CUDA driver has no cuGetProcAddress_v2 (CUDA 12 or newer is needed)");
    return -ENOSYS;
  }
  CUdriverProcAddressQueryResult st;
#define X(name, version, required)                                                                   \
  if (gpa(#name, (void **)&c->drv.name, version, CU_GET_PROC_ADDRESS_DEFAULT, &st) != CUDA_SUCCESS || \
      st != CU_GET_PROC_ADDRESS_SUCCESS)                                                             \
    c->drv.name = NULL;                                                                              \
  if ((required) && !c->drv.name) {                                                                  \
    cgc_set_error(c, "the CUDA driver does not provide %s (version %d)", #name, version);            \
    return -ENOSYS;                                                                                  \
  }
  CGC_DRIVER_FNS(X)
#undef X
  if (gpa("cuCtxSynchronize", (void **)&c->drv.cuCtxSynchronize_v2, 13000, CU_GET_PROC_ADDRESS_DEFAULT, &st) !=
      CUDA_SUCCESS)
    c->drv.cuCtxSynchronize_v2 = NULL;
  return 0;
}

/* ---- open -----------------------------------------------------------------*/

/* A job id (at most CGS_JOB_ID_MAX - 1 bytes) or a file name (at most 200):
 * letters, digits, '-', '_' and '.', not empty and not starting with '.', so
 * it names one plain file wherever it is put in a path. */
static bool name_ok(const char *s, size_t max) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > max || s[0] == '.') return false;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
          ch == '_' || ch == '.'))
      return false;
  }
  return true;
}

static void describe_devices(cgc_t *c) {
  cgs_header *h = c->hdr;
  h->driver_version = c->driver_version;
  h->device_count = c->device_count;
  for (int i = 0; i < c->device_count; i++) {
    cgs_device *d = &h->devices[i];
    CUdevice dev;
    if (c->drv.cuDeviceGet(&dev, i) != CUDA_SUCCESS) continue;
    c->drv.cuDeviceGetName(d->name, sizeof d->name - 1, dev);
    if (c->drv.cuDeviceGetUuid) {
      CUuuid u;
      if (c->drv.cuDeviceGetUuid(&u, dev) == CUDA_SUCCESS) memcpy(d->uuid, u.bytes, sizeof d->uuid);
    }
    size_t total = 0;
    if (c->drv.cuDeviceTotalMem(&total, dev) == CUDA_SUCCESS) d->total_mem = total;
    int max = CU_DEVICE_ATTRIBUTE_MAX < CGS_MAX_ATTRIBUTES ? CU_DEVICE_ATTRIBUTE_MAX : CGS_MAX_ATTRIBUTES;
    for (int a = 1; a < max; a++) {
      int v = 0;
      /* Attributes this driver does not know stay 0. */
      if (c->drv.cuDeviceGetAttribute(&v, (CUdevice_attribute)a, dev) != CUDA_SUCCESS) v = 0;
      d->attributes[a] = v;
    }
    d->cc_major = d->attributes[CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR];
    d->cc_minor = d->attributes[CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR];
  }
}

static int create_segment(cgc_t *c) {
  /* A plain file in a tmpfs directory: /dev/shm itself (what shm_open
   * does), or the job's own directory that it sees as its /dev/shm. Never
   * through a link someone planted, never over an existing file. */
  c->shm_fd = open(c->seg_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (c->shm_fd < 0) {
    int e = errno;
    if (e == EEXIST)
      cgc_set_error(c, "segment %s already exists: another controller serves job %s, or a dead one left it behind",
                    c->seg_path, c->job_id);
    else
      cgc_set_error(c, "cannot create %s: %s", c->seg_path, strerror(e));
    return -e;
  }
  c->seg_created = true;
  if (c->chown && fchown(c->shm_fd, c->uid, c->gid) != 0) {
    int e = errno;
    cgc_set_error(c, "cannot give %s to uid %u gid %u: %s", c->seg_path, c->uid, c->gid, strerror(e));
    return -e;
  }
  if (ftruncate(c->shm_fd, (off_t)c->segment_size) != 0) {
    int e = errno;
    cgc_set_error(c, "cannot size %s to %llu bytes: %s", c->seg_path, (unsigned long long)c->segment_size,
                  strerror(e));
    return -e;
  }
  void *p = mmap(NULL, c->segment_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->shm_fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    cgc_set_error(c, "cannot map %s: %s", c->seg_path, strerror(e));
    return -e;
  }
  c->hdr = p;
  c->ring = cgs_ring(c->hdr, c->ring_offset);
  cgc_guard_add(c->hdr, c->segment_size, &c->poisoned);
  return 0;
}

static void fill_header(cgc_t *c) {
  cgs_header *h = c->hdr;
  h->layout_version = CGS_LAYOUT_VERSION;
  h->header_size = CGS_HEADER_SIZE;
  h->segment_size = c->segment_size;
  h->generation = c->generation;
  h->controller_pid = (uint32_t)getpid();
  h->ring_slots = c->ring_slots;
  h->nchannels = c->nchannels;
  h->ring_offset = c->ring_offset;
  h->channels_offset = c->channels_offset;
  h->channel_stride = c->channel_stride;
  h->staging_size = c->staging_size;
  h->va_base = c->va_base;
  h->va_size = c->va_size;
  h->timeout_ms = c->timeout_ms;
  snprintf(h->job_id, sizeof h->job_id, "%s", c->job_id);
  describe_devices(c);
  for (uint32_t i = 0; i < c->ring_slots; i++) c->ring[i].seq = i;
  __atomic_store_n(&h->state, CGS_STATE_STARTING, __ATOMIC_RELAXED);
  /* The magic last: a reader that sees it sees the rest. */
  __atomic_store_n(&h->magic, CGS_MAGIC, __ATOMIC_RELEASE);
}

/* Why the calling thread's last cgc_open failed: cgc_last_error(NULL). */
static __thread char open_err[CGC_ERR_LEN];

CGC_API int cgc_open(const cgc_config *cfg, cgc_t **out) {
  if (!out) return -EINVAL;
  *out = NULL;
  cgc_t *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  c->shm_fd = -1;
  pthread_mutex_init(&c->lock, NULL);
  pthread_mutex_init(&c->va_lock, NULL);
  pthread_mutex_init(&c->evlock, NULL);
  pthread_mutex_init(&c->tlock, NULL);
  pthread_mutex_init(&c->cb_lock, NULL);
  pthread_mutex_init(&c->life_lock, NULL);
  pthread_mutex_init(&c->xlock, NULL);
  pthread_cond_init(&c->tcond, NULL);
  pthread_cond_init(&c->tidle, NULL);
  pthread_cond_init(&c->life_cond, NULL);
  const char *lg = getenv("CEDANA_GPU_LOG");
  c->log = lg && strcmp(lg, "1") == 0;
  open_err[0] = 0;
  int rc = 0;
  if (cfg && cfg->va_reserved) {
    /* The caller's reservation is ours from here: taken over below, or given
     * back by cgc_close if this open fails, whatever fails. */
    c->reservation_pending = true;
    c->va_base = cfg->va_base;
    c->va_size = cfg->va_size;
  }

  if (!cfg || !name_ok(cfg->job_id, CGS_JOB_ID_MAX - 1)) {
    cgc_set_error(c, "invalid job id: use 1-%d of [A-Za-z0-9._-], not starting with '.'", CGS_JOB_ID_MAX - 1);
    rc = -EINVAL;
    goto fail;
  }
  snprintf(c->job_id, sizeof c->job_id, "%s", cfg->job_id);
  {
    const char *dir = cfg->shm_dir && *cfg->shm_dir ? cfg->shm_dir : "/dev/shm";
    char dflt[CGS_JOB_ID_MAX + 32];
    snprintf(dflt, sizeof dflt, "%s%s", CGS_NAME_PREFIX + 1, cfg->job_id);
    const char *name = cfg->segment_name && *cfg->segment_name ? cfg->segment_name : dflt;
    if (!name_ok(name, 200)) {
      cgc_set_error(c, "invalid segment name '%s': use 1-200 of [A-Za-z0-9._-], not starting with '.'", name);
      rc = -EINVAL;
      goto fail;
    }
    int n1 = snprintf(c->seg_path, sizeof c->seg_path, "%s/%s", dir, name);
    int n2 = snprintf(c->pin_prefix, sizeof c->pin_prefix, "%s/%s.pin.", dir, name);
    if (dir[0] != '/' || n1 < 0 || n2 < 0 || (size_t)n2 + 16 >= sizeof c->pin_prefix) {
      cgc_set_error(c, "invalid segment directory '%s': use an absolute path of at most 280 bytes", dir);
      rc = -EINVAL;
      goto fail;
    }
  }
  c->ring_slots = cfg->ring_slots ? cfg->ring_slots : CGS_DEFAULT_RING_SLOTS;
  c->nchannels = cfg->nchannels ? cfg->nchannels : CGS_DEFAULT_CHANNELS;
  c->staging_size = cfg->staging_size ? cfg->staging_size : CGS_DEFAULT_STAGING;
  c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 5000;
  c->generation = cfg->generation ? cfg->generation : 1;
  c->va_base = cfg->va_base;
  c->va_size = cfg->va_size;
  c->uid = cfg->uid;
  c->gid = cfg->gid;
  c->chown = geteuid() == 0;
  if (c->ring_slots < 2 * CGS_MAX_REQUEST_SLOTS || c->ring_slots > (1u << 20) ||
      (c->ring_slots & (c->ring_slots - 1))) {
    cgc_set_error(c, "ring_slots %u must be a power of two in %u..%u", c->ring_slots, 2 * CGS_MAX_REQUEST_SLOTS,
                  1u << 20);
    rc = -EINVAL;
    goto fail;
  }
  if (c->nchannels > 4096) {
    cgc_set_error(c, "nchannels %u exceeds 4096", c->nchannels);
    rc = -EINVAL;
    goto fail;
  }
  if (c->staging_size > ((uint64_t)1 << 30)) {
    cgc_set_error(c, "staging_size %llu exceeds 1 GiB", (unsigned long long)c->staging_size);
    rc = -EINVAL;
    goto fail;
  }
  /* Whole pages, so every staging area starts page-aligned. */
  c->staging_size = (c->staging_size + 4095) & ~(uint64_t)4095;
  c->ring_mask = c->ring_slots - 1;
  c->ring_offset = CGS_HEADER_SIZE;
  c->channels_offset = c->ring_offset + (uint64_t)c->ring_slots * CGS_SLOT_SIZE;
  c->channel_stride = CGS_CHANNEL_HEADER + c->staging_size;
  c->segment_size = c->channels_offset + (uint64_t)c->nchannels * c->channel_stride;

  c->req = aligned_alloc(64, (CGS_MAX_REQUEST_SLOTS * CGS_SLOT_DATA + 63) / 64 * 64);
  c->argbuf = aligned_alloc(64, (CGS_MAX_REQUEST + 63) / 64 * 64);
  c->kparams = calloc(CGC_MAX_PARAMS, sizeof *c->kparams);
  c->blobs = calloc(c->nchannels ? c->nchannels : 1, sizeof *c->blobs);
  if (!c->req || !c->argbuf || !c->kparams || !c->blobs) {
    cgc_set_error(c, "out of memory");
    rc = -ENOMEM;
    goto fail;
  }

  rc = cgc_driver_load(c);
  if (rc) goto fail;
  CUresult cr = c->drv.cuInit(0);
  if (cr != CUDA_SUCCESS) {
    cgc_set_error(c, "cuInit failed: %s", cgc_cu_name(c, cr));
    rc = (int)cr;
    goto fail;
  }
  c->drv.cuDriverGetVersion(&c->driver_version);
  int count = 0;
  cr = c->drv.cuDeviceGetCount(&count);
  if (cr != CUDA_SUCCESS || count < 1) {
    cgc_set_error(c, "no CUDA device: %s", cr ? cgc_cu_name(c, cr) : "the driver sees none");
    rc = cr ? (int)cr : (int)CUDA_ERROR_NO_DEVICE;
    goto fail;
  }
  c->device_count = count < CGS_MAX_DEVICES ? count : CGS_MAX_DEVICES;
  cr = c->drv.cuDeviceGet(&c->dev0, 0);
  if (cr == CUDA_SUCCESS) cr = c->drv.cuDevicePrimaryCtxRetain(&c->primary0, c->dev0);
  if (cr != CUDA_SUCCESS) {
    cgc_set_error(c, "cannot retain device 0's primary context: %s", cgc_cu_name(c, cr));
    rc = (int)cr;
    goto fail;
  }
  c->own.real = c->primary0;
  c->own.primary = true;
  c->own_primary[0] = true;
  /* The caller's thread keeps whatever context it had. */
  CUcontext saved = NULL;
  c->drv.cuCtxGetCurrent(&saved);
  c->drv.cuCtxSetCurrent(c->primary0);
  rc = cgc_va_init(c, c->reservation_pending);
  if (rc == 0) rc = create_segment(c);
  if (rc == 0) {
    fill_header(c);
    if (c->drv.cuMemHostRegister)
      c->segment_registered =
          c->drv.cuMemHostRegister(c->hdr, c->segment_size, CU_MEMHOSTREGISTER_PORTABLE) == CUDA_SUCCESS;
    cgc_log(c, "serving %s: %llu bytes, %u slots, %u channels of %llu bytes, device range 0x%llx+0x%llx",
            c->seg_path, (unsigned long long)c->segment_size, c->ring_slots, c->nchannels,
            (unsigned long long)c->staging_size, (unsigned long long)c->va_base, (unsigned long long)c->va_size);
  }
  c->drv.cuCtxSetCurrent(saved);
  if (rc) goto fail;
  if (c->reservation_pending) {
    /* The range is c's now, and c holds its own primary context reference:
     * cgc_reserve's can go. */
    c->drv.cuDevicePrimaryCtxRelease(c->dev0);
    c->reservation_pending = false;
  }
  *out = c;
  return 0;

fail:
  snprintf(open_err, sizeof open_err, "%s", c->err);
  cgc_close(c);
  *out = NULL;
  return rc;
}

/* ---- serving --------------------------------------------------------------*/

static void set_state(cgc_t *c, int s) {
  __atomic_store_n(&c->state, s, __ATOMIC_RELEASE);
  __atomic_store_n(&c->hdr->state, (uint32_t)s, __ATOMIC_RELEASE);
  cgs_futex_wake(&c->hdr->state);
}

static void wake_dispatcher(cgc_t *c) {
  __atomic_fetch_add(&c->hdr->ctrl_doorbell, 1, __ATOMIC_RELEASE);
  cgs_futex_wake(&c->hdr->ctrl_doorbell);
  cgs_futex_wake((uint32_t *)&c->pause_req);
  cgs_futex_wake((uint32_t *)&c->stopping);
}

static void *heartbeat_main(void *arg) {
  cgc_t *c = arg;
  pthread_mutex_lock(&c->life_lock);
  while (!__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
    __atomic_fetch_add(&c->hdr->heartbeat, 1, __ATOMIC_RELEASE);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += CGC_HEARTBEAT_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->life_cond, &c->life_lock, &ts);
  }
  pthread_mutex_unlock(&c->life_lock);
  return NULL;
}

static void *dispatcher_entry(void *arg) {
  cgc_t *c = arg;
  c->drv.cuCtxSetCurrent(c->primary0);
  return cgc_dispatch_main(c);
}

CGC_API int cgc_start(cgc_t *c) {
  if (!c) return -EINVAL;
  if (c->started) {
    cgc_set_error(c, "already started");
    return -EALREADY;
  }
  if (pthread_create(&c->heartbeat, NULL, heartbeat_main, c) != 0) {
    cgc_set_error(c, "cannot start the heartbeat thread");
    return -EAGAIN;
  }
  if (pthread_create(&c->dispatcher, NULL, dispatcher_entry, c) != 0) {
    __atomic_store_n(&c->stopping, 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&c->life_lock);
    pthread_cond_broadcast(&c->life_cond);
    pthread_mutex_unlock(&c->life_lock);
    pthread_join(c->heartbeat, NULL);
    __atomic_store_n(&c->stopping, 0, __ATOMIC_RELEASE);
    cgc_set_error(c, "cannot start the dispatcher thread");
    return -EAGAIN;
  }
  pthread_setname_np(c->dispatcher, "cgc-dispatch");
  pthread_setname_np(c->heartbeat, "cgc-heartbeat");
  c->started = true;
  set_state(c, CGS_STATE_RUNNING);
  return 0;
}

static bool ring_empty(cgc_t *c) {
  /* head is the job's word; a lying job only delays its own freeze. */
  uint64_t head = __atomic_load_n(&c->hdr->head, __ATOMIC_ACQUIRE);
  uint64_t tail = __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
  return head == tail && !cgc_ring_ready(c);
}

static bool quiet(cgc_t *c) {
  return __atomic_load_n(&c->hdr->inflight, __ATOMIC_ACQUIRE) == 0 && ring_empty(c) &&
         cgc_tasks_pending(c, NULL, 0) == 0;
}

static int sync_all(cgc_t *c) {
  CUcontext saved = NULL;
  c->drv.cuCtxGetCurrent(&saved);
  int rc = cgc_ctx_sync(c, c->primary0);
  pthread_mutex_lock(&c->lock);
  CGC_HMAP_EACH(&c->contexts, cgc_context *, x) {
    if (x->real == c->primary0) continue;
    CUresult r = cgc_ctx_sync(c, x->real);
    if (!rc) rc = (int)r;
  }
  pthread_mutex_unlock(&c->lock);
  c->drv.cuCtxSetCurrent(saved);
  return rc;
}

CGC_API int cgc_freeze(cgc_t *c, uint32_t timeout_ms) {
  if (!c || !c->started) return -EINVAL;
  int st = __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);
  if (st == CGS_STATE_FROZEN) return 0;
  if (st != CGS_STATE_RUNNING) {
    cgc_set_error(c, "cannot freeze: the controller is not running");
    return -EINVAL;
  }
  uint64_t start = cgc_now_ns(), limit = (uint64_t)timeout_ms * 1000000ull;
  /* New calls park at the call boundary; calls in hand finish. */
  set_state(c, CGS_STATE_FREEZING);
  for (;;) {
    if (quiet(c)) {
      __atomic_store_n(&c->pause_req, 1, __ATOMIC_RELEASE);
      wake_dispatcher(c);
      while (!__atomic_load_n(&c->paused, __ATOMIC_ACQUIRE) && cgc_now_ns() - start < limit) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
      }
      /* A request may have slipped in before the dispatcher paused. */
      if (__atomic_load_n(&c->paused, __ATOMIC_ACQUIRE) && quiet(c)) break;
      __atomic_store_n(&c->pause_req, 0, __ATOMIC_RELEASE);
      wake_dispatcher(c);
    }
    if (cgc_now_ns() - start >= limit) {
      char what[256];
      int tasks = cgc_tasks_pending(c, what, sizeof what);
      uint32_t inflight = __atomic_load_n(&c->hdr->inflight, __ATOMIC_ACQUIRE);
      uint64_t queued = __atomic_load_n(&c->hdr->head, __ATOMIC_ACQUIRE) - __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
      __atomic_store_n(&c->pause_req, 0, __ATOMIC_RELEASE);
      wake_dispatcher(c);
      set_state(c, CGS_STATE_RUNNING);
      cgc_set_error(c,
                    "freeze timed out after %u ms: the job is busy in %u call(s) (%llu queued request slot(s), "
                    "%d waiting: %s)",
                    timeout_ms, inflight, (unsigned long long)queued, tasks, tasks ? what : "none");
      return -ETIMEDOUT;
    }
    struct timespec ts = {0, 500000};
    nanosleep(&ts, NULL);
  }
  /* Nothing queued, nothing waiting: let the streams drain. */
  int rc = sync_all(c);
  if (rc) cgc_log(c, "synchronize while freezing: %s", cgc_cu_name(c, (CUresult)rc));
  /* A process outside a call may be about to claim a handle region: from now
   * on it waits, so the count exported is the count the job's memory holds. */
  __atomic_fetch_or(&c->hdr->mint_regions, CGS_MINT_CLOSED, __ATOMIC_SEQ_CST);
  set_state(c, CGS_STATE_FROZEN);
  return 0;
}

CGC_API int cgc_unfreeze(cgc_t *c) {
  if (!c || !c->started) return -EINVAL;
  int st = __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);
  if (st == CGS_STATE_DEAD) {
    cgc_set_error(c, "cannot unfreeze: the controller is stopped");
    return -EINVAL;
  }
  __atomic_store_n(&c->pause_req, 0, __ATOMIC_RELEASE);
  wake_dispatcher(c);
  __atomic_fetch_and(&c->hdr->mint_regions, ~CGS_MINT_CLOSED, __ATOMIC_SEQ_CST);
  cgs_futex_wake(&c->hdr->mint_regions);
  set_state(c, CGS_STATE_RUNNING);
  return 0;
}

CGC_API int cgc_stop(cgc_t *c) {
  if (!c) return -EINVAL;
  if (!c->hdr) return 0;
  __atomic_store_n(&c->stopping, 1, __ATOMIC_RELEASE);
  set_state(c, CGS_STATE_DEAD);
  wake_dispatcher(c);
  /* Waiting calls see DEAD when they wake. */
  for (uint32_t i = 0; i < c->nchannels; i++)
    cgs_futex_wake(&cgs_channel_at(c->hdr, c->channels_offset, c->channel_stride, i)->done);
  __atomic_fetch_add(&c->hdr->cb_doorbell, 1, __ATOMIC_RELEASE);
  cgs_futex_wake(&c->hdr->cb_doorbell);
  if (c->started) {
    pthread_mutex_lock(&c->life_lock);
    pthread_cond_broadcast(&c->life_cond);
    pthread_mutex_unlock(&c->life_lock);
    pthread_join(c->dispatcher, NULL);
    pthread_join(c->heartbeat, NULL);
    c->started = false;
  }
  cgc_workers_stop(c);
  return 0;
}

CGC_API void cgc_close(cgc_t *c) {
  if (!c) return;
  cgc_stop(c);
  if (c->dl && c->drv.cuCtxSetCurrent && c->primary0) {
    CUcontext saved = NULL;
    c->drv.cuCtxGetCurrent(&saved);
    c->drv.cuCtxSetCurrent(c->primary0);
    /* Let queued work finish before its memory goes away. */
    cgc_ctx_sync(c, c->primary0);
    cgc_ckpt_free(c); /* checkpoint copy engines */
    cgc_tables_free(c);
    c->drv.cuCtxSetCurrent(c->primary0);
    cgc_va_free_all(c);
    if (c->segment_registered && c->drv.cuMemHostUnregister) c->drv.cuMemHostUnregister(c->hdr);
    c->drv.cuCtxSetCurrent(saved == c->primary0 ? NULL : saved);
    for (int d = 0; d < CGS_MAX_DEVICES; d++) {
      CUdevice dev;
      if (c->own_primary[d] && c->drv.cuDeviceGet(&dev, d) == CUDA_SUCCESS) c->drv.cuDevicePrimaryCtxRelease(dev);
    }
  }
  /* A failed open given cgc_reserve's range: the range (unless cgc_va_free_all
   * freed it above as ours) and the primary context reference go back. */
  if (c->reservation_pending) cgc_release_reserved(c->va_reserved ? 0 : c->va_base, c->va_size);
  if (c->hdr) {
    cgc_guard_remove(c->hdr);
    munmap(c->hdr, c->segment_size);
  }
  if (c->seg_created) unlink(c->seg_path);
  if (c->shm_fd >= 0) close(c->shm_fd);
  if (c->blobs)
    for (uint32_t i = 0; i < c->nchannels; i++) free(c->blobs[i].buf);
  free(c->blobs);
  free(c->req);
  free(c->argbuf);
  free(c->kparams);
  pthread_mutex_destroy(&c->lock);
  pthread_mutex_destroy(&c->va_lock);
  pthread_mutex_destroy(&c->evlock);
  pthread_mutex_destroy(&c->tlock);
  pthread_mutex_destroy(&c->cb_lock);
  pthread_mutex_destroy(&c->life_lock);
  pthread_mutex_destroy(&c->xlock);
  pthread_cond_destroy(&c->tcond);
  pthread_cond_destroy(&c->tidle);
  pthread_cond_destroy(&c->life_cond);
  if (c->dl) dlclose(c->dl);
  free(c);
}

/* ---- a standby's reservation ---------------------------------------------*/

CGC_API int cgc_reserve(uint64_t *va_base, uint64_t *va_size) {
  open_err[0] = 0;
  if (!va_base || !va_size) return -EINVAL;
  cgc_t *t = calloc(1, sizeof *t);
  if (!t) return -ENOMEM;
  CUcontext ctx = NULL;
  CUdeviceptr got = 0;
  CUresult cr = CUDA_SUCCESS;
  int rc = cgc_driver_load(t);
  if (rc == 0 && (cr = t->drv.cuInit(0)) != CUDA_SUCCESS) cgc_set_error(t, "cuInit failed: %s", cgc_cu_name(t, cr));
  if (rc == 0 && cr == CUDA_SUCCESS && (cr = t->drv.cuDeviceGet(&t->dev0, 0)) != CUDA_SUCCESS)
    cgc_set_error(t, "no CUDA device: %s", cgc_cu_name(t, cr));
  if (rc == 0 && cr == CUDA_SUCCESS && (cr = t->drv.cuDevicePrimaryCtxRetain(&ctx, t->dev0)) != CUDA_SUCCESS)
    cgc_set_error(t, "cannot retain device 0's primary context: %s", cgc_cu_name(t, cr));
  if (rc == 0 && cr != CUDA_SUCCESS) rc = (int)cr;
  if (rc == 0) {
    CUcontext saved = NULL;
    t->drv.cuCtxGetCurrent(&saved);
    t->drv.cuCtxSetCurrent(ctx);
    rc = cgc_va_geometry(t);
    if (rc == 0 && (cr = t->drv.cuMemAddressReserve(&got, t->va_size, t->granularity, 0, 0)) != CUDA_SUCCESS) {
      cgc_set_error(t, "cuMemAddressReserve of 0x%llx bytes failed: %s", (unsigned long long)t->va_size,
                    cgc_cu_name(t, cr));
      rc = (int)cr;
    }
    /* The caller's thread keeps what it had; the context stays retained. */
    t->drv.cuCtxSetCurrent(rc && saved == ctx ? NULL : saved);
    if (rc) t->drv.cuDevicePrimaryCtxRelease(t->dev0);
  }
  if (rc) {
    snprintf(open_err, sizeof open_err, "%s", t->err);
  } else {
    *va_base = got;
    *va_size = t->va_size;
  }
  if (t->dl) dlclose(t->dl);
  free(t);
  return rc;
}

/* va_base 0: only the primary context reference (cgc_open's failure path,
 * after cgc_va_free_all freed the range as its own). */
CGC_API void cgc_release_reserved(uint64_t va_base, uint64_t va_size) {
  cgc_t *t = calloc(1, sizeof *t);
  if (!t) return;
  CUcontext ctx = NULL;
  if (cgc_driver_load(t) == 0 && t->drv.cuDeviceGet(&t->dev0, 0) == CUDA_SUCCESS &&
      t->drv.cuDevicePrimaryCtxRetain(&ctx, t->dev0) == CUDA_SUCCESS) {
    if (va_base) {
      CUcontext saved = NULL;
      t->drv.cuCtxGetCurrent(&saved);
      t->drv.cuCtxSetCurrent(ctx);
      t->drv.cuMemAddressFree(va_base, va_size);
      t->drv.cuCtxSetCurrent(saved == ctx ? NULL : saved);
    }
    t->drv.cuDevicePrimaryCtxRelease(t->dev0); /* the handle just taken */
    t->drv.cuDevicePrimaryCtxRelease(t->dev0); /* cgc_reserve's */
  }
  if (t->dl) dlclose(t->dl);
  free(t);
}

/* ---- info -----------------------------------------------------------------*/

static const char *state_name(int s) {
  switch (s) {
  case CGS_STATE_STARTING: return "starting";
  case CGS_STATE_RUNNING: return "running";
  case CGS_STATE_FREEZING: return "freezing";
  case CGS_STATE_FROZEN: return "frozen";
  case CGS_STATE_RESTORING: return "restoring";
  case CGS_STATE_DEAD: return "dead";
  }
  return "unknown";
}

CGC_API int cgc_info_json(cgc_t *c, char *buf, size_t len) {
  if (!c || !buf || !len) return -EINVAL;
  pthread_mutex_lock(&c->lock);
  size_t functions = c->functions.len, modules = c->modules.len, streams = c->streams.len, events = c->events.len,
         contexts = c->contexts.len, pins = c->pins.len;
  int32_t allocs = c->alloc_live;
  uint64_t bytes = c->alloc_bytes;
  int32_t chunks = c->chunk_live;
  uint64_t chunk_bytes = c->chunk_bytes;
  int nglobals = c->nglobals;
  pthread_mutex_unlock(&c->lock);
  int pending = cgc_tasks_pending(c, NULL, 0);
  int n = snprintf(
      buf, len,
      "{\"job_id\":\"%s\",\"state\":\"%s\",\"generation\":%llu,\"controller_pid\":%d,"
      "\"segment\":\"%s\",\"segment_size\":%llu,\"ring_slots\":%u,\"channels\":%u,\"staging_size\":%llu,"
      "\"va_base\":%llu,\"va_size\":%llu,\"granularity\":%llu,\"driver_version\":%d,\"devices\":%d,"
      "\"requests\":%llu,\"launches\":%llu,\"errors\":%llu,\"invalid\":%llu,\"async_errors\":%llu,"
      "\"allocations\":%d,\"bytes\":%llu,\"modules\":%zu,\"functions\":%zu,\"globals\":%d,\"streams\":%zu,"
      "\"events\":%zu,\"contexts\":%zu,\"pins\":%zu,\"pending\":%d,\"workers\":%d,\"host_functions\":%llu,"
      "\"segment_registered\":%s,\"poisoned\":%s,\"chunks\":%d,\"chunk_bytes\":%llu,"
      "\"handed_off\":%s}",
      c->job_id, state_name(__atomic_load_n(&c->state, __ATOMIC_ACQUIRE)), (unsigned long long)c->generation,
      (int)getpid(), c->seg_path, (unsigned long long)c->segment_size, c->ring_slots, c->nchannels,
      (unsigned long long)c->staging_size, (unsigned long long)c->va_base, (unsigned long long)c->va_size,
      (unsigned long long)c->granularity, c->driver_version, c->device_count,
      (unsigned long long)__atomic_load_n(&c->n_requests, __ATOMIC_RELAXED),
      (unsigned long long)__atomic_load_n(&c->n_launches, __ATOMIC_RELAXED),
      (unsigned long long)__atomic_load_n(&c->n_errors, __ATOMIC_RELAXED),
      (unsigned long long)__atomic_load_n(&c->n_invalid, __ATOMIC_RELAXED),
      (unsigned long long)__atomic_load_n(&c->n_async_errors, __ATOMIC_RELAXED), allocs, (unsigned long long)bytes,
      modules, functions, nglobals, streams, events, contexts, pins, pending, c->nworkers,
      (unsigned long long)__atomic_load_n(&c->n_hostfn_pending, __ATOMIC_RELAXED),
      c->segment_registered ? "true" : "false",
      __atomic_load_n(&c->poisoned, __ATOMIC_ACQUIRE) ? "true" : "false", chunks, (unsigned long long)chunk_bytes,
      __atomic_load_n(&c->handed_off, __ATOMIC_ACQUIRE) ? "true" : "false");
  if (n < 0 || (size_t)n >= len) return -ENOSPC;
  /* Requests per op, for telling what a job spends its calls on. */
  size_t off = (size_t)n - 1; /* over the closing brace */
  n = snprintf(buf + off, len - off, ",\"ops\":{");
  if (n < 0 || (size_t)n >= len - off) return -ENOSPC;
  off += (size_t)n;
  bool first = true;
  for (uint32_t op = 0; op < CGS_OP_COUNT; op++) {
    uint64_t v = __atomic_load_n(&c->n_op[op], __ATOMIC_RELAXED);
    if (!v) continue;
    n = snprintf(buf + off, len - off, "%s\"%s\":%llu", first ? "" : ",", cgc_op_name(op), (unsigned long long)v);
    if (n < 0 || (size_t)n >= len - off) return -ENOSPC;
    off += (size_t)n;
    first = false;
  }
  n = snprintf(buf + off, len - off, "}}");
  if (n < 0 || (size_t)n >= len - off) return -ENOSPC;
  return 0;
}

CGC_API int cgc_handed_off(cgc_t *c) { return c ? __atomic_load_n(&c->handed_off, __ATOMIC_ACQUIRE) : 0; }

CGC_API int cgc_driver_path(cgc_t *c, char *buf, size_t len) {
  if (!c || !buf || !len) return -EINVAL;
  Dl_info info;
  if (!c->drv.cuInit || !dladdr((void *)c->drv.cuInit, &info) || !info.dli_fname) return -ENOENT;
  char real[PATH_MAX];
  const char *path = realpath(info.dli_fname, real) ? real : info.dli_fname;
  if (path[0] != '/') return -ENOENT;
  if (strlen(path) >= len) return -ENOSPC;
  strcpy(buf, path);
  return 0;
}

CGC_API const char *cgc_last_error(cgc_t *c) {
  if (!c) return open_err;
  return c->err;
}
