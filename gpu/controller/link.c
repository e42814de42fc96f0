/* The job's JIT link states (cuLinkCreate .. cuLinkDestroy), run by whatever
 * driver the controller has (NVIDIA's or the fake one).
 *
 * LINK_CREATE makes a driver link state under the job's minted handle, with
 * log buffers of the sizes the job's own buffers have (CU_JIT_LOG_VERBOSE
 * forwarded; the job's other create options are not: the driver links with
 * its defaults). LINK_ADD adds the channel's blob (the input's bytes, sent
 * with BLOB_PUT; cuLinkAddFile reads the file in the job) with its type and
 * name. LINK_COMPLETE links; the image stays the driver's, owned by the link
 * state, and LINK_READ copies it to the job piece by piece through the
 * staging area, as it copies the logs, which the job writes into the buffers
 * it gave at create. LINK_DESTROY destroys the driver's link state.
 *
 * Link states are transient: nothing here is written to a checkpoint. A
 * restored controller has no link states, so a link state the job held open
 * across a checkpoint answers CUDA_ERROR_INVALID_HANDLE to every cuLink* call
 * but cuLinkDestroy, which the interposer always lets succeed; an image the
 * job got from cuLinkComplete is in the job's own memory and survives.
 */
#include "cgc_internal.h"

#include <stdlib.h>
#include <string.h>

/* Link states one job may hold at once: each holds driver memory. */
#define MAX_LINKS 1024

typedef struct cgc_link {
  uint64_t minted;
  uint64_t ctx; /* the job's context it was created in */
  CUlinkState real;
  char *log[2]; /* info, error: NUL-terminated, the driver writes them */
  uint64_t log_size[2];
  void *image; /* the driver's, valid until the link state is destroyed */
  size_t image_size;
  bool completed;
  uint8_t **inputs; /* the added bytes, kept until destroy (the driver may refer to them) */
  size_t ninputs;
} cgc_link;

static void link_free(cgc_t *c, cgc_link *l) {
  if (l->real && c->drv.cuLinkDestroy) c->drv.cuLinkDestroy(l->real);
  for (size_t i = 0; i < l->ninputs; i++) free(l->inputs[i]);
  free(l->inputs);
  free(l->log[0]);
  free(l->log[1]);
  free(l);
}

void cgc_links_free(cgc_t *c) {
  CGC_HMAP_EACH(&c->links, cgc_link *, l) {
    cgc_hmap_del(&c->links, l->minted);
    link_free(c, l);
  }
  cgc_hmap_free(&c->links);
}

/* Context x goes away: its link states' driver objects go with it. The
 * entries stay, so that the job's cuLinkDestroy still succeeds; anything
 * else on them answers CUDA_ERROR_CONTEXT_IS_DESTROYED. */
void cgc_links_drop_ctx(cgc_t *c, uint64_t ctx) {
  CGC_HMAP_EACH(&c->links, cgc_link *, l) {
    if (l->ctx != ctx || !l->real) continue;
    c->drv.cuLinkDestroy(l->real);
    l->real = NULL;
    l->image = NULL;
    l->image_size = 0;
    l->completed = false;
  }
}

