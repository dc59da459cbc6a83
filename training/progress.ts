/**
 * Progress events of the long-running commands, and the CLI's reporters: a bar redrawn in place
 * on a terminal, throttled plain lines otherwise (library callers pass their own callback).
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
 * The CLI's reporter. Given `write`, or when stderr is not a terminal: `formatProgress` lines,
 * throttled to one per `intervalMs` (default 1000), always printing the final event of a phase.
 * On a terminal (no `write`): a bar redrawn in place (`progressBar`).
 */
export function progressReporter(write?: (line: string) => void, intervalMs = 1000): OnProgress {
  if (!write && process.stderr.isTTY) return progressBar(process.stderr);
  const out = write ?? ((l: string) => process.stderr.write(l + '\n'));
  let last = -Infinity;
  return (p) => {
    const now = performance.now();
    if (p.done < p.total && now - last < intervalMs) return;
    last = now;
    out(formatProgress(p));
  };
}

/** Seconds as `1h02m`, `3m05s` or `42s`. */
export function formatDuration(s: number): string {
  const t = Math.max(0, Math.round(s));
  if (t >= 3600) return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
  if (t >= 60) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${t}s`;
}

/** One bar line, at most `width - 1` characters: `train  42% [########------] 120/400 loss=0.1234 tok/s=530 eta 1m05s`. */
export function formatBar(p: Progress, width: number): string {
  const frac = p.total > 0 ? Math.min(1, Math.max(0, p.done / p.total)) : 0;
  const { 'eta-s': eta, ...rest } = p.metrics ?? {};
  const tail = [
    `${p.done}/${p.total}`,
    ...Object.entries(rest).map(([k, v]) => `${k}=${Number.isInteger(v) ? v : v.toPrecision(4)}`),
    ...(eta !== undefined && p.done < p.total ? [`eta ${formatDuration(eta)}`] : []),
  ].join(' ');
  const head = `${p.phase} ${(100 * frac).toFixed(0).padStart(3)}% `;
  const barWidth = Math.max(10, Math.min(40, width - head.length - tail.length - 4));
  const filled = Math.round(frac * barWidth);
  return `${head}[${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}] ${tail}`.slice(0, Math.max(1, width - 1));
}

/**
 * A progress bar for a terminal: each event redraws one line in place (carriage return + clear
 * to end of line), at most every `intervalMs`; a phase's last event ends its line, so the next
 * phase (or any later output) starts on a fresh one.
 */
export function progressBar(stream: { write(s: string): unknown; columns?: number }, intervalMs = 100): OnProgress {
  let last = -Infinity, open = '';
  return (p) => {
    const now = performance.now(), end = p.done >= p.total;
    if (open && open !== p.phase) stream.write('\n'); // a phase that stopped early keeps its last line
    if (!end && open === p.phase && now - last < intervalMs) return;
    last = now;
    stream.write(`\r${formatBar(p, stream.columns ?? 80)}\x1b[K${end ? '\n' : ''}`);
    open = end ? '' : p.phase;
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
