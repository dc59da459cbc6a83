// Persistent worker threads for the native probes (scripts/native/*.cc): a pass calls its kernel
// once a layer or matrix, so the probes hand work to threads that spin between calls instead of
// spawning threads per call (ORT's intra-op pool spins likewise).
#pragma once

#include <immintrin.h>

#include <atomic>
#include <thread>
#include <vector>

// Sense-reversing spin barrier.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    const int sense = sense_.load(std::memory_order_relaxed);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      sense_.store(1 - sense, std::memory_order_release);
    } else {
      while (sense_.load(std::memory_order_acquire) == sense) _mm_pause();
    }
  }

 private:
  const int n_;
  std::atomic<int> count_{0}, sense_{0};
};

// The calling thread is worker 0. run(fn, ctx) calls fn(ctx, t, T) on every thread t of T and
// returns when all are done; fn may itself wait on barrier() (every thread the same number of
// times) between steps that depend on each other.
class SpinPool {
 public:
  using Fn = void (*)(void*, int, int);
  explicit SpinPool(int threads) : t_(threads), barrier_(threads) {
    for (int t = 1; t < t_; t++) workers_.emplace_back([this, t] { loop(t); });
  }
  ~SpinPool() {
    stop_.store(true, std::memory_order_release);
    go_.fetch_add(1, std::memory_order_acq_rel);
    for (auto& w : workers_) w.join();
  }
  SpinPool(const SpinPool&) = delete;
  SpinPool& operator=(const SpinPool&) = delete;
  int threads() const { return t_; }
  Barrier& barrier() { return barrier_; }
  void run(Fn fn, void* ctx) {
    fn_ = fn;
    ctx_ = ctx;
    go_.fetch_add(1, std::memory_order_acq_rel);
    fn(ctx, 0, t_);
    barrier_.wait();
  }

 private:
  void loop(int t) {
    int seen = 0;
    for (;;) {
      while (go_.load(std::memory_order_acquire) == seen) _mm_pause();
      seen++;
      if (stop_.load(std::memory_order_acquire)) return;
      fn_(ctx_, t, t_);
      barrier_.wait();
    }
  }
  const int t_;
  Barrier barrier_;
  std::vector<std::thread> workers_;
  std::atomic<int> go_{0};
  std::atomic<bool> stop_{false};
  Fn fn_ = nullptr;
  void* ctx_ = nullptr;
};
