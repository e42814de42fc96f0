/* Structural validation of one request, before anything acts on it.
 *
 * Runs on the dispatcher's private copy of the request, so nothing can change
 * between the check and the use. It checks what can be checked without the
 * driver or the tables: the op, lengths and slot counts, the channel,
 * staging offsets and sizes, NUL-terminated names, arithmetic that could
 * overflow. Handles and device addresses are checked at execution against
 * the job's tables (dispatch.c).
 */
#include "cgc_internal.h"

#include <stdarg.h>
#include <stdio.h>

enum { CH_OPT = 0, CH_REQ = 1, CH_DEPENDS = 2 };

typedef struct op_info {
  const char *name;
  uint32_t min_len;
  uint8_t channel;
} op_info;

static const op_info ops[CGS_OP_COUNT] = {
    [CGS_OP_NOP] = {"NOP", sizeof(cgs_req), CH_OPT},
    [CGS_OP_CTX_CREATE] = {"CTX_CREATE", sizeof(cgs_ctx), CH_OPT},
    [CGS_OP_CTX_DESTROY] = {"CTX_DESTROY", sizeof(cgs_ctx), CH_REQ},
    [CGS_OP_CTX_SYNCHRONIZE] = {"CTX_SYNCHRONIZE", sizeof(cgs_ctx), CH_REQ},
    [CGS_OP_PRIMARY_RETAIN] = {"PRIMARY_RETAIN", sizeof(cgs_ctx), CH_OPT},
    [CGS_OP_PRIMARY_RELEASE] = {"PRIMARY_RELEASE", sizeof(cgs_ctx), CH_OPT},
    [CGS_OP_PRIMARY_RESET] = {"PRIMARY_RESET", sizeof(cgs_ctx), CH_REQ},
    [CGS_OP_MEM_ALLOC] = {"MEM_ALLOC", sizeof(cgs_mem), CH_REQ},
    [CGS_OP_MEM_FREE] = {"MEM_FREE", sizeof(cgs_mem), CH_OPT},
    [CGS_OP_MEM_GET_INFO] = {"MEM_GET_INFO", sizeof(cgs_mem), CH_REQ},
    [CGS_OP_MEMCPY_HTOD] = {"MEMCPY_HTOD", sizeof(cgs_copy), CH_DEPENDS},
    [CGS_OP_MEMCPY_DTOH] = {"MEMCPY_DTOH", sizeof(cgs_copy), CH_DEPENDS},
    [CGS_OP_MEMCPY_DTOD] = {"MEMCPY_DTOD", sizeof(cgs_copy), CH_DEPENDS},
    [CGS_OP_MEMSET] = {"MEMSET", sizeof(cgs_memset), CH_DEPENDS},
    [CGS_OP_STREAM_CREATE] = {"STREAM_CREATE", sizeof(cgs_stream), CH_OPT},
    [CGS_OP_STREAM_DESTROY] = {"STREAM_DESTROY", sizeof(cgs_stream), CH_OPT},
    [CGS_OP_STREAM_SYNCHRONIZE] = {"STREAM_SYNCHRONIZE", sizeof(cgs_stream), CH_REQ},
    [CGS_OP_STREAM_QUERY] = {"STREAM_QUERY", sizeof(cgs_stream), CH_REQ},
    [CGS_OP_STREAM_WAIT_EVENT] = {"STREAM_WAIT_EVENT", sizeof(cgs_stream), CH_OPT},
    [CGS_OP_EVENT_CREATE] = {"EVENT_CREATE", sizeof(cgs_event), CH_OPT},
    [CGS_OP_EVENT_RECORD] = {"EVENT_RECORD", sizeof(cgs_event), CH_OPT},
    [CGS_OP_EVENT_QUERY] = {"EVENT_QUERY", sizeof(cgs_event), CH_REQ},
    [CGS_OP_EVENT_SYNCHRONIZE] = {"EVENT_SYNCHRONIZE", sizeof(cgs_event), CH_REQ},
    [CGS_OP_EVENT_ELAPSED] = {"EVENT_ELAPSED", sizeof(cgs_event), CH_REQ},
    [CGS_OP_EVENT_DESTROY] = {"EVENT_DESTROY", sizeof(cgs_event), CH_OPT},
    [CGS_OP_BLOB_PUT] = {"BLOB_PUT", sizeof(cgs_blob), CH_REQ},
    [CGS_OP_MODULE_LOAD] = {"MODULE_LOAD", sizeof(cgs_module), CH_REQ},
    [CGS_OP_MODULE_UNLOAD] = {"MODULE_UNLOAD", sizeof(cgs_module), CH_REQ},
    /* A symbol request may end right after the name's NUL. */
    [CGS_OP_MODULE_GET_FUNCTION] = {"MODULE_GET_FUNCTION", offsetof(cgs_symbol, name) + 1, CH_REQ},
    [CGS_OP_MODULE_GET_GLOBAL] = {"MODULE_GET_GLOBAL", offsetof(cgs_symbol, name) + 1, CH_REQ},
    [CGS_OP_FUNC_GET_ATTRIBUTE] = {"FUNC_GET_ATTRIBUTE", sizeof(cgs_func_attr), CH_REQ},
    [CGS_OP_FUNC_SET_ATTRIBUTE] = {"FUNC_SET_ATTRIBUTE", sizeof(cgs_func_attr), CH_OPT},
    [CGS_OP_LAUNCH] = {"LAUNCH", sizeof(cgs_launch), CH_OPT},
    [CGS_OP_HOST_REGISTER] = {"HOST_REGISTER", sizeof(cgs_pin), CH_REQ},
    [CGS_OP_HOST_UNREGISTER] = {"HOST_UNREGISTER", sizeof(cgs_pin), CH_REQ},
    [CGS_OP_HOST_FUNC] = {"HOST_FUNC", sizeof(cgs_host_func), CH_OPT},
};

