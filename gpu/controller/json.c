/* The JSON reader and writer of cgc_json.h. The reader: recursive descent
 * into an arena. */
#include "cgc_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct block {
  struct block *next;
  size_t used, cap;
  max_align_t data[];
} block;

struct cj_doc {
  block *blocks;
  cj root;
};

typedef struct parser {
  const char *p, *end;
  cj_doc *doc;
  char *err;
  size_t err_len;
  int depth;
} parser;

static void *arena(cj_doc *d, size_t n) {
  n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
  block *b = d->blocks;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > ((size_t)1 << 20) ? n : (size_t)1 << 20;
    b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->used = 0;
    b->cap = cap;
    b->next = d->blocks;
    d->blocks = b;
  }
  void *r = (char *)b->data + b->used;
  b->used += n;
  return r;
}

static bool fail(parser *ps, const char *what) {
  if (ps->err && ps->err_len && !ps->err[0])
    snprintf(ps->err, ps->err_len, "%s", what);
  return false;
}

static void skip_ws(parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t')) ps->p++;
}

static bool lit(parser *ps, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return fail(ps, "bad literal");
  ps->p += n;
  return true;
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

static bool hex4(parser *ps, unsigned *out) {
  if (ps->end - ps->p < 4) return fail(ps, "short \\u escape");
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval(ps->p[i]);
    if (h < 0) return fail(ps, "bad \\u escape");
    v = v * 16 + (unsigned)h;
  }
  ps->p += 4;
  *out = v;
  return true;
}

static size_t utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* At the opening quote. */
static bool string(parser *ps, char **out) {
  ps->p++;
  const char *start = ps->p;
  /* The decoded string is never longer than the encoded one. */
  const char *q = start;
  while (q < ps->end && *q != '"') q += *q == '\\' ? 2 : 1;
  if (q >= ps->end) return fail(ps, "unterminated string");
  char *s = arena(ps->doc, (size_t)(q - start) + 1);
  if (!s) return fail(ps, "out of memory");
  size_t n = 0;
  while (ps->p < ps->end && *ps->p != '"') {
    unsigned char ch = (unsigned char)*ps->p++;
    if (ch < 0x20) return fail(ps, "control character in string");
    if (ch != '\\') {
      s[n++] = (char)ch;
      continue;
    }
    if (ps->p >= ps->end) return fail(ps, "unterminated escape");
    char e = *ps->p++;
    switch (e) {
    case '"': s[n++] = '"'; break;
    case '\\': s[n++] = '\\'; break;
    case '/': s[n++] = '/'; break;
    case 'b': s[n++] = '\b'; break;
    case 'f': s[n++] = '\f'; break;
    case 'n': s[n++] = '\n'; break;
    case 'r': s[n++] = '\r'; break;
    case 't': s[n++] = '\t'; break;
    case 'u': {
      unsigned cp;
      if (!hex4(ps, &cp)) return false;
      if (cp >= 0xd800 && cp < 0xdc00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
        ps->p += 2;
        unsigned lo;
        if (!hex4(ps, &lo)) return false;
        if (lo < 0xdc00 || lo >= 0xe000) return fail(ps, "bad surrogate pair");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
      }
      if (cp == 0) return fail(ps, "NUL in string");
      n += utf8(s + n, cp); /* \uXXXX is 6 bytes, its UTF-8 at most 4 */
      break;
    }
    default: return fail(ps, "bad escape");
    }
  }
  if (ps->p >= ps->end) return fail(ps, "unterminated string");
  ps->p++;
  s[n] = 0;
  *out = s;
  return true;
}

static bool number(parser *ps, cj *v) {
  const char *start = ps->p;
  v->type = CJ_NUM;
  if (ps->p < ps->end && *ps->p == '-') {
    v->neg = 1;
    ps->p++;
  }
  if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return fail(ps, "bad number");
  uint64_t u = 0;
  bool overflow = false;
  while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
    unsigned dgt = (unsigned)(*ps->p++ - '0');
    if (u > (UINT64_MAX - dgt) / 10) overflow = true;
    u = u * 10 + dgt;
  }
  bool frac = ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E');
  if (!frac && !overflow) {
    v->is_int = 1;
    v->v.u = u;
    return true;
  }
  while (ps->p < ps->end && strchr("0123456789.eE+-", *ps->p)) ps->p++;
  char buf[64];
  size_t n = (size_t)(ps->p - start);
  if (n >= sizeof buf) return fail(ps, "number too long");
  memcpy(buf, start, n);
  buf[n] = 0;
  char *endp;
  v->v.d = strtod(buf, &endp);
  if (*endp) return fail(ps, "bad number");
  return true;
}

