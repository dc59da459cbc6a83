// A q4 matrix-vector kernel that reads each packed weight block once for all M rows: a cost
// probe for what a MatMulNBits kernel of eaglet's own would give a verification pass (built and
// run by scripts/probe-native-q4.ts; nothing in eaglet links it).
//
// Weights: the file the runner writes, each matrix in eaglet's MatMulNBits layout
// (src/model/quantize.ts): packed uint8 [N, K/128, 64] (element 2j in the low nibble, 2j+1 in the
// high one), fp32 scales [N, K/128], symmetric, zero point 8 (MatMulNBits' default). At load the
// kernel reorders the same nibbles and scales for its loop, as MLAS repacks MatMulNBits' weights
// when a session is created: per 16 columns and block, 16 steps of 8 elements, each step one
// 64-byte vector holding 4 bytes a column (elements 0-3 in the low nibbles, 4-7 in the high).
// Activations: int8 per block of 128 as MatMulNBits' accuracy_level 4 does on AVX-512 (our reading
// of MLAS: scale = max|a| / 127, q = round-to-nearest(a * 127 / max|a|)).
// Per step and row: two VPDPBUSD (unsigned weights 0..15 of 16 columns x 4 signed activations
// broadcast) into int32 lanes, one a column, seeded with the zero point's share (-8 x the block's
// activation sum); at the block's end each lane is that column's exact block dot product, converted
// to fp32 and multiplied by the two scales. A step's unpacked nibbles serve every row; a row's
// arithmetic does not depend on M (row-exact: checked).
//
//   q4-rows-probe WEIGHTS [--threads 1,2] [--rows 1,2,3,4] [--repeats 9] [--passes 20]
//
// Prints one JSON object per line: "check" (max |diff| against a float64 reference of the same
// quantized math from the file's own layout, per thread count and M; exit 1 when wrong),
// "bandwidth" (GB/s summing a 256 MB buffer), "vnni" (billions of VPDPBUSD a second from
// registers), "time" (ms per pass of every matrix, median / min / max over the repeats).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "spin-pool.h"

namespace {

constexpr int BLK = 128, BLOB = 64, MAX_M = 4, COLS = 16, STEPS = BLK / 8;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "error: %s\n", why.c_str());
  std::exit(1);
}

template <typename T>
T* aligned(size_t n) {
  void* p = std::aligned_alloc(64, ((n * sizeof(T) + 63) / 64) * 64);
  if (!p) die("out of memory");
  return static_cast<T*>(p);
}

struct Matrix {
  std::string name;
  int n = 0, k = 0;
  uint8_t* packed = nullptr;  // eaglet's layout [n, k/128, 64] (the reference reads this)
  float* scales = nullptr;    // [n, k/128]
  uint8_t* tiles = nullptr;   // the kernel's order [n/16, k/128, 16 steps, 16 columns x 4 bytes]
  float* tile_scales = nullptr;  // [n/16, k/128, 16]
  float* x = nullptr;         // the input rows [MAX_M, k]
  float* y = nullptr;         // the output rows [MAX_M, n]
  int blocks() const { return k / BLK; }
};

// The kernel's order of w's nibbles and scales (see the header).
void retile(Matrix& w) {
  const int blocks = w.blocks();
  w.tiles = aligned<uint8_t>(size_t(w.n) * w.k / 2);
  w.tile_scales = aligned<float>(size_t(w.n) * blocks);
  auto nibble = [&](int n, int k) { return (w.packed[(size_t(n) * blocks + k / BLK) * BLOB + (k % BLK) / 2] >> ((k & 1) * 4)) & 15; };
  for (int g = 0; g < w.n / COLS; g++)
    for (int b = 0; b < blocks; b++) {
      for (int c = 0; c < COLS; c++) w.tile_scales[(size_t(g) * blocks + b) * COLS + c] = w.scales[size_t(g * COLS + c) * blocks + b];
      for (int s = 0; s < STEPS; s++)
        for (int c = 0; c < COLS; c++)
          for (int i = 0; i < 4; i++) {
            const int n = g * COLS + c, k = b * BLK + s * 8 + i;
            w.tiles[((size_t(g) * blocks + b) * STEPS + s) * 64 + c * 4 + i] = uint8_t(nibble(n, k) | (nibble(n, k + 4) << 4));
          }
    }
}

