// Kernels of the MLP training sample (samples/train_mlp.py): a whole SGD step
// on the device. Every thread owns its outputs and every reduction runs in a
// fixed order in one thread, so results do not depend on scheduling: the
// same run gives the same bits.

// C[M,N] = op(A) @ op(B), row-major; op(A) is MxK (A is KxM when transA),
// op(B) is KxN (B is NxK when transB). One thread per element of C.
extern "C" __global__ void matmul(const float *A, const float *B, float *C, int M, int N, int K, int transA,
                                  int transB) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= M * N) return;
  int m = idx / N, n = idx % N;
  float acc = 0.0f;
  for (int k = 0; k < K; k++) {
    float a = transA ? A[k * M + m] : A[m * K + k];
    float b = transB ? B[n * K + k] : B[k * N + n];
    acc += a * b;
  }
  C[idx] = acc;
}

// H = relu(Z + b), b broadcast over the M rows.
extern "C" __global__ void bias_relu(const float *Z, const float *b, float *H, int M, int N) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= M * N) return;
  float v = Z[idx] + b[idx % N];
  H[idx] = v > 0.0f ? v : 0.0f;
}

// Y += b, b broadcast over the M rows.
extern "C" __global__ void bias_add(float *Y, const float *b, int M, int N) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx < M * N) Y[idx] += b[idx % N];
}

// Mean squared error of Y against T: one thread per row writes the row's sum
// of squares and the gradient dY = 2 (Y - T) / (M N).
extern "C" __global__ void mse_grad(const float *Y, const float *T, float *dY, float *row_loss, int M, int N) {
  int m = blockIdx.x * blockDim.x + threadIdx.x;
  if (m >= M) return;
  float scale = 2.0f / (float)(M * N);
  float s = 0.0f;
  for (int n = 0; n < N; n++) {
    float d = Y[m * N + n] - T[m * N + n];
    s += d * d;
    dY[m * N + n] = d * scale;
  }
  row_loss[m] = s;
}

// out[0] = scale * sum(in[0..n)), summed in order by a single thread.
extern "C" __global__ void sum_scaled(const float *in, float *out, int n, float scale) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  float s = 0.0f;
  for (int i = 0; i < n; i++) s += in[i];
  out[0] = s * scale;
}

// out[n] = sum over rows of X[M,N], one thread per column.
extern "C" __global__ void col_sum(const float *X, float *out, int M, int N) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float s = 0.0f;
  for (int m = 0; m < M; m++) s += X[m * N + n];
  out[n] = s;
}

// dH *= (H > 0): the gradient through relu.
extern "C" __global__ void relu_backward(float *dH, const float *H, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && H[i] <= 0.0f) dH[i] = 0.0f;
}

// W -= lr * dW over all parameters at once (they share one buffer).
extern "C" __global__ void sgd(float *W, const float *dW, float lr, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) W[i] -= lr * dW[i];
}

// ---- ballast: extra device memory that makes checkpoints big -------------

__device__ unsigned int mix32(unsigned int x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Fill words [t*per_thread, (t+1)*per_thread) of buf with a hash of their
// index and the seed: contiguous runs per thread keep it fast on a CPU.
extern "C" __global__ void ballast_fill(unsigned int *buf, unsigned long long n, unsigned long long per_thread,
                                        unsigned int seed) {
  unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  unsigned long long begin = t * per_thread;
  unsigned long long end = begin + per_thread < n ? begin + per_thread : n;
  for (unsigned long long i = begin; i < end; i++) buf[i] = mix32((unsigned int)i ^ mix32((unsigned int)(i >> 32) + seed));
}

// Step `step` rewrites `count` words, thread j the word j*stride + offset
// (offset < stride, so no two threads touch the same word), each from its
// old value: the final contents depend on every step having seen the last.
extern "C" __global__ void ballast_touch(unsigned int *buf, unsigned long long stride, unsigned long long offset,
                                         unsigned int count, unsigned int step) {
  unsigned int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= count) return;
  unsigned long long i = (unsigned long long)j * stride + offset;
  buf[i] = mix32(buf[i] + step) ^ j;
}

// out[c] = a 64-bit hash of words [c*chunk, (c+1)*chunk) of buf.
extern "C" __global__ void ballast_digest(const unsigned int *buf, unsigned long long n, unsigned long long chunk,
                                          unsigned long long *out, unsigned long long nchunks) {
  unsigned long long c = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= nchunks) return;
  unsigned long long begin = c * chunk;
  unsigned long long end = begin + chunk < n ? begin + chunk : n;
  // Four independent lanes: a hash chain per word would be latency bound.
  unsigned long long h[4] = {0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull, 0x2545f4914f6cdd1dull};
  unsigned long long i = begin;
  for (; i + 4 <= end; i += 4)
    for (int l = 0; l < 4; l++) h[l] = (h[l] ^ buf[i + l]) * 0x100000001b3ull;
  for (; i < end; i++) h[0] = (h[0] ^ buf[i]) * 0x100000001b3ull;
  out[c] = h[0] ^ (h[1] * 3) ^ (h[2] * 5) ^ (h[3] * 7) ^ (end - begin);
}
