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

/* The shortest length allowed for each op (cedana_gpu_ops.def, min_len). */
static const uint32_t min_len[CGS_OP_COUNT] = {
#define CGS_OP(name, request, channel, min, check, handler) \
  [CGS_OP_##name] = (uint32_t)((min) ? (min) : sizeof(request)),
#include "cedana_gpu_ops.def"
#undef CGS_OP
};

const char *cgc_op_name(uint32_t op) {
  const char *name = cgs_op_name(op);
  return name ? name : "INVALID_OP";
}

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

/* What a check is given besides the request: the staging area's size, and
 * where to say what is wrong (why_len 0: nowhere). */
typedef struct vq {
  uint64_t staging_size;
  char *why;
  size_t why_len;
} vq;

#define BAD(...) return why_fmt(q->why, q->why_len, __VA_ARGS__)

/* [a, a+n) inside [0, limit) without overflow. */
static inline bool fits(uint64_t a, uint64_t n, uint64_t limit) { return a <= limit && n <= limit - a; }

/* ---- per-op checks ----------------------------------------------------------
 * One per `check` of cedana_gpu_ops.def, each taking its op's request struct:
 * the table below calls them through typed trampolines, so a check that
 * takes another struct than the table says does not compile. */

static int check_none(const void *r, const vq *q) {
  (void)r, (void)q;
  return 0;
}

static int check_copy(const cgs_copy *r, const vq *q) {
  const char *name = cgs_op_name(r->h.op);
  bool has_channel = r->h.channel != CGS_NO_CHANNEL;
  uint64_t dev = r->h.op == CGS_OP_MEMCPY_DTOH ? r->src : r->dst;
  if (dev + r->size < dev) BAD("%s: device range 0x%llx+%llu wraps around", name,
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
    if (!has_channel) BAD("%s: a staged copy needs a channel", name);
    if (!fits(r->host_offset, r->size, q->staging_size))
      BAD("%s: staging range %llu+%llu exceeds the staging area (%llu bytes)", name,
          (unsigned long long)r->host_offset, (unsigned long long)r->size,
          (unsigned long long)q->staging_size);
    return 0;
  case CGS_HOST_PINNED:
    if (!r->async && !has_channel) BAD("%s: a synchronous copy needs a channel", name);
    if (r->host_offset + r->size < r->host_offset) BAD("%s: pinned range wraps around", name);
    return 0;
  default:
    BAD("%s: unknown host memory kind %u", name, r->host_kind);
  }
}

static int check_memset(const cgs_memset *r, const vq *q) {
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

static int check_mem_alloc(const cgs_mem *r, const vq *q) {
  if (r->size == 0) BAD("MEM_ALLOC: size 0");
  return 0;
}

static int check_blob(const cgs_blob *r, const vq *q) {
  if (r->total == 0 || r->total > CGC_MAX_BLOB)
    BAD("BLOB_PUT: total %llu outside 1..%llu", (unsigned long long)r->total, (unsigned long long)CGC_MAX_BLOB);
  if (r->size > q->staging_size) BAD("BLOB_PUT: %llu bytes exceed the staging area", (unsigned long long)r->size);
  if (!fits(r->offset, r->size, r->total))
    BAD("BLOB_PUT: bytes %llu+%llu outside the blob (%llu)", (unsigned long long)r->offset,
        (unsigned long long)r->size, (unsigned long long)r->total);
  return 0;
}

static int check_module_load(const cgs_module *r, const vq *q) {
  if (r->size == 0 || r->size > CGC_MAX_BLOB) BAD("MODULE_LOAD: image size %llu", (unsigned long long)r->size);
  if (r->handle == 0) BAD("MODULE_LOAD: module handle 0");
  return 0;
}

/* Link requests: sizes and the read's kind; the handle is looked up in the
 * job's links at execution (link.c), the name is cut there. */
static int check_link(const cgs_link *r, const vq *q) {
  (void)q;
  const char *name = cgs_op_name(r->h.op);
  if (r->handle == 0) BAD("%s: link handle 0", name);
  switch (r->h.op) {
  case CGS_OP_LINK_CREATE:
    if (r->info_log > CGS_LINK_MAX_LOG || r->error_log > CGS_LINK_MAX_LOG)
      BAD("LINK_CREATE: log buffers of %llu and %llu bytes (at most %u)", (unsigned long long)r->info_log,
          (unsigned long long)r->error_log, (unsigned)CGS_LINK_MAX_LOG);
    break;
  case CGS_OP_LINK_ADD:
    if (r->size == 0 || r->size > CGC_MAX_BLOB) BAD("LINK_ADD: input size %llu", (unsigned long long)r->size);
    break;
  case CGS_OP_LINK_READ:
    if (r->type > CGS_LINK_ERROR_LOG) BAD("LINK_READ: what %u", r->type);
    break;
  default:
    break;
  }
  return 0;
}

/* A symbol request may end right after its name's NUL (min_len), so only
 * the bytes of the name that the request holds are searched. */
static int check_symbol(const cgs_symbol *r, const vq *q) {
  const char *name = cgs_op_name(r->h.op);
  size_t avail = r->h.length < sizeof(cgs_symbol) ? r->h.length : sizeof(cgs_symbol);
  avail -= offsetof(cgs_symbol, name);
  if (!memchr(r->name, 0, avail)) BAD("%s: symbol name is not NUL-terminated", name);
  if (r->name[0] == 0) BAD("%s: empty symbol name", name);
  if (r->h.op == CGS_OP_MODULE_GET_FUNCTION && r->handle == 0) BAD("MODULE_GET_FUNCTION: function handle 0");
  return 0;
}

static int check_launch(const cgs_launch *r, const vq *q) {
  if (r->args_size > r->h.length - sizeof(cgs_launch))
    BAD("LAUNCH: %u argument bytes exceed the request (%u bytes)", r->args_size, r->h.length);
  return 0;
}

static int check_host_register(const cgs_pin *r, const vq *q) {
  if (r->size == 0) BAD("HOST_REGISTER: size 0");
  return 0;
}

/* CTX_CREATE and PRIMARY_RETAIN: a new minted context on a device. */
static int check_ctx_new(const cgs_ctx *r, const vq *q) {
  const char *name = cgs_op_name(r->h.op);
  if (r->handle == 0) BAD("%s: context handle 0", name);
  if (r->device < 0 || r->device >= CGS_MAX_DEVICES) BAD("%s: device %d", name, r->device);
  return 0;
}

static int check_stream_create(const cgs_stream *r, const vq *q) {
  /* 1 and 2 are CU_STREAM_LEGACY and CU_STREAM_PER_THREAD. */
  if (r->handle <= 2) BAD("STREAM_CREATE: stream handle %llu is reserved", (unsigned long long)r->handle);
  return 0;
}

static int check_event_create(const cgs_event *r, const vq *q) {
  if (r->handle == 0) BAD("EVENT_CREATE: event handle 0");
  return 0;
}

/* What can be said of a VMM request without the tables; vmm.c checks the
 * addresses and handles against the job's reservations and allocations. */
static int check_vmm(const cgs_vmm *r, const vq *q) {
  const char *name = cgs_op_name(r->h.op);
  if (r->addr + r->size < r->addr) BAD("%s: range 0x%llx+%llu wraps around", name, (unsigned long long)r->addr,
                                       (unsigned long long)r->size);
  if (r->h.op == CGS_OP_VMM_SET_ACCESS && (r->naccess == 0 || r->naccess > CGS_MAX_DEVICES))
    BAD("VMM_SET_ACCESS: %u access descriptors (1..%u)", r->naccess, CGS_MAX_DEVICES);
  return 0;
}

static int check_pool(const cgs_pool *r, const vq *q) {
  const char *name = cgs_op_name(r->h.op);
  if (r->handle == 0 && r->h.op != CGS_OP_POOL_FREE) BAD("%s: pool handle 0", name);
  if (r->h.op == CGS_OP_POOL_CREATE && (r->device < 0 || r->device >= CGS_MAX_DEVICES))
    BAD("POOL_CREATE: device %d", r->device);
  if (r->h.op == CGS_OP_POOL_ALLOC && r->size == 0) BAD("POOL_ALLOC: size 0");
  if (r->h.op == CGS_OP_POOL_FREE && r->dptr == 0) BAD("POOL_FREE: address 0");
  return 0;
}

/* ---- the op table ------------------------------------------------------------ */

typedef int check_fn(const cgs_req *h, const vq *q);

#define CGS_OP(name, request, channel, min, check, handler) \
  static int check_op_##name(const cgs_req *h, const vq *q) { return check((const request *)h, q); }
#include "cedana_gpu_ops.def"
#undef CGS_OP

static check_fn *const checks[CGS_OP_COUNT] = {
#define CGS_OP(name, request, channel, min, check, handler) [CGS_OP_##name] = check_op_##name,
#include "cedana_gpu_ops.def"
#undef CGS_OP
};

CGC_HIDDEN int cgc_validate(const void *buf, size_t len, uint32_t nchannels, uint64_t staging_size, char *why,
                            size_t why_len) {
  const vq v = {staging_size, why, why_len}, *q = &v;
  if (why && why_len) why[0] = 0;
  if (!buf || len < sizeof(cgs_req)) BAD("request shorter than its header (%zu bytes)", len);
  const cgs_req *h = buf;
  if (h->op >= CGS_OP_COUNT) BAD("unknown op %u", h->op);
  const char *name = cgs_op_name(h->op);
  if (h->nslots < 1 || h->nslots > CGS_MAX_REQUEST_SLOTS)
    BAD("%s: slot count %u outside 1..%u", name, h->nslots, CGS_MAX_REQUEST_SLOTS);
  if (h->length < sizeof(cgs_req) || h->length > CGS_MAX_REQUEST)
    BAD("%s: length %u outside %zu..%zu", name, h->length, sizeof(cgs_req), (size_t)CGS_MAX_REQUEST);
  if (cgs_slots_for(h->length) != h->nslots)
    BAD("%s: length %u does not span %u slots", name, h->length, h->nslots);
  if (h->length > len) BAD("%s: length %u exceeds the %zu bytes received", name, h->length, len);
  if (h->length < min_len[h->op])
    BAD("%s: length %u is shorter than the request (%u)", name, h->length, min_len[h->op]);
  if (h->channel != CGS_NO_CHANNEL && h->channel >= nchannels)
    BAD("%s: channel %u outside 0..%u", name, h->channel, nchannels ? nchannels - 1 : 0);
  if (cgs_op_channel_rule(h->op) == CGS_CHANNEL_SYNC && h->channel == CGS_NO_CHANNEL)
    BAD("%s: a synchronous request needs a channel", name);
  return checks[h->op](h, q);
}

/* The exported entry takes a caller's buffer, which may sit at any address
 * (the dispatcher's own copy is aligned): validate an aligned copy, since the
 * request structs hold 64-bit fields. */
CGC_API int cgc_validate_request(const void *buf, size_t len, uint32_t nchannels, uint64_t staging_size, char *why,
                                 size_t why_len) {
  if (!buf || ((uintptr_t)buf & (_Alignof(max_align_t) - 1)) == 0)
    return cgc_validate(buf, len, nchannels, staging_size, why, why_len);
  _Alignas(max_align_t) unsigned char copy[CGS_MAX_REQUEST];
  size_t n = len < sizeof copy ? len : sizeof copy; /* longer is refused on its length field anyway */
  memcpy(copy, buf, n);
  return cgc_validate(copy, n, nchannels, staging_size, why, why_len);
}
