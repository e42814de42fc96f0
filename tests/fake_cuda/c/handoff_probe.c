/* A job for the interposer's `auto` hand-off (test_interposer_handoff.py):
 * it asks for an export table the way NVIDIA's runtime does, then works on
 * the driver, and says what it saw.
 *
 *   handoff_probe <kernels module> <mode> [--hold]
 *
 * Modes:
 *   first       cuGetExportTable before anything else
 *   after-init  cuInit, then cuGetExportTable (no device state yet)
 *   late        cuInit and a device allocation, then cuGetExportTable
 * Then (not after a failed "late"): a context, memory, a module and a kernel
 * whose result is checked. With --hold it prints "holding" and waits for
 * SIGUSR1 before it ends.
 *
 * Lines on stdout: "export table: <CUresult number>", "work ok" (or "FAIL
 * ..." on stderr, exit 1), one "mapped: <path>" per CUDA driver object in
 * the process, "done".
 */
#define _GNU_SOURCE
#include <cuda.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 1000

#define OK(call)                                                       \
  do {                                                                 \
    CUresult rc_ = (call);                                             \
    if (rc_ != CUDA_SUCCESS) {                                         \
      fprintf(stderr, "FAIL %s: %d\n", #call, (int)rc_);               \
      exit(1);                                                         \
    }                                                                  \
  } while (0)

/* An export table id as NVIDIA's runtime asks for: any 16 bytes do here. */
static const CUuuid TABLE_ID = {{0x6b, (char)0xd5, (char)0xfb, 0x6c, 0x5b, (char)0xf4, (char)0xe7,
                                 0x4a, (char)0x89, (char)0x87, (char)0xd9, 0x39, 0x12, (char)0xfd,
                                 (char)0x9d, (char)0xf9}};

static CUresult export_table(void) {
  const void *table = NULL;
  CUresult rc = cuGetExportTable(&table, &TABLE_ID);
  printf("export table: %d\n", (int)rc);
  return rc;
}

/* Every distinct object of the process that is a CUDA driver (the
 * interposer's libcedana-gpu.so or a libcuda.so). */
static void print_mapped(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return;
  char line[4096], seen[8][1024];
  int nseen = 0;
  while (fgets(line, sizeof line, f)) {
    char *path = strchr(line, '/');
    if (!path) continue;
    path[strcspn(path, "\n")] = 0;
    const char *base = strrchr(path, '/') + 1;
    if (strncmp(base, "libcuda.so", 10) != 0 && strcmp(base, "libcedana-gpu.so") != 0) continue;
    int dup = 0;
    for (int i = 0; i < nseen; i++) dup |= strcmp(seen[i], path) == 0;
    if (dup || nseen == 8) continue;
    snprintf(seen[nseen++], sizeof seen[0], "%s", path);
    printf("mapped: %s\n", path);
  }
  fclose(f);
}

static void on_usr1(int sig) { (void)sig; }

static void hold_if(int hold, sigset_t *usr1) {
  if (!hold) return;
  printf("holding\n");
  int sig;
  sigwait(usr1, &sig);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNELS first|after-init|late [--hold]\n", argv[0]);
    return 2;
  }
  const char *mode = argv[2];
  int hold = argc > 3 && strcmp(argv[3], "--hold") == 0;
  signal(SIGUSR1, on_usr1);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, NULL);
  setvbuf(stdout, NULL, _IOLBF, 0);

  CUdeviceptr early = 0;
  if (strcmp(mode, "first") == 0) {
    export_table();
    OK(cuInit(0));
  } else {
    OK(cuInit(0));
    if (strcmp(mode, "late") == 0) {
      CUdevice d;
      CUcontext c;
      OK(cuDeviceGet(&d, 0));
      OK(cuDevicePrimaryCtxRetain(&c, d));
      OK(cuCtxSetCurrent(c));
      OK(cuMemAlloc(&early, 4096));
    }
    if (export_table() != CUDA_SUCCESS && early) {
      /* The runtime would give up here; the job itself goes on as before. */
      OK(cuMemFree(early));
      print_mapped();
      hold_if(hold, &usr1);
      printf("done\n");
      return 0;
    }
  }

  CUdevice dev;
  OK(cuDeviceGet(&dev, 0));
  CUcontext ctx;
  OK(cuDevicePrimaryCtxRetain(&ctx, dev));
  OK(cuCtxSetCurrent(ctx));
  CUmodule mod;
  OK(cuModuleLoad(&mod, argv[1]));
  CUfunction add_one;
  OK(cuModuleGetFunction(&add_one, mod, "add_one"));
  CUdeviceptr buf;
  OK(cuMemAlloc(&buf, N * sizeof(int)));
  int host[N];
  for (int i = 0; i < N; i++) host[i] = i;
  OK(cuMemcpyHtoD(buf, host, sizeof host));
  int n = N;
  void *args[] = {&buf, &buf, &n};
  OK(cuLaunchKernel(add_one, (N + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
  OK(cuMemcpyDtoH(host, buf, sizeof host));
  for (int i = 0; i < N; i++) {
    if (host[i] != i + 1) {
      fprintf(stderr, "FAIL host[%d] = %d\n", i, host[i]);
      return 1;
    }
  }
  printf("work ok\n");
  print_mapped();
  hold_if(hold, &usr1);
  OK(cuMemFree(buf));
  OK(cuModuleUnload(mod));
  OK(cuDevicePrimaryCtxRelease(dev));
  printf("done\n");
  return 0;
}
