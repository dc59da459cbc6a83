/** The scripts under scripts/ answer --help and bad input as the CLI does (scripts/script-flags.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { summary } from '../scripts/script-flags.ts';

const script = (name: string, ...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', `scripts/${name}`, ...args], { encoding: 'utf8' });

test('a bad flag is one error line naming it, exit 2; --debug adds the stack', () => {
  const r = script('bench-sampling.ts', '--bogus');
  assert.equal(r.status, 2);
  assert.equal(r.stderr, 'error: --bogus: unknown flag (see --help)\n');
  const bad = script('load-test.ts', '--blocks', 'x');
  assert.equal(bad.status, 2);
  assert.equal(bad.stderr, "error: --blocks: expected a number, got 'x'\n");
  const debug = script('bench-sampling.ts', '--bogus', '--debug');
  assert.equal(debug.status, 2);
  assert.match(debug.stderr, /^error: --bogus: unknown flag \(see --help\)\nUsageError: [\s\S]*at parseFlags/);
});

test('an error meant for people thrown after parsing (a missing model) is one line, exit 1', () => {
  const r = script('bench-quant.ts', '--model', '/nonexistent-eaglet-dir');
  assert.equal(r.status, 1);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /^error: \/nonexistent-eaglet-dir\/config\.json: /);
});

test('--help prints usage, the header summary and the flag table, exit 0', () => {
  const r = script('load-test.ts', '--help');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Usage: node --import tsx scripts\/load-test\.ts \[flags\]\n\nLoad test of `eaglet serve` over loopback HTTP/);
  assert.match(r.stdout, /--concurrency LIST +client concurrency levels \(default 1,2,4,8,16\)/);
});

test('every script that reads its arguments does so through scriptFlags, with a header summary for --help', () => {
  const dir = new URL('../scripts/', import.meta.url);
  // The peer benchmark too (its own package.json); not its children, which take one JSON argument from it.
  const readers = [...readdirSync(dir), 'peer/bench.ts'].filter((f) => f.endsWith('.ts') && f !== 'script-flags.ts' && /process\.argv|parseFlags\(|scriptFlags\(/.test(readFileSync(new URL(f, dir), 'utf8')));
  assert.ok(readers.length >= 30, `${readers.length} scripts`);
  for (const f of readers) {
    const text = readFileSync(new URL(f, dir), 'utf8');
    assert.ok(text.includes('scriptFlags(import.meta.url'), `${f} reads its arguments without scriptFlags`);
    assert.ok(summary(new URL(f, dir).pathname).length > 20, f);
    // A flag check of the script's own is a UsageError (one line, exit 2), not an Error with a stack.
    assert.doesNotMatch(text, /throw new Error\(['`]--/, `${f} throws a plain Error for a flag`);
  }
});

test("a script's own flag check is one line, exit 2 (not only the flag table's)", () => {
  const r = script('serve-path.ts', '--methods', 'bogus');
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /^error: --methods: /);
  const head = script('ab-head-format.ts', '--variants', 'q8,q5');
  assert.equal(head.status, 2, head.stderr);
  assert.equal(head.stderr, 'error: --variants: q5 is not qB[-bN], mlp4-bN, mlpattn4-bN or cfg:KEY=VALUE (B = 4|8, N = 16|32|64|128)\n');
  const noModel = script('ab-head-format.ts', '--variants', 'q8,mlpattn4-b32,cfg:a=b');
  assert.equal(noModel.status, 2, noModel.stderr);
  assert.equal(noModel.stderr, 'error: --model: a target checkpoint directory is required\n');
});

test('a bug (not an error meant for people) keeps what Node prints: stack, code and cause', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
    const { scriptFlags } = await import(${JSON.stringify(new URL('../scripts/script-flags.ts', import.meta.url).href)});
    scriptFlags(${JSON.stringify(new URL('../scripts/bench-sampling.ts', import.meta.url).href)}, [], []);
    throw Object.assign(new Error('boom', { cause: new Error('the cause') }), { code: 'E_TEST' });`], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Error: boom\n\s+at /);
  assert.match(r.stderr, /code: 'E_TEST'/);
  assert.match(r.stderr, /\[cause\]: Error: the cause/);
});

test('a positional argument (no script takes one) is refused, not run on the defaults', () => {
  const r = script('bench-node-cost.ts', 'softmax', '5');
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr, 'error: softmax: unexpected argument (flags start with --)\n');
});

test("a flag checked by code the scripts share (runtime-sizes' sizeNamed) is one line, exit 2", () => {
  const r = script('profile-context.ts', '--sweep', 'bogus');
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /^error: --sweep: unknown size bogus \(have [^\n]*\)\n$/);
});

test('the peer benchmark answers --help and bad flags as the other scripts do, without node-llama-cpp installed', () => {
  const help = script('peer/bench.ts', '--help');
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^Usage: node --import tsx scripts\/peer\/bench\.ts \[flags\]\n\nThe peer benchmark: eaglet against node-llama-cpp/);
  assert.match(help.stdout, /--repeats INT +fresh processes per/);
  const bogus = script('peer/bench.ts', '--bogus');
  assert.equal(bogus.status, 2);
  assert.equal(bogus.stderr, 'error: --bogus: unknown flag (see --help)\n');
  const stray = script('peer/bench.ts', 'runs/peer');
  assert.equal(stray.status, 2);
  assert.equal(stray.stderr, 'error: runs/peer: unexpected argument (flags start with --)\n');
  const threads = script('peer/bench.ts', '--out', 'runs/peer-x', '--threads', '0');
  assert.equal(threads.status, 2);
  assert.equal(threads.stderr, 'error: --threads: expected positive integers separated by commas, got [0]\n');
});
