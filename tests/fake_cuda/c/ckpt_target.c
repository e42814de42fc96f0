/* The target of the process checkpoint tests (test_driver_checkpoint.py): a
 * program on the CUDA driver that another process locks, checkpoints,
 * restores and unlocks through cuCheckpointProcess* while it computes.
 *
 *   ckpt_target <conformance kernels> <steps> <sleep ms per step> [options]
 *
 * It holds device memory of every kind the driver checkpoints: a small
 * allocation (a slab of the fake driver), a large one, and a VMM mapping.
 * Each step adds one to every element of all three (kernels on a stream of
 * its own and on the legacy stream), then reads one element back with a
 * synchronous copy, and prints "step N" (so a test sees calls stop while the
 * process is locked). At the end it checks every element and prints the
 * checksum of the contents: the same for every run with the same steps,
 * however often the process was checkpointed on the way.
 *
 * Options:
 *   --long-call MS  before the first step, one synchronous call that lasts
 *                   MS milliseconds (a kernel that spins, then
 *                   cuCtxSynchronize), announced by "long call" on stdout
 *   --long-kernel MS  before the first step, a kernel that spins for MS
 *                   milliseconds on a stream, announced by "long kernel",
 *                   while the program makes no call for MS + 500 ms
 *   --self          halfway, lock, checkpoint, restore and unlock itself
 *   --hold          after the last step print "holding" and wait for SIGUSR1
 *                   before the end (so a test can act while it lives)
 *
 * Lines on stdout: "ready pid=P tid=T uuid=U small=A big=A vmm=A",
 * "step N", "self: ..." (with --self), then "uuid: U", "name: N",
 * "total: BYTES", "addresses: A A A", "checksum: HEX" and "done".
 * Exits 1 with "FAIL ..." on stderr at the first failed check.
 */
#define _GNU_SOURCE
#include <cuda.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SMALL_INTS 1000                       /* 4000 bytes: a slab of the fake driver */
#define BIG_INTS ((8u << 20) / 4 + 12345)     /* not a multiple of 2 MiB */
#define VMM_BYTES ((size_t)2 << 20)           /* one granule */
#define VMM_INTS ((unsigned)(VMM_BYTES / 4))

static void fail(const char *what, CUresult rc) {
  const char *name = NULL;
  cuGetErrorName(rc, &name);
  fprintf(stderr, "FAIL %s: %s (%d)\n", what, name ? name : "?", (int)rc);
  exit(1);
}

