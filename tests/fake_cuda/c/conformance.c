/* Conformance of the CUDA driver as seen by a C program linked with -lcuda.
 *
 * Built twice: with the legacy default stream, and with
 * CUDA_API_PER_THREAD_DEFAULT_STREAM, where cuda.h turns the stream-ordered
 * calls into their _ptds/_ptsz exports and the NULL stream means the calling
 * thread's own default stream. Each build checks the semantics it was built
 * for.
 *
 *   fake_cuda_conformance_{legacy,ptds} <conformance kernels module>
 *
 * Prints each failure on stderr and "N passed, N failed" as the last line of
 * stdout; exits 1 if anything failed.
 */
#define _GNU_SOURCE
#include <cuda.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef CUDA_API_PER_THREAD_DEFAULT_STREAM
#define PTDS 1
#else
#define PTDS 0
#endif

/* A kernel that waits for the host gives up after this long, so that a driver
 * running work synchronously fails a check instead of hanging. */
#define WAIT_TIMEOUT_MS 20000ull

static int passed, failed;

#define CHECK(cond, ...)                                           \
  do {                                                             \
    if (cond) {                                                    \
      passed++;                                                    \
    } else {                                                       \
      failed++;                                                    \
      fprintf(stderr, "FAIL %s:%d: ", __func__, __LINE__);         \
      fprintf(stderr, __VA_ARGS__);                                \
      fputc('\n', stderr);                                         \
    }                                                              \
  } while (0)

