/* The GPU state document, gpu/state.json: its writer and its reader, record
 * by record (see cgc_state_doc.h; the schema is the Python package's
 * schemas/gpu-state-v1.schema.json). Each record's members are listed once,
 * in document order, in a table that the writer and the reader both walk, so
 * sd_put_X writes exactly the members sd_get_X reads back, in the schema's
 * names and types. */
#include "cgc_state_doc.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>

/* ---- the records' members ---------------------------------------------------
 * A member's C type is taken from its struct (_Generic), so a table cannot
 * disagree with the record it describes. The type decides how the member is
 * written (unsigned types as unsigned numbers, int32_t as signed ones); what
 * the reader accepts of it is its rule, NULL for the type's own range. */

typedef enum { T_U64, T_U32, T_I32, T_BOOL, T_STR } mtype;

typedef struct rule {
  int64_t lo; /* integers: the range (lo >= 0 for unsigned members) */
  uint64_t hi;
  const char *what; /* the message's "\"key\" is missing or not <what>" */
  bool path;        /* strings: a file beside the document */
} rule;

typedef struct member {
  const char *key;
  size_t off;
  mtype type;
  const rule *rule;
} member;

#define MTYPE(S, f) \
  _Generic(((S *)0)->f, uint64_t: T_U64, uint32_t: T_U32, int32_t: T_I32, bool: T_BOOL, const char *: T_STR)
/* Member f of struct S, under its own name or under `key`. */
#define M(S, f, rule) {#f, offsetof(S, f), MTYPE(S, f), rule}
#define M_AS(S, f, key, rule) {key, offsetof(S, f), MTYPE(S, f), rule}
#define COUNT(a) (sizeof(a) / sizeof *(a))

static const rule TYPE_RULE[] = {
    [T_U64] = {0, UINT64_MAX, "a non-negative integer", false},
    [T_U32] = {0, UINT32_MAX, "an integer from 0 to 4294967295", false},
    [T_I32] = {INT32_MIN, INT32_MAX, "a 32-bit integer", false},
    [T_BOOL] = {0, 0, "a boolean", false},
    [T_STR] = {0, 0, "a string", false},
};
static const rule HANDLE = {1, UINT64_MAX, "a handle (a positive integer)", false};
/* 1 and 2 are CU_STREAM_LEGACY and CU_STREAM_PER_THREAD: never minted. */
static const rule STREAM_HANDLE = {3, UINT64_MAX, "a stream handle (an integer above 2)", false};
static const rule CHECKSUM = {0, UINT32_MAX, "a checksum (an integer from 0 to 4294967295)", false};
static const rule POSITIVE = {1, UINT64_MAX, "a positive integer", false};
static const rule BLOB_TOTAL = {1, CGC_MAX_BLOB, "an integer from 1 to 2147483648", false};
static const rule NPARAMS = {-1, CGC_MAX_PARAMS, "an integer from -1 to 4096", false};
static const rule PATH = {0, 0, "a path inside the checkpoint", true};

/* The header's top-level members before and after its "segment" object. */
static const member HEADER_IDS[] = {M(sd_header, job_id, NULL), M(sd_header, app_job_id, NULL)};
static const member SEGMENT[] = {M_AS(sd_header, seg_name, "name", NULL), M_AS(sd_header, seg_size, "size", NULL),
                                 M(sd_header, ring_slots, NULL), M(sd_header, nchannels, NULL),
                                 M(sd_header, staging_size, NULL), M(sd_header, timeout_ms, NULL)};
static const member HEADER_REST[] = {M(sd_header, generation, NULL), M(sd_header, va_base, NULL),
                                     M(sd_header, va_size, NULL), M(sd_header, granularity, NULL),
                                     M(sd_header, driver_version, NULL), M(sd_header, async_error, NULL)};
static const member COUNTS[] = {M(sd_counts, allocations, NULL), M(sd_counts, bytes, NULL),
                                M(sd_counts, chunks, NULL), M(sd_counts, modules, NULL)};

static const member CONTEXT[] = {M(sd_context, minted, &HANDLE), M(sd_context, device, NULL),
                                 M(sd_context, flags, NULL), M(sd_context, primary, NULL), M(sd_context, refs, NULL)};
/* The columns of the rows, in the order of their items (the schema's
 * chunk_fields and allocation_fields; a parameter is [offset, size]). */
