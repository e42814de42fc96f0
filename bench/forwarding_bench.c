/* forwarding_bench: what the driver API costs the calling thread.
 *
 * A driver-API program, linked against the fake driver only to resolve the
 * API (no RPATH): it measures whichever libcuda.so.1 it gets at run time, so
 * the same binary measures the fake driver directly and the interposer
 * (under `cedana exec --gpu`), or NVIDIA's driver. bench/forwarding.py runs
 * it both ways and compares.
 *
 * It prints one JSON object on stdout:
 *   launch_us        time per cuLaunchKernel of an empty kernel, seen by the
 *                    caller: batches of --batch launches, each batch timed
 *                    from its first launch to the return of its last (the
 *                    cuStreamSynchronize after each batch is not counted);
 *                    median, min and p90 over batches
 *   launch_args_us   the same with a kernel of three parameters
 *   graph_us         a captured graph of 8 launches of the three-parameter
 *                    kernel: time per cuGraphLaunch, and per the same 8
 *                    launches made one by one (batches as launch_us)
 *   launch_rate      --launches launches then one cuStreamSynchronize, wall
 *                    time: sustained launches per second
 *   query_us         cuStreamQuery on an idle stream, each call timed:
 *                    p50, p99, mean, max over --queries calls
 *   memcpy_gbps      cuMemcpyHtoD / cuMemcpyDtoH of --copy-mib MiB, from
 *                    pageable (malloc) and pinned (cuMemAllocHost) memory;
 *                    median over --copy-reps timed copies, GB/s (1e9 B/s)
 * Everything is warmed up first (first-touch page faults, lazy set-up in the
 * driver, the controller's spin state).
 *
 * Usage: forwarding_bench [--kernels DIR] [--batch N] [--batches N]
 *                         [--launches N] [--queries N] [--copy-mib N]
 *                         [--copy-reps N]
 * The fake driver's module (empty.fake.so) is found in --kernels DIR, else
 * $CEDANA_GPU_KERNELS_DIR, else ../kernels next to this binary; a real
 * driver takes the PTX below instead.
 */
#define _GNU_SOURCE
#include <cuda.h>

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The kernels of bench/kernels/empty.cu as PTX, for real GPUs: the driver
 * JIT-compiles it for whatever device it has (ISA 7.0 is CUDA 11.0). */
static const char EMPTY_PTX[] =
    ".version 7.0\n"
    ".target sm_52\n"
    ".address_size 64\n"
    ".visible .entry empty()\n"
    "{\n"
    "  ret;\n"
    "}\n"
    ".visible .entry empty_args(.param .u64 a, .param .u64 b, .param .u32 n)\n"
    "{\n"
    "  ret;\n"
    "}\n";

static void die(const char *what, CUresult rc) {
  const char *name = NULL, *text = NULL;
  if (cuGetErrorName(rc, &name) != CUDA_SUCCESS) name = "unknown error";
  if (cuGetErrorString(rc, &text) != CUDA_SUCCESS) text = "";
  fprintf(stderr, "forwarding_bench: %s failed: %s (%d): %s\n", what, name, (int)rc, text);
  exit(1);
}