// One thread's quantized activations for the matrix at hand: [m][k] int8, and per (m, block)
// the scale and the zero point's seed (-8 x the block's sum of q).
struct QuantRows {
  int8_t* q;
  float* scale;
  int32_t* seed;
};

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Row `m` of x [k] as int8 blocks (see the header): AVX-512, as timed.
void quantize_row(const float* x, int k, int m, QuantRows& qr) {
  const int blocks = k / BLK;
  for (int b = 0; b < blocks; b++) {
    const float* a = x + b * BLK;
    __m512 amax = _mm512_setzero_ps();
    for (int j = 0; j < BLK; j += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(a + j)));
    const float mx = _mm512_reduce_max_ps(amax), scale = mx / 127.f, inv = mx > 0 ? 127.f / mx : 0.f;
    const __m512 vinv = _mm512_set1_ps(inv);
    int8_t* out = qr.q + size_t(m) * k + b * BLK;
    __m512i sum = _mm512_setzero_si512();
    for (int j = 0; j < BLK; j += 16) {
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(a + j), vinv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm512_cvtsepi32_epi8(q));
      sum = _mm512_add_epi32(sum, q);
    }
    qr.scale[m * blocks + b] = scale;
    qr.seed[m * blocks + b] = -8 * _mm512_reduce_add_epi32(sum);
  }
}

// acc += a (unsigned bytes) . b (signed bytes), four at a time: VPDPBUSD. Written as asm because
// GCC 12 copies the accumulator to a new register around each _mm512_dpbusd_epi32 (16 extra moves
// a step at M = 4).
inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

inline int32_t load4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Columns [n0, n1) (multiples of 16) of y = x W^T for M rows. Each 64-byte step is loaded and
// unpacked once and dotted with every row; two accumulators a row (low and high nibbles) for
// more independent VPDPBUSD chains. (Two column groups at a time, to share each row's
// broadcasts, ran slower: GCC spilled the unpacked steps to the stack.)
template <int M>
void matvec(const Matrix& w, const QuantRows& qr, int n0, int n1) {
  const int blocks = w.blocks(), k = w.k;
  const __m512i nib = _mm512_set1_epi8(0x0F);
  for (int g = n0 / COLS; g < n1 / COLS; g++) {
    __m512 acc[M];
    for (int m = 0; m < M; m++) acc[m] = _mm512_setzero_ps();
    const uint8_t* tile = w.tiles + size_t(g) * blocks * STEPS * 64;
    for (int b = 0; b < blocks; b++, tile += STEPS * 64) {
      __m512i lo_dot[M], hi_dot[M];
      for (int m = 0; m < M; m++) (lo_dot[m] = _mm512_set1_epi32(qr.seed[m * blocks + b]), hi_dot[m] = _mm512_setzero_si512());
      for (int s = 0; s < STEPS; s++) {
        const __m512i v = _mm512_load_si512(tile + s * 64);
        const __m512i lo = _mm512_and_si512(v, nib), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
        for (int m = 0; m < M; m++) {
          const int8_t* a = qr.q + size_t(m) * k + b * BLK + s * 8;
          lo_dot[m] = dpbusd(lo_dot[m], lo, _mm512_set1_epi32(load4(a)));
          hi_dot[m] = dpbusd(hi_dot[m], hi, _mm512_set1_epi32(load4(a + 4)));
        }
      }
      const __m512 sb = _mm512_load_ps(w.tile_scales + (size_t(g) * blocks + b) * COLS);
      for (int m = 0; m < M; m++)
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(lo_dot[m], hi_dot[m])), _mm512_mul_ps(sb, _mm512_set1_ps(qr.scale[m * blocks + b])), acc[m]);
    }
    for (int m = 0; m < M; m++) _mm512_storeu_ps(w.y + size_t(m) * w.n + g * COLS, acc[m]);
  }
}

void matvec_rows(int rows, const Matrix& w, const QuantRows& qr, int n0, int n1) {
  switch (rows) {
    case 1: return matvec<1>(w, qr, n0, n1);
    case 2: return matvec<2>(w, qr, n0, n1);
    case 3: return matvec<3>(w, qr, n0, n1);
    default: return matvec<4>(w, qr, n0, n1);
  }
}

