/**
 * Progress events of the training commands, and a small reporter that prints them at most
 * every `intervalMs` (the CLI wires it; library callers pass their own callback).
 */

/** One progress event: what is being done, how far along, and named metrics. */
export interface Progress {
  phase: string;
  done: number;
  total: number;
  /** e.g. { loss: 0.12, 'tok/s': 530 } */
  metrics?: Record<string, number>;
}

export type OnProgress = (p: Progress) => void;

/** Formats one event as a single line: `train 120/400 loss=0.1234 tok/s=530`. */
export function formatProgress(p: Progress): string {
  const m = Object.entries(p.metrics ?? {}).map(([k, v]) => `${k}=${Number.isInteger(v) ? v : v.toPrecision(4)}`);
  return [`${p.phase} ${p.done}/${p.total}`, ...m].join(' ');
}

/**
 * A callback that writes `formatProgress` lines to `write` (default stderr), throttled to one
 * per `intervalMs` (default 1000), always printing the final event of a phase.
 */
export function progressReporter(write: (line: string) => void = (l) => process.stderr.write(l + '\n'), intervalMs = 1000): OnProgress {
  let last = -Infinity;
  return (p) => {
    const now = performance.now();
    if (p.done < p.total && now - last < intervalMs) return;
    last = now;
    write(formatProgress(p));
  };
}

/**
 * Adds an ETA in seconds (and, under `rateName`, the rate of `done` per second) to each progress
 * event, measured from the first event so that setup time and a resumed run's head start do not skew it.
 */
export function withEta(next: OnProgress, rateName?: string): OnProgress {
  let t0 = -1, done0 = 0;
  return (p) => {
    const now = performance.now();
    if (t0 < 0) (t0 = now), (done0 = p.done);
    const rate = now > t0 ? ((p.done - done0) / (now - t0)) * 1000 : 0;
    if (!(rate > 0)) return next(p); // the first event: no rate yet
    const extra = { ...(rateName ? { [rateName]: Math.round(rate) } : {}), 'eta-s': Math.round((p.total - p.done) / rate) };
    next({ ...p, metrics: { ...p.metrics, ...extra } });
  };
}
