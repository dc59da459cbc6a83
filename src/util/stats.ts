/**
 * Order statistics of timing samples, for the tuner and the benchmark scripts: each is one
 * observed value (no interpolation), so a reported median is a run that happened.
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