const char *cgc_op_name(uint32_t op) { return op < CGS_OP_COUNT ? ops[op].name : "INVALID_OP"; }

static int why_fmt(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int why_fmt(char *why, size_t why_len, const char *fmt, ...) {
  if (why && why_len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
  }
  return CUDA_ERROR_INVALID_VALUE;
}

#define BAD(...) return why_fmt(why, why_len, __VA_ARGS__)

/* [a, a+n) inside [0, limit) without overflow. */
static inline bool fits(uint64_t a, uint64_t n, uint64_t limit) { return a <= limit && n <= limit - a; }

static int check_copy(const cgs_copy *r, uint64_t staging_size, char *why, size_t why_len) {
  bool has_channel = r->h.channel != CGS_NO_CHANNEL;
  uint64_t dev = r->h.op == CGS_OP_MEMCPY_DTOH ? r->src : r->dst;
  if (dev + r->size < dev) BAD("%s: device range 0x%llx+%llu wraps around", ops[r->h.op].name,
                              (unsigned long long)dev, (unsigned long long)r->size);
  if (r->h.op == CGS_OP_MEMCPY_DTOD) {
    if (r->src + r->size < r->src) BAD("MEMCPY_DTOD: source range wraps around");
    if (!r->async && !has_channel) BAD("MEMCPY_DTOD: a synchronous copy needs a channel");
    return 0;
  }
  switch (r->host_kind) {
  case CGS_HOST_STAGING:
    /* The staging area belongs to the channel and is reused as soon as the
     * request completes, so a staged copy always completes on it. */
    if (!has_channel) BAD("%s: a staged copy needs a channel", ops[r->h.op].name);
    if (!fits(r->host_offset, r->size, staging_size))
      BAD("%s: staging range %llu+%llu exceeds the staging area (%llu bytes)", ops[r->h.op].name,
          (unsigned long long)r->host_offset, (unsigned long long)r->size,
          (unsigned long long)staging_size);
    return 0;
  case CGS_HOST_PINNED:
    if (!r->async && !has_channel) BAD("%s: a synchronous copy needs a channel", ops[r->h.op].name);
    if (r->host_offset + r->size < r->host_offset) BAD("%s: pinned range wraps around", ops[r->h.op].name);
    return 0;
  default:
    BAD("%s: unknown host memory kind %u", ops[r->h.op].name, r->host_kind);
  }
}

static int check_memset(const cgs_memset *r, char *why, size_t why_len) {
  if (r->elem_size != 1 && r->elem_size != 2 && r->elem_size != 4)
    BAD("MEMSET: element size %u is not 1, 2 or 4", r->elem_size);
  if (r->height == 0) BAD("MEMSET: height is 0");
  if (!r->async && r->h.channel == CGS_NO_CHANNEL) BAD("MEMSET: a synchronous memset needs a channel");
  /* Bytes touched: pitch * (height - 1) + width * elem_size, all checked. */
  unsigned __int128 row = (unsigned __int128)r->width * r->elem_size;
  unsigned __int128 span = row;
  if (r->height > 1) {
    if (r->pitch < row) BAD("MEMSET: pitch %llu is smaller than a row", (unsigned long long)r->pitch);
    span += (unsigned __int128)r->pitch * (r->height - 1);
  }
  if (span > UINT64_MAX || (unsigned __int128)r->dst + span > UINT64_MAX)
    BAD("MEMSET: range wraps around");
  return 0;
}

CGC_HIDDEN int cgc_validate(const void *buf, size_t len, uint32_t nchannels, uint64_t staging_size, char *why,
                            size_t why_len) {
  if (why && why_len) why[0] = 0;
  if (!buf || len < sizeof(cgs_req)) BAD("request shorter than its header (%zu bytes)", len);
  const cgs_req *h = buf;
  if (h->op >= CGS_OP_COUNT) BAD("unknown op %u", h->op);
  const op_info *oi = &ops[h->op];
  if (h->nslots < 1 || h->nslots > CGS_MAX_REQUEST_SLOTS)
    BAD("%s: slot count %u outside 1..%u", oi->name, h->nslots, CGS_MAX_REQUEST_SLOTS);
  if (h->length < sizeof(cgs_req) || h->length > CGS_MAX_REQUEST)
    BAD("%s: length %u outside %zu..%zu", oi->name, h->length, sizeof(cgs_req), (size_t)CGS_MAX_REQUEST);
  if (cgs_slots_for(h->length) != h->nslots)
    BAD("%s: length %u does not span %u slots", oi->name, h->length, h->nslots);
  if (h->length > len) BAD("%s: length %u exceeds the %zu bytes received", oi->name, h->length, len);
  if (h->length < oi->min_len) BAD("%s: length %u is shorter than the request (%u)", oi->name, h->length, oi->min_len);
  if (h->channel != CGS_NO_CHANNEL && h->channel >= nchannels)
    BAD("%s: channel %u outside 0..%u", oi->name, h->channel, nchannels ? nchannels - 1 : 0);
  if (oi->channel == CH_REQ && h->channel == CGS_NO_CHANNEL) BAD("%s: a synchronous request needs a channel", oi->name);

  switch (h->op) {
  case CGS_OP_MEMCPY_HTOD:
  case CGS_OP_MEMCPY_DTOH:
  case CGS_OP_MEMCPY_DTOD:
    return check_copy(buf, staging_size, why, why_len);
  case CGS_OP_MEMSET:
    return check_memset(buf, why, why_len);
  case CGS_OP_MEM_ALLOC: {
    const cgs_mem *r = buf;
    if (r->size == 0) BAD("MEM_ALLOC: size 0");
    return 0;
  }
  case CGS_OP_BLOB_PUT: {
    const cgs_blob *r = buf;
    if (r->total == 0 || r->total > CGC_MAX_BLOB)
      BAD("BLOB_PUT: total %llu outside 1..%llu", (unsigned long long)r->total, (unsigned long long)CGC_MAX_BLOB);
    if (r->size > staging_size) BAD("BLOB_PUT: %llu bytes exceed the staging area", (unsigned long long)r->size);
    if (!fits(r->offset, r->size, r->total))
      BAD("BLOB_PUT: bytes %llu+%llu outside the blob (%llu)", (unsigned long long)r->offset,
          (unsigned long long)r->size, (unsigned long long)r->total);
    return 0;
  }
  case CGS_OP_MODULE_LOAD: {
    const cgs_module *r = buf;
    if (r->size == 0 || r->size > CGC_MAX_BLOB) BAD("MODULE_LOAD: image size %llu", (unsigned long long)r->size);
    if (r->handle == 0) BAD("MODULE_LOAD: module handle 0");
    return 0;
  }
  case CGS_OP_MODULE_GET_FUNCTION:
  case CGS_OP_MODULE_GET_GLOBAL: {
    const cgs_symbol *r = buf;
    size_t avail = h->length < sizeof(cgs_symbol) ? h->length : sizeof(cgs_symbol);
    avail -= offsetof(cgs_symbol, name);
    if (!memchr(r->name, 0, avail)) BAD("%s: symbol name is not NUL-terminated", oi->name);
    if (r->name[0] == 0) BAD("%s: empty symbol name", oi->name);
    if (h->op == CGS_OP_MODULE_GET_FUNCTION && r->handle == 0) BAD("MODULE_GET_FUNCTION: function handle 0");
    return 0;
  }
  case CGS_OP_LAUNCH: {
    const cgs_launch *r = buf;
    if (r->args_size > h->length - sizeof(cgs_launch))
      BAD("LAUNCH: %u argument bytes exceed the request (%u bytes)", r->args_size, h->length);
    return 0;
  }
  case CGS_OP_HOST_REGISTER: {
    const cgs_pin *r = buf;
    if (r->size == 0) BAD("HOST_REGISTER: size 0");
    return 0;
  }
  case CGS_OP_CTX_CREATE:
  case CGS_OP_PRIMARY_RETAIN: {
    const cgs_ctx *r = buf;
    if (r->handle == 0) BAD("%s: context handle 0", oi->name);
    if (r->device < 0 || r->device >= CGS_MAX_DEVICES) BAD("%s: device %d", oi->name, r->device);
    return 0;
  }
  case CGS_OP_STREAM_CREATE: {
    const cgs_stream *r = buf;
    /* 1 and 2 are CU_STREAM_LEGACY and CU_STREAM_PER_THREAD. */
    if (r->handle <= 2) BAD("STREAM_CREATE: stream handle %llu is reserved", (unsigned long long)r->handle);
    return 0;
  }
  case CGS_OP_EVENT_CREATE: {
    const cgs_event *r = buf;
    if (r->handle == 0) BAD("EVENT_CREATE: event handle 0");
    return 0;
  }
  default:
    return 0;
  }
}

CGC_API int cgc_validate_request(const void *buf, size_t len, uint32_t nchannels, uint64_t staging_size, char *why,
                                 size_t why_len) {
  return cgc_validate(buf, len, nchannels, staging_size, why, why_len);
}
