/*
 * The host's plain read rate, outside ORT: sums a buffer of each size with AVX2 (four
 * accumulators, aligned loads) on 1 and 2 threads (each thread half the buffer), each read
 * right after a 128 MB read of another buffer ("cold") and again right after itself ("again");
 * GB/s, mean of 5 after 2 warm-ups. Set beside the bytes-read floor's probe (an ORT one-row
 * MatMul, scripts/bandwidth.ts) it says how much of the memory system that probe uses.
 *
 *   gcc -O2 -mavx2 -pthread scripts/read-bandwidth.c -o read-bandwidth && ./read-bandwidth
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

typedef struct { const float *p; long n; float sum; } Part;

static void *sum_part(void *arg) {
  Part *a = arg;
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (long i = 0; i < a->n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_load_ps(a->p + i));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(a->p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_load_ps(a->p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_load_ps(a->p + i + 24));
  }
  float o[8];
  _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  a->sum = o[0];
  return NULL;
}

/* GB/s of one read of n floats (a multiple of 64) on `threads` threads (1 or 2). */
static double read_rate(const float *p, long n, int threads) {
  pthread_t t;
  Part parts[2];
  double t0 = now_ms();
  for (int i = 0; i < threads; i++) parts[i] = (Part){ p + i * (n / threads), n / threads, 0 };
  if (threads == 2) pthread_create(&t, NULL, sum_part, &parts[1]);
  sum_part(&parts[0]);
  if (threads == 2) pthread_join(t, NULL);
  return n * 4 / 1e6 / (now_ms() - t0);
}

int main(void) {
  const long other_n = 32L << 20; /* 128 MB */
  float *other = aligned_alloc(64, other_n * 4);
  for (long i = 0; i < other_n; i++) other[i] = 1;
  const long sizes_mb[] = { 8, 32, 64, 111, 256 };
  for (int threads = 1; threads <= 2; threads++)
    for (int s = 0; s < 5; s++) {
      long n = sizes_mb[s] * 1000000 / 4 / 64 * 64;
      float *p = aligned_alloc(64, n * 4);
      for (long i = 0; i < n; i++) p[i] = (float)(i & 7);
      double cold = 0, again = 0;
      for (int r = 0; r < 7; r++) {
        read_rate(other, other_n, threads);
        double c = read_rate(p, n, threads), a = read_rate(p, n, threads);
        if (r >= 2) cold += c / 5, again += a / 5;
      }
      printf("%d thread(s) %4ld MB: cold %.1f GB/s, again %.1f GB/s\n", threads, sizes_mb[s], cold, again);
      free(p);
    }
  free(other);
  return 0;
}
