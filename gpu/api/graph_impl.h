/* CUDA graphs and stream capture, one text for the fake driver
 * (gpu/fake/cuda/graph.c) and the interposer (gpu/intercept/graph.c), like
 * exports.c: the API functions are defined here under the including
 * library's names (CU_IMPL), and a graph runs by calling that library's own
 * launch, copy and memset entry points on the stream it is launched into.
 *
 * A graph is a list of nodes (kernel, memcpy, memset, empty, and "captured"
 * nodes: an operation of the library's own that stream capture recorded)
 * with their dependencies. Instantiation copies the nodes in an order that
 * respects the dependencies; a launch runs them one after the other on the
 * stream (a stricter order than the driver's, never a looser one). So under
 * the interposer a graph is the job's own: it lives in the job's memory,
 * which a checkpoint saves and a restore puts back, and its launches are the
 * forwarded calls of its nodes, with handles and pointers the restore keeps
 * valid. The price is one forwarded request per node at each launch
 * (bench/forwarding.py measures it).
 *
 * Stream capture records what the library enqueues on a capturing stream
 * instead of running it, each node depending on the one before: the capture
 * of one stream (work joined from other streams through events is not
 * followed). Kernel arguments are copied when a node is made, with the
 * parameter layout cuFuncGetParamInfo gives.
 *
 * The including file defines (after including this):
 *   static CUresult G_stream_key(CUstream h, uint64_t *key);
 *       resolve a stream argument (checked); key 0: the legacy NULL stream;
 *   static CUresult G_run_op(struct cu_gop *box, CUstream s);  queue a run
 *       of a captured op;
 *   static void G_free_op(void *op);
 * and calls cu_capture_graph(key) before it enqueues work: while that is
 * non-NULL it adds a node (cu_capture_kernel/_memset/_memcpy/_op) instead.
 */
#ifndef CEDANA_GRAPH_IMPL_H
#define CEDANA_GRAPH_IMPL_H

#include "impl_names.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct cu_gop;
/* The including library's part (see the top). */
static CUresult G_stream_key(CUstream h, uint64_t *key);
/* Queue a run of captured op box->op on stream s (cu_g_op_hold and
 * cu_g_op_release keep it alive until it ran). */
static CUresult G_run_op(struct cu_gop *box, CUstream s);
static void G_free_op(void *op);

/* The library's own entry points the graph runs through. */
CU_HIDDEN CUresult CU_IMPL(cuLaunchKernel_4000)(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                                unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared,
                                                CUstream s, void **params, void **extra);
CU_HIDDEN CUresult CU_IMPL(cuMemcpyAsync_4000)(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t n, CUstream s);
CU_HIDDEN CUresult CU_IMPL(cuMemsetD2D8Async_3020)(CUdeviceptr_v2 d, size_t pitch, unsigned char v, size_t w, size_t h,
                                                   CUstream s);
CU_HIDDEN CUresult CU_IMPL(cuMemsetD2D16Async_3020)(CUdeviceptr_v2 d, size_t pitch, unsigned short v, size_t w,
                                                    size_t h, CUstream s);
CU_HIDDEN CUresult CU_IMPL(cuMemsetD2D32Async_3020)(CUdeviceptr_v2 d, size_t pitch, unsigned int v, size_t w, size_t h,
                                                    CUstream s);
CU_HIDDEN CUresult CU_IMPL(cuFuncGetParamInfo_12040)(CUfunction f, size_t i, size_t *off, size_t *size);

typedef struct cu_gop {
  int refs; /* under cu_g_lock */
  void *op;
} cu_gop;

typedef struct cu_gnode {
  uint32_t magic;
  CUgraphNodeType type;
  struct cu_graph *graph;
  struct cu_gnode **deps;
  size_t ndeps;
  CUDA_KERNEL_NODE_PARAMS kp; /* kernelParams points into args/argv below */
  unsigned char *args;        /* the argument bytes, copied */
  void **argv;
  size_t nargs;
  CUDA_MEMSET_NODE_PARAMS ms;
  CUdeviceptr dst, src; /* memcpy: 1D, unified addressing */
  size_t bytes;
  struct cu_gop *op; /* captured: shared by the graph's node and the executables' copies */
  size_t order; /* instantiation: index in topological order */
} cu_gnode;

typedef struct cu_graph {
  uint32_t magic;
  cu_gnode **nodes;
  size_t n, cap;
} cu_graph;

typedef struct cu_gexec {
  uint32_t magic;
  cu_gnode *nodes; /* copies, in run order */
  cu_gnode **from; /* the graph's node each copy was made from */
  size_t n;
} cu_gexec;

#define CU_G_GRAPH 0x47524150u
#define CU_G_NODE 0x4e4f4445u
#define CU_G_EXEC 0x45584543u

/* Live objects: handles are checked here before they are used. */
static pthread_mutex_t cu_g_lock = PTHREAD_MUTEX_INITIALIZER;
static void **cu_g_live;
static size_t cu_g_nlive, cu_g_caplive;

static bool cu_g_add(void *p) {
  if (cu_g_nlive == cu_g_caplive) {
    size_t cap = cu_g_caplive ? 2 * cu_g_caplive : 64;
    void **g = realloc(cu_g_live, cap * sizeof *g);
    if (!g) return false;
    cu_g_live = g;
    cu_g_caplive = cap;
  }
  cu_g_live[cu_g_nlive++] = p;
  return true;
}

