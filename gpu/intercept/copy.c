/* Copies and memsets.
 *
 * Where the host side of a copy is pinned memory (a file the controller maps
 * too), the request names it by (pin id, offset): the asynchronous variants
 * queue and return at once. Pageable memory goes through the calling
 * thread's staging area in pieces of at most staging_size bytes, each piece
 * a round trip (HtoD: fill, send, wait; DtoH: send, wait, copy out). The
 * asynchronous variants do the same with pageable memory and return once
 * the bytes are staged or copied out, as the driver itself stages pageable
 * memory. Memory registered with cuMemHostRegister is the job's own and is
 * treated as pageable.
 *
 * Device pointers are checked against the allocations the job was given, so
 * a bad pointer gets CUDA_ERROR_INVALID_VALUE synchronously, as from the
 * driver, instead of a sticky error later.
 *
 * Synchronous copies run on the NULL stream: the legacy one, or the thread's
 * per-thread default stream for the _ptds variants.
 */
#include "ic.h"

#include <string.h>

typedef struct cp {
  ic_thread *t;
  ic_obj *ctx;
  uint64_t stream;
  uint32_t per_thread;
  int async;
} cp;

static CUresult begin(cp *c, CUstream s, int async) {
  c->t = ic_self();
  c->async = async;
  return ic_need_ctx_stream(c->t, s, &c->ctx, &c->stream, &c->per_thread);
}

/* Pinned memory holding [p, p+n): its file and offset. */
static bool pinned(const void *p, size_t n, uint32_t *pin, uint64_t *off) {
  ic_alloc a;
  uintptr_t v = (uintptr_t)p;
  if (!ic_mem_find(v, &a) || (a.kind != IC_MEM_HOST && a.kind != IC_MEM_MANAGED) || n > a.size - (v - a.base))
    return false;
  *pin = a.pin_id;
  *off = v - a.base;
  return true;
}

static bool in_va(uintptr_t p) { return ic.va_size && p >= ic.va_base && p - ic.va_base < ic.va_size; }

static CUresult send_copy(cp *c, uint32_t op, uint64_t dst, uint64_t src, uint64_t size,
                          uint32_t host_kind, uint64_t host_offset, uint32_t pin, int async,
                          cgs_channel **ch) {
  cgs_copy *r = (cgs_copy *)c->t->req;
  ic_req(r, op, sizeof *r, c->ctx->handle);
  r->stream = c->stream;
  r->dst = dst;
  r->src = src;
  r->size = size;
  r->host_offset = host_offset;
  r->host_kind = host_kind;
  r->pin_id = pin;
  r->async = (uint32_t)async;
  r->per_thread = c->per_thread;
  return async && host_kind != CGS_HOST_STAGING ? ic_post(c->t, r) : ic_call(c->t, r, ch);
}

/* Wait for the copy's stream (after a copy queued in pieces). */
static CUresult sync_stream(cp *c) {
  cgs_stream *r = (cgs_stream *)c->t->req;
  ic_req(r, CGS_OP_STREAM_SYNCHRONIZE, sizeof *r, c->ctx->handle);
  r->handle = c->stream;
  r->event = 0;
  r->flags = 0;
  r->priority = 0;
  r->per_thread = c->per_thread;
  r->_pad = 0;
  return ic_call(c->t, r, NULL);
}

/* The three directions, inside ic_enter/ic_leave. */
static CUresult do_htod(cp *c, uint64_t dst, const void *src, size_t n) {
  uint32_t pin;
  uint64_t off;
  if (pinned(src, n, &pin, &off))
    return send_copy(c, CGS_OP_MEMCPY_HTOD, dst, 0, n, CGS_HOST_PINNED, off, pin, c->async, NULL);
  cgs_channel *ch;
  CUresult rc = ic_channel(c->t, &ch);
  if (rc) return rc;
  uint8_t *stage = ic_staging(ch);
  for (size_t done = 0; done < n;) {
    size_t k = n - done < ic.staging_size ? n - done : (size_t)ic.staging_size;
    memcpy(stage, (const uint8_t *)src + done, k);
    /* Waits for the controller either way (the staging area is reused);
     * async=1 lets it answer as soon as it has taken the bytes, as the
     * driver returns once it has staged pageable memory. */
    rc = send_copy(c, CGS_OP_MEMCPY_HTOD, dst + done, 0, k, CGS_HOST_STAGING, 0, 0, c->async, &ch);
    if (rc) return rc;
    done += k;
  }
  return CUDA_SUCCESS;
}

