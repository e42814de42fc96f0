/* The GPU state document, gpu/state.json: its writer and its reader, record
 * by record (see cgc_state_doc.h; the schema is the Python package's
 * schemas/gpu-state-v1.schema.json). Each sd_put_X writes exactly the
 * members sd_get_X reads back, in the schema's names and types. */
#include "cgc_state_doc.h"

#include <errno.h>
#include <inttypes.h>

/* ---- writer ---------------------------------------------------------------- */

static void key_u64(cjw *w, const char *k, uint64_t v) {
  cjw_key(w, k);
  cjw_u64(w, v);
}

static void key_i64(cjw *w, const char *k, int64_t v) {
  cjw_key(w, k);
  cjw_i64(w, v);
}

static void key_str(cjw *w, const char *k, const char *v) {
  cjw_key(w, k);
  cjw_str(w, v);
}

static void key_bool(cjw *w, const char *k, bool v) {
  cjw_key(w, k);
  cjw_bool(w, v);
}

/* The columns of the two lists written as rows, in the order of their rows'
 * items (the schema's chunk_fields and allocation_fields). */
static const char *const CHUNK_FIELDS[] = {"addr", "size", "device", "slot_size"};
static const char *const ALLOC_FIELDS[] = {"addr", "size", "chunk", "context"};

void sd_put_header(cjw *w, const sd_header *h) {
  cjw_obj_begin(w, true);
  key_str(w, "format", CGC_STATE_FORMAT);
  key_i64(w, "version", CGC_STATE_VERSION);
  key_str(w, "job_id", h->job_id);
  key_str(w, "app_job_id", h->app_job_id);
  cjw_key(w, "segment");
  cjw_obj_begin(w, false);
  key_str(w, "name", h->seg_name);
  key_u64(w, "size", h->seg_size);
  key_u64(w, "ring_slots", h->ring_slots);
  key_u64(w, "nchannels", h->nchannels);
  key_u64(w, "staging_size", h->staging_size);
  key_u64(w, "timeout_ms", h->timeout_ms);
  cjw_obj_end(w);
  key_u64(w, "generation", h->generation);
  key_u64(w, "va_base", h->va_base);
  key_u64(w, "va_size", h->va_size);
  key_u64(w, "granularity", h->granularity);
  key_i64(w, "driver_version", h->driver_version);
  key_i64(w, "async_error", h->async_error);
}

void sd_list_begin(cjw *w, const char *name) {
  cjw_key(w, name);
  cjw_arr_begin(w, true);
}

void sd_rows_begin(cjw *w, const char *name) {
  const char *const *fields = strcmp(name, "chunks") == 0 ? CHUNK_FIELDS : ALLOC_FIELDS;
  cjw_key(w, strcmp(name, "chunks") == 0 ? "chunk_fields" : "allocation_fields");
  cjw_arr_begin(w, false);
  for (int i = 0; i < 4; i++) cjw_str(w, fields[i]);
  cjw_arr_end(w);
  sd_list_begin(w, name);
}

void sd_list_end(cjw *w) { cjw_arr_end(w); }

void sd_put_device(cjw *w, const sd_device *d) {
  static const char digits[] = "0123456789abcdef";
  char uuid[33];
  for (int i = 0; i < 16; i++) {
    uuid[2 * i] = digits[d->uuid[i] >> 4];
    uuid[2 * i + 1] = digits[d->uuid[i] & 15];
  }
  uuid[32] = 0;
  cjw_obj_begin(w, false);
  key_i64(w, "ordinal", d->ordinal);
  key_str(w, "name", d->name);
  key_str(w, "uuid", uuid);
  key_u64(w, "total_mem", d->total_mem);
  cjw_key(w, "cc");
  cjw_arr_begin(w, false);
  cjw_i64(w, d->cc_major);
  cjw_i64(w, d->cc_minor);
  cjw_arr_end(w);
  cjw_obj_end(w);
}