static void cu_g_del(void *p) {
  for (size_t i = 0; i < cu_g_nlive; i++)
    if (cu_g_live[i] == p) {
      cu_g_live[i] = cu_g_live[--cu_g_nlive];
      return;
    }
}

static bool cu_g_is(const void *p, uint32_t magic) {
  if (!p) return false;
  for (size_t i = 0; i < cu_g_nlive; i++)
    if (cu_g_live[i] == p) return *(const uint32_t *)p == magic;
  return false;
}

/* ---- nodes ----------------------------------------------------------------- */

static void cu_g_op_put(cu_gop *o) {
  if (o && --o->refs == 0) {
    G_free_op(o->op);
    free(o);
  }
}

/* For a queued run of a captured op: keep it until the run is done. */
__attribute__((unused)) static void *cu_g_op_hold(cu_gop *o) {
  pthread_mutex_lock(&cu_g_lock);
  o->refs++;
  pthread_mutex_unlock(&cu_g_lock);
  return o->op;
}

__attribute__((unused)) static void cu_g_op_release(cu_gop *o) {
  pthread_mutex_lock(&cu_g_lock);
  cu_g_op_put(o);
  pthread_mutex_unlock(&cu_g_lock);
}

static void cu_g_node_free(cu_gnode *n) {
  free(n->deps);
  free(n->args);
  free(n->argv);
  cu_g_op_put(n->op);
  free(n);
}

