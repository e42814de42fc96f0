/* Internal interface between the memory files of the fake driver: the
 * allocation registry and device address ranges (memory.c), copies and
 * memsets (memcpy.c), virtual memory management (vmm.c) and pointer
 * attributes (pointer.c). Other areas use only what fake.h declares. */
#ifndef CEDANA_FAKE_CUDA_MEMORY_H
#define CEDANA_FAKE_CUDA_MEMORY_H

#include "fake.h"

#include <sys/types.h>

/* Bits of fk_alloc.flags above the CU_MEMHOSTALLOC_* / CU_MEMHOSTREGISTER_*
 * flags the allocation was made with. */
#define FK_ALLOC_READONLY 0x10000u   /* device writes are refused */
#define FK_ALLOC_ASYNC 0x20000u      /* cuMemAllocAsync: cuMemFree does not synchronize */
#define FK_ALLOC_SYNC_MEMOPS 0x40000u /* CU_POINTER_ATTRIBUTE_SYNC_MEMOPS was set */
#define FK_ALLOC_POOL 0x80000u        /* from a memory pool (mempool.c) */
#define FK_ALLOC_MANAGED 0x100000u    /* cuMemAllocManaged (managed.c) */

/* The entry checks of every memory call: no driver call is permitted from a
 * host function or stream callback. */
static inline CUresult fk_mem_need_ctx(fk_ctx **ctx) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  return fk_need_ctx(ctx);
}

static inline CUresult fk_mem_need_init(void) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  return fk_need_init();
}

/* The host page size, known after fk_mem_init. */
FK_HIDDEN size_t fk_page_size(void);

/* A copy of the allocation holding p, taken under the registry lock so the
 * caller never reads an entry that is being recycled. *covered tells whether
 * [p, p+n) lies in it (or in a run of adjacent VMM mappings that starts with
 * it: VMM ranges are contiguous device memory even when made of several
 * mappings); *writable whether every allocation of that run accepts device
 * writes. Returns false when p is in no allocation. */
FK_HIDDEN bool fk_mem_query(uintptr_t p, size_t n, fk_alloc *out, bool *covered, bool *writable);
/* Register an allocation with every field given; the buffer id is new when
 * id is 0. Fails with CUDA_ERROR_OUT_OF_MEMORY when the table cannot grow and
 * CUDA_ERROR_INVALID_VALUE when the range overlaps a registered one. */
FK_HIDDEN CUresult fk_mem_add(uintptr_t base, size_t size, fk_mem_kind kind, fk_ctx *ctx,
                              fk_device *dev, unsigned flags, unsigned long long id);
/* Remove the allocation starting exactly at base if its kind is in
 * kind_mask (bit 1 << kind), copying it to *out. One caller wins a race to
 * free the same pointer; the others get false. */
FK_HIDDEN bool fk_mem_take(uintptr_t base, unsigned kind_mask, fk_alloc *out);
/* Whether any registered allocation overlaps [base, base+size). */
FK_HIDDEN bool fk_mem_overlaps(uintptr_t base, size_t size);
/* Set and clear flag bits of the allocation holding p; false if none. */
FK_HIDDEN bool fk_mem_update_flags(uintptr_t p, unsigned set, unsigned clear);
FK_HIDDEN unsigned long long fk_mem_new_id(void);

/* The device whose reserved address range holds p, or NULL. */
FK_HIDDEN fk_device *fk_mem_device_of(uintptr_t p);
/* Take [size] bytes of a device's address range aligned to align; at exactly
 * `fixed` when it is non-zero (CUDA_ERROR_OUT_OF_MEMORY if that is taken).
 * The range stays PROT_NONE: the caller maps it. */
FK_HIDDEN CUresult fk_va_take(fk_device *dev, size_t size, size_t align, uintptr_t fixed,
                              uintptr_t *out);
/* Give a range back; the caller has made it PROT_NONE again. */
FK_HIDDEN void fk_va_give(fk_device *dev, uintptr_t base, size_t size);
/* Put [base, base+size) back to the reserved, inaccessible state, dropping
 * its pages: a later access faults, a later mapping starts zeroed. */
FK_HIDDEN void fk_va_protect_none(uintptr_t base, size_t size);
/* Count physical device memory; CUDA_ERROR_OUT_OF_MEMORY past total_mem. */
FK_HIDDEN CUresult fk_mem_charge(fk_device *dev, size_t n);
FK_HIDDEN void fk_mem_uncharge(fk_device *dev, size_t n);

/* Device memory as cuMemAlloc makes it (flags: FK_ALLOC_*), and its release
 * (the allocation already taken out of the registry). */
FK_HIDDEN CUresult fk_dev_alloc(fk_ctx *ctx, size_t size, unsigned flags, CUdeviceptr *out);
FK_HIDDEN void fk_dev_release(const fk_alloc *a);

/* mempool.c: a pool allocation (FK_ALLOC_POOL), taken out of the registry,
 * goes back to its pool; `s` is the stream that freed it (NULL: a plain
 * cuMemFree). The pool that allocation `base` came from, or NULL. */
FK_HIDDEN void fk_pool_block_freed(const fk_alloc *a, fk_stream *s);
FK_HIDDEN CUmemoryPool fk_pool_of(uintptr_t base);

/* What vmm.c knows about an address, for pointer attributes. */
typedef struct fk_vmm_info {
  uintptr_t resv_base; /* the reservation holding the address */
  size_t resv_size;
  bool mapped;
  uintptr_t map_base; /* the mapping holding it, when mapped */
  size_t map_size;
  fk_device *dev; /* where the physical memory lives */
  unsigned long long handle_types; /* CUmemAllocationHandleType bits requested */
  unsigned long long block_id;     /* unique per physical allocation */
  unsigned access[FK_MAX_DEVICES]; /* CUmemAccess_flags per device */
} fk_vmm_info;

/* Describe the reservation (and mapping) holding p; false if p is in no
 * reservation. */
FK_HIDDEN bool fk_vmm_describe(uintptr_t p, fk_vmm_info *out);

/* VMM physical memory in a process checkpoint (memory.c drives them): copy
 * every allocation's bytes out (CUDA_ERROR_NOT_SUPPORTED for memory shared
 * with another process), close the files, re-create and map them again at
 * every mapping, and free the copies. */
FK_HIDDEN CUresult fk_vmm_save(void);
FK_HIDDEN void fk_vmm_release(void);
FK_HIDDEN CUresult fk_vmm_restore(void);
FK_HIDDEN void fk_vmm_discard(void);
/* Custom storage: the bytes of device `ordinal`'s VMM allocations, copied
 * between their host copies and fd from `off` on (out: to the file), and
 * host copies made for the allocations that have none. */
FK_HIDDEN size_t fk_vmm_saved_bytes(int ordinal);
FK_HIDDEN bool fk_vmm_saved_io(int ordinal, int fd, off_t off, bool out);
FK_HIDDEN CUresult fk_vmm_saved_alloc(void);

#endif