void sd_put_context(cjw *w, const sd_context *x) {
  cjw_obj_begin(w, false);
  key_u64(w, "minted", x->minted);
  key_i64(w, "device", x->device);
  key_u64(w, "flags", x->flags);
  key_bool(w, "primary", x->primary);
  key_i64(w, "refs", x->refs);
  cjw_obj_end(w);
}

void sd_put_chunk(cjw *w, const sd_chunk *x) {
  cjw_arr_begin(w, false);
  cjw_u64(w, x->addr);
  cjw_u64(w, x->size);
  cjw_i64(w, x->device);
  cjw_u64(w, x->slot_size);
  cjw_arr_end(w);
}

void sd_put_alloc(cjw *w, const sd_alloc *x) {
  cjw_arr_begin(w, false);
  cjw_u64(w, x->addr);
  cjw_u64(w, x->size);
  cjw_u64(w, x->chunk);
  cjw_u64(w, x->context);
  cjw_arr_end(w);
}

void sd_put_module(cjw *w, const sd_module *x) {
  cjw_obj_begin(w, false);
  key_u64(w, "minted", x->minted);
  key_u64(w, "context", x->context);
  key_str(w, "file", x->file);
  key_u64(w, "size", x->size);
  key_u64(w, "checksum", x->checksum);
  cjw_obj_end(w);
}

void sd_put_function(cjw *w, const sd_function *x) {
  cjw_obj_begin(w, false);
  key_u64(w, "minted", x->minted);
  key_u64(w, "module", x->module);
  key_str(w, "name", x->name);
  key_i64(w, "nparams", x->nparams);
  key_u64(w, "params_size", x->params_size);
  cjw_key(w, "params");
  cjw_arr_begin(w, false);
  for (int32_t k = 0; k < x->nparams; k++) {
    cjw_arr_begin(w, false);
    cjw_u64(w, x->params[k].offset);
    cjw_u64(w, x->params[k].size);
    cjw_arr_end(w);
  }
  cjw_arr_end(w);
  cjw_key(w, "attributes");
  cjw_arr_begin(w, false);
  for (int k = 0; k < 32; k++) {
    if (!(x->attr_set & (1u << k))) continue;
    cjw_arr_begin(w, false);
    cjw_i64(w, k);
    cjw_i64(w, x->attrs[k]);
    cjw_arr_end(w);
  }
  cjw_arr_end(w);
  cjw_obj_end(w);
}

void sd_put_global(cjw *w, const sd_global *x) {
  cjw_obj_begin(w, false);
  key_u64(w, "module", x->module);
  key_str(w, "name", x->name);
  key_u64(w, "addr", x->addr);
  key_u64(w, "size", x->size);
  key_u64(w, "offset", x->offset);
  key_u64(w, "checksum", x->checksum);
  cjw_obj_end(w);
}

void sd_put_stream(cjw *w, const sd_stream *x) {
  cjw_obj_begin(w, false);
  key_u64(w, "minted", x->minted);
  key_u64(w, "context", x->context);
  key_u64(w, "flags", x->flags);
  key_i64(w, "priority", x->priority);
  cjw_obj_end(w);
}

void sd_put_event(cjw *w, const sd_event *x) {
  cjw_obj_begin(w, false);
  key_u64(w, "minted", x->minted);
  key_u64(w, "context", x->context);
  key_u64(w, "flags", x->flags);
  cjw_obj_end(w);
}

void sd_put_pin(cjw *w, const sd_pin *x) {
  cjw_obj_begin(w, false);
  key_u64(w, "id", x->id);
  key_u64(w, "size", x->size);
  key_u64(w, "app_addr", x->app_addr);
  key_bool(w, "same_addr", x->same_addr);
  key_bool(w, "registered", x->registered);
  cjw_obj_end(w);
}

void sd_put_blob(cjw *w, const sd_blob *x) {
  cjw_obj_begin(w, false);
  key_u64(w, "channel", x->channel);
  key_u64(w, "total", x->total);
  key_u64(w, "filled", x->filled);
  key_str(w, "file", x->file);
  key_u64(w, "checksum", x->checksum);
  cjw_obj_end(w);
}