/* Expect a driver call to return `want`. */
#define EXPECT(call, want)                                                              \
  do {                                                                                  \
    CUresult rc_ = (call);                                                              \
    CHECK(rc_ == (want), "%s returned %s, expected %s", #call, err_name(rc_), #want);   \
  } while (0)
#define OK(call) EXPECT(call, CUDA_SUCCESS)

static const char *err_name(CUresult rc) {
  const char *s = NULL;
  if (cuGetErrorName(rc, &s) != CUDA_SUCCESS || !s) return "(unknown error)";
  return s;
}

static CUmodule mod;
static CUcontext primary;

static CUfunction fn(const char *name) {
  CUfunction f = NULL;
  OK(cuModuleGetFunction(&f, mod, name));
  return f;
}

/* Holds a stream until the host releases it (see wait_flag in
 * kernels/conformance.cu). */
typedef struct gate {
  volatile int *flag;
  volatile int *out;
} gate;

static gate gate_on(CUstream s) {
  gate g = {0};
  void *mem = NULL;
  OK(cuMemAllocHost(&mem, 2 * sizeof(int)));
  g.flag = mem;
  g.out = (volatile int *)mem + 1;
  *g.flag = 0;
  *g.out = 0;
  unsigned long long timeout = WAIT_TIMEOUT_MS;
  void *args[] = {&g.flag, &g.out, &timeout};
  OK(cuLaunchKernel(fn("wait_flag"), 1, 1, 1, 1, 1, 1, 0, s, args, NULL));
  return g;
}

static void gate_release(gate *g) { *g->flag = 1; }

static void gate_free(gate *g) { OK(cuMemFreeHost((void *)g->flag)); }

static int read_int(CUdeviceptr p) {
  int v = -1;
  OK(cuMemcpyDtoH(&v, p, sizeof v));
  return v;
}

static void check_before_init(void) {
  int n = -1;
  CUdevice dev;
  EXPECT(cuDeviceGetCount(&n), CUDA_ERROR_NOT_INITIALIZED);
  EXPECT(cuDeviceGet(&dev, 0), CUDA_ERROR_NOT_INITIALIZED);
  int version = 0;
  OK(cuDriverGetVersion(&version));
  CHECK(version >= 13000, "driver version %d", version);
  EXPECT(cuInit(1), CUDA_ERROR_INVALID_VALUE);
}

/* The calls resolve to the ABI variants this build asks for. */
static void check_symbols(void) {
  void *want = dlsym(RTLD_DEFAULT, PTDS ? "cuMemcpyHtoD_v2_ptds" : "cuMemcpyHtoD_v2");
  CHECK(want && (void *)cuMemcpyHtoD == want, "cuMemcpyHtoD is not the %s variant",
        PTDS ? "per-thread" : "legacy");
  want = dlsym(RTLD_DEFAULT, PTDS ? "cuLaunchKernel_ptsz" : "cuLaunchKernel");
  CHECK(want && (void *)cuLaunchKernel == want, "cuLaunchKernel is not the %s variant",
        PTDS ? "per-thread" : "legacy");
  void *pfn = NULL;
  CUdriverProcAddressQueryResult found;
  OK(cuGetProcAddress("cuStreamQuery", &pfn, 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
                      &found));
  CHECK(pfn == dlsym(RTLD_DEFAULT, "cuStreamQuery_ptsz"), "cuGetProcAddress per-thread variant");
  OK(cuGetProcAddress("cuNoSuchFunction", &pfn, 13000, 0, &found));
  CHECK(pfn == NULL && found == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, "unknown symbol");
}

static void check_devices_and_contexts(void) {
  int n = 0;
  OK(cuDeviceGetCount(&n));
  CHECK(n >= 1, "%d devices", n);
  CUdevice dev;
  OK(cuDeviceGet(&dev, 0));
  EXPECT(cuDeviceGet(&dev, n), CUDA_ERROR_INVALID_DEVICE);
  OK(cuDeviceGet(&dev, 0));
  char name[256] = {0};
  OK(cuDeviceGetName(name, sizeof name, dev));
  CHECK(name[0] != '\0', "device name");
  size_t total = 0;
  OK(cuDeviceTotalMem(&total, dev));
  CHECK(total > 0, "total memory");

  /* No context yet on this thread. */
  CUdeviceptr p;
  EXPECT(cuMemAlloc(&p, 16), CUDA_ERROR_INVALID_CONTEXT);
  CUcontext cur = (CUcontext)1;
  OK(cuCtxGetCurrent(&cur));
  CHECK(cur == NULL, "a new thread has no current context");

  OK(cuDevicePrimaryCtxRetain(&primary, dev));
  OK(cuCtxSetCurrent(primary));

  CUcontext created = NULL;
  OK(cuCtxCreate(&created, NULL, 0, dev));
  OK(cuCtxGetCurrent(&cur));
  CHECK(cur == created && created != primary, "a created context is current");
  CUdevice cdev = -1;
  OK(cuCtxGetDevice_v2(&cdev, created));
  CHECK(cdev == dev, "cuCtxGetDevice_v2");
  OK(cuCtxSynchronize_v2(created));
  CUcontext popped = NULL;
  OK(cuCtxPopCurrent(&popped));
  CHECK(popped == created, "pop returns the created context");
  OK(cuCtxGetCurrent(&cur));
  CHECK(cur == primary, "pop restores the previous context");
  OK(cuCtxPushCurrent(created));
  OK(cuCtxDestroy(created));
  OK(cuCtxGetCurrent(&cur));
  CHECK(cur == primary, "destroying the current context pops it");
  /* Not pushed again: NVIDIA's driver (580) accepts a destroyed context and
   * every later call then fails with CUDA_ERROR_CONTEXT_IS_DESTROYED, where the
   * fake says CUDA_ERROR_INVALID_CONTEXT at once; using a destroyed handle is
   * undefined, and test_driver_context.py checks the fake's answer. */
  EXPECT(cuCtxDestroy(primary), CUDA_ERROR_INVALID_CONTEXT);
}

static void check_memory(void) {
  size_t free0 = 0, total = 0, free1 = 0;
  OK(cuMemGetInfo(&free0, &total));
  /* A large allocation: NVIDIA's driver takes device memory in large pages
   * and keeps a reserve of its own, so two of 1 MiB (or 16 MiB) did not move
   * its free count (driver 580 on an H200). */
  CUdeviceptr big = 0;
  OK(cuMemAlloc(&big, (size_t)256 << 20));
  OK(cuMemGetInfo(&free1, &total));
  CHECK(free1 <= free0 - ((size_t)128 << 20), "free memory went down");
  OK(cuMemFree(big));
  CUdeviceptr a = 0, b = 0, none = 0;
  OK(cuMemAlloc(&a, 1 << 20));
  OK(cuMemAlloc(&b, 1 << 20));
  /* Its own variable: NVIDIA's driver writes 0 to the output even as it fails. */
  EXPECT(cuMemAlloc(&none, 0), CUDA_ERROR_INVALID_VALUE);

  static unsigned char src[1 << 20], dst[1 << 20];
  for (size_t i = 0; i < sizeof src; i++) src[i] = (unsigned char)(i * 7 + 3);
  OK(cuMemcpyHtoD(a, src, sizeof src));
  OK(cuMemcpyDtoD(b, a, sizeof src));
  OK(cuMemcpyDtoH(dst, b, sizeof dst));
  CHECK(memcmp(src, dst, sizeof src) == 0, "HtoD, DtoD, DtoH round trip");

  OK(cuMemsetD8(a, 0xab, 8));
  OK(cuMemsetD16(a + 8, 0x1234, 2));
  OK(cuMemsetD32(a + 12, 0xdeadbeef, 1));
  unsigned char got[16];
  OK(cuMemcpyDtoH(got, a, sizeof got));
  const unsigned char want[16] = {0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
                                  0x34, 0x12, 0x34, 0x12, 0xef, 0xbe, 0xad, 0xde};
  CHECK(memcmp(got, want, sizeof want) == 0, "memsets");

  CUdeviceptr base = 0;
  size_t size = 0;
  OK(cuMemGetAddressRange(&base, &size, a + 100));
  CHECK(base == a && size == (1 << 20), "address range");

  EXPECT(cuMemcpyHtoD(a, src, (1 << 20) + 1), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemcpyDtoH(dst, a + (1 << 20) - 2, 4), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemsetD32(a + 4, 0, 1 << 18), CUDA_ERROR_INVALID_VALUE);

  OK(cuMemFree(a));
  OK(cuMemFree(b));
  EXPECT(cuMemFree(a), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemcpyDtoH(dst, a, 4), CUDA_ERROR_INVALID_VALUE);
}

static void check_launch(void) {
  CUdeviceptr d = 0;
  OK(cuMemAlloc(&d, 256));
  int v = 41;
  void *args[] = {&d, &v};
  OK(cuLaunchKernel(fn("write_value"), 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
  OK(cuCtxSynchronize());
  CHECK(read_int(d) == 41, "write_value through kernelParams");

  /* The `extra` form: one packed buffer laid out as cuFuncGetParamInfo says. */
  CUfunction mixed = fn("mixed_params");
  size_t off[5], sz[5];
  for (int i = 0; i < 5; i++) OK(cuFuncGetParamInfo(mixed, (size_t)i, &off[i], &sz[i]));
  const size_t want_off[5] = {0, 8, 16, 28, 32}, want_sz[5] = {1, 8, 12, 2, 8};
  CHECK(memcmp(off, want_off, sizeof off) == 0 && memcmp(sz, want_sz, sizeof sz) == 0,
        "mixed_params layout");
  size_t off5 = 0, sz5 = 0;
  EXPECT(cuFuncGetParamInfo(mixed, 5, &off5, &sz5), CUDA_ERROR_INVALID_VALUE);
  unsigned char buf[40] = {0};
  char c = -3;
  double dv = 2.5;
  int tri[3] = {7, -8, 9};
  short s = 300;
  memcpy(buf + 0, &c, 1);
  memcpy(buf + 8, &dv, 8);
  memcpy(buf + 16, tri, 12);
  memcpy(buf + 28, &s, 2);
  memcpy(buf + 32, &d, 8);
  size_t bufsize = sizeof buf;
  void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE, &bufsize,
                   CU_LAUNCH_PARAM_END};
  OK(cuLaunchKernel(mixed, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, extra));
  double out[6];
  OK(cuMemcpyDtoH(out, d, sizeof out));
  CHECK(out[0] == -3 && out[1] == 2.5 && out[2] == 7 && out[3] == -8 && out[4] == 9 &&
            out[5] == 300,
        "mixed_params through extra: %g %g %g %g %g %g", out[0], out[1], out[2], out[3], out[4],
        out[5]);

  /* The whole grid runs, each thread once. */
  enum { GX = 3, GY = 2, GZ = 2, BX = 4, BY = 2, BZ = 3, N = GX * GY * GZ * BX * BY * BZ };
  CUdeviceptr ids = 0, count = 0;
  OK(cuMemAlloc(&ids, N * sizeof(unsigned)));
  OK(cuMemAlloc(&count, sizeof(unsigned)));
  OK(cuMemsetD32(ids, 0xffffffffu, N));
  OK(cuMemsetD32(count, 0, 1));
  void *fargs[] = {&ids, &count};
  OK(cuLaunchKernel(fn("fill_index"), GX, GY, GZ, BX, BY, BZ, 0, NULL, fargs, NULL));
  unsigned host[N], n = 0;
  OK(cuMemcpyDtoH(host, ids, sizeof host));
  OK(cuMemcpyDtoH(&n, count, sizeof n));
  int all = 1;
  for (unsigned i = 0; i < N; i++) all &= host[i] == i;
  CHECK(all && n == N, "fill_index covered the grid (%u threads counted)", n);

  EXPECT(cuLaunchKernel(fn("noop"), 1, 1, 1, 2048, 1, 1, 0, NULL, NULL, NULL),
         CUDA_ERROR_INVALID_VALUE);
  CUfunction missing = NULL;
  EXPECT(cuModuleGetFunction(&missing, mod, "no_such_kernel"), CUDA_ERROR_NOT_FOUND);

  OK(cuMemFree(d));
  OK(cuMemFree(ids));
  OK(cuMemFree(count));
}

static void check_streams_and_events(void) {
  CUstream s = NULL;
  OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  CUevent start = NULL, stop = NULL;
  OK(cuEventCreate(&start, CU_EVENT_DEFAULT));
  OK(cuEventCreate(&stop, CU_EVENT_DEFAULT));

  /* Work queued behind a held kernel has not run when the calls return. */
  CUdeviceptr d = 0;
  OK(cuMemAlloc(&d, 4));
  OK(cuMemsetD32(d, 0, 1));
  OK(cuCtxSynchronize()); /* a memset of device memory is asynchronous */
  int *pinned = NULL;
  OK(cuMemAllocHost((void **)&pinned, sizeof *pinned));
  *pinned = -1;
  gate g = gate_on(s);
  OK(cuMemsetD32Async(d, 5, 1, s));
  OK(cuMemcpyDtoHAsync(pinned, d, sizeof *pinned, s));
  OK(cuEventRecord(stop, s));
  EXPECT(cuStreamQuery(s), CUDA_ERROR_NOT_READY);
  EXPECT(cuEventQuery(stop), CUDA_ERROR_NOT_READY);
  CHECK(*g.out == 0 && *pinned == -1, "queued work ran before the stream was released");
  gate_release(&g);
  OK(cuEventSynchronize(stop));
  CHECK(*g.out == 1, "the held kernel saw its release (%d)", *g.out);
  CHECK(*pinned == 5, "stream order: %d", *pinned);
  OK(cuStreamQuery(s));
  OK(cuEventQuery(stop));
  gate_free(&g);

  /* Elapsed time is real time. */
  unsigned ms = 20;
  CUdeviceptr none = 0;
  void *args[] = {&ms, &none};
  OK(cuEventRecord(start, s));
  OK(cuLaunchKernel(fn("spin_ms"), 1, 1, 1, 1, 1, 1, 0, s, args, NULL));
  OK(cuEventRecord(stop, s));
  OK(cuStreamSynchronize(s));
  float elapsed = 0;
  OK(cuEventElapsedTime(&elapsed, start, stop));
  CHECK(elapsed >= (float)ms, "elapsed %.3f ms for a %u ms kernel", elapsed, ms);

  OK(cuEventDestroy(start));
  OK(cuEventDestroy(stop));
  OK(cuStreamDestroy(s));
  /* A destroyed stream or event is not queried: NVIDIA's driver (580)
   * dereferences the handle and the program dies (SIGSEGV); the fake's answer,
   * CUDA_ERROR_INVALID_HANDLE, is checked by test_driver_streams_events.py. */
  OK(cuMemFreeHost(pinned));
  OK(cuMemFree(d));
}

/* ---- default streams across threads ---------------------------------------*/
typedef struct holder {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int state; /* 1: the thread's default stream is held; 2: released */
  gate g;
} holder;

/* Holds this thread's NULL stream (the legacy stream, or in the per-thread
 * build the thread's own default stream) until the main thread says so. */
static void *hold_default_stream(void *arg) {
  holder *h = arg;
  cuCtxSetCurrent(primary);
  h->g = gate_on(NULL);
  pthread_mutex_lock(&h->lock);
  h->state = 1;
  pthread_cond_broadcast(&h->cond);
  while (h->state != 2) pthread_cond_wait(&h->cond, &h->lock);
  pthread_mutex_unlock(&h->lock);
  cuStreamSynchronize(NULL);
  return NULL;
}

static void check_default_stream_semantics(void) {
  CUdeviceptr d = 0;
  OK(cuMemAlloc(&d, 4));
  OK(cuMemsetD32(d, 0, 1));
  OK(cuCtxSynchronize()); /* a memset of device memory is asynchronous */

  holder h = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}};
  pthread_t t;
  pthread_create(&t, NULL, hold_default_stream, &h);
  pthread_mutex_lock(&h.lock);
  while (h.state != 1) pthread_cond_wait(&h.cond, &h.lock);
  pthread_mutex_unlock(&h.lock);

  OK(cuMemsetD32Async(d, 9, 1, NULL));
  if (PTDS) {
    /* This thread's default stream is its own: it does not wait. */
    OK(cuStreamSynchronize(NULL));
    CHECK(read_int(d) == 9, "the per-thread stream ran");
  } else {
    /* Both threads share the legacy stream. */
    EXPECT(cuStreamQuery(NULL), CUDA_ERROR_NOT_READY);
  }
  /* CU_STREAM_PER_THREAD is this thread's own stream in either build; it
   * waits for the legacy stream, which only the legacy build holds. */
  OK(cuMemsetD32Async(d, 10, 1, CU_STREAM_PER_THREAD));
  if (PTDS)
    OK(cuStreamSynchronize(CU_STREAM_PER_THREAD));
  else
    EXPECT(cuStreamQuery(CU_STREAM_PER_THREAD), CUDA_ERROR_NOT_READY);

  pthread_mutex_lock(&h.lock);
  gate_release(&h.g);
  h.state = 2;
  pthread_cond_broadcast(&h.cond);
  pthread_mutex_unlock(&h.lock);
  pthread_join(t, NULL);
  OK(cuCtxSynchronize());
  CHECK(*h.g.out == 1, "the held kernel saw its release (%d)", *h.g.out);
  CHECK(read_int(d) == 10, "default stream work ran in order");
  gate_free(&h.g);

  /* The legacy stream waits for blocking streams, not for non-blocking ones. */
  CUstream blocking = NULL, nonblocking = NULL;
  OK(cuStreamCreate(&blocking, CU_STREAM_DEFAULT));
  OK(cuStreamCreate(&nonblocking, CU_STREAM_NON_BLOCKING));
  gate g = gate_on(blocking);
  OK(cuMemsetD32Async(d, 11, 1, CU_STREAM_LEGACY));
  EXPECT(cuStreamQuery(CU_STREAM_LEGACY), CUDA_ERROR_NOT_READY);
  OK(cuMemsetD32Async(d, 12, 1, nonblocking));
  OK(cuStreamSynchronize(nonblocking));
  gate_release(&g);
  OK(cuStreamSynchronize(CU_STREAM_LEGACY));
  CHECK(read_int(d) == 11, "legacy stream order after the blocking stream");
  gate_free(&g);
  OK(cuStreamDestroy(blocking));
  OK(cuStreamDestroy(nonblocking));
  OK(cuMemFree(d));
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s <conformance kernels module>\n", argv[0]);
    return 2;
  }
  /* Each part named as it starts, line by line: a crash (a driver that
   * dereferences what it was handed) still shows how far the program got. */
  setvbuf(stdout, NULL, _IOLBF, 0);
#define PART(call) (printf("-- %s\n", #call), call)
  PART(check_before_init());
  OK(cuInit(0));
  PART(check_symbols());
  PART(check_devices_and_contexts());
  CUresult rc = cuModuleLoad(&mod, argv[1]);
  CHECK(rc == CUDA_SUCCESS, "cuModuleLoad(%s): %s", argv[1], err_name(rc));
  PART(check_memory());
  if (rc == CUDA_SUCCESS) {
    PART(check_launch());
    PART(check_streams_and_events());
    PART(check_default_stream_semantics());
    OK(cuModuleUnload(mod));
  }
  OK(cuCtxSynchronize());
  OK(cuDevicePrimaryCtxRelease(0));
  printf("%s build: %d passed, %d failed\n", PTDS ? "per-thread" : "legacy", passed, failed);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
