/* Checkpoint support: the device memory to save (cgc_regions), copies
 * between it and the caller's memory (cgc_read_device, cgc_write_device),
 * and the handle tables (cgc_export_state). restore.c reads them back.
 *
 * Copies run on the calling thread (the Python controller runs several at
 * once, one per shard; ctypes lets go of the GIL), each with a copy engine of
 * its own: a non-blocking stream and a pinned bounce buffer in slices. A
 * device-to-host copy into pageable memory is pipelined: the DMA into slice
 * i+k runs while this thread copies slice i out to the destination and
 * checksums it while it is still in the cache. Into pinned memory the DMA
 * goes straight to the destination. The other way round likewise. On the
 * fake driver the "DMA" is the stream's worker thread copying, so the
 * pipeline keeps two cores busy there too.
 */
#include "cgc_internal.h"
#include "cgc_state_doc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define XF_SLICE ((uint64_t)2 << 20) /* bytes per DMA */
#define XF_SLICES 4                  /* slices in flight: an 8 MiB bounce buffer */
#define XF_PIECE ((size_t)64 << 10)  /* copy-and-checksum step: stays in L2 */

struct cgc_xfer {
  cgc_xfer *next;
  int device;
  CUstream stream;
  uint8_t *bounce; /* pinned, XF_SLICES * XF_SLICE bytes; NULL: none could be had */
  CUevent ev[XF_SLICES];
};

/* ---- contexts and engines ------------------------------------------------ */

/* A context of `device` to copy in: device 0's primary context we hold, or
 * that device's primary context, retained once. */
static CUresult dev_ctx(cgc_t *c, int device, CUcontext *out) {
  if (device == 0 && c->primary0) {
    *out = c->primary0;
    return CUDA_SUCCESS;
  }
  if (device < 0 || device >= c->device_count) return CUDA_ERROR_INVALID_DEVICE;
  pthread_mutex_lock(&c->xlock);
  CUresult rc = CUDA_SUCCESS;
  if (!c->devctx[device]) {
    CUdevice d;
    rc = c->drv.cuDeviceGet(&d, device);
    if (!rc) rc = c->drv.cuDevicePrimaryCtxRetain(&c->devctx[device], d);
  }
  *out = c->devctx[device];
  pthread_mutex_unlock(&c->xlock);
  return rc;
}

static void xfer_destroy(cgc_t *c, cgc_xfer *x) {
  for (int i = 0; i < XF_SLICES; i++)
    if (x->ev[i]) c->drv.cuEventDestroy(x->ev[i]);
  if (x->stream) c->drv.cuStreamDestroy(x->stream);
  if (x->bounce && c->drv.cuMemFreeHost) c->drv.cuMemFreeHost(x->bounce);
  free(x);
}

/* An idle engine for `device`, or a new one; the device's context is current. */
static CUresult xfer_get(cgc_t *c, int device, cgc_xfer **out) {
  pthread_mutex_lock(&c->xlock);
  for (cgc_xfer **pp = &c->xfree; *pp; pp = &(*pp)->next) {
    if ((*pp)->device != device) continue;
    cgc_xfer *x = *pp;
    *pp = x->next;
    pthread_mutex_unlock(&c->xlock);
    *out = x;
    return CUDA_SUCCESS;
  }
  pthread_mutex_unlock(&c->xlock);
  cgc_xfer *x = calloc(1, sizeof *x);
  if (!x) return CUDA_ERROR_OUT_OF_MEMORY;
  x->device = device;
  CUresult rc = c->drv.cuStreamCreateWithPriority(&x->stream, CU_STREAM_NON_BLOCKING, 0);
  for (int i = 0; !rc && i < XF_SLICES; i++) rc = c->drv.cuEventCreate(&x->ev[i], CU_EVENT_DISABLE_TIMING);
  if (rc) {
    xfer_destroy(c, x);
    return rc;
  }
  /* Without pinned memory copies still work, synchronously. */
  void *b = NULL;
  if (c->drv.cuMemAllocHost && c->drv.cuMemAllocHost(&b, XF_SLICES * XF_SLICE) == CUDA_SUCCESS) x->bounce = b;
  pthread_mutex_lock(&c->xlock);
  c->nxfer++;
  pthread_mutex_unlock(&c->xlock);
  *out = x;
  return CUDA_SUCCESS;
}

