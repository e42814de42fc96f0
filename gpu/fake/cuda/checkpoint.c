/* NVIDIA's process checkpoint API (cuCheckpointProcess*), served by the fake
 * driver of the target process to a caller in another process that knows
 * only the target's pid.
 *
 * The channel. Every process that initialises the fake driver gets a small
 * memfd named "cedana-fake-cuda-ckpt", mapped MAP_SHARED, and a service
 * thread named "cuda-ckpt" that waits on a futex in it. A caller finds the
 * memfd among the links of /proc/<pid>/fd, opens /proc/<pid>/fd/N (the same
 * file), maps it, takes an flock on it (one caller at a time), writes a
 * request, bumps the request futex and waits on the answer futex. Why this
 * and nothing else:
 *   - it needs only the pid, in the caller's PID namespace, however deep the
 *     target's own namespace is (nothing in the channel names a pid: the
 *     service's tid is translated through /proc/<pid>/task/N/status);
 *   - it survives CRIU: a memfd is dumped with its contents and restored
 *     (unshared, which is all it needs), the service thread is restored
 *     inside its futex wait, and a caller after the restore finds the new
 *     memfd the same way. Sockets, pipes and eventfds do not survive
 *     (DESIGN.md): a restored process would wait on a private copy.
 *   - futexes on a shared file mapping are keyed by the file, not the
 *     address, so a wake from the caller's mapping reaches the target.
 * A caller waits with short timeouts and checks that the target still lives,
 * so a target that dies mid-request is an error, not a hang. Everything the
 * service reads from the channel is copied first and checked: a caller may
 * write anything there.
 *
 * The states, as NVIDIA documents them: RUNNING -lock-> LOCKED -checkpoint->
 * CHECKPOINTED -restore-> LOCKED -unlock-> RUNNING. A call in the wrong state
 * is CUDA_ERROR_ILLEGAL_STATE with nothing changed; a lock that times out is
 * CUDA_ERROR_NOT_READY and leaves the process RUNNING; a restore that fails
 * leaves it CHECKPOINTED, restorable again with better arguments.
 *   - Lock closes the entry gate (gate.c): new API calls in the target wait
 *     there, and the lock waits for the calls in flight and the work queued.
 *   - Checkpoint drains every stream, copies all device memory (all devices,
 *     VMM mappings included) to host memory of the target and unmaps the
 *     device ranges (memory.c, vmm.c).
 *   - Restore maps the ranges again at the same addresses and copies back.
 *     The GPUs: the caller's own fake driver is "the machine" now; it sends
 *     its device table (UUID, name, memory) with the request, which is why
 *     a restore needs cuInit in the caller (CUDA_ERROR_NOT_INITIALIZED
 *     otherwise, as documented). Without gpuPairs each GPU of the target is
 *     restored onto the caller's GPU of the same ordinal, as NVIDIA's driver
 *     restores by device order (a restore onto another node's GPUs then
 *     takes their UUIDs). With gpuPairs every GPU of the target must be
 *     listed by its UUID, each onto a GPU of the caller's table, no two onto
 *     one. Either way the new GPU must have the same name (the chip) and at
 *     least as much memory as the process held on the old one. Refusals:
 *     CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_OUT_OF_MEMORY for the memory.
 *     After a remap the target's device queries answer the new GPU.
 * Custom storage (CUDA 13.4+ headers: customStorageInfo_out in the checkpoint
 * and restore arguments, cuCheckpointOperationComplete): the caller copies
 * the device memory itself. The target lays each device's memory end to end
 * in a memfd of its own (memory.c) and answers the files' numbers; the caller
 * maps them (/proc/<pid>/fd/N) into its own device ranges, on the GPU with
 * the same UUID (a checkpoint) or the restore's target GPU, as device memory
 * of that GPU's primary context (which it must retain:
 * CUDA_ERROR_INVALID_CONTEXT otherwise), with a stream of that context each.
 * The target is CHECKPOINTING or RESTORING until the caller completes the
 * operation: then it drops the files (the bytes are the caller's), or maps
 * the memory back from them. A process cannot do this to itself
 * (CUDA_ERROR_NOT_SUPPORTED), and a restore without custom storage after a
 * checkpoint to it has nothing to restore from (CUDA_ERROR_INVALID_VALUE).
 *
 * Error codes for the pid, as measured on NVIDIA's drivers (580, 595): a pid
 * that does not exist is CUDA_ERROR_OPERATING_SYSTEM, a process without
 * CUDA (here: without the channel) or a zombie CUDA_ERROR_NOT_INITIALIZED.
 */
#include "fk_memory.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Custom storage's states came with the CUDA 13.4 headers; the service
 * names them whatever headers it is built with. */
#if CUDA_VERSION < 13040
#define CU_PROCESS_STATE_CHECKPOINTING ((CUprocessState)4)
#define CU_PROCESS_STATE_RESTORING ((CUprocessState)5)
#endif

/* The driver's own API, called here as this process's driver. */
FK_HIDDEN CUresult fake_cuDevicePrimaryCtxGetState_7000(CUdevice_v1 dev, unsigned int *flags,
                                                        int *active);
FK_HIDDEN CUresult fake_cuDevicePrimaryCtxRetain_7000(CUcontext *pctx, CUdevice_v1 dev);
FK_HIDDEN CUresult fake_cuDevicePrimaryCtxRelease_11000(CUdevice_v1 dev);
FK_HIDDEN CUresult fake_cuCtxPushCurrent_4000(CUcontext ctx);
FK_HIDDEN CUresult fake_cuCtxPopCurrent_4000(CUcontext *pctx);
FK_HIDDEN CUresult fake_cuStreamCreateWithPriority_5050(CUstream *phStream, unsigned int flags,
                                                        int priority);
