/**
 * Order statistics of timing samples. `quantile` and `median` (the tuner, the benchmark
 * scripts) return one observed value, so a reported median is a run that happened; `spread`
 * (the policy benchmark, the peer benchmark) interpolates between the middle values.
 */

/** The q-quantile of `xs` (0 <= q <= 1) as one of its values: sorted[floor(q * n)], clamped. `xs` is not changed. */
export function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/** The median as one of the values: the upper middle one when there are an even number. */
export function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}

/** Median and spread of a sample. */
export interface Spread {
  /** Interpolated: the mean of the two middle values when there are an even number. */
  median: number;
  min: number;
  max: number;
  /** Quartiles (linear interpolation). */
  q1: number;
  q3: number;
}

export function spread(xs: readonly number[]): Spread {
  const s = [...xs].sort((a, b) => a - b), q = (f: number) => {
    const i = f * (s.length - 1), lo = Math.floor(i);
    return lo + 1 < s.length ? s[lo] + (i - lo) * (s[lo + 1] - s[lo]) : s[lo];
  };
  return { median: q(0.5), min: s[0], max: s[s.length - 1], q1: q(0.25), q3: q(0.75) };
}
