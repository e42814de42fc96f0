/* Compile plain CUDA C kernels as host C++ for the fake CUDA driver.
 *
 * The same .cu file that nvcc compiles for a real GPU is included, after this
 * header, by a translation unit that gen_module.py writes; g++ builds it into
 * a module (`<set>.fake.so`, see fake_cuda_module.h) whose kernels run on the
 * CPU.
 *
 * What works: `extern "C" __global__` kernels, `__device__` helper functions,
 * `__device__` / `__constant__` globals, threadIdx / blockIdx / blockDim /
 * gridDim, atomics on global memory, the usual float math functions.
 *
 * The limitation: the fake driver runs the threads of a block one after
 * another, each to completion, so threads of a block cannot wait for each
 * other. `__syncthreads`, `__shared__` memory, warp votes and shuffles would
 * compile and silently compute something else, so they are compile errors
 * here. Write kernels where each thread works on its own outputs, and reduce
 * with atomics or in a second kernel. Blocks of one launch may run on several
 * host threads at once, which is why the indices are thread-local and the
 * atomics are real atomics.
 */
#ifndef CEDANA_FAKE_CUDA_KERNEL_H
#define CEDANA_FAKE_CUDA_KERNEL_H

#ifndef __cplusplus
#error "fake_cuda_kernel.h is compiled as C++ (g++), like CUDA C"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "fake_cuda_module.h"

/* ---- execution space and qualifiers ------------------------------------- */
/* Kernels and device functions stay out of the module's dynamic symbol table
 * (only fake_cuda_module is exported), which also lets g++ inline a kernel
 * into its grid loop. */
#define __global__ __attribute__((visibility("hidden")))
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
/* __restrict__ is understood by g++ as is. */

#define __shared__ _Pragma("GCC error \"__shared__ memory is not supported by the fake CUDA driver: it runs the threads of a block one after another\"")
#define __syncthreads() _Pragma("GCC error \"__syncthreads is not supported by the fake CUDA driver: it runs the threads of a block one after another\"")
#define __syncwarp(...) _Pragma("GCC error \"__syncwarp is not supported by the fake CUDA driver\"")
#define __shfl_sync(...) _Pragma("GCC error \"warp shuffles are not supported by the fake CUDA driver\"")
#define __shfl_down_sync(...) _Pragma("GCC error \"warp shuffles are not supported by the fake CUDA driver\"")
#define __shfl_up_sync(...) _Pragma("GCC error \"warp shuffles are not supported by the fake CUDA driver\"")
#define __shfl_xor_sync(...) _Pragma("GCC error \"warp shuffles are not supported by the fake CUDA driver\"")
#define __ballot_sync(...) _Pragma("GCC error \"warp votes are not supported by the fake CUDA driver\"")
#define __any_sync(...) _Pragma("GCC error \"warp votes are not supported by the fake CUDA driver\"")
#define __all_sync(...) _Pragma("GCC error \"warp votes are not supported by the fake CUDA driver\"")

/* Lets a source tell the two builds apart where it must. */
#define CEDANA_FAKE_CUDA 1

/* ---- built-in vector types ----------------------------------------------- */
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};
/* Alignments as CUDA's vector_types.h declares them: they decide the kernel
 * parameter layout. */
struct alignas(8) int2 {
  int x, y;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};
static inline int2 make_int2(int x, int y) { return int2{x, y}; }
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
static inline double2 make_double2(double x, double y) { return double2{x, y}; }

/* ---- built-in variables ------------------------------------------------
 * Set by the grid loop below for every simulated thread. Thread-local because
 * the driver may run blocks of one grid, and grids of several streams, on
 * several host threads at once. Internal linkage: each module has its own. */
static thread_local uint3 threadIdx;
static thread_local uint3 blockIdx;
static thread_local dim3 blockDim;
static thread_local dim3 gridDim;
static constexpr int warpSize = 32;

/* ---- math and intrinsics -------------------------------------------------*/
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
/* __expf, __logf, __sinf, __cosf and __powf come from glibc's <math.h>. */
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __fmaf_rn(float x, float y, float z) { return fmaf(x, y, z); }
static inline float __fadd_rn(float x, float y) { return x + y; }
static inline float __fmul_rn(float x, float y) { return x * y; }
static inline int __float_as_int(float x) {
  int i;
  std::memcpy(&i, &x, sizeof i);
  return i;
}
static inline float __int_as_float(int i) {
  float x;
  std::memcpy(&x, &i, sizeof x);
  return x;
}
static inline unsigned int __float_as_uint(float x) { return (unsigned int)__float_as_int(x); }
static inline float __uint_as_float(unsigned int i) { return __int_as_float((int)i); }
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return (unsigned int)(((unsigned long long)a * b) >> 32);
}
template <typename T>
static inline T __ldg(const T *p) {
  return *p;
}
static inline void __threadfence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* ---- atomics ---------------------------------------------------------------
 * Device-wide atomics: relaxed like CUDA's, but real, because other host
 * threads may run other blocks at the same time. The pointer alone decides
 * the type, so atomicAdd(&unsigned_counter, 1) works as with CUDA's overloads. */