FK_HIDDEN CUresult fake_cuStreamSynchronize_2000(CUstream hStream);
FK_HIDDEN CUresult fake_cuStreamDestroy_4000(CUstream hStream);

#define CK_MEMFD_NAME "cedana-fake-cuda-ckpt"
#define CK_THREAD_NAME "cuda-ckpt"
#define CK_MAGIC 0x544b4346u /* "FCKT" */
#define CK_VERSION 1u
#define CK_MAX_PAIRS 64

enum {
  CK_OP_STATE = 1,
  CK_OP_LOCK,
  CK_OP_CHECKPOINT,
  CK_OP_RESTORE,
  CK_OP_UNLOCK,
  CK_OP_COMPLETE, /* custom storage: the caller has copied (cuCheckpointOperationComplete) */
  CK_OP_ABORT,    /* custom storage: the caller could not map the files; undo */
};

typedef struct ck_dev {
  CUuuid uuid;
  char name[256];
  uint64_t total_mem;
  int32_t primary_active; /* the caller retains this device's primary context */
  uint32_t pad;
} ck_dev;

/* The request a caller writes, copied by the service before use. */
typedef struct ck_request {
  uint32_t op;
  uint32_t timeout_ms;
  uint32_t npairs;
  int32_t ndevs;   /* the caller's device table; -1: the caller has not called cuInit */
  uint32_t custom; /* checkpoint or restore through custom storage */
  uint32_t pad;
  CUcheckpointGpuPair pairs[CK_MAX_PAIRS];
  ck_dev devs[FK_MAX_DEVICES];
} ck_request;

/* Custom storage: one device's file, for the caller to map. */
typedef struct ck_piece {
  int32_t fd;   /* in the target: the caller opens /proc/<pid>/fd/<fd> */
  int32_t onto; /* the caller's device it is mapped onto */
  uint64_t size;
} ck_piece;

typedef struct ck_channel {
  uint32_t magic; /* CK_MAGIC once the service runs */
  uint32_t version;
  int32_t server_tid; /* the service thread, in the target's own PID namespace */
  uint32_t req_seq;   /* futex: a caller bumps it to post a request */
  uint32_t done_seq;  /* futex: the service sets it to req_seq with the answer */
  int32_t rc;         /* answer */
  uint32_t state;     /* answer: the state after the request */
  uint32_t npieces;   /* answer of a custom checkpoint or restore */
  ck_piece pieces[FK_MAX_DEVICES];
  ck_request req;
} ck_channel;

#define CK_SIZE ((sizeof(ck_channel) + 4095) / 4096 * 4096)

static long futex(uint32_t *word, int op, uint32_t val, long timeout_ms) {
  struct timespec ts = {.tv_sec = timeout_ms / 1000, .tv_nsec = (timeout_ms % 1000) * 1000000L};
  return syscall(SYS_futex, word, op, val, timeout_ms >= 0 ? &ts : NULL, NULL, 0);
}

/* ======================= the target: service thread ======================= */

static ck_channel *chan; /* this process's channel, NULL without one */
static int chan_fd = -1;
/* The process's checkpoint state; written only by the service thread. */
static CUprocessState ck_state = CU_PROCESS_STATE_RUNNING;
/* Custom storage in progress (CHECKPOINTING, RESTORING): the files handed
 * out, and the restore request to finish with. Service thread only. */
static int ck_files[FK_MAX_DEVICES] = {-1, -1, -1, -1, -1, -1, -1, -1};
static ck_request *ck_pending;

/* Every stream of every context idle: work queued before the lock finishes
 * before its memory goes, as the driver waits for submitted work. */
static void drain_all(void) {
  size_t n = 0;
  void **ctxs = fk_handle_list(FK_CTX, &n);
  for (size_t i = 0; i < n; i++) {
    fk_ctx *c = ctxs[i];
    if (c->active && !c->destroyed) fk_ctx_synchronize(c);
  }
  free(ctxs);
}

