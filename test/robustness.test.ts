/**
 * Robustness gaps beyond test/malformed.test.ts: fuzzed feature logs, sidecars, checkpoints,
 * draft-head and predictor directories (the campaigns of scripts/robustness-report.ts, with
 * fewer cases), lying headers under a memory meter, bad flags on every command, `eaglet log`
 * killed with SIGKILL and re-run, and RSS over a long generation. train-draft and train-target
 * kill + resume are covered by test/pipeline.test.ts and test/train-kill.test.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadGenerator } from '../src/api.ts';
import { COMMANDS } from '../src/cli/commands.ts';
import { helpOf } from './support/cli.ts';
import { EagletError, FormatError, UsageError } from '../src/errors.ts';
import { loadDraftHead, saveDraftHead } from '../src/io/draft-head-io.ts';
import { saveHfCheckpoint } from '../src/io/hf.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { checkpointPath, loadCheckpoint } from '../training/checkpoint.ts';
import { indexFeatureLogs } from '../training/dataset.ts';
import { readFeatureLog, sidecarPath } from '../training/feature-log.ts';
import { trainDraft } from '../training/train-draft.ts';
import {
  campaigns, checkCase, killTrial, logFixture, lyingHeaders, measure, runLogToEnd, TARGET, writeSmallLog,
} from '../scripts/robustness-report.ts';

const dir = mkdtempSync(join(tmpdir(), 'eaglet-robust-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** `fn` must throw an EagletError whose one-line message names `path` (and matches `words`). */
async function refuses(fn: () => unknown, path: string, words: RegExp, kind: new (...args: never[]) => EagletError = EagletError): Promise<void> {
  await assert.rejects(async () => fn(), (e: unknown) => {
    assert.ok(e instanceof kind, `expected a ${kind.name}, got ${(e as Error).stack}`);
    assert.ok(e.message.includes(path), `message does not name ${path}: ${e.message}`);
    assert.ok(!e.message.includes('\n'), 'one line');
    assert.match(e.message, words);
    return true;
  });
}

const drain = async (path: string, expect?: { dim: number }) => {
  for await (const _ of readFeatureLog(path, expect));
};

test('fuzz: every reader accepts or cleanly refuses damaged and arbitrary inputs', { timeout: 60_000 }, async () => {
  for (const c of await campaigns(join(dir, 'fuzz'))) {
    await fc.assert(
      fc.asyncProperty(c.arb, async (input) => {
        const r = await checkCase(c, input);
        assert.ok(r === 'accepted' || r === 'refused', `${c.kind}: ${r}`);
      }),
      { numRuns: 40, seed: 11 },
    );
  }
});

// --- feature logs: wrong schema, widths, sidecar -------------------------------------------

test('feature log: wrong schema, wrong width for the target, missing or garbled sidecar', async () => {
  const log = join(dir, 'small.arrow');
  await writeSmallLog(log);
  const valid = readFileSync(log);
  await refuses(() => drain(log, { dim: 16 }), log, /holds features of width 8 and top-k 2, expected width 16/);
  assert.equal((await indexFeatureLogs([log], 4)).rows, 16);

  const side = sidecarPath(log), sidecar = readFileSync(side, 'utf8');
  writeFileSync(side, '{"format": "eaglet-feature-log",\n "dim": ');
  await refuses(() => indexFeatureLogs([log], 4), side, /cannot read the feature-log sidecar/);
  writeFileSync(side, 'null');
  await refuses(() => indexFeatureLogs([log], 4), side, /not an eaglet feature-log sidecar/);
  writeFileSync(side, JSON.stringify({ ...JSON.parse(sidecar), dim: 4 }));
  await refuses(() => indexFeatureLogs([log], 4), log, /holds features of width 8 and top-k 2, expected width 4/);
  rmSync(side);
  await refuses(() => indexFeatureLogs([log], 4), side, /no such file/);
  writeFileSync(side, sidecar);

  // The target's d is checked against the sidecar before training starts.
  const other = makeConfig({ ...TARGET, dim: 16, nHeads: 2 });
  await refuses(() => trainDraft({ target: { config: other, weights: randomWeights(other, 1) }, logs: [log], out: join(dir, 'never'), steps: 1, backend: 'cpu' }), log, /features of width 8, the target has 16/, UsageError);

  writeFileSync(log, valid.subarray(0, valid.length - 40));
  await refuses(() => drain(log), log, /not an Arrow IPC stream|unreadable|holds/);
});

// --- training checkpoints -------------------------------------------------------------------