static void xfer_put(cgc_t *c, cgc_xfer *x) {
  pthread_mutex_lock(&c->xlock);
  x->next = c->xfree;
  c->xfree = x;
  pthread_mutex_unlock(&c->xlock);
}

void cgc_ckpt_free(cgc_t *c) {
  if (!c->dl) return;
  CUcontext saved = NULL;
  if (c->drv.cuCtxGetCurrent) c->drv.cuCtxGetCurrent(&saved);
  while (c->xfree) {
    cgc_xfer *x = c->xfree;
    c->xfree = x->next;
    CUcontext ctx;
    if (dev_ctx(c, x->device, &ctx) == CUDA_SUCCESS) c->drv.cuCtxSetCurrent(ctx);
    xfer_destroy(c, x);
  }
  if (c->drv.cuCtxSetCurrent) c->drv.cuCtxSetCurrent(saved);
  for (int d = 0; d < CGS_MAX_DEVICES; d++) {
    CUdevice dev;
    if (c->devctx[d] && c->drv.cuDeviceGet(&dev, d) == CUDA_SUCCESS) c->drv.cuDevicePrimaryCtxRelease(dev);
    c->devctx[d] = NULL;
  }
}

/* ---- copies -------------------------------------------------------------- */

/* Whether all of [p, p+n) is page-locked memory the driver knows. */
static bool host_pinned(cgc_t *c, const void *p, uint64_t n) {
  if (!c->drv.cuPointerGetAttribute) return false;
  unsigned int type = 0;
  CUdeviceptr start = 0;
  size_t len = 0;
  CUdeviceptr a = (CUdeviceptr)(uintptr_t)p;
  if (c->drv.cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, a) != CUDA_SUCCESS ||
      type != CU_MEMORYTYPE_HOST)
    return false;
  if (c->drv.cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, a) != CUDA_SUCCESS ||
      c->drv.cuPointerGetAttribute(&len, CU_POINTER_ATTRIBUTE_RANGE_SIZE, a) != CUDA_SUCCESS)
    return false;
  return a >= start && a - start <= len && n <= len - (a - start);
}

/* dst = src, and the checksum of the bytes, a cache-sized piece at a time. */
static uint32_t copy_crc(uint8_t *dst, const uint8_t *src, size_t n, uint32_t crc) {
  for (size_t off = 0; off < n; off += XF_PIECE) {
    size_t m = n - off < XF_PIECE ? n - off : XF_PIECE;
    memcpy(dst + off, src + off, m);
    crc = cgc_crc32c_update(crc, dst + off, m);
  }
  return crc;
}

/* Validate [addr, addr+size) against the mapped chunks; its device. */
static int region_device(cgc_t *c, const char *what, uint64_t addr, uint64_t size, int *device) {
  pthread_mutex_lock(&c->lock);
  cgc_chunk *ch = addr + size >= addr ? cgc_chunk_holding(c, addr, size) : NULL;
  if (ch) *device = ch->device;
  /* Or one of the job's VMM allocations, at our own mapping of it. */
  bool vmm = !ch && addr + size >= addr && cgc_vmm_shadow_device(c, addr, size, device);
  pthread_mutex_unlock(&c->lock);
  if (!ch && !vmm) {
    cgc_set_error(c, "%s: device range 0x%llx+%llu is not inside one mapped region", what,
                  (unsigned long long)addr, (unsigned long long)size);
    return -EINVAL;
  }
  return 0;
}

typedef struct copy_job {
  cgc_t *c;
  cgc_xfer *x;
  CUcontext saved;
} copy_job;

static CUresult copy_begin(cgc_t *c, int device, copy_job *j) {
  j->c = c;
  j->x = NULL;
  j->saved = NULL;
  c->drv.cuCtxGetCurrent(&j->saved);
  CUcontext ctx;
  CUresult rc = dev_ctx(c, device, &ctx);
  if (!rc) rc = c->drv.cuCtxSetCurrent(ctx);
  if (!rc) rc = xfer_get(c, device, &j->x);
  return rc;
}

static void copy_end(copy_job *j) {
  if (j->x) xfer_put(j->c, j->x);
  j->c->drv.cuCtxSetCurrent(j->saved);
}

