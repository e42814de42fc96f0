/* Copies and memsets.
 *
 * Every copy and memset is an op on a stream, so it is ordered with kernels
 * and with the legacy default stream like on a GPU. Whether the call waits
 * follows NVIDIA's "API synchronization behavior" rules, not what would be
 * simplest, so that code which forgets to synchronize fails here too:
 *  - host to host: synchronous;
 *  - device to host: synchronous, except an async copy into pinned memory;
 *  - pageable host to device: the source is staged at call time and the call
 *    returns before the copy lands (sync and async alike);
 *  - pinned host to device: synchronous, or fully async for the async call;
 *  - device to device and memsets of device memory: asynchronous even
 *    through the "synchronous" calls, unless the memory has
 *    CU_POINTER_ATTRIBUTE_SYNC_MEMOPS set or is pinned host memory.
 * The device side of every copy must lie in one live allocation (the driver
 * answers CUDA_ERROR_INVALID_VALUE otherwise). */
#include "fk_memory.h"

#include <stdlib.h>
#include <string.h>

/* Pageable sources above STAGE_MAX, or past STAGE_LIMIT bytes staged and not
 * yet copied (a stream held up while the program keeps copying), are copied
 * while the caller waits, as the driver does once its staging buffers are
 * full. */
#define STAGE_MAX ((size_t)64 << 20)
#define STAGE_LIMIT ((size_t)256 << 20)

static size_t staged_bytes; /* atomic */
#define MAX_PITCH ((size_t)2147483647) /* CU_DEVICE_ATTRIBUTE_MAX_PITCH */

typedef enum loc { LOC_PAGEABLE, LOC_PINNED, LOC_DEVICE } loc;

/* Where [p, p+n) lives. device_side: the API names it device memory, so it
 * must be device-accessible. */
static CUresult locate(uintptr_t p, size_t n, bool device_side, bool write, loc *out,
                       bool *sync_memops) {
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  if (p + n < p) return CUDA_ERROR_INVALID_VALUE;
  uintptr_t last = p + (n ? n - 1 : 0);
  fk_alloc a;
  bool covered, can_write;
  if (fk_mem_query(p, n, &a, &covered, &can_write)) {
    bool host = a.kind == FK_MEM_HOST || a.kind == FK_MEM_REGISTERED;
    if (!covered) {
      /* Host memory only partly pinned is copied as pageable memory. */
      if (host && !device_side && !fk_mem_device_of(last)) {
        *out = LOC_PAGEABLE;
        return CUDA_SUCCESS;
      }
      return CUDA_ERROR_INVALID_VALUE;
    }
    if (write && !can_write) return CUDA_ERROR_INVALID_VALUE;
    if (a.flags & FK_ALLOC_SYNC_MEMOPS) *sync_memops = true;
    *out = host ? LOC_PINNED : LOC_DEVICE;
    return CUDA_SUCCESS;
  }
  if (device_side || fk_mem_device_of(p) || fk_mem_device_of(last)) return CUDA_ERROR_INVALID_VALUE;
  *out = LOC_PAGEABLE;
  return CUDA_SUCCESS;
}

/* ---- copies --------------------------------------------------------------*/
typedef struct copy_op {
  unsigned char *dst;
  const unsigned char *src;
  size_t dpitch, spitch, width, height;
  size_t staged; /* bytes of op->heap counted in staged_bytes */
} copy_op;

static void run_copy(fk_op *op) {
  const copy_op *c = (const copy_op *)op->payload;
  for (size_t r = 0; r < c->height; r++)
    memmove(c->dst + r * c->dpitch, c->src + r * c->spitch, c->width);
  if (c->staged) __atomic_sub_fetch(&staged_bytes, c->staged, __ATOMIC_RELAXED);
}

typedef struct xfer {
  uintptr_t dst, src;
  size_t dpitch, spitch, width, height; /* a 1D copy is one row */
  loc dl, sl;
  bool sync_memops;
} xfer;

