/**
 * The training pipeline as a user runs it: `eaglet log` a tiny random target's own generations,
 * `eaglet train-draft` a head on them, then speculate with it on held-out prompts. The trained
 * head must accept more per round than a random one while the output stays exactly the plain
 * decoding; a train-draft killed with SIGKILL and resumed ends with the same weights as an
 * uninterrupted run, and the kill leaves nothing at the final paths.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadGenerator } from '../src/api.ts';
import { fileList } from '../src/cli/common-flags.ts';
import { saveHfCheckpoint } from '../src/io/hf.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { Rng } from '../src/util/rng.ts';
import { loadCheckpoint } from '../training/checkpoint.ts';

const dir = mkdtempSync(join(tmpdir(), 'eaglet-pipeline-'));
const model = join(dir, 'model');
const logFile = join(dir, 'self.arrow');
// eosTokenIds [] so every sequence runs to its full length; scale 3 makes continuations predictable enough to learn.
const cfg = makeConfig({ vocabSize: 48, dim: 32, nLayers: 1, nHeads: 2, maxSeqLen: 128, eosTokenIds: [] });
const rng = new Rng(5);
const randomPrompt = (): number[] => Array.from({ length: 4 }, () => rng.int(cfg.vocabSize));
const trainPrompts = Array.from({ length: 60 }, randomPrompt);
const heldOut = Array.from({ length: 6 }, randomPrompt);
/** Identical for the uninterrupted and the killed-then-resumed run (a resume refuses other options). */
const TRAIN = ['--logs', logFile, '--steps', '300', '--window', '16', '--batch', '8', '--checkpoint-every', '25', '--backend', 'wasm', '--seed', '1'];
const FINAL_FILES = ['model.safetensors', 'config.json', 'training-curve.svg', 'training.json'];