static CUresult sync_stream(cgc_t *c, CUstream s) {
  if (c->drv.cuStreamSynchronize) return c->drv.cuStreamSynchronize(s);
  CUresult rc;
  while ((rc = c->drv.cuStreamQuery(s)) == CUDA_ERROR_NOT_READY) {
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
  }
  return rc;
}

static CUresult read_pipe(cgc_t *c, cgc_xfer *x, uint64_t addr, uint8_t *dst, uint64_t size, bool direct,
                          uint32_t *crc) {
  uint64_t n = (size + XF_SLICE - 1) / XF_SLICE;
  CUresult rc = CUDA_SUCCESS;
  uint64_t issued = 0;
#define SLICE_LEN(i) ((i) + 1 < n ? XF_SLICE : size - (i) * XF_SLICE)
#define SLICE_BUF(i) (direct ? dst + (i) * XF_SLICE : x->bounce + ((i) % XF_SLICES) * XF_SLICE)
  for (; issued < n && issued < XF_SLICES && !rc; issued++) {
    rc = c->drv.cuMemcpyDtoHAsync(SLICE_BUF(issued), addr + issued * XF_SLICE, SLICE_LEN(issued), x->stream);
    if (!rc) rc = c->drv.cuEventRecord(x->ev[issued % XF_SLICES], x->stream);
  }
  for (uint64_t i = 0; i < n && !rc; i++) {
    rc = c->drv.cuEventSynchronize(x->ev[i % XF_SLICES]);
    if (rc) break;
    uint64_t len = SLICE_LEN(i);
    if (direct)
      *crc = cgc_crc32c_update(*crc, dst + i * XF_SLICE, len);
    else
      *crc = copy_crc(dst + i * XF_SLICE, SLICE_BUF(i), len, *crc);
    if (issued < n) {
      rc = c->drv.cuMemcpyDtoHAsync(SLICE_BUF(issued), addr + issued * XF_SLICE, SLICE_LEN(issued), x->stream);
      if (!rc) rc = c->drv.cuEventRecord(x->ev[issued % XF_SLICES], x->stream);
      issued++;
    }
  }
  /* Never leave a DMA running into memory we hand back. */
  CUresult r2 = sync_stream(c, x->stream);
  return rc ? rc : r2;
}

static CUresult write_pipe(cgc_t *c, cgc_xfer *x, uint64_t addr, const uint8_t *src, uint64_t size, bool direct,
                           uint32_t *crc) {
  uint64_t n = (size + XF_SLICE - 1) / XF_SLICE;
  CUresult rc = CUDA_SUCCESS;
  for (uint64_t i = 0; i < n && !rc; i++) {
    uint64_t len = SLICE_LEN(i);
    const uint8_t *from;
    if (direct) {
      from = src + i * XF_SLICE;
      if (crc) *crc = cgc_crc32c_update(*crc, from, len);
    } else {
      /* The slice's previous DMA must be done before it is refilled. */
      if (i >= XF_SLICES && (rc = c->drv.cuEventSynchronize(x->ev[i % XF_SLICES]))) break;
      uint8_t *slot = x->bounce + (i % XF_SLICES) * XF_SLICE;
      if (crc)
        *crc = copy_crc(slot, src + i * XF_SLICE, len, *crc);
      else
        memcpy(slot, src + i * XF_SLICE, len);
      from = slot;
    }
    rc = c->drv.cuMemcpyHtoDAsync(addr + i * XF_SLICE, from, len, x->stream);
    if (!rc) rc = c->drv.cuEventRecord(x->ev[i % XF_SLICES], x->stream);
  }
#undef SLICE_LEN
#undef SLICE_BUF
  CUresult r2 = sync_stream(c, x->stream);
  return rc ? rc : r2;
}

/* Without a bounce buffer: plain synchronous copies, checksummed by piece. */
static CUresult read_plain(cgc_t *c, uint64_t addr, uint8_t *dst, uint64_t size, uint32_t *crc) {
  for (uint64_t off = 0; off < size; off += XF_SLICE) {
    uint64_t len = size - off < XF_SLICE ? size - off : XF_SLICE;
    CUresult rc = c->drv.cuMemcpyDtoH ? c->drv.cuMemcpyDtoH(dst + off, addr + off, len) : CUDA_ERROR_NOT_SUPPORTED;
    if (rc) return rc;
    *crc = cgc_crc32c_update(*crc, dst + off, len);
  }
  return CUDA_SUCCESS;
}