// Persistent workers (the caller is worker 0) that run `passes` passes over every matrix at
// `rows` rows: each thread quantizes the rows itself (they are a few KB), computes its share of
// the columns, and waits at the barrier before the next matrix, whose input a real pass would
// compute from this one's output.
class Pool {
 public:
  Pool(int threads, std::vector<Matrix>& mats, int max_k) : t_(threads), mats_(mats), spin_(threads) {
    for (int t = 0; t < t_; t++) {
      const int blocks = max_k / BLK;
      qr_.push_back({aligned<int8_t>(size_t(MAX_M) * max_k), aligned<float>(MAX_M * blocks), aligned<int32_t>(MAX_M * blocks)});
    }
  }
  ~Pool() {
    for (auto& q : qr_) (std::free(q.q), std::free(q.scale), std::free(q.seed));
  }
  // Runs the passes on every thread; returns when all are done.
  void run(int rows, int passes) {
    rows_ = rows;
    passes_ = passes;
    spin_.run([](void* self, int t, int) { static_cast<Pool*>(self)->work(t); }, this);
  }

 private:
  void work(int t) {
    QuantRows& qr = qr_[t];
    for (int p = 0; p < passes_; p++)
      for (const Matrix& w : mats_) {
        for (int m = 0; m < rows_; m++) quantize_row(w.x + size_t(m) * w.k, w.k, m, qr);
        // Columns in groups of 16, split evenly.
        const int groups = w.n / COLS, g0 = groups * t / t_, g1 = groups * (t + 1) / t_;
        matvec_rows(rows_, w, qr, g0 * COLS, g1 * COLS);
        spin_.barrier().wait();
      }
  }

  const int t_;
  std::vector<Matrix>& mats_;
  std::vector<QuantRows> qr_;
  SpinPool spin_;
  int rows_ = 1, passes_ = 1;
};

// Row m of x as the reference's int8 values (natural order) and scales, in scalar code.
void reference_quantize(const float* x, int k, std::vector<int>& q, std::vector<double>& scale) {
  const int blocks = k / BLK;
  q.assign(k, 0);
  scale.assign(blocks, 0);
  for (int b = 0; b < blocks; b++) {
    float mx = 0;
    for (int j = 0; j < BLK; j++) mx = std::max(mx, std::fabs(x[b * BLK + j]));
    const float inv = mx > 0 ? 127.f / mx : 0.f;
    scale[b] = mx / 127.f;
    for (int j = 0; j < BLK; j++) q[b * BLK + j] = std::clamp(int(std::nearbyint(x[b * BLK + j] * inv)), -128, 127);
  }
}

// max |kernel - float64 reference| over every matrix's first `rows` rows, and the largest |y|.
// Also checks that each row matches (bit for bit) what the M = 1 run of the same row gave.
struct Check {
  double max_diff = 0, max_abs = 0, max_tol_ratio = 0;
  bool row_exact = true;
};

Check check(Pool& pool, std::vector<Matrix>& mats, int rows, const std::vector<std::vector<float>>& one_row) {
  pool.run(rows, 1);
  Check c;
  std::vector<int> q;
  std::vector<double> sa;
  for (size_t i = 0; i < mats.size(); i++) {
    const Matrix& w = mats[i];
    for (int m = 0; m < rows; m++) {
      reference_quantize(w.x + size_t(m) * w.k, w.k, q, sa);
      for (int n = 0; n < w.n; n++) {
        double y = 0, mag = 0;
        for (int b = 0; b < w.blocks(); b++) {
          const uint8_t* p = w.packed + (size_t(n) * w.blocks() + b) * BLOB;
          const double s = sa[b] * double(w.scales[size_t(n) * w.blocks() + b]);
          long dot = 0;
          for (int j = 0; j < BLK; j++) dot += long(((p[j >> 1] >> ((j & 1) * 4)) & 15) - 8) * q[b * BLK + j];
          y += s * double(dot);
          mag += std::fabs(s * double(dot));
        }
        const float got = w.y[size_t(m) * w.n + n];
        const double diff = std::fabs(double(got) - y);
        c.max_diff = std::max(c.max_diff, diff);
        c.max_abs = std::max(c.max_abs, std::fabs(y));
        // Exact int32 block dots, then fp32 scaling and a sum over at most 22 blocks: a few ulps of the terms' magnitude.
        c.max_tol_ratio = std::max(c.max_tol_ratio, diff / (1e-5 * mag + 1e-30));
        if (m == 0 && !one_row.empty() && std::memcmp(&one_row[i][n], &got, sizeof(float)) != 0) c.row_exact = false;
      }
    }
  }
  return c;
}

