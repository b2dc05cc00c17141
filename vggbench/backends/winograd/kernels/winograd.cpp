// Winograd F(m x m, 3x3) tile transforms for vggbench's winograd backend (model.py).
//
// The GEMM between the transforms stays in torch (MKL's batched sgemm). These two kernels do what
// takes many passes over memory in plain torch ops, in one pass each:
//   input:  NHWC activations -> V[alpha^2][tiles][C] = B^T d B for each tile d, the zero padding implicit
//   output: M[alpha^2][tiles][K] -> NHWC output = A^T M A + bias, ReLU, cropped to the image
// Tiles are numbered p = (image * tiles_h + tile_row) * tiles_w + tile_col; a call handles the tiles
// [p0, p1), so the caller can work in cache-sized bands. Channels are processed 16 at a time (one
// AVX-512 register; the compiler vectorises the fixed-length inner loops), the transform matrices are
// compile-time constants, so multiplications by 0 and 1 vanish. Threads: OpenMP (torch's libgomp).
//
// The matrices (Wino<M>::BT, AT) and the tile sizes come from winograd_matrices.h, which
// vggbench/backends/winograd/native.py generates from matrices.py (the torch-op path's source) at build
// time: c++ -O3 -march=native -std=c++17 -fopenmp -shared -fPIC -I<folder of the header>.

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "winograd_matrices.h"

namespace {

constexpr int CB = 16;  // channels per block

// out[i][j] = sum_k T[i][k] in[k][j] for i < R, j < Cols: applies T along the first axis.
template <int R, int K, int Cols, typename Mat>
inline void rows(const Mat& t, const float (*in)[Cols][CB], float (*out)[Cols][CB]) {
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < Cols; ++j) {
      float acc[CB] = {};
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        if (t[i][k] == 0.f) continue;
        for (int l = 0; l < CB; ++l) acc[l] += t[i][k] * in[k][j][l];
      }
      for (int l = 0; l < CB; ++l) out[i][j][l] = acc[l];
    }
  }
}

// out[i][j] = sum_k in[i][k] T[j][k] for i < Rows, j < R: applies T along the second axis.
template <int R, int K, int Rows, typename Mat>
inline void cols(const Mat& t, const float (*in)[K][CB], float (*out)[R][CB]) {
#pragma GCC unroll 8
  for (int i = 0; i < Rows; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < R; ++j) {
      float acc[CB] = {};
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        if (t[j][k] == 0.f) continue;
        for (int l = 0; l < CB; ++l) acc[l] += t[j][k] * in[i][k][l];
      }
      for (int l = 0; l < CB; ++l) out[i][j][l] = acc[l];
    }
  }
}

// dst[0:n] = src[0:n]. stream: a non-temporal store of a whole block when it is aligned, for outputs far
// larger than the caches (it skips reading each line before writing it; call fence() before others read).
inline void store(float* dst, const float* src, int n, bool stream) {
#if defined(__AVX512F__)
  if (stream && n == CB && (reinterpret_cast<uintptr_t>(dst) & 63) == 0) {
    _mm512_stream_ps(dst, _mm512_loadu_ps(src));
    return;
  }
#elif defined(__AVX__)
  if (stream && n == CB && (reinterpret_cast<uintptr_t>(dst) & 31) == 0) {
    _mm256_stream_ps(dst, _mm256_loadu_ps(src));
    _mm256_stream_ps(dst + 8, _mm256_loadu_ps(src + 8));
    return;
  }
#endif
  for (int l = 0; l < n; ++l) dst[l] = src[l];
}

inline void fence() {
#if defined(__SSE__)
  _mm_sfence();
#endif
}