static CUresult launch_copy(fk_ctx *ctx, fk_stream *s, bool async, const xfer *x) {
  fk_op *op = fk_op_new(run_copy, sizeof(copy_op));
  if (op) op->node_type = CU_GRAPH_NODE_TYPE_MEMCPY;
  if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
  op->ctx = ctx;
  copy_op *c = (copy_op *)op->payload;
  *c = (copy_op){(unsigned char *)x->dst, (const unsigned char *)x->src, x->dpitch, x->spitch,
                 x->width, x->height, 0};
  bool dst_host = x->dl != LOC_DEVICE, src_host = x->sl != LOC_DEVICE;
  bool wait;
  if (dst_host && src_host) {
    wait = true;
  } else if (dst_host) {
    wait = !(async && x->dl == LOC_PINNED);
  } else if (src_host && x->sl == LOC_PAGEABLE) {
    /* Stage the caller's bytes now: it may reuse its buffer on return. */
    size_t total = x->width * x->height;
    unsigned char *stage = NULL;
    if (total <= STAGE_MAX &&
        __atomic_add_fetch(&staged_bytes, total, __ATOMIC_RELAXED) <= STAGE_LIMIT)
      stage = malloc(total ? total : 1);
    if (!stage && total <= STAGE_MAX) __atomic_sub_fetch(&staged_bytes, total, __ATOMIC_RELAXED);
    if (stage) {
      c->staged = total;
      for (size_t r = 0; r < x->height; r++)
        memcpy(stage + r * x->width, (const unsigned char *)x->src + r * x->spitch, x->width);
      op->heap = stage;
      c->src = stage;
      c->spitch = x->width;
      wait = !async && x->sync_memops;
    } else {
      wait = true;
    }
  } else if (src_host) {
    wait = !async;
  } else {
    wait = !async && x->sync_memops;
  }
  if (wait) {
    fk_stream_run_sync(s, op);
  } else {
    fk_stream_submit(s, op, NULL);
  }
  return CUDA_SUCCESS;
}

/* A 1D copy; dst_dev / src_dev: the API names that side device memory. */
static CUresult copy_1d(uintptr_t dst, bool dst_dev, uintptr_t src, bool src_dev, size_t n,
                        CUstream h, bool async) {
  fk_ctx *ctx;
  fk_stream *s;
  CUresult rc = fk_work_stream(h, &ctx, &s);
  if (rc) return rc;
  if (n == 0) return CUDA_SUCCESS;
  xfer x = {.dst = dst, .src = src, .dpitch = n, .spitch = n, .width = n, .height = 1};
  rc = locate(dst, n, dst_dev, true, &x.dl, &x.sync_memops);
  if (!rc) rc = locate(src, n, src_dev, false, &x.sl, &x.sync_memops);
  if (rc) return rc;
  return launch_copy(ctx, s, async, &x);
}

#define U(p) ((uintptr_t)(p))

CUresult fake_cuMemcpy_4000(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t ByteCount) {
  return copy_1d(dst, false, src, false, ByteCount, NULL, false);
}

CUresult fake_cuMemcpyAsync_4000(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t ByteCount,
                                 CUstream hStream) {
  return copy_1d(dst, false, src, false, ByteCount, hStream, true);
}

CUresult fake_cuMemcpyHtoD_3020(CUdeviceptr_v2 dstDevice, const void *srcHost, size_t ByteCount) {
  return copy_1d(dstDevice, true, U(srcHost), false, ByteCount, NULL, false);
}

CUresult fake_cuMemcpyDtoH_3020(void *dstHost, CUdeviceptr_v2 srcDevice, size_t ByteCount) {
  return copy_1d(U(dstHost), false, srcDevice, true, ByteCount, NULL, false);
}

CUresult fake_cuMemcpyDtoD_3020(CUdeviceptr_v2 dstDevice, CUdeviceptr_v2 srcDevice,
                                size_t ByteCount) {
  return copy_1d(dstDevice, true, srcDevice, true, ByteCount, NULL, false);
}

CUresult fake_cuMemcpyHtoDAsync_3020(CUdeviceptr_v2 dstDevice, const void *srcHost,
                                     size_t ByteCount, CUstream hStream) {
  return copy_1d(dstDevice, true, U(srcHost), false, ByteCount, hStream, true);
}