static CUresult write_plain(cgc_t *c, uint64_t addr, const uint8_t *src, uint64_t size, uint32_t *crc) {
  for (uint64_t off = 0; off < size; off += XF_SLICE) {
    uint64_t len = size - off < XF_SLICE ? size - off : XF_SLICE;
    if (crc) *crc = cgc_crc32c_update(*crc, src + off, len);
    CUresult rc = c->drv.cuMemcpyHtoD ? c->drv.cuMemcpyHtoD(addr + off, src + off, len) : CUDA_ERROR_NOT_SUPPORTED;
    if (rc) return rc;
  }
  return CUDA_SUCCESS;
}

/* The copy behind cgc_read_device (into dst) and cgc_write_device (from
 * src): one range between the device and host memory, pipelined through the
 * bounce buffer or straight from pinned memory where it can be. The checksum
 * goes on from *checksum; a read always computes it, a write only when
 * asked. */
static int device_copy(cgc_t *c, bool write, uint64_t addr, void *dst, const void *src, uint64_t size,
                       uint64_t *checksum) {
  const char *who = write ? "cgc_write_device" : "cgc_read_device";
  if (!(write ? src : dst) && size) {
    cgc_set_error(c, "%s: no %s buffer", who, write ? "source" : "destination");
    return -EINVAL;
  }
  uint32_t crc = ~(uint32_t)(checksum ? *checksum : 0);
  int device = 0, r = region_device(c, who, addr, size, &device);
  if (r) return r;
  if (size) {
    copy_job j;
    CUresult rc = copy_begin(c, device, &j);
    if (!rc && write) {
      bool direct = host_pinned(c, src, size);
      uint32_t *sum = checksum ? &crc : NULL;
      rc = direct || j.x->bounce ? write_pipe(c, j.x, addr, src, size, direct, sum)
                                 : write_plain(c, addr, src, size, sum);
    } else if (!rc) {
      bool direct = host_pinned(c, dst, size);
      rc = direct || j.x->bounce ? read_pipe(c, j.x, addr, dst, size, direct, &crc)
                                 : read_plain(c, addr, dst, size, &crc);
    }
    copy_end(&j);
    if (rc) {
      cgc_set_error(c, "%s: copy %s 0x%llx+%llu failed: %s", who, write ? "to" : "of", (unsigned long long)addr,
                    (unsigned long long)size, cgc_cu_name(c, rc));
      return (int)rc;
    }
  }
  if (checksum) *checksum = (uint32_t)~crc;
  return 0;
}

CGC_API int cgc_read_device(cgc_t *c, uint64_t addr, void *dst, uint64_t size, uint64_t *checksum) {
  return c ? device_copy(c, false, addr, dst, NULL, size, checksum) : -EINVAL;
}

CGC_API int cgc_write_device_checksum(cgc_t *c, uint64_t addr, const void *src, uint64_t size, uint64_t *checksum) {
  return c ? device_copy(c, true, addr, NULL, src, size, checksum) : -EINVAL;
}

CGC_API int cgc_write_device(cgc_t *c, uint64_t addr, const void *src, uint64_t size) {
  return cgc_write_device_checksum(c, addr, src, size, NULL);
}

/* ---- regions ------------------------------------------------------------- */

static int cmp_chunk(const void *a, const void *b) {
  const cgc_chunk *x = *(cgc_chunk *const *)a, *y = *(cgc_chunk *const *)b;
  return x->base < y->base ? -1 : x->base > y->base;
}

/* The chunks holding allocations, sorted by address. Caller holds c->lock
 * and frees the array. */
static cgc_chunk **live_chunks(cgc_t *c, size_t *n) {
  cgc_chunk **v = malloc(((size_t)c->nchunks + 1) * sizeof *v);
  *n = 0;
  if (!v) return NULL;
  for (int32_t i = 0; i < c->nchunks; i++)
    if (c->chunks[i] && c->chunks[i]->used) v[(*n)++] = c->chunks[i];
  qsort(v, *n, sizeof *v, cmp_chunk);
  return v;
}

