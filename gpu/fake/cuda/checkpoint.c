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
 *     there, and the lock waits for the calls in flight.
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
 * Error codes for the pid, as measured on NVIDIA's drivers (580, 595): a pid
 * that does not exist is CUDA_ERROR_OPERATING_SYSTEM, a process without
 * CUDA (here: without the channel) or a zombie CUDA_ERROR_NOT_INITIALIZED.
 */
#include "fake.h"

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

#define CK_MEMFD_NAME "cedana-fake-cuda-ckpt"
#define CK_THREAD_NAME "cuda-ckpt"
#define CK_MAGIC 0x544b4346u /* "FCKT" */
#define CK_VERSION 1u
#define CK_MAX_PAIRS 64

enum { CK_OP_STATE = 1, CK_OP_LOCK, CK_OP_CHECKPOINT, CK_OP_RESTORE, CK_OP_UNLOCK };

typedef struct ck_dev {
  CUuuid uuid;
  char name[256];
  uint64_t total_mem;
} ck_dev;

/* The request a caller writes, copied by the service before use. */
typedef struct ck_request {
  uint32_t op;
  uint32_t timeout_ms;
  uint32_t npairs;
  int32_t ndevs; /* the caller's device table; -1: the caller has not called cuInit */
  CUcheckpointGpuPair pairs[CK_MAX_PAIRS];
  ck_dev devs[FK_MAX_DEVICES];
} ck_request;

typedef struct ck_channel {
  uint32_t magic; /* CK_MAGIC once the service runs */
  uint32_t version;
  int32_t server_tid; /* the service thread, in the target's own PID namespace */
  uint32_t req_seq;   /* futex: a caller bumps it to post a request */
  uint32_t done_seq;  /* futex: the service sets it to req_seq with the answer */
  int32_t rc;         /* answer */
  uint32_t state;     /* answer: the state after the request */
  uint32_t pad;
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

static CUresult serve(const ck_request *r) {
  switch (r->op) {
  case CK_OP_STATE:
    return CUDA_SUCCESS;
  case CK_OP_LOCK: {
    if (ck_state != CU_PROCESS_STATE_RUNNING) return CUDA_ERROR_ILLEGAL_STATE;
    CUresult rc = fk_gate_close(r->timeout_ms);
    if (rc == CUDA_SUCCESS) ck_state = CU_PROCESS_STATE_LOCKED;
    return rc;
  }
  case CK_OP_CHECKPOINT: {
    if (ck_state != CU_PROCESS_STATE_LOCKED) return CUDA_ERROR_ILLEGAL_STATE;
    drain_all();
    CUresult rc = fk_mem_checkpoint();
    if (rc == CUDA_SUCCESS) ck_state = CU_PROCESS_STATE_CHECKPOINTED;
    return rc;
  }
  case CK_OP_RESTORE: {
    if (ck_state != CU_PROCESS_STATE_CHECKPOINTED) return CUDA_ERROR_ILLEGAL_STATE;
    CUresult rc = do_restore(r);
    if (rc == CUDA_SUCCESS) ck_state = CU_PROCESS_STATE_LOCKED;
    return rc;
  }
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
    CUresult rc = serve(req);
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

/* One request to the target: `req` (op and arguments) in, the answer's code
 * and the state after it out. */
static CUresult ck_call(int pid, const ck_request *req, CUprocessState *state) {
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
  }
  ck_close(&l);
  return rc;
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

CUresult fake_ungated_cuCheckpointProcessCheckpoint_12080(int pid,
                                                          CUcheckpointCheckpointArgs *args) {
  if (args && !all_zero(args, sizeof *args)) return CUDA_ERROR_INVALID_VALUE;
  return simple_call(pid, CK_OP_CHECKPOINT, NULL);
}

CUresult fake_ungated_cuCheckpointProcessRestore_12080(int pid, CUcheckpointRestoreArgs *args) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  const CUcheckpointGpuPair *pairs = args ? args->gpuPairs : NULL;
  unsigned npairs = args ? args->gpuPairsCount : 0;
  if (args) {
    /* Everything after the pairs is reserved (or custom storage, not asked
     * for here) and must be zero. */
    const unsigned char *rest = (const unsigned char *)&args->gpuPairsCount + sizeof(unsigned);
    if (!all_zero(rest, sizeof *args - (size_t)(rest - (const unsigned char *)args)))
      return CUDA_ERROR_INVALID_VALUE;
  }
  if ((npairs && !pairs) || npairs > CK_MAX_PAIRS) return CUDA_ERROR_INVALID_VALUE;
  ck_request *r = new_request(CK_OP_RESTORE);
  if (!r) return CUDA_ERROR_OUT_OF_MEMORY;
  r->npairs = npairs;
  if (npairs) memcpy(r->pairs, pairs, npairs * sizeof *pairs);
  /* The GPUs of this machine, as this process's driver sees them. */
  if (fk_need_init() != CUDA_SUCCESS) {
    r->ndevs = -1;
  } else {
    r->ndevs = fk_cfg.device_count;
    for (int i = 0; i < fk_cfg.device_count; i++) {
      const fk_device *d = &fk_cfg.devices[i];
      r->devs[i].uuid = d->uuid;
      snprintf(r->devs[i].name, sizeof r->devs[i].name, "%s", d->name);
      r->devs[i].total_mem = d->total_mem;
    }
  }
  CUresult rc = r->ndevs < 0 ? CUDA_ERROR_NOT_INITIALIZED : ck_call(pid, r, NULL);
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