#define CHECK(call)                           \
  do {                                        \
    CUresult rc_ = (call);                    \
    if (rc_ != CUDA_SUCCESS) die(#call, rc_); \
  } while (0)

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of sorted values, nearest rank. */
static uint64_t quantile_u64(const uint64_t *sorted, size_t n, double q) {
  size_t i = (size_t)(q * (double)n);
  return sorted[i < n ? i : n - 1];
}

static double quantile_double(const double *sorted, size_t n, double q) {
  size_t i = (size_t)(q * (double)n);
  return sorted[i < n ? i : n - 1];
}

typedef struct options {
  char kernels[PATH_MAX];
  long batch, batches, launches, queries, copy_mib, copy_reps;
} options;

static void usage(void) {
  fprintf(stderr,
          "usage: forwarding_bench [--kernels DIR] [--batch N] [--batches N] [--launches N]\n"
          "                        [--queries N] [--copy-mib N] [--copy-reps N]\n");
  exit(2);
}

static long positive(const char *name, const char *v) {
  char *end;
  long x = strtol(v, &end, 10);
  if (*end || x < 1 || x > 100000000L) {
    fprintf(stderr, "forwarding_bench: %s wants a whole number from 1 to 100000000, not '%s'\n",
            name, v);
    exit(2);
  }
  return x;
}

static void default_kernels_dir(char *out, size_t size) {
  const char *env = getenv("CEDANA_GPU_KERNELS_DIR");
  int len;
  if (env && *env) {
    len = snprintf(out, size, "%s", env);
  } else {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
      out[0] = '\0';
      return;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    len = snprintf(out, size, "%s/../kernels", exe);
  }
  if (len < 0 || (size_t)len >= size) {
    fprintf(stderr, "forwarding_bench: the kernels directory's path is too long\n");
    exit(2);
  }
}

static void parse(int argc, char **argv, options *o) {
  o->kernels[0] = '\0';
  o->batch = 1000;
  o->batches = 50;
  o->launches = 200000;
  o->queries = 20000;
  o->copy_mib = 64;
  o->copy_reps = 3;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) usage();
    const char *v = argv[++i];
    if (strcmp(a, "--kernels") == 0) {
      if (strlen(v) >= sizeof o->kernels) usage();
      snprintf(o->kernels, sizeof o->kernels, "%s", v);
    } else if (strcmp(a, "--batch") == 0)
      o->batch = positive(a, v);
    else if (strcmp(a, "--batches") == 0)
      o->batches = positive(a, v);
    else if (strcmp(a, "--launches") == 0)
      o->launches = positive(a, v);
    else if (strcmp(a, "--queries") == 0)
      o->queries = positive(a, v);
    else if (strcmp(a, "--copy-mib") == 0)
      o->copy_mib = positive(a, v);
    else if (strcmp(a, "--copy-reps") == 0)
      o->copy_reps = positive(a, v);
    else
      usage();
  }
  if (!o->kernels[0]) default_kernels_dir(o->kernels, sizeof o->kernels);
}

/* The driver's ways of saying "this image is not for me". */
static int is_refusal(CUresult rc) {
  switch (rc) {
  case CUDA_ERROR_INVALID_IMAGE:
  case CUDA_ERROR_INVALID_PTX:
  case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
  case CUDA_ERROR_NO_BINARY_FOR_GPU:
  case CUDA_ERROR_JIT_COMPILER_NOT_FOUND:
  case CUDA_ERROR_JIT_COMPILATION_DISABLED:
  case CUDA_ERROR_NOT_SUPPORTED:
    return 1;
  default:
    return 0;
  }
}

/* The PTX on a real driver, the fake driver's module otherwise. */
static CUmodule load_module(const char *dir, const char **image) {
  CUmodule mod;
  CUresult rc = cuModuleLoadData(&mod, EMPTY_PTX);
  if (rc == CUDA_SUCCESS) {
    *image = "ptx";
    return mod;
  }
  if (!is_refusal(rc)) die("cuModuleLoadData(PTX)", rc);
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/empty.fake.so", dir);
  rc = cuModuleLoad(&mod, path);
  if (rc != CUDA_SUCCESS) {
    fprintf(stderr, "forwarding_bench: the driver refuses the PTX and cannot load %s (%d)%s\n",
            path, (int)rc,
            rc == CUDA_ERROR_FILE_NOT_FOUND ? ": build the project, or pass --kernels DIR" : "");
    exit(1);
  }
  *image = "empty.fake.so";
  return mod;
}

/* ---- the measurements --------------------------------------------------------- */

typedef struct launch_stats {
  double median_us, min_us, p90_us;
} launch_stats;

/* Per-launch cost over `batches` batches of `batch` launches; the sync after
 * each batch drains the queue (and the forwarding ring) and is not timed. */
static launch_stats launch_cost(CUfunction f, void **params, CUstream s, long batch, long batches) {
  double *per = calloc((size_t)batches, sizeof *per);
  if (!per) die("calloc", CUDA_ERROR_OUT_OF_MEMORY);
  for (long b = 0; b < batches; b++) {
    uint64_t t0 = now_ns();
    for (long i = 0; i < batch; i++) CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    uint64_t t1 = now_ns();
    CHECK(cuStreamSynchronize(s));
    per[b] = (double)(t1 - t0) / 1000.0 / (double)batch;
  }
  qsort(per, (size_t)batches, sizeof *per, cmp_double);
  launch_stats st = {quantile_double(per, (size_t)batches, 0.5), per[0],
                     quantile_double(per, (size_t)batches, 0.9)};
  free(per);
  return st;
}

static double launch_rate(CUfunction f, CUstream s, long n, double *seconds) {
  uint64_t t0 = now_ns();
  for (long i = 0; i < n; i++) CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, NULL, NULL));
  CHECK(cuStreamSynchronize(s));
  uint64_t t1 = now_ns();
  *seconds = (double)(t1 - t0) / 1e9;
  return (double)n / *seconds;
}