static bool value(parser *ps, cj *v);

/* Members collected on the heap, then moved into the arena in one piece. */
static bool members(parser *ps, cj *v, bool object) {
  char close = object ? '}' : ']';
  ps->p++;
  size_t n = 0, cap = 0;
  cj *items = NULL;
  char **keys = NULL;
  bool ok = false;
  if (++ps->depth > MAX_DEPTH) {
    fail(ps, "nested too deep");
    goto out;
  }
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
    ok = true;
    goto out;
  }
  for (;;) {
    if (n == cap) {
      cap = cap ? 2 * cap : 8;
      cj *ni = realloc(items, cap * sizeof *ni);
      if (!ni) {
        fail(ps, "out of memory");
        goto out;
      }
      items = ni;
      if (object) {
        char **nk = realloc(keys, cap * sizeof *nk);
        if (!nk) {
          fail(ps, "out of memory");
          goto out;
        }
        keys = nk;
      }
    }
    skip_ws(ps);
    if (object) {
      if (ps->p >= ps->end || *ps->p != '"') {
        fail(ps, "expected a member name");
        goto out;
      }
      if (!string(ps, &keys[n])) goto out;
      skip_ws(ps);
      if (ps->p >= ps->end || *ps->p != ':') {
        fail(ps, "expected ':'");
        goto out;
      }
      ps->p++;
    }
    memset(&items[n], 0, sizeof items[n]);
    if (!value(ps, &items[n])) goto out;
    n++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (ps->p < ps->end && *ps->p == close) {
      ps->p++;
      ok = true;
      break;
    }
    fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
    goto out;
  }
out:
  ps->depth--;
  if (ok && n) {
    if (n > UINT32_MAX) {
      ok = fail(ps, "too many members");
    } else {
      v->v.items = arena(ps->doc, n * sizeof *items);
      if (object) v->keys = arena(ps->doc, n * sizeof *keys);
      if (!v->v.items || (object && !v->keys)) {
        ok = fail(ps, "out of memory");
      } else {
        memcpy(v->v.items, items, n * sizeof *items);
        if (object) memcpy(v->keys, keys, n * sizeof *keys);
      }
    }
  }
  v->n = (uint32_t)n;
  v->type = object ? CJ_OBJ : CJ_ARR;
  free(items);
  free(keys);
  return ok;
}

static bool value(parser *ps, cj *v) {
  skip_ws(ps);
  if (ps->p >= ps->end) return fail(ps, "unexpected end");
  switch (*ps->p) {
  case '{': return members(ps, v, true);
  case '[': return members(ps, v, false);
  case '"':
    v->type = CJ_STR;
    return string(ps, &v->v.s);
  case 't':
    v->type = CJ_BOOL;
    v->b = 1;
    return lit(ps, "true");
  case 'f':
    v->type = CJ_BOOL;
    return lit(ps, "false");
  case 'n':
    v->type = CJ_NULL;
    return lit(ps, "null");
  default: return number(ps, v);
  }
}

const cj *cj_parse(const char *text, size_t len, cj_doc **doc, char *err, size_t err_len) {
  if (err && err_len) err[0] = 0;
  *doc = calloc(1, sizeof **doc);
  if (!*doc) {
    if (err && err_len) snprintf(err, err_len, "out of memory");
    return NULL;
  }
  parser ps = {text, text + len, *doc, err, err_len, 0};
  const char *base = text;
  bool ok = value(&ps, &(*doc)->root);
  if (ok) {
    skip_ws(&ps);
    if (ps.p != ps.end) ok = fail(&ps, "trailing bytes");
  }
  if (!ok) {
    /* Say where, from the start of the text. */
    if (err && err_len) {
      char what[128];
      snprintf(what, sizeof what, "%s", err);
      snprintf(err, err_len, "%s at byte %zu", what, (size_t)(ps.p - base));
    }
    cj_free(*doc);
    *doc = NULL;
    return NULL;
  }
  return &(*doc)->root;
}

void cj_free(cj_doc *doc) {
  if (!doc) return;
  for (block *b = doc->blocks, *n; b; b = n) {
    n = b->next;
    free(b);
  }
  free(doc);
}

const cj *cj_get(const cj *obj, const char *key) {
  if (!obj || obj->type != CJ_OBJ) return NULL;
  for (uint32_t i = 0; i < obj->n; i++)
    if (strcmp(obj->keys[i], key) == 0) return &obj->v.items[i];
  return NULL;
}