static const member CHUNK[] = {M(sd_chunk, addr, NULL), M(sd_chunk, size, NULL), M(sd_chunk, device, NULL),
                               M(sd_chunk, slot_size, NULL)};
static const member ALLOC[] = {M(sd_alloc, addr, NULL), M(sd_alloc, size, NULL), M(sd_alloc, chunk, NULL),
                               M(sd_alloc, context, NULL)};
static const member PARAM[] = {M(cgs_param, offset, NULL), M(cgs_param, size, NULL)};
static const member MODULE[] = {M(sd_module, minted, &HANDLE), M(sd_module, context, NULL),
                                M(sd_module, file, &PATH), M(sd_module, size, NULL),
                                M(sd_module, checksum, &CHECKSUM)};
/* A function's members before its "params" and "attributes". */
static const member FUNCTION[] = {M(sd_function, minted, &HANDLE), M(sd_function, module, &HANDLE),
                                  M(sd_function, name, NULL), M(sd_function, nparams, &NPARAMS),
                                  M(sd_function, params_size, NULL)};
static const member GLOBAL[] = {M(sd_global, module, &HANDLE), M(sd_global, name, NULL), M(sd_global, addr, NULL),
                                M(sd_global, size, NULL), M(sd_global, offset, NULL),
                                M(sd_global, checksum, &CHECKSUM)};
static const member STREAM[] = {M(sd_stream, minted, &STREAM_HANDLE), M(sd_stream, context, NULL),
                                M(sd_stream, flags, NULL), M(sd_stream, priority, NULL)};
static const member EVENT[] = {M(sd_event, minted, &HANDLE), M(sd_event, context, NULL), M(sd_event, flags, NULL)};
static const member PIN[] = {M(sd_pin, id, NULL), M(sd_pin, size, &POSITIVE), M(sd_pin, app_addr, NULL),
                             M(sd_pin, same_addr, NULL), M(sd_pin, registered, NULL)};
static const member BLOB[] = {M(sd_blob, channel, NULL), M(sd_blob, total, &BLOB_TOTAL), M(sd_blob, filled, NULL),
                              M(sd_blob, file, &PATH), M(sd_blob, checksum, &CHECKSUM)};

static const member VRESV[] = {M(sd_vresv, addr, &POSITIVE), M(sd_vresv, size, &POSITIVE),
                               M(sd_vresv, taken, &POSITIVE)};
static const member VPHYS[] = {M(sd_vphys, id, &HANDLE), M(sd_vphys, size, &POSITIVE), M(sd_vphys, device, NULL),
                               M(sd_vphys, shadow, &POSITIVE), M(sd_vphys, released, NULL)};
static const member VMAP[] = {M(sd_vmap, addr, &POSITIVE), M(sd_vmap, size, &POSITIVE),
                              M(sd_vmap, physical, &HANDLE), M(sd_vmap, access, NULL)};

static const member POOL[] = {M(sd_pool, minted, &HANDLE),    M(sd_pool, device, NULL),
                              M(sd_pool, is_default, NULL), M(sd_pool, destroyed, NULL),
                              M(sd_pool, max_size, NULL),   M(sd_pool, threshold, NULL),
                              M(sd_pool, reuse, NULL),      M(sd_pool, reserved_high, NULL),
                              M(sd_pool, used_high, NULL)};
static const member PBLOCK[] = {M(sd_pblock, addr, &POSITIVE), M(sd_pblock, pool, &HANDLE),
                                M(sd_pblock, size, &POSITIVE), M(sd_pblock, cached, NULL),
                                M(sd_pblock, freed_on, NULL)};

/* A record: an object of named members, or a row, a list of numbers whose
 * columns the document names once (in `fields`, for chunks and allocations)
 * and which must fit their columns' types. */
typedef struct record {
  const char *name; /* in messages: "context 3: ...", "chunk 3 is not [...]" */
  const member *m;
  size_t n;
  bool row;
  const char *fields;
} record;

#define OBJECT(name, m) {name, m, COUNT(m), false, NULL}
#define ROW(name, m, fields) {name, m, COUNT(m), true, fields}

