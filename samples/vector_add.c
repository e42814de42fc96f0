/* vector_add: the smallest driver-API workload.
 *
 * Loads the vector_add kernel set, adds two vectors, then runs axpy with its
 * factor set through a __device__ global and its arguments packed in the
 * `extra` buffer form, and checks everything on the host. Prints
 * "result: ok" or fails with a message and a nonzero exit.
 *
 * Usage: vector_add [KERNELS_DIR]
 * The kernels are found in KERNELS_DIR, else $CEDANA_GPU_KERNELS_DIR, else
 * ../kernels next to this binary. The GPU images (.fatbin, .ptx) are tried
 * first and the fake driver's module (.fake.so) when the driver refuses them,
 * so the same binary runs on NVIDIA's driver and on the fake one; which
 * libcuda.so.1 it gets is up to LD_LIBRARY_PATH.
 */
#define _GNU_SOURCE
#include <cuda.h>

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 100003 /* not a multiple of the block size: the bounds check matters */
#define BLOCK 256

static void die(const char *what, CUresult rc) {
  const char *name = NULL, *text = NULL;
  if (cuGetErrorName(rc, &name) != CUDA_SUCCESS) name = "unknown error";
  if (cuGetErrorString(rc, &text) != CUDA_SUCCESS) text = "";
  fprintf(stderr, "vector_add: %s failed: %s (%d): %s\n", what, name, (int)rc, text);
  exit(1);
}

#define CHECK(call)                   \
  do {                                \
    CUresult rc_ = (call);            \
    if (rc_ != CUDA_SUCCESS) die(#call, rc_); \
  } while (0)

/* The driver's ways of saying "this image is not for me". */
static int is_refusal(CUresult rc) {
  switch (rc) {
  case CUDA_ERROR_INVALID_IMAGE:
  case CUDA_ERROR_INVALID_PTX:
  case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
  case CUDA_ERROR_NO_BINARY_FOR_GPU:
  case CUDA_ERROR_JIT_COMPILER_NOT_FOUND:
  case CUDA_ERROR_JIT_COMPILATION_DISABLED:
  case CUDA_ERROR_INVALID_SOURCE:
  case CUDA_ERROR_SHARED_OBJECT_INIT_FAILED:
  case CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND:
  case CUDA_ERROR_NOT_SUPPORTED:
  case CUDA_ERROR_FILE_NOT_FOUND:
    return 1;
  default:
    return 0;
  }
}

static void kernels_dir(int argc, char **argv, char *out, size_t size) {
  const char *env = getenv("CEDANA_GPU_KERNELS_DIR");
  int len;
  if (argc > 1) {
    len = snprintf(out, size, "%s", argv[1]);
  } else if (env && *env) {
    len = snprintf(out, size, "%s", env);
  } else {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
      fprintf(stderr, "vector_add: cannot find its own binary; pass the kernels directory\n");
      exit(1);
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    len = snprintf(out, size, "%s/../kernels", exe);
  }
  if (len < 0 || (size_t)len >= size) {
    fprintf(stderr, "vector_add: the kernels directory's path is too long\n");
    exit(1);
  }
}

/* Load the first image of the set the driver accepts. */
static CUmodule load_module(const char *dir, const char *set) {
  static const char *const suffixes[] = {".fatbin", ".ptx", ".fake.so"};
  char path[PATH_MAX + 64];
  int tried = 0;
  for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
    snprintf(path, sizeof path, "%s/%s%s", dir, set, suffixes[i]);
    if (access(path, R_OK) != 0) continue;
    tried++;
    CUmodule mod;
    CUresult rc = cuModuleLoad(&mod, path);
    if (rc == CUDA_SUCCESS) {
      printf("module: %s%s\n", set, suffixes[i]);
      return mod;
    }
    if (!is_refusal(rc)) die("cuModuleLoad", rc);
  }
  fprintf(stderr, "vector_add: no image of '%s' in %s %s\n", set, dir,
          tried ? "is accepted by this driver" : "(build the samples, or pass the kernels directory)");
  exit(1);
}