const cj *cj_at(const cj *arr, size_t i) {
  if (!arr || arr->type != CJ_ARR || i >= arr->n) return NULL;
  return &arr->v.items[i];
}

bool cj_u64(const cj *v, uint64_t *out) {
  if (!v || v->type != CJ_NUM || !v->is_int || (v->neg && v->v.u)) return false;
  *out = v->v.u;
  return true;
}

bool cj_i64(const cj *v, int64_t *out) {
  if (!v || v->type != CJ_NUM || !v->is_int) return false;
  if (v->neg) {
    if (v->v.u > (uint64_t)INT64_MAX + 1) return false;
    *out = v->v.u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v->v.u;
  } else {
    if (v->v.u > (uint64_t)INT64_MAX) return false;
    *out = (int64_t)v->v.u;
  }
  return true;
}

const char *cj_str(const cj *v) { return v && v->type == CJ_STR ? v->v.s : NULL; }

bool cj_bool(const cj *v, bool *out) {
  if (!v || v->type != CJ_BOOL) return false;
  *out = v->b;
  return true;
}

size_t cj_len(const cj *v) { return v && (v->type == CJ_ARR || v->type == CJ_OBJ) ? v->n : 0; }

/* ---- writer --------------------------------------------------------------- */

void cjw_init(cjw *w, FILE *f) {
  memset(w, 0, sizeof *w);
  w->f = f;
}

/* Before a value or a key: the separator from the previous member, and the
 * line break of a container of rows (members at the top level unindented,
 * records of a list indented by two). */
static void sep(cjw *w) {
  if (w->after_key) {
    w->after_key = false;
    return;
  }
  if (w->depth == 0) return;
  bool first = w->first[w->depth];
  w->first[w->depth] = false;
  if (w->rows[w->depth])
    fputs(first ? (w->depth == 1 ? "\n" : "\n  ") : (w->depth == 1 ? ",\n" : ",\n  "), w->f);
  else if (!first)
    fputs(", ", w->f);
}

static void open_(cjw *w, char ch, bool rows) {
  sep(w);
  fputc(ch, w->f);
  if (w->depth + 1 >= CJW_MAX_DEPTH) { /* deeper than any document of ours: stay well-formed */
    w->over++;
    return;
  }
  w->depth++;
  w->first[w->depth] = true;
  w->rows[w->depth] = rows;
}

static void close_(cjw *w, char ch) {
  if (w->over) {
    w->over--;
    fputc(ch, w->f);
    return;
  }
  if (w->rows[w->depth] && !w->first[w->depth]) fputc('\n', w->f);
  if (w->depth > 0) w->depth--;
  fputc(ch, w->f);
  if (w->depth == 0) fputc('\n', w->f);
}

void cjw_obj_begin(cjw *w, bool rows) { open_(w, '{', rows); }
void cjw_obj_end(cjw *w) { close_(w, '}'); }
void cjw_arr_begin(cjw *w, bool rows) { open_(w, '[', rows); }
void cjw_arr_end(cjw *w) { close_(w, ']'); }

static void put_escaped(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    if (*p == '"' || *p == '\\') {
      fputc('\\', f);
      fputc(*p, f);
    } else if (*p < 0x20) {
      fprintf(f, "\\u%04x", *p);
    } else {
      fputc(*p, f);
    }
  }
  fputc('"', f);
}

void cjw_key(cjw *w, const char *key) {
  sep(w);
  put_escaped(w->f, key);
  fputs(": ", w->f);
  w->after_key = true;
}

/* Decimal digits by hand: a state document may hold 400,000 numbers, and
 * fprintf's format parsing is most of the cost of writing one. */
static void put_u64(FILE *f, uint64_t v, bool neg) {
  char buf[24];
  char *p = buf + sizeof buf;
  *--p = 0;
  do {
    *--p = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  if (neg) *--p = '-';
  fputs(p, f);
}

void cjw_u64(cjw *w, uint64_t v) {
  sep(w);
  put_u64(w->f, v, false);
}

void cjw_i64(cjw *w, int64_t v) {
  sep(w);
  put_u64(w->f, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, v < 0);
}

void cjw_bool(cjw *w, bool v) {
  sep(w);
  fputs(v ? "true" : "false", w->f);
}

void cjw_str(cjw *w, const char *s) {
  sep(w);
  put_escaped(w->f, s);
}