CGC_API int cgc_regions(cgc_t *c, uint64_t *pairs, size_t max_pairs, size_t *count) {
  if (!c || !count || (max_pairs && !pairs)) return -EINVAL;
  pthread_mutex_lock(&c->lock);
  size_t n;
  cgc_chunk **v = live_chunks(c, &n);
  if (!v) {
    pthread_mutex_unlock(&c->lock);
    cgc_set_error(c, "out of memory");
    return -ENOMEM;
  }
  for (size_t i = 0; i < n && i < max_pairs; i++) {
    pairs[2 * i] = v[i]->base;
    pairs[2 * i + 1] = v[i]->size;
  }
  /* Then the job's VMM allocations (vmm.c), each where we mapped it. */
  n += cgc_vmm_regions(c, n < max_pairs ? pairs + 2 * n : NULL, n < max_pairs ? max_pairs - n : 0);
  pthread_mutex_unlock(&c->lock);
  free(v);
  *count = n;
  if (n > max_pairs) {
    cgc_set_error(c, "cgc_regions: %zu regions do not fit in %zu pairs", n, max_pairs);
    return -ENOSPC;
  }
  return 0;
}

/* ---- pinned files -------------------------------------------------------- */

CUresult cgc_pin_map(cgc_t *c, uint32_t id, uint64_t size, uint64_t app_addr, cgc_pin **out) {
  char path[sizeof c->pin_prefix + 16];
  snprintf(path, sizeof path, "%s%u", c->pin_prefix, id);
  /* The job names the file; never follow a link it may have planted, and
   * map only a regular file of its own user that is large enough. */
  int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return CUDA_ERROR_INVALID_VALUE;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < size ||
      (st.st_uid != geteuid() && st.st_uid != c->uid)) {
    close(fd);
    return CUDA_ERROR_INVALID_VALUE;
  }
  /* Under unified addressing a pinned range's device address is its host
   * address, and the job hands out its own (cuMemHostGetDevicePointer): map
   * the file at the job's address too, so kernels and copies that use those
   * pointers reach the same pages here. Never over anything of ours
   * (MAP_FIXED_NOREPLACE); if the place is taken, copies still work by
   * (pin id, offset), but device pointers into this range do not. */
  void *want = (void *)(uintptr_t)app_addr;
  void *map = MAP_FAILED;
  if (app_addr && app_addr % (uint64_t)sysconf(_SC_PAGESIZE) == 0) {
    map = mmap(want, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    if (map != MAP_FAILED && map != want) { /* a kernel that ignores the flag */
      munmap(map, size);
      map = MAP_FAILED;
    }
  }
  if (map == MAP_FAILED) map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  cgc_pin *p = calloc(1, sizeof *p);
  if (!p) {
    munmap(map, size);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  /* The job may shrink the file later: reads past its end then see zeros
   * instead of killing us. */
  cgc_guard_add(map, size, NULL);
  p->id = id;
  p->size = size;
  p->map = map;
  p->app_addr = app_addr;
  p->same_addr = map == want;
  /* Registered pages make async copies real DMA; without it copies still
   * work, synchronously. */
  if (c->drv.cuMemHostRegister)
    p->registered = c->drv.cuMemHostRegister(map, size, CU_MEMHOSTREGISTER_PORTABLE) == CUDA_SUCCESS;
  *out = p;
  return CUDA_SUCCESS;
}

/* ---- export -------------------------------------------------------------- */

static int write_file(cgc_t *c, const char *dir, const char *name, const void *buf, uint64_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    cgc_set_error(c, "cannot create %s: %s", path, strerror(e));
    return -e;
  }
  const uint8_t *p = buf;
  while (n) {
    ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = w < 0 ? errno : ENOSPC;
      close(fd);
      cgc_set_error(c, "cannot write %s: %s", path, strerror(e));
      return -e;
    }
    p += w;
    n -= (uint64_t)w;
  }
  if (close(fd) != 0) {
    int e = errno;
    cgc_set_error(c, "cannot write %s: %s", path, strerror(e));
    return -e;
  }
  return 0;
}

static int make_dir(cgc_t *c, const char *dir, const char *sub) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, sub);
  if (mkdir(path, 0700) != 0 && errno != EEXIST) {
    int e = errno;
    cgc_set_error(c, "cannot create %s: %s", path, strerror(e));
    return -e;
  }
  return 0;
}

static uint64_t minted_ctx(const cgc_context *x) { return x ? x->minted : 0; }