template <int M>
void input_tiles(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t p0, int64_t p1, float* v,
                 bool stream, int threads) {
  using W = Wino<M>;
  constexpr int A = W::A;
  const int64_t th = (h + M - 1) / M, tw = (w + M - 1) / M, tiles = p1 - p0, blocks = (c + CB - 1) / CB;
  (void)n;
#pragma omp parallel num_threads(threads)
  {
#pragma omp for collapse(2) schedule(static) nowait
  for (int64_t p = p0; p < p1; ++p) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t img = p / (th * tw), ty = p / tw % th, tx = p % tw, c0 = b * CB;
      const int cb = static_cast<int>(std::min<int64_t>(CB, c - c0));
      float d[A][A][CB], t1[A][A][CB], u[A][A][CB];
      for (int i = 0; i < A; ++i) {
        const int64_t y = ty * M - 1 + i;
        for (int j = 0; j < A; ++j) {
          const int64_t xx = tx * M - 1 + j;
          if (y < 0 || y >= h || xx < 0 || xx >= w) {
            for (int l = 0; l < CB; ++l) d[i][j][l] = 0.f;
            continue;
          }
          const float* src = x + ((img * h + y) * w + xx) * c + c0;
          if (cb == CB) {
            for (int l = 0; l < CB; ++l) d[i][j][l] = src[l];
          } else {
            for (int l = 0; l < CB; ++l) d[i][j][l] = l < cb ? src[l] : 0.f;
          }
        }
      }
      rows<A, A, A>(W::BT, d, t1);
      cols<A, A, A>(W::BT, t1, u);
      const int64_t q = p - p0;
      for (int i = 0; i < A; ++i) {
        for (int j = 0; j < A; ++j) {
          store(v + ((i * A + j) * tiles + q) * c + c0, u[i][j], cb, stream);
        }
      }
    }
  }
  fence();
  }
}

template <int M>
void output_tiles(const float* mm, const float* bias, float* out, int64_t n, int64_t h, int64_t w, int64_t k,
                  int64_t p0, int64_t p1, int relu, bool stream, int threads) {
  using W = Wino<M>;
  constexpr int A = W::A;
  const int64_t th = (h + M - 1) / M, tw = (w + M - 1) / M, tiles = p1 - p0, blocks = (k + CB - 1) / CB;
  (void)n;
#pragma omp parallel num_threads(threads)
  {
#pragma omp for collapse(2) schedule(static) nowait
  for (int64_t p = p0; p < p1; ++p) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t img = p / (th * tw), ty = p / tw % th, tx = p % tw, k0 = b * CB, q = p - p0;
      const int kb = static_cast<int>(std::min<int64_t>(CB, k - k0));
      float s[A][A][CB], t1[M][A][CB], o[M][M][CB], bb[CB];
      for (int l = 0; l < CB; ++l) bb[l] = l < kb && bias ? bias[k0 + l] : 0.f;
      for (int i = 0; i < A; ++i) {
        for (int j = 0; j < A; ++j) {
          const float* src = mm + ((i * A + j) * tiles + q) * k + k0;
          if (kb == CB) {
            for (int l = 0; l < CB; ++l) s[i][j][l] = src[l];
          } else {
            for (int l = 0; l < CB; ++l) s[i][j][l] = l < kb ? src[l] : 0.f;
          }
        }
      }
      rows<M, A, A>(W::AT, s, t1);
      cols<M, A, M>(W::AT, t1, o);
      for (int i = 0; i < M; ++i) {
        const int64_t y = ty * M + i;
        if (y >= h) break;
        for (int j = 0; j < M; ++j) {
          const int64_t xx = tx * M + j;
          if (xx >= w) break;
          float r[CB];
          for (int l = 0; l < CB; ++l) {
            r[l] = o[i][j][l] + bb[l];
            if (relu) r[l] = r[l] > 0.f ? r[l] : 0.f;
          }
          store(out + ((img * h + y) * w + xx) * k + k0, r, kb, stream);
        }
      }
    }
  }
  fence();
  }
}

}  // namespace

extern "C" {

// V[alpha^2][p1 - p0][c] from the NHWC input x [n][h][w][c]. Returns 0, or -1 for an unknown m.
// stream: non-temporal stores (for outputs far larger than the caches).
int vggbench_winograd_input(int m, const float* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t p0,
                            int64_t p1, float* v, int stream, int threads) {
  switch (m) {
#define VGGBENCH_CASE(M) \
  case M: input_tiles<M>(x, n, h, w, c, p0, p1, v, stream != 0, threads); return 0;
    VGGBENCH_WINOGRAD_TILES(VGGBENCH_CASE)
#undef VGGBENCH_CASE
    default: return -1;
  }
}

// The NHWC output out [n][h][w][k] for the tiles [p0, p1) from M[alpha^2][p1 - p0][k]; bias may be null.
int vggbench_winograd_output(int m, const float* mm, const float* bias, float* out, int64_t n, int64_t h, int64_t w,
                             int64_t k, int64_t p0, int64_t p1, int relu, int stream, int threads) {
  switch (m) {
#define VGGBENCH_CASE(M) \
  case M: output_tiles<M>(mm, bias, out, n, h, w, k, p0, p1, relu, stream != 0, threads); return 0;
    VGGBENCH_WINOGRAD_TILES(VGGBENCH_CASE)
#undef VGGBENCH_CASE
    default: return -1;
  }
}

}  // extern "C"
