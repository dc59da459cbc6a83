// One query row's attention over a K/V cache in eaglet's split layout, as a kernel of our own
// computes it inside a pass: a cost probe for the past K/V read (built and run by
// scripts/probe-native-kv.ts). The kernel is src/native/past-attention.h, the one the one-token
// graph's eaglet.PastAttention node runs (src/native/ort-addon.cc).
//
// Cache per layer, as src/runtime/kv-cache.ts holds it for split attention ('transposed'):
// keys and values alike [nKv, hd, stride], of which the first P columns of each row are live.
// One query row of nKv heads (query heads = K/V heads: the 29M config has no grouping). Per head:
// scores s[j] = (q / sqrt(hd)) . K[:, j] over the live columns, softmax, out[d] = sum_j w[j] V[d, j].
// The kernel reads each row of K and V once, 8 rows at a time, front to back (8 sequential
// streams), with the head's scores kept in L1: for keys, s += sum of 8 q[d] * K[d, :]; for values,
// 8 dot products against the weights. Heads are split across threads (persistent workers, a
// spin barrier per layer: a pass would call the kernel once a layer).
//
// The read-bandwidth probe, interleaved with it: one-row fp32 matvec over a 256 MB dense random
// weight [16384, 4096] (y = W x, a dot product a row, rows split across the threads), the shape
// of bench:runtime's probe; it also evicts the caches before each timed kernel run, as a pass's
// weights do between its layers' attention.
//
//   kv-attend-probe --contexts 64,4000 --strides 64,4032 [--threads 1,2] [--repeats 30]
//                   [--layers 8] [--heads 8] [--head-dim 64]
//
// Prints one JSON object per line: "check" (max |diff| of every layer's output against a float64
// reference, per context and thread count; exit 1 when above the bound), "probe" (GB/s of the
// matvec), "time" (ms for all layers' attention), each median / min / max over the repeats.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../src/native/past-attention.h"
#include "spin-pool.h"

namespace {

using eaglet::R;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "error: %s\n", why.c_str());
  std::exit(1);
}

