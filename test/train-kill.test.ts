/**
 * SIGKILL safety of training on the ort backend, with real processes: `eaglet train-draft`
 * (streaming its log through a small shuffle buffer) and `eaglet train-target` are killed
 * mid-run (a checkpoint written every step); after every kill the checkpoint on disk loads,
 * no final file exists, and the last resume ends with files byte-identical to an
 * uninterrupted run. A process that does nothing but write large checkpoints is killed at
 * random moments, nearly always inside a write: the checkpoint left is always a whole one
 * (temp file + rename), never a mix of two.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveHfCheckpoint } from '../src/io/hf.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { Rng } from '../src/util/rng.ts';
import { loadCheckpoint } from '../training/checkpoint.ts';
import { runLog } from '../training/log.ts';

const dir = mkdtempSync(join(tmpdir(), 'eaglet-kill-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const cli = ['--import', 'tsx', 'src/cli/main.ts'];
function eaglet(...args: string[]) {
  const r = spawnSync(process.execPath, [...cli, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/**
 * Starts `args`, SIGKILLs it once the checkpoint in `ckptDir` has reached `atStep`, and checks
 * what the kill left: a loadable checkpoint of a step in [atStep, total), no file of `finals`.
 * Returns the checkpoint's step and whether a temporary file shows the kill hit a write.
 */
async function killAt(args: string[], ckptDir: string, atStep: number, total: number, out: string, finals: string[]): Promise<{ step: number; midWrite: boolean }> {
  const child = spawn(process.execPath, [...cli, ...args], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_, signal) => resolve(signal)));
  for (;;) {
    assert.equal(child.exitCode, null, `${args[0]} ended before it could be killed at step ${atStep}`);
    let step = 0;
    try {
      step = loadCheckpoint(ckptDir)?.state.step ?? 0;
    } catch {
      // The reader raced a rename on a slow filesystem: look again (the assertion after the kill is the test).
    }
    if (step >= atStep) break;
    await new Promise((r) => setTimeout(r, 2));
  }
  // Not in step with the checkpoint just seen: somewhere in the following step or its write.
  await new Promise((r) => setTimeout(r, atStep % 7));
  child.kill('SIGKILL');
  assert.equal(await exited, 'SIGKILL');
  const step = loadCheckpoint(ckptDir)!.state.step; // throws if the kill left a damaged checkpoint
  assert.ok(step >= atStep && step < total, `checkpoint at step ${step}, killed after ${atStep}`);
  for (const f of finals) assert.ok(!existsSync(join(out, f)), `${f} must not exist after the kill`);
  return { step, midWrite: readdirSync(ckptDir).some((f) => f.includes('.tmp-')) };
}

/** Kills a run at each of `kills` (each resumed with --resume), resumes to the end, and compares `compare` with the uninterrupted run in `ref`. */
async function killChain(t: { diagnostic(s: string): void }, argsFor: (out: string) => string[], ckptOf: (out: string) => string, kills: number[], total: number, finals: string[], compare: string[]) {
  const ref = join(dir, `${argsFor('')[0]}-ref`), out = join(dir, `${argsFor('')[0]}-killed`);
  const full = eaglet(...argsFor(ref));
  assert.equal(full.code, 0, full.err);
  const seen: string[] = [];
  for (const [i, at] of kills.entries()) {
    const k = await killAt([...argsFor(out), ...(i > 0 ? ['--resume'] : [])], ckptOf(out), at, total, out, finals);
    seen.push(`step ${k.step}${k.midWrite ? ' (mid-write)' : ''}`);
  }
  const resumed = eaglet(...argsFor(out), '--resume');
  assert.equal(resumed.code, 0, resumed.err);
  assert.match(resumed.out, /resumed at step \d+/);
  t.diagnostic(`${argsFor('')[0]}: killed at ${seen.join(', ')}; resumed: ${resumed.out.split('\n')[0]}`);
  for (const f of compare) assert.deepEqual(readFileSync(join(out, f)), readFileSync(join(ref, f)), `${f} equals the uninterrupted run's`);
}

const cfg = makeConfig({ vocabSize: 48, dim: 32, nLayers: 1, nHeads: 2, maxSeqLen: 128, eosTokenIds: [] });
const model = join(dir, 'model'), log = join(dir, 'self.arrow');
before(async () => {
  saveHfCheckpoint(model, cfg, randomWeights(cfg, 1, 3));
  const rng = new Rng(5);
  writeFileSync(join(dir, 'prompts.ids'), Array.from({ length: 40 }, () => Array.from({ length: 4 }, () => rng.int(cfg.vocabSize)).join(' ')).join('\n') + '\n');
  await runLog({ model: { config: cfg, weights: randomWeights(cfg, 1, 3) }, corpus: [join(dir, 'prompts.ids')], out: log, mode: 'generate', seqLen: 64, maxTokens: 2560 });
});