static bool all_idle(void) {
  size_t n = 0;
  void **ctxs = fk_handle_list(FK_CTX, &n);
  bool idle = true;
  for (size_t i = 0; i < n && idle; i++) {
    fk_ctx *c = ctxs[i];
    if (c->active && !c->destroyed) idle = fk_ctx_idle(c);
  }
  free(ctxs);
  return idle;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The lock: no new calls, none in flight, and the GPU work already queued
 * done, all within timeout_ms (0: no limit). NVIDIA's lock waits for a
 * running kernel as for a call in flight (measured: a 1 s lock during a 7 s
 * kernel gives up with CUDA_ERROR_NOT_READY, the process running on). With
 * the work done before the lock returns, a checkpoint has nothing to wait
 * for, even with the process's other threads stopped, as CRIU's CUDA plugin
 * leaves them (stream workers are threads here). */
static CUresult lock_op(unsigned timeout_ms) {
  long long deadline = now_ms() + timeout_ms;
  CUresult rc = fk_gate_close(timeout_ms);
  if (rc) return rc;
  while (!all_idle()) {
    if (timeout_ms && now_ms() >= deadline) {
      fk_gate_open();
      return CUDA_ERROR_NOT_READY;
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  return CUDA_SUCCESS;
}

static bool same_uuid(const CUuuid *a, const CUuuid *b) {
  return memcmp(a->bytes, b->bytes, sizeof a->bytes) == 0;
}

/* Which of the caller's GPUs each of ours is restored onto (target[i]), or
 * the refusal. */
static CUresult plan_restore(const ck_request *r, int target[FK_MAX_DEVICES]) {
  if (r->ndevs < 0) return CUDA_ERROR_NOT_INITIALIZED;
  int ndevs = r->ndevs > FK_MAX_DEVICES ? FK_MAX_DEVICES : r->ndevs;
  int n = fk_cfg.device_count;
  if (r->npairs == 0) {
    for (int i = 0; i < n; i++) target[i] = i < ndevs ? i : -1;
  } else {
    for (int i = 0; i < n; i++) target[i] = -1;
    for (uint32_t k = 0; k < r->npairs; k++) {
      int old = -1, new = -1;
      for (int i = 0; i < n; i++)
        if (same_uuid(&r->pairs[k].oldUuid, &fk_cfg.devices[i].uuid)) old = i;
      for (int j = 0; j < ndevs; j++)
        if (same_uuid(&r->pairs[k].newUuid, &r->devs[j].uuid)) new = j;
      /* Not one of ours, listed twice, or onto a GPU the machine lacks. */
      if (old < 0 || target[old] >= 0 || new < 0) return CUDA_ERROR_INVALID_VALUE;
      target[old] = new;
    }
  }
  for (int i = 0; i < n; i++) {
    if (target[i] < 0) return CUDA_ERROR_INVALID_VALUE; /* a checkpointed GPU left out */
    for (int k = 0; k < i; k++)
      if (target[k] == target[i]) return CUDA_ERROR_INVALID_VALUE; /* two onto one */
  }
  for (int i = 0; i < n; i++) {
    const ck_dev *d = &r->devs[target[i]];
    if (strncmp(d->name, fk_cfg.devices[i].name, sizeof d->name) != 0)
      return CUDA_ERROR_INVALID_VALUE; /* another chip */
  }
  for (int i = 0; i < n; i++)
    if (fk_mem_checkpointed_bytes(i) > r->devs[target[i]].total_mem)
      return CUDA_ERROR_OUT_OF_MEMORY;
  return CUDA_SUCCESS;
}

static CUresult do_restore(const ck_request *r) {
  int target[FK_MAX_DEVICES];
  CUresult rc = plan_restore(r, target);
  if (rc) return rc;
  rc = fk_mem_restore();
  if (rc) return rc;
  /* The process's GPUs are the new ones now. No API call is in flight
   * (locked), and unlocking publishes this to the callers (gate.c). */
  for (int i = 0; i < fk_cfg.device_count; i++) {
    const ck_dev *d = &r->devs[target[i]];
    fk_device *dev = &fk_cfg.devices[i];
    dev->uuid = d->uuid;
    memcpy(dev->name, d->name, sizeof dev->name);
    dev->name[sizeof dev->name - 1] = 0;
    dev->total_mem = (size_t)d->total_mem;
  }
  return CUDA_SUCCESS;
}

static void close_files(void) {
  for (int d = 0; d < FK_MAX_DEVICES; d++) {
    if (ck_files[d] >= 0) close(ck_files[d]);
    ck_files[d] = -1;
  }
}

/* Custom storage: the caller's device each of ours with memory maps onto
 * must have its primary context retained there (CUDA_ERROR_INVALID_CONTEXT,
 * as documented). `held[d]`: device d has memory. */
static CUresult check_primaries(const ck_request *r, const int onto[FK_MAX_DEVICES],
                                const bool held[FK_MAX_DEVICES]) {
  if (r->ndevs < 0) return CUDA_ERROR_NOT_INITIALIZED;
  for (int d = 0; d < fk_cfg.device_count; d++)
    if (held[d] && (onto[d] < 0 || onto[d] >= r->ndevs || !r->devs[onto[d]].primary_active))
      return CUDA_ERROR_INVALID_CONTEXT;
  return CUDA_SUCCESS;
}

/* Custom checkpoint: each device onto the caller's GPU with the same UUID
 * (the same machine), else of the same ordinal. */
static void storage_plan(const ck_request *r, int onto[FK_MAX_DEVICES], bool held[FK_MAX_DEVICES]) {
  for (int d = 0; d < FK_MAX_DEVICES; d++) {
    onto[d] = -1;
    held[d] = d < fk_cfg.device_count && fk_cfg.devices[d].used_mem > 0;
    if (d >= fk_cfg.device_count) continue;
    for (int j = 0; j < r->ndevs && onto[d] < 0; j++)
      if (same_uuid(&r->devs[j].uuid, &fk_cfg.devices[d].uuid)) onto[d] = j;
    if (onto[d] < 0 && d < r->ndevs) onto[d] = d;
  }
}

static void answer_pieces(ck_channel *c, const int onto[FK_MAX_DEVICES],
                          const size_t sizes[FK_MAX_DEVICES]) {
  c->npieces = 0;
  for (int d = 0; d < fk_cfg.device_count; d++) {
    if (ck_files[d] < 0) continue;
    c->pieces[c->npieces++] = (ck_piece){.fd = ck_files[d], .onto = onto[d], .size = sizes[d]};
  }
}

static CUresult checkpoint_op(ck_channel *c, const ck_request *r) {
  if (ck_state != CU_PROCESS_STATE_LOCKED) return CUDA_ERROR_ILLEGAL_STATE;
  int onto[FK_MAX_DEVICES];
  bool held[FK_MAX_DEVICES];
  if (r->custom) {
    storage_plan(r, onto, held);
    CUresult rc = check_primaries(r, onto, held);
    if (rc) return rc;
  }
  drain_all();
  CUresult rc = fk_mem_checkpoint();
  if (rc) return rc;
  if (!r->custom) {
    ck_state = CU_PROCESS_STATE_CHECKPOINTED;
    return CUDA_SUCCESS;
  }
  size_t sizes[FK_MAX_DEVICES];
  rc = fk_mem_to_files(ck_files, sizes);
  if (rc) { /* back to where it was: the host copies are still there */
    if (fk_mem_restore() != CUDA_SUCCESS) ck_state = CU_PROCESS_STATE_FAILED;
    return rc;
  }
  answer_pieces(c, onto, sizes);
  ck_state = CU_PROCESS_STATE_CHECKPOINTING;
  return CUDA_SUCCESS;
}

static CUresult restore_op(ck_channel *c, const ck_request *r) {
  if (ck_state != CU_PROCESS_STATE_CHECKPOINTED) return CUDA_ERROR_ILLEGAL_STATE;
  if (!r->custom) {
    CUresult rc = do_restore(r);
    if (rc == CUDA_SUCCESS) ck_state = CU_PROCESS_STATE_LOCKED;
    return rc;
  }
  int target[FK_MAX_DEVICES];
  CUresult rc = plan_restore(r, target);
  if (rc) return rc;
  bool held[FK_MAX_DEVICES] = {false};
  for (int d = 0; d < fk_cfg.device_count; d++) held[d] = fk_mem_checkpointed_bytes(d) > 0;
  rc = check_primaries(r, target, held);
  if (rc) return rc;
  ck_request *keep = malloc(sizeof *keep);
  if (!keep) return CUDA_ERROR_OUT_OF_MEMORY;
  size_t sizes[FK_MAX_DEVICES];
  rc = fk_mem_files_for_restore(ck_files, sizes);
  if (rc) {
    free(keep);
    return rc;
  }
  memcpy(keep, r, sizeof *keep);
  ck_pending = keep;
  answer_pieces(c, target, sizes);
  ck_state = CU_PROCESS_STATE_RESTORING;
  return CUDA_SUCCESS;
}

/* The caller copied (complete) or could not map the files (abort). */
static CUresult finish_op(bool complete) {
  if (ck_state == CU_PROCESS_STATE_CHECKPOINTING) {
    CUresult rc = CUDA_SUCCESS;
    if (!complete) { /* the bytes are still in the files: take them back */
      rc = fk_mem_from_files(ck_files);
      if (rc == CUDA_SUCCESS) rc = fk_mem_restore();
    }
    close_files();
    ck_state = complete ? CU_PROCESS_STATE_CHECKPOINTED
               : rc     ? CU_PROCESS_STATE_FAILED
                        : CU_PROCESS_STATE_LOCKED;
    return rc;
  }
  if (ck_state == CU_PROCESS_STATE_RESTORING) {
    CUresult rc = complete ? fk_mem_from_files(ck_files) : CUDA_SUCCESS;
    close_files();
    if (complete && rc == CUDA_SUCCESS) rc = do_restore(ck_pending);
    free(ck_pending);
    ck_pending = NULL;
    /* A restore that failed leaves the process checkpointed, as always. */
    ck_state = complete && rc == CUDA_SUCCESS ? CU_PROCESS_STATE_LOCKED
                                              : CU_PROCESS_STATE_CHECKPOINTED;
    return rc;
  }
  return CUDA_ERROR_ILLEGAL_STATE;
}

static CUresult serve(ck_channel *c, const ck_request *r) {
  c->npieces = 0;
  switch (r->op) {
  case CK_OP_STATE:
    return CUDA_SUCCESS;
  case CK_OP_LOCK: {
    if (ck_state != CU_PROCESS_STATE_RUNNING) return CUDA_ERROR_ILLEGAL_STATE;
    CUresult rc = lock_op(r->timeout_ms);
    if (rc == CUDA_SUCCESS) ck_state = CU_PROCESS_STATE_LOCKED;
    return rc;
  }
  case CK_OP_CHECKPOINT:
    return checkpoint_op(c, r);
  case CK_OP_RESTORE:
    return restore_op(c, r);
  case CK_OP_COMPLETE:
  case CK_OP_ABORT:
    return finish_op(r->op == CK_OP_COMPLETE);
  case CK_OP_UNLOCK:
    if (ck_state != CU_PROCESS_STATE_LOCKED) return CUDA_ERROR_ILLEGAL_STATE;
    fk_gate_open();
    ck_state = CU_PROCESS_STATE_RUNNING;
    return CUDA_SUCCESS;
  default:
    return CUDA_ERROR_INVALID_VALUE;
  }
}

static void *service_main(void *arg) {
  ck_channel *c = arg;
  ck_request *req = malloc(sizeof *req);
  if (!req) {
    fk_log("checkpoint service: out of memory");
    return NULL;
  }
  __atomic_store_n(&c->server_tid, (int32_t)syscall(SYS_gettid), __ATOMIC_RELAXED);
  __atomic_store_n(&c->magic, CK_MAGIC, __ATOMIC_RELEASE);
  uint32_t done = __atomic_load_n(&c->done_seq, __ATOMIC_ACQUIRE);
  for (;;) {
    uint32_t seq = __atomic_load_n(&c->req_seq, __ATOMIC_ACQUIRE);
    if (seq == done) {
      /* Shared (not PRIVATE): the callers wake it through their own mappings.
       * The timeout is only a bound in case a wake is ever lost. */
      futex(&c->req_seq, FUTEX_WAIT, seq, 1000);
      continue;
    }
    memcpy(req, &c->req, sizeof *req);
    if (req->npairs > CK_MAX_PAIRS) req->npairs = CK_MAX_PAIRS;
    if (req->ndevs > FK_MAX_DEVICES) req->ndevs = FK_MAX_DEVICES;
    for (int i = 0; i < FK_MAX_DEVICES; i++) req->devs[i].name[sizeof req->devs[i].name - 1] = 0;
    CUresult rc = serve(c, req);
    c->rc = (int32_t)rc;
    c->state = (uint32_t)ck_state;
    done = seq;
    __atomic_store_n(&c->done_seq, seq, __ATOMIC_RELEASE);
    futex(&c->done_seq, FUTEX_WAKE, INT_MAX, -1);
  }
  return NULL;
}

/* A child of fork has the parent's channel mapped and open, but no service
 * thread: drop both, so that nobody reaches the parent through the child's
 * pid. */
static void after_fork_child(void) {
  if (chan) munmap(chan, CK_SIZE);
  if (chan_fd >= 0) close(chan_fd);
  chan = NULL;
  chan_fd = -1;
  close_files();
  ck_state = CU_PROCESS_STATE_RUNNING;
  fk_gate_reset_after_fork();
}

void fk_ckpt_start(void) {
  int fd = memfd_create(CK_MEMFD_NAME, MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, (off_t)CK_SIZE) != 0) {
    fk_log("no checkpoint service: memfd: %s", strerror(errno));
    if (fd >= 0) close(fd);
    return;
  }
  void *p = mmap(NULL, CK_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    fk_log("no checkpoint service: mmap: %s", strerror(errno));
    close(fd);
    return;
  }
  ck_channel *c = p;
  c->version = CK_VERSION;
  chan = c;
  chan_fd = fd;
  pthread_atfork(NULL, NULL, after_fork_child);
  /* The service never runs application code: every signal stays with the
   * application's threads. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t t;
  int err = pthread_create(&t, &attr, service_main, c);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err) {
    fk_log("no checkpoint service: thread: %s", strerror(err));
    return;
  }
  pthread_setname_np(t, CK_THREAD_NAME);
  /* cuInit returns with the service up: a caller right after it finds the
   * channel answering and the restore thread named. */
  for (int i = 0; i < 5000 && !__atomic_load_n(&c->magic, __ATOMIC_ACQUIRE); i++) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

/* ============================ the caller ================================== */

/* The state letter of /proc/<pid>/stat, or 0 when there is no such process. */
static char proc_state(int pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char *end = strrchr(buf, ')');
  return end && end[1] == ' ' ? end[2] : 0;
}

typedef struct ck_link {
  ck_channel *c;
  int fd;
} ck_link;

/* The target's channel: CUDA_ERROR_OPERATING_SYSTEM without such a process
 * (or without the right to look into it), CUDA_ERROR_NOT_INITIALIZED for a
 * process without the fake driver initialised, or a zombie. */
static CUresult ck_open(int pid, ck_link *out) {
  if (pid <= 0) return CUDA_ERROR_INVALID_VALUE;
  char st = proc_state(pid);
  if (!st) return CUDA_ERROR_OPERATING_SYSTEM;
  if (st == 'Z' || st == 'X') return CUDA_ERROR_NOT_INITIALIZED;
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/fd", pid);
  DIR *d = opendir(dir);
  if (!d) return CUDA_ERROR_OPERATING_SYSTEM; /* gone, or not ours to look into */
  CUresult rc = CUDA_ERROR_NOT_INITIALIZED;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[384], target[256];
    snprintf(path, sizeof path, "%s/%.256s", dir, e->d_name);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = 0;
    if (strncmp(target, "/memfd:" CK_MEMFD_NAME, strlen("/memfd:" CK_MEMFD_NAME)) != 0) continue;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      rc = CUDA_ERROR_OPERATING_SYSTEM;
      continue;
    }
    struct stat sb;
    void *p = MAP_FAILED;
    if (fstat(fd, &sb) == 0 && (size_t)sb.st_size >= CK_SIZE)
      p = mmap(NULL, CK_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_channel *c = p == MAP_FAILED ? NULL : p;
    if (c && __atomic_load_n(&c->magic, __ATOMIC_ACQUIRE) == CK_MAGIC &&
        c->version == CK_VERSION) {
      out->c = c;
      out->fd = fd;
      rc = CUDA_SUCCESS;
      break;
    }
    if (c) munmap(c, CK_SIZE);
    close(fd);
  }
  closedir(d);
  return rc;
}

static void ck_close(ck_link *l) {
  munmap(l->c, CK_SIZE);
  close(l->fd); /* drops the flock too */
}

/* Wait until the service has answered `seq`; CUDA_ERROR_OPERATING_SYSTEM if
 * the target goes away meanwhile. No limit otherwise: a lock without a
 * timeout, or a checkpoint of much memory, may take long, and NVIDIA's
 * driver waits as long. */
static CUresult ck_wait(int pid, ck_channel *c, uint32_t seq) {
  for (;;) {
    uint32_t done = __atomic_load_n(&c->done_seq, __ATOMIC_ACQUIRE);
    if (done == seq) return CUDA_SUCCESS;
    futex(&c->done_seq, FUTEX_WAIT, done, 100);
    if (__atomic_load_n(&c->done_seq, __ATOMIC_ACQUIRE) == seq) return CUDA_SUCCESS;
    char st = proc_state(pid);
    if (!st || st == 'Z' || st == 'X') return CUDA_ERROR_OPERATING_SYSTEM;
  }
}

/* One request to the target: `req` (op and arguments) in, the answer's code,
 * the state after it and the files of a custom storage operation out. */
static CUresult ck_call_pieces(int pid, const ck_request *req, CUprocessState *state,
                               ck_piece pieces[FK_MAX_DEVICES], uint32_t *npieces) {
  ck_link l;
  CUresult rc = ck_open(pid, &l);
  if (rc) return rc;
  ck_channel *c = l.c;
  flock(l.fd, LOCK_EX);
  /* A caller that went away before its answer leaves its request in
   * progress: let it finish first. */
  uint32_t seq = __atomic_load_n(&c->req_seq, __ATOMIC_ACQUIRE);
  rc = ck_wait(pid, c, seq);
  if (rc == CUDA_SUCCESS) {
    memcpy(&c->req, req, sizeof *req);
    seq++;
    __atomic_store_n(&c->req_seq, seq, __ATOMIC_RELEASE);
    futex(&c->req_seq, FUTEX_WAKE, INT_MAX, -1);
    rc = ck_wait(pid, c, seq);
  }
  if (rc == CUDA_SUCCESS) {
    rc = (CUresult)c->rc;
    if (state) *state = (CUprocessState)c->state;
    if (npieces) {
      uint32_t n = c->npieces;
      *npieces = n > FK_MAX_DEVICES ? FK_MAX_DEVICES : n;
      memcpy(pieces, c->pieces, *npieces * sizeof *pieces);
    }
  }
  ck_close(&l);
  return rc;
}

static CUresult ck_call(int pid, const ck_request *req, CUprocessState *state) {
  return ck_call_pieces(pid, req, state, NULL, NULL);
}

static bool all_zero(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i]) return false;
  return true;
}

