/* CUDA graphs and stream capture as the job sees them: the shared text in
 * gpu/api/graph_impl.h, run through the interposer's own launch, copy and
 * memset entry points. A graph is the job's own (in its memory, which a
 * checkpoint saves), and a launch of it is the forwarded calls of its nodes,
 * with the handles and device pointers a restore keeps valid: an
 * instantiated graph works after a restore with nothing to rebuild. Capture
 * records the launches, copies and memsets the job gives a capturing stream
 * (module.c and copy.c ask ic_capture_active). */
#include "ic.h"

#include "graph_impl.h"

static CUresult G_stream_key(CUstream h, uint64_t *key) {
  ic_thread *t = ic_self();
  ic_obj *ctx;
  uint32_t pt;
  return ic_need_ctx_stream(t, h, &ctx, key, &pt);
}

/* The interposer records only kernels, copies and memsets: no op of its own. */
static CUresult G_run_op(cu_gop *box, CUstream s) {
  (void)box, (void)s;
  return CUDA_ERROR_NOT_SUPPORTED;
}

static void G_free_op(void *op) { (void)op; }

bool ic_capture_active(uint64_t stream) { return stream && cu_capture_active(stream); }

CUresult ic_capture_kernel(uint64_t stream, CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                           unsigned by, unsigned bz, unsigned shared, const void *args, size_t args_size) {
  size_t size = args_size;
  void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, (void *)args, CU_LAUNCH_PARAM_BUFFER_SIZE, &size,
                   CU_LAUNCH_PARAM_END};
  return cu_capture_kernel(stream, f, gx, gy, gz, bx, by, bz, shared, NULL, extra);
}

CUresult ic_capture_memset(uint64_t stream, CUdeviceptr dst, size_t pitch, unsigned value, unsigned elem,
                           size_t width, size_t height) {
  return cu_capture_memset(stream, dst, pitch, value, elem, width, height);
}

CUresult ic_capture_memcpy(uint64_t stream, CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
  return cu_capture_memcpy(stream, dst, src, bytes);
}
