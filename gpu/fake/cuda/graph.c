/* CUDA graphs and stream capture of the fake driver: the shared text in
 * gpu/api/graph_impl.h, run through this driver's own launch, copy and
 * memset entry points. Capture takes the ops a capturing stream is given
 * (fk_stream_submit calls fk_graph_capture) into the graph as they are; a
 * launch of the graph queues a stand-in op per captured one that runs it
 * again, so the captured op stays the graph's. */
#include "fake.h"

#include "graph_impl.h"

static CUresult G_stream_key(CUstream h, uint64_t *key) {
  fk_ctx *ctx;
  fk_stream *s;
  CUresult rc = fk_work_stream(h, &ctx, &s);
  if (rc) return rc;
  *key = s->is_legacy ? 0 : (uint64_t)(uintptr_t)s;
  return CUDA_SUCCESS;
}

typedef struct replay {
  cu_gop *box;
} replay;

/* The captured op runs as it is, and stays the graph's. */
static void replay_run(fk_op *p) {
  cu_gop *box = ((replay *)p->payload)->box;
  fk_op *op = box->op;
  if (op->run) op->run(op);
  cu_g_op_release(box);
}

static CUresult G_run_op(cu_gop *box, CUstream h) {
  fk_ctx *ctx;
  fk_stream *s;
  CUresult rc = fk_work_stream(h, &ctx, &s);
  if (rc) return rc;
  fk_op *p = fk_op_new(replay_run, sizeof(replay));
  if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
  fk_op *op = cu_g_op_hold(box);
  ((replay *)p->payload)->box = box;
  p->ctx = ctx;
  p->node_type = op->node_type;
  fk_stream_submit(s, p, NULL);
  return CUDA_SUCCESS;
}

static void G_free_op(void *op) {
  free(((fk_op *)op)->heap);
  free(op);
}

bool fk_graph_capture(fk_stream *s, fk_op *op) {
  uint64_t key = (uint64_t)(uintptr_t)s;
  if (!cu_capture_active(key)) return false;
  /* The captured op keeps no dependencies: the capture orders its nodes. */
  op->ndeps = 0;
  cu_capture_op(key, (CUgraphNodeType)op->node_type, op);
  return true;
}
