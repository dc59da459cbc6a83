// y = x W^T for 4- or 8-bit blockwise weights (blocks of 128, symmetric, zero point 8 or 128,
// fp32 scales: the layout of ORT's MatMulNBits and src/model/quantize.ts) that reads each packed
// block once for all of a pass's rows: eaglet.BlockMatMul in ort-addon.cc. First measured as a
// probe (scripts/native/q4-rows-probe.cc, docs/performance.md, "A q4 kernel reading each block
// once for all rows"); this is that kernel for any row count, column count and bias, and 8 bits.
//
// Weights are reordered once (`Tiles`), as MLAS repacks MatMulNBits' weights: per 16 columns
// and block, steps of one 64-byte vector holding 4 bytes of each column, so each VPDPBUSD lane is
// one column and its int32 sum is that column's exact block dot product. 4 bits: 16 steps of 8
// elements (elements 0-3 in the low nibbles, 4-7 in the high). 8 bits: 32 steps of 4 elements.
// Activations are int8 per block of 128 (scale max|a| / 127, round to nearest, as
// accuracy_level 4 does; ours, not MLAS's bits). The zero point enters as a seed of -zero x the
// block's activation sum.
//
// Row-exact: a row's result does not depend on how many rows the pass has or where the row
// sits in it (rows are computed in tiles of up to 4, each row's sums in the same order in every
// tile size), so a one-token step and a verification pass compute a row alike, bit for bit,
// with no padded row. A row holding a NaN or an infinity gives NaN in every output column.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

namespace eaglet {
namespace blockmm {

constexpr int BLK = 128, COLS = 16, MAX_M = 4;
// Blocks whose max |a| is below this are scaled by 2^100 before quantizing (see QuantRows).
constexpr float TINY = 1e-30f;

template <typename T>
struct AlignedBuf {
  T* p = nullptr;
  size_t n = 0;
  AlignedBuf() = default;
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  ~AlignedBuf() { std::free(p); }
  void resize(size_t count) {
    if (count <= n) return;
    std::free(p);
    p = static_cast<T*>(std::aligned_alloc(64, ((count * sizeof(T) + 63) / 64) * 64));
    if (!p) throw std::bad_alloc();
    n = count;
  }
};

// W [n, k] in the kernel's order (see the header); columns past n (up to a multiple of 16) hold the zero point.
struct Tiles {
  int n = 0, k = 0, bits = 0, blocks = 0, groups = 0, steps = 0;
  const void* source = nullptr;  // the packed bytes these were made from
  AlignedBuf<uint8_t> tiles;     // [groups, blocks, steps, 64]
  AlignedBuf<float> scales;      // [groups, blocks, 16]

  // From MatMulNBits' layout: packed [n, k/128, 128 * bits / 8] (4 bits: element 2j in the low nibble), scales [n, k/128].
  void build(const uint8_t* packed, const float* sc, int n_, int k_, int bits_) {
    n = n_, k = k_, bits = bits_, blocks = k / BLK, groups = (n + COLS - 1) / COLS, steps = bits == 4 ? BLK / 8 : BLK / 4, source = packed;
    const int blob = BLK * bits / 8, zero = 1 << (bits - 1);
    tiles.resize(size_t(groups) * blocks * steps * 64);
    scales.resize(size_t(groups) * blocks * COLS);
    for (int g = 0; g < groups; g++)
      for (int b = 0; b < blocks; b++) {
        float* s = scales.p + (size_t(g) * blocks + b) * COLS;
        uint8_t* t = tiles.p + (size_t(g) * blocks + b) * steps * 64;
        for (int c = 0; c < COLS; c++) {
          const int col = g * COLS + c;
          s[c] = col < n ? sc[size_t(col) * blocks + b] : 0.f;
          const uint8_t* p = col < n ? packed + (size_t(col) * blocks + b) * blob : nullptr;
          auto code = [&](int j) { return !p ? zero : bits == 8 ? p[j] : (p[j >> 1] >> ((j & 1) * 4)) & 15; };
          for (int st = 0; st < steps; st++)
            for (int i = 0; i < 4; i++)
              t[st * 64 + c * 4 + i] = bits == 8 ? uint8_t(code(st * 4 + i)) : uint8_t(code(st * 8 + i) | (code(st * 8 + i + 4) << 4));
        }
      }
  }
};

// A pass's rows as int8 blocks: q [m][k], per (m, block) the scale and the sum of q.
struct QuantRows {
  AlignedBuf<int8_t> q;
  AlignedBuf<float> scale;
  AlignedBuf<int32_t> sum;
  int k = 0, blocks = 0;