template <typename T>
struct fk_identity {
  using type = T;
};
template <typename T>
using fk_nd = typename fk_identity<T>::type;
template <typename T>
static inline T atomicAdd(T *p, fk_nd<T> v) {
  if constexpr (std::is_integral_v<T>) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
  } else {
    T old, desired;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    do {
      desired = old + v;
    } while (!__atomic_compare_exchange(p, &old, &desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
  }
}
template <typename T>
static inline T atomicSub(T *p, fk_nd<T> v) {
  static_assert(std::is_integral_v<T>, "atomicSub takes integers");
  return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
}
template <typename T>
static inline T atomicExch(T *p, fk_nd<T> v) {
  T old;
  __atomic_exchange(p, &v, &old, __ATOMIC_RELAXED);
  return old;
}
template <typename T>
static inline T atomicCAS(T *p, fk_nd<T> compare, fk_nd<T> v) {
  __atomic_compare_exchange(p, &compare, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;
}
template <typename T>
static inline T atomicMin(T *p, fk_nd<T> v) {
  T old;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  while (v < old && !__atomic_compare_exchange(p, &old, &v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <typename T>
static inline T atomicMax(T *p, fk_nd<T> v) {
  T old;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  while (v > old && !__atomic_compare_exchange(p, &old, &v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <typename T>
static inline T atomicAnd(T *p, fk_nd<T> v) {
  return __atomic_fetch_and(p, v, __ATOMIC_RELAXED);
}
template <typename T>
static inline T atomicOr(T *p, fk_nd<T> v) {
  return __atomic_fetch_or(p, v, __ATOMIC_RELAXED);
}
template <typename T>
static inline T atomicXor(T *p, fk_nd<T> v) {
  return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED);
}
/* CUDA's wrap-around increment: ((old >= limit) ? 0 : old + 1). */
static inline unsigned int atomicInc(unsigned int *p, unsigned int limit) {
  unsigned int old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(p, &old, old >= limit ? 0u : old + 1u, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
  }
  return old;
}

/* ---- what gen_module.py's translation unit uses ---------------------------*/
namespace fake_cuda {

/* Parameters as CUDA lays them out in the argument buffer: in order, each at
 * its natural alignment. `size` ends at the last parameter's last byte (no
 * tail padding). */
template <typename... A>
struct param_layout {
  static constexpr std::size_t n = sizeof...(A);
  struct table {
    fk_param_info p[n > 0 ? n : 1];
    std::size_t size;
  };
  static constexpr table make() {
    table t{};
    const std::size_t sizes[] = {sizeof(A)..., 0};
    const std::size_t aligns[] = {alignof(A)..., 1};
    std::size_t off = 0;
    for (std::size_t i = 0; i < n; i++) {
      off = (off + aligns[i] - 1) / aligns[i] * aligns[i];
      t.p[i] = fk_param_info{off, sizes[i]};
      off += sizes[i];
    }
    t.size = off;
    return t;
  }
  static constexpr table value = make();
};

template <typename T>
static inline T load_param(const void *p) {
  static_assert(std::is_trivially_copyable_v<T>, "kernel parameters must be trivially copyable");
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <auto Kernel, typename... A, std::size_t... I>
static inline void run_grid(void *const *params, fk_dim3 grid, fk_dim3 block, unsigned long long first_block,
                            unsigned long long last_block, std::index_sequence<I...>) {
  /* Each simulated thread gets its own copy of the arguments, as on a GPU
   * where a kernel may modify its parameters. */
  const std::tuple<std::decay_t<A>...> args{load_param<std::decay_t<A>>(params[I])...};
  (void)params;
  (void)args;
  gridDim = dim3(grid.x, grid.y, grid.z);
  blockDim = dim3(block.x, block.y, block.z);
  const unsigned long long gxy = (unsigned long long)grid.x * grid.y;
  for (unsigned long long b = first_block; b < last_block; b++) {
    blockIdx = uint3{(unsigned int)(b % grid.x), (unsigned int)((b / grid.x) % grid.y), (unsigned int)(b / gxy)};
    for (unsigned int z = 0; z < block.z; z++) {
      for (unsigned int y = 0; y < block.y; y++) {
        for (unsigned int x = 0; x < block.x; x++) {
          threadIdx = uint3{x, y, z};
          Kernel(std::get<I>(args)...);
        }
      }
    }
  }
}

template <auto Kernel>
struct kernel;
template <typename... A, void (*Kernel)(A...)>
struct kernel<Kernel> {
  using layout = param_layout<std::decay_t<A>...>;
  static constexpr int nparams = (int)sizeof...(A);
  static constexpr const fk_param_info *param_table = sizeof...(A) ? layout::value.p : nullptr;
  static constexpr std::size_t params_size = layout::value.size;
  static void run(void *const *params, fk_dim3 grid, fk_dim3 block, unsigned long long first_block,
                  unsigned long long last_block) {
    run_grid<Kernel, A...>(params, grid, block, first_block, last_block, std::index_sequence_for<A...>{});
  }
};

} // namespace fake_cuda

#endif
