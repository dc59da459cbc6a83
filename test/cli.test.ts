/** The CLI as a user meets it: real processes, a real checkpoint directory, one-line errors. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveHfCheckpoint } from '../src/io/hf.ts';
import { writeLlama2c } from '../src/io/llama2c.ts';
import { loadGenerator } from '../src/api.ts';
import { useColour } from '../src/cli/commands/generate.ts';
import { DEFAULT_PATHS } from '../src/default-model.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { COMMANDS } from '../src/cli/commands.ts';
import { helpOf } from './support/cli.ts';
import { defaultParts } from '../src/default-model.ts';

const dir = mkdtempSync(join(tmpdir(), 'eaglet-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const model = join(dir, 'model');
const cfg = makeConfig({ vocabSize: 40, dim: 16, nLayers: 2, nHeads: 2, maxSeqLen: 32, eosTokenIds: [] });

const llamaBin = join(dir, 'stories.bin'), corpus = join(dir, 'corpus.ids'), outOfVocab = join(dir, 'out-of-vocab.jsonl');
before(() => {
  saveHfCheckpoint(model, cfg, randomWeights(cfg, 3, 3));
  writeLlama2c(llamaBin, cfg, randomWeights(cfg, 4));
  writeFileSync(outOfVocab, '[1, 2]\n[1, 99]\n');
  writeFileSync(corpus, Array.from({ length: 6 }, (_, i) => Array.from({ length: 20 }, (_, j) => (i * 7 + j) % 40).join(' ')).join('\n') + '\n');
});

/** eaglet() without blocking this process's event loop (the test holds a listening socket). */
function eagletAsync(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((done) => execFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], (e, out, err) => done({ code: e ? (e.code as number) : 0, out, err })));
}

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
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--draft', '/nonexistent/head'], 1, /^error: \/nonexistent\/head: no such directory/],
  [['frobnicate'], 2, /^error: frobnicate: unknown command/],
  // A timer past setTimeout's limit fired at once (every request 504); the bad host makes the old code fail fast.
  [['serve', '--timeout', '3000000', '--host', '999.1.1.1'], 2, /^error: --timeout: must be <= 2147483, got 3000000/],
  [['serve', '--drain-timeout', '3000000', '--host', '999.1.1.1'], 2, /^error: --drain-timeout: must be <= 2147483, got 3000000/],
  // The engine judges --policy once the model has loaded; its error names the flag, not the library's option.
  [['serve', '--model', 'MODEL', '--draft', 'random', '--policy', 'static-40', '--port', '0'], 2, /^error: --policy: static-D: D must be in \[1, 4\] \(the tree depth\), got 40/],
  // bench's prompts: too long or outside the vocabulary is --prompt-length's or the file's fault (this named the library's "prompt").
  [['bench', '--model', 'MODEL', '--draft', 'random', '--random-prompts', '1', '--prompt-length', '40', '--out', 'OUT/b'], 2, /^error: --prompt-length: has 40 tokens, the model's context is 32/],
  [['bench', '--model', 'MODEL', '--draft', 'random', '--prompts', 'OOV', '--out', 'OUT/b'], 2, /^error: .*out-of-vocab\.jsonl: prompt 2: token id 99 at index 1 is outside the vocabulary/],
  // A flag missing its value does not take the next flag as one (the 0 became a stray argument).
  [['serve', '--model-name', '--port', '0'], 2, /^error: --model-name: needs a value, got the flag --port \(write --model-name=VALUE/],
  // Options that only mean something while speculating are refused without a head, like --policy.
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--ldlp', '/some/ldlp'], 2, /^error: --ldlp: needs a draft head/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--spec'], 2, /^error: --spec: needs a draft head/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--draft', 'random', '--no-spec', '--ldlp', '/x'], 2, /^error: --ldlp: contradicts --no-spec/],
  // A tree whose budget cannot reach its depth; one depth limit everywhere.
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--draft', 'random', '--depth', '5', '--total-tokens', '2'], 2, /^error: --total-tokens: 2 tokens cannot reach depth 5 \(--depth\)/],
  // The same with the fused round (on for the embedded pair), which drafted a 3-level chain instead of the 5 asked for.
  [['generate', '--prompt-ids', '1', '--depth', '5'], 2, /^error: --total-tokens \(the default\): 3 tokens cannot reach depth 5 \(--depth\)/],
  // The depth no flag gave is the default's, not --depth's (a tuning file's: test/tune.test.ts).
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--draft', 'random', '--total-tokens', '2'], 2, /^error: --total-tokens: 2 tokens cannot reach depth 4 \(the default\)/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--draft', 'random', '--policy', 'static-40'], 2, /^error: --policy 'static-40': depth: must be <= 32/],
  // A policy spec's errors name the flag it came from; tune checks the names before it measures anything.
  // Inside a policy spec a value is written key=VALUE, and the hint says so.
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--draft', 'random', '--policy', 'ldlp:path:offset=2'], 2, /^error: --policy 'ldlp:path:offset=2': path: needs a value \(write path=VALUE\)$/m],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--draft', 'random', '--policy', 'nosuch'], 2, /^error: --policy: unknown policy 'nosuch' \(have static, /],
  [['bench', '--model', 'MODEL', '--draft', 'random', '--random-prompts', '1', '--policies', 'static,nosuch'], 2, /^error: --policies: unknown policy 'nosuch'/],
  [['tune', '--policies', 'goodput,nosuch', '--out', 'OUT/tuning.json'], 2, /^error: --policies: unknown policy 'nosuch'/],
  // An empty item in a policy list is a typo, as in an id list (bench ran the rest without a word).
  [['bench', '--model', 'MODEL', '--draft', 'random', '--random-prompts', '1', '--policies', 'static-1,,goodput'], 2, /^error: --policies: item 2 of 'static-1,,goodput' is empty/],
  [['tune', '--policies', 'goodput,', '--out', 'OUT/tuning.json'], 2, /^error: --policies: item 2 of 'goodput,' is empty/],
  // A library option's error names the flag that set it (roundDepths: --round-depths).
  [['bench', '--round-depths', '9', '--random-prompts', '1', '--out', 'OUT/bench'], 2, /^error: --round-depths: round graph depth 9 is not an integer in \[1, 3\]/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1', '--draft', 'random', '--depth', '40'], 2, /^error: --depth: must be <= 32/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1,,2'], 2, /^error: --prompt-ids: item 2 of '1,,2' is empty/],
  [['generate', '--model', 'MODEL', '--prompt-ids', '1,2,'], 2, /^error: --prompt-ids: item 3 of '1,2,' is empty/],
  // Wrong tokenizers are the tokenizer's fault, in words a person can act on.
  [['generate', '--model', 'MODEL', '--prompt', 'hi', '--tokenizer', 'BIN'], 1, /^error: .*stories\.bin: this is a llama2\.c model checkpoint, not a tokenizer/],
  [['generate', '--model', 'MODEL', '--prompt', 'hi', '--tokenizer', DEFAULT_PATHS.target], 1, /tokenizer\.json: has 1536 token ids but the model has 40: a tokenizer of another model$/m],
  // Files that do not exist are bad files (exit 1) whichever flag names them.
  [['log', '--model', 'MODEL', '--corpus', '/nonexistent/c.ids', '--out', 'OUT/x.arrow', '--mode', 'teacher', '--seq-len', '8', '--max-tokens', '8'], 1, /^error: \/nonexistent\/c\.ids: cannot read: no such file/],  // Logging and training for a quantized target take the same formats as generation.
  [['log', '--model', 'MODEL', '--corpus', '/nonexistent/c.ids', '--out', 'OUT/x.arrow', '--mode', 'teacher', '--seq-len', '8', '--max-tokens', '8', '--quantize', 'q3'], 2, /^error: --quantize: must be one of q8, q4, got 'q3'/],
  [['train-draft', '--model', 'MODEL', '--logs', '/not/read.arrow', '--out', 'OUT/h', '--quantize', 'int4'], 2, /^error: --quantize: must be one of q8, q4, got 'int4'/],
  [['collect-lengths', '--model', 'MODEL', '--draft', 'random', '--prompts', '/x.ids', '--out', 'OUT/r.arrow', '--quantize', '4'], 2, /^error: --quantize: must be one of q8, q4, got '4'/],
];