static CUresult link_create(cgc_t *c, cgs_link *r) {
  if (!c->drv.cuLinkCreate || !c->drv.cuLinkAddData || !c->drv.cuLinkComplete || !c->drv.cuLinkDestroy)
    return CUDA_ERROR_NOT_SUPPORTED;
  cgc_context *x;
  CUresult rc = cgc_use_ctx(c, r->h.ctx, false, &x);
  if (rc) return rc;
  if (cgc_hmap_get(&c->links, r->handle)) return CUDA_ERROR_INVALID_VALUE;
  if (c->links.len >= MAX_LINKS) return CUDA_ERROR_OUT_OF_MEMORY;
  cgc_link *l = calloc(1, sizeof *l);
  if (!l) return CUDA_ERROR_OUT_OF_MEMORY;
  l->minted = r->handle;
  l->ctx = r->h.ctx;
  l->log_size[0] = r->info_log;
  l->log_size[1] = r->error_log;
  CUjit_option opts[5];
  void *vals[5];
  unsigned n = 0;
  static const CUjit_option buf_opt[2] = {CU_JIT_INFO_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER};
  static const CUjit_option size_opt[2] = {CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  for (int k = 0; k < 2; k++) {
    if (!l->log_size[k]) continue;
    l->log[k] = calloc(1, l->log_size[k]);
    if (!l->log[k]) {
      link_free(c, l);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    opts[n] = buf_opt[k];
    vals[n++] = l->log[k];
    opts[n] = size_opt[k];
    vals[n++] = (void *)(uintptr_t)l->log_size[k];
  }
  if (r->flags & 1) {
    opts[n] = CU_JIT_LOG_VERBOSE;
    vals[n++] = (void *)(uintptr_t)1;
  }
  rc = c->drv.cuLinkCreate(n, n ? opts : NULL, n ? vals : NULL, &l->real);
  if (rc) {
    l->real = NULL;
    link_free(c, l);
    return rc;
  }
  if (cgc_hmap_put(&c->links, r->handle, l)) {
    link_free(c, l);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  return CUDA_SUCCESS;
}

static CUresult link_add(cgc_t *c, cgs_link *r, cgc_link *l) {
  cgc_blob *b = &c->blobs[r->h.channel];
  if (!b->buf || b->total != r->size || b->filled != r->size) return CUDA_ERROR_INVALID_VALUE;
  if (l->completed) return CUDA_ERROR_INVALID_VALUE;
  uint8_t **inputs = realloc(l->inputs, (l->ninputs + 1) * sizeof *inputs);
  if (!inputs) return CUDA_ERROR_OUT_OF_MEMORY;
  l->inputs = inputs;
  char name[CGS_LINK_NAME];
  memcpy(name, r->name, sizeof name);
  name[sizeof name - 1] = 0;
  /* The blob has a spare zero byte past its end: a PTX input is a string. */
  CUresult rc = c->drv.cuLinkAddData(l->real, (CUjitInputType)r->type, b->buf, r->size, name, 0, NULL, NULL);
  if (rc) return rc;
  l->inputs[l->ninputs++] = b->buf; /* the link's now */
  b->buf = NULL;
  b->total = b->filled = 0;
  return CUDA_SUCCESS;
}

static CUresult link_read(cgc_t *c, cgs_link *r, cgc_link *l, uint64_t *ret, int *nret) {
  const uint8_t *src;
  uint64_t total;
  if (r->type == CGS_LINK_IMAGE) {
    if (!l->completed) return CUDA_ERROR_INVALID_VALUE;
    src = l->image;
    total = l->image_size;
  } else {
    int k = r->type == CGS_LINK_INFO_LOG ? 0 : 1;
    src = (const uint8_t *)l->log[k];
    total = src ? strnlen(l->log[k], l->log_size[k]) : 0;
  }
  if (r->size > total) return CUDA_ERROR_INVALID_VALUE;
  uint64_t n = total - r->size;
  if (n > c->staging_size) n = c->staging_size;
  cgs_channel *ch = cgs_channel_at(c->hdr, c->channels_offset, c->channel_stride, r->h.channel);
  if (n) memcpy(cgs_staging(ch), src + r->size, n);
  ret[0] = total;
  ret[1] = n;
  *nret = 2;
  return CUDA_SUCCESS;
}

int cgc_op_link(cgc_t *c, cgs_link *r, uint64_t *ret, int *nret) {
  if (r->h.op == CGS_OP_LINK_CREATE) return link_create(c, r);
  cgc_link *l = cgc_hmap_get(&c->links, r->handle);
  if (!l) return CUDA_ERROR_INVALID_HANDLE;
  if (r->h.op == CGS_OP_LINK_DESTROY) {
    cgc_hmap_del(&c->links, r->handle);
    link_free(c, l);
    return CUDA_SUCCESS;
  }
  if (r->h.op == CGS_OP_LINK_READ) return link_read(c, r, l, ret, nret);
  if (!l->real) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  /* Adding and linking run in the context the link state was made in. */
  cgc_context *x;
  CUresult rc = cgc_use_ctx(c, l->ctx, false, &x);
  if (rc) return rc;
  if (r->h.op == CGS_OP_LINK_ADD) return link_add(c, r, l);
  /* LINK_COMPLETE */
  void *image = NULL;
  size_t size = 0;
  rc = c->drv.cuLinkComplete(l->real, &image, &size);
  if (rc) return rc;
  if (!image || !size) return CUDA_ERROR_UNKNOWN;
  l->image = image;
  l->image_size = size;
  l->completed = true;
  ret[0] = size;
  *nret = 1;
  return CUDA_SUCCESS;
}