static CUresult do_dtoh(cp *c, void *dst, uint64_t src, size_t n) {
  uint32_t pin;
  uint64_t off;
  if (pinned(dst, n, &pin, &off))
    return send_copy(c, CGS_OP_MEMCPY_DTOH, 0, src, n, CGS_HOST_PINNED, off, pin, c->async, NULL);
  cgs_channel *ch;
  CUresult rc = ic_channel(c->t, &ch);
  if (rc) return rc;
  for (size_t done = 0; done < n;) {
    size_t k = n - done < ic.staging_size ? n - done : (size_t)ic.staging_size;
    rc = send_copy(c, CGS_OP_MEMCPY_DTOH, 0, src + done, k, CGS_HOST_STAGING, 0, 0, 0, &ch);
    if (rc) return rc;
    memcpy((uint8_t *)dst + done, ic_staging(ch), k);
    done += k;
  }
  return CUDA_SUCCESS;
}

static CUresult do_dtod(cp *c, uint64_t dst, uint64_t src, size_t n) {
  return send_copy(c, CGS_OP_MEMCPY_DTOD, dst, src, n, 0, 0, 0, c->async, NULL);
}

/* ---- what a pointer is --------------------------------------------------------
 * Pinned and registered host memory are device-accessible (unified
 * addressing): a "device" pointer may be host memory, and then the copy or
 * memset is really a host-side one. */
enum { W_HOST, W_PINNED, W_DEVICE };

/* A pointer the API calls a device pointer: device memory, a module global,
 * or pinned or registered host memory covering [p, p+n); else invalid. */
static CUresult device_side(uintptr_t p, size_t n, int *kind) {
  ic_alloc a;
  if (!p || !ic_mem_find(p, &a) || n > a.size - (p - a.base)) return CUDA_ERROR_INVALID_VALUE;
  /* Managed memory is a shared file like pinned memory (memory.c). */
  *kind = a.kind == IC_MEM_HOST || a.kind == IC_MEM_MANAGED ? W_PINNED
          : a.kind == IC_MEM_REGISTERED                     ? W_HOST
                                                            : W_DEVICE;
  return CUDA_SUCCESS;
}

/* A pointer the API calls a host pointer: pinned when [p, p+n) lies in
 * pinned memory, else pageable; device memory is no host memory. */
static CUresult host_side(uintptr_t p, size_t n, int *kind) {
  if (!p || in_va(p)) return CUDA_ERROR_INVALID_VALUE;
  uint32_t pin;
  uint64_t off;
  *kind = pinned((const void *)p, n, &pin, &off) ? W_PINNED : W_HOST;
  return CUDA_SUCCESS;
}

/* Under unified addressing, either. */
static CUresult any_side(uintptr_t p, size_t n, int *kind) {
  ic_alloc a;
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  if (in_va(p) || (ic_mem_find(p, &a) && a.kind != IC_MEM_REGISTERED)) return device_side(p, n, kind);
  return host_side(p, n, kind);
}

/* Host-side work after what is queued on the copy's stream: the stream may
 * still be filling or reading pinned memory. */
static CUresult after_stream(cp *c) {
  CUresult rc = ic_enter(c->t);
  if (rc) return rc;
  rc = sync_stream(c);
  ic_leave();
  return rc;
}

static CUresult copy_any(cp *c, uintptr_t dst, int kd, uintptr_t src, int ks, size_t n) {
  if (kd != W_DEVICE && ks != W_DEVICE) {
    if (kd == W_PINNED || ks == W_PINNED) {
      CUresult rc = after_stream(c);
      if (rc) return rc;
    }
    memmove((void *)dst, (const void *)src, n);
    return CUDA_SUCCESS;
  }
  CUresult rc = ic_enter(c->t);
  if (rc) return rc;
  if (kd == W_DEVICE && ks == W_DEVICE)
    rc = do_dtod(c, dst, src, n);
  else if (kd == W_DEVICE)
    rc = do_htod(c, dst, (const void *)src, n);
  else
    rc = do_dtoh(c, (void *)dst, src, n);
  ic_leave();
  return rc;
}

/* An asynchronous copy on a capturing stream becomes a node of its graph
 * (graph.c), checked as the copy would be. */
