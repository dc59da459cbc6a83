/**
 * Streamed training over a feature log larger than the memory the trainer may use.
 *
 * Writes a synthetic feature log of `--log-gb` GB for the default target (d = 128, random
 * features and tokens: cost only), then runs `train-draft` (ort) over it in a child process
 * whose data segment is capped with `ulimit -d` (RLIMIT_DATA: every heap, ArrayBuffer and
 * malloc'd byte counts) at `--cap-mb`, well under the log's size. The child reports its peak
 * RSS (process.resourceUsage().maxRSS), the rows the stream held at most, and whether a buffer
 * for the whole log's features, what an in-memory loader needs, can be allocated under the same
 * cap (it cannot: the cap binds). The log is deleted at the end unless `--keep`.
 *
 *   npm run bench:train-stream [-- --log-gb 4 --cap-mb 1024 --steps 1200 --dir /tmp]
 *
 * Linux/macOS (needs /bin/sh's ulimit -d); the log needs --log-gb of free disk in --dir.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statfsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../src/load-model.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { Rng } from '../src/util/rng.ts';
import { FeatureLogWriter } from '../training/feature-log.ts';
import { trainDraft } from '../training/train-draft.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'log-gb', type: 'number', above: 0, default: 4, help: 'size of the synthetic log on disk' },
  { flag: 'cap-mb', type: 'int', min: 64, default: 1024, help: 'data-segment cap (ulimit -d) of the training process' },
  { flag: 'steps', type: 'int', min: 1, default: 1200, help: 'training steps (8 windows x 32 rows each)' },
  { flag: 'dir', type: 'string', default: tmpdir(), help: 'where the log is written (and deleted)' },
  { flag: 'keep', type: 'bool', help: 'keep the log' },
  { flag: 'child', type: 'string', help: '(internal) train on this log and print a JSON report' },
  { flag: 'write', type: 'string', help: '(internal) write the synthetic log here' },
  { flag: 'rows', type: 'int', min: 1, help: '(internal) rows of the synthetic log' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const TARGET = 'data/default/target';

const SEQ_LEN = 256;

if (f.write) {
  // The log is written in a process of its own: a forked child inherits its parent's peak RSS
  // in ru_maxrss, so the parent stays small and the training process's maxRSS is its own.
  const target = await loadModel(TARGET);
  await writeSyntheticLog(f.write as string, f.rows as number, SEQ_LEN, target.config.dim, target.config.vocabSize);
} else if (f.child) {
  // The capped training process.
  const target = await loadModel(TARGET);
  const out = mkdtempSync(join(tmpdir(), 'eaglet-stream-head-'));
  const t0 = performance.now();
  try {
    // Validation windows are spread over the whole log: hold out few, validate at the start and end only.
    const r = await trainDraft({ target, logs: [f.child as string], out, steps: f.steps as number, backend: 'ort', valFraction: 0.0005, valEvery: f.steps as number, checkpointEvery: f.steps as number, seed: 1 });
    const seconds = (performance.now() - t0) / 1000;
    // Peak RSS before the allocation probe below (which, when it succeeds, fills memory).
    const maxRssKb = process.resourceUsage().maxRSS, hwm = /VmHWM:\s+(\d+) kB/.exec(readStatus())?.[1];
    let wholeLog = 'allocated';
    try {
      new Float32Array(r.stream.logRows * target.config.dim).fill(1); // [rows, d]: what holding every feature takes
    } catch (e) {
      wholeLog = `refused (${(e as Error).message})`;
    }
    process.stdout.write(JSON.stringify({ maxRssKb, vmHwmKb: Number(hwm ?? NaN), stream: r.stream, steps: r.steps, tokPerS: r.tokensPerSecond, seconds, finalLoss: r.curve.loss.at(-1), wholeLog }) + '\n');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
} else {
  const target = await loadModel(TARGET);
  const d = target.config.dim;
  const rowBytes = 16 + 4 * d, rows = Math.floor(((f.logGb as number) * 1e9) / rowBytes / SEQ_LEN) * SEQ_LEN;
  const fs = statfsSync(f.dir as string), free = fs.bavail * fs.bsize;
  if (free < 1.2 * rows * rowBytes) {
    process.stderr.write(`error: --dir ${f.dir}: ${(free / 1e9).toFixed(1)} GB free, the log needs ${((rows * rowBytes) / 1e9).toFixed(1)} GB\n`);
    process.exit(1);
  }
  const dir = mkdtempSync(join(f.dir as string, 'eaglet-stream-'));
  const log = join(dir, 'big.arrow');
  try {
    const t0 = performance.now();
    const w = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/bench-train-stream.ts', '--write', log, '--rows', String(rows)], { stdio: 'inherit' });
    if (w.status !== 0) throw new Error(`writing the synthetic log failed (status ${w.status})`);
    const bytes = statSync(log).size;
    const writeSeconds = (performance.now() - t0) / 1000;
    const capKb = (f.capMb as number) * 1024;
    const cmd = `ulimit -d ${capKb} && exec "${process.execPath}" --import tsx scripts/bench-train-stream.ts --child "${log}" --steps ${f.steps}`;
    const c = spawnSync('/bin/sh', ['-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (c.status !== 0) {
      process.stderr.write(`error: the capped training process failed (status ${c.status}, signal ${c.signal})\n${c.stdout}`);
      process.exitCode = 1;
    } else {
      const r = JSON.parse(c.stdout.trim().split('\n').at(-1)!);
      process.stdout.write(`parent process peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB (a floor under the child's maxRSS: fork copies it)\n`);
      const mb = (kb: number) => (kb / 1024).toFixed(0);
      process.stdout.write(
        `log: ${(bytes / 1e9).toFixed(2)} GB on disk, ${rows} rows of d=${d} (written in ${writeSeconds.toFixed(0)} s)\n` +
          `train-draft (ort) under ulimit -d ${f.capMb} MB: ${r.steps} steps in ${r.seconds.toFixed(0)} s (${r.tokPerS.toFixed(0)} tok/s in steps), final loss ${r.finalLoss.toFixed(3)}\n` +
          `peak RSS ${mb(r.maxRssKb)} MB (VmHWM ${mb(r.vmHwmKb)} MB) = ${((r.maxRssKb * 1024) / bytes * 100).toFixed(1)}% of the log; stream held at most ${r.stream.peakLoadedRows} rows (${((r.stream.peakLoadedRows * rowBytes) / 2 ** 20).toFixed(0)} MB), ${r.stream.blockLoads} block loads\n` +
          `a [rows, d] buffer for the whole log's features under the same cap: ${r.wholeLog}\n`,
      );
    }
  } finally {
    if (!f.keep) rmSync(dir, { recursive: true, force: true });
    else process.stderr.write(`kept ${log}\n`);
  }
}

/** Random sequences of `seqLen` rows: features from a reused pool of N(0,1) values at random offsets, random tokens. */
async function writeSyntheticLog(path: string, rows: number, seqLen: number, d: number, V: number): Promise<void> {
  const rng = new Rng(7), pool = Float32Array.from({ length: 1 << 22 }, () => rng.normal()); // [4M]
  const w = new FeatureLogWriter(path, d, 0);
  try {
    for (let s = 0; s * seqLen < rows; s++) {
      const tokens = Array.from({ length: seqLen + 1 }, () => rng.int(V));
      const at = rng.int(pool.length - seqLen * d);
      await w.append({ seqId: s, startPosition: 0, tokens: tokens.slice(0, seqLen), nextTokens: tokens.slice(1), features: pool.subarray(at, at + seqLen * d) });
    }
    await w.finish({ model: { source: TARGET, sha256: 'synthetic', config: (await loadModel(TARGET)).config }, corpus: { paths: [], mode: 'teacher', seqLen, maxTokens: rows } });
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/** /proc/self/status where there is one (Linux), else ''. */
function readStatus(): string {
  try {
    return readFileSync('/proc/self/status', 'utf8');
  } catch {
    return '';
  }
}
