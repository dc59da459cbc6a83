// One query row's attention over a K/V cache in eaglet's split layout ('transposed': keys and
// values alike [hd, stride] a head, the first columns live), read in place: the kernel of the
// one-token graph's eaglet.PastAttention node (src/native/ort-addon.cc) and of the cost probe
// scripts/native/kv-attend-probe.cc. AVX-512 (built with -march=native on a host that has it).
//
// It reads each row of K and V once, R rows at a time, front to back (R sequential streams), with
// the head's scores kept in L1: for keys, s += sum of R q[d] * K[d, :]; for values, R dot products
// against the weights. MLAS's one-row kernels read the same products at 0.68-0.90 of a one-row
// matvec's bandwidth on this machine; these at 0.98-1.05 (docs/performance.md, session 19).
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstddef>

namespace eaglet {

// Lanes [0, n) of a 16-lane vector (n >= 16: all).
inline __mmask16 lanes(int n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// exp(x) for x <= 0 (softmax after the max is taken out): x = n ln2 + r, |r| <= ln2 / 2, e^r by
// its Taylor series to r^7 (relative error < 1e-8 before rounding), times 2^n by VSCALEFPS.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.f));  // below that, e^x is 0 in float32
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);  // ln2 in two parts: hi exact in float
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  for (float c : {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

constexpr int R = 8;  // rows of K or V read together; a head's dims are a multiple of it

// s[0, P) = sum_d q[d] K[d, 0..P), K rows `stride` floats apart; s 64-byte aligned.
inline void scores(const float* q, const float* K, size_t stride, int hd, int P, float* s) {
  for (int d0 = 0; d0 < hd; d0 += R) {
    __m512 qv[R];
    const float* row[R];
    for (int r = 0; r < R; r++) (qv[r] = _mm512_set1_ps(q[d0 + r]), row[r] = K + size_t(d0 + r) * stride);
    const bool first = d0 == 0;
    int j = 0;
    for (; j + 64 <= P; j += 64) {  // four column vectors a step: independent FMA chains
      __m512 a[4];
      for (int c = 0; c < 4; c++) a[c] = first ? _mm512_setzero_ps() : _mm512_load_ps(s + j + 16 * c);
      for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) a[c] = _mm512_fmadd_ps(qv[r], _mm512_loadu_ps(row[r] + j + 16 * c), a[c]);
      for (int c = 0; c < 4; c++) _mm512_store_ps(s + j + 16 * c, a[c]);
    }
    for (; j < P; j += 16) {
      const __mmask16 m = lanes(P - j);
      __m512 a = first ? _mm512_setzero_ps() : _mm512_maskz_load_ps(m, s + j);
      for (int r = 0; r < R; r++) a = _mm512_fmadd_ps(qv[r], _mm512_maskz_loadu_ps(m, row[r] + j), a);
      _mm512_mask_store_ps(s + j, m, a);
    }
  }
}

// s[0, P) <- exp(s - m) with m = max(max s, floor); returns the sum (the caller adds its own terms
// at m), NaN when a score or `floor` is NaN (as a softmax over them is: the outputs then are NaN).
inline float softmax_unnormalized(float* s, int P, float& m_out, float floor = -INFINITY) {
  __m512 mx = _mm512_set1_ps(floor);
  __mmask16 nan = 0;
  for (int j = 0; j < P; j += 16) {
    const __m512 x = _mm512_mask_load_ps(_mm512_set1_ps(-INFINITY), lanes(P - j), s + j);
    nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    mx = _mm512_max_ps(mx, x);
  }
  if (nan || std::isnan(floor)) return m_out = NAN;
  m_out = _mm512_reduce_max_ps(mx);
  const __m512 m = _mm512_set1_ps(m_out);
  __m512 sum = _mm512_setzero_ps();
  for (int j = 0; j < P; j += 16) {
    const __mmask16 k = lanes(P - j);
    const __m512 e = _mm512_maskz_mov_ps(k, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_load_ps(k, s + j), m)));
    _mm512_mask_store_ps(s + j, k, e);
    sum = _mm512_add_ps(sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

// out[d] = scale * (sum_j w[j] V[d, j] over j < P + extra[d]), R rows of V at a time (one weight
// load serves R), two vectors a row a step (two accumulators a row: 10% faster at 2 threads).
inline void weighted_values(const float* w, const float* V, size_t stride, int hd, int P, float scale, float* out, const float* extra = nullptr) {
  for (int d0 = 0; d0 < hd; d0 += R) {
    const float* row[R];
    __m512 a[R], b[R];
    for (int r = 0; r < R; r++) (row[r] = V + size_t(d0 + r) * stride, a[r] = _mm512_setzero_ps(), b[r] = _mm512_setzero_ps());
    int j = 0;
    for (; j + 32 <= P; j += 32) {
      const __m512 w0 = _mm512_load_ps(w + j), w1 = _mm512_load_ps(w + j + 16);
      for (int r = 0; r < R; r++) (a[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(row[r] + j), a[r]), b[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(row[r] + j + 16), b[r]));
    }
    for (; j < P; j += 16) {
      const __mmask16 m = lanes(P - j);
      const __m512 wv = _mm512_maskz_load_ps(m, w + j);
      for (int r = 0; r < R; r++) a[r] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, row[r] + j), a[r]);
    }
    for (int r = 0; r < R; r++) out[d0 + r] = scale * (_mm512_reduce_add_ps(_mm512_add_ps(a[r], b[r])) + (extra ? extra[d0 + r] : 0.f));
  }
}

// One query row `q` (already scaled by 1/sqrt(hd)) of one head over its past K, V ([hd, stride],
// columns [0, L) read) plus the pass's own new key and value (kNew, vNew [hd]), with the additive
// mask over [past columns..., new] (mask[j] for j < L, maskNew for the new row): the one-token
// graph's scores, softmax and products. `s` holds L scores (64-byte aligned, L rounded up to 16).
inline void attend_row(const float* q, const float* K, const float* V, size_t stride, int hd, int L, const float* mask, float maskNew,
                       const float* kNew, const float* vNew, float* s, float* out) {
  scores(q, K, stride, hd, L, s);
  if (mask)
    for (int j = 0; j < L; j++) s[j] += mask[j];
  float sNew = maskNew;
  for (int d = 0; d < hd; d++) sNew += q[d] * kNew[d];
  float m;
  const float sum = softmax_unnormalized(s, L, m, sNew);
  const float wNew = std::exp(sNew - m);
  alignas(64) float extra[256];
  for (int d = 0; d < hd; d++) extra[d] = wNew * vNew[d];
  weighted_values(s, V, stride, hd, L, 1.f / (sum + wNew), out, extra);
}

}  // namespace eaglet