const cli = ['--import', 'tsx', 'src/cli/main.ts'];
function eaglet(...args: string[]) {
  const r = spawnSync(process.execPath, [...cli, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

before(() => {
  saveHfCheckpoint(model, cfg, randomWeights(cfg, 1, 3));
  writeFileSync(join(dir, 'prompts.ids'), trainPrompts.map((p) => p.join(' ')).join('\n') + '\n');
  writeFileSync(join(dir, 'bad.ids'), '1 2 99\n');
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('property: a list flag takes comma-separated files plus the positionals after it, in order', () => {
  const name = fc.stringMatching(/^[a-z0-9._/-]{1,8}$/);
  fc.assert(
    fc.property(fc.array(name, { minLength: 1, maxLength: 4 }), fc.array(name, { maxLength: 3 }), (inFlag, positional) => {
      assert.deepEqual(fileList({ logs: inFlag.join(','), _: positional }, 'logs', '--logs'), [...inFlag, ...positional]);
    }),
    { numRuns: 100, seed: 1 },
  );
  assert.throws(() => fileList({ _: [] }, 'logs', '--logs'), /--logs: is required/);
});

test('log -> train-draft -> generate: the trained head beats a random one on held-out prompts, losslessly', async (t) => {
  assert.ok(heldOut.every((h) => !trainPrompts.some((p) => p.join() === h.join())), 'held-out prompts are unseen');
  const logged = eaglet('log', '--model', model, '--corpus', join(dir, 'prompts.ids'), '--out', logFile, '--mode', 'generate', '--seq-len', '64', '--max-tokens', '4000');
  assert.equal(logged.code, 0, logged.err);
  assert.match(logged.out, /^logged 3840 rows in 60 sequences \(generate\) to .*self\.arrow, sidecar .*self\.arrow\.json; \d+ tok\/s\n$/);

  const head = join(dir, 'head');
  const trained = eaglet('train-draft', '--model', model, '--out', head, ...TRAIN);
  assert.equal(trained.code, 0, trained.err);
  assert.match(trained.err, /^training backend: wasm\n/);
  assert.match(trained.err, /^train 300\/300 loss=\S+ val-top1=\S+ tok\/s=\d+/m);
  assert.match(trained.out, /^trained 300 steps on wasm, \d+ tok\/s\n/);
  t.diagnostic(trained.out.trim());
  for (const f of FINAL_FILES) assert.ok(existsSync(join(head, f)), f);

  const stats = { trained: { rounds: 0, tokens: 0 }, random: { rounds: 0, tokens: 0 } };
  const ar = await loadGenerator({ model, threads: 1 });
  const spec = { trained: await loadGenerator({ model, draft: head, threads: 1 }), random: await loadGenerator({ model, draft: 'random', threads: 1 }) };
  try {
    for (const prompt of heldOut) {
      const want = (await ar.generate(prompt, { maxNewTokens: 48 })).ids;
      for (const kind of ['trained', 'random'] as const) {
        const r = await spec[kind].generate(prompt, { maxNewTokens: 48 });
        assert.deepEqual(r.ids, want, `${kind} head: speculative output equals plain decoding`);
        stats[kind].rounds += r.stats.rounds;
        stats[kind].tokens += r.stats.roundTokens;
      }
    }
  } finally {
    await Promise.all([ar.dispose(), spec.trained.dispose(), spec.random.dispose()]);
  }
  const tau = (s: { rounds: number; tokens: number }): number => s.tokens / s.rounds;
  t.diagnostic(`held-out tau: trained ${tau(stats.trained).toFixed(3)}, random ${tau(stats.random).toFixed(3)}`);
  assert.ok(tau(stats.trained) > tau(stats.random) + 0.1, `tau trained ${tau(stats.trained)} vs random ${tau(stats.random)}`);
});

test('train-draft killed with SIGKILL mid-run resumes to the weights of an uninterrupted run', async () => {
  const head = join(dir, 'head'), out = join(dir, 'killed');
  assert.ok(existsSync(join(head, 'model.safetensors')), 'needs the uninterrupted run of the previous test');
  const child = spawn(process.execPath, [...cli, 'train-draft', '--model', model, '--out', out, ...TRAIN], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_, signal) => resolve(signal)));
  // Kill once a checkpoint beyond the first exists: the run is well under way and far from its end.
  for (;;) {
    assert.equal(child.exitCode, null, 'train-draft ended before it could be killed');
    const step = existsSync(join(out, 'checkpoint.safetensors')) ? loadCheckpoint(out)?.state.step ?? 0 : 0;
    if (step >= 50) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  assert.equal(await exited, 'SIGKILL');
  for (const f of FINAL_FILES) assert.ok(!existsSync(join(out, f)), `${f} must not exist after the kill`);
  const at = loadCheckpoint(out)!.state.step;
  assert.ok(at >= 50 && at < 300, `checkpoint at step ${at}`);

  const resumed = eaglet('train-draft', '--model', model, '--out', out, ...TRAIN, '--resume');
  assert.equal(resumed.code, 0, resumed.err);
  assert.match(resumed.out, /^trained 300 steps \(resumed at step \d+\) on wasm/);
  assert.ok(Number(/resumed at step (\d+)/.exec(resumed.out)![1]) >= at);
  for (const f of ['model.safetensors', 'config.json', 'training-curve.svg'])
    assert.deepEqual(readFileSync(join(out, f)), readFileSync(join(head, f)), `${f} equals the uninterrupted run's`);
  assert.ok(readdirSync(out).filter((f) => f.includes('.tmp-')).length <= 1, 'at most the killed process\'s temporary file remains');
});

const bad: [string[], number, RegExp][] = [
  [['log', '--model', 'MODEL', '--corpus', 'x.ids', '--out', 'o.arrow', '--seq-len', '8', '--max-tokens', '8'], 2, /^error: --mode: is required/],
  [['log', '--model', 'MODEL', '--corpus', 'x.ids', '--out', 'o.arrow', '--mode', 'dream', '--seq-len', '8', '--max-tokens', '8'], 2, /^error: --mode: must be one of teacher, generate/],
  [['log', '--model', 'MODEL', '--out', 'o.arrow', '--mode', 'teacher', '--seq-len', '8', '--max-tokens', '8'], 2, /^error: --corpus: is required/],
  [['log', '--model', 'MODEL', '--corpus', 'BADIDS', '--out', 'OUT', '--mode', 'teacher', '--seq-len', '8', '--max-tokens', '8'], 1, /^error: .*bad\.ids: line 1: "99" is not a token id in \[0, 48\)/],
  [['log', '--model', 'MODEL', '--corpus', 'BADIDS', '--out', 'OUT', '--mode', 'teacher', '--seq-len', '999', '--max-tokens', '8'], 2, /^error: --seq-len: must be an integer in \[2, 128\]/],
  [['train-draft', '--model', 'MODEL', '--logs', 'x.arrow', '--out', 'd', '--backend', 'gpu'], 2, /^error: --backend: must be one of auto, ort, tfjs-node, wasm, cpu/],
  [['train-draft', '--model', 'MODEL', '--logs', 'x.arrow', '--out', 'd', '--lr', '0'], 2, /^error: --lr: must be > 0/],
  [['train-draft', '--model', 'MODEL', '--out', 'd'], 2, /^error: --logs: is required/],
];

for (const [args, code, pattern] of bad) {
  test(`bad input: ${args.join(' ').slice(0, 70)}`, () => {
    const subst: Record<string, string> = { MODEL: model, BADIDS: join(dir, 'bad.ids'), OUT: join(dir, 'bad.arrow') };
    const r = eaglet(...args.map((a) => subst[a] ?? a));
    assert.equal(r.code, code, r.err);
    assert.match(r.err, pattern);
    assert.equal(r.err.trim().split('\n').length, 1, `one line, no stack trace: ${r.err}`);
    assert.ok(!existsSync(join(dir, 'bad.arrow')), 'nothing written at the output path');
  });
}