test('train-draft (ort, streamed log) killed with SIGKILL twice resumes to the bytes of an uninterrupted run', { timeout: 120_000 }, async (t) => {
  // --shuffle-rows 256: blocks of 17 rows, so the stream position matters; a checkpoint every step, so kills can land in a write.
  const args = (out: string) => ['train-draft', '--model', model, '--logs', log, '--out', out, '--steps', '240', '--window', '16', '--batch', '4',
    '--checkpoint-every', '1', '--shuffle-rows', '256', '--backend', 'ort', '--seed', '3'];
  await killChain(t, args, (out) => out, [40, 150], 240, ['model.safetensors', 'config.json', 'training.json'], ['model.safetensors', 'config.json', 'training-curve.svg']);
});

test('train-target (ort) killed with SIGKILL resumes to the bytes of an uninterrupted run', { timeout: 120_000 }, async (t) => {
  const corpus = join(dir, 'corpus');
  mkdirSync(corpus, { recursive: true });
  const rng = new Rng(9), names = ['Array', 'Map', 'Promise', 'string', 'number'];
  for (let i = 0; i < 6; i++)
    writeFileSync(join(corpus, `lib.f${i}.d.ts`), Array.from({ length: 30 }, () => `export declare function f${rng.int(20)}(x: ${names[rng.int(5)]}): ${names[rng.int(5)]};`).join('\n') + '\n');
  const args = (out: string) => ['train-target', '--corpus-dir', corpus, '--out', out, '--dim', '32', '--layers', '1', '--heads', '2', '--vocab', '300', '--seq-len', '16',
    '--batch', '4', '--steps', '120', '--warmup', '4', '--held-out', '0.3', '--eval-every', '60', '--eval-tokens', '128', '--checkpoint-every', '1', '--seed', '7', '--backend', 'ort'];
  await killChain(t, args, (out) => join(out, 'checkpoint'), [50], 120, ['model.safetensors', 'config.json'], ['model.safetensors', 'config.json', 'tokenizer.json']);
});

test('a process killed at random moments while writing checkpoints always leaves a whole checkpoint', { timeout: 60_000 }, async (t) => {
  const out = join(dir, 'writer');
  mkdirSync(out, { recursive: true });
  // Writes checkpoints of 3 x 2 MB forever; every value of checkpoint i is i, and so is its step.
  const child = join(dir, 'writer.ts');
  writeFileSync(child, `import { saveCheckpoint } from ${JSON.stringify(join(process.cwd(), 'training/checkpoint.ts'))};
const n = 1 << 19, data = new Float32Array(n), t = new Map([['w', { shape: [n], data }]]);
const curve = { step: [], loss: [], valStep: [], valTop1: [], valTop3: [], valFeatureLoss: [] };
for (let i = 1; ; i++) {
  data.fill(i);
  saveCheckpoint(${JSON.stringify(out)}, { state: { step: i, rng: { seed: 0, step: i }, fingerprint: '{}', curve }, params: t, m: t, v: t });
}
`);
  const rng = new Rng(11);
  let midWrite = 0;
  const trials = 6;
  for (let k = 0; k < trials; k++) {
    const p = spawn(process.execPath, ['--import', 'tsx', child], { stdio: 'ignore' });
    const exited = new Promise((resolve) => p.once('exit', resolve));
    while (!existsSync(join(out, 'checkpoint.safetensors'))) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 20 + rng.int(200)));
    p.kill('SIGKILL');
    await exited;
    const c = loadCheckpoint(out)!;
    for (const w of [c.params, c.m, c.v]) assert.ok(w.get('w')!.data.every((x) => x === c.state.step), `checkpoint ${c.state.step} holds values of another write`);
    const tmp = readdirSync(out).filter((f) => f.includes('.tmp-'));
    if (tmp.length > 0) midWrite++;
    for (const f of tmp) rmSync(join(out, f));
    rmSync(join(out, 'checkpoint.safetensors'));
  }
  t.diagnostic(`${midWrite} of ${trials} kills landed inside a checkpoint write`);
  assert.ok(midWrite >= 1, 'no kill landed inside a write: the test did not test atomicity');
});