/* A graph of GRAPH_NODES launches of f against the same launches made one by
 * one: microseconds per graph launch and per sequence, medians over
 * `batches` batches of `batch / GRAPH_NODES` of them (each batch timed up to
 * its last return, then drained untimed). */
#define GRAPH_NODES 8
static void graph_cost(CUfunction f, void **params, CUstream s, long batch, long batches, double *graph_us,
                       double *seq_us) {
  CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
  for (int k = 0; k < GRAPH_NODES; k++) CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
  CUgraph g;
  CHECK(cuStreamEndCapture(s, &g));
  CUgraphExec e;
  CHECK(cuGraphInstantiate(&e, g, 0));
  long reps = batch / GRAPH_NODES > 0 ? batch / GRAPH_NODES : 1;
  double *gper = calloc((size_t)batches, sizeof *gper), *sper = calloc((size_t)batches, sizeof *sper);
  if (!gper || !sper) die("calloc", CUDA_ERROR_OUT_OF_MEMORY);
  for (long b = 0; b < batches; b++) {
    uint64_t t0 = now_ns();
    for (long i = 0; i < reps; i++) CHECK(cuGraphLaunch(e, s));
    uint64_t t1 = now_ns();
    CHECK(cuStreamSynchronize(s));
    uint64_t t2 = now_ns();
    for (long i = 0; i < reps; i++)
      for (int k = 0; k < GRAPH_NODES; k++) CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    uint64_t t3 = now_ns();
    CHECK(cuStreamSynchronize(s));
    gper[b] = (double)(t1 - t0) / 1000.0 / (double)reps;
    sper[b] = (double)(t3 - t2) / 1000.0 / (double)reps;
  }
  qsort(gper, (size_t)batches, sizeof *gper, cmp_double);
  qsort(sper, (size_t)batches, sizeof *sper, cmp_double);
  *graph_us = quantile_double(gper, (size_t)batches, 0.5);
  *seq_us = quantile_double(sper, (size_t)batches, 0.5);
  free(gper);
  free(sper);
  CHECK(cuGraphExecDestroy(e));
  CHECK(cuGraphDestroy(g));
}

typedef struct query_stats {
  double p50_us, p99_us, mean_us, max_us;
} query_stats;

static query_stats query_round_trip(CUstream s, long n) {
  uint64_t *ns = calloc((size_t)n, sizeof *ns);
  if (!ns) die("calloc", CUDA_ERROR_OUT_OF_MEMORY);
  uint64_t sum = 0;
  for (long i = 0; i < n; i++) {
    uint64_t t0 = now_ns();
    CUresult rc = cuStreamQuery(s);
    uint64_t t1 = now_ns();
    if (rc != CUDA_SUCCESS) die("cuStreamQuery (idle stream)", rc);
    ns[i] = t1 - t0;
    sum += ns[i];
  }
  qsort(ns, (size_t)n, sizeof *ns, cmp_u64);
  query_stats st = {(double)quantile_u64(ns, (size_t)n, 0.5) / 1000.0,
                    (double)quantile_u64(ns, (size_t)n, 0.99) / 1000.0,
                    (double)sum / (double)n / 1000.0, (double)ns[n - 1] / 1000.0};
  free(ns);
  return st;
}

/* Median GB/s of `reps` copies of `bytes`, after one untimed copy. */
static double copy_gbps(int htod, CUdeviceptr d, void *host, size_t bytes, long reps) {
  double *gbps = calloc((size_t)reps, sizeof *gbps);
  if (!gbps) die("calloc", CUDA_ERROR_OUT_OF_MEMORY);
  for (long r = -1; r < reps; r++) {
    uint64_t t0 = now_ns();
    if (htod)
      CHECK(cuMemcpyHtoD(d, host, bytes));
    else
      CHECK(cuMemcpyDtoH(host, d, bytes));
    uint64_t t1 = now_ns();
    if (r >= 0) gbps[r] = (double)bytes / (double)(t1 - t0); /* bytes per ns = GB/s */
  }
  qsort(gbps, (size_t)reps, sizeof *gbps, cmp_double);
  double median = quantile_double(gbps, (size_t)reps, 0.5);
  free(gbps);
  return median;
}