test('checkpoint: truncated, of another model, or with a damaged state is refused on --resume', { timeout: 30_000 }, async () => {
  const log = join(dir, 'ck.arrow'), out = join(dir, 'ck-run');
  await writeSmallLog(log);
  const target = { config: TARGET, weights: randomWeights(TARGET, 1) };
  const run = (resume: boolean) => trainDraft({ target, logs: [log], out, steps: 2, batch: 2, window: 3, checkpointEvery: 1, backend: 'cpu', resume });
  await run(false);
  const file = checkpointPath(out), good = readFileSync(file);

  truncateSync(file, good.length - 7);
  await refuses(() => run(true), file, /truncated|exceeds|outside/, FormatError);

  // Same options and data, but tensors of another head (another hidden size): refused by shape, not by tfjs.
  writeFileSync(file, good);
  const { state, params } = loadCheckpoint(out)!;
  const wider = makeConfig({ ...TARGET, hiddenDim: 20 }), hw = randomHeadWeights(wider, 2);
  const tensors = new Map(['param', 'adam_m', 'adam_v'].flatMap((g) => [...hw].map(([n, t]) => [`${g}.${n}`, t] as const)));
  writeSafetensors(file, tensors, { eaglet_checkpoint: JSON.stringify(state) });
  await refuses(() => run(true), file, /param: tensor layers.0.mlp.gate_proj.weight has shape \[20,8\], config implies \[12,8\]: a checkpoint of another model/, FormatError);

  writeSafetensors(file, new Map([...params].map(([n, t]) => [`param.${n}`, t])), { eaglet_checkpoint: JSON.stringify(state) });
  await refuses(() => run(true), file, /adam_m: missing tensor/, FormatError);
  // A state edited so that the fingerprint still matches but the data order does not fit.
  const all = new Map(['param', 'adam_m', 'adam_v'].flatMap((g) => [...randomHeadWeights(TARGET, 3)].map(([n, t]) => [`${g}.${n}`, t] as const)));
  writeSafetensors(file, all, { eaglet_checkpoint: JSON.stringify({ ...state, order: { epoch: 0, permutation: [7, 7, 7] } }) });
  await refuses(() => run(true), file, /data order or curve do not fit this run/, FormatError);
  writeSafetensors(file, all, { eaglet_checkpoint: '{"step": 1,' });
  await refuses(() => run(true), file, /eaglet_checkpoint metadata is not valid JSON/, FormatError);

  // A checkpoint of a run with other options is the --resume flag's problem (exit 2), naming the directory.
  writeFileSync(file, good);
  await refuses(() => trainDraft({ target, logs: [log], out, steps: 3, batch: 2, window: 3, backend: 'cpu', resume: true }), out, /holds a checkpoint of another run: --steps 2 in the checkpoint, 3 now/, UsageError);
});

// --- draft heads ----------------------------------------------------------------------------

