/* Parsing PTX text into the decoded module of ptx_internal.h.
 *
 * What is read: the module directives (.version/.target/.address_size), module
 * variables in .global/.const/.shared (static, and extern dynamic shared),
 * .entry kernels with their parameters, .func device functions with
 * parameters and a return value, register declarations (%r<N>), .local
 * arrays, call sequences with their .param slots, labels and instructions.
 * Every instruction is decoded completely here: an opcode or a modifier the
 * interpreter does not implement makes the load fail with its name and line,
 * so nothing is ever executed by guess.
 *
 * Layout decisions (no recursion, so everything is static):
 * - every .shared variable of the module gets one offset in the block's
 *   shared window, dynamic shared memory starts after them;
 * - every function's .local variables and .param slots (its own and those of
 *   its call sites) get one offset in the thread's local window;
 * - every function's registers get their own numbers in one register file.
 */
#include "ptx_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tokens ------------------------------------------------------------------ */

enum { T_EOF, T_ID, T_NUM, T_STR, T_PUNCT };

typedef struct tok {
  uint8_t type;
  char c; /* T_PUNCT */
  int line;
  const char *s;
  int len;
} tok;

typedef struct map_entry {
  char *key;
  int64_t value;
  int kind;
  int64_t extra;
} map_entry;

typedef struct map {
  map_entry *e;
  size_t cap, n;
} map;

typedef struct parser {
  tok *t;
  int nt, pos;
  char *err;
  size_t errlen;
  bool failed, invalid;
  ptx_module *m;
  size_t cap_code, cap_funcs, cap_globals, cap_storage;
  map globals;   /* module variables: kind = space, value = address/offset, extra = size */
  map funcnames; /* function name -> index */
  /* per function */
  map regs;   /* "%r" -> base (extra = count), or "%x" -> index (extra = -1) */
  map locals; /* symbol -> offset, kind = space */
  map labels; /* label -> pc */
  int cur;    /* current function */
  uint8_t *reg_bytes; /* declared width of each register (module-wide index) */
  size_t cap_reg_bytes;
  struct fix {
    uint32_t pc;
    char *name;
    int line;
  } *fixes;
  int nfixes, capfixes;
} parser;

