/* Open-addressing hash map from a 64-bit key (a minted handle) to a pointer.
 *
 * The dispatcher looks up a handle or two for every request, so lookups must
 * be O(1) and allocation-free; inserts and removes happen on create/destroy
 * paths only. Keys are arbitrary (the job chooses them); values are never
 * NULL. Linear probing with tombstones; the table grows at half load and is
 * rebuilt when tombstones pile up.
 */
#ifndef CGC_HMAP_H
#define CGC_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct cgc_hmap_entry {
  uint64_t key;
  void *val; /* NULL: empty; CGC_HMAP_TOMB: removed */
} cgc_hmap_entry;

typedef struct cgc_hmap {
  cgc_hmap_entry *e;
  size_t cap; /* power of two, or 0 before the first insert */
  size_t len; /* live entries */
  size_t tombs;
} cgc_hmap;

#define CGC_HMAP_TOMB ((void *)(uintptr_t)1)

static inline uint64_t cgc_hmap_hash(uint64_t k) {
  /* splitmix64 finaliser: minted handles are often sequential or
   * pointer-like, so mix every bit into the low ones. */
  k ^= k >> 30;
  k *= 0xbf58476d1ce4e5b9ull;
  k ^= k >> 27;
  k *= 0x94d049bb133111ebull;
  k ^= k >> 31;
  return k;
}

static inline void *cgc_hmap_get(const cgc_hmap *m, uint64_t key) {
  if (!m->cap) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = cgc_hmap_hash(key) & mask;; i = (i + 1) & mask) {
    const cgc_hmap_entry *e = &m->e[i];
    if (!e->val) return NULL;
    if (e->val != CGC_HMAP_TOMB && e->key == key) return e->val;
  }
}

/* 0 on success, -EEXIST if the key is present, -ENOMEM. */
int cgc_hmap_put(cgc_hmap *m, uint64_t key, void *val);
/* Removes and returns the value, or NULL if absent. */
void *cgc_hmap_del(cgc_hmap *m, uint64_t key);
void cgc_hmap_free(cgc_hmap *m);

static inline int cgc_hmap_live(const cgc_hmap_entry *e) { return e->val && e->val != CGC_HMAP_TOMB; }

/* Each live entry of table m, as v of type T: CGC_HMAP_EACH(&c->streams,
 * cgc_stream *, s) { ... }. Deleting v's entry is allowed (cgc_hmap_del
 * leaves the others in place); `break` would only end the inner loop, so a
 * body leaves with return or not at all. */
#define CGC_HMAP_EACH(m, T, v)             \
  for (size_t i_ = 0; i_ < (m)->cap; i_++) \
    for (T v = cgc_hmap_live(&(m)->e[i_]) ? (T)(m)->e[i_].val : NULL; v; v = NULL)

#endif