// Million `units` a millisecond (= billions a second) that `part(t)` gets through on `threads`
// threads, one run each: median of 7 after 2 warm-ups (returned as all 7).
template <typename Part>
std::vector<double> rates_on_threads(int threads, double units, Part part) {
  std::vector<double> rates;
  for (int r = 0; r < 9; r++) {
    const double t0 = now_ms();
    std::vector<std::thread> th;
    for (int t = 1; t < threads; t++) th.emplace_back(part, t);
    part(0);
    for (auto& x : th) x.join();
    if (r >= 2) rates.push_back(units / 1e6 / (now_ms() - t0));
  }
  return rates;
}

// GB/s summing a 256 MB buffer on `threads` threads (each its own contiguous part).
std::vector<double> read_bandwidth(int threads) {
  const size_t n = (size_t(256) << 20) / sizeof(float);
  float* buf = aligned<float>(n);
  for (size_t i = 0; i < n; i++) buf[i] = float(i % 1024) * 1e-3f;
  std::vector<float> sink(threads);
  const auto rates = rates_on_threads(threads, double(n * sizeof(float)), [&](int t) {
    const float* p = buf + n * t / threads;
    const size_t len = n / threads;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < len; i += 64) {
      s0 = _mm512_add_ps(s0, _mm512_load_ps(p + i));
      s1 = _mm512_add_ps(s1, _mm512_load_ps(p + i + 16));
      s2 = _mm512_add_ps(s2, _mm512_load_ps(p + i + 32));
      s3 = _mm512_add_ps(s3, _mm512_load_ps(p + i + 48));
    }
    sink[t] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  });
  std::free(buf);
  return rates;
}