test('draft head: d / vocab mismatch with the target, truncated weights, NaN weights', async () => {
  const head = join(dir, 'head'), weights = join(head, 'model.safetensors');
  const w = randomHeadWeights(TARGET, 1);
  saveDraftHead(head, { config: headConfigFor(TARGET), weights: w });
  assert.equal(loadDraftHead(head, TARGET).config.dim, TARGET.dim);
  await refuses(() => loadDraftHead(head, { ...TARGET, dim: 16 }), join(head, 'config.json'), /head dim 8 does not match the target's 16: this head was trained for another model/);
  await refuses(() => loadDraftHead(head, { ...TARGET, vocabSize: 33 }), join(head, 'config.json'), /head vocabSize 32 does not match the target's 33/);
  saveDraftHead(head, { config: { ...headConfigFor(TARGET), nHeads: 3, nKvHeads: 2 }, weights: w });
  await refuses(() => loadDraftHead(head, TARGET), join(head, 'config.json'), /must be a multiple of num_key_value_heads/);
  saveDraftHead(head, { config: headConfigFor(TARGET), weights: w });
  truncateSync(weights, 100);
  await refuses(() => loadDraftHead(head, TARGET), weights, /exceeds the file size|outside/);
  w.get('fc.bias')!.data[2] = NaN;
  saveDraftHead(head, { config: headConfigFor(TARGET), weights: w });
  await refuses(() => loadDraftHead(head, TARGET), weights, /fc.bias has a non-finite value \(NaN\)/);
});

// --- lying headers do not allocate ------------------------------------------------------------

test('lying headers (100 GB tensors, 2^31-row batches, 10^12-row sidecars...) are refused before any large allocation', async () => {
  for (const h of await lyingHeaders(join(dir, 'lies'))) {
    const m = await measure(h.run);
    assert.equal(m.result, 'refused', h.what);
    assert.ok(m.buffersMb < 16 && m.rssMb < 64, `${h.what}: ArrayBuffers +${m.buffersMb.toFixed(1)} MB, RSS +${m.rssMb.toFixed(1)} MB`);
  }
});

// --- CLI ------------------------------------------------------------------------------------

test('every command: unknown flags, flags missing their value, non-numeric numbers are usage errors naming the flag', async () => {
  for (const name of Object.keys(COMMANDS)) {
    const help = await helpOf(name);
    // A flag whose default is a number takes a number.
    const numeric = /--([a-z-]+) [A-Z]+ [^\n]*\(default -?\d[\d.e-]*\)$/m.exec(help)?.[1];
    assert.ok(numeric, `${name} has a numeric flag`);
    const cases: [string[], string, RegExp][] = [
      [['--bogus-flag', '1'], '--bogus-flag', /unknown flag/],
      [[`--${numeric}`], `--${numeric}`, /needs a value/],
      [[`--${numeric}`, 'twelve'], `--${numeric}`, /expected a number, got 'twelve'/],
      [[`--${numeric}=`], `--${numeric}`, /expected a number/],
    ];
    for (const [argv, flag, words] of cases) {
      await assert.rejects(COMMANDS[name].run(argv), (e: unknown) => {
        assert.ok(e instanceof UsageError && e.exitCode === 2, `${name} ${argv.join(' ')}: ${(e as Error).stack}`);
        assert.ok(e.message.startsWith(`${flag}: `), e.message);
        assert.match(e.message, words);
        return true;
      });
    }
  }
});

const model = join(dir, 'cli-model');
before(() => {
  const cfg = makeConfig({ vocabSize: 8, dim: 16, nLayers: 1, nHeads: 2, maxSeqLen: 32, eosTokenIds: [] });
  saveHfCheckpoint(model, cfg, randomWeights(cfg, 3));
  const vocab = Object.fromEntries(['<unk>', 'a', 'b', 'c'].map((t, i) => [t, i]));
  writeFileSync(join(model, 'tokenizer.json'), JSON.stringify({ added_tokens: [], normalizer: null, pre_tokenizer: { type: 'Whitespace' }, post_processor: null, decoder: null, model: { type: 'WordLevel', vocab, unk_token: '<unk>' } }));
  mkdirSync(join(dir, 'not-a-head'));
  writeFileSync(join(dir, 'head.bin'), 'x');
});

function eaglet(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { encoding: 'utf8' });
  return { code: r.status, err: r.stderr };
}

test('CLI processes: a text prompt longer than the context, --draft pointing to a file, a bad number', () => {
  const cases: [string[], number, RegExp][] = [
    [['generate', '--model', model, '--prompt', Array(40).fill('a').join(' ')], 2, /^error: --prompt: has 40 tokens, the model's context is 32/],
    [['generate', '--model', model, '--prompt-ids', '1', '--draft', join(dir, 'head.bin')], 1, /^error: .*head\.bin: is a file; a draft-head is a directory of config\.json \+ model\.safetensors/],
    [['log', '--model', model, '--corpus', 'c.ids', '--out', 'o.arrow', '--mode', 'teacher', '--seq-len', '1e400', '--max-tokens', '8'], 2, /^error: --seq-len: expected a number, got '1e400'/],
  ];
  for (const [args, code, pattern] of cases) {
    const r = eaglet(...args);
    assert.equal(r.code, code, r.err);
    assert.match(r.err, pattern);
    assert.equal(r.err.trim().split('\n').length, 1, `one line, no stack trace: ${r.err}`);
  }
});

// --- crash safety and memory -----------------------------------------------------------------

test('eaglet log killed with SIGKILL at random moments leaves nothing or a complete log; a re-run is byte-identical', { timeout: 60_000 }, async () => {
  const args = logFixture(join(dir, 'kill'));
  const ref = join(dir, 'kill', 'ref.arrow'), out = join(dir, 'kill', 'out.arrow');
  const fullMs = runLogToEnd(args(ref));
  for (const u of fc.sample(fc.double({ min: 0.3, max: 0.9, noNaN: true }), { numRuns: 2, seed: 4 })) {
    const t = await killTrial(args(out), out, ref, Math.round(u * fullMs));
    assert.notEqual(t.logLeft, 'PARTIAL', `log after a kill at ${t.delayMs} ms`);
    assert.notEqual(t.sidecarLeft, 'PARTIAL', `sidecar after a kill at ${t.delayMs} ms`);
    assert.ok(t.rerunIdentical, `re-run after a kill at ${t.delayMs} ms equals the uninterrupted run`);
  }
});

test('RSS stays flat over a long speculative generation after warm-up', { timeout: 30_000 }, async () => {
  const cfg = makeConfig({ vocabSize: 256, dim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, maxSeqLen: 2100 });
  const g = await loadGenerator({ model: { config: cfg, weights: randomWeights(cfg, 1, 3), source: 'hf' }, draft: 'random', threads: 1 });
  const rss: number[] = [];
  let n = 0, next = 500;
  try {
    for await (const chunk of g.stream([1, 2, 3], { maxNewTokens: 2000, stopAtEos: false, temperature: 1, seed: 1 })) {
      n += chunk.ids.length;
      if (n >= next) (rss.push(process.memoryUsage().rss), (next += 250));
    }
  } finally {
    await g.dispose();
  }
  const growthMb = (Math.max(...rss) - rss[0]) / 2 ** 20;
  assert.ok(rss.length >= 6, `sampled ${rss.length} times`);
  assert.ok(growthMb < 24, `RSS grew ${growthMb.toFixed(1)} MB from token 500 to ${n}`);
});