CUresult fake_cuMemcpyDtoHAsync_3020(void *dstHost, CUdeviceptr_v2 srcDevice, size_t ByteCount,
                                     CUstream hStream) {
  return copy_1d(U(dstHost), false, srcDevice, true, ByteCount, hStream, true);
}

CUresult fake_cuMemcpyDtoDAsync_3020(CUdeviceptr_v2 dstDevice, CUdeviceptr_v2 srcDevice,
                                     size_t ByteCount, CUstream hStream) {
  return copy_1d(dstDevice, true, srcDevice, true, ByteCount, hStream, true);
}

/* Peer copies: every fake device sees the same host memory, so a copy
 * between contexts is a device-to-device copy ordered on the caller's
 * stream. */
static CUresult copy_peer(CUdeviceptr_v2 dst, CUcontext dctx, CUdeviceptr_v2 src, CUcontext sctx,
                          size_t n, CUstream h, bool async) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  fk_ctx *d, *s;
  if (!dctx || !sctx) return CUDA_ERROR_INVALID_CONTEXT;
  rc = fk_ctx_resolve(dctx, &d);
  if (!rc) rc = fk_ctx_resolve(sctx, &s);
  if (rc) return rc;
  return copy_1d(dst, true, src, true, n, h, async);
}

CUresult fake_cuMemcpyPeer_4000(CUdeviceptr_v2 dstDevice, CUcontext dstContext,
                                CUdeviceptr_v2 srcDevice, CUcontext srcContext, size_t ByteCount) {
  return copy_peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, NULL, false);
}

CUresult fake_cuMemcpyPeerAsync_4000(CUdeviceptr_v2 dstDevice, CUcontext dstContext,
                                     CUdeviceptr_v2 srcDevice, CUcontext srcContext,
                                     size_t ByteCount, CUstream hStream) {
  return copy_peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, hStream, true);
}

/* ---- 2D copies -----------------------------------------------------------*/

/* One side of a 2D copy: its first byte, pitch and where it lives. */
static CUresult side_2d(CUmemorytype type, const void *host, CUdeviceptr dev, size_t x, size_t y,
                        size_t pitch, size_t width, size_t height, bool write, uintptr_t *start,
                        loc *l, bool *sync_memops) {
  uintptr_t base;
  bool device_side;
  switch (type) {
  case CU_MEMORYTYPE_HOST: base = U(host); device_side = false; break;
  case CU_MEMORYTYPE_DEVICE: base = dev; device_side = true; break;
  case CU_MEMORYTYPE_UNIFIED: base = dev; device_side = false; break;
  case CU_MEMORYTYPE_ARRAY: return fk_unsupported("cuMemcpy2D with CUDA arrays");
  default: return CUDA_ERROR_INVALID_VALUE;
  }
  if (pitch > MAX_PITCH) return CUDA_ERROR_INVALID_VALUE;
  if ((height > 1 || pitch) && (pitch < x || pitch - x < width)) return CUDA_ERROR_INVALID_VALUE;
  size_t off, rows, extent;
  if (__builtin_mul_overflow(y, pitch, &off) || __builtin_add_overflow(off, x, &off) ||
      __builtin_mul_overflow(height - 1, pitch, &rows) ||
      __builtin_add_overflow(rows, width, &extent) || base + off < base)
    return CUDA_ERROR_INVALID_VALUE;
  *start = base + off;
  return locate(*start, extent, device_side, write, l, sync_memops);
}