/* The job's address of a global: where it was before any restore moved it. */
static uint64_t job_dptr(cgc_t *c, uint64_t dptr) {
  for (int i = 0; i < c->nremaps; i++)
    if (c->remaps[i].now == dptr) return c->remaps[i].old;
  return dptr;
}

/* Everything but the device memory; caller holds c->lock. The document is
 * written record by record through state_doc.c; the files beside it here. */
static int export_locked(cgc_t *c, const char *dir, FILE *f) {
  int rc;
  cgs_header *h = c->hdr;
  const char *name = strrchr(c->seg_path, '/');
  name = name ? name + 1 : c->seg_path;
  cjw w;
  cjw_init(&w, f);
  sd_put_header(&w, &(sd_header){
                        .job_id = c->job_id,
                        .app_job_id = c->app_job_id[0] ? c->app_job_id : c->job_id,
                        .seg_name = name,
                        .seg_size = c->segment_size,
                        .ring_slots = c->ring_slots,
                        .nchannels = c->nchannels,
                        .staging_size = c->staging_size,
                        .timeout_ms = c->timeout_ms,
                        .generation = c->generation,
                        .va_base = c->va_base,
                        .va_size = c->va_size,
                        .granularity = c->granularity,
                        .driver_version = c->driver_version,
                        .async_error = h ? (int32_t)__atomic_load_n(&h->async_error, __ATOMIC_ACQUIRE) : 0,
                        .mint_regions = h ? __atomic_load_n(&h->mint_regions, __ATOMIC_ACQUIRE) & ~CGS_MINT_CLOSED : 0,
                    });
  sd_list_begin(&w, "devices");
  for (int i = 0; i < c->device_count; i++) {
    CUdevice dev;
    char dname[256] = "";
    sd_device d = {.ordinal = i, .name = dname};
    size_t total = 0;
    int major = 0, minor = 0;
    if (c->drv.cuDeviceGet(&dev, i) == CUDA_SUCCESS) {
      c->drv.cuDeviceGetName(dname, sizeof dname - 1, dev);
      CUuuid u;
      if (c->drv.cuDeviceGetUuid && c->drv.cuDeviceGetUuid(&u, dev) == CUDA_SUCCESS) memcpy(d.uuid, u.bytes, 16);
      c->drv.cuDeviceTotalMem(&total, dev);
      c->drv.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
      c->drv.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
    }
    d.total_mem = total;
    d.cc_major = major;
    d.cc_minor = minor;
    sd_put_device(&w, &d);
  }
  sd_list_end(&w);

  sd_list_begin(&w, "contexts");
  CGC_HMAP_EACH(&c->contexts, const cgc_context *, x) {
    sd_put_context(&w, &(sd_context){x->minted, x->device, x->flags, x->primary, x->refs});
  }
  sd_list_end(&w);

  /* Chunks, then every allocation by chunk, in address order. */
  size_t nch;
  cgc_chunk **v = live_chunks(c, &nch);
  if (!v) {
    cgc_set_error(c, "out of memory");
    return -ENOMEM;
  }
  uint64_t need[CGS_MAX_DEVICES] = {0};
  sd_rows_begin(&w, "chunks");
  for (size_t i = 0; i < nch; i++) {
    sd_put_chunk(&w, &(sd_chunk){v[i]->base, v[i]->size, v[i]->device, v[i]->slot_size});
    need[v[i]->device] += v[i]->size;
  }
  sd_list_end(&w);
  for (int i = 0; i < c->nvphys; i++) need[c->vphys[i]->device] += c->vphys[i]->size;
  cjw_key(&w, "device_bytes"); /* a short list of numbers: one line */
  cjw_arr_begin(&w, false);
  for (int d = 0; d < c->device_count; d++) cjw_u64(&w, need[d]);
  cjw_arr_end(&w);
  sd_rows_begin(&w, "allocations");
  for (size_t i = 0; i < nch; i++) {
    const cgc_chunk *ch = v[i];
    for (uint32_t s = 0; s < ch->nslots; s++) {
      const cgc_alloc *a = ch->slots[s];
      if (a) sd_put_alloc(&w, &(sd_alloc){a->dptr, a->req_size, i, a->ctx});
    }
  }
  sd_list_end(&w);
  free(v);

  /* Modules and their images. */
  rc = make_dir(c, dir, "modules");
  if (rc) return rc;
  sd_list_begin(&w, "modules");
  int nmod = 0;
  CGC_HMAP_EACH(&c->modules, cgc_module *, m) {
    char file[64];
    snprintf(file, sizeof file, "modules/%d.img", nmod);
    rc = write_file(c, dir, file, m->image, m->image_size);
    if (rc) return rc;
    sd_put_module(&w, &(sd_module){m->minted, minted_ctx(m->ctx), file, m->image_size,
                                   cgc_checksum(m->image, m->image_size, 0)});
    nmod++;
  }
  sd_list_end(&w);

  sd_list_begin(&w, "functions");
  CGC_HMAP_EACH(&c->functions, const cgc_function *, fn) {
    sd_function d = {fn->minted, fn->module->minted, fn->name, fn->nparams, fn->params_size, fn->params,
                     fn->attr_set, {0}};
    memcpy(d.attrs, fn->attrs, sizeof d.attrs);
    sd_put_function(&w, &d);
  }
  sd_list_end(&w);

  /* Known module globals and their contents: a restore reloads the module
   * (fresh values, new addresses) and puts them back. */
  sd_list_begin(&w, "globals");
  uint64_t gbytes = 0;
  for (int i = 0; i < c->nglobals; i++) gbytes += c->globals[i].size;
  uint8_t *gbuf = gbytes ? malloc(gbytes) : NULL;
  if (gbytes && !gbuf) {
    cgc_set_error(c, "out of memory for %llu bytes of module globals", (unsigned long long)gbytes);
    return -ENOMEM;
  }
  uint64_t goff = 0;
  for (int i = 0; i < c->nglobals; i++) {
    const cgc_global *g = &c->globals[i];
    if (!g->name) continue; /* cannot be found again */
    CUresult cr = c->drv.cuCtxSetCurrent(g->module->ctx ? g->module->ctx->real : c->primary0);
    if (!cr && g->size) cr = c->drv.cuMemcpyDtoH ? c->drv.cuMemcpyDtoH(gbuf + goff, g->dptr, g->size)
                                                 : CUDA_ERROR_NOT_SUPPORTED;
    if (cr) {
      free(gbuf);
      cgc_set_error(c, "cannot read module global %s (0x%llx+%llu): %s", g->name, (unsigned long long)g->dptr,
                    (unsigned long long)g->size, cgc_cu_name(c, cr));
      return (int)cr;
    }
    sd_put_global(&w, &(sd_global){g->module->minted, g->name, job_dptr(c, g->dptr), g->size, goff,
                                   cgc_checksum(gbuf + goff, g->size, 0)});
    goff += g->size;
  }
  sd_list_end(&w);
  rc = write_file(c, dir, "globals.bin", gbuf, goff);
  free(gbuf);
  if (rc) return rc;

  sd_list_begin(&w, "streams");
  CGC_HMAP_EACH(&c->streams, const cgc_stream *, s) {
    sd_put_stream(&w, &(sd_stream){s->minted, minted_ctx(s->ctx), s->flags, s->priority});
  }
  sd_list_end(&w);
  sd_list_begin(&w, "events");
  CGC_HMAP_EACH(&c->events, const cgc_event *, e) {
    sd_put_event(&w, &(sd_event){e->minted, minted_ctx(e->ctx), e->flags});
  }
  sd_list_end(&w);
  sd_list_begin(&w, "pins");
  CGC_HMAP_EACH(&c->pins, const cgc_pin *, p) {
    sd_put_pin(&w, &(sd_pin){p->id, p->size, p->app_addr, p->same_addr, p->registered});
  }
  sd_list_end(&w);

  /* The job's own VMM objects (vmm.c): optional lists, absent before them. */
  sd_list_begin(&w, "vmm_reservations");
  for (int i = 0; i < c->nvresv; i++)
    sd_put_vresv(&w, &(sd_vresv){c->vresv[i].addr, c->vresv[i].size, c->vresv[i].taken});
  sd_list_end(&w);
  sd_list_begin(&w, "vmm_physical");
  for (int i = 0; i < c->nvphys; i++) {
    const cgc_vphys *p = c->vphys[i];
    sd_put_vphys(&w, &(sd_vphys){p->id, p->size, p->device, p->shadow, p->released});
  }
  sd_list_end(&w);
  sd_list_begin(&w, "vmm_mappings");
  for (int i = 0; i < c->nvmap; i++) {
    const cgc_vmap *m = &c->vmap[i];
    sd_put_vmap(&w, &(sd_vmap){m->addr, m->size, m->phys, cgc_vmm_access_bits(m)});
  }
  sd_list_end(&w);

  /* The job's memory pools (pool.c), then their blocks: allocations listed
   * above. Frozen, every stream has reached its frees. */
  sd_list_begin(&w, "pools");
  CGC_HMAP_EACH(&c->pools, const cgc_pool *, p) {
    uint32_t reuse = (p->reuse_follow ? 1u : 0u) | (p->reuse_opportunistic ? 2u : 0u) | (p->reuse_internal ? 4u : 0u);
    sd_put_pool(&w, &(sd_pool){p->minted, p->device, p->is_default, p->destroyed, p->max_size, p->threshold, reuse,
                               p->reserved_high, p->used_high});
  }
  sd_list_end(&w);
  sd_list_begin(&w, "pool_blocks");
  for (int32_t i = 0; i < c->nallocs; i++) {
    const cgc_alloc *a = c->allocs[i];
    if (a && a->pool)
      sd_put_pblock(&w, &(sd_pblock){a->dptr, a->pool->minted, a->pool_size, a->cached, a->freed_on});
  }
  sd_list_end(&w);

  /* Module images a thread was still sending (BLOB_PUT) when it parked. */
  sd_list_begin(&w, "blobs");
  bool first = true;
  for (uint32_t ch = 0; ch < c->nchannels; ch++) {
    const cgc_blob *b = &c->blobs[ch];
    if (!b->buf) continue;
    if (first) {
      rc = make_dir(c, dir, "blobs");
      if (rc) return rc;
    }
    char file[64];
    snprintf(file, sizeof file, "blobs/%u.bin", ch);
    rc = write_file(c, dir, file, b->buf, b->filled);
    if (rc) return rc;
    sd_put_blob(&w, &(sd_blob){ch, b->total, b->filled, file, cgc_checksum(b->buf, b->filled, 0)});
    first = false;
  }
  sd_list_end(&w);
  sd_put_end(&w, &(sd_counts){(uint64_t)c->alloc_live, c->alloc_bytes, nch, (uint64_t)nmod});
  return 0;
}