static const record context_record = OBJECT("context", CONTEXT);
static const record chunk_record = ROW("chunk", CHUNK, "chunk_fields");
static const record alloc_record = ROW("allocation", ALLOC, "allocation_fields");
static const record param_record = ROW("parameter", PARAM, NULL);
static const record module_record = OBJECT("module", MODULE);
static const record global_record = OBJECT("global", GLOBAL);
static const record stream_record = OBJECT("stream", STREAM);
static const record event_record = OBJECT("event", EVENT);
static const record pin_record = OBJECT("pin", PIN);
static const record blob_record = OBJECT("blob", BLOB);
static const record vresv_record = OBJECT("VMM reservation", VRESV);
static const record vphys_record = OBJECT("VMM physical allocation", VPHYS);
static const record vmap_record = OBJECT("VMM mapping", VMAP);
static const record pool_record = OBJECT("memory pool", POOL);
static const record pblock_record = OBJECT("pool block", PBLOCK);

/* ---- writer ---------------------------------------------------------------- */

static void put_value(cjw *w, const member *m, const void *rec) {
  const char *p = (const char *)rec + m->off;
  switch (m->type) {
  case T_U64: cjw_u64(w, *(const uint64_t *)p); break;
  case T_U32: cjw_u64(w, *(const uint32_t *)p); break;
  case T_I32: cjw_i64(w, *(const int32_t *)p); break;
  case T_BOOL: cjw_bool(w, *(const bool *)p); break;
  case T_STR: cjw_str(w, *(const char *const *)p); break;
  }
}

/* Members as "key": value pairs, into the object the caller has begun. */
static void put_members(cjw *w, const member *m, size_t n, const void *rec) {
  for (size_t k = 0; k < n; k++) {
    cjw_key(w, m[k].key);
    put_value(w, &m[k], rec);
  }
}

static void put_record(cjw *w, const record *r, const void *rec) {
  if (r->row) {
    cjw_arr_begin(w, false);
    for (size_t k = 0; k < r->n; k++) put_value(w, &r->m[k], rec);
    cjw_arr_end(w);
    return;
  }
  cjw_obj_begin(w, false);
  put_members(w, r->m, r->n, rec);
  cjw_obj_end(w);
}

void sd_put_header(cjw *w, const sd_header *h) {
  cjw_obj_begin(w, true);
  cjw_key(w, "format");
  cjw_str(w, CGC_STATE_FORMAT);
  cjw_key(w, "version");
  cjw_i64(w, CGC_STATE_VERSION);
  put_members(w, HEADER_IDS, COUNT(HEADER_IDS), h);
  cjw_key(w, "segment");
  cjw_obj_begin(w, false);
  put_members(w, SEGMENT, COUNT(SEGMENT), h);
  cjw_obj_end(w);
  put_members(w, HEADER_REST, COUNT(HEADER_REST), h);
  cjw_key(w, "mint_regions");
  cjw_u64(w, h->mint_regions);
}

void sd_list_begin(cjw *w, const char *name) {
  cjw_key(w, name);
  cjw_arr_begin(w, true);
}

void sd_rows_begin(cjw *w, const char *name) {
  const record *r = strcmp(name, "chunks") == 0 ? &chunk_record : &alloc_record;
  cjw_key(w, r->fields);
  cjw_arr_begin(w, false);
  for (size_t k = 0; k < r->n; k++) cjw_str(w, r->m[k].key);
  cjw_arr_end(w);
  sd_list_begin(w, name);
}

void sd_list_end(cjw *w) { cjw_arr_end(w); }

/* A device is written from what the driver says and only checked on reading
 * (the uuid as hex digits, cc as a pair): no table. */
void sd_put_device(cjw *w, const sd_device *d) {
  static const char digits[] = "0123456789abcdef";
  char uuid[33];
  for (int i = 0; i < 16; i++) {
    uuid[2 * i] = digits[d->uuid[i] >> 4];
    uuid[2 * i + 1] = digits[d->uuid[i] & 15];
  }
  uuid[32] = 0;
  cjw_obj_begin(w, false);
  cjw_key(w, "ordinal");
  cjw_i64(w, d->ordinal);
  cjw_key(w, "name");
  cjw_str(w, d->name);
  cjw_key(w, "uuid");
  cjw_str(w, uuid);
  cjw_key(w, "total_mem");
  cjw_u64(w, d->total_mem);
  cjw_key(w, "cc");
  cjw_arr_begin(w, false);
  cjw_i64(w, d->cc_major);
  cjw_i64(w, d->cc_minor);
  cjw_arr_end(w);
  cjw_obj_end(w);
}