#define OK(call)                         \
  do {                                   \
    CUresult rc_ = (call);               \
    if (rc_ != CUDA_SUCCESS) fail(#call, rc_); \
  } while (0)

static void uuid_str(const CUuuid *u, char out[64]) {
  const unsigned char *b = (const unsigned char *)u->bytes;
  snprintf(out, 64, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
           b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
           b[15]);
}

static CUfunction add_one;

static void add_one_on(CUdeviceptr p, unsigned n, CUstream s) {
  int count = (int)n;
  void *args[] = {&p, &p, &count};
  OK(cuLaunchKernel(add_one, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
}

static void spin(unsigned ms, CUmodule mod) {
  CUfunction f;
  OK(cuModuleGetFunction(&f, mod, "spin_ms"));
  CUdeviceptr none = 0;
  void *args[] = {&ms, &none};
  printf("long call\n");
  fflush(stdout);
  OK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
  OK(cuCtxSynchronize());
}

static void spin_async(unsigned ms, CUmodule mod, CUstream s) {
  CUfunction f;
  OK(cuModuleGetFunction(&f, mod, "spin_ms"));
  CUdeviceptr none = 0;
  void *args[] = {&ms, &none};
  OK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, args, NULL));
  printf("long kernel\n");
  fflush(stdout);
  struct timespec ts = {.tv_sec = (ms + 500) / 1000, .tv_nsec = ((ms + 500) % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void self_checkpoint(void) {
  int pid = getpid();
  CUprocessState st;
  OK(cuCheckpointProcessLock(pid, NULL));
  OK(cuCheckpointProcessGetState(pid, &st));
  printf("self: locked %d\n", (int)st);
  OK(cuCheckpointProcessCheckpoint(pid, NULL));
  OK(cuCheckpointProcessGetState(pid, &st));
  printf("self: checkpointed %d\n", (int)st);
  OK(cuCheckpointProcessRestore(pid, NULL));
  OK(cuCheckpointProcessUnlock(pid, NULL));
  OK(cuCheckpointProcessGetState(pid, &st));
  printf("self: running %d\n", (int)st);
  fflush(stdout);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

/* Every element of [p, p+n ints) must be base + index % 251 + steps. */
static uint64_t check(CUdeviceptr p, unsigned n, int steps, uint64_t h, const char *what) {
  int *host = malloc((size_t)n * 4);
  if (!host) exit(2);
  OK(cuMemcpyDtoH(host, p, (size_t)n * 4));
  for (unsigned i = 0; i < n; i++) {
    if (host[i] != (int)(i % 251) + steps) {
      fprintf(stderr, "FAIL %s[%u] = %d, expected %d\n", what, i, host[i], (int)(i % 251) + steps);
      exit(1);
    }
  }
  h = fnv(h, host, (size_t)n * 4);
  free(host);
  return h;
}

static void fill(CUdeviceptr p, unsigned n) {
  int *host = malloc((size_t)n * 4);
  if (!host) exit(2);
  for (unsigned i = 0; i < n; i++) host[i] = (int)(i % 251);
  OK(cuMemcpyHtoD(p, host, (size_t)n * 4));
  free(host);
}

/* A handler, though SIGUSR1 stays blocked and is taken with sigwait: the
 * init of a PID namespace gets no signal it has no handler for. */
static void on_usr1(int sig) { (void)sig; }

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s KERNELS STEPS SLEEP_MS [--long-call MS] [--long-kernel MS] [--self] "
            "[--hold]\n",
            argv[0]);
    return 2;
  }
  int steps = atoi(argv[2]);
  int sleep_ms = atoi(argv[3]);
  unsigned long_call = 0, long_kernel = 0;
  int self = 0, hold = 0;
  for (int i = 4; i < argc; i++) {
    if (strcmp(argv[i], "--long-call") == 0 && i + 1 < argc) long_call = (unsigned)atoi(argv[++i]);
    else if (strcmp(argv[i], "--long-kernel") == 0 && i + 1 < argc)
      long_kernel = (unsigned)atoi(argv[++i]);
    else if (strcmp(argv[i], "--self") == 0) self = 1;
    else if (strcmp(argv[i], "--hold") == 0) hold = 1;
  }
  /* Blocked before any thread starts, so every thread (the driver's too)
   * inherits it blocked and --hold's sigwait takes it. */
  signal(SIGUSR1, on_usr1);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, NULL);
  setvbuf(stdout, NULL, _IOLBF, 0);

  OK(cuInit(0));
  CUdevice dev;
  OK(cuDeviceGet(&dev, 0));
  CUcontext ctx;
  OK(cuDevicePrimaryCtxRetain(&ctx, dev));
  OK(cuCtxSetCurrent(ctx));
  CUmodule mod;
  OK(cuModuleLoad(&mod, argv[1]));
  OK(cuModuleGetFunction(&add_one, mod, "add_one"));
  CUstream stream;
  OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));

  CUdeviceptr small, big;
  OK(cuMemAlloc(&small, SMALL_INTS * 4));
  OK(cuMemAlloc(&big, (size_t)BIG_INTS * 4));
  CUmemAllocationProp prop = {0};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = dev;
  CUmemGenericAllocationHandle phys;
  OK(cuMemCreate(&phys, VMM_BYTES, &prop, 0));
  CUdeviceptr vmm;
  OK(cuMemAddressReserve(&vmm, 2 * VMM_BYTES, 0, 0, 0));
  OK(cuMemMap(vmm, VMM_BYTES, 0, phys, 0));
  CUmemAccessDesc access = {.location = prop.location, .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
  OK(cuMemSetAccess(vmm, VMM_BYTES, &access, 1));
  fill(small, SMALL_INTS);
  fill(big, BIG_INTS);
  fill(vmm, VMM_INTS);
  OK(cuCtxSynchronize()); /* the copies are done before the other stream reads */

  CUuuid uuid;
  char us[64];
  OK(cuDeviceGetUuid(&uuid, dev));
  uuid_str(&uuid, us);
  printf("ready pid=%d tid=%ld uuid=%s small=%#llx big=%#llx vmm=%#llx\n", getpid(),
         (long)syscall(SYS_gettid), us, (unsigned long long)small, (unsigned long long)big,
         (unsigned long long)vmm);

  if (long_call) spin(long_call, mod);
  if (long_kernel) spin_async(long_kernel, mod, stream);
  for (int s = 1; s <= steps; s++) {
    add_one_on(small, SMALL_INTS, stream);
    add_one_on(big, BIG_INTS, stream);
    add_one_on(vmm, VMM_INTS, NULL);
    OK(cuStreamSynchronize(stream));
    int probe = 0;
    OK(cuMemcpyDtoH(&probe, big + 4 * 250, 4)); /* synchronous on the legacy stream */
    if (probe != 250 + s) {
      fprintf(stderr, "FAIL step %d: big[250] = %d\n", s, probe);
      return 1;
    }
    printf("step %d\n", s);
    if (self && s == steps / 2) self_checkpoint();
    if (sleep_ms) {
      struct timespec ts = {.tv_sec = sleep_ms / 1000, .tv_nsec = (sleep_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
  if (hold) {
    printf("holding\n");
    int sig;
    sigwait(&usr1, &sig);
  }

  uint64_t h = 0xcbf29ce484222325ULL;
  h = check(small, SMALL_INTS, steps, h, "small");
  h = check(big, BIG_INTS, steps, h, "big");
  h = check(vmm, VMM_INTS, steps, h, "vmm");
  char name[256];
  size_t total = 0;
  OK(cuDeviceGetUuid(&uuid, dev));
  uuid_str(&uuid, us);
  OK(cuDeviceGetName(name, sizeof name, dev));
  OK(cuDeviceTotalMem(&total, dev));
  printf("uuid: %s\nname: %s\ntotal: %zu\n", us, name, total);
  printf("addresses: %#llx %#llx %#llx\n", (unsigned long long)small, (unsigned long long)big,
         (unsigned long long)vmm);
  printf("checksum: %016llx\n", (unsigned long long)h);

  OK(cuMemUnmap(vmm, VMM_BYTES));
  OK(cuMemAddressFree(vmm, 2 * VMM_BYTES));
  OK(cuMemRelease(phys));
  OK(cuMemFree(big));
  OK(cuMemFree(small));
  OK(cuStreamDestroy(stream));
  OK(cuModuleUnload(mod));
  OK(cuDevicePrimaryCtxRelease(dev));
  printf("done\n");
  return 0;
}
