/** The documented examples run as written. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

test('examples/library.ts runs: streams, aborts at a round boundary, generates', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'examples/library.ts'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.ok(out.streamed >= 10 && out.streamed < 64, `aborted stream emitted ${out.streamed}`);
  assert.equal(out.ids.length, 16);
  assert.equal(out.stopReason, 'max-new-tokens');
});

test('examples/serve.ts runs: the handler inside an existing node:http app, streamed and chat replies', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'examples/serve.ts'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.ok(out.streamed.length > 0);
  assert.equal(out.chatTokens, 16);
  assert.equal(out.own, 'my own app\n');
});
