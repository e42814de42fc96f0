/* The JIT linker (cuLinkCreate .. cuLinkDestroy), forwarded: the controller's
 * driver links (gpu/controller/link.c), whichever driver it is.
 *
 * The link state is a minted handle. Inputs go as the channel's blob
 * (cuLinkAddFile reads its file here and sends the bytes). cuLinkComplete
 * copies the linked image back through the staging area into memory owned by
 * the link state, valid until cuLinkDestroy, as the driver documents. The
 * JIT log buffers given at create receive the controller's logs after each
 * add and after the link. Of the create options, the log buffers and
 * CU_JIT_LOG_VERBOSE are forwarded; the others are taken and not forwarded
 * (the controller's driver links with its defaults), as for module loads.
 *
 * Link states are transient and not checkpointed: after a restore the new
 * controller knows none, so a link state open across the checkpoint answers
 * CUDA_ERROR_INVALID_HANDLE to adds and cuLinkComplete; cuLinkDestroy still
 * frees it here and succeeds, and an image already completed stays valid.
 */
#include "ic.h"

#include <stdlib.h>
#include <string.h>

static CUresult link_arg(ic_thread *t, CUlinkState h, ic_obj **out) {
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  return ic_obj_arg(t, h, IC_LINK, out);
}

static CUresult bad_options(unsigned n, CUjit_option *options, void **values) {
  return n && (!options || !values) ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

/* LINK_READ into dst (at most cap bytes) from the start; *total = the whole
 * size. Inside ic_enter. */
static CUresult read_back(ic_thread *t, ic_obj *l, uint32_t what, uint8_t *dst, size_t cap,
                          uint64_t *total) {
  uint64_t off = 0;
  *total = 0;
  for (;;) {
    cgs_link *r = (cgs_link *)t->req;
    ic_req(r, CGS_OP_LINK_READ, sizeof *r, l->ctx);
    r->handle = l->handle;
    r->size = off;
    r->info_log = r->error_log = 0;
    r->type = what;
    r->flags = 0;
    memset(r->name, 0, sizeof r->name);
    cgs_channel *ch;
    CUresult rc = ic_call(t, r, &ch);
    if (rc) return rc;
    uint64_t whole = ch->ret[0], n = ch->ret[1];
    *total = whole;
    if (n > ic.staging_size || off + n > whole) return CUDA_ERROR_UNKNOWN; /* not the controller's answer */
    if (off < cap) memcpy(dst + off, ic_staging(ch), off + n > cap ? cap - off : n);
    off += n;
    if (off >= whole || off >= cap || n == 0) return CUDA_SUCCESS;
  }
}

/* The controller's logs into the caller's log buffers (best effort). */
static void fetch_logs(ic_thread *t, ic_obj *l) {
  for (int k = 0; k < 2; k++) {
    char *buf = l->u.ln.log[k];
    size_t size = l->u.ln.log_size[k];
    if (!buf || !size) continue;
    uint64_t total;
    if (read_back(t, l, k == 0 ? CGS_LINK_INFO_LOG : CGS_LINK_ERROR_LOG, (uint8_t *)buf, size - 1,
                  &total))
      continue;
    buf[total < size - 1 ? total : size - 1] = 0;
  }
}

CUresult ic_cuLinkCreate_6050(unsigned int numOptions, CUjit_option *options, void **optionValues,
                              CUlinkState *stateOut) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  if (!stateOut) return CUDA_ERROR_INVALID_VALUE;
  rc = bad_options(numOptions, options, optionValues);
  if (rc) return rc;
  char *log[2] = {NULL, NULL};
  size_t log_size[2] = {0, 0};
  uint32_t flags = 0;
  for (unsigned i = 0; i < numOptions; i++) {
    switch (options[i]) {
    case CU_JIT_INFO_LOG_BUFFER: log[0] = optionValues[i]; break;
    case CU_JIT_ERROR_LOG_BUFFER: log[1] = optionValues[i]; break;
    case CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES: log_size[0] = (size_t)(uintptr_t)optionValues[i]; break;
    case CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES: log_size[1] = (size_t)(uintptr_t)optionValues[i]; break;
    case CU_JIT_LOG_VERBOSE: flags |= optionValues[i] ? 1u : 0u; break;
    default:
      if ((unsigned)options[i] >= CU_JIT_NUM_OPTIONS) return CUDA_ERROR_INVALID_VALUE;
      break;
    }
  }
  for (int k = 0; k < 2; k++) {
    if (!log[k]) log_size[k] = 0;
    if (log_size[k] > CGS_LINK_MAX_LOG) log_size[k] = CGS_LINK_MAX_LOG; /* the rest stays unwritten */
    if (log_size[k]) log[k][0] = 0;
  }
  ic_obj *l;
  rc = ic_enter_new(t, IC_LINK, ctx->handle, &l);
  if (rc) return rc;
  for (int k = 0; k < 2; k++) {
    l->u.ln.log[k] = log[k];
    l->u.ln.log_size[k] = log_size[k];
  }
  cgs_link *r = (cgs_link *)t->req;
  ic_req(r, CGS_OP_LINK_CREATE, sizeof *r, ctx->handle);
  r->handle = l->handle;
  r->size = 0;
  r->info_log = log_size[0];
  r->error_log = log_size[1];
  r->type = 0;
  r->flags = flags;
  memset(r->name, 0, sizeof r->name);
  rc = ic_call(t, r, NULL);
  ic_leave();
  if (rc) {
    __atomic_store_n(&l->state, IC_DESTROYED, __ATOMIC_RELEASE);
    return rc;
  }
  *stateOut = (CUlinkState)(uintptr_t)l->handle;
  return CUDA_SUCCESS;
}

