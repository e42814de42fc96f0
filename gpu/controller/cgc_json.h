/* A small JSON reader and writer for the checkpoint's state.json: the syntax
 * only; what the document holds is state_doc.c's (cgc_state_doc.h). The
 * reader parses the whole document into one arena, freed at once. Integers
 * keep all 64 bits both ways (device addresses and minted handles do not fit
 * a double).
 */
#ifndef CGC_JSON_H
#define CGC_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum cj_type { CJ_NULL, CJ_BOOL, CJ_NUM, CJ_STR, CJ_ARR, CJ_OBJ } cj_type;

typedef struct cj {
  uint8_t type;   /* cj_type */
  uint8_t is_int; /* CJ_NUM: an integer, magnitude in u */
  uint8_t neg;    /* CJ_NUM: negative */
  uint8_t b;      /* CJ_BOOL */
  uint32_t n;     /* CJ_ARR, CJ_OBJ: members */
  union {
    uint64_t u;       /* CJ_NUM integer magnitude */
    double d;         /* CJ_NUM otherwise */
    char *s;          /* CJ_STR, NUL-terminated */
    struct cj *items; /* CJ_ARR, CJ_OBJ: members (values) */
  } v;
  char **keys; /* CJ_OBJ: member names */
} cj;

typedef struct cj_doc cj_doc;

/* Parse `len` bytes; NULL with `err` set on malformed input. */
const cj *cj_parse(const char *text, size_t len, cj_doc **doc, char *err, size_t err_len);
void cj_free(cj_doc *doc);

/* Member `key` of an object, or NULL. */
const cj *cj_get(const cj *obj, const char *key);
/* Element i of an array, or NULL. */
const cj *cj_at(const cj *arr, size_t i);
/* A non-negative integer / any integer that fits / a string / a boolean. */
bool cj_u64(const cj *v, uint64_t *out);
bool cj_i64(const cj *v, int64_t *out);
const char *cj_str(const cj *v);
bool cj_bool(const cj *v, bool *out);
size_t cj_len(const cj *v); /* members of an array or object, else 0 */

/* ---- writer ---------------------------------------------------------------
 *
 * Streams a document to a FILE: the writer places the commas, colons and
 * line breaks, and escapes strings, so callers only say what comes next.
 * A container opened with `rows` puts each member on a line of its own (the
 * top level, and lists of records: a reader of the file sees one record per
 * line); others stay on one line. Write errors stay in the FILE (ferror).
 */
#define CJW_MAX_DEPTH 16

typedef struct cjw {
  FILE *f;
  int depth;
  int over;                  /* containers opened past CJW_MAX_DEPTH */
  bool first[CJW_MAX_DEPTH]; /* no member written yet at this depth */
  bool rows[CJW_MAX_DEPTH];  /* one member per line at this depth */
  bool after_key;            /* a key was written: the value follows it */
} cjw;

void cjw_init(cjw *w, FILE *f);
void cjw_obj_begin(cjw *w, bool rows);
void cjw_obj_end(cjw *w);
void cjw_arr_begin(cjw *w, bool rows);
void cjw_arr_end(cjw *w);
void cjw_key(cjw *w, const char *key); /* in an object, before each value */
void cjw_u64(cjw *w, uint64_t v);
void cjw_i64(cjw *w, int64_t v);
void cjw_bool(cjw *w, bool v);
/* A C string: what JSON needs is escaped, bytes >= 0x80 pass as they are
 * (names from the driver or the job; UTF-8 passes through). NULL is "". */
void cjw_str(cjw *w, const char *s);

#endif