void sd_put_end(cjw *w, const sd_counts *n) {
  cjw_key(w, "counts");
  cjw_obj_begin(w, false);
  key_u64(w, "allocations", n->allocations);
  key_u64(w, "bytes", n->bytes);
  key_u64(w, "chunks", n->chunks);
  key_u64(w, "modules", n->modules);
  cjw_obj_end(w);
  cjw_obj_end(w);
}

/* ---- reader ---------------------------------------------------------------- */

/* One record's reading: the first failure sets the error and `bad`; later
 * reads then do nothing, so a record is read straight through and checked
 * once at the end. */
typedef struct rd {
  cgc_t *c;
  char where[64]; /* "context 3", "segment", "top level" */
  bool bad;
} rd;

static void rd_init(rd *r, cgc_t *c, const char *what, size_t i) {
  r->c = c;
  r->bad = false;
  if (i == SIZE_MAX)
    snprintf(r->where, sizeof r->where, "%s", what);
  else
    snprintf(r->where, sizeof r->where, "%s %zu", what, i);
}

static void rd_fail(rd *r, const char *key, const char *what) {
  if (r->bad) return;
  cgc_set_error(r->c, CGC_STATE_NAME ": %s: \"%s\" is missing or not %s", r->where, key, what);
  r->bad = true;
}

/* An integer in [lo, hi]; `what` names the range for the message. */
static uint64_t rd_u(rd *r, const cj *v, const char *key, uint64_t lo, uint64_t hi, const char *what) {
  uint64_t x = 0;
  if (!r->bad && (!cj_u64(v, &x) || x < lo || x > hi)) rd_fail(r, key, what);
  return r->bad ? 0 : x;
}

static int64_t rd_i(rd *r, const cj *v, const char *key, int64_t lo, int64_t hi, const char *what) {
  int64_t x = 0;
  if (!r->bad && (!cj_i64(v, &x) || x < lo || x > hi)) rd_fail(r, key, what);
  return r->bad ? 0 : x;
}

#define U64(r, o, k) rd_u(r, cj_get(o, k), k, 0, UINT64_MAX, "a non-negative integer")
#define U32(r, o, k) (uint32_t) rd_u(r, cj_get(o, k), k, 0, UINT32_MAX, "an integer from 0 to 4294967295")
#define I32(r, o, k) (int32_t) rd_i(r, cj_get(o, k), k, INT32_MIN, INT32_MAX, "a 32-bit integer")
#define HANDLE(r, o, k) rd_u(r, cj_get(o, k), k, 1, UINT64_MAX, "a handle (a positive integer)")
#define CHECKSUM(r, o, k) rd_u(r, cj_get(o, k), k, 0, UINT32_MAX, "a checksum (an integer from 0 to 4294967295)")

static const char *rd_str(rd *r, const cj *obj, const char *key) {
  const char *s = cj_str(cj_get(obj, key));
  if (!s) rd_fail(r, key, "a string");
  return s && !r->bad ? s : "";
}

/* A file beside the document: relative, not empty, never "..". */
static const char *rd_file(rd *r, const cj *obj, const char *key) {
  const char *s = rd_str(r, obj, key);
  if (!r->bad && (!s[0] || s[0] == '/' || strstr(s, "..")))
    rd_fail(r, key, "a path inside the checkpoint");
  return s;
}

static bool rd_bool(rd *r, const cj *obj, const char *key) {
  bool v = false;
  if (!cj_bool(cj_get(obj, key), &v)) rd_fail(r, key, "a boolean");
  return v;
}

static const cj *rd_type(rd *r, const cj *obj, const char *key, cj_type type, const char *what) {
  const cj *v = cj_get(obj, key);
  if (!v || v->type != type) rd_fail(r, key, what);
  return v;
}

static int rd_done(const rd *r) { return r->bad ? -EINVAL : 0; }

/* A row of n non-negative integers (chunks, allocations), in `out`. */
static bool row(const cj *e, size_t n, uint64_t *out) {
  if (!e || e->type != CJ_ARR || cj_len(e) != n) return false;
  for (size_t k = 0; k < n; k++)
    if (!cj_u64(cj_at(e, k), &out[k])) return false;
  return true;
}