CGC_API int cgc_export_state(cgc_t *c, const char *dir) {
  if (!c || !dir) return -EINVAL;
  int st = __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);
  if (st != CGS_STATE_FROZEN && st != CGS_STATE_DEAD && c->started) {
    cgc_set_error(c, "cannot export the GPU state: the job is running (freeze it first)");
    return -EBUSY;
  }
  if (cgc_tasks_pending(c, NULL, 0)) {
    cgc_set_error(c, "cannot export the GPU state: requests are still completing");
    return -EBUSY;
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    int e = errno;
    cgc_set_error(c, "cannot create %s: %s", dir, strerror(e));
    return -e;
  }
  char path[4096], tmp[4096];
  snprintf(path, sizeof path, "%s/" CGC_STATE_NAME, dir);
  snprintf(tmp, sizeof tmp, "%s/." CGC_STATE_NAME ".tmp", dir);
  FILE *f = fopen(tmp, "we");
  if (!f) {
    int e = errno;
    cgc_set_error(c, "cannot create %s: %s", tmp, strerror(e));
    return -e;
  }
  char *fbuf = malloc(1 << 20);
  if (fbuf) setvbuf(f, fbuf, _IOFBF, 1 << 20);
  CUcontext saved = NULL;
  c->drv.cuCtxGetCurrent(&saved);
  pthread_mutex_lock(&c->lock);
  int rc = export_locked(c, dir, f);
  pthread_mutex_unlock(&c->lock);
  c->drv.cuCtxSetCurrent(saved);
  if (ferror(f) && !rc) {
    cgc_set_error(c, "cannot write %s", tmp);
    rc = -EIO;
  }
  if (fclose(f) != 0 && !rc) {
    int e = errno;
    cgc_set_error(c, "cannot write %s: %s", tmp, strerror(e));
    rc = -e;
  }
  if (!rc && rename(tmp, path) != 0) {
    int e = errno;
    cgc_set_error(c, "cannot rename %s: %s", tmp, strerror(e));
    rc = -e;
  }
  free(fbuf);
  if (rc) unlink(tmp);
  return rc;
}