int main(int argc, char **argv) {
  char dir[PATH_MAX];
  kernels_dir(argc, argv, dir, sizeof dir);

  CHECK(cuInit(0));
  CUdevice dev;
  CHECK(cuDeviceGet(&dev, 0));
  CUcontext ctx;
  CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
  CHECK(cuCtxSetCurrent(ctx));

  CUmodule mod = load_module(dir, "vector_add");
  CUfunction add, axpy;
  CHECK(cuModuleGetFunction(&add, mod, "vector_add"));
  CHECK(cuModuleGetFunction(&axpy, mod, "axpy"));

  /* Small integers: every sum and product below is exact in float, so the
   * host can compare bit for bit whatever the device's rounding. */
  static float a[N], b[N], c[N];
  for (int i = 0; i < N; i++) {
    a[i] = (float)(i % 1000);
    b[i] = (float)(2 * (i % 7));
  }
  const size_t bytes = sizeof a;
  CUdeviceptr da, db, dc;
  CHECK(cuMemAlloc(&da, bytes));
  CHECK(cuMemAlloc(&db, bytes));
  CHECK(cuMemAlloc(&dc, bytes));
  CHECK(cuMemcpyHtoD(da, a, bytes));
  CHECK(cuMemcpyHtoD(db, b, bytes));

  int n = N;
  void *params[] = {&da, &db, &dc, &n};
  const unsigned grid = (N + BLOCK - 1) / BLOCK;
  CHECK(cuLaunchKernel(add, grid, 1, 1, BLOCK, 1, 1, 0, NULL, params, NULL));
  CHECK(cuMemcpyDtoH(c, dc, bytes));
  for (int i = 0; i < N; i++) {
    if (c[i] != a[i] + b[i]) {
      fprintf(stderr, "vector_add: c[%d] = %g, expected %g\n", i, c[i], a[i] + b[i]);
      return 1;
    }
  }

  /* axpy: c = alpha * a + c, alpha set in the module's global. */
  CUdeviceptr alpha_ptr, count_ptr;
  size_t alpha_size, count_size;
  CHECK(cuModuleGetGlobal(&alpha_ptr, &alpha_size, mod, "axpy_alpha"));
  CHECK(cuModuleGetGlobal(&count_ptr, &count_size, mod, "axpy_threads"));
  if (alpha_size != sizeof(float) || count_size != sizeof(unsigned)) {
    fprintf(stderr, "vector_add: globals have sizes %zu and %zu, expected 4 and 4\n", alpha_size,
            count_size);
    return 1;
  }
  const float alpha = 3.0f;
  const unsigned zero = 0;
  CHECK(cuMemcpyHtoD(alpha_ptr, &alpha, sizeof alpha));
  CHECK(cuMemcpyHtoD(count_ptr, &zero, sizeof zero));

  /* The packed form: the parameters at their natural alignment, as the
   * kernel's (const float *x, float *y, int n) lays them out. The size ends
   * at the last parameter: NVIDIA's driver refuses a size that counts the
   * struct's tail padding (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES). */
  struct axpy_args {
    CUdeviceptr x, y;
    int n;
  } packed = {da, dc, N};
  size_t packed_size = offsetof(struct axpy_args, n) + sizeof packed.n;
  void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &packed_size,
                   CU_LAUNCH_PARAM_END};
  /* A blocking stream: its launch waits for the copies above, which went to
   * the legacy default stream (a copy from pageable memory may still be in
   * flight when cuMemcpyHtoD returns). */
  CUstream stream;
  CHECK(cuStreamCreate(&stream, CU_STREAM_DEFAULT));
  CHECK(cuLaunchKernel(axpy, grid, 1, 1, BLOCK, 1, 1, 0, stream, NULL, extra));
  CHECK(cuStreamSynchronize(stream));
  CHECK(cuMemcpyDtoH(c, dc, bytes));
  unsigned count = 0;
  CHECK(cuMemcpyDtoH(&count, count_ptr, sizeof count));
  for (int i = 0; i < N; i++) {
    const float want = alpha * a[i] + a[i] + b[i];
    if (c[i] != want) {
      fprintf(stderr, "vector_add: after axpy c[%d] = %g, expected %g\n", i, c[i], want);
      return 1;
    }
  }
  if (count != N) {
    fprintf(stderr, "vector_add: axpy counted %u threads, expected %d\n", count, N);
    return 1;
  }

  CHECK(cuStreamDestroy(stream));
  CHECK(cuMemFree(da));
  CHECK(cuMemFree(db));
  CHECK(cuMemFree(dc));
  CHECK(cuModuleUnload(mod));
  CHECK(cuDevicePrimaryCtxRelease(dev));
  printf("result: ok\n");
  return 0;
}