/* A constant list of strings (chunk_fields, allocation_fields): the columns
 * this reader takes the rows' items to be. */
static void rd_fields(rd *r, const cj *st, const char *key, const char *const *want) {
  const cj *v = cj_get(st, key);
  bool ok = v && v->type == CJ_ARR && cj_len(v) == 4;
  for (size_t k = 0; ok && k < 4; k++) {
    const char *s = cj_str(cj_at(v, k));
    ok = s && strcmp(s, want[k]) == 0;
  }
  if (!ok) rd_fail(r, key, "[\"addr\", \"size\", ...] as this version writes it");
}

static const char *const LISTS[] = {"devices", "contexts", "chunks",  "device_bytes", "allocations", "modules",
                                    "functions", "globals", "streams", "events",       "pins",        "blobs"};

const cj *sd_list(const cj *st, const char *name) { return cj_get(st, name); }

static int get_device(cgc_t *c, const cj *e, size_t i) {
  rd r;
  rd_init(&r, c, "device", i);
  (void)I32(&r, e, "ordinal");
  rd_str(&r, e, "name");
  const char *uuid = rd_str(&r, e, "uuid");
  if (!r.bad && strlen(uuid) != 32) rd_fail(&r, "uuid", "32 hex digits");
  U64(&r, e, "total_mem");
  const cj *cc = rd_type(&r, e, "cc", CJ_ARR, "[major, minor]");
  if (!r.bad && cj_len(cc) != 2) rd_fail(&r, "cc", "[major, minor]");
  rd_i(&r, cj_at(cc, 0), "cc", INT32_MIN, INT32_MAX, "[major, minor]");
  rd_i(&r, cj_at(cc, 1), "cc", INT32_MIN, INT32_MAX, "[major, minor]");
  return rd_done(&r);
}

int sd_get_header(cgc_t *c, const cj *st, sd_header *h) {
  memset(h, 0, sizeof *h);
  if (!st || st->type != CJ_OBJ) {
    cgc_set_error(c, CGC_STATE_NAME " is not a JSON object: not a cedana-gpu GPU state");
    return -EINVAL;
  }
  const char *fmt = cj_str(cj_get(st, "format"));
  if (!fmt || strcmp(fmt, CGC_STATE_FORMAT) != 0) {
    cgc_set_error(c, CGC_STATE_NAME " is not a cedana-gpu GPU state");
    return -EINVAL;
  }
  /* The version before anything else: a newer document may differ anywhere. */
  uint64_t version = 0;
  if (!cj_u64(cj_get(st, "version"), &version) || version < 1) {
    cgc_set_error(c, CGC_STATE_NAME " has an unknown format version");
    return -EINVAL;
  }
  if (version > CGC_STATE_VERSION) {
    cgc_set_error(c,
                  CGC_STATE_NAME " has format version %" PRIu64 ", newer than this controller understands (%d): "
                                 "restore with a newer cedana-gpu",
                  version, CGC_STATE_VERSION);
    return -EINVAL;
  }

  rd r;
  rd_init(&r, c, "top level", SIZE_MAX);
  h->job_id = rd_str(&r, st, "job_id");
  h->app_job_id = rd_str(&r, st, "app_job_id");
  if (!r.bad && (!h->app_job_id[0] || strlen(h->app_job_id) >= CGS_JOB_ID_MAX))
    rd_fail(&r, "app_job_id", "a job id of 1 to 63 bytes");
  h->generation = U64(&r, st, "generation");
  h->va_base = U64(&r, st, "va_base");
  h->va_size = U64(&r, st, "va_size");
  h->granularity = U64(&r, st, "granularity");
  h->driver_version = I32(&r, st, "driver_version");
  h->async_error = I32(&r, st, "async_error");
  rd_fields(&r, st, "chunk_fields", CHUNK_FIELDS);
  rd_fields(&r, st, "allocation_fields", ALLOC_FIELDS);
  for (size_t k = 0; k < sizeof LISTS / sizeof *LISTS; k++) rd_type(&r, st, LISTS[k], CJ_ARR, "a list");
  const cj *seg = rd_type(&r, st, "segment", CJ_OBJ, "an object");
  const cj *counts = rd_type(&r, st, "counts", CJ_OBJ, "an object");
  if (r.bad) return -EINVAL;

  const cj *bytes = cj_get(st, "device_bytes");
  for (size_t i = 0; i < cj_len(bytes); i++)
    rd_u(&r, cj_at(bytes, i), "device_bytes", 0, UINT64_MAX, "a list of non-negative integers");
  if (r.bad) return -EINVAL;

  rd_init(&r, c, "segment", SIZE_MAX);
  h->seg_name = rd_str(&r, seg, "name");
  h->seg_size = U64(&r, seg, "size");
  h->ring_slots = U32(&r, seg, "ring_slots");
  h->nchannels = U32(&r, seg, "nchannels");
  h->staging_size = U64(&r, seg, "staging_size");
  h->timeout_ms = U32(&r, seg, "timeout_ms");
  if (r.bad) return -EINVAL;

  rd_init(&r, c, "counts", SIZE_MAX);
  U64(&r, counts, "allocations");
  U64(&r, counts, "bytes");
  U64(&r, counts, "chunks");
  U64(&r, counts, "modules");
  if (r.bad) return -EINVAL;

  const cj *devices = cj_get(st, "devices");
  for (size_t i = 0; i < cj_len(devices); i++)
    if (get_device(c, cj_at(devices, i), i)) return -EINVAL;
  return 0;
}