static bool captured(const cp *c) { return c->async && ic_capture_active(c->stream); }

static CUresult htod(cp *c, uint64_t dst, const void *src, size_t n) {
  if (n == 0) return CUDA_SUCCESS;
  int kd, ks;
  CUresult rc = device_side((uintptr_t)dst, n, &kd);
  if (!rc) rc = host_side((uintptr_t)src, n, &ks);
  if (!rc && captured(c)) return ic_capture_memcpy(c->stream, (CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, n);
  return rc ? rc : copy_any(c, (uintptr_t)dst, kd, (uintptr_t)src, ks, n);
}

static CUresult dtoh(cp *c, void *dst, uint64_t src, size_t n) {
  if (n == 0) return CUDA_SUCCESS;
  int kd, ks;
  CUresult rc = host_side((uintptr_t)dst, n, &kd);
  if (!rc) rc = device_side((uintptr_t)src, n, &ks);
  if (!rc && captured(c)) return ic_capture_memcpy(c->stream, (CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, n);
  return rc ? rc : copy_any(c, (uintptr_t)dst, kd, (uintptr_t)src, ks, n);
}

static CUresult dtod(cp *c, uint64_t dst, uint64_t src, size_t n) {
  if (n == 0) return CUDA_SUCCESS;
  int kd, ks;
  CUresult rc = device_side((uintptr_t)dst, n, &kd);
  if (!rc) rc = device_side((uintptr_t)src, n, &ks);
  if (!rc && captured(c)) return ic_capture_memcpy(c->stream, (CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, n);
  return rc ? rc : copy_any(c, (uintptr_t)dst, kd, (uintptr_t)src, ks, n);
}

/* ---- explicit directions ------------------------------------------------------- */

CUresult ic_cuMemcpyHtoD_3020(CUdeviceptr_v2 dstDevice, const void *srcHost, size_t ByteCount) {
  cp c;
  CUresult rc = begin(&c, NULL, 0);
  return rc ? rc : htod(&c, dstDevice, srcHost, ByteCount);
}

CUresult ic_cuMemcpyHtoDAsync_3020(CUdeviceptr_v2 dstDevice, const void *srcHost, size_t ByteCount,
                                   CUstream hStream) {
  cp c;
  CUresult rc = begin(&c, hStream, 1);
  return rc ? rc : htod(&c, dstDevice, srcHost, ByteCount);
}

CUresult ic_cuMemcpyDtoH_3020(void *dstHost, CUdeviceptr_v2 srcDevice, size_t ByteCount) {
  cp c;
  CUresult rc = begin(&c, NULL, 0);
  return rc ? rc : dtoh(&c, dstHost, srcDevice, ByteCount);
}

CUresult ic_cuMemcpyDtoHAsync_3020(void *dstHost, CUdeviceptr_v2 srcDevice, size_t ByteCount,
                                   CUstream hStream) {
  cp c;
  CUresult rc = begin(&c, hStream, 1);
  return rc ? rc : dtoh(&c, dstHost, srcDevice, ByteCount);
}

CUresult ic_cuMemcpyDtoD_3020(CUdeviceptr_v2 dstDevice, CUdeviceptr_v2 srcDevice, size_t ByteCount) {
  cp c;
  CUresult rc = begin(&c, NULL, 0);
  return rc ? rc : dtod(&c, dstDevice, srcDevice, ByteCount);
}

CUresult ic_cuMemcpyDtoDAsync_3020(CUdeviceptr_v2 dstDevice, CUdeviceptr_v2 srcDevice,
                                   size_t ByteCount, CUstream hStream) {
  cp c;
  CUresult rc = begin(&c, hStream, 1);
  return rc ? rc : dtod(&c, dstDevice, srcDevice, ByteCount);
}

/* ---- unified addressing: the direction follows from the pointers ---------------- */

static CUresult unified(cp *c, uintptr_t dst, uintptr_t src, size_t n) {
  if (n == 0) return CUDA_SUCCESS;
  int kd, ks;
  CUresult rc = any_side(dst, n, &kd);
  if (!rc) rc = any_side(src, n, &ks);
  if (!rc && captured(c)) return ic_capture_memcpy(c->stream, (CUdeviceptr)dst, (CUdeviceptr)src, n);
  return rc ? rc : copy_any(c, dst, kd, src, ks, n);
}

CUresult ic_cuMemcpy_4000(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t ByteCount) {
  cp c;
  CUresult rc = begin(&c, NULL, 0);
  return rc ? rc : unified(&c, dst, src, ByteCount);
}

CUresult ic_cuMemcpyAsync_4000(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t ByteCount,
                               CUstream hStream) {
  cp c;
  CUresult rc = begin(&c, hStream, 1);
  return rc ? rc : unified(&c, dst, src, ByteCount);
}

/* ---- 2D copies -------------------------------------------------------------------
 * Decomposed into row copies (one copy when both sides are contiguous).
 * Device-to-device rows and rows from or to pinned memory are queued, and
 * the synchronous form then waits for its stream once; pageable rows are
 * staged one by one. */

typedef struct side {
  int kind; /* W_HOST, W_PINNED, W_DEVICE */
  uintptr_t base; /* first byte of the first row */
  size_t pitch;
} side;

static CUresult resolve_side(CUmemorytype type, const void *host, CUdeviceptr dev, size_t x,
                             size_t y, size_t pitch, size_t width, size_t height, side *s) {
  uintptr_t p;
  switch (type) {
  case CU_MEMORYTYPE_HOST:
    p = (uintptr_t)host;
    break;
  case CU_MEMORYTYPE_DEVICE:
  case CU_MEMORYTYPE_UNIFIED:
    p = (uintptr_t)dev;
    break;
  case CU_MEMORYTYPE_ARRAY:
    return CUDA_ERROR_NOT_SUPPORTED; /* CUDA arrays are not forwarded */
  default:
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  if (height > 1 && pitch < width) return CUDA_ERROR_INVALID_VALUE;
  s->pitch = pitch;
  s->base = p + y * pitch + x;
  size_t span = (height - 1) * pitch + width;
  switch (type) {
  case CU_MEMORYTYPE_HOST: return host_side(s->base, span, &s->kind);
  case CU_MEMORYTYPE_DEVICE: return device_side(s->base, span, &s->kind);
  default: return any_side(s->base, span, &s->kind);
  }
}

static CUresult copy2d(cp *c, const CUDA_MEMCPY2D *p) {
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  size_t w = p->WidthInBytes, h = p->Height;
  side s, d;
  CUresult rc = resolve_side(p->srcMemoryType, p->srcHost, p->srcDevice, p->srcXInBytes, p->srcY,
                             p->srcPitch, w, h ? h : 1, &s);
  if (!rc)
    rc = resolve_side(p->dstMemoryType, p->dstHost, p->dstDevice, p->dstXInBytes, p->dstY,
                      p->dstPitch, w, h ? h : 1, &d);
  if (rc) return rc;
  if (w == 0 || h == 0) return CUDA_SUCCESS;
  bool contiguous = h == 1 || (s.pitch == w && d.pitch == w);
  if (s.kind != W_DEVICE && d.kind != W_DEVICE) {
    /* Host to host. */
    if (s.kind == W_PINNED || d.kind == W_PINNED) {
      rc = after_stream(c);
      if (rc) return rc;
    }
    for (size_t r = 0; r < h; r++)
      memmove((void *)(d.base + r * d.pitch), (const void *)(s.base + r * s.pitch), w);
    return CUDA_SUCCESS;
  }
  if (contiguous) return copy_any(c, d.base, d.kind, s.base, s.kind, w * h);
  rc = ic_enter(c->t);
  if (rc) return rc;
  bool queued = s.kind != W_HOST && d.kind != W_HOST;
  int async = c->async;
  if (queued) c->async = 1;
  for (size_t r = 0; r < h && !rc; r++) {
    uintptr_t sr = s.base + r * s.pitch, dr = d.base + r * d.pitch;
    if (s.kind == W_DEVICE && d.kind == W_DEVICE)
      rc = do_dtod(c, dr, sr, w);
    else if (d.kind == W_DEVICE)
      rc = do_htod(c, dr, (const void *)sr, w);
    else
      rc = do_dtoh(c, (void *)dr, sr, w);
  }
  c->async = async;
  if (!rc && queued && !async) rc = sync_stream(c);
  ic_leave();
  return rc;
}

CUresult ic_cuMemcpy2D_3020(const CUDA_MEMCPY2D *pCopy) {
  cp c;
  CUresult rc = begin(&c, NULL, 0);
  return rc ? rc : copy2d(&c, pCopy);
}

CUresult ic_cuMemcpy2DUnaligned_3020(const CUDA_MEMCPY2D *pCopy) { return ic_cuMemcpy2D_3020(pCopy); }

CUresult ic_cuMemcpy2DAsync_3020(const CUDA_MEMCPY2D *pCopy, CUstream hStream) {
  cp c;
  CUresult rc = begin(&c, hStream, 1);
  return rc ? rc : copy2d(&c, pCopy);
}

/* ---- memsets -------------------------------------------------------------------- */

/* A memset of registered host memory is done here, after the work queued
 * before it on its stream (the controller cannot reach that memory). */
static void memset_host(uintptr_t dst, size_t pitch, uint32_t value, uint32_t elem, size_t width,
                        size_t height) {
  for (size_t r = 0; r < height; r++) {
    uint8_t *row = (uint8_t *)(dst + r * pitch);
    if (elem == 1) {
      memset(row, (int)(value & 0xff), width);
    } else if (elem == 2) {
      uint16_t v = (uint16_t)value;
      for (size_t i = 0; i < width; i++) memcpy(row + 2 * i, &v, 2);
    } else {
      for (size_t i = 0; i < width; i++) memcpy(row + 4 * i, &value, 4);
    }
  }
}

static CUresult memset_any(CUstream s, int async, CUdeviceptr dst, size_t pitch, uint32_t value,
                           uint32_t elem, size_t width, size_t height) {
  cp c;
  CUresult rc = begin(&c, s, async);
  if (rc) return rc;
  if (dst % elem) return CUDA_ERROR_INVALID_VALUE;
  if (width == 0 || height == 0) return CUDA_SUCCESS;
  size_t row = width * elem;
  if (height > 1 && pitch < row) return CUDA_ERROR_INVALID_VALUE;
  size_t span = (height - 1) * pitch + row;
  int kind;
  rc = device_side((uintptr_t)dst, span, &kind);
  if (rc) return rc;
  /* Pinned memory is device memory to the controller (it maps the file at
   * the job's address); registered memory is the job's alone. */
  if (async && ic_capture_active(c.stream))
    return ic_capture_memset(c.stream, dst, height > 1 ? pitch : row, value, elem, width, height);
  if (kind == W_HOST) {
    rc = after_stream(&c);
    if (!rc) memset_host((uintptr_t)dst, pitch, value, elem, width, height);
    return rc;
  }
  rc = ic_enter(c.t);
  if (rc) return rc;
  cgs_memset *r = (cgs_memset *)c.t->req;
  ic_req(r, CGS_OP_MEMSET, sizeof *r, c.ctx->handle);
  r->stream = c.stream;
  r->dst = dst;
  r->pitch = height > 1 ? pitch : 0;
  r->width = width;
  r->height = height;
  r->value = value;
  r->elem_size = elem;
  r->async = (uint32_t)async;
  r->per_thread = c.per_thread;
  rc = async ? ic_post(c.t, r) : ic_call(c.t, r, NULL);
  ic_leave();
  return rc;
}

CUresult ic_cuMemsetD8_3020(CUdeviceptr_v2 dstDevice, unsigned char uc, size_t N) {
  return memset_any(NULL, 0, dstDevice, 0, uc, 1, N, 1);
}

CUresult ic_cuMemsetD16_3020(CUdeviceptr_v2 dstDevice, unsigned short us, size_t N) {
  return memset_any(NULL, 0, dstDevice, 0, us, 2, N, 1);
}

CUresult ic_cuMemsetD32_3020(CUdeviceptr_v2 dstDevice, unsigned int ui, size_t N) {
  return memset_any(NULL, 0, dstDevice, 0, ui, 4, N, 1);
}

CUresult ic_cuMemsetD8Async_3020(CUdeviceptr_v2 dstDevice, unsigned char uc, size_t N,
                                 CUstream hStream) {
  return memset_any(hStream, 1, dstDevice, 0, uc, 1, N, 1);
}

CUresult ic_cuMemsetD16Async_3020(CUdeviceptr_v2 dstDevice, unsigned short us, size_t N,
                                  CUstream hStream) {
  return memset_any(hStream, 1, dstDevice, 0, us, 2, N, 1);
}

CUresult ic_cuMemsetD32Async_3020(CUdeviceptr_v2 dstDevice, unsigned int ui, size_t N,
                                  CUstream hStream) {
  return memset_any(hStream, 1, dstDevice, 0, ui, 4, N, 1);
}

CUresult ic_cuMemsetD2D8_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned char uc,
                              size_t Width, size_t Height) {
  return memset_any(NULL, 0, dstDevice, dstPitch, uc, 1, Width, Height);
}

CUresult ic_cuMemsetD2D16_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned short us,
                               size_t Width, size_t Height) {
  return memset_any(NULL, 0, dstDevice, dstPitch, us, 2, Width, Height);
}

CUresult ic_cuMemsetD2D32_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned int ui,
                               size_t Width, size_t Height) {
  return memset_any(NULL, 0, dstDevice, dstPitch, ui, 4, Width, Height);
}

CUresult ic_cuMemsetD2D8Async_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned char uc,
                                   size_t Width, size_t Height, CUstream hStream) {
  return memset_any(hStream, 1, dstDevice, dstPitch, uc, 1, Width, Height);
}