static ck_request *new_request(uint32_t op) {
  ck_request *r = calloc(1, sizeof *r);
  if (r) r->op = op;
  return r;
}

static CUresult simple_call(int pid, uint32_t op, CUprocessState *state) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  ck_request *r = new_request(op);
  if (!r) return CUDA_ERROR_OUT_OF_MEMORY;
  CUresult rc = ck_call(pid, r, state);
  free(r);
  return rc;
}

/* The checkpoint calls bypass the entry gate (exports.c: "ungated"): a
 * process may lock itself, and must still reach the service thread and
 * unlock itself afterwards. */

CUresult fake_ungated_cuCheckpointProcessGetState_12080(int pid, CUprocessState *state) {
  if (!state) return CUDA_ERROR_INVALID_VALUE;
  CUprocessState s;
  CUresult rc = simple_call(pid, CK_OP_STATE, &s);
  if (rc == CUDA_SUCCESS) *state = s;
  return rc;
}

CUresult fake_ungated_cuCheckpointProcessLock_12080(int pid, CUcheckpointLockArgs *args) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  if (args && (args->reserved0 || !all_zero(args->reserved1, sizeof args->reserved1)))
    return CUDA_ERROR_INVALID_VALUE;
  ck_request *r = new_request(CK_OP_LOCK);
  if (!r) return CUDA_ERROR_OUT_OF_MEMORY;
  r->timeout_ms = args ? args->timeoutMs : 0;
  CUresult rc = ck_call(pid, r, NULL);
  free(r);
  return rc;
}