  void quantize(const float* x, int m, int k_) {
    k = k_, blocks = k / BLK;
    q.resize(size_t(m) * k), scale.resize(size_t(m) * blocks), sum.resize(size_t(m) * blocks);
    for (int r = 0; r < m; r++) row(x + size_t(r) * k, r);
  }

 private:
  void row(const float* x, int r) {
    // 0 * x is NaN for a NaN or an infinity: such a row's scales become NaN, so its outputs are.
    __m512 bad = _mm512_setzero_ps();
    for (int b = 0; b < blocks; b++) {
      const float* a = x + b * BLK;
      __m512 amax = _mm512_setzero_ps();
      for (int j = 0; j < BLK; j += 16) {
        const __m512 v = _mm512_loadu_ps(a + j);
        amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
        bad = _mm512_add_ps(bad, _mm512_mul_ps(v, _mm512_setzero_ps()));
      }
      const float mx = _mm512_reduce_max_ps(amax);
      // Below max|a| ~ 3.7e-37, 127 / max|a| overflows: such a block is scaled up by 2^100 first
      // (exact) and quantized against its scaled maximum. The scale stays max|a| / 127.
      const float pre = mx > 0 && mx < TINY ? 0x1p100f : 1.f, inv = mx > 0 ? 127.f / (mx * pre) : 0.f;
      const __m512 vinv = _mm512_set1_ps(inv), vpre = _mm512_set1_ps(pre);
      int8_t* out = q.p + size_t(r) * k + b * BLK;
      __m512i total = _mm512_setzero_si512();
      for (int j = 0; j < BLK; j += 16) {
        const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(a + j), vpre), vinv));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm512_cvtsepi32_epi8(v));
        total = _mm512_add_epi32(total, v);
      }
      scale.p[size_t(r) * blocks + b] = mx / 127.f;
      sum.p[size_t(r) * blocks + b] = _mm512_reduce_add_epi32(total);
    }
    if (std::isnan(_mm512_reduce_add_ps(bad)))
      for (int b = 0; b < blocks; b++) scale.p[size_t(r) * blocks + b] = std::numeric_limits<float>::quiet_NaN();
  }
};

// acc += a (unsigned bytes) . b (signed bytes), four at a time. Inline asm: GCC 12 copies the
// accumulator around each _mm512_dpbusd_epi32 (16 extra moves a step at 4 rows).
// Built with -march=native: without AVX-512 VNNI (and BW) the addon still builds, and BlockMatMul says it cannot run.
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
constexpr bool AVAILABLE = true;
inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}
#else
constexpr bool AVAILABLE = false;
inline __m512i dpbusd(__m512i acc, __m512i, __m512i) { return acc; }
#endif