CUresult ic_cuMemsetD2D16Async_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned short us,
                                    size_t Width, size_t Height, CUstream hStream) {
  return memset_any(hStream, 1, dstDevice, dstPitch, us, 2, Width, Height);
}

CUresult ic_cuMemsetD2D32Async_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned int ui,
                                    size_t Width, size_t Height, CUstream hStream) {
  return memset_any(hStream, 1, dstDevice, dstPitch, ui, 4, Width, Height);
}

/* ---- the 32-bit 2D copies ---------------------------------------------------------- */

static void widen(const CUDA_MEMCPY2D_v1 *p, CUDA_MEMCPY2D *q) {
  memset(q, 0, sizeof *q);
  q->srcXInBytes = p->srcXInBytes;
  q->srcY = p->srcY;
  q->srcMemoryType = p->srcMemoryType;
  q->srcHost = p->srcHost;
  q->srcDevice = p->srcDevice;
  q->srcArray = p->srcArray;
  q->srcPitch = p->srcPitch;
  q->dstXInBytes = p->dstXInBytes;
  q->dstY = p->dstY;
  q->dstMemoryType = p->dstMemoryType;
  q->dstHost = p->dstHost;
  q->dstDevice = p->dstDevice;
  q->dstArray = p->dstArray;
  q->dstPitch = p->dstPitch;
  q->WidthInBytes = p->WidthInBytes;
  q->Height = p->Height;
}