void sd_put_function(cjw *w, const sd_function *x) {
  cjw_obj_begin(w, false);
  put_members(w, FUNCTION, COUNT(FUNCTION), x);
  cjw_key(w, "params");
  cjw_arr_begin(w, false);
  for (int32_t k = 0; k < x->nparams; k++) put_record(w, &param_record, &x->params[k]);
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

void sd_put_end(cjw *w, const sd_counts *n) {
  cjw_key(w, "counts");
  cjw_obj_begin(w, false);
  put_members(w, COUNTS, COUNT(COUNTS), n);
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

/* Member m of the object `obj`, checked by its rule, into the record. */
static void rd_member(rd *r, const member *m, const cj *obj, void *rec) {
  char *p = (char *)rec + m->off;
  const rule *u = m->rule ? m->rule : &TYPE_RULE[m->type];
  const cj *v = cj_get(obj, m->key);
  switch (m->type) {
  case T_U64: *(uint64_t *)p = rd_u(r, v, m->key, (uint64_t)u->lo, u->hi, u->what); break;
  case T_U32: *(uint32_t *)p = (uint32_t)rd_u(r, v, m->key, (uint64_t)u->lo, u->hi, u->what); break;
  case T_I32: *(int32_t *)p = (int32_t)rd_i(r, v, m->key, u->lo, (int64_t)u->hi, u->what); break;
  case T_BOOL: *(bool *)p = rd_bool(r, obj, m->key); break;
  case T_STR: *(const char **)p = u->path ? rd_file(r, obj, m->key) : rd_str(r, obj, m->key); break;
  }
}

static void rd_members(rd *r, const member *m, size_t n, const cj *obj, void *rec) {
  for (size_t k = 0; k < n; k++) rd_member(r, &m[k], obj, rec);
}

/* A row (e) of record r into rec: as many non-negative integers as it has
 * columns, each within its column's type. */
static bool rd_row(const record *r, const cj *e, void *rec) {
  if (!e || e->type != CJ_ARR || cj_len(e) != r->n) return false;
  for (size_t k = 0; k < r->n; k++) {
    uint64_t v;
    char *p = (char *)rec + r->m[k].off;
    if (!cj_u64(cj_at(e, k), &v)) return false;
    switch (r->m[k].type) {
    case T_U32:
      if (v > UINT32_MAX) return false;
      *(uint32_t *)p = (uint32_t)v;
      break;
    case T_I32:
      if (v > INT32_MAX) return false;
      *(int32_t *)p = (int32_t)v;
      break;
    default: *(uint64_t *)p = v; break; /* the tables' rows hold no other type */
    }
  }
  return true;
}

/* "[addr, size, device, slot_size]": a row's columns, for its messages. */
static const char *row_names(const record *r, char *buf, size_t len) {
  size_t at = (size_t)snprintf(buf, len, "[");
  for (size_t k = 0; k < r->n && at < len; k++)
    at += (size_t)snprintf(buf + at, len - at, "%s%s", k ? ", " : "", r->m[k].key);
  if (at < len) snprintf(buf + at, len - at, "]");
  return buf;
}

static int get_record(cgc_t *c, const record *r, const cj *e, size_t i, void *rec) {
  if (r->row) {
    char names[64];
    if (rd_row(r, e, rec)) return 0;
    cgc_set_error(c, CGC_STATE_NAME ": %s %zu is not %s", r->name, i, row_names(r, names, sizeof names));
    return -EINVAL;
  }
  rd rr;
  rd_init(&rr, c, r->name, i);
  rd_members(&rr, r->m, r->n, e, rec);
  return rd_done(&rr);
}

/* The column names (chunk_fields, allocation_fields): those this reader
 * takes the rows' items to be. */
static void rd_fields(rd *r, const cj *st, const record *rows) {
  const cj *v = cj_get(st, rows->fields);
  bool ok = v && v->type == CJ_ARR && cj_len(v) == rows->n;
  for (size_t k = 0; ok && k < rows->n; k++) {
    const char *s = cj_str(cj_at(v, k));
    ok = s && strcmp(s, rows->m[k].key) == 0;
  }
  if (!ok) rd_fail(r, rows->fields, "[\"addr\", \"size\", ...] as this version writes it");
}

static const char *const LISTS[] = {"devices", "contexts", "chunks",  "device_bytes", "allocations", "modules",
                                    "functions", "globals", "streams", "events",       "pins",        "blobs"};

const cj *sd_list(const cj *st, const char *name) { return cj_get(st, name); }

static int get_device(cgc_t *c, const cj *e, size_t i) {
  rd r;
  rd_init(&r, c, "device", i);
  rd_i(&r, cj_get(e, "ordinal"), "ordinal", INT32_MIN, INT32_MAX, TYPE_RULE[T_I32].what);
  rd_str(&r, e, "name");
  const char *uuid = rd_str(&r, e, "uuid");
  if (!r.bad && strlen(uuid) != 32) rd_fail(&r, "uuid", "32 hex digits");
  rd_u(&r, cj_get(e, "total_mem"), "total_mem", 0, UINT64_MAX, TYPE_RULE[T_U64].what);
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
  rd_members(&r, HEADER_IDS, COUNT(HEADER_IDS), st, h);
  if (!r.bad && (!h->app_job_id[0] || strlen(h->app_job_id) >= CGS_JOB_ID_MAX))
    rd_fail(&r, "app_job_id", "a job id of 1 to 63 bytes");
  rd_members(&r, HEADER_REST, COUNT(HEADER_REST), st, h);
  /* Optional: documents written before handle regions existed lack it, and
   * their handles were not addresses, so no region is in use. */
  const cj *mint = cj_get(st, "mint_regions");
  uint64_t regions = 0;
  if (!r.bad && mint && (!cj_u64(mint, &regions) || regions >= CGS_MINT_CLOSED))
    rd_fail(&r, "mint_regions", "an integer from 0 to 2147483647");
  h->mint_regions = (uint32_t)regions;
  rd_fields(&r, st, &chunk_record);
  rd_fields(&r, st, &alloc_record);
  for (size_t k = 0; k < COUNT(LISTS); k++) rd_type(&r, st, LISTS[k], CJ_ARR, "a list");
  /* Optional lists: documents written before the job's VMM and memory
   * pools were forwarded lack them (none of them then). */
  static const char *const OPTIONAL_LISTS[] = {"vmm_reservations", "vmm_physical", "vmm_mappings", "pools",
                                               "pool_blocks"};
  for (size_t k = 0; k < COUNT(OPTIONAL_LISTS); k++)
    if (cj_get(st, OPTIONAL_LISTS[k])) rd_type(&r, st, OPTIONAL_LISTS[k], CJ_ARR, "a list");
  const cj *seg = rd_type(&r, st, "segment", CJ_OBJ, "an object");
  const cj *counts = rd_type(&r, st, "counts", CJ_OBJ, "an object");
  if (r.bad) return -EINVAL;

  const cj *bytes = cj_get(st, "device_bytes");
  for (size_t i = 0; i < cj_len(bytes); i++)
    rd_u(&r, cj_at(bytes, i), "device_bytes", 0, UINT64_MAX, "a list of non-negative integers");
  if (r.bad) return -EINVAL;

  rd_init(&r, c, "segment", SIZE_MAX);
  rd_members(&r, SEGMENT, COUNT(SEGMENT), seg, h);
  if (r.bad) return -EINVAL;

  sd_counts n; /* checked, not kept: the lists themselves are counted */
  rd_init(&r, c, "counts", SIZE_MAX);
  rd_members(&r, COUNTS, COUNT(COUNTS), counts, &n);
  if (r.bad) return -EINVAL;

  const cj *devices = cj_get(st, "devices");
  for (size_t i = 0; i < cj_len(devices); i++)
    if (get_device(c, cj_at(devices, i), i)) return -EINVAL;
  return 0;
}

int sd_get_function(cgc_t *c, const cj *e, size_t i, sd_function *x) {
  memset(x, 0, sizeof *x);
  rd r;
  rd_init(&r, c, "function", i);
  rd_members(&r, FUNCTION, COUNT(FUNCTION), e, x);
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
  char names[32];
  if (rd_row(&param_record, cj_at(cj_get(e, "params"), (size_t)k), out)) return 0;
  cgc_set_error(c, CGC_STATE_NAME ": function %zu (%s): %s %d is not %s", i, fn->name, param_record.name, (int)k,
                row_names(&param_record, names, sizeof names));
  return -EINVAL;
}

/* ---- the records written and read whole from their tables ----------------- */

#define SD_DEFINE(kind)                                                                  \
  void sd_put_##kind(cjw *w, const sd_##kind *x) { put_record(w, &kind##_record, x); } \
  int sd_get_##kind(cgc_t *c, const cj *e, size_t i, sd_##kind *x) { return get_record(c, &kind##_record, e, i, x); }
SD_RECORDS(SD_DEFINE)
#undef SD_DEFINE