float* floats(size_t n) {
  void* p = std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
  if (!p) die("out of memory");
  return static_cast<float*>(p);
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Shape {
  int layers, heads, hd;
};

// One context's cache (every layer's K and V, [heads, hd, stride]), queries and outputs.
struct Cache {
  Shape sh;
  int P;
  size_t stride;
  std::vector<float*> K, V, q, out;  // per layer; q and out [heads, hd]
  float* scratch[2];                 // per thread: one head's scores [P]
  double kv_bytes() const { return 2.0 * sh.layers * sh.heads * sh.hd * P * sizeof(float); }
};

Cache make_cache(Shape sh, int P, size_t stride, std::mt19937& rng) {
  if (size_t(P) > stride) die("a context longer than its stride");
  Cache c{sh, P, stride, {}, {}, {}, {}, {}};
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const size_t n = size_t(sh.heads) * sh.hd * stride;
  for (int l = 0; l < sh.layers; l++) {
    float *k = floats(n), *v = floats(n), *q = floats(size_t(sh.heads) * sh.hd);
    // Every element written, the masked-out columns too, as the cache's pages are.
    for (size_t i = 0; i < n; i++) (k[i] = u(rng), v[i] = u(rng));
    for (int i = 0; i < sh.heads * sh.hd; i++) q[i] = 3.f * u(rng);  // peaky enough softmaxes to test
    c.K.push_back(k), c.V.push_back(v), c.q.push_back(q), c.out.push_back(floats(size_t(sh.heads) * sh.hd));
  }
  for (float*& s : c.scratch) s = floats(std::max(P, 16));
  return c;
}

struct LayerJob {
  const Cache* c;
  int layer;
};

// Thread t's heads of one layer.
void attend_layer(void* ctx, int t, int T) {
  const LayerJob& job = *static_cast<LayerJob*>(ctx);
  const Cache& c = *job.c;
  const int hd = c.sh.hd, h0 = c.sh.heads * t / T, h1 = c.sh.heads * (t + 1) / T;
  const float inv_sqrt = 1.f / std::sqrt(float(hd));
  float* s = c.scratch[t];
  alignas(64) float q[256];
  for (int h = h0; h < h1; h++) {
    const size_t head = size_t(h) * hd * c.stride;
    for (int d = 0; d < hd; d++) q[d] = c.q[job.layer][h * hd + d] * inv_sqrt;  // the graph scales q first too
    eaglet::scores(q, c.K[job.layer] + head, c.stride, hd, c.P, s);
    float m;
    const float sum = eaglet::softmax_unnormalized(s, c.P, m);
    eaglet::weighted_values(s, c.V[job.layer] + head, c.stride, hd, c.P, 1.f / sum, c.out[job.layer] + h * hd);
  }
}

// All layers' attention: one pool call a layer.
void attend(SpinPool& pool, const Cache& c) {
  for (int l = 0; l < c.sh.layers; l++) {
    LayerJob job{&c, l};
    pool.run(attend_layer, &job);
  }
}

// max |kernel - float64 reference| over every layer, head and output element.
double check(const Cache& c) {
  const int hd = c.sh.hd;
  double worst = 0;
  std::vector<double> s(c.P);
  for (int l = 0; l < c.sh.layers; l++)
    for (int h = 0; h < c.sh.heads; h++) {
      const float *K = c.K[l] + size_t(h) * hd * c.stride, *V = c.V[l] + size_t(h) * hd * c.stride, *q = c.q[l] + h * hd;
      double mx = -INFINITY, sum = 0;
      for (int j = 0; j < c.P; j++) {
        double x = 0;
        for (int d = 0; d < hd; d++) x += double(q[d]) * K[size_t(d) * c.stride + j];
        s[j] = x / std::sqrt(double(hd));
        mx = std::max(mx, s[j]);
      }
      for (int j = 0; j < c.P; j++) sum += (s[j] = std::exp(s[j] - mx));
      for (int d = 0; d < hd; d++) {
        double o = 0;
        for (int j = 0; j < c.P; j++) o += s[j] * V[size_t(d) * c.stride + j];
        worst = std::max(worst, std::fabs(o / sum - c.out[l][h * hd + d]));
      }
    }
  return worst;
}

// The bandwidth probe: y = W x, W [N, K] dense, rows split across threads, 4 rows a step.
struct Probe {
  static constexpr int N = 16384, K = 4096;
  float *w, *x, *y;
  double bytes() const { return double(N) * K * sizeof(float); }
};

void probe_rows(void* ctx, int t, int T) {
  const Probe& p = *static_cast<Probe*>(ctx);
  const int n0 = Probe::N * t / T / 4 * 4, n1 = Probe::N * (t + 1) / T / 4 * 4;
  for (int n = n0; n < n1; n += 4) {
    const float* row = p.w + size_t(n) * Probe::K;
    __m512 a[8];
    for (auto& v : a) v = _mm512_setzero_ps();
    for (int k = 0; k < Probe::K; k += 32)
      for (int h = 0; h < 2; h++) {
        const __m512 xv = _mm512_load_ps(p.x + k + 16 * h);
        for (int r = 0; r < 4; r++) a[2 * r + h] = _mm512_fmadd_ps(xv, _mm512_load_ps(row + size_t(r) * Probe::K + k + 16 * h), a[2 * r + h]);
      }
    for (int r = 0; r < 4; r++) p.y[n + r] = _mm512_reduce_add_ps(_mm512_add_ps(a[2 * r], a[2 * r + 1]));
  }
}

std::vector<int> int_list(const char* flag, const char* s) {
  std::vector<int> out;
  for (const char* p = s; *p;) {
    char* end;
    const long v = std::strtol(p, &end, 10);
    if (end == p || v < 1 || (*end && *end != ',')) die(std::string(flag) + ": '" + s + "' is not a list of positive integers");
    out.push_back(int(v));
    p = *end ? end + 1 : end;
  }
  return out;
}

struct Stats {
  double median, min, max;
};
Stats stats(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  const size_t n = xs.size();
  return {n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2, xs.front(), xs.back()};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> contexts{64, 4000}, strides, threads{1, 2};
  int repeats = 30;
  Shape sh{8, 8, 64};
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (i + 1 >= argc) die(a + ": missing value");
    const char* v = argv[++i];
    if (a == "--contexts") contexts = int_list("--contexts", v);
    else if (a == "--strides") strides = int_list("--strides", v);
    else if (a == "--threads") threads = int_list("--threads", v);
    else if (a == "--repeats") repeats = int_list("--repeats", v).at(0);
    else if (a == "--layers") sh.layers = int_list("--layers", v).at(0);
    else if (a == "--heads") sh.heads = int_list("--heads", v).at(0);
    else if (a == "--head-dim") sh.hd = int_list("--head-dim", v).at(0);
    else die("unknown flag " + a);
  }
  if (strides.empty()) strides = contexts;
  if (strides.size() != contexts.size()) die("--strides: one a context");
  if (sh.hd % R != 0 || sh.hd > 256) die("--head-dim: a multiple of 8, at most 256");
  for (int t : threads)
    if (t > 2 || t > sh.heads) die("--threads: 1 or 2 (the cache keeps two scratch rows)");

  std::mt19937 rng(7);
  std::vector<Cache> caches;
  for (size_t i = 0; i < contexts.size(); i++) caches.push_back(make_cache(sh, contexts[i], strides[i], rng));
  Probe probe{floats(size_t(Probe::N) * Probe::K), floats(Probe::K), floats(Probe::N)};
  {
    std::uniform_real_distribution<float> u(-0.5f, 0.5f);
    for (size_t i = 0; i < size_t(Probe::N) * Probe::K; i++) probe.w[i] = u(rng);
    for (int i = 0; i < Probe::K; i++) probe.x[i] = 1.f;
  }

  bool ok = true;
  for (int T : threads) {
    SpinPool pool(T);
    std::vector<std::vector<double>> ms(caches.size()), gbps(caches.size());
    // Two warm-up rounds, then timed; each kernel run right after a probe run (cold caches).
    for (int r = -2; r < repeats; r++)
      for (size_t i = 0; i < caches.size(); i++) {
        double t0 = now_ms();
        pool.run(probe_rows, &probe);
        const double probe_ms = now_ms() - t0;
        t0 = now_ms();
        attend(pool, caches[i]);
        const double kernel_ms = now_ms() - t0;
        if (r >= 0) (gbps[i].push_back(probe.bytes() / 1e6 / probe_ms), ms[i].push_back(kernel_ms));
      }
    for (size_t i = 0; i < caches.size(); i++) {
      const Cache& c = caches[i];
      // The outputs of the last timed run, against float64: the products are fp32 sums of up to
      // P terms of |w V| <= 1 and exp is ~1e-7 relative, so ~1e-6 is float32's reach here.
      const double diff = check(c), bound = 1e-5;
      ok = ok && diff <= bound;
      const Stats k = stats(ms[i]), g = stats(gbps[i]);
      std::printf("{\"kind\":\"check\",\"threads\":%d,\"context\":%d,\"maxDiff\":%.3g,\"bound\":%g,\"ok\":%s}\n", T, c.P, diff, bound, diff <= bound ? "true" : "false");
      std::printf("{\"kind\":\"probe\",\"threads\":%d,\"context\":%d,\"gbps\":%.3f,\"min\":%.3f,\"max\":%.3f}\n", T, c.P, g.median, g.min, g.max);
      std::printf("{\"kind\":\"time\",\"threads\":%d,\"context\":%d,\"stride\":%zu,\"kvBytes\":%.0f,\"ms\":%.4f,\"min\":%.4f,\"max\":%.4f}\n", T, c.P, c.stride, c.kv_bytes(), k.median, k.min, k.max);
      std::fflush(stdout);
    }
  }
  if (!ok) die("the kernel's output is off its float64 reference by more than the bound (see the check lines)");
  return 0;
}