static CUresult copy_2d(const CUDA_MEMCPY2D_v2 *p, CUstream h, bool async) {
  fk_ctx *ctx;
  fk_stream *s;
  CUresult rc = fk_work_stream(h, &ctx, &s);
  if (rc) return rc;
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  if (p->WidthInBytes == 0 || p->Height == 0) return CUDA_SUCCESS;
  xfer x = {.dpitch = p->dstPitch, .spitch = p->srcPitch, .width = p->WidthInBytes,
            .height = p->Height};
  rc = side_2d(p->dstMemoryType, p->dstHost, p->dstDevice, p->dstXInBytes, p->dstY, p->dstPitch,
               p->WidthInBytes, p->Height, true, &x.dst, &x.dl, &x.sync_memops);
  if (!rc)
    rc = side_2d(p->srcMemoryType, p->srcHost, p->srcDevice, p->srcXInBytes, p->srcY, p->srcPitch,
                 p->WidthInBytes, p->Height, false, &x.src, &x.sl, &x.sync_memops);
  if (rc) return rc;
  return launch_copy(ctx, s, async, &x);
}

static CUDA_MEMCPY2D_v2 from_v1(const CUDA_MEMCPY2D_v1 *p) {
  return (CUDA_MEMCPY2D_v2){
      .srcXInBytes = p->srcXInBytes, .srcY = p->srcY, .srcMemoryType = p->srcMemoryType,
      .srcHost = p->srcHost, .srcDevice = p->srcDevice, .srcArray = p->srcArray,
      .srcPitch = p->srcPitch, .dstXInBytes = p->dstXInBytes, .dstY = p->dstY,
      .dstMemoryType = p->dstMemoryType, .dstHost = p->dstHost, .dstDevice = p->dstDevice,
      .dstArray = p->dstArray, .dstPitch = p->dstPitch, .WidthInBytes = p->WidthInBytes,
      .Height = p->Height};
}

CUresult fake_cuMemcpy2D_3020(const CUDA_MEMCPY2D_v2 *pCopy) { return copy_2d(pCopy, NULL, false); }

CUresult fake_cuMemcpy2DUnaligned_3020(const CUDA_MEMCPY2D_v2 *pCopy) {
  return copy_2d(pCopy, NULL, false);
}

CUresult fake_cuMemcpy2DAsync_3020(const CUDA_MEMCPY2D_v2 *pCopy, CUstream hStream) {
  return copy_2d(pCopy, hStream, true);
}

CUresult fake_cuMemcpy2D_2000(const CUDA_MEMCPY2D_v1 *pCopy) {
  if (!pCopy) return CUDA_ERROR_INVALID_VALUE;
  CUDA_MEMCPY2D_v2 c = from_v1(pCopy);
  return copy_2d(&c, NULL, false);
}

CUresult fake_cuMemcpy2DAsync_2000(const CUDA_MEMCPY2D_v1 *pCopy, CUstream hStream) {
  if (!pCopy) return CUDA_ERROR_INVALID_VALUE;
  CUDA_MEMCPY2D_v2 c = from_v1(pCopy);
  return copy_2d(&c, hStream, true);
}

/* ---- memsets -------------------------------------------------------------*/
typedef struct set_op {
  unsigned char *dst;
  size_t pitch, width, height; /* width in elements */
  unsigned elsize;
  uint32_t value;
} set_op;

static void run_set(fk_op *op) {
  const set_op *m = (const set_op *)op->payload;
  for (size_t r = 0; r < m->height; r++) {
    unsigned char *row = m->dst + r * m->pitch;
    if (m->elsize == 1) {
      memset(row, (int)m->value, m->width);
    } else if (m->elsize == 2) {
      uint16_t *q = (uint16_t *)(void *)row, v = (uint16_t)m->value;
      for (size_t i = 0; i < m->width; i++) q[i] = v;
    } else {
      uint32_t *q = (uint32_t *)(void *)row, v = m->value;
      for (size_t i = 0; i < m->width; i++) q[i] = v;
    }
  }
}

