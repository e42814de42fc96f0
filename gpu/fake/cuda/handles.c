/* Registry of live handles, so forged or stale handles get an error code
 * instead of being dereferenced. Open addressing keyed by pointer value. */
#include "fake.h"

#include <stdlib.h>

typedef struct {
  const void *key;
  fk_kind kind; /* 0: empty, -1: deleted */
} fk_slot;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static fk_slot *slots;
static size_t cap, used; /* used counts live and deleted slots */

#define DELETED ((fk_kind)-1)

static size_t hash_ptr(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (size_t)x;
}

static void grow(void) {
  size_t old_cap = cap;
  fk_slot *old = slots;
  cap = cap ? cap * 2 : 1024;
  slots = calloc(cap, sizeof *slots);
  if (!slots) abort();
  used = 0;
  for (size_t i = 0; i < old_cap; i++) {
    if (old[i].kind == 0 || old[i].kind == DELETED) continue;
    size_t j = hash_ptr(old[i].key) & (cap - 1);
    while (slots[j].kind) j = (j + 1) & (cap - 1);
    slots[j] = old[i];
    used++;
  }
  free(old);
}

void fk_handle_add(void *h, fk_kind kind) {
  pthread_mutex_lock(&lock);
  if ((used + 1) * 2 > cap) grow();
  size_t j = hash_ptr(h) & (cap - 1);
  while (slots[j].kind && slots[j].kind != DELETED && slots[j].key != h) j = (j + 1) & (cap - 1);
  if (slots[j].kind == 0) used++;
  slots[j].key = h;
  slots[j].kind = kind;
  pthread_mutex_unlock(&lock);
}

static fk_slot *find(const void *h) {
  if (!cap) return NULL;
  size_t j = hash_ptr(h) & (cap - 1);
  while (slots[j].kind) {
    if (slots[j].kind != DELETED && slots[j].key == h) return &slots[j];
    j = (j + 1) & (cap - 1);
  }
  return NULL;
}

void fk_handle_remove(void *h) {
  pthread_mutex_lock(&lock);
  fk_slot *s = find(h);
  if (s) s->kind = DELETED;
  pthread_mutex_unlock(&lock);
}

bool fk_handle_valid(const void *h, fk_kind kind) {
  if (!h) return false;
  pthread_mutex_lock(&lock);
  fk_slot *s = find(h);
  bool ok = s && s->kind == kind;
  pthread_mutex_unlock(&lock);
  return ok;
}

void **fk_handle_list(fk_kind kind, size_t *n) {
  *n = 0;
  pthread_mutex_lock(&lock);
  size_t count = 0;
  for (size_t i = 0; i < cap; i++)
    if (slots[i].kind == kind) count++;
  void **out = count ? malloc(count * sizeof *out) : NULL;
  if (out)
    for (size_t i = 0; i < cap; i++)
      if (slots[i].kind == kind) out[(*n)++] = (void *)slots[i].key;
  pthread_mutex_unlock(&lock);
  return out;
}
