/** The CLI as a user meets it: real processes, a real checkpoint directory, one-line errors. */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveHfCheckpoint } from '../src/io/hf.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { COMMANDS } from '../src/cli/commands.ts';
import { defaultParts } from '../src/default-model.ts';

const dir = mkdtempSync(join(tmpdir(), 'eaglet-cli-'));
const model = join(dir, 'model');
const cfg = makeConfig({ vocabSize: 40, dim: 16, nLayers: 2, nHeads: 2, maxSeqLen: 32, eosTokenIds: [] });

before(() => saveHfCheckpoint(model, cfg, randomWeights(cfg, 3, 3)));

function eaglet(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('generate --json: plain and speculative give the same ids, with stats', () => {
  const ar = eaglet('generate', '--model', model, '--prompt-ids', '1,2,3', '--max-new-tokens', '12', '--json');
  assert.equal(ar.code, 0, ar.err);
  const a = JSON.parse(ar.out);
  assert.equal(a.ids.length, 12);
  assert.equal(a.stats.targetPasses, 12);
  const sp = eaglet('generate', '--model', model, '--prompt-ids', '1,2,3', '--max-new-tokens', '12', '--json', '--draft', 'random', '--depth', '3');
  assert.equal(sp.code, 0, sp.err);
  const s = JSON.parse(sp.out);
  assert.deepEqual(s.ids, a.ids);
  for (const k of ['rounds', 'tau', 'acceptedHistogram', 'draftPasses', 'timeMs']) assert.ok(k in s.stats, k);
  assert.ok(s.stats.draftPasses > 0);
  const off = JSON.parse(eaglet('generate', '--model', model, '--prompt-ids', '1,2,3', '--max-new-tokens', '12', '--json', '--draft', 'random', '--no-spec').out);
  assert.equal(off.stats.draftPasses, 0);
});

test('generate stops at the context length with a clear reason', () => {
  const r = eaglet('generate', '--model', model, '--prompt-ids', '1,2,3', '--max-new-tokens', '100', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.stats.stopReason, 'context');
  assert.equal(j.ids.length, cfg.maxSeqLen - 3 + 1);
});

const bad: [string[], number, RegExp][] = [
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--bogus'], 2, /^error: --bogus: unknown flag/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--max-new-tokens', '-3'], 2, /^error: --max-new-tokens: must be >= 1/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--temperature', '-1'], 2, /^error: --temperature: must be >= 0/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--top-p', '0'], 2, /^error: --top-p: must be > 0/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--top-p', '1.5'], 2, /^error: --top-p: must be <= 1/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--depth', '0', '--draft', 'random'], 2, /^error: --depth: must be >= 1/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1,99'], 2, /^error: --prompt-ids: token id 99 at index 1 is outside the vocabulary/],
  [['generate', '--model', 'MODEL', '--prompt-ids', Array.from({ length: 40 }, () => '1').join(',')], 2, /^error: --prompt-ids: has 40 tokens, the model's context is 32/],
  [['generate', '--model', 'MODEL', '--prompt', ''], 2, /^error: --prompt: is empty/],
  [['generate', '--model', 'MODEL', '--prompt', 'hi'], 2, /^error: --prompt: this model has no tokenizer/],
  [['generate', '--model', 'MODEL'], 2, /^error: --prompt: give exactly one of --prompt or --prompt-ids/],
  [['generate', '--model', '/nonexistent/model', '--prompt-ids', '1'], 1, /^error: \/nonexistent\/model: no such file or directory/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--draft', '/nonexistent/head'], 1, /^error: \/nonexistent\/head: not a draft-head directory/],
  [['frobnicate'], 2, /^error: frobnicate: unknown command/],
];

for (const [args, code, pattern] of bad) {
  test(`bad input: ${args.slice(1).join(' ').slice(0, 60)}`, () => {
    const r = eaglet(...args.map((a) => (a === 'MODEL' ? model : a)));
    assert.equal(r.code, code, r.err);
    assert.match(r.err, pattern);
    assert.equal(r.err.trim().split('\n').length, 1, `one line, no stack trace: ${r.err}`);
  });
}

test('without --model, generate uses the embedded default, or says it is missing', () => {
  const r = eaglet('generate', '--prompt-ids', '1,2,3', '--max-new-tokens', '4', '--json');
  if (defaultParts().target) {
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).ids.length, 4);
  } else {
    assert.equal(r.code, 2);
    assert.match(r.err, /^error: model: no model given and the embedded default is missing/);
  }
});

test('--help on every command, and the command list', () => {
  const top = eaglet('--help');
  assert.equal(top.code, 0);
  assert.match(top.out, /generate/);
  for (const name of Object.keys(COMMANDS)) {
    const h = eaglet(name, '--help');
    assert.equal(h.code, 0, `${name} --help: ${h.err}`);
    assert.match(h.out, /^Usage: eaglet /, name);
    assert.match(top.out, new RegExp(`\\b${name}\\b`));
  }
  assert.match(eaglet('generate', '--help').out, /--max-new-tokens N\s+tokens to generate at most \(default 128\)/);
});

test('bench without --model benchmarks the embedded default pair on its held-out prompts, with a `default` row', { skip: !defaultParts().draft && 'no embedded default' }, () => {
  const out = join(dir, 'bench-default');
  const r = eaglet('bench', '--repeats', '1', '--warmup', '0', '--max-new-tokens', '8', '--policies', 'default,static-1', '--out', out);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^24 prompts/m);
  assert.match(r.out, /^\| default \| /m);
  assert.match(r.out, /^Lossless/m);
  assert.match(eaglet('bench', '--draft', 'random').err, /--draft: needs --model/);
});