CUresult ic_cuMemcpy2D_2000(const CUDA_MEMCPY2D_v1 *pCopy) {
  CUDA_MEMCPY2D q;
  if (pCopy) widen(pCopy, &q);
  return ic_cuMemcpy2D_3020(pCopy ? &q : NULL);
}

CUresult ic_cuMemcpy2DAsync_2000(const CUDA_MEMCPY2D_v1 *pCopy, CUstream hStream) {
  CUDA_MEMCPY2D q;
  if (pCopy) widen(pCopy, &q);
  return ic_cuMemcpy2DAsync_3020(pCopy ? &q : NULL, hStream);
}

/* ---- peer copies ---------------------------------------------------------------------
 * Every context lives in the one controller, so a copy between contexts is a
 * device-to-device copy ordered on the caller's stream. */
static CUresult copy_peer(CUdeviceptr_v2 dst, CUcontext dctx, CUdeviceptr_v2 src, CUcontext sctx,
                          size_t n, CUstream h, int async) {
  cp c;
  CUresult rc = begin(&c, h, async);
  if (rc) return rc;
  ic_obj *d, *s;
  if (!dctx || !sctx) return CUDA_ERROR_INVALID_CONTEXT;
  rc = ic_ctx_resolve(c.t, dctx, &d);
  if (!rc) rc = ic_ctx_resolve(c.t, sctx, &s);
  return rc ? rc : dtod(&c, dst, src, n);
}

CUresult ic_cuMemcpyPeer_4000(CUdeviceptr_v2 dstDevice, CUcontext dstContext,
                              CUdeviceptr_v2 srcDevice, CUcontext srcContext, size_t ByteCount) {
  return copy_peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, NULL, 0);
}

CUresult ic_cuMemcpyPeerAsync_4000(CUdeviceptr_v2 dstDevice, CUcontext dstContext,
                                   CUdeviceptr_v2 srcDevice, CUcontext srcContext, size_t ByteCount,
                                   CUstream hStream) {
  return copy_peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, hStream, 1);
}