int main(int argc, char **argv) {
  options o;
  parse(argc, argv, &o);

  CHECK(cuInit(0));
  int version = 0;
  CHECK(cuDriverGetVersion(&version));
  CUdevice dev;
  CHECK(cuDeviceGet(&dev, 0));
  char name[256];
  CHECK(cuDeviceGetName(name, sizeof name, dev));
  CUcontext ctx;
  CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
  CHECK(cuCtxSetCurrent(ctx));
  const char *image;
  CUmodule mod = load_module(o.kernels, &image);
  CUfunction empty, empty_args;
  CHECK(cuModuleGetFunction(&empty, mod, "empty"));
  CHECK(cuModuleGetFunction(&empty_args, mod, "empty_args"));
  CUstream s;
  CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));

  const size_t bytes = (size_t)o.copy_mib << 20;
  CUdeviceptr d, dargs;
  CHECK(cuMemAlloc(&d, bytes));
  CHECK(cuMemAlloc(&dargs, 2 * sizeof(float)));
  int n = 1;
  void *args[] = {&dargs, &dargs, &n};

  /* Warm-up: the driver's and the controller's lazy set-up, the stream's
   * worker, the caller's channel, the code paths themselves. */
  for (int i = 0; i < 3; i++) {
    launch_cost(empty, NULL, s, o.batch, 2);
    launch_cost(empty_args, args, s, o.batch, 2);
  }
  query_round_trip(s, 2000);

  launch_stats plain = launch_cost(empty, NULL, s, o.batch, o.batches);
  launch_stats with_args = launch_cost(empty_args, args, s, o.batch, o.batches);
  double rate_seconds;
  double rate = launch_rate(empty, s, o.launches, &rate_seconds);
  query_stats q = query_round_trip(s, o.queries);
  double graph_us, seq_us;
  graph_cost(empty_args, args, s, o.batch, o.batches, &graph_us, &seq_us);

  /* Pageable memory touched first, so page faults are not measured. */
  void *pageable = malloc(bytes);
  if (!pageable) die("malloc", CUDA_ERROR_OUT_OF_MEMORY);
  memset(pageable, 0x5a, bytes);
  void *pinned;
  CHECK(cuMemAllocHost(&pinned, bytes));
  memset(pinned, 0xa5, bytes);
  double htod_pageable = copy_gbps(1, d, pageable, bytes, o.copy_reps);
  double dtoh_pageable = copy_gbps(0, d, pageable, bytes, o.copy_reps);
  double htod_pinned = copy_gbps(1, d, pinned, bytes, o.copy_reps);
  double dtoh_pinned = copy_gbps(0, d, pinned, bytes, o.copy_reps);

  CHECK(cuMemFreeHost(pinned));
  free(pageable);
  CHECK(cuMemFree(d));
  CHECK(cuMemFree(dargs));
  CHECK(cuStreamDestroy(s));
  CHECK(cuModuleUnload(mod));
  CHECK(cuDevicePrimaryCtxRelease(dev));

  /* The device name is the driver's; keep it printable as a JSON string. */
  for (char *c = name; *c; c++)
    if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) *c = '?';
  printf("{\"driver_version\": %d, \"device\": \"%s\", \"image\": \"%s\", "
         "\"launch_us\": {\"median\": %.4f, \"min\": %.4f, \"p90\": %.4f, \"batch\": %ld, "
         "\"batches\": %ld}, "
         "\"launch_args_us\": {\"median\": %.4f, \"min\": %.4f, \"p90\": %.4f}, "
         "\"launch_rate\": {\"per_s\": %.1f, \"launches\": %ld, \"seconds\": %.4f}, "
         "\"query_us\": {\"p50\": %.3f, \"p99\": %.3f, \"mean\": %.3f, \"max\": %.3f, "
         "\"n\": %ld}, "
         "\"graph_us\": {\"graph\": %.4f, \"sequence\": %.4f, \"nodes\": %d}, "
         "\"memcpy_gbps\": {\"htod_pageable\": %.3f, \"dtoh_pageable\": %.3f, "
         "\"htod_pinned\": %.3f, \"dtoh_pinned\": %.3f, \"mib\": %ld, \"reps\": %ld}}\n",
         version, name, image, plain.median_us, plain.min_us, plain.p90_us, o.batch, o.batches,
         with_args.median_us, with_args.min_us, with_args.p90_us, rate, o.launches, rate_seconds,
         q.p50_us, q.p99_us, q.mean_us, q.max_us, o.queries, graph_us, seq_us, GRAPH_NODES, htod_pageable,
         dtoh_pageable,
         htod_pinned, dtoh_pinned, o.copy_mib, o.copy_reps);
  return 0;
}