static void fail(parser *p, bool invalid, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(parser *p, bool invalid, int line, const char *fmt, ...) {
  if (p->failed) return;
  p->failed = true;
  p->invalid = invalid;
  int n = snprintf(p->err, p->errlen, "ptx line %d: ", line);
  if (n < 0 || (size_t)n >= p->errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
  va_end(ap);
}

static bool idchar(char c) { return isalnum((unsigned char)c) || c == '_' || c == '$' || c == '%' || c == '.' || c == ':'; }

static bool lex(parser *p, const char *s) {
  int cap = 1024, line = 1;
  p->t = malloc(sizeof(tok) * (size_t)cap);
  if (!p->t) return false;
  for (;;) {
    while (*s && isspace((unsigned char)*s)) {
      if (*s == '\n') line++;
      s++;
    }
    if (s[0] == '/' && s[1] == '/') {
      while (*s && *s != '\n') s++;
      continue;
    }
    if (s[0] == '/' && s[1] == '*') {
      const char *e = strstr(s + 2, "*/");
      if (!e) break;
      for (const char *q = s; q < e; q++) line += *q == '\n';
      s = e + 2;
      continue;
    }
    if (p->nt + 1 >= cap) {
      cap *= 2;
      tok *n = realloc(p->t, sizeof(tok) * (size_t)cap);
      if (!n) return false;
      p->t = n;
    }
    tok *t = &p->t[p->nt];
    t->line = line;
    t->s = s;
    if (!*s) {
      t->type = T_EOF;
      t->len = 0;
      p->nt++;
      return true;
    }
    if (*s == '"') {
      const char *e = s + 1;
      while (*e && *e != '"') e++;
      t->type = T_STR;
      t->len = (int)(e - s) + (*e == '"');
      s += t->len;
    } else if (isdigit((unsigned char)*s)) {
      const char *e = s;
      while (isalnum((unsigned char)*e) || *e == '.') e++;
      /* a decimal float with an exponent: 1.5e+10 */
      if ((e[-1] == 'e' || e[-1] == 'E') && (e[0] == '+' || e[0] == '-') && s[1] != 'x' && s[1] != 'X' &&
          s[1] != 'f' && s[1] != 'd') {
        e++;
        while (isdigit((unsigned char)*e)) e++;
      }
      t->type = T_NUM;
      t->len = (int)(e - s);
      s = e;
    } else if (idchar(*s) && *s != ':') {
      const char *e = s;
      while (idchar(*e)) {
        /* "::" belongs to names like shared::cta; a single ':' ends a label */
        if (*e == ':' && e[1] != ':' && (e == s || e[-1] != ':')) break;
        /* a directive ends at the next dot: ".reg.b16" is ".reg" ".b16" */
        if (*s == '.' && *e == '.' && e > s) break;
        e++;
      }
      t->type = T_ID;
      t->len = (int)(e - s);
      s = e;
    } else {
      t->type = T_PUNCT;
      t->c = *s;
      t->len = 1;
      s++;
    }
    p->nt++;
  }
  fail(p, true, line, "unterminated comment");
  return false;
}

static tok *peek(parser *p) { return &p->t[p->pos]; }
static tok *next(parser *p) {
  tok *t = &p->t[p->pos];
  if (t->type != T_EOF) p->pos++;
  return t;
}
static bool is_punct(tok *t, char c) { return t->type == T_PUNCT && t->c == c; }
static bool is_word(tok *t, const char *w) {
  return t->type == T_ID && (int)strlen(w) == t->len && memcmp(t->s, w, (size_t)t->len) == 0;
}
static bool accept(parser *p, char c) {
  if (!is_punct(peek(p), c)) return false;
  p->pos++;
  return true;
}
static bool expect(parser *p, char c) {
  if (accept(p, c)) return true;
  fail(p, true, peek(p)->line, "expected '%c' near '%.*s'", c, peek(p)->len, peek(p)->s);
  return false;
}
static char *dup_tok(tok *t) { return strndup(t->s, (size_t)t->len); }

/* ---- a string map ---------------------------------------------------------------- */

static uint64_t hash(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

static map_entry *map_find(map *m, const char *k, size_t n) {
  if (!m->cap) return NULL;
  for (size_t i = hash(k, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    map_entry *e = &m->e[i];
    if (!e->key) return NULL;
    if (strlen(e->key) == n && memcmp(e->key, k, n) == 0) return e;
  }
}

static map_entry *map_put(map *m, const char *k, size_t n) {
  if ((m->n + 1) * 2 > m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    map_entry *ne = calloc(cap, sizeof *ne);
    if (!ne) return NULL;
    for (size_t i = 0; i < m->cap; i++) {
      if (!m->e[i].key) continue;
      size_t j = hash(m->e[i].key, strlen(m->e[i].key)) & (cap - 1);
      while (ne[j].key) j = (j + 1) & (cap - 1);
      ne[j] = m->e[i];
    }
    free(m->e);
    m->e = ne;
    m->cap = cap;
  }
  map_entry *e = map_find(m, k, n);
  if (e) return e;
  for (size_t i = hash(k, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (!m->e[i].key) {
      e = &m->e[i];
      break;
    }
  }
  e->key = strndup(k, n);
  if (!e->key) return NULL;
  m->n++;
  return e;
}

static void map_clear(map *m) {
  for (size_t i = 0; i < m->cap; i++) free(m->e[i].key);
  free(m->e);
  memset(m, 0, sizeof *m);
}

/* ---- types and numbers ------------------------------------------------------------- */

static bool parse_type(const char *s, size_t n, ptx_type *t) {
  if (n == 4 && memcmp(s, "pred", 4) == 0) {
    *t = (ptx_type){TK_PRED, 1};
    return true;
  }
  if (n < 2 || n > 3) return false;
  int kind;
  switch (s[0]) {
  case 'b': kind = TK_B; break;
  case 'u': kind = TK_U; break;
  case 's': kind = TK_S; break;
  case 'f': kind = TK_F; break;
  default: return false;
  }
  int bits = atoi(s + 1);
  if (bits != 8 && bits != 16 && bits != 32 && bits != 64) return false;
  char num[4] = {0};
  memcpy(num, s + 1, n - 1);
  if (atoi(num) != bits || (n == 2 && bits >= 10) || (n == 3 && bits < 10)) return false;
  *t = (ptx_type){(uint8_t)kind, (uint8_t)(bits / 8)};
  return true;
}

/* An integer or float literal; *fp says it was a decimal float (a double). */
static bool parse_number(tok *t, uint64_t *v, bool *fp) {
  char buf[80];
  if (t->len >= (int)sizeof buf) return false;
  memcpy(buf, t->s, (size_t)t->len);
  buf[t->len] = 0;
  *fp = false;
  if ((buf[0] == '0') && (buf[1] == 'f' || buf[1] == 'F') && t->len == 10) {
    *v = strtoull(buf + 2, NULL, 16);
    return true;
  }
  if ((buf[0] == '0') && (buf[1] == 'd' || buf[1] == 'D') && t->len == 18) {
    *v = strtoull(buf + 2, NULL, 16);
    return true;
  }
  if (strchr(buf, '.') || ((strchr(buf, 'e') || strchr(buf, 'E')) && buf[1] != 'x' && buf[1] != 'X')) {
    double d = strtod(buf, NULL);
    memcpy(v, &d, sizeof d);
    *fp = true;
    return true;
  }
  size_t n = strlen(buf);
  if (n && (buf[n - 1] == 'U' || buf[n - 1] == 'u')) buf[--n] = 0;
  char *end;
  errno = 0;
  if (buf[0] == '0' && (buf[1] == 'b' || buf[1] == 'B')) {
    *v = strtoull(buf + 2, &end, 2);
  } else if (buf[0] == '0' && buf[1] != 'x' && buf[1] != 'X' && buf[1]) {
    *v = strtoull(buf, &end, 8);
  } else {
    *v = strtoull(buf, &end, 0);
  }
  return *end == 0 && errno == 0;
}

/* ---- module variables ----------------------------------------------------------------- */

static size_t align_up(size_t v, size_t a) { return a ? (v + a - 1) / a * a : v; }

/* Grow an array of `size`-byte elements to hold n + 1. */
static bool grow(void **arr, size_t *cap, size_t n, size_t size) {
  if (n < *cap) return true;
  size_t c = *cap ? *cap * 2 : 16;
  while (c <= n) c *= 2;
  void *a = realloc(*arr, c * size);
  if (!a) return false;
  *arr = a;
  *cap = c;
  return true;
}

/* After `.align N` and a type: name, optional [dims], optional initializer. */
typedef struct decl {
  size_t align;
  ptx_type type;
  bool vec;
  size_t count; /* elements (1 for scalars); 0 for name[] */
  bool unsized;
  char *name;
  int line;
} decl;

static bool parse_decl_head(parser *p, decl *d) {
  d->align = 0;
  d->type = (ptx_type){0, 0};
  d->vec = false;
  int vecn = 1;
  for (;;) {
    tok *t = peek(p);
    if (is_word(t, ".align")) {
      next(p);
      uint64_t v;
      bool fp;
      if (!parse_number(next(p), &v, &fp) || fp) {
        fail(p, true, t->line, "bad .align");
        return false;
      }
      d->align = (size_t)v;
    } else if (is_word(t, ".v2") || is_word(t, ".v4")) {
      next(p);
      vecn = t->s[2] - '0';
    } else if (is_word(t, ".ptr") || is_word(t, ".global") || is_word(t, ".shared") ||
               is_word(t, ".const") || is_word(t, ".local")) {
      next(p); /* .ptr .global .align N: attributes of a pointer parameter */
    } else if (t->type == T_ID && t->s[0] == '.' && parse_type(t->s + 1, (size_t)t->len - 1, &d->type)) {
      next(p);
      break;
    } else {
      fail(p, true, t->line, "expected a type near '%.*s'", t->len, t->s);
      return false;
    }
  }
  /* a pointer parameter's attributes may follow its type:
   * .param .u64 .ptr .global .align 4 name, where .align is the pointee's
   * (the parameter keeps its natural alignment) */
  for (;;) {
    tok *t = peek(p);
    if (is_word(t, ".ptr") || is_word(t, ".global") || is_word(t, ".shared") ||
        is_word(t, ".const") || is_word(t, ".local")) {
      next(p);
    } else if (is_word(t, ".align")) {
      next(p);
      uint64_t v;
      bool fp;
      if (!parse_number(next(p), &v, &fp) || fp) {
        fail(p, true, t->line, "bad .align");
        return false;
      }
    } else {
      break;
    }
  }
  tok *n = next(p);
  if (n->type != T_ID) {
    fail(p, true, n->line, "expected a name near '%.*s'", n->len, n->s);
    return false;
  }
  d->name = dup_tok(n);
  d->line = n->line;
  d->count = (size_t)vecn;
  d->unsized = false;
  while (accept(p, '[')) {
    if (accept(p, ']')) {
      d->unsized = true;
      d->count = 0;
      continue;
    }
    uint64_t v;
    bool fp;
    if (!parse_number(next(p), &v, &fp) || fp || !expect(p, ']')) {
      fail(p, true, n->line, "bad array size of %s", d->name);
      return false;
    }
    d->count *= (size_t)v;
  }
  if (!d->align) d->align = (size_t)d->type.bytes * (size_t)vecn;
  if (d->type.kind == TK_PRED) {
    fail(p, true, n->line, "a .pred variable in memory");
    return false;
  }
  return true;
}

/* Initializer values { a, b, ... } or a single value, written into storage. */
static bool parse_init(parser *p, decl *d, unsigned char *mem, size_t size) {
  size_t idx = 0;
  int depth = 0;
  size_t esz = d->type.bytes;
  for (;;) {
    tok *t = peek(p);
    if (accept(p, '{')) {
      depth++;
      continue;
    }
    if (accept(p, '}')) {
      depth--;
      if (depth <= 0 && !is_punct(peek(p), ',')) break;
      continue;
    }
    if (accept(p, ',')) continue;
    if (is_punct(t, ';')) break;
    bool neg = accept(p, '-');
    t = next(p);
    uint64_t v;
    bool fp;
    if (t->type != T_NUM || !parse_number(t, &v, &fp)) {
      fail(p, false, t->line, "unsupported initializer of %s near '%.*s'", d->name, t->len, t->s);
      return false;
    }
    if (d->type.kind == TK_F) {
      double x;
      if (fp) {
        memcpy(&x, &v, sizeof x);
      } else if (t->len > 2 && (t->s[1] == 'f' || t->s[1] == 'F')) {
        uint32_t b = (uint32_t)v;
        float f;
        memcpy(&f, &b, sizeof f);
        x = f;
      } else if (t->len > 2 && (t->s[1] == 'd' || t->s[1] == 'D')) {
        memcpy(&x, &v, sizeof x);
      } else {
        x = (double)v;
      }
      if (neg) x = -x;
      if (esz == 4) {
        float f = (float)x;
        memcpy(&v, &f, 4);
      } else {
        memcpy(&v, &x, 8);
      }
    } else if (neg) {
      v = (uint64_t)0 - v;
    }
    if ((idx + 1) * esz > size) {
      fail(p, true, t->line, "too many initializers for %s", d->name);
      return false;
    }
    memcpy(mem + idx * esz, &v, esz); /* little-endian host */
    idx++;
    if (depth == 0) break;
  }
  return true;
}

static int add_global(parser *p, const char *name, void *addr, size_t size) {
  ptx_module *m = p->m;
  if (!grow((void **)&m->globals, &p->cap_globals, (size_t)m->nglobals, sizeof *m->globals)) return -1;
  if (!grow((void **)&m->storage, &p->cap_storage, (size_t)m->nglobals, sizeof *m->storage)) return -1;
  m->globals[m->nglobals] = (ptx_global){strdup(name), addr, size};
  m->storage[m->nglobals] = addr;
  return m->nglobals++;
}

/* A module-scope .global/.const/.shared variable; the state space token has
 * been read. */
static bool module_var(parser *p, int space, bool is_extern) {
  decl d;
  if (!parse_decl_head(p, &d)) return false;
  size_t size = d.count * d.type.bytes;
  map_entry *e = map_put(&p->globals, d.name, strlen(d.name));
  if (!e) goto oom;
  e->kind = space;
  e->extra = (int64_t)size;
  if (space == SP_SHARED) {
    if (d.unsized || is_extern) {
      /* dynamic shared memory: after every static variable (set later) */
      e->value = -1;
      if (d.align > p->m->shared_align) p->m->shared_align = d.align;
    } else {
      p->m->shared_size = align_up(p->m->shared_size, d.align);
      e->value = (int64_t)p->m->shared_size;
      p->m->shared_size += size;
      if (d.align > p->m->shared_align) p->m->shared_align = d.align;
    }
    if (accept(p, '=')) {
      fail(p, true, d.line, "initializer on .shared variable %s", d.name);
      goto out;
    }
  } else {
    if (is_extern) {
      fail(p, false, d.line, "extern .global/.const variable %s needs a linker", d.name);
      goto out;
    }
    size_t alloc = size ? size : 1;
    void *mem = aligned_alloc(d.align < 16 ? 16 : d.align, align_up(alloc, d.align < 16 ? 16 : d.align));
    if (!mem) goto oom;
    memset(mem, 0, alloc);
    if (add_global(p, d.name, mem, size) < 0) {
      free(mem);
      goto oom;
    }
    e->value = (int64_t)(uintptr_t)mem;
    if (accept(p, '=') && !parse_init(p, &d, mem, size)) goto out;
  }
  free(d.name);
  return expect(p, ';');
oom:
  fail(p, false, d.line, "out of memory");
out:
  free(d.name);
  return false;
}

/* ---- registers and function-scope symbols ----------------------------------------------- */

static bool reg_decl(parser *p) {
  int line = peek(p)->line;
  tok *t = next(p);
  ptx_type ty;
  if (t->type == T_ID && (is_word(t, ".v2") || is_word(t, ".v4"))) {
    fail(p, false, line, "vector registers are not supported");
    return false;
  }
  if (t->type != T_ID || t->s[0] != '.' || !parse_type(t->s + 1, (size_t)t->len - 1, &ty)) {
    fail(p, false, line, "unsupported register type '%.*s'", t->len, t->s);
    return false;
  }
  do {
    tok *n = next(p);
    if (n->type != T_ID) {
      fail(p, true, n->line, "expected a register name");
      return false;
    }
    int count = -1;
    if (accept(p, '<')) {
      uint64_t v;
      bool fp;
      if (!parse_number(next(p), &v, &fp) || fp || !expect(p, '>')) {
        fail(p, true, n->line, "bad register count");
        return false;
      }
      count = (int)v;
    }
    map_entry *e = map_put(&p->regs, n->s, (size_t)n->len);
    if (!e) return false;
    e->value = p->m->nregs;
    e->extra = count;
    int used = count < 0 ? 1 : count;
    if (!grow((void **)&p->reg_bytes, &p->cap_reg_bytes, (size_t)(p->m->nregs + used), 1))
      return false;
    memset(p->reg_bytes + p->m->nregs, ty.bytes, (size_t)used);
    p->m->nregs += used;
    p->m->funcs[p->cur].nregs += used;
  } while (accept(p, ','));
  return expect(p, ';');
}

static int find_reg(parser *p, tok *t) {
  map_entry *e = map_find(&p->regs, t->s, (size_t)t->len);
  if (e && e->extra < 0) return (int)e->value;
  int digits = 0;
  while (digits < t->len && isdigit((unsigned char)t->s[t->len - 1 - digits])) digits++;
  if (!digits || digits == t->len) return -1;
  e = map_find(&p->regs, t->s, (size_t)(t->len - digits));
  if (!e || e->extra < 0) return -1;
  long idx = strtol(t->s + t->len - digits, NULL, 10);
  if (idx >= e->extra) return -1;
  return (int)(e->value + idx);
}

/* A function-scope .local or call-site .param: a slot in the local window. */
static bool local_decl(parser *p, int space, int32_t *off_out, int32_t *size_out) {
  decl d;
  if (!parse_decl_head(p, &d)) return false;
  size_t size = d.count * d.type.bytes;
  p->m->local_size = align_up(p->m->local_size, d.align);
  map_entry *e = map_put(&p->locals, d.name, strlen(d.name));
  if (!e) {
    free(d.name);
    return false;
  }
  e->kind = space;
  e->value = (int64_t)p->m->local_size;
  e->extra = (int64_t)size;
  if (off_out) *off_out = (int32_t)p->m->local_size;
  if (size_out) *size_out = (int32_t)size;
  p->m->local_size += size;
  free(d.name);
  return true;
}

static const struct {
  const char *name;
  int id;
} sregs[] = {
    {"%tid.x", SR_TID_X}, {"%tid.y", SR_TID_Y}, {"%tid.z", SR_TID_Z}, {"%ntid.x", SR_NTID_X},
    {"%ntid.y", SR_NTID_Y}, {"%ntid.z", SR_NTID_Z}, {"%ctaid.x", SR_CTAID_X},
    {"%ctaid.y", SR_CTAID_Y}, {"%ctaid.z", SR_CTAID_Z}, {"%nctaid.x", SR_NCTAID_X},
    {"%nctaid.y", SR_NCTAID_Y}, {"%nctaid.z", SR_NCTAID_Z}, {"%laneid", SR_LANEID},
    {"%warpid", SR_WARPID}, {"%nwarpid", SR_NWARPID}, {"%smid", SR_SMID}, {"%nsmid", SR_NSMID},
    {"%gridid", SR_GRIDID}, {"%lanemask_eq", SR_LANEMASK_EQ}, {"%lanemask_lt", SR_LANEMASK_LT},
    {"%lanemask_le", SR_LANEMASK_LE}, {"%lanemask_gt", SR_LANEMASK_GT},
    {"%lanemask_ge", SR_LANEMASK_GE}, {"%clock", SR_CLOCK}, {"%clock64", SR_CLOCK64},
    {"%globaltimer", SR_GLOBALTIMER}, {"%dynamic_smem_size", SR_DYN_SMEM},
    {"%total_smem_size", SR_TOTAL_SMEM},
};

/* A symbol used as a value or an address base: its space and value. */
static bool find_symbol(parser *p, tok *t, int *space, uint64_t *value) {
  map_entry *e = map_find(&p->locals, t->s, (size_t)t->len);
  if (!e) e = map_find(&p->globals, t->s, (size_t)t->len);
  if (!e) return false;
  *space = e->kind;
  *value = e->kind == SP_SHARED && e->value < 0 ? (uint64_t)-1 : (uint64_t)e->value;
  return true;
}

/* ---- instructions ------------------------------------------------------------------- */

static const struct {
  const char *name;
  ptx_op op;
} opcodes[] = {
    {"mov", OP_MOV}, {"ld", OP_LD}, {"ldu", OP_LD}, {"st", OP_ST}, {"cvta", OP_CVTA},
    {"cvt", OP_CVT}, {"add", OP_ADD}, {"sub", OP_SUB}, {"mul", OP_MUL}, {"mad", OP_MAD},
    {"fma", OP_FMA}, {"div", OP_DIV}, {"rem", OP_REM}, {"min", OP_MIN}, {"max", OP_MAX},
    {"abs", OP_ABS}, {"neg", OP_NEG}, {"and", OP_AND}, {"or", OP_OR}, {"xor", OP_XOR},
    {"not", OP_NOT}, {"cnot", OP_CNOT}, {"shl", OP_SHL}, {"shr", OP_SHR}, {"setp", OP_SETP},
    {"selp", OP_SELP}, {"set", OP_SET}, {"bra", OP_BRA}, {"ret", OP_RET}, {"exit", OP_EXIT},
    {"bar", OP_BAR}, {"barrier", OP_BAR}, {"atom", OP_ATOM}, {"red", OP_RED}, {"shfl", OP_SHFL},
    {"vote", OP_VOTE}, {"activemask", OP_ACTIVEMASK}, {"rcp", OP_RCP}, {"sqrt", OP_SQRT},
    {"rsqrt", OP_RSQRT}, {"ex2", OP_EX2}, {"lg2", OP_LG2}, {"sin", OP_SIN}, {"cos", OP_COS},
    {"call", OP_CALL}, {"trap", OP_TRAP}, {"brkpt", OP_TRAP}, {"popc", OP_POPC},
    {"clz", OP_CLZ}, {"brev", OP_BREV}, {"bfind", OP_BFIND}, {"bfe", OP_BFE}, {"bfi", OP_BFI},
    {"prmt", OP_PRMT}, {"lop3", OP_LOP3}, {"shf", OP_SHF}, {"copysign", OP_COPYSIGN},
    {"testp", OP_TESTP}, {"mul24", OP_MUL24}, {"mad24", OP_MAD24}, {"slct", OP_SLCT},
    {"tanh", OP_TANH}, {"match", OP_MATCH}, {"redux", OP_REDUX}, {"membar", OP_NOP},
    {"fence", OP_NOP}, {"nanosleep", OP_NOP}, {"prefetch", OP_NOP}, {"prefetchu", OP_NOP},
    {"pmevent", OP_NOP}, {"addc", OP_ADDC}, {"subc", OP_SUBC}, {"madc", OP_MADC}, {"sad", OP_SAD},
};

static bool word_is(const char *s, size_t n, const char *w) { return strlen(w) == n && memcmp(s, w, n) == 0; }

static int lookup_in(const char *s, size_t n, const char *const *names, int count) {
  for (int i = 0; i < count; i++) {
    if (word_is(s, n, names[i])) return i + 1;
  }
  return 0;
}

static const char *const cmp_names[] = {"eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi",
                                        "hs", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan"};
static const char *const aop_names[] = {"add", "min", "max", "inc", "dec", "and", "or", "xor", "exch", "cas"};
static const char *const rnd_names[] = {"rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi"};
static const char *const ignored[] = {
    "ca", "cg", "cs", "lu", "cv", "wb", "wt", "volatile", "relaxed", "acquire", "release",
    "acq_rel", "sc", "weak", "cta", "gpu", "sys", "gl", "aligned", "nc", "noftz", "mmio",
};
static const char *const testp_names[] = {"finite", "infinite", "number", "notanumber", "normal", "subnormal"};

/* Decode the dotted opcode into ins. */
static bool decode(parser *p, tok *t, ptx_ins *ins) {
  const char *s = t->s;
  const char *end = s + t->len;
  const char *dot = memchr(s, '.', (size_t)t->len);
  size_t blen = dot ? (size_t)(dot - s) : (size_t)t->len;
  int op = -1;
  for (size_t i = 0; i < sizeof opcodes / sizeof opcodes[0]; i++) {
    if (word_is(s, blen, opcodes[i].name)) op = (int)opcodes[i].op;
  }
  if (op < 0) {
    fail(p, false, t->line, "unsupported instruction '%.*s'", t->len, t->s);
    return false;
  }
  ins->op = (uint16_t)op;
  ins->vec = 1;
  int ntypes = 0;
  for (const char *m = dot; m && m < end;) {
    const char *ms = m + 1;
    const char *me = ms;
    while (me < end && *me != '.') {
      if (me[0] == ':' && me + 1 < end && me[1] == ':') me++;
      me++;
    }
    size_t n = (size_t)(me - ms);
    m = me < end ? me : NULL;
    ptx_type ty;
    int k;
    if (parse_type(ms, n, &ty)) {
      if (ntypes == 0) ins->t = ty;
      else if (ntypes == 1) ins->t2 = ty;
      else goto bad;
      ntypes++;
      continue;
    }
    if (word_is(ms, n, "global")) { ins->space = SP_GLOBAL; continue; }
    if (word_is(ms, n, "shared") || word_is(ms, n, "shared::cta")) { ins->space = SP_SHARED; continue; }
    if (word_is(ms, n, "local")) { ins->space = SP_LOCAL; continue; }
    if (word_is(ms, n, "const")) { ins->space = SP_CONST; continue; }
    if (word_is(ms, n, "param")) { ins->space = SP_PARAM_KERNEL; continue; }
    if (op == OP_SETP || op == OP_SET || op == OP_SLCT) {
      if ((k = lookup_in(ms, n, cmp_names, 18)) && !ins->cmp) { ins->cmp = (uint8_t)k; continue; }
      if (word_is(ms, n, "and")) { ins->boolop = BOOL_AND; continue; }
      if (word_is(ms, n, "or")) { ins->boolop = BOOL_OR; continue; }
      if (word_is(ms, n, "xor")) { ins->boolop = BOOL_XOR; continue; }
    }
    if (op == OP_ATOM || op == OP_RED || op == OP_REDUX) {
      if ((k = lookup_in(ms, n, aop_names, 10))) { ins->cmp = (uint8_t)k; continue; }
    }
    if (op == OP_SHFL) {
      static const char *const modes[] = {"up", "down", "bfly", "idx"};
      if ((k = lookup_in(ms, n, modes, 4))) { ins->cmp = (uint8_t)k; continue; }
    }
    if (op == OP_VOTE) {
      static const char *const modes[] = {"all", "any", "uni", "ballot"};
      if ((k = lookup_in(ms, n, modes, 4))) { ins->cmp = (uint8_t)k; continue; }
    }
    if (op == OP_MATCH) {
      if (word_is(ms, n, "any")) { ins->cmp = 1; continue; }
      if (word_is(ms, n, "all")) { ins->cmp = 2; continue; }
    }
    if (op == OP_TESTP && (k = lookup_in(ms, n, testp_names, 6))) { ins->cmp = (uint8_t)k; continue; }
    if (op == OP_SHF) {
      if (word_is(ms, n, "l")) { ins->mods |= M_SHIFT_LEFT; continue; }
      if (word_is(ms, n, "r")) continue;
      if (word_is(ms, n, "clamp")) { ins->mods |= M_SHIFT_CLAMP; continue; }
      if (word_is(ms, n, "wrap")) continue;
    }
    if (op == OP_BFIND && word_is(ms, n, "shiftamt")) { ins->mods |= M_SHAMT; continue; }
    if (op == OP_BAR) {
      if (word_is(ms, n, "sync")) { ins->mods |= M_SYNC; continue; }
      if (word_is(ms, n, "warp")) { ins->op = op = OP_BARWARP; continue; }
      if (word_is(ms, n, "red")) { ins->mods |= M_RED; continue; }
      if (word_is(ms, n, "popc")) { ins->cmp = BRED_POPC; continue; }
      if (word_is(ms, n, "and")) { ins->cmp = BRED_AND; continue; }
      if (word_is(ms, n, "or")) { ins->cmp = BRED_OR; continue; }
    }
    if ((k = lookup_in(ms, n, rnd_names, 8))) { ins->rnd = (uint8_t)k; continue; }
    if (word_is(ms, n, "hi")) { ins->mods |= M_HI; continue; }
    if (word_is(ms, n, "lo")) { ins->mods |= M_LO; continue; }
    if (word_is(ms, n, "wide")) { ins->mods |= M_WIDE; continue; }
    if (word_is(ms, n, "ftz")) { ins->mods |= M_FTZ; continue; }
    if (word_is(ms, n, "sat") || word_is(ms, n, "satfinite")) { ins->mods |= M_SAT; continue; }
    if (word_is(ms, n, "approx")) { ins->mods |= M_APPROX; continue; }
    if (word_is(ms, n, "full")) { ins->mods |= M_FULL; continue; }
    if (word_is(ms, n, "to")) { ins->mods |= M_TO; continue; }
    if (word_is(ms, n, "uni")) { ins->mods |= M_UNI; continue; }
    if (word_is(ms, n, "sync")) { ins->mods |= M_SYNC; continue; }
    if (word_is(ms, n, "NaN")) { ins->mods |= M_NAN; continue; }
    if (word_is(ms, n, "cc") && (op == OP_ADD || op == OP_SUB || op == OP_MAD || op == OP_ADDC ||
                                 op == OP_SUBC || op == OP_MADC)) {
      ins->mods |= M_CC;
      continue;
    }
    if (word_is(ms, n, "v2")) { ins->vec = 2; continue; }
    if (word_is(ms, n, "v4")) { ins->vec = 4; continue; }
    if (lookup_in(ms, n, ignored, (int)(sizeof ignored / sizeof ignored[0]))) continue;
    /* cache eviction hints: L1::evict_last, L2::128B, ... */
    if (n > 4 && (memcmp(ms, "L1::", 4) == 0 || memcmp(ms, "L2::", 4) == 0)) continue;
  bad:
    fail(p, false, t->line, "unsupported instruction '%.*s' (modifier .%.*s)", t->len, t->s, (int)n, ms);
    return false;
  }
  return true;
}

/* An operand. `first` of setp/shfl may be "d|p": the second register goes to o[4]. */
static bool operand(parser *p, ptx_ins *ins, ptx_operand *o, bool in_entry) {
  tok *t = peek(p);
  o->reg = -1;
  if (accept(p, '[')) {
    o->kind = OK_ADDR;
    o->space = SP_GENERIC;
    tok *b = next(p);
    if (b->type == T_ID && b->s[0] == '%') {
      o->reg = find_reg(p, b);
      if (o->reg < 0) {
        fail(p, true, b->line, "unknown register '%.*s'", b->len, b->s);
        return false;
      }
      if (ins->space == SP_PARAM_KERNEL) o->space = in_entry ? SP_PARAM_KERNEL : SP_PARAM_LOCAL;
    } else if (b->type == T_ID) {
      int space;
      uint64_t v;
      if (!find_symbol(p, b, &space, &v)) {
        fail(p, true, b->line, "unknown symbol '%.*s'", b->len, b->s);
        return false;
      }
      if (space == SP_SHARED && v == (uint64_t)-1) {
        o->space = SP_SHARED;
        o->reg = -2; /* dynamic shared base, resolved at the end */
        v = 0;
      }
      o->space = (uint8_t)space;
      o->imm = v;
    } else if (b->type == T_NUM) {
      bool fp;
      if (!parse_number(b, &o->imm, &fp) || fp) goto bad;
    } else {
      goto bad;
    }
    if (accept(p, '+')) {
      bool neg = accept(p, '-');
      uint64_t off;
      bool fp;
      tok *n = next(p);
      if (n->type != T_NUM || !parse_number(n, &off, &fp) || fp) goto bad;
      o->imm += neg ? (uint64_t)0 - off : off;
    } else if (accept(p, '-')) {
      uint64_t off;
      bool fp;
      tok *n = next(p);
      if (n->type != T_NUM || !parse_number(n, &off, &fp) || fp) goto bad;
      o->imm -= off;
    }
    return expect(p, ']');
  }
  if (accept(p, '{')) {
    o->kind = OK_VEC;
    int n = 0;
    do {
      tok *r = next(p);
      if (n == 4) goto bad;
      if (is_word(r, "_")) {
        o->vregs[n++] = -1;
        continue;
      }
      int reg = find_reg(p, r);
      if (reg < 0) {
        fail(p, true, r->line, "unknown register '%.*s'", r->len, r->s);
        return false;
      }
      o->vregs[n++] = reg;
    } while (accept(p, ','));
    o->nvec = (uint8_t)n;
    return expect(p, '}');
  }
  if (accept(p, '!')) {
    o->neg = 1;
    t = peek(p);
  }
  bool neg = false;
  if (is_punct(t, '-')) {
    next(p);
    neg = true;
    t = peek(p);
  }
  next(p);
  if (t->type == T_NUM) {
    bool fp;
    o->kind = OK_IMM;
    if (!parse_number(t, &o->imm, &fp)) goto bad;
    o->fp_literal = fp;
    if (t->len > 2 && t->s[0] == '0' && (t->s[1] == 'f' || t->s[1] == 'F')) o->fp_literal = 2;
    if (t->len > 2 && t->s[0] == '0' && (t->s[1] == 'd' || t->s[1] == 'D')) o->fp_literal = 3;
    if (neg) {
      if (o->fp_literal == 1 || o->fp_literal == 3) o->imm ^= 1ull << 63;
      else if (o->fp_literal == 2) o->imm ^= 1ull << 31;
      else o->imm = (uint64_t)0 - o->imm;
    }
    return true;
  }
  if (neg) goto bad;
  if (t->type != T_ID) goto bad;
  if (is_word(t, "_")) {
    o->kind = OK_SINK;
    return true;
  }
  if (is_word(t, "WARP_SZ")) { /* PTX's predefined constant */
    o->kind = OK_IMM;
    o->imm = PTX_WARP;
    return true;
  }
  if (t->s[0] == '%') {
    for (size_t i = 0; i < sizeof sregs / sizeof sregs[0]; i++) {
      if (is_word(t, sregs[i].name)) {
        o->kind = OK_SREG;
        o->imm = (uint64_t)sregs[i].id;
        return true;
      }
    }
    o->reg = find_reg(p, t);
    if (o->reg < 0) {
      fail(p, false, t->line, "unknown or unsupported register '%.*s'", t->len, t->s);
      return false;
    }
    o->kind = OK_REG;
    return true;
  }
  /* registers may have plain names too ({ .reg .pred p; ... } in inline asm) */
  if ((o->reg = find_reg(p, t)) >= 0) {
    o->kind = OK_REG;
    return true;
  }
  if (ins->op == OP_BRA) {
    o->kind = OK_NONE;
    if (p->nfixes == p->capfixes) {
      int c = p->capfixes ? p->capfixes * 2 : 32;
      struct fix *f = realloc(p->fixes, sizeof *f * (size_t)c);
      if (!f) return false;
      p->fixes = f;
      p->capfixes = c;
    }
    p->fixes[p->nfixes++] = (struct fix){p->m->ncode, dup_tok(t), t->line};
    return true;
  }
  int space;
  uint64_t v;
  if (!find_symbol(p, t, &space, &v)) {
    fail(p, true, t->line, "unknown symbol '%.*s'", t->len, t->s);
    return false;
  }
  o->kind = OK_IMM;
  o->imm = v;
  if (space == SP_SHARED && v == (uint64_t)-1) {
    o->kind = OK_ADDR; /* the dynamic shared base as a value: resolved at the end */
    o->reg = -2;
    o->imm = 0;
    o->space = SP_SHARED;
  }
  return true;
bad:
  fail(p, true, t->line, "bad operand near '%.*s'", t->len, t->s);
  return false;
}

static ptx_ins *new_ins(parser *p) {
  if (!grow((void **)&p->m->code, &p->cap_code, p->m->ncode, sizeof(ptx_ins))) return NULL;
  ptx_ins *ins = &p->m->code[p->m->ncode];
  memset(ins, 0, sizeof *ins);
  ins->guard = -1;
  return ins;
}

static int param_list(parser *p, int32_t *offs, int32_t *sizes, int max);

/* call[.uni] (ret), name, (args); */
static bool call_operands(parser *p, ptx_ins *ins) {
  int line = peek(p)->line;
  ins->call_ret_off = -1;
  if (accept(p, '(')) {
    tok *r = next(p);
    map_entry *e = map_find(&p->locals, r->s, (size_t)r->len);
    if (!e || !expect(p, ')') || !expect(p, ',')) {
      fail(p, true, line, "bad call return operand");
      return false;
    }
    ins->call_ret_off = (int32_t)e->value;
    ins->call_ret_size = (int32_t)e->extra;
  }
  tok *f = next(p);
  if (f->type != T_ID || f->s[0] == '%') {
    fail(p, false, line, "indirect calls are not supported");
    return false;
  }
  map_entry *fe = map_find(&p->funcnames, f->s, (size_t)f->len);
  if (!fe) {
    fail(p, true, line, "call to undeclared function '%.*s'", f->len, f->s);
    return false;
  }
  ins->target = (uint32_t)fe->value;
  int n = 0;
  int32_t offs[64], sizes[64];
  if (accept(p, ',')) {
    if (!expect(p, '(')) return false;
    if (!accept(p, ')')) {
      do {
        tok *a = next(p);
        map_entry *e = map_find(&p->locals, a->s, (size_t)a->len);
        if (!e || n == 64) {
          fail(p, false, line, "unsupported call argument '%.*s'", a->len, a->s);
          return false;
        }
        offs[n] = (int32_t)e->value;
        sizes[n] = (int32_t)e->extra;
        n++;
      } while (accept(p, ','));
      if (!expect(p, ')')) return false;
    }
  }
  if (accept(p, ',')) {
    fail(p, false, line, "calls through a prototype are not supported");
    return false;
  }
  ins->call_nargs = n;
  if (n) {
    ins->call_arg_off = malloc(sizeof(int32_t) * (size_t)n);
    ins->call_arg_size = malloc(sizeof(int32_t) * (size_t)n);
    if (!ins->call_arg_off || !ins->call_arg_size) return false;
    memcpy(ins->call_arg_off, offs, sizeof(int32_t) * (size_t)n);
    memcpy(ins->call_arg_size, sizes, sizeof(int32_t) * (size_t)n);
  }
  return expect(p, ';');
}

static bool instruction(parser *p, bool in_entry) {
  ptx_ins *ins = new_ins(p);
  if (!ins) return false;
  tok *t = peek(p);
  ins->line = t->line;
  if (accept(p, '@')) {
    if (accept(p, '!')) ins->guard_neg = 1;
    tok *g = next(p);
    ins->guard = find_reg(p, g);
    if (ins->guard < 0) {
      fail(p, true, g->line, "unknown guard predicate '%.*s'", g->len, g->s);
      return false;
    }
  }
  tok *opt = next(p);
  if (opt->type != T_ID) {
    fail(p, true, opt->line, "expected an instruction near '%.*s'", opt->len, opt->s);
    return false;
  }
  if (!decode(p, opt, ins)) return false;
  if (ins->op == OP_CALL) {
    if (!call_operands(p, ins)) return false;
    p->m->ncode++;
    return true;
  }
  int n = 0;
  if (!is_punct(peek(p), ';')) {
    do {
      if (n == 5) {
        fail(p, false, opt->line, "too many operands for '%.*s'", opt->len, opt->s);
        return false;
      }
      if (!operand(p, ins, &ins->o[n], in_entry)) return false;
      n++;
      if (n == 1 && accept(p, '|')) {
        if (!operand(p, ins, &ins->o[5], in_entry)) return false;
      }
    } while (accept(p, ','));
  }
  ins->nops = (uint8_t)n;
  /* A shift amount is a .u32 whatever the shifted type (PTX ISA, shl/shr):
   * NVIDIA's JIT refuses any other register ("Arguments mismatch"), so the
   * fake must too rather than run a kernel no GPU would load. */
  if ((ins->op == OP_SHL || ins->op == OP_SHR) && n == 3 && ins->o[2].kind == OK_REG &&
      p->reg_bytes[ins->o[2].reg] != 4) {
    fail(p, true, opt->line, "arguments mismatch for '%.*s': the shift amount must be a 32-bit register",
         opt->len, opt->s);
    return false;
  }
  if (!expect(p, ';')) return false;
  p->m->ncode++;
  return true;
}

/* ---- functions --------------------------------------------------------------------- */

/* (.param .type name, ...): kernel params (offs NULL: into the function's
 * param table) or function params (slots in the local window). */
static int param_list(parser *p, int32_t *offs, int32_t *sizes, int max) {
  int n = 0;
  if (!expect(p, '(')) return -1;
  if (accept(p, ')')) return 0;
  do {
    tok *t = next(p);
    if (!is_word(t, ".param") && !is_word(t, ".reg")) {
      fail(p, true, t->line, "expected .param near '%.*s'", t->len, t->s);
      return -1;
    }
    if (is_word(t, ".reg")) {
      fail(p, false, t->line, ".reg parameters are not supported");
      return -1;
    }
    if (n == max) {
      fail(p, false, t->line, "too many parameters");
      return -1;
    }
    if (!local_decl(p, SP_PARAM_LOCAL, &offs[n], &sizes[n])) return -1;
    n++;
  } while (accept(p, ','));
  if (!expect(p, ')')) return -1;
  return n;
}

static bool kernel_params(parser *p, ptx_func *f) {
  if (!expect(p, '(')) return false;
  if (accept(p, ')')) return true;
  size_t cap = 0;
  size_t off = 0;
  do {
    tok *t = next(p);
    if (!is_word(t, ".param")) {
      fail(p, true, t->line, "expected .param near '%.*s'", t->len, t->s);
      return false;
    }
    decl d;
    if (!parse_decl_head(p, &d)) return false;
    size_t size = d.count * d.type.bytes;
    off = align_up(off, d.align);
    if (!grow((void **)&f->params, &cap, (size_t)f->nparams, sizeof *f->params)) {
      free(d.name);
      return false;
    }
    f->params[f->nparams++] = (ptx_param){off, size};
    map_entry *e = map_put(&p->locals, d.name, strlen(d.name));
    free(d.name);
    if (!e) return false;
    e->kind = SP_PARAM_KERNEL;
    e->value = (int64_t)off;
    e->extra = (int64_t)size;
    off += size;
  } while (accept(p, ','));
  f->params_size = off;
  return expect(p, ')');
}

static int add_func(parser *p, const char *name) {
  map_entry *e = map_find(&p->funcnames, name, strlen(name));
  if (e) return (int)e->value;
  if (!grow((void **)&p->m->funcs, &p->cap_funcs, (size_t)p->m->nfuncs, sizeof(ptx_func))) return -1;
  ptx_func *f = &p->m->funcs[p->m->nfuncs];
  memset(f, 0, sizeof *f);
  f->name = strdup(name);
  f->ret_off = -1;
  e = map_put(&p->funcnames, name, strlen(name));
  if (!e || !f->name) return -1;
  e->value = p->m->nfuncs;
  return p->m->nfuncs++;
}

static bool skip_to(parser *p, char c) {
  while (peek(p)->type != T_EOF && !is_punct(peek(p), c)) next(p);
  return accept(p, c);
}

/* .loc file line column: its numbers (tokens carry no newlines). */
static void skip_loc(parser *p) {
  while (peek(p)->type == T_NUM || is_punct(peek(p), ',')) next(p);
}

static bool body(parser *p, bool in_entry) {
  int depth = 1;
  while (depth > 0 && !p->failed) {
    tok *t = peek(p);
    if (t->type == T_EOF) {
      fail(p, true, t->line, "unterminated function body");
      return false;
    }
    if (accept(p, '{')) {
      depth++;
      continue;
    }
    if (accept(p, '}')) {
      depth--;
      continue;
    }
    if (is_word(t, ".reg")) {
      next(p);
      if (!reg_decl(p)) return false;
      continue;
    }
    if (is_word(t, ".local") || is_word(t, ".param")) {
      next(p);
      if (!local_decl(p, is_word(t, ".local") ? SP_LOCAL : SP_PARAM_LOCAL, NULL, NULL)) return false;
      if (accept(p, '=')) {
        fail(p, false, t->line, "initialized function-scope variables are not supported");
        return false;
      }
      if (!expect(p, ';')) return false;
      continue;
    }
    if (is_word(t, ".shared")) {
      next(p);
      if (!module_var(p, SP_SHARED, false)) return false;
      continue;
    }
    if (is_word(t, ".pragma")) {
      if (!skip_to(p, ';')) return false;
      continue;
    }
    if (is_word(t, ".loc")) {
      next(p);
      skip_loc(p);
      continue;
    }
    if (t->type == T_ID && t->s[0] == '.') {
      fail(p, false, t->line, "unsupported directive '%.*s' in a function", t->len, t->s);
      return false;
    }
    /* a label */
    if (t->type == T_ID && is_punct(&p->t[p->pos + 1], ':')) {
      map_entry *e = map_put(&p->labels, t->s, (size_t)t->len);
      if (!e) return false;
      e->value = p->m->ncode;
      p->pos += 2;
      continue;
    }
    if (!instruction(p, in_entry)) return false;
  }
  return !p->failed;
}


static bool function(parser *p, bool entry) {
  tok *t = peek(p);
  int32_t ret_off = -1, ret_size = 0;
  int32_t roffs[1], rsizes[1];
  map_clear(&p->regs);
  map_clear(&p->locals);
  map_clear(&p->labels);
  if (!entry && is_punct(peek(p), '(')) {
    int n = param_list(p, roffs, rsizes, 1);
    if (n < 0) return false;
    if (n == 1) {
      ret_off = roffs[0];
      ret_size = rsizes[0];
    }
  }
  tok *name = next(p);
  if (name->type != T_ID) {
    fail(p, true, t->line, "expected a function name");
    return false;
  }
  char *fname = dup_tok(name);
  int fi = fname ? add_func(p, fname) : -1;
  free(fname);
  if (fi < 0) return false;
  p->cur = fi;
  ptx_func *f = &p->m->funcs[fi];
  f->entry = entry;
  if (entry) {
    f->nparams = 0;
    if (!kernel_params(p, f)) return false;
  } else if (is_punct(peek(p), '(')) {
    int32_t offs[64], sizes[64];
    int n = param_list(p, offs, sizes, 64);
    if (n < 0) return false;
    f = &p->m->funcs[fi];
    /* A declaration after the definition (linked PTX inputs: a library
     * defines what a later input declares .extern) keeps the definition's
     * layout, which its body reads its parameters and return value at. */
    if (f->end > f->start) goto directives;
    free(f->arg_off);
    free(f->arg_size);
    f->nargs = n;
    f->arg_off = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    f->arg_size = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (!f->arg_off || !f->arg_size) return false;
    memcpy(f->arg_off, offs, sizeof(int32_t) * (size_t)n);
    memcpy(f->arg_size, sizes, sizeof(int32_t) * (size_t)n);
    f->ret_off = ret_off;
    f->ret_size = ret_size;
  }
  /* performance directives: .maxntid 256, 1, 1 / .reqntid / .minnctapersm / .noreturn */
directives:
  while (peek(p)->type == T_ID && peek(p)->s[0] == '.') {
    next(p);
    while (peek(p)->type == T_NUM || is_punct(peek(p), ',')) next(p);
  }
  if (accept(p, ';')) return true; /* a declaration */
  if (!expect(p, '{')) return false;
  f = &p->m->funcs[fi];
  if (f->end > f->start) {
    fail(p, true, name->line, "function %s defined twice", f->name);
    return false;
  }
  f->start = p->m->ncode;
  p->nfixes = 0;
  if (!body(p, entry)) return false;
  /* falling off the end returns */
  ptx_ins *r = new_ins(p);
  if (!r) return false;
  r->op = OP_RET;
  r->line = peek(p)->line;
  p->m->ncode++;
  f = &p->m->funcs[fi];
  f->end = p->m->ncode;
  for (int i = 0; i < p->nfixes; i++) {
    map_entry *e = map_find(&p->labels, p->fixes[i].name, strlen(p->fixes[i].name));
    if (!e) {
      fail(p, true, p->fixes[i].line, "unknown label '%s'", p->fixes[i].name);
      return false;
    }
    p->m->code[p->fixes[i].pc].target = (uint32_t)e->value;
  }
  for (int i = 0; i < p->nfixes; i++) free(p->fixes[i].name);
  p->nfixes = 0;
  return true;
}

static bool module(parser *p) {
  while (!p->failed) {
    tok *t = peek(p);
    if (t->type == T_EOF) return true;
    bool is_extern = false;
    while (is_word(t, ".visible") || is_word(t, ".extern") || is_word(t, ".weak") ||
           is_word(t, ".common")) {
      if (is_word(t, ".extern")) is_extern = true;
      next(p);
      t = peek(p);
    }
    if (is_word(t, ".version") || is_word(t, ".address_size")) {
      next(p);
      tok *v = next(p);
      if (v->type != T_NUM) {
        fail(p, true, v->line, "bad %.*s", t->len, t->s);
        return false;
      }
      if (is_word(t, ".address_size") && !(v->len == 2 && memcmp(v->s, "64", 2) == 0)) {
        fail(p, false, v->line, "only .address_size 64 is supported");
        return false;
      }
      continue;
    }
    if (is_word(t, ".target")) {
      next(p);
      do {
        next(p);
      } while (accept(p, ','));
      continue;
    }
    if (is_word(t, ".file")) {
      next(p);
      while (peek(p)->type == T_NUM || peek(p)->type == T_STR || is_punct(peek(p), ',')) next(p);
      continue;
    }
    if (is_word(t, ".loc")) {
      next(p);
      skip_loc(p);
      continue;
    }
    if (is_word(t, ".pragma")) {
      if (!skip_to(p, ';')) return false;
      continue;
    }
    if (is_word(t, ".section")) {
      /* debug sections: skipped whole */
      next(p);
      next(p);
      if (!expect(p, '{')) return false;
      int depth = 1;
      while (depth && peek(p)->type != T_EOF) {
        tok *x = next(p);
        depth += is_punct(x, '{') - is_punct(x, '}');
      }
      continue;
    }
    if (is_word(t, ".global") || is_word(t, ".const") || is_word(t, ".shared")) {
      int space = is_word(t, ".global") ? SP_GLOBAL : is_word(t, ".const") ? SP_CONST : SP_SHARED;
      next(p);
      if (!module_var(p, space, is_extern)) return false;
      continue;
    }
    if (is_word(t, ".entry") || is_word(t, ".func")) {
      bool entry = is_word(t, ".entry");
      next(p);
      if (!function(p, entry)) return false;
      continue;
    }
    fail(p, false, t->line, "unsupported directive '%.*s'", t->len, t->s);
    return false;
  }
  return false;
}

/* Checks after parsing: operand shapes of each instruction, float literals
 * in the instruction's type, dynamic shared offsets, no recursion, every
 * called function defined. */
static bool finish(parser *p) {
  ptx_module *m = p->m;
  size_t dyn = align_up(m->shared_size, m->shared_align > 16 ? m->shared_align : 16);
  for (uint32_t i = 0; i < m->ncode; i++) {
    ptx_ins *ins = &m->code[i];
    for (int k = 0; k < 6; k++) {
      ptx_operand *o = &ins->o[k];
      if (o->kind == OK_ADDR && o->reg == -2) {
        /* the extern (dynamic) shared array starts after the static ones */
        o->reg = -1;
        o->imm += dyn;
        if (ins->op != OP_LD && ins->op != OP_ST && ins->op != OP_ATOM && ins->op != OP_RED)
          o->kind = OK_IMM; /* mov %r, dyn_smem: its address as a value */
      }
      /* the float type an immediate is read as */
      ptx_type ft = ins->op == OP_CVT || ins->op == OP_SET || ins->op == OP_SLCT ? ins->t2 : ins->t;
      if (o->kind == OK_IMM && o->fp_literal && ft.kind == TK_F) {
        double d;
        if (o->fp_literal == 2) {
          uint32_t b = (uint32_t)o->imm;
          float f;
          memcpy(&f, &b, 4);
          d = f;
        } else {
          memcpy(&d, &o->imm, 8);
        }
        if (ft.bytes == 2) {
          _Float16 h = (_Float16)d;
          uint16_t b;
          memcpy(&b, &h, 2);
          o->imm = b;
        } else if (ft.bytes == 4) {
          float f = (float)d;
          uint32_t b;
          memcpy(&b, &f, 4);
          o->imm = b;
        } else {
          memcpy(&o->imm, &d, 8);
        }
      }
    }
    if (ins->t.kind == TK_F && ins->t.bytes == 1) {
      fail(p, false, ins->line, "8-bit floats are not supported");
      return false;
    }
    /* halves: conversions, arithmetic and comparisons (exec.c); not the
     * atomics and warp reductions on them */
    if (ins->t.kind == TK_F && ins->t.bytes == 2 &&
        (ins->op == OP_ATOM || ins->op == OP_RED || ins->op == OP_REDUX || ins->op == OP_TESTP ||
         ins->op == OP_COPYSIGN || (ins->mods & M_FTZ))) {
      fail(p, false, ins->line, "this half-precision instruction is not supported");
      return false;
    }
    if (ins->op == OP_BAR && (ins->mods & M_RED)) {
      /* bar.red.popc.u32 d, a, {!}c / bar.red.{and,or}.pred p, a, {!}c */
      if (ins->nops != 3 || !ins->cmp || ins->o[0].kind != OK_REG) {
        fail(p, false, ins->line, "bar.red with a thread count is not supported");
        return false;
      }
    } else if (ins->op == OP_BAR) {
      if (ins->nops > 1) {
        fail(p, false, ins->line, "bar.sync with a thread count is not supported");
        return false;
      }
      if (!(ins->mods & M_SYNC) && ins->nops) {
        fail(p, false, ins->line, "bar.arrive is not supported");
        return false;
      }
    }
    if (ins->op == OP_SHFL || ins->op == OP_VOTE || ins->op == OP_MATCH || ins->op == OP_REDUX ||
        ins->op == OP_BARWARP)
      ins->warp_sync = 1;
    if (ins->op == OP_VOTE && !(ins->mods & M_SYNC)) {
      fail(p, false, ins->line, "vote without .sync is not supported (sm_70+ code uses vote.sync)");
      return false;
    }
    if (ins->op == OP_SHFL && !(ins->mods & M_SYNC)) {
      fail(p, false, ins->line, "shfl without .sync is not supported (sm_70+ code uses shfl.sync)");
      return false;
    }
    if ((ins->op == OP_LD || ins->op == OP_ST) && ins->vec > 1) {
      ptx_operand *v = &ins->o[ins->op == OP_LD ? 0 : 1];
      if (v->kind != OK_VEC || v->nvec != ins->vec) {
        fail(p, true, ins->line, "vector operand does not match .v%d", ins->vec);
        return false;
      }
    }
    if (ins->op == OP_CALL && ins->target < (uint32_t)m->nfuncs && m->funcs[ins->target].end == 0) {
      /* what CUDA's device runtime provides: printf and assert */
      const char *name = m->funcs[ins->target].name;
      if (strcmp(name, "vprintf") == 0 && ins->call_nargs == 2) ins->cmp = CALL_VPRINTF;
      if (strcmp(name, "__assertfail") == 0) ins->cmp = CALL_ASSERTFAIL;
    }
    if (ins->op == OP_CALL && ins->cmp == CALL_PTX) {
      if (ins->target >= (uint32_t)m->nfuncs || m->funcs[ins->target].end == 0) {
        fail(p, false, ins->line, "call to function '%s' without a body",
             ins->target < (uint32_t)m->nfuncs ? m->funcs[ins->target].name : "?");
        return false;
      }
    }
    if (ins->op == OP_ATOM || ins->op == OP_RED) {
      if (!ins->cmp) {
        fail(p, false, ins->line, "atomic without an operation");
        return false;
      }
      if (ins->t.kind == TK_F && (ins->cmp != AOP_ADD && ins->cmp != AOP_EXCH && ins->cmp != AOP_MIN &&
                                  ins->cmp != AOP_MAX)) {
        fail(p, false, ins->line, "unsupported float atomic");
        return false;
      }
      if (ins->vec > 1) {
        fail(p, false, ins->line, "vector atomics are not supported");
        return false;
      }
    }
    if (ins->op == OP_PRMT && ins->cmp) {
      fail(p, false, ins->line, "prmt modes are not supported");
      return false;
    }
  }
  /* recursion: a call graph walk from each function */
  int nf = m->nfuncs;
  int *state = calloc((size_t)nf + 1, sizeof *state);
  int *stack = malloc(sizeof(int) * ((size_t)nf + 1) * 2);
  if (!state || !stack) {
    free(state);
    free(stack);
    return false;
  }
  for (int root = 0; root < nf && !p->failed; root++) {
    /* depth-first: state 0 new, 1 on stack, 2 done */
    if (state[root]) continue;
    int sp = 0;
    stack[sp++] = root;
    stack[sp++] = -1;
    state[root] = 1;
    while (sp) {
      int f = stack[sp - 2];
      int it = stack[sp - 1];
      ptx_func *fn = &m->funcs[f];
      bool pushed = false;
      for (uint32_t i = (uint32_t)(it < 0 ? (int)fn->start : it); i < fn->end; i++) {
        if (m->code[i].op != OP_CALL) continue;
        int g = (int)m->code[i].target;
        if (state[g] == 1) {
          fail(p, false, m->code[i].line, "recursive call to '%s' is not supported", m->funcs[g].name);
          break;
        }
        if (state[g] == 0) {
          stack[sp - 1] = (int)i + 1;
          stack[sp++] = g;
          stack[sp++] = -1;
          state[g] = 1;
          pushed = true;
          break;
        }
      }
      if (p->failed) break;
      if (!pushed) {
        state[f] = 2;
        sp -= 2;
      }
    }
  }
  free(state);
  free(stack);
  if (p->failed) return false;
  int nk = 0;
  for (int i = 0; i < nf; i++) nk += m->funcs[i].entry;
  m->kernels = malloc(sizeof(int) * (size_t)(nk ? nk : 1));
  if (!m->kernels) return false;
  for (int i = 0; i < nf; i++) {
    if (!m->funcs[i].entry) continue;
    if (m->funcs[i].end == 0) {
      fail(p, true, 0, "kernel %s has no body", m->funcs[i].name);
      return false;
    }
    m->funcs[i].static_shared = m->shared_size;
    m->funcs[i].local_size = m->local_size;
    m->kernels[m->nkernels++] = i;
  }
  m->shared_size = dyn;
  return true;
}

ptx_module *ptx_module_load(const char *text, char *err, size_t errlen, bool *invalid) {
  parser p;
  memset(&p, 0, sizeof p);
  p.err = err;
  p.errlen = errlen;
  if (errlen) err[0] = 0;
  p.m = calloc(1, sizeof *p.m);
  bool ok = p.m && lex(&p, text) && module(&p) && finish(&p);
  if (!ok && !p.failed) fail(&p, false, 0, "out of memory");
  map_clear(&p.globals);
  map_clear(&p.funcnames);
  map_clear(&p.regs);
  map_clear(&p.locals);
  map_clear(&p.labels);
  for (int i = 0; i < p.nfixes; i++) free(p.fixes[i].name);
  free(p.fixes);
  free(p.reg_bytes);
  free(p.t);
  *invalid = p.invalid;
  if (!ok) {
    ptx_module_free(p.m);
    return NULL;
  }
  return p.m;
}

void ptx_module_free(ptx_module *m) {
  if (!m) return;
  for (uint32_t i = 0; i < m->ncode; i++) {
    free(m->code[i].call_arg_off);
    free(m->code[i].call_arg_size);
  }
  free(m->code);
  for (int i = 0; i < m->nfuncs; i++) {
    free(m->funcs[i].name);
    free(m->funcs[i].params);
    free(m->funcs[i].arg_off);
    free(m->funcs[i].arg_size);
  }
  free(m->funcs);
  for (int i = 0; i < m->nglobals; i++) {
    free((void *)m->globals[i].name);
    free(m->storage[i]);
  }
  free(m->globals);
  free(m->storage);
  free(m->kernels);
  free(m);
}

int ptx_kernel_count(const ptx_module *m) { return m->nkernels; }
const char *ptx_kernel_name(const ptx_module *m, int k) { return m->funcs[m->kernels[k]].name; }
int ptx_kernel_nparams(const ptx_module *m, int k) { return m->funcs[m->kernels[k]].nparams; }
const ptx_param *ptx_kernel_params(const ptx_module *m, int k) { return m->funcs[m->kernels[k]].params; }
size_t ptx_kernel_params_size(const ptx_module *m, int k) { return m->funcs[m->kernels[k]].params_size; }
size_t ptx_kernel_static_shared(const ptx_module *m, int k) { return m->funcs[m->kernels[k]].static_shared; }
size_t ptx_kernel_local_size(const ptx_module *m, int k) { return m->funcs[m->kernels[k]].local_size; }
int ptx_kernel_nregs(const ptx_module *m, int k) { return m->funcs[m->kernels[k]].nregs; }
int ptx_global_count(const ptx_module *m) { return m->nglobals; }
const ptx_global *ptx_globals(const ptx_module *m) { return m->globals; }