/* The caller's devices, as its own driver sees them: the machine a restore
 * lands on, and where custom storage is mapped. ndevs -1 before cuInit. */
static void describe_machine(ck_request *r) {
  if (fk_need_init() != CUDA_SUCCESS) {
    r->ndevs = -1;
    return;
  }
  r->ndevs = fk_cfg.device_count;
  for (int i = 0; i < fk_cfg.device_count; i++) {
    const fk_device *d = &fk_cfg.devices[i];
    r->devs[i].uuid = d->uuid;
    snprintf(r->devs[i].name, sizeof r->devs[i].name, "%s", d->name);
    r->devs[i].total_mem = d->total_mem;
    unsigned flags = 0;
    int active = 0;
    if (fake_cuDevicePrimaryCtxGetState_7000(i, &flags, &active) == CUDA_SUCCESS)
      r->devs[i].primary_active = active;
  }
}

#if CUDA_VERSION >= 13040
/* ---- custom storage, the caller's side ---------------------------------------
 * The target's files are mapped into this process's own device ranges (a
 * mapping of the same file: what the caller copies is the target's memory),
 * registered as device memory of the primary context of the GPU they are
 * mapped onto, each with a stream of that context. The operation handle is
 * that bookkeeping; cuCheckpointOperationComplete synchronises the streams,
 * unmaps everything and tells the target, which then holds nothing
 * (checkpoint) or maps the memory back (restore). */