/* Copy a kernel's arguments (kernelParams, or the packed buffer of `extra`). */
static CUresult cu_g_copy_args(cu_gnode *n, CUfunction f, void **params, void **extra) {
  size_t count = 0, total = 0;
  size_t off, size;
  while (CU_IMPL(cuFuncGetParamInfo_12040)(f, count, &off, &size) == CUDA_SUCCESS) {
    if (off + size > total) total = off + size;
    count++;
  }
  unsigned char *args = calloc(1, total ? total : 1);
  void **argv = calloc(count ? count : 1, sizeof *argv);
  if (!args || !argv) {
    free(args);
    free(argv);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  const unsigned char *packed = NULL;
  if (extra) {
    for (size_t k = 0; extra[k] != CU_LAUNCH_PARAM_END; k += 2)
      if (extra[k] == CU_LAUNCH_PARAM_BUFFER_POINTER) packed = extra[k + 1];
  }
  if (count && !params && !packed) {
    free(args);
    free(argv);
    return CUDA_ERROR_INVALID_VALUE;
  }
  for (size_t i = 0; i < count; i++) {
    CU_IMPL(cuFuncGetParamInfo_12040)(f, i, &off, &size);
    memcpy(args + off, params ? params[i] : packed + off, size);
    argv[i] = args + off;
  }
  free(n->args);
  free(n->argv);
  n->args = args;
  n->argv = argv;
  n->nargs = count;
  n->kp.kernelParams = argv;
  n->kp.extra = NULL;
  return CUDA_SUCCESS;
}

static CUresult cu_g_set_kernel(cu_gnode *n, const CUDA_KERNEL_NODE_PARAMS *p) {
  if (!p || !p->func) return CUDA_ERROR_INVALID_VALUE; /* library kernels (kern) are not modelled */
  if (!p->gridDimX || !p->gridDimY || !p->gridDimZ || !p->blockDimX || !p->blockDimY || !p->blockDimZ)
    return CUDA_ERROR_INVALID_VALUE;
  cu_gnode tmp = *n;
  tmp.args = NULL;
  tmp.argv = NULL;
  tmp.kp = *p;
  CUresult rc = cu_g_copy_args(&tmp, p->func, p->kernelParams, p->extra);
  if (rc) return rc;
  free(n->args);
  free(n->argv);
  *n = tmp;
  return CUDA_SUCCESS;
}

/* A new node of graph g after deps (checked against g). Caller holds cu_g_lock. */
static CUresult cu_g_node_new(cu_graph *g, const CUgraphNode *deps, size_t ndeps, CUgraphNodeType type,
                              cu_gnode **out) {
  if (!cu_g_is(g, CU_G_GRAPH) || (ndeps && !deps)) return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < ndeps; i++) {
    const cu_gnode *d = (const cu_gnode *)deps[i];
    if (!cu_g_is(d, CU_G_NODE) || d->graph != g) return CUDA_ERROR_INVALID_VALUE;
  }
  cu_gnode *n = calloc(1, sizeof *n);
  if (!n) return CUDA_ERROR_OUT_OF_MEMORY;
  n->magic = CU_G_NODE;
  n->type = type;
  n->graph = g;
  if (ndeps) {
    n->deps = malloc(ndeps * sizeof *n->deps);
    if (!n->deps) {
      free(n);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    memcpy(n->deps, deps, ndeps * sizeof *n->deps);
    n->ndeps = ndeps;
  }
  *out = n;
  return CUDA_SUCCESS;
}

/* Enter node n in its graph. Caller holds cu_g_lock. */
static CUresult cu_g_node_keep(cu_gnode *n) {
  cu_graph *g = n->graph;
  if (g->n == g->cap) {
    size_t cap = g->cap ? 2 * g->cap : 16;
    cu_gnode **a = realloc(g->nodes, cap * sizeof *a);
    if (!a) return CUDA_ERROR_OUT_OF_MEMORY;
    g->nodes = a;
    g->cap = cap;
  }
  if (!cu_g_add(n)) return CUDA_ERROR_OUT_OF_MEMORY;
  g->nodes[g->n++] = n;
  return CUDA_SUCCESS;
}

static CUresult cu_g_check_memset(const CUDA_MEMSET_NODE_PARAMS *p) {
  if (!p || !p->dst || (p->elementSize != 1 && p->elementSize != 2 && p->elementSize != 4) || !p->width || !p->height)
    return CUDA_ERROR_INVALID_VALUE;
  if (p->height > 1 && p->pitch < p->width * p->elementSize) return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}

/* Only plain 1D copies between addresses (unified addressing) are modelled. */
static CUresult cu_g_check_memcpy(const CUDA_MEMCPY3D *p, CUdeviceptr *dst, CUdeviceptr *src, size_t *bytes) {
  if (!p || !p->WidthInBytes) return CUDA_ERROR_INVALID_VALUE;
  if ((p->Height > 1 || p->Depth > 1) || p->srcArray || p->dstArray || p->srcY || p->srcZ || p->dstY || p->dstZ)
    return CUDA_ERROR_NOT_SUPPORTED;
  uintptr_t s = p->srcMemoryType == CU_MEMORYTYPE_HOST ? (uintptr_t)p->srcHost : (uintptr_t)p->srcDevice;
  uintptr_t d = p->dstMemoryType == CU_MEMORYTYPE_HOST ? (uintptr_t)p->dstHost : (uintptr_t)p->dstDevice;
  if (!s || !d) return CUDA_ERROR_INVALID_VALUE;
  *src = (CUdeviceptr)(s + p->srcXInBytes);
  *dst = (CUdeviceptr)(d + p->dstXInBytes);
  *bytes = p->WidthInBytes;
  return CUDA_SUCCESS;
}

/* ---- running a node ------------------------------------------------------ */

static CUresult cu_g_run(const cu_gnode *n, CUstream s) {
  if (n->op) return G_run_op(n->op, s);
  switch (n->type) {
  case CU_GRAPH_NODE_TYPE_KERNEL: {
    const CUDA_KERNEL_NODE_PARAMS *k = &n->kp;
    return CU_IMPL(cuLaunchKernel_4000)(k->func, k->gridDimX, k->gridDimY, k->gridDimZ, k->blockDimX, k->blockDimY,
                                        k->blockDimZ, k->sharedMemBytes, s, n->argv, NULL);
  }
  case CU_GRAPH_NODE_TYPE_MEMSET: {
    const CUDA_MEMSET_NODE_PARAMS *m = &n->ms;
    size_t pitch = m->height > 1 ? m->pitch : m->width * m->elementSize;
    switch (m->elementSize) {
    case 1: return CU_IMPL(cuMemsetD2D8Async_3020)(m->dst, pitch, (unsigned char)m->value, m->width, m->height, s);
    case 2: return CU_IMPL(cuMemsetD2D16Async_3020)(m->dst, pitch, (unsigned short)m->value, m->width, m->height, s);
    default: return CU_IMPL(cuMemsetD2D32Async_3020)(m->dst, pitch, m->value, m->width, m->height, s);
    }
  }
  case CU_GRAPH_NODE_TYPE_MEMCPY: return CU_IMPL(cuMemcpyAsync_4000)(n->dst, n->src, n->bytes, s);
  case CU_GRAPH_NODE_TYPE_EMPTY: return CUDA_SUCCESS;
  default: return CUDA_SUCCESS;
  }
}

/* ---- stream capture ----------------------------------------------------------- */

typedef struct cu_capture {
  uint64_t key;
  cu_graph *graph;
  cu_gnode *last;
  unsigned long long id;
  CUstreamCaptureMode mode;
  bool invalidated;
} cu_capture;

static cu_capture *cu_captures;
static size_t cu_ncaptures, cu_capcaptures;
static int cu_capturing; /* captures in progress (atomic): the fast path reads only this */
static unsigned long long cu_capture_ids = 1;

static cu_capture *cu_capture_find(uint64_t key) {
  for (size_t i = 0; i < cu_ncaptures; i++)
    if (cu_captures[i].key == key) return &cu_captures[i];
  return NULL;
}

/* The graph stream `key` is capturing into, or NULL (the common case, without a lock). */
static inline bool cu_capture_active(uint64_t key) {
  if (!__atomic_load_n(&cu_capturing, __ATOMIC_ACQUIRE)) return false;
  pthread_mutex_lock(&cu_g_lock);
  bool on = cu_capture_find(key) != NULL;
  pthread_mutex_unlock(&cu_g_lock);
  return on;
}

/* Append a captured node (made by `fill`) to the capture of `key`. */
static CUresult cu_capture_append(uint64_t key, CUgraphNodeType type, cu_gnode **out) {
  cu_capture *c = cu_capture_find(key);
  if (!c) return CUDA_ERROR_ILLEGAL_STATE;
  if (c->invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
  CUgraphNode dep = (CUgraphNode)c->last;
  cu_gnode *n;
  CUresult rc = cu_g_node_new(c->graph, c->last ? &dep : NULL, c->last ? 1 : 0, type, &n);
  if (rc) return rc;
  *out = n;
  return CUDA_SUCCESS;
}

static CUresult cu_capture_commit(uint64_t key, cu_gnode *n) {
  cu_capture *c = cu_capture_find(key);
  CUresult rc = cu_g_node_keep(n);
  if (rc) {
    cu_g_node_free(n);
    if (c) c->invalidated = true;
    return rc;
  }
  c->last = n;
  return CUDA_SUCCESS;
}

__attribute__((unused)) static CUresult cu_capture_kernel(uint64_t key, CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                  unsigned by, unsigned bz, unsigned shared, void **params, void **extra) {
  pthread_mutex_lock(&cu_g_lock);
  cu_gnode *n;
  CUresult rc = cu_capture_append(key, CU_GRAPH_NODE_TYPE_KERNEL, &n);
  if (!rc) {
    CUDA_KERNEL_NODE_PARAMS p = {.func = f, .gridDimX = gx, .gridDimY = gy, .gridDimZ = gz, .blockDimX = bx,
                                 .blockDimY = by, .blockDimZ = bz, .sharedMemBytes = shared,
                                 .kernelParams = params, .extra = extra};
    rc = cu_g_set_kernel(n, &p);
    if (rc)
      cu_g_node_free(n);
    else
      rc = cu_capture_commit(key, n);
  }
  pthread_mutex_unlock(&cu_g_lock);
  return rc;
}

__attribute__((unused)) static CUresult cu_capture_memset(uint64_t key, CUdeviceptr dst, size_t pitch, unsigned value, unsigned elem,
                                  size_t width, size_t height) {
  pthread_mutex_lock(&cu_g_lock);
  cu_gnode *n;
  CUresult rc = cu_capture_append(key, CU_GRAPH_NODE_TYPE_MEMSET, &n);
  if (!rc) {
    n->ms = (CUDA_MEMSET_NODE_PARAMS){.dst = dst, .pitch = pitch, .value = value, .elementSize = elem,
                                      .width = width, .height = height};
    rc = cu_capture_commit(key, n);
  }
  pthread_mutex_unlock(&cu_g_lock);
  return rc;
}

__attribute__((unused)) static CUresult cu_capture_memcpy(uint64_t key, CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
  pthread_mutex_lock(&cu_g_lock);
  cu_gnode *n;
  CUresult rc = cu_capture_append(key, CU_GRAPH_NODE_TYPE_MEMCPY, &n);
  if (!rc) {
    n->dst = dst;
    n->src = src;
    n->bytes = bytes;
    rc = cu_capture_commit(key, n);
  }
  pthread_mutex_unlock(&cu_g_lock);
  return rc;
}

/* An operation of the library's own (the graph owns `op` from here). */
__attribute__((unused)) static CUresult cu_capture_op(uint64_t key, CUgraphNodeType type, void *op) {
  pthread_mutex_lock(&cu_g_lock);
  cu_gnode *n;
  CUresult rc = cu_capture_append(key, type, &n);
  cu_gop *box = rc ? NULL : calloc(1, sizeof *box);
  if (!rc && !box) {
    cu_g_node_free(n);
    rc = CUDA_ERROR_OUT_OF_MEMORY;
  }
  if (!rc) {
    box->refs = 1;
    box->op = op;
    n->op = box;
    rc = cu_capture_commit(key, n);
  } else {
    G_free_op(op);
  }
  pthread_mutex_unlock(&cu_g_lock);
  return rc;
}

/* ---- the API ----------------------------------------------------------------- */

CUresult CU_IMPL(cuGraphCreate_10000)(CUgraph *phGraph, unsigned int flags) {
  if (!phGraph || flags) return CUDA_ERROR_INVALID_VALUE;
  cu_graph *g = calloc(1, sizeof *g);
  if (!g) return CUDA_ERROR_OUT_OF_MEMORY;
  g->magic = CU_G_GRAPH;
  pthread_mutex_lock(&cu_g_lock);
  bool ok = cu_g_add(g);
  pthread_mutex_unlock(&cu_g_lock);
  if (!ok) {
    free(g);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *phGraph = (CUgraph)g;
  return CUDA_SUCCESS;
}

static void cu_g_graph_free(cu_graph *g) {
  for (size_t i = 0; i < g->n; i++) {
    cu_g_del(g->nodes[i]);
    g->nodes[i]->magic = 0;
    cu_g_node_free(g->nodes[i]);
  }
  cu_g_del(g);
  g->magic = 0;
  free(g->nodes);
  free(g);
}

CUresult CU_IMPL(cuGraphDestroy_10000)(CUgraph hGraph) {
  pthread_mutex_lock(&cu_g_lock);
  cu_graph *g = (cu_graph *)hGraph;
  bool ok = cu_g_is(g, CU_G_GRAPH);
  /* Not while a capture still fills it. */
  for (size_t i = 0; ok && i < cu_ncaptures; i++)
    if (cu_captures[i].graph == g) ok = false;
  if (ok) cu_g_graph_free(g);
  pthread_mutex_unlock(&cu_g_lock);
  return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

static CUresult cu_g_add_node(CUgraphNode *out, CUgraph hGraph, const CUgraphNode *deps, size_t ndeps,
                              CUgraphNodeType type, const void *params) {
  if (!out) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&cu_g_lock);
  cu_gnode *n;
  CUresult rc = cu_g_node_new((cu_graph *)hGraph, deps, ndeps, type, &n);
  if (!rc) {
    switch (type) {
    case CU_GRAPH_NODE_TYPE_KERNEL: rc = cu_g_set_kernel(n, params); break;
    case CU_GRAPH_NODE_TYPE_MEMSET:
      rc = cu_g_check_memset(params);
      if (!rc) n->ms = *(const CUDA_MEMSET_NODE_PARAMS *)params;
      break;
    case CU_GRAPH_NODE_TYPE_MEMCPY: rc = cu_g_check_memcpy(params, &n->dst, &n->src, &n->bytes); break;
    default: break;
    }
    if (!rc) rc = cu_g_node_keep(n);
    if (rc)
      cu_g_node_free(n);
    else
      *out = (CUgraphNode)n;
  }
  pthread_mutex_unlock(&cu_g_lock);
  return rc;
}

CUresult CU_IMPL(cuGraphAddKernelNode_12000)(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                                             size_t numDependencies, const CUDA_KERNEL_NODE_PARAMS_v2 *nodeParams) {
  return cu_g_add_node(phGraphNode, hGraph, dependencies, numDependencies, CU_GRAPH_NODE_TYPE_KERNEL, nodeParams);
}

static CUDA_KERNEL_NODE_PARAMS cu_g_kp_from_v1(const CUDA_KERNEL_NODE_PARAMS_v1 *p) {
  CUDA_KERNEL_NODE_PARAMS k;
  memset(&k, 0, sizeof k);
  memcpy(&k, p, sizeof *p); /* v2 extends v1 */
  return k;
}

CUresult CU_IMPL(cuGraphAddKernelNode_10000)(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                                             size_t numDependencies, const CUDA_KERNEL_NODE_PARAMS_v1 *nodeParams) {
  if (!nodeParams) return CUDA_ERROR_INVALID_VALUE;
  CUDA_KERNEL_NODE_PARAMS k = cu_g_kp_from_v1(nodeParams);
  return cu_g_add_node(phGraphNode, hGraph, dependencies, numDependencies, CU_GRAPH_NODE_TYPE_KERNEL, &k);
}

CUresult CU_IMPL(cuGraphAddMemsetNode_10000)(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                                             size_t numDependencies, const CUDA_MEMSET_NODE_PARAMS_v1 *memsetParams,
                                             CUcontext ctx) {
  (void)ctx;
  return cu_g_add_node(phGraphNode, hGraph, dependencies, numDependencies, CU_GRAPH_NODE_TYPE_MEMSET, memsetParams);
}

CUresult CU_IMPL(cuGraphAddMemcpyNode_10000)(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                                             size_t numDependencies, const CUDA_MEMCPY3D_v2 *copyParams,
                                             CUcontext ctx) {
  (void)ctx;
  return cu_g_add_node(phGraphNode, hGraph, dependencies, numDependencies, CU_GRAPH_NODE_TYPE_MEMCPY, copyParams);
}

CUresult CU_IMPL(cuGraphAddEmptyNode_10000)(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                                            size_t numDependencies) {
  return cu_g_add_node(phGraphNode, hGraph, dependencies, numDependencies, CU_GRAPH_NODE_TYPE_EMPTY, NULL);
}

CUresult CU_IMPL(cuGraphGetNodes_10000)(CUgraph hGraph, CUgraphNode *nodes, size_t *numNodes) {
  if (!numNodes) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&cu_g_lock);
  cu_graph *g = (cu_graph *)hGraph;
  bool ok = cu_g_is(g, CU_G_GRAPH);
  if (ok) {
    if (nodes)
      for (size_t i = 0; i < g->n && i < *numNodes; i++) nodes[i] = (CUgraphNode)g->nodes[i];
    if (!nodes || *numNodes > g->n) *numNodes = g->n;
  }
  pthread_mutex_unlock(&cu_g_lock);
  return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult CU_IMPL(cuGraphNodeGetType_10000)(CUgraphNode hNode, CUgraphNodeType *type) {
  if (!type) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&cu_g_lock);
  bool ok = cu_g_is(hNode, CU_G_NODE);
  if (ok) *type = ((cu_gnode *)hNode)->type;
  pthread_mutex_unlock(&cu_g_lock);
  return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult CU_IMPL(cuGraphKernelNodeGetParams_12000)(CUgraphNode hNode, CUDA_KERNEL_NODE_PARAMS_v2 *nodeParams) {
  if (!nodeParams) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&cu_g_lock);
  cu_gnode *n = (cu_gnode *)hNode;
  bool ok = cu_g_is(n, CU_G_NODE) && n->type == CU_GRAPH_NODE_TYPE_KERNEL && !n->op;
  if (ok) *nodeParams = n->kp;
  pthread_mutex_unlock(&cu_g_lock);
  return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult CU_IMPL(cuGraphKernelNodeSetParams_12000)(CUgraphNode hNode, const CUDA_KERNEL_NODE_PARAMS_v2 *nodeParams) {
  pthread_mutex_lock(&cu_g_lock);
  cu_gnode *n = (cu_gnode *)hNode;
  CUresult rc = cu_g_is(n, CU_G_NODE) && n->type == CU_GRAPH_NODE_TYPE_KERNEL && !n->op
                    ? cu_g_set_kernel(n, nodeParams)
                    : CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_unlock(&cu_g_lock);
  return rc;
}

/* ---- instantiation ------------------------------------------------------------ */

/* Caller holds cu_g_lock (captured ops are counted under it). */
static void cu_g_exec_free(cu_gexec *e) {
  for (size_t i = 0; i < e->n; i++) {
    free(e->nodes[i].args);
    free(e->nodes[i].argv);
    cu_g_op_put(e->nodes[i].op);
  }
  free(e->nodes);
  free(e->from);
  free(e);
}

/* Copy node src's parameters into dst (an exec's node). */
static CUresult cu_g_copy_node(cu_gnode *dst, const cu_gnode *src) {
  *dst = *src;
  dst->args = NULL;
  dst->argv = NULL;
  dst->deps = NULL;
  dst->ndeps = 0;
  if (dst->op) dst->op->refs++;
  if (src->type == CU_GRAPH_NODE_TYPE_KERNEL && !src->op) {
    size_t total = 0, off, size;
    for (size_t i = 0; i < src->nargs; i++)
      if (CU_IMPL(cuFuncGetParamInfo_12040)(src->kp.func, i, &off, &size) == CUDA_SUCCESS && off + size > total)
        total = off + size;
    dst->args = malloc(total ? total : 1);
    dst->argv = calloc(src->nargs ? src->nargs : 1, sizeof *dst->argv);
    if (!dst->args || !dst->argv) return CUDA_ERROR_OUT_OF_MEMORY;
    if (total) memcpy(dst->args, src->args, total);
    for (size_t i = 0; i < src->nargs; i++) dst->argv[i] = dst->args + ((unsigned char *)src->argv[i] - src->args);
    dst->kp.kernelParams = dst->argv;
  }
  return CUDA_SUCCESS;
}

/* Nodes in an order where each comes after its dependencies (Kahn). Caller
 * holds cu_g_lock. */
static CUresult cu_g_instantiate(cu_graph *g, cu_gexec **out) {
  size_t n = g->n;
  cu_gexec *e = calloc(1, sizeof *e);
  size_t *indeg = calloc(n ? n : 1, sizeof *indeg);
  size_t *queue = calloc(n ? n : 1, sizeof *queue);
  if (e) {
    e->nodes = calloc(n ? n : 1, sizeof *e->nodes);
    e->from = calloc(n ? n : 1, sizeof *e->from);
  }
  if (!e || !indeg || !queue || !e->nodes || !e->from) {
    free(indeg);
    free(queue);
    if (e) cu_g_exec_free(e);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  e->magic = CU_G_EXEC;
  for (size_t i = 0; i < n; i++) {
    g->nodes[i]->order = i;
    indeg[i] = g->nodes[i]->ndeps;
  }
  size_t head = 0, tail = 0;
  for (size_t i = 0; i < n; i++)
    if (!indeg[i]) queue[tail++] = i;
  CUresult rc = CUDA_SUCCESS;
  while (head < tail && !rc) {
    cu_gnode *x = g->nodes[queue[head++]];
    rc = cu_g_copy_node(&e->nodes[e->n], x);
    e->from[e->n++] = x;
    for (size_t j = 0; j < n; j++)
      for (size_t k = 0; k < g->nodes[j]->ndeps; k++)
        if (g->nodes[j]->deps[k] == x && --indeg[j] == 0) queue[tail++] = j;
  }
  free(indeg);
  free(queue);
  if (!rc && e->n != n) rc = CUDA_ERROR_INVALID_VALUE; /* a cycle */
  if (rc) {
    cu_g_exec_free(e);
    return rc;
  }
  if (!cu_g_add(e)) {
    cu_g_exec_free(e);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *out = e;
  return CUDA_SUCCESS;
}

CUresult CU_IMPL(cuGraphInstantiateWithFlags_11040)(CUgraphExec *phGraphExec, CUgraph hGraph,
                                                    unsigned long long flags) {
  if (!phGraphExec) return CUDA_ERROR_INVALID_VALUE;
  /* Auto-free on launch, upload, device launch, priorities: not modelled. */
  if (flags) return CUDA_ERROR_NOT_SUPPORTED;
  pthread_mutex_lock(&cu_g_lock);
  cu_gexec *e = NULL;
  CUresult rc = cu_g_is(hGraph, CU_G_GRAPH) ? cu_g_instantiate((cu_graph *)hGraph, &e) : CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_unlock(&cu_g_lock);
  if (!rc) *phGraphExec = (CUgraphExec)e;
  return rc;
}

CUresult CU_IMPL(cuGraphInstantiate_11000)(CUgraphExec *phGraphExec, CUgraph hGraph, CUgraphNode *phErrorNode,
                                           char *logBuffer, size_t bufferSize) {
  if (phErrorNode) *phErrorNode = NULL;
  if (logBuffer && bufferSize) logBuffer[0] = 0;
  return CU_IMPL(cuGraphInstantiateWithFlags_11040)(phGraphExec, hGraph, 0);
}

CUresult CU_IMPL(cuGraphExecDestroy_10000)(CUgraphExec hGraphExec) {
  pthread_mutex_lock(&cu_g_lock);
  cu_gexec *e = (cu_gexec *)hGraphExec;
  bool ok = cu_g_is(e, CU_G_EXEC);
  /* Launches already queued hold what they need (captured ops are the
   * graph's while it lives, and replays of them finish before a free:
   * cuGraphExecDestroy and cuGraphDestroy come after the work in order). */
  if (ok) {
    cu_g_del(e);
    e->magic = 0;
    cu_g_exec_free(e);
  }
  pthread_mutex_unlock(&cu_g_lock);
  return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult CU_IMPL(cuGraphLaunch_10000)(CUgraphExec hGraphExec, CUstream hStream) {
  uint64_t key;
  CUresult rc = G_stream_key(hStream, &key);
  if (rc) return rc;
  pthread_mutex_lock(&cu_g_lock);
  cu_gexec *e = (cu_gexec *)hGraphExec;
  bool ok = cu_g_is(e, CU_G_EXEC);
  /* The nodes run with the lock held: an update or a destroy waits for the
   * launch to have queued them (never for them to finish). */
  for (size_t i = 0; ok && !rc && i < e->n; i++) {
    pthread_mutex_unlock(&cu_g_lock);
    rc = cu_g_run(&e->nodes[i], hStream);
    pthread_mutex_lock(&cu_g_lock);
    if (!cu_g_is(e, CU_G_EXEC)) ok = false;
  }
  pthread_mutex_unlock(&cu_g_lock);
  return ok ? rc : CUDA_ERROR_INVALID_VALUE;
}

/* The exec's copy of graph node hNode. Caller holds cu_g_lock. */
static cu_gnode *cu_g_exec_node(cu_gexec *e, const void *hNode) {
  for (size_t i = 0; i < e->n; i++)
    if (e->from[i] == hNode) return &e->nodes[i];
  return NULL;
}

CUresult CU_IMPL(cuGraphExecKernelNodeSetParams_12000)(CUgraphExec hGraphExec, CUgraphNode hNode,
                                                       const CUDA_KERNEL_NODE_PARAMS_v2 *nodeParams) {
  pthread_mutex_lock(&cu_g_lock);
  cu_gexec *e = (cu_gexec *)hGraphExec;
  cu_gnode *n = cu_g_is(e, CU_G_EXEC) && cu_g_is(hNode, CU_G_NODE) ? cu_g_exec_node(e, hNode) : NULL;
  CUresult rc = CUDA_ERROR_INVALID_VALUE;
  /* The function may change too (CUDA 12; NVIDIA's driver 580 takes it). */
  if (n && n->type == CU_GRAPH_NODE_TYPE_KERNEL && !n->op && nodeParams) rc = cu_g_set_kernel(n, nodeParams);
  pthread_mutex_unlock(&cu_g_lock);
  return rc;
}

CUresult CU_IMPL(cuGraphExecKernelNodeSetParams_10010)(CUgraphExec hGraphExec, CUgraphNode hNode,
                                                       const CUDA_KERNEL_NODE_PARAMS_v1 *nodeParams) {
  if (!nodeParams) return CUDA_ERROR_INVALID_VALUE;
  CUDA_KERNEL_NODE_PARAMS k = cu_g_kp_from_v1(nodeParams);
  return CU_IMPL(cuGraphExecKernelNodeSetParams_12000)(hGraphExec, hNode, &k);
}

/* The exec takes the graph's parameters when the graph has the same shape:
 * as many nodes, of the same types, in the same order. */
CUresult CU_IMPL(cuGraphExecUpdate_12000)(CUgraphExec hGraphExec, CUgraph hGraph,
                                          CUgraphExecUpdateResultInfo_v1 *resultInfo) {
  if (!resultInfo) return CUDA_ERROR_INVALID_VALUE;
  memset(resultInfo, 0, sizeof *resultInfo);
  pthread_mutex_lock(&cu_g_lock);
  cu_gexec *e = (cu_gexec *)hGraphExec;
  cu_graph *g = (cu_graph *)hGraph;
  CUresult rc = CUDA_SUCCESS;
  if (!cu_g_is(e, CU_G_EXEC) || !cu_g_is(g, CU_G_GRAPH)) {
    rc = CUDA_ERROR_INVALID_VALUE;
  } else if (g->n != e->n) {
    resultInfo->result = CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED;
    rc = CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE;
  } else {
    cu_gexec *fresh = NULL;
    rc = cu_g_instantiate(g, &fresh);
    for (size_t i = 0; !rc && i < e->n; i++) {
      if (fresh->nodes[i].type != e->nodes[i].type ||
          (e->nodes[i].type == CU_GRAPH_NODE_TYPE_KERNEL && fresh->nodes[i].kp.func != e->nodes[i].kp.func)) {
        resultInfo->result = fresh->nodes[i].type != e->nodes[i].type ? CU_GRAPH_EXEC_UPDATE_ERROR_NODE_TYPE_CHANGED
                                                                      : CU_GRAPH_EXEC_UPDATE_ERROR_FUNCTION_CHANGED;
        resultInfo->errorNode = (CUgraphNode)fresh->from[i];
        rc = CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE;
      }
    }
    if (!rc) {
      /* Swap contents: the exec keeps its handle, takes the fresh nodes. */
      cu_gnode *nodes = e->nodes;
      cu_gnode **from = e->from;
      e->nodes = fresh->nodes;
      e->from = fresh->from;
      fresh->nodes = nodes;
      fresh->from = from;
    }
    if (fresh) {
      cu_g_del(fresh);
      cu_g_exec_free(fresh);
    }
  }
  pthread_mutex_unlock(&cu_g_lock);
  return rc;
}

CUresult CU_IMPL(cuGraphExecUpdate_10020)(CUgraphExec hGraphExec, CUgraph hGraph, CUgraphNode *hErrorNode_out,
                                          CUgraphExecUpdateResult *updateResult_out) {
  CUgraphExecUpdateResultInfo info;
  CUresult rc = CU_IMPL(cuGraphExecUpdate_12000)(hGraphExec, hGraph, &info);
  if (hErrorNode_out) *hErrorNode_out = info.errorNode;
  if (updateResult_out) *updateResult_out = info.result;
  return rc;
}

/* ---- capture API -------------------------------------------------------------- */

CUresult CU_IMPL(cuStreamBeginCapture_10010)(CUstream hStream, CUstreamCaptureMode mode) {
  uint64_t key;
  CUresult rc = G_stream_key(hStream, &key);
  if (rc) return rc;
  if (mode != CU_STREAM_CAPTURE_MODE_GLOBAL && mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
      mode != CU_STREAM_CAPTURE_MODE_RELAXED)
    return CUDA_ERROR_INVALID_VALUE;
  if (!key) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; /* the legacy stream cannot be captured */
  CUgraph g;
  rc = CU_IMPL(cuGraphCreate_10000)(&g, 0);
  if (rc) return rc;
  pthread_mutex_lock(&cu_g_lock);
  if (cu_capture_find(key)) {
    rc = CUDA_ERROR_ILLEGAL_STATE;
  } else if (cu_ncaptures == cu_capcaptures) {
    size_t cap = cu_capcaptures ? 2 * cu_capcaptures : 8;
    cu_capture *a = realloc(cu_captures, cap * sizeof *a);
    if (!a)
      rc = CUDA_ERROR_OUT_OF_MEMORY;
    else {
      cu_captures = a;
      cu_capcaptures = cap;
    }
  }
  if (!rc) {
    cu_captures[cu_ncaptures++] = (cu_capture){key, (cu_graph *)g, NULL, cu_capture_ids++, mode, false};
    __atomic_add_fetch(&cu_capturing, 1, __ATOMIC_RELEASE);
  } else {
    cu_g_graph_free((cu_graph *)g);
  }
  pthread_mutex_unlock(&cu_g_lock);
  return rc;
}

CUresult CU_IMPL(cuStreamBeginCapture_10000)(CUstream hStream) {
  return CU_IMPL(cuStreamBeginCapture_10010)(hStream, CU_STREAM_CAPTURE_MODE_GLOBAL);
}

CUresult CU_IMPL(cuStreamEndCapture_10000)(CUstream hStream, CUgraph *phGraph) {
  uint64_t key;
  CUresult rc = G_stream_key(hStream, &key);
  if (rc) return rc;
  if (!phGraph) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&cu_g_lock);
  cu_capture *c = cu_capture_find(key);
  if (!c) {
    pthread_mutex_unlock(&cu_g_lock);
    return CUDA_ERROR_ILLEGAL_STATE;
  }
  cu_capture done = *c;
  *c = cu_captures[--cu_ncaptures];
  __atomic_sub_fetch(&cu_capturing, 1, __ATOMIC_RELEASE);
  if (done.invalidated) {
    cu_g_graph_free(done.graph);
    rc = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    *phGraph = NULL;
  } else {
    *phGraph = (CUgraph)done.graph;
  }
  pthread_mutex_unlock(&cu_g_lock);
  return rc;
}

CUresult CU_IMPL(cuStreamIsCapturing_10000)(CUstream hStream, CUstreamCaptureStatus *captureStatus) {
  uint64_t key;
  CUresult rc = G_stream_key(hStream, &key);
  if (rc) return rc;
  if (!captureStatus) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&cu_g_lock);
  cu_capture *c = cu_capture_find(key);
  *captureStatus = !c ? CU_STREAM_CAPTURE_STATUS_NONE
                   : c->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED
                                    : CU_STREAM_CAPTURE_STATUS_ACTIVE;
  pthread_mutex_unlock(&cu_g_lock);
  return CUDA_SUCCESS;
}

CUresult CU_IMPL(cuStreamGetCaptureInfo_12030)(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                               cuuint64_t *id_out, CUgraph *graph_out,
                                               const CUgraphNode **dependencies_out,
                                               const CUgraphEdgeData **edgeData_out, size_t *numDependencies_out) {
  uint64_t key;
  CUresult rc = G_stream_key(hStream, &key);
  if (rc) return rc;
  if (!captureStatus_out) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&cu_g_lock);
  cu_capture *c = cu_capture_find(key);
  *captureStatus_out = !c ? CU_STREAM_CAPTURE_STATUS_NONE
                       : c->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED
                                        : CU_STREAM_CAPTURE_STATUS_ACTIVE;
  if (c) {
    if (id_out) *id_out = c->id;
    if (graph_out) *graph_out = (CUgraph)c->graph;
    /* The node the next captured one will depend on. */
    static __thread CUgraphNode dep;
    dep = (CUgraphNode)c->last;
    if (dependencies_out) *dependencies_out = c->last ? &dep : NULL;
    if (numDependencies_out) *numDependencies_out = c->last ? 1 : 0;
  } else {
    if (graph_out) *graph_out = NULL;
    if (dependencies_out) *dependencies_out = NULL;
    if (numDependencies_out) *numDependencies_out = 0;
  }
  if (edgeData_out) *edgeData_out = NULL;
  pthread_mutex_unlock(&cu_g_lock);
  return CUDA_SUCCESS;
}

CUresult CU_IMPL(cuStreamGetCaptureInfo_11030)(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                               cuuint64_t *id_out, CUgraph *graph_out,
                                               const CUgraphNode **dependencies_out, size_t *numDependencies_out) {
  return CU_IMPL(cuStreamGetCaptureInfo_12030)(hStream, captureStatus_out, id_out, graph_out, dependencies_out, NULL,
                                               numDependencies_out);
}

CUresult CU_IMPL(cuStreamGetCaptureInfo_10010)(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                               cuuint64_t *id_out) {
  return CU_IMPL(cuStreamGetCaptureInfo_12030)(hStream, captureStatus_out, id_out, NULL, NULL, NULL, NULL);
}

#endif