int sd_get_context(cgc_t *c, const cj *e, size_t i, sd_context *x) {
  rd r;
  rd_init(&r, c, "context", i);
  x->minted = HANDLE(&r, e, "minted");
  x->device = I32(&r, e, "device");
  x->flags = U32(&r, e, "flags");
  x->primary = rd_bool(&r, e, "primary");
  x->refs = I32(&r, e, "refs");
  return rd_done(&r);
}

int sd_get_chunk(cgc_t *c, const cj *e, size_t i, sd_chunk *x) {
  uint64_t v[4];
  if (!row(e, 4, v) || v[2] > INT32_MAX || v[3] > UINT32_MAX) {
    cgc_set_error(c, CGC_STATE_NAME ": chunk %zu is not [addr, size, device, slot_size]", i);
    return -EINVAL;
  }
  *x = (sd_chunk){v[0], v[1], (int32_t)v[2], (uint32_t)v[3]};
  return 0;
}

int sd_get_alloc(cgc_t *c, const cj *e, size_t i, sd_alloc *x) {
  uint64_t v[4];
  if (!row(e, 4, v)) {
    cgc_set_error(c, CGC_STATE_NAME ": allocation %zu is not [addr, size, chunk, context]", i);
    return -EINVAL;
  }
  *x = (sd_alloc){v[0], v[1], v[2], v[3]};
  return 0;
}

int sd_get_module(cgc_t *c, const cj *e, size_t i, sd_module *x) {
  rd r;
  rd_init(&r, c, "module", i);
  x->minted = HANDLE(&r, e, "minted");
  x->context = U64(&r, e, "context");
  x->file = rd_file(&r, e, "file");
  x->size = U64(&r, e, "size");
  x->checksum = CHECKSUM(&r, e, "checksum");
  return rd_done(&r);
}

