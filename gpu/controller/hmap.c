/* Open-addressing hash map: see cgc_hmap.h. */
#include "cgc_hmap.h"

#include <errno.h>
#include <stdlib.h>

static int rehash(cgc_hmap *m, size_t cap) {
  cgc_hmap_entry *e = calloc(cap, sizeof *e);
  if (!e) return -ENOMEM;
  size_t mask = cap - 1;
  for (size_t i = 0; i < m->cap; i++) {
    if (!cgc_hmap_live(&m->e[i])) continue;
    size_t j = cgc_hmap_hash(m->e[i].key) & mask;
    while (e[j].val) j = (j + 1) & mask;
    e[j] = m->e[i];
  }
  free(m->e);
  m->e = e;
  m->cap = cap;
  m->tombs = 0;
  return 0;
}

int cgc_hmap_put(cgc_hmap *m, uint64_t key, void *val) {
  if (cgc_hmap_get(m, key)) return -EEXIST;
  /* Keep (live + tombstones) under half the capacity so probes stay short
   * and every probe sequence meets an empty slot. */
  if ((m->len + m->tombs + 1) * 2 > m->cap) {
    size_t cap = m->cap ? m->cap : 16;
    while ((m->len + 1) * 2 > cap) cap *= 2;
    if ((m->len + 1) * 4 > cap) cap *= 2; /* room to grow after the rebuild */
    int rc = rehash(m, cap);
    if (rc) return rc;
  }
  size_t mask = m->cap - 1;
  size_t i = cgc_hmap_hash(key) & mask;
  while (cgc_hmap_live(&m->e[i])) i = (i + 1) & mask;
  if (m->e[i].val == CGC_HMAP_TOMB) m->tombs--;
  m->e[i].key = key;
  m->e[i].val = val;
  m->len++;
  return 0;
}

void *cgc_hmap_del(cgc_hmap *m, uint64_t key) {
  if (!m->cap) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = cgc_hmap_hash(key) & mask;; i = (i + 1) & mask) {
    cgc_hmap_entry *e = &m->e[i];
    if (!e->val) return NULL;
    if (e->val != CGC_HMAP_TOMB && e->key == key) {
      void *v = e->val;
      /* A slot followed by an empty one can become empty again: no probe
       * sequence runs through it. */
      if (!m->e[(i + 1) & mask].val) {
        e->val = NULL;
      } else {
        e->val = CGC_HMAP_TOMB;
        m->tombs++;
      }
      m->len--;
      return v;
    }
  }
}

void cgc_hmap_free(cgc_hmap *m) {
  free(m->e);
  m->e = NULL;
  m->cap = m->len = m->tombs = 0;
}
