/** Progress on a terminal is one bar redrawn in place; elsewhere, throttled lines. Missing optional packages name themselves. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatBar, formatDuration, progressBar, progressReporter, withEta } from '../training/progress.ts';
import { isMissingPackage, MissingPackageError } from '../src/errors.ts';

test('the bar: percent, counts, metrics and ETA in one line that fits the terminal', () => {
  const line = formatBar({ phase: 'train', done: 30, total: 120, metrics: { loss: 0.123456, 'tok/s': 530, 'eta-s': 65 } }, 100);
  assert.match(line, /^train  25% \[#+-+\] 30\/120 loss=0\.1235 tok\/s=530 eta 1m05s$/);
  assert.ok(line.length <= 99);
  const bar = /\[(#*)(-*)\]/.exec(line)!;
  assert.equal(bar[1].length / (bar[1].length + bar[2].length), 0.25);
  assert.ok(formatBar({ phase: 'train', done: 30, total: 120, metrics: { 'eta-s': 5 } }, 30).length <= 29);
  assert.doesNotMatch(formatBar({ phase: 'x', done: 4, total: 4, metrics: { 'eta-s': 0 } }, 80), /eta/);
  assert.deepEqual([formatDuration(42), formatDuration(185), formatDuration(3725)], ['42s', '3m05s', '1h02m']);
});

test('progressBar redraws in place, throttled, and ends each phase with a newline', () => {
  const writes: string[] = [];
  const on = progressBar({ write: (s: string) => writes.push(s), columns: 80 }, 60_000);
  on({ phase: 'log', done: 1, total: 10 });
  on({ phase: 'log', done: 2, total: 10 }); // within the interval: not drawn
  on({ phase: 'log', done: 10, total: 10 }); // the end of a phase is always drawn
  on({ phase: 'validate', done: 1, total: 3 });
  on({ phase: 'train', done: 1, total: 5 }); // a new phase before 'validate' finished: it keeps its line
  assert.equal(writes.length, 5);
  assert.ok(writes.every((w) => w === '\n' || (w.startsWith('\r') && w.includes('\x1b[K'))));
  assert.match(writes[0], /^\rlog  10% /);
  assert.match(writes[1], /^\rlog 100% .*\n$/);
  assert.match(writes[2], /^\rvalidate  33% /);
  assert.deepEqual([writes[3], writes[4].slice(0, 12)], ['\n', '\rtrain  20% ']);
});

test('with a write function (or off a terminal) progress is plain throttled lines, the last always shown', () => {
  const lines: string[] = [];
  const on = withEta(progressReporter((l) => lines.push(l), 60_000), 'tok/s');
  for (let i = 1; i <= 5; i++) on({ phase: 'log', done: i, total: 5 });
  assert.equal(lines.length, 2);
  assert.match(lines[0], /^log 1\/5$/);
  assert.match(lines[1], /^log 5\/5 tok\/s=\d+ eta-s=0$/);
  assert.ok(lines.every((l) => !l.includes('\r') && !l.includes('\x1b')));
});

test('a missing optional package is told apart from a failure inside an installed one', async () => {
  const missing = await import('@tensorflow/not-a-package' as string).catch((e: unknown) => e);
  assert.equal(isMissingPackage(missing, '@tensorflow/not-a-package'), true);
  assert.equal(isMissingPackage(missing, '@tensorflow/tfjs'), false);
  assert.equal(isMissingPackage(new Error("Cannot find package '@tensorflow/tfjs'"), '@tensorflow/tfjs'), false);
  const e = new MissingPackageError('@tensorflow/tfjs', 'training', '@tensorflow/tfjs @tensorflow/tfjs-backend-wasm');
  assert.equal(e.message, 'training needs @tensorflow/tfjs, which is not installed: npm install @tensorflow/tfjs @tensorflow/tfjs-backend-wasm');
  assert.equal(e.exitCode, 1);
});