typedef struct ck_op {
  struct ck_op *next;
  int pid;
  unsigned n;
  struct {
    uintptr_t base;
    size_t size;
    int dev;
    fk_ctx *ctx; /* the primary context of dev, retained */
    CUstream stream;
  } m[FK_MAX_DEVICES];
  CUcheckpointCustomStorageInfo info; /* what the caller got */
  CUcheckpointCustomStoragePerDeviceData per[FK_MAX_DEVICES];
} ck_op;

static pthread_mutex_t ops_lock = PTHREAD_MUTEX_INITIALIZER;
static ck_op *ops;

/* Whether pid is this very process (its channel is ours). */
static bool is_self(int pid) {
  ck_link l;
  if (ck_open(pid, &l) != CUDA_SUCCESS) return false;
  struct stat a, b;
  bool self = chan_fd >= 0 && fstat(l.fd, &a) == 0 && fstat(chan_fd, &b) == 0 &&
              a.st_ino == b.st_ino && a.st_dev == b.st_dev;
  ck_close(&l);
  return self;
}

static void unmap_op(ck_op *op) {
  for (unsigned i = 0; i < op->n; i++) {
    /* The stream handed out, and whatever else of the context may still
     * copy: the mapping goes next. */
    if (op->m[i].stream) fake_cuStreamSynchronize_2000(op->m[i].stream);
    fk_ctx_synchronize(op->m[i].ctx);
    if (op->m[i].stream) fake_cuStreamDestroy_4000(op->m[i].stream);
    fk_alloc gone;
    fk_mem_take(op->m[i].base, 1u << FK_MEM_VMM, &gone);
    fk_va_protect_none(op->m[i].base, op->m[i].size);
    fk_va_give(&fk_cfg.devices[op->m[i].dev], op->m[i].base, op->m[i].size);
    fake_cuDevicePrimaryCtxRelease_11000(op->m[i].dev);
  }
  op->n = 0;
}

