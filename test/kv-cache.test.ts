/** Model-based test of the K/V cache through many rounds of append, stage + keep and truncate. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { KVCache } from '../src/runtime/kv-cache.ts';

const L = 2, KV = 2, HD = 3, CAP = 40, ROW = KV * HD;
type Model = { rows: number[] }; // row tag per committed position
let tagCounter = 1;

/** t rows per layer, each row filled with (tag + layer/10) for keys and -(...) for values. */
function rows(tags: number[]): { keys: Float32Array[]; values: Float32Array[] } {
  const mk = (sign: number) => Array.from({ length: L }, (_, l) => {
    const a = new Float32Array(tags.length * ROW);
    tags.forEach((tag, r) => a.fill(sign * (tag + l / 10), r * ROW, (r + 1) * ROW));
    return a;
  });
  return { keys: mk(1), values: mk(-1) };
}

function check(m: Model, c: KVCache): void {
  assert.equal(c.length, m.rows.length);
  for (let l = 0; l < L; l++) {
    const k = c.pastKeys(l), v = c.pastValues(l);
    assert.equal(k.length, m.rows.length * ROW);
    m.rows.forEach((tag, r) => {
      for (let i = 0; i < ROW; i++) {
        assert.equal(k[r * ROW + i], Math.fround(tag + l / 10));
        assert.equal(v[r * ROW + i], Math.fround(-(tag + l / 10)));
      }
    });
  }
}

class Append implements fc.Command<Model, KVCache> {
  constructor(readonly t: number) {}
  check = (m: Readonly<Model>) => m.rows.length + this.t <= CAP;
  run(m: Model, c: KVCache) {
    const tags = Array.from({ length: this.t }, () => tagCounter++);
    const r = rows(tags);
    c.append(r.keys, r.values, this.t);
    m.rows.push(...tags);
    check(m, c);
  }
  toString = () => `append(${this.t})`;
}

/** A verification round: stage a tree of t rows, keep an ascending subset (the accepted path). */
class StageKeep implements fc.Command<Model, KVCache> {
  constructor(readonly t: number, readonly pick: boolean[]) {}
  check = (m: Readonly<Model>) => m.rows.length + this.t <= CAP;
  run(m: Model, c: KVCache) {
    const tags = Array.from({ length: this.t }, () => tagCounter++);
    const r = rows(tags);
    c.stage(r.keys, r.values, this.t);
    const keep = tags.map((_, i) => i).filter((i) => i === 0 || this.pick[i % this.pick.length]);
    c.keep(keep);
    m.rows.push(...keep.map((i) => tags[i]));
    check(m, c);
  }
  toString = () => `stageKeep(${this.t}, ${this.pick})`;
}

class Truncate implements fc.Command<Model, KVCache> {
  constructor(readonly frac: number) {}
  check = () => true;
  run(m: Model, c: KVCache) {
    const n = Math.floor(m.rows.length * this.frac);
    c.truncate(n);
    m.rows.length = n;
    check(m, c);
  }
  toString = () => `truncate(${this.frac})`;
}

test('KV cache behaves like a list of rows through append / stage+keep / truncate', () => {
  const commands = [
    fc.integer({ min: 1, max: 6 }).map((t) => new Append(t)),
    fc.tuple(fc.integer({ min: 1, max: 12 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 12 })).map(([t, p]) => new StageKeep(t, p)),
    fc.double({ min: 0, max: 1, noNaN: true }).map((f) => new Truncate(f)),
  ];
  fc.assert(
    fc.property(fc.commands(commands, { maxCommands: 60 }), (cmds) => {
      fc.modelRun(() => ({ model: { rows: [] }, real: new KVCache(L, KV, HD, CAP) }), cmds);
    }),
    { numRuns: 200, seed: 7 },
  );
});

test('KV cache refuses to overflow and keep() rejects rows out of order', () => {
  const c = new KVCache(1, 1, 2, 4);
  const r = { keys: [new Float32Array(10)], values: [new Float32Array(10)] };
  c.append(r.keys, r.values, 3);
  assert.throws(() => c.stage(r.keys, r.values, 2), /K\/V cache full/);
  c.stage(r.keys, r.values, 1);
  assert.throws(() => new KVCache(1, 1, 2, 8).keep([1, 0]), /ascending/);
});