int sd_get_function(cgc_t *c, const cj *e, size_t i, sd_function *x) {
  memset(x, 0, sizeof *x);
  rd r;
  rd_init(&r, c, "function", i);
  x->minted = HANDLE(&r, e, "minted");
  x->module = HANDLE(&r, e, "module");
  x->name = rd_str(&r, e, "name");
  x->nparams = (int32_t)rd_i(&r, cj_get(e, "nparams"), "nparams", -1, CGC_MAX_PARAMS, "an integer from -1 to 4096");
  x->params_size = U32(&r, e, "params_size");
  const cj *params = rd_type(&r, e, "params", CJ_ARR, "a list");
  const cj *attrs = rd_type(&r, e, "attributes", CJ_ARR, "a list");
  if (!r.bad && x->nparams >= 0 && cj_len(params) != (size_t)x->nparams)
    rd_fail(&r, "params", "a list of nparams [offset, size] pairs");
  for (size_t k = 0; k < cj_len(attrs) && !r.bad; k++) {
    const cj *a = cj_at(attrs, k);
    int64_t attr, val;
    if (!a || a->type != CJ_ARR || cj_len(a) != 2 || !cj_i64(cj_at(a, 0), &attr) || !cj_i64(cj_at(a, 1), &val) ||
        attr < 0 || attr >= 32 || val < INT32_MIN || val > INT32_MAX) {
      rd_fail(&r, "attributes", "a list of [attribute 0..31, 32-bit value] pairs");
      break;
    }
    x->attr_set |= 1u << attr;
    x->attrs[attr] = (int32_t)val;
  }
  return rd_done(&r);
}

int sd_get_param(cgc_t *c, const cj *e, size_t i, const sd_function *fn, int32_t k, cgs_param *out) {
  uint64_t v[2];
  if (!row(cj_at(cj_get(e, "params"), (size_t)k), 2, v) || v[0] > UINT32_MAX || v[1] > UINT32_MAX) {
    cgc_set_error(c, CGC_STATE_NAME ": function %zu (%s): parameter %d is not [offset, size]", i, fn->name, (int)k);
    return -EINVAL;
  }
  out->offset = (uint32_t)v[0];
  out->size = (uint32_t)v[1];
  return 0;
}

int sd_get_global(cgc_t *c, const cj *e, size_t i, sd_global *x) {
  rd r;
  rd_init(&r, c, "global", i);
  x->module = HANDLE(&r, e, "module");
  x->name = rd_str(&r, e, "name");
  x->addr = U64(&r, e, "addr");
  x->size = U64(&r, e, "size");
  x->offset = U64(&r, e, "offset");
  x->checksum = CHECKSUM(&r, e, "checksum");
  return rd_done(&r);
}

int sd_get_stream(cgc_t *c, const cj *e, size_t i, sd_stream *x) {
  rd r;
  rd_init(&r, c, "stream", i);
  /* 1 and 2 are CU_STREAM_LEGACY and CU_STREAM_PER_THREAD: never minted. */
  x->minted = rd_u(&r, cj_get(e, "minted"), "minted", 3, UINT64_MAX, "a stream handle (an integer above 2)");
  x->context = U64(&r, e, "context");
  x->flags = U32(&r, e, "flags");
  x->priority = I32(&r, e, "priority");
  return rd_done(&r);
}

int sd_get_event(cgc_t *c, const cj *e, size_t i, sd_event *x) {
  rd r;
  rd_init(&r, c, "event", i);
  x->minted = HANDLE(&r, e, "minted");
  x->context = U64(&r, e, "context");
  x->flags = U32(&r, e, "flags");
  return rd_done(&r);
}

int sd_get_pin(cgc_t *c, const cj *e, size_t i, sd_pin *x) {
  rd r;
  rd_init(&r, c, "pin", i);
  x->id = U32(&r, e, "id");
  x->size = rd_u(&r, cj_get(e, "size"), "size", 1, UINT64_MAX, "a positive integer");
  x->app_addr = U64(&r, e, "app_addr");
  x->same_addr = rd_bool(&r, e, "same_addr");
  x->registered = rd_bool(&r, e, "registered");
  return rd_done(&r);
}

int sd_get_blob(cgc_t *c, const cj *e, size_t i, sd_blob *x) {
  rd r;
  rd_init(&r, c, "blob", i);
  x->channel = U32(&r, e, "channel");
  x->total = rd_u(&r, cj_get(e, "total"), "total", 1, CGC_MAX_BLOB, "an integer from 1 to 2147483648");
  x->filled = U64(&r, e, "filled");
  x->file = rd_file(&r, e, "file");
  x->checksum = CHECKSUM(&r, e, "checksum");
  return rd_done(&r);
}