static CUresult memset_2d(uintptr_t dst, size_t pitch, uint32_t value, unsigned elsize,
                          size_t width, size_t height, CUstream h, bool async) {
  fk_ctx *ctx;
  fk_stream *s;
  CUresult rc = fk_work_stream(h, &ctx, &s);
  if (rc) return rc;
  if (width == 0 || height == 0) return CUDA_SUCCESS;
  size_t row_bytes, rows, extent;
  if (dst % elsize || __builtin_mul_overflow(width, (size_t)elsize, &row_bytes))
    return CUDA_ERROR_INVALID_VALUE;
  if (height > 1 && (pitch % elsize || pitch < row_bytes || pitch > MAX_PITCH))
    return CUDA_ERROR_INVALID_VALUE;
  if (__builtin_mul_overflow(height - 1, pitch, &rows) ||
      __builtin_add_overflow(rows, row_bytes, &extent))
    return CUDA_ERROR_INVALID_VALUE;
  loc l;
  bool sync_memops = false;
  rc = locate(dst, extent, true, true, &l, &sync_memops);
  if (rc) return rc;
  fk_op *op = fk_op_new(run_set, sizeof(set_op));
  if (op) op->node_type = CU_GRAPH_NODE_TYPE_MEMSET;
  if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
  op->ctx = ctx;
  *(set_op *)op->payload =
      (set_op){(unsigned char *)dst, height > 1 ? pitch : row_bytes, width, height, elsize, value};
  /* Synchronous memsets wait only for pinned host memory (or SYNC_MEMOPS). */
  if (!async && (l == LOC_PINNED || sync_memops)) {
    fk_stream_run_sync(s, op);
  } else {
    fk_stream_submit(s, op, NULL);
  }
  return CUDA_SUCCESS;
}

CUresult fake_cuMemsetD8_3020(CUdeviceptr_v2 dstDevice, unsigned char uc, size_t N) {
  return memset_2d(dstDevice, 0, uc, 1, N, 1, NULL, false);
}

CUresult fake_cuMemsetD16_3020(CUdeviceptr_v2 dstDevice, unsigned short us, size_t N) {
  return memset_2d(dstDevice, 0, us, 2, N, 1, NULL, false);
}

CUresult fake_cuMemsetD32_3020(CUdeviceptr_v2 dstDevice, unsigned int ui, size_t N) {
  return memset_2d(dstDevice, 0, ui, 4, N, 1, NULL, false);
}

CUresult fake_cuMemsetD8Async_3020(CUdeviceptr_v2 dstDevice, unsigned char uc, size_t N,
                                   CUstream hStream) {
  return memset_2d(dstDevice, 0, uc, 1, N, 1, hStream, true);
}

CUresult fake_cuMemsetD16Async_3020(CUdeviceptr_v2 dstDevice, unsigned short us, size_t N,
                                    CUstream hStream) {
  return memset_2d(dstDevice, 0, us, 2, N, 1, hStream, true);
}

CUresult fake_cuMemsetD32Async_3020(CUdeviceptr_v2 dstDevice, unsigned int ui, size_t N,
                                    CUstream hStream) {
  return memset_2d(dstDevice, 0, ui, 4, N, 1, hStream, true);
}

CUresult fake_cuMemsetD2D8_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned char uc,
                                size_t Width, size_t Height) {
  return memset_2d(dstDevice, dstPitch, uc, 1, Width, Height, NULL, false);
}

CUresult fake_cuMemsetD2D16_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned short us,
                                 size_t Width, size_t Height) {
  return memset_2d(dstDevice, dstPitch, us, 2, Width, Height, NULL, false);
}

CUresult fake_cuMemsetD2D32_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned int ui,
                                 size_t Width, size_t Height) {
  return memset_2d(dstDevice, dstPitch, ui, 4, Width, Height, NULL, false);
}

CUresult fake_cuMemsetD2D8Async_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned char uc,
                                     size_t Width, size_t Height, CUstream hStream) {
  return memset_2d(dstDevice, dstPitch, uc, 1, Width, Height, hStream, true);
}

CUresult fake_cuMemsetD2D16Async_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch,
                                      unsigned short us, size_t Width, size_t Height,
                                      CUstream hStream) {
  return memset_2d(dstDevice, dstPitch, us, 2, Width, Height, hStream, true);
}

CUresult fake_cuMemsetD2D32Async_3020(CUdeviceptr_v2 dstDevice, size_t dstPitch, unsigned int ui,
                                      size_t Width, size_t Height, CUstream hStream) {
  return memset_2d(dstDevice, dstPitch, ui, 4, Width, Height, hStream, true);
}