/* Map one of the target's files onto device `dev` of ours. */
static CUresult map_piece(ck_op *op, int pid, const ck_piece *pc) {
  if (pc->onto < 0 || pc->onto >= fk_cfg.device_count || !pc->size ||
      pc->size % FK_GRANULARITY)
    return CUDA_ERROR_INVALID_VALUE;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, pc->fd);
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return CUDA_ERROR_OPERATING_SYSTEM;
  fk_device *dev = &fk_cfg.devices[pc->onto];
  CUcontext ctx;
  CUresult rc = fake_cuDevicePrimaryCtxRetain_7000(&ctx, pc->onto);
  if (rc) {
    close(fd);
    return rc;
  }
  uintptr_t base = 0;
  rc = fk_va_take(dev, (size_t)pc->size, FK_GRANULARITY, 0, &base);
  if (rc == CUDA_SUCCESS &&
      mmap((void *)base, (size_t)pc->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) ==
          MAP_FAILED) {
    fk_va_give(dev, base, (size_t)pc->size);
    rc = CUDA_ERROR_OUT_OF_MEMORY;
  }
  close(fd); /* the mapping keeps the file */
  if (rc == CUDA_SUCCESS) {
    rc = fk_mem_add(base, (size_t)pc->size, FK_MEM_VMM, (fk_ctx *)ctx, dev, 0, 0);
    if (rc) {
      fk_va_protect_none(base, (size_t)pc->size);
      fk_va_give(dev, base, (size_t)pc->size);
    }
  }
  if (rc) {
    fake_cuDevicePrimaryCtxRelease_11000(pc->onto);
    return rc;
  }
  unsigned i = op->n++;
  op->m[i].base = base;
  op->m[i].size = (size_t)pc->size;
  op->m[i].dev = pc->onto;
  op->m[i].ctx = (fk_ctx *)ctx;
  op->m[i].stream = NULL;
  CUcontext popped;
  rc = fake_cuCtxPushCurrent_4000(ctx);
  if (rc == CUDA_SUCCESS) {
    rc = fake_cuStreamCreateWithPriority_5050(&op->m[i].stream, CU_STREAM_NON_BLOCKING, 0);
    fake_cuCtxPopCurrent_4000(&popped);
  }
  if (rc) return rc;
  op->per[i] = (CUcheckpointCustomStoragePerDeviceData){
      .devPtr = (CUdeviceptr)base, .size = (size_t)pc->size, .stream = op->m[i].stream};
  return CUDA_SUCCESS;
}

/* A checkpoint or restore through custom storage: the request goes out,
 * the target's files are mapped here, *out gets the description. */
static CUresult custom_call(int pid, ck_request *r, CUcheckpointCustomStorageInfo **out) {
  if (fk_need_init() != CUDA_SUCCESS) return CUDA_ERROR_NOT_INITIALIZED;
  if (is_self(pid)) return CUDA_ERROR_NOT_SUPPORTED; /* as documented */
  ck_op *op = calloc(1, sizeof *op);
  if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
  r->custom = 1;
  describe_machine(r);
  ck_piece pieces[FK_MAX_DEVICES];
  uint32_t n = 0;
  CUresult rc = ck_call_pieces(pid, r, NULL, pieces, &n);
  for (uint32_t i = 0; i < n && rc == CUDA_SUCCESS; i++) rc = map_piece(op, pid, &pieces[i]);
  if (rc != CUDA_SUCCESS) {
    if (n) { /* the target handed out its files: take the operation back */
      unmap_op(op);
      ck_request *abort = new_request(CK_OP_ABORT);
      if (abort) ck_call(pid, abort, NULL);
      free(abort);
    }
    free(op);
    return rc;
  }
  op->pid = pid;
  op->info.handle = (CUcheckpointOperationHandle)op;
  op->info.perDeviceData = op->per;
  op->info.deviceCount = op->n;
  pthread_mutex_lock(&ops_lock);
  op->next = ops;
  ops = op;
  pthread_mutex_unlock(&ops_lock);
  *out = &op->info;
  return CUDA_SUCCESS;
}