inline int32_t load4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Column group g (16 columns) of rows [r0, r0 + M) into y [rows, w.n] (+ bias); columns past
// w.n are not stored. Each 64-byte step is loaded (and for 4 bits unpacked) once for the M rows;
// two accumulators a row (the low and high nibbles, or even and odd steps) for two VPDPBUSD chains.
template <int BITS, int M>
void group_rows(const Tiles& w, const QuantRows& x, int r0, int g, float* y, const float* bias) {
  constexpr int STEPS = BITS == 4 ? BLK / 8 : BLK / 4, ZERO = 1 << (BITS - 1);
  const int blocks = w.blocks;
  const __m512i nib = _mm512_set1_epi8(0x0F);
  __m512 acc[M];
  for (int m = 0; m < M; m++) acc[m] = _mm512_setzero_ps();
  const uint8_t* tile = w.tiles.p + size_t(g) * blocks * STEPS * 64;
  for (int b = 0; b < blocks; b++, tile += STEPS * 64) {
    __m512i lo_dot[M], hi_dot[M];
    for (int m = 0; m < M; m++) (lo_dot[m] = _mm512_set1_epi32(-ZERO * x.sum.p[size_t(r0 + m) * blocks + b]), hi_dot[m] = _mm512_setzero_si512());
    if constexpr (BITS == 4) {
      for (int s = 0; s < STEPS; s++) {
        const __m512i v = _mm512_load_si512(tile + s * 64);
        const __m512i lo = _mm512_and_si512(v, nib), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
        for (int m = 0; m < M; m++) {
          const int8_t* a = x.q.p + size_t(r0 + m) * x.k + b * BLK + s * 8;
          lo_dot[m] = dpbusd(lo_dot[m], lo, _mm512_set1_epi32(load4(a)));
          hi_dot[m] = dpbusd(hi_dot[m], hi, _mm512_set1_epi32(load4(a + 4)));
        }
      }
    } else {
      for (int s = 0; s < STEPS; s += 2) {
        const __m512i v0 = _mm512_load_si512(tile + s * 64), v1 = _mm512_load_si512(tile + (s + 1) * 64);
        for (int m = 0; m < M; m++) {
          const int8_t* a = x.q.p + size_t(r0 + m) * x.k + b * BLK + s * 4;
          lo_dot[m] = dpbusd(lo_dot[m], v0, _mm512_set1_epi32(load4(a)));
          hi_dot[m] = dpbusd(hi_dot[m], v1, _mm512_set1_epi32(load4(a + 4)));
        }
      }
    }
    const __m512 sb = _mm512_load_ps(w.scales.p + (size_t(g) * blocks + b) * COLS);
    for (int m = 0; m < M; m++)
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(lo_dot[m], hi_dot[m])), _mm512_mul_ps(sb, _mm512_set1_ps(x.scale.p[size_t(r0 + m) * blocks + b])), acc[m]);
  }
  const int c0 = g * COLS, live = w.n - c0 < COLS ? w.n - c0 : COLS;
  const __mmask16 mask = live == COLS ? __mmask16(0xFFFF) : __mmask16((1u << live) - 1);
  const __m512 bv = bias ? _mm512_maskz_loadu_ps(mask, bias + c0) : _mm512_setzero_ps();
  for (int m = 0; m < M; m++) _mm512_mask_storeu_ps(y + size_t(r0 + m) * w.n + c0, mask, bias ? _mm512_add_ps(acc[m], bv) : acc[m]);
}

template <int BITS>
void columns_of(const Tiles& w, const QuantRows& x, int rows, int g0, int g1, float* y, const float* bias) {
  for (int g = g0; g < g1; g++)
    for (int r = 0; r < rows; r += MAX_M) {
      switch (rows - r >= MAX_M ? MAX_M : rows - r) {
        case 1: group_rows<BITS, 1>(w, x, r, g, y, bias); break;
        case 2: group_rows<BITS, 2>(w, x, r, g, y, bias); break;
        case 3: group_rows<BITS, 3>(w, x, r, g, y, bias); break;
        default: group_rows<BITS, 4>(w, x, r, g, y, bias);
      }
    }
}

// Column groups [g0, g1) of all `rows` rows, in row tiles of up to MAX_M.
inline void columns(const Tiles& w, const QuantRows& x, int rows, int g0, int g1, float* y, const float* bias) {
  if (w.bits == 4) columns_of<4>(w, x, rows, g0, g1, y, bias);
  else columns_of<8>(w, x, rows, g0, g1, y, bias);
}

}  // namespace blockmm
}  // namespace eaglet
