/* A small JSON reader for the checkpoint's state.json (restore.c), which
 * checkpoint.c writes. The whole document is parsed into one arena, freed at
 * once. Integers keep all 64 bits (device addresses and minted handles do not
 * fit a double).
 */
#ifndef CGC_JSON_H
#define CGC_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* state.json's format: "format": "cedana-gpu-state", "version": N. */
#define CGC_STATE_FORMAT "cedana-gpu-state"
#define CGC_STATE_VERSION 1

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

#endif