CUresult fake_ungated_cuCheckpointOperationComplete_13040(CUcheckpointOperationHandle handle) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  if (fk_need_init() != CUDA_SUCCESS) return CUDA_ERROR_NOT_INITIALIZED;
  ck_op *op = NULL;
  pthread_mutex_lock(&ops_lock);
  for (ck_op **pp = &ops; *pp; pp = &(*pp)->next) {
    if (*pp == (ck_op *)handle) {
      op = *pp;
      *pp = op->next;
      break;
    }
  }
  pthread_mutex_unlock(&ops_lock);
  if (!op) return CUDA_ERROR_INVALID_VALUE;
  unmap_op(op); /* synchronises the streams first */
  ck_request *r = new_request(CK_OP_COMPLETE);
  CUresult rc = r ? ck_call(op->pid, r, NULL) : CUDA_ERROR_OUT_OF_MEMORY;
  free(r);
  free(op);
  return rc;
}
#endif

CUresult fake_ungated_cuCheckpointProcessCheckpoint_12080(int pid,
                                                          CUcheckpointCheckpointArgs *args) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
#if CUDA_VERSION >= 13040
  /* Reserved bytes must be zero; customStorageInfo_out asks for custom storage. */
  if (args && !all_zero(args->reserved, sizeof args->reserved)) return CUDA_ERROR_INVALID_VALUE;
  if (args && args->customStorageInfo_out) {
    ck_request *r = new_request(CK_OP_CHECKPOINT);
    if (!r) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = custom_call(pid, r, args->customStorageInfo_out);
    free(r);
    return rc;
  }
#else
  if (args && !all_zero(args, sizeof *args)) return CUDA_ERROR_INVALID_VALUE;
#endif
  return simple_call(pid, CK_OP_CHECKPOINT, NULL);
}

CUresult fake_ungated_cuCheckpointProcessRestore_12080(int pid, CUcheckpointRestoreArgs *args) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  const CUcheckpointGpuPair *pairs = args ? args->gpuPairs : NULL;
  unsigned npairs = args ? args->gpuPairsCount : 0;
#if CUDA_VERSION >= 13040
  CUcheckpointCustomStorageInfo **custom = NULL;
#endif
  if (args) {
    /* Everything after the pairs but custom storage is reserved, and zero. */
#if CUDA_VERSION >= 13040
    custom = args->customStorageInfo_out;
    if (args->padding0 || !all_zero(args->reserved, sizeof args->reserved))
      return CUDA_ERROR_INVALID_VALUE;
#else
    const unsigned char *rest = (const unsigned char *)&args->gpuPairsCount + sizeof(unsigned);
    if (!all_zero(rest, sizeof *args - (size_t)(rest - (const unsigned char *)args)))
      return CUDA_ERROR_INVALID_VALUE;
#endif
  }
  if ((npairs && !pairs) || npairs > CK_MAX_PAIRS) return CUDA_ERROR_INVALID_VALUE;
  ck_request *r = new_request(CK_OP_RESTORE);
  if (!r) return CUDA_ERROR_OUT_OF_MEMORY;
  r->npairs = npairs;
  if (npairs) memcpy(r->pairs, pairs, npairs * sizeof *pairs);
  CUresult rc;
#if CUDA_VERSION >= 13040
  if (custom) {
    rc = custom_call(pid, r, custom);
    free(r);
    return rc;
  }
#endif
  describe_machine(r);
  rc = r->ndevs < 0 ? CUDA_ERROR_NOT_INITIALIZED : ck_call(pid, r, NULL);
  free(r);
  return rc;
}

CUresult fake_ungated_cuCheckpointProcessUnlock_12080(int pid, CUcheckpointUnlockArgs *args) {
  if (args && !all_zero(args, sizeof *args)) return CUDA_ERROR_INVALID_VALUE;
  return simple_call(pid, CK_OP_UNLOCK, NULL);
}

/* The tid of the target's service thread as the caller sees it: the thread
 * whose NSpid (innermost last) ends with the tid the service wrote. */
static CUresult find_tid(int pid, int32_t ns_tid, int *out) {
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/task", pid);
  DIR *d = opendir(dir);
  if (!d) return CUDA_ERROR_OPERATING_SYSTEM;
  CUresult rc = CUDA_ERROR_NOT_INITIALIZED;
  struct dirent *e;
  while (rc != CUDA_SUCCESS && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[384];
    snprintf(path, sizeof path, "%s/%.256s/status", dir, e->d_name);
    FILE *f = fopen(path, "re");
    if (!f) continue;
    char line[256];
    long last = atol(e->d_name); /* a kernel without NSpid: one namespace */
    while (fgets(line, sizeof line, f)) {
      if (strncmp(line, "NSpid:", 6) != 0) continue;
      for (char *tok = strtok(line + 6, " \t\n"); tok; tok = strtok(NULL, " \t\n")) last = atol(tok);
      break;
    }
    fclose(f);
    if (last == ns_tid) {
      *out = atoi(e->d_name);
      rc = CUDA_SUCCESS;
    }
  }
  closedir(d);
  return rc;
}

CUresult fake_ungated_cuCheckpointProcessGetRestoreThreadId_12080(int pid, int *tid) {
  if (!tid) return CUDA_ERROR_INVALID_VALUE;
  ck_link l;
  CUresult rc = ck_open(pid, &l);
  if (rc) return rc;
  int32_t ns_tid = __atomic_load_n(&l.c->server_tid, __ATOMIC_RELAXED);
  ck_close(&l);
  return find_tid(pid, ns_tid, tid);
}