for (const [args, code, pattern] of bad) {
  test(`bad input: ${args.slice(1).join(' ').slice(0, 60)}`, () => {
    const r = eaglet(...args.map((a) => (a === 'MODEL' ? model : a === 'BIN' ? llamaBin : a === 'OOV' ? outOfVocab : a.replace(/^OUT/, dir))));
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
    assert.match(r.err, /^error: --model: no model given and the embedded default is missing/);
  }
});

test('without --model, --exit-layer self-drafts the embedded target (its head is not loaded beside it)', { skip: !defaultParts().target && 'no embedded default' }, () => {
  const r = eaglet('generate', '--prompt-ids', '1,2,3', '--max-new-tokens', '8', '--exit-layer', '2', '--json');
  assert.equal(r.code, 0, r.err);
  const { stats } = JSON.parse(r.out);
  assert.ok(stats.exitLayerHistogram[2] > 0, JSON.stringify(stats));
});

test('a flag a command stops for as required says "(required" in its --help line', async () => {
  // In this process (a child per step cost ~1 s of start-up each, over a minute in all). Each run
  // gives the flags reported so far (a choice, a number or a path that does not exist) and reads
  // the next one; the first error that is not "is required" ends the walk.
  const run = async (name: string, args: string[]): Promise<string> => {
    try {
      await COMMANDS[name].run(args);
      return '';
    } catch (e) {
      return `error: ${(e as Error).message}`;
    }
  };
  for (const name of ['log', 'train-draft', 'train-target', 'collect-lengths', 'train-ldlp', 'cost-scale', 'quantize']) {
    const help = (await helpOf(name)).split('\n');
    const args: string[] = [];
    for (let err = await run(name, []); /^error: --\S+: is required$/.test(err); err = await run(name, args)) {
      const flag = /^error: (--\S+):/.exec(err)![1];
      const line = help.findIndex((l) => l.startsWith(`  ${flag} `));
      assert.ok(line >= 0 && /\(required/.test(help[line] + help[line + 1]), `${name} ${flag}: stops as required but its help does not say so`);
      const meta = help[line].slice(flag.length + 3).split(' ')[0];
      args.push(flag, meta.includes('|') ? meta.split('|')[0] : /^[NDL]$/.test(meta) ? '8' : join(dir, 'absent', meta));
      assert.ok(args.length < 20, `${name}: ${args.join(' ')}`);
    }
    assert.ok(args.length > 0, `${name}: its first error is not a required flag, so the walk checked nothing`);
  }
});

test('serve --help says what --max-queue 0 means (no queue: 429 once every batch slot is busy)', async () => {
  assert.match(await helpOf('serve'), /--max-queue N +.*\(0: no queue, 429 as soon as all --max-batch slots are busy\)/);
});

test('serve: an address it cannot listen on is a usage error naming --host or --port', async () => {
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  try {
    const port = String((taken.address() as AddressInfo).port);
    const inUse = await eagletAsync('serve', '--port', port);
    assert.equal(inUse.code, 2, inUse.err);
    assert.match(inUse.err, new RegExp(`^error: --port: cannot listen on 127\\.0\\.0\\.1:${port}: in use \\(EADDRINUSE\\)$`, 'm'));
  } finally {
    taken.close();
  }
  const badHost = await eagletAsync('serve', '--host', '999.1.1.1', '--port', '0');
  assert.equal(badHost.code, 2, badHost.err);
  assert.match(badHost.err, /^error: --host: cannot listen on 999\.1\.1\.1:0: /m);
});

test('train-draft and train-ldlp name a log that is not there as given, not its sidecar', () => {
  const absent = join(dir, 'absent.arrow');
  for (const args of [['train-draft', '--model', model, '--logs', absent, '--out', join(dir, 'h')], ['train-ldlp', '--logs', absent, '--out', join(dir, 'l')]]) {
    const r = eaglet(...args);
    assert.equal(r.code, 1, r.err);
    // The last line: a training command reports its backend before it reads the logs.
    assert.equal(r.err.trim().split('\n').at(-1), `error: ${absent}: cannot open: no such file`);
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
    // Every flag's help starts in one column (index 31); a longer name puts it on the next line.
    const lines = h.out.split('\n');
    lines.forEach((line, i) => {
      if (!line.startsWith('  --')) return;
      const flag = /^ {2}--\S+(?: \S+)?/.exec(line)![0];
      const own = line.length > flag.length; // the help on the flag's own line
      const help = own ? line : lines[i + 1];
      const pad = help.slice(own ? flag.length : 0, 31);
      assert.ok(pad.length > 0 && pad.trim() === '' && /\S/.test(help[31] ?? ''), `${name} ${flag}: help not in its column`);
    });
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

test('bench: each static-D@fused row drafts D per round on its own round graph', () => {
  const out = join(dir, 'bench-fused');
  const r = eaglet('bench', '--model', model, '--draft', 'random', '--random-prompts', '2', '--prompt-length', '4', '--tree-top-k', '1', '--depth', '3', '--total-tokens', '3', '--repeats', '1', '--warmup', '0', '--max-new-tokens', '10', '--policies', 'static-1@fused,static-3@fused,static-5@fused', '--out', out);
  assert.equal(r.code, 0, r.err);
  const rows = JSON.parse(readFileSync(`${out}.json`, 'utf8')).policies as { label: string; rounds: number; draftPasses: number; mismatches: number }[];
  // A round graph drafts its whole depth every round (static-5 capped at --depth 3), except a
  // run's last round when the budget leaves it one token: a plain step (2 prompts, 1 repeat).
  assert.deepEqual(rows.map((p) => [p.label, p.mismatches]), [['static-1@fused', 0], ['static-3@fused', 0], ['static-5@fused', 0]]);
  rows.forEach((p, i) => {
    const D = [1, 3, 3][i], drafting = p.draftPasses / D;
    assert.ok(Number.isInteger(drafting) && drafting >= p.rounds - 2 && drafting <= p.rounds, `${p.label}: ${p.draftPasses} head steps over ${p.rounds} rounds`);
  });
});

test('log and collect-lengths make the folder of --out', () => {
  const log = join(dir, 'new', 'deeper', 'f.arrow');
  const r = eaglet('log', '--model', model, '--corpus', corpus, '--out', log, '--mode', 'teacher', '--seq-len', '8', '--max-tokens', '16');
  assert.equal(r.code, 0, r.err);
  assert.ok(existsSync(log) && existsSync(`${log}.json`));
  const rounds = join(dir, 'new2', 'r.arrow');
  const c = eaglet('collect-lengths', '--model', model, '--draft', 'random', '--prompts', corpus, '--out', rounds, '--prompt-len', '4', '--max-prompts', '2', '--max-new-tokens', '6', '--depth', '2', '--total-tokens', '4');
  assert.equal(c.code, 0, c.err);
  assert.ok(existsSync(rounds));
});

test('generate: the text alone on stdout (stats line on stderr); --show-drafts colours only a terminal without NO_COLOR', () => {
  const r = eaglet('generate', '--model', model, '--prompt-ids', '1,2,3', '--max-new-tokens', '8', '--draft', 'random', '--show-drafts');
  assert.equal(r.code, 0, r.err);
  assert.doesNotMatch(r.out, /\x1b/);
  assert.doesNotMatch(r.out, /tokens in/);
  assert.equal(r.out.trim().split(/\s+/).length, 8, r.out);
  assert.match(r.err, /--show-drafts: no colour/);
  assert.match(r.err, /^\[8 tokens in .*; stop: max-new-tokens\]$/m);
  assert.equal(useColour({ isTTY: true }, {}), true);
  assert.equal(useColour({ isTTY: true }, { NO_COLOR: '1' }), false);
  assert.equal(useColour({ isTTY: false }, {}), false);
  assert.equal(useColour({}, {}), false);
});

test('a signal aborted before generation starts yields no token and runs no pass', async () => {
  const g = await loadGenerator({ model, draft: 'random' });
  try {
    const passes = g.generator.parts.target.stats.passes;
    const chunks = [];
    const it = g.stream([1, 2, 3], { maxNewTokens: 8, signal: AbortSignal.abort() });
    let r = await it.next();
    for (; !r.done; r = await it.next()) chunks.push(r.value);
    assert.deepEqual(chunks, []);
    assert.equal(r.value.stopReason, 'aborted');
    assert.equal(r.value.newTokens, 0);
    assert.equal(g.generator.parts.target.stats.passes, passes);
  } finally {
    await g.dispose();
  }
});

test('train-draft refuses to overwrite a head unless told', async () => {
  const { trainDraft } = await import('../training/train-draft.ts');
  const out = join(dir, 'head-exists');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'model.safetensors'), 'not read');
  await assert.rejects(
    trainDraft({ target: { config: cfg, weights: randomWeights(cfg, 3, 3) }, logs: ['/not/read.arrow'], out }),
    /--out: .*head-exists already holds a draft head or checkpoint: --overwrite replaces it, --resume continues its run/,
  );
  const r = eaglet('train-draft', '--model', model, '--logs', '/not/read.arrow', '--out', out);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /^error: --out: .*: --overwrite replaces it/m);
});

test("--debug: a library error renamed to its flag keeps the stack of where it was thrown", () => {
  const r = eaglet('bench', '--round-depths', '9', '--random-prompts', '1', '--out', join(dir, 'bench-debug'), '--debug');
  assert.equal(r.code, 2, r.err);
  const frames = r.err.split('\n').filter((l) => /^\s+at /.test(l));
  assert.ok(frames.length > 0, r.err);
  assert.doesNotMatch(frames[0], /cli\/command\.ts/, r.err);
  assert.match(frames[0], /loadGenerator|api\.ts/, r.err);
});