static CUresult add_bytes(ic_thread *t, ic_obj *l, CUjitInputType type, const void *data, size_t size,
                          const char *name) {
  if ((unsigned)type >= CU_JIT_NUM_INPUT_TYPES) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  rc = ic_blob_upload(t, l->ctx, data, size);
  if (!rc) {
    cgs_link *r = (cgs_link *)t->req;
    ic_req(r, CGS_OP_LINK_ADD, sizeof *r, l->ctx);
    r->handle = l->handle;
    r->size = size;
    r->info_log = r->error_log = 0;
    r->type = (uint32_t)type;
    r->flags = 0;
    memset(r->name, 0, sizeof r->name);
    if (name) strncpy(r->name, name, sizeof r->name - 1);
    rc = ic_call(t, r, NULL);
    if (rc != CUDA_ERROR_INVALID_HANDLE) fetch_logs(t, l);
  }
  ic_leave();
  return rc;
}

CUresult ic_cuLinkAddData_6050(CUlinkState state, CUjitInputType type, void *data, size_t size,
                               const char *name, unsigned int numOptions, CUjit_option *options,
                               void **optionValues) {
  ic_thread *t = ic_self();
  ic_obj *l;
  CUresult rc = link_arg(t, state, &l);
  if (rc) return rc;
  if (!data || !size) return CUDA_ERROR_INVALID_VALUE;
  rc = bad_options(numOptions, options, optionValues);
  if (rc) return rc;
  return add_bytes(t, l, type, data, size, name);
}

CUresult ic_cuLinkAddFile_6050(CUlinkState state, CUjitInputType type, const char *path,
                               unsigned int numOptions, CUjit_option *options, void **optionValues) {
  ic_thread *t = ic_self();
  ic_obj *l;
  CUresult rc = link_arg(t, state, &l);
  if (rc) return rc;
  if (!path) return CUDA_ERROR_INVALID_VALUE;
  rc = bad_options(numOptions, options, optionValues);
  if (rc) return rc;
  if ((unsigned)type >= CU_JIT_NUM_INPUT_TYPES) return CUDA_ERROR_INVALID_VALUE;
  void *bytes;
  size_t size;
  rc = ic_read_image(path, &bytes, &size); /* a PTX file gets its NUL */
  if (rc) return rc;
  const char *base = strrchr(path, '/');
  rc = add_bytes(t, l, type, bytes, size, base ? base + 1 : path);
  free(bytes);
  return rc;
}

CUresult ic_cuLinkComplete_5050(CUlinkState state, void **cubinOut, size_t *sizeOut) {
  ic_thread *t = ic_self();
  ic_obj *l;
  CUresult rc = link_arg(t, state, &l);
  if (rc) return rc;
  if (!cubinOut || !sizeOut) return CUDA_ERROR_INVALID_VALUE;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_link *r = (cgs_link *)t->req;
  ic_req(r, CGS_OP_LINK_COMPLETE, sizeof *r, l->ctx);
  r->handle = l->handle;
  r->size = 0;
  r->info_log = r->error_log = 0;
  r->type = 0;
  r->flags = 0;
  memset(r->name, 0, sizeof r->name);
  cgs_channel *ch;
  rc = ic_call(t, r, &ch);
  uint64_t size = rc ? 0 : ch->ret[0];
  if (rc != CUDA_ERROR_INVALID_HANDLE) fetch_logs(t, l);
  uint8_t *image = NULL;
  if (!rc) {
    /* One zero byte past the end: a PTX image stays a string. */
    image = size < SIZE_MAX ? calloc(1, (size_t)size + 1) : NULL;
    if (!image) rc = CUDA_ERROR_OUT_OF_MEMORY;
  }
  uint64_t total = 0;
  if (!rc) rc = read_back(t, l, CGS_LINK_IMAGE, image, (size_t)size, &total);
  ic_leave();
  if (!rc && total != size) rc = CUDA_ERROR_UNKNOWN;
  if (rc) {
    free(image);
    return rc;
  }
  free(l->u.ln.image); /* an earlier cuLinkComplete's */
  l->u.ln.image = image;
  l->u.ln.image_size = (size_t)size;
  *cubinOut = image;
  *sizeOut = (size_t)size;
  return CUDA_SUCCESS;
}

CUresult ic_cuLinkDestroy_5050(CUlinkState state) {
  ic_thread *t = ic_self();
  ic_obj *l;
  CUresult rc = link_arg(t, state, &l);
  if (rc) return rc;
  rc = ic_enter_destroy(t, l);
  if (rc) return rc;
  cgs_link *r = (cgs_link *)t->req;
  ic_req(r, CGS_OP_LINK_DESTROY, sizeof *r, l->ctx);
  r->handle = l->handle;
  r->size = 0;
  r->info_log = r->error_log = 0;
  r->type = 0;
  r->flags = 0;
  memset(r->name, 0, sizeof r->name);
  rc = ic_call(t, r, NULL);
  ic_leave();
  free(l->u.ln.image);
  l->u.ln.image = NULL;
  /* A controller restored from a checkpoint does not know the link state. */
  return rc == CUDA_ERROR_INVALID_HANDLE ? CUDA_SUCCESS : rc;
}