// Billions of zmm VPDPBUSD a second on `threads` threads (12 independent chains each, registers
// only): the arithmetic ceiling the kernel's extra rows run into.
std::vector<double> vnni_rate(int threads) {
  constexpr long ITERS = 4'000'000;
  std::vector<int> sink(threads);
  return rates_on_threads(threads, double(ITERS) * 12 * threads, [&](int t) {
    __m512i acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_epi32(i + t);
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    for (long i = 0; i < ITERS; i++) {
      for (int j = 0; j < 12; j++) acc[j] = dpbusd(acc[j], a, b);
      __asm__ volatile("" : "+v"(a), "+v"(b));  // keep the operands opaque to the compiler
    }
    __m512i s = acc[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_epi32(s, acc[i]);
    sink[t] = _mm512_reduce_add_epi32(s);
  });
}

std::vector<int> int_list(const char* flag, const char* s) {
  std::vector<int> out;
  for (const char* p = s; *p;) {
    char* end;
    const long v = std::strtol(p, &end, 10);
    if (end == p || v < 1) die(std::string(flag) + ": " + s + " is not a list of positive integers");
    out.push_back(int(v));
    p = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') die(std::string(flag) + ": " + s + " is not a list of positive integers");
  }
  return out;
}

std::vector<Matrix> read_weights(const char* path, int& max_k) {
  FILE* f = std::fopen(path, "rb");
  if (!f) die(std::string("cannot open ") + path);
  auto read = [&](void* p, size_t n) {
    if (std::fread(p, 1, n, f) != n) die(std::string(path) + ": truncated");
  };
  char magic[4];
  int32_t count;
  read(magic, 4);
  if (std::memcmp(magic, "Q4P1", 4) != 0) die(std::string(path) + ": not a q4 probe weight file");
  read(&count, 4);
  std::vector<Matrix> mats(count);
  max_k = 0;
  uint32_t seed = 12345;
  for (Matrix& w : mats) {
    char name[32];
    int32_t nk[2];
    read(name, 32);
    read(nk, 8);
    w.name.assign(name, strnlen(name, 32));
    w.n = nk[0];
    w.k = nk[1];
    if (w.n % COLS != 0 || w.k % BLK != 0) die(w.name + ": N must be a multiple of 16 and K of 128");
    w.packed = aligned<uint8_t>(size_t(w.n) * w.k / 2);
    w.scales = aligned<float>(size_t(w.n) * w.blocks());
    read(w.packed, size_t(w.n) * w.k / 2);
    read(w.scales, size_t(w.n) * w.blocks() * 4);
    retile(w);
    w.x = aligned<float>(size_t(MAX_M) * w.k);
    w.y = aligned<float>(size_t(MAX_M) * w.n);
    for (size_t i = 0; i < size_t(MAX_M) * w.k; i++) {  // activations in [-2, 2), a fixed LCG
      seed = seed * 1664525u + 1013904223u;
      w.x[i] = float(seed >> 8) / float(1 << 24) * 4.f - 2.f;
    }
    max_k = std::max(max_k, w.k);
  }
  std::fclose(f);
  return mats;
}

void stats(std::vector<double> v, double& med, double& lo, double& hi) {
  std::sort(v.begin(), v.end());
  med = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  lo = v.front();
  hi = v.back();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') die("usage: q4-rows-probe WEIGHTS [--threads 1,2] [--rows 1,2,3,4] [--repeats 9] [--passes 20]");
  std::vector<int> threads = {1, 2}, rows = {1, 2, 3, 4};
  int repeats = 9, passes = 20;
  for (int i = 2; i < argc; i++) {
    const std::string a = argv[i];
    if (i + 1 >= argc) die(a + ": needs a value");
    const char* v = argv[++i];
    if (a == "--threads") threads = int_list("--threads", v);
    else if (a == "--rows") rows = int_list("--rows", v);
    else if (a == "--repeats") repeats = int_list("--repeats", v)[0];
    else if (a == "--passes") passes = int_list("--passes", v)[0];
    else die(a + ": unknown flag");
  }
  for (int m : rows)
    if (m > MAX_M) die("--rows: at most 4");
  int max_k = 0;
  std::vector<Matrix> mats = read_weights(argv[1], max_k);
  double bytes = 0;
  for (const Matrix& w : mats) bytes += double(w.n) * w.k / 2 + double(w.n) * w.blocks() * 4;
  std::printf("{\"kind\":\"weights\",\"matrices\":%zu,\"bytes\":%.0f}\n", mats.size(), bytes);

  bool ok = true;
  for (int t : threads) {
    Pool pool(t, mats, max_k);
    // Every row count against the float64 reference, and row 0 against its M = 1 result.
    pool.run(1, 1);
    std::vector<std::vector<float>> one_row;
    for (const Matrix& w : mats) one_row.emplace_back(w.y, w.y + w.n);
    for (int m = 1; m <= MAX_M; m++) {
      const Check c = check(pool, mats, m, one_row);
      const bool good = c.max_tol_ratio <= 1 && c.row_exact;
      ok = ok && good;
      std::printf("{\"kind\":\"check\",\"threads\":%d,\"rows\":%d,\"maxDiff\":%.3g,\"maxAbs\":%.3g,\"tolRatio\":%.3g,\"rowExact\":%s,\"ok\":%s}\n", t, m, c.max_diff,
                  c.max_abs, c.max_tol_ratio, c.row_exact ? "true" : "false", good ? "true" : "false");
    }
    if (!ok) die("the kernel disagrees with the float64 reference (see the check lines)");
    std::vector<std::vector<double>> ms(rows.size());
    for (int r = -1; r < repeats; r++)
      for (size_t i = 0; i < rows.size(); i++) {
        const double t0 = now_ms();
        pool.run(rows[i], passes);
        if (r >= 0) ms[i].push_back((now_ms() - t0) / passes);
      }
    for (size_t i = 0; i < rows.size(); i++) {
      double med, lo, hi;
      stats(ms[i], med, lo, hi);
      std::printf("{\"kind\":\"time\",\"threads\":%d,\"rows\":%d,\"ms\":%.4f,\"min\":%.4f,\"max\":%.4f}\n", t, rows[i], med, lo, hi);
    }
    double med, lo, hi;
    stats(read_bandwidth(t), med, lo, hi);
    std::printf("{\"kind\":\"bandwidth\",\"threads\":%d,\"gbps\":%.2f,\"min\":%.2f,\"max\":%.2f}\n", t, med, lo, hi);
    stats(vnni_rate(t), med, lo, hi);
    std::printf("{\"kind\":\"vnni\",\"threads\":%d,\"gops\":%.3f,\"min\":%.3f,\"max\":%.3f}\n", t, med, lo, hi);
    std::fflush(stdout);
  }
  return 0;
}
