/* The GPU state document, gpu/state.json: one writer (cgc_export_state, in
 * checkpoint.c) and one reader (cgc_import_state, in restore.c), both here,
 * record by record, so what is written and what is read back cannot drift
 * apart.
 *
 * The format is owned by the Python package: its schema is
 * cedana_gpu/checkpoint/schemas/gpu-state-v<CGC_STATE_VERSION>.schema.json,
 * which says what every member means. The writer writes what the schema
 * says; the reader refuses, in one line naming the member, what the schema
 * does not allow of the members it reads, and a newer version. A new or
 * changed member is a change of that schema file first (and of its version
 * where old readers would misread it); tests/test_state_doc.py holds the
 * two sides to it.
 */
#ifndef CGC_STATE_DOC_H
#define CGC_STATE_DOC_H

#include "cgc_internal.h"
#include "cgc_json.h"

#define CGC_STATE_FORMAT "cedana-gpu-state"
#define CGC_STATE_VERSION 1
#define CGC_STATE_NAME "state.json"

/* ---- records --------------------------------------------------------------
 * Plain values, as the document has them. Strings a reader returns point into
 * the parsed document and live as long as it. */

typedef struct sd_header {
  const char *job_id, *app_job_id;
  const char *seg_name;
  uint64_t seg_size, staging_size;
  uint32_t ring_slots, nchannels, timeout_ms;
  uint64_t generation, va_base, va_size, granularity;
  int32_t driver_version, async_error;
  uint32_t mint_regions; /* optional in the document: 0 when absent (written before it existed) */
} sd_header;

typedef struct sd_device {
  int32_t ordinal;
  const char *name;
  uint8_t uuid[16];
  uint64_t total_mem;
  int32_t cc_major, cc_minor;
} sd_device;

typedef struct sd_context {
  uint64_t minted;
  int32_t device;
  uint32_t flags;
  bool primary;
  int32_t refs;
} sd_context;

typedef struct sd_chunk {
  uint64_t addr, size;
  int32_t device;
  uint32_t slot_size;
} sd_chunk;

typedef struct sd_alloc {
  uint64_t addr, size, chunk, context;
} sd_alloc;

typedef struct sd_module {
  uint64_t minted, context;
  const char *file;
  uint64_t size, checksum;
} sd_module;

typedef struct sd_function {
  uint64_t minted, module;
  const char *name;
  int32_t nparams; /* -1: the layout is unknown */
  uint32_t params_size;
  const cgs_param *params; /* writer: nparams of them; reader: see sd_get_param */
  uint32_t attr_set;       /* bit k: attrs[k] was set by the job */
  int32_t attrs[32];
} sd_function;

typedef struct sd_global {
  uint64_t module;
  const char *name;
  uint64_t addr, size, offset, checksum;
} sd_global;

typedef struct sd_stream {
  uint64_t minted, context;
  uint32_t flags;
  int32_t priority;
} sd_stream;

typedef struct sd_event {
  uint64_t minted, context;
  uint32_t flags;
} sd_event;

typedef struct sd_pin {
  uint32_t id;
  uint64_t size, app_addr;
  bool same_addr, registered;
} sd_pin;

typedef struct sd_blob {
  uint32_t channel;
  uint64_t total, filled;
  const char *file;
  uint64_t checksum;
} sd_blob;

/* The job's VMM objects (vmm.c); access: 2 bits of CUmemAccess_flags per
 * device, device 0 lowest. */
typedef struct sd_vresv {
  uint64_t addr, size, taken;
} sd_vresv;

typedef struct sd_vphys {
  uint64_t id, size;
  int32_t device;
  uint64_t shadow;
  bool released;
} sd_vphys;

typedef struct sd_vmap {
  uint64_t addr, size, physical;
  uint32_t access;
} sd_vmap;

/* The job's memory pools (pool.c); reuse: bit 0 follow event dependencies,
 * bit 1 opportunistic, bit 2 internal dependencies. */
typedef struct sd_pool {
  uint64_t minted;
  int32_t device;
  bool is_default, destroyed;
  uint64_t max_size, threshold;
  uint32_t reuse;
  uint64_t reserved_high, used_high;
} sd_pool;

/* A pool's block: an allocation of the allocations list. */
typedef struct sd_pblock {
  uint64_t addr, pool, size;
  bool cached;
  uint64_t freed_on;
} sd_pblock;

typedef struct sd_counts {
  uint64_t allocations, bytes, chunks, modules;
} sd_counts;

/* ---- writer ---------------------------------------------------------------
 * In document order: sd_put_header; then each list, begun with
 * sd_list_begin (sd_rows_begin for chunks and allocations, which are rows of
 * named columns), its records put, ended with sd_list_end; then sd_put_end.
 * The lists, in order: devices, contexts, chunks, device_bytes (numbers,
 * written with cjw_key, cjw_arr_begin and cjw_u64), allocations, modules,
 * functions, globals, streams, events, pins, blobs. */

void sd_put_header(cjw *w, const sd_header *h);
void sd_list_begin(cjw *w, const char *name);
void sd_rows_begin(cjw *w, const char *name); /* "chunks" or "allocations" */
void sd_list_end(cjw *w);
void sd_put_device(cjw *w, const sd_device *d);
void sd_put_function(cjw *w, const sd_function *x);
void sd_put_end(cjw *w, const sd_counts *n);

/* ---- reader ---------------------------------------------------------------
 * Each returns 0, or -EINVAL with the error set (cgc_set_error, one line:
 * "state.json: context 3: \"minted\" is ..."). sd_get_header checks the
 * format and version first, then every top-level member and the devices, so
 * a document that is not whole is refused before anything is built. */

int sd_get_header(cgc_t *c, const cj *st, sd_header *out);
/* The list member `name` of the document (checked by sd_get_header). */
const cj *sd_list(const cj *st, const char *name);
/* out->params is NULL: the parameters are read one at a time with
 * sd_get_param (k < nparams), into the caller's own array. */
int sd_get_function(cgc_t *c, const cj *e, size_t i, sd_function *out);
int sd_get_param(cgc_t *c, const cj *e, size_t i, const sd_function *fn, int32_t k, cgs_param *out);

/* ---- the other records ----------------------------------------------------
 * Written and read whole, each from the one table of its members in
 * state_doc.c; for each kind X here:
 *   void sd_put_X(cjw *w, const sd_X *x);
 *   int sd_get_X(cgc_t *c, const cj *e, size_t i, sd_X *out);
 * (chunks and allocations are rows, begun with sd_rows_begin). */
#define SD_RECORDS(X) \
  X(context) X(chunk) X(alloc) X(module) X(global) X(stream) X(event) X(pin) X(blob) X(vresv) X(vphys) X(vmap) X(pool) X(pblock)

#define SD_DECLARE(kind)                             \
  void sd_put_##kind(cjw *w, const sd_##kind *x); \
  int sd_get_##kind(cgc_t *c, const cj *e, size_t i, sd_##kind *out);
SD_RECORDS(SD_DECLARE)
#undef SD_DECLARE

#endif
