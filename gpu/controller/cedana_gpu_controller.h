/* The controller's native dispatcher: serves one job's request ring against
 * the CUDA driver loaded in this process (the system's libcuda.so.1 or the
 * fake one), and keeps the tables checkpoint/restore needs.
 *
 * The Python controller (cedana_gpu/controller/) loads this library with
 * ctypes after loading the driver, and keeps control: attach, freeze, dump,
 * restore, bookkeeping. Functions return 0 on success and a negative errno or
 * a positive CUresult on failure; cgc_last_error() then holds one line saying
 * what went wrong.
 *
 * Environment, read at cgc_open/cgc_start:
 *   CEDANA_GPU_LOG=1          log rejected and failed requests to stderr
 *   CEDANA_GPU_SPIN_US=N      how long the idle dispatcher polls the ring
 *                             before sleeping on the doorbell (default 50
 *                             with 4 or more CPUs, else 0)
 *   CEDANA_GPU_SPIN_YIELD=0   poll with pause instructions only (default:
 *                             sched_yield, which leaves the CPU to the job
 *                             and the driver's threads on small machines)
 */
#ifndef CEDANA_GPU_CONTROLLER_H
#define CEDANA_GPU_CONTROLLER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cgc cgc_t;

typedef struct cgc_config {
  const char *job_id;     /* segment is <shm_dir>/<segment_name>, by default
                           * /dev/shm/cedana-gpu.<job_id> */
  uint32_t ring_slots;    /* 0: CGS_DEFAULT_RING_SLOTS */
  uint32_t nchannels;     /* 0: CGS_DEFAULT_CHANNELS */
  uint64_t staging_size;  /* 0: CGS_DEFAULT_STAGING */
  uint64_t va_base;       /* 0: let the driver choose; else this exact base (restore) */
  uint64_t va_size;       /* 0: twice the device's memory */
  uint64_t generation;    /* written to the header (1 for a new job, +1 per restore) */
  uint32_t timeout_ms;    /* how long the job trusts a silent controller (0: 5000) */
  uint32_t uid, gid;      /* owner of the segment and pinned files (the job's user) */
  /* Added for per-job /dev/shm directories and restore: */
  const char *shm_dir;      /* directory of the segment and pinned files (NULL: /dev/shm) */
  const char *segment_name; /* the segment's file name (NULL: cedana-gpu.<job_id>); pinned
                             * files are <segment_name>.pin.<id> in the same directory */
  /* Added for the warm controller pool: */
  uint32_t va_reserved;     /* 1: va_base/va_size are a range cgc_reserve took in this
                             * process; cgc_open takes it over (range and primary context
                             * reference) instead of reserving one, and owns it afterwards
                             * whether it succeeds or fails */
} cgc_config;

/* Create the segment (mode 0600, owned by uid/gid), initialise the driver,
 * describe the devices in the header, reserve the device address range.
 * State stays STARTING until cgc_start. */
int cgc_open(const cgc_config *cfg, cgc_t **out);
/* A standby controller's head start, before it knows its job: load the driver,
 * cuInit, retain device 0's primary context (creating it is most of a start-up
 * on NVIDIA's driver) and reserve the range cgc_open would (twice device 0's
 * memory, at the allocation granularity). Hand *va_base and *va_size to cgc_open
 * with va_reserved = 1, or give them back with cgc_release_reserved. On
 * failure nothing is held and cgc_last_error(NULL) says why. */
int cgc_reserve(uint64_t *va_base, uint64_t *va_size);
void cgc_release_reserved(uint64_t va_base, uint64_t va_size);
/* Start serving; state RUNNING. */
int cgc_start(cgc_t *c);
/* Park the job's threads at the call boundary, drain the ring, synchronise
 * every stream; state FROZEN. Fails (and unfreezes) after timeout_ms. */
int cgc_freeze(cgc_t *c, uint32_t timeout_ms);
int cgc_unfreeze(cgc_t *c);
/* Stop serving: state DEAD (waiting calls in the job fail at once), threads
 * joined. The segment stays until cgc_close. */
int cgc_stop(cgc_t *c);
/* Release GPU state, unmap and unlink the segment and pinned files. */
void cgc_close(cgc_t *c);

/* JSON object with counters and table sizes: state, generation, requests,
 * errors, allocations, bytes, modules, functions, streams, events, pins
 * (also: job_id, segment, geometry, va_base/va_size, launches, invalid,
 * async_errors, contexts, globals, pending, workers, chunks and chunk_bytes
 * (device memory mapped), handed_off, and "ops": requests per op name). -ENOSPC if `len`
 * is too small (64 KiB is plenty). */
int cgc_info_json(cgc_t *c, char *buf, size_t len);
/* 1 once the job handed itself to the driver engine (ENGINE_HANDOFF): it
 * runs on a driver of its own in its process, and this dispatcher serves it
 * nothing more. Also "handed_off" in cgc_info_json. */
int cgc_handed_off(cgc_t *c);
/* The absolute path of the driver (libcuda.so.1) this dispatcher calls, for
 * a job to load in a hand-off; -ENOENT if it cannot be told. */
int cgc_driver_path(cgc_t *c, char *buf, size_t len);
/* cgc_last_error(NULL): why the calling thread's last cgc_open failed. */
const char *cgc_last_error(cgc_t *c);

/* Checks one request as the dispatcher would before acting on it, without a
 * driver or a segment: 0 if well-formed, else a CUresult; `why` says what is
 * wrong. Used by the fuzz tests. */
int cgc_validate_request(const void *buf, size_t len, uint32_t nchannels, uint64_t staging_size,
                         char *why, size_t why_len);

/* ---- checkpoint and restore (checkpoint.c, restore.c, checksum.c) ---------
 *
 * A dump, with the job frozen: cgc_regions, then cgc_read_device of every
 * region (from several threads at once if wanted), cgc_export_state. A
 * restore, on a controller opened with the checkpoint's geometry, va_base and
 * segment name (and generation + 1), before cgc_start: the pinned files
 * re-created with their contents, cgc_import_state, then cgc_write_device of
 * every region. */

/* CRC32C (Castagnoli; SSE4.2 where the CPU has it) of `len` bytes, zero-
 * extended; `seed` is a previous result (0 to start): crc(A || B) ==
 * cgc_checksum(B, |B|, cgc_checksum(A, |A|, 0)). CRC32C("123456789") is
 * 0xe3069283. Needs no driver and no controller. */
uint64_t cgc_checksum(const void *buf, size_t len, uint64_t seed);
/* 1 if cgc_checksum uses the CPU's crc32 instruction. */
int cgc_checksum_hardware(void);

/* The device memory to save: every mapped chunk holding allocations, as
 * (address, size) pairs sorted by address. -ENOSPC with *count set if more
 * than max_pairs. */
int cgc_regions(cgc_t *c, uint64_t *addr_size_pairs, size_t max_pairs, size_t *count);
/* Synchronous copies between device memory (inside one region) and memory of
 * this process; safe from several threads at once. *checksum: on entry the
 * seed (0, or the checksum of the bytes before these), on return the CRC32C
 * of the bytes copied, chained likewise; NULL: not wanted. */
int cgc_read_device(cgc_t *c, uint64_t addr, void *dst, uint64_t size, uint64_t *checksum);
int cgc_write_device(cgc_t *c, uint64_t addr, const void *src, uint64_t size);
int cgc_write_device_checksum(cgc_t *c, uint64_t addr, const void *src, uint64_t size, uint64_t *checksum);
/* With the job frozen (or the controller stopped): write dir/state.json (the
 * handle tables: contexts, chunks, allocations, modules, functions, module
 * globals, streams, events, pins, pending module images, the sticky error),
 * dir/modules/<n>.img (module images as loaded), dir/globals.bin (the known
 * module globals' bytes) and dir/blobs/<channel>.bin. No device memory. */
int cgc_export_state(cgc_t *c, const char *dir);
/* On a controller opened for the restore, before cgc_start: check the
 * checkpoint fits (format, geometry, address range, devices, memory), map
 * every chunk at its address, re-create contexts, modules (checksums
 * verified), functions, globals (contents put back), streams, events, pins,
 * and bind each minted handle to its new driver object. On failure,
 * cgc_last_error says what; what was built is released by cgc_close. */
int cgc_import_state(cgc_t *c, const char *dir);

#ifdef __cplusplus
}
#endif
#endif
