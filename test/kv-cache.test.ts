/**
 * Model-based test of the K/V cache through many rounds of append, commit of selected pass
 * rows and truncate, with a small stride step so the head-major layout is re-strided often.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { KVCache } from '../src/runtime/kv-cache.ts';

const L = 2, KV = 2, HD = 3, CAP = 40, ROW = KV * HD;
type Model = { rows: number[] }; // row tag per committed position
let tagCounter = 1;

/** Key element i (head i / HD) of a row tagged `tag` in layer l; values are its negation. */
const elem = (tag: number, l: number, i: number) => Math.fround(tag + l / 10 + i / 1000);

/** Pass-output-shaped rows [t, KV, HD] per layer for `tags`. */
function rows(tags: number[]): { keys: Float32Array[]; values: Float32Array[] } {
  const mk = (sign: number) => Array.from({ length: L }, (_, l) => {
    const a = new Float32Array(tags.length * ROW);
    tags.forEach((tag, r) => {
      for (let i = 0; i < ROW; i++) a[r * ROW + i] = sign * elem(tag, l, i);
    });
    return a;
  });
  return { keys: mk(1), values: mk(-1) };
}

/** Both the position-major copy and the head-major view ORT reads hold the model's rows. */
function check(m: Model, c: KVCache): void {
  assert.equal(c.length, m.rows.length);
  assert.ok(c.length <= c.stride && c.stride <= CAP, `stride ${c.stride} outside [${c.length}, ${CAP}]`);
  for (let l = 0; l < L; l++) {
    const k = c.pastKeys(l), v = c.pastValues(l), kv = c.keyView(l), vv = c.valueView(l);
    assert.equal(k.length, m.rows.length * ROW);
    assert.equal(kv.length, KV * c.stride * HD);
    m.rows.forEach((tag, r) => {
      for (let i = 0; i < ROW; i++) {
        assert.equal(k[r * ROW + i], elem(tag, l, i));
        assert.equal(v[r * ROW + i], -elem(tag, l, i));
        const h = Math.floor(i / HD), j = i % HD;
        // Keys and values alike: [KV, stride, HD] in rows, [KV, HD, stride] transposed.
        const at = c.valueLayout === 'rows' ? (h * c.stride + r) * HD + j : (h * HD + j) * c.stride + r;
        assert.equal(kv[at], elem(tag, l, i));
        assert.equal(vv[at], -elem(tag, l, i));
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

/** A verification round: a pass of t rows, of which an ascending subset (the accepted path) is committed. */
class CommitRows implements fc.Command<Model, KVCache> {
  constructor(readonly t: number, readonly pick: boolean[]) {}
  check = (m: Readonly<Model>) => m.rows.length + this.t <= CAP;
  run(m: Model, c: KVCache) {
    const tags = Array.from({ length: this.t }, () => tagCounter++);
    const r = rows(tags);
    const keep = tags.map((_, i) => i).filter((i) => i === 0 || this.pick[i % this.pick.length]);
    c.commitRows(r.keys, r.values, keep);
    m.rows.push(...keep.map((i) => tags[i]));
    check(m, c);
  }
  toString = () => `commitRows(${this.t}, ${this.pick})`;
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

for (const layout of ['rows', 'transposed'] as const)
  test(`KV cache behaves like a list of rows through append / commitRows / truncate (values in ${layout})`, () => {
    const commands = [
      fc.integer({ min: 1, max: 6 }).map((t) => new Append(t)),
      fc.tuple(fc.integer({ min: 1, max: 12 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 12 })).map(([t, p]) => new CommitRows(t, p)),
      fc.double({ min: 0, max: 1, noNaN: true }).map((f) => new Truncate(f)),
    ];
    fc.assert(
      fc.property(fc.commands(commands, { maxCommands: 60 }), (cmds) => {
        fc.modelRun(() => ({ model: { rows: [] }, real: new KVCache(L, KV, HD, CAP, 4).useValueLayout(layout) }), cmds);
      }),
      { numRuns: 200, seed: 7 },
    );
  });

test('a cache takes the value layout of the first graph fed it, and refuses another once written', () => {
  const c = new KVCache(1, 1, 2, 8);
  assert.equal(c.valueLayout, 'rows');
  c.useValueLayout('transposed').useValueLayout('rows').useValueLayout('transposed'); // nothing written: free
  const r = { keys: [new Float32Array([1, 2, 3, 4])], values: [new Float32Array([5, 6, 7, 8])] };
  c.append(r.keys, r.values, 2);
  assert.deepEqual(Array.from(c.valueView(0).subarray(0, 2)), [5, 7], 'values transposed: the first dim of both rows');
  c.useValueLayout('transposed');
  assert.throws(() => c.useValueLayout('rows'), /holding 'transposed' ones/);
  const slot = new KVCache(1, 2, 2, 8).slot(1, 1);
  slot.useValueLayout('transposed');
  assert.equal(slot.parent!.valueLayout, 'transposed', "a slot's layout is its parent's");
  slot.append(r.keys, r.values, 2);
  assert.throws(() => slot.parent!.useValueLayout('rows'), /holding 'transposed' ones/);
  c.resetLayout();
  c.useValueLayout('rows'); // every row dropped: free again
});

test('KV cache refuses to overflow and to commit rows the pass did not output', () => {
  const c = new KVCache(1, 1, 2, 4);
  const r = { keys: [new Float32Array(10)], values: [new Float32Array(10)] };
  c.append(r.keys, r.values, 3);
  assert.throws(() => c.append(r.keys, r.values, 2), /K\/V cache full/);
  assert.throws(() => c.commitRows(r.keys, r.values, [0, 1]), /K\/V cache full/);
  assert.throws(() => new KVCache(1, 1, 2, 8).commitRows(r.keys, r.values, [5]), /row 5 is outside/);
  c.commitRows(r.keys, r.values, [4]);
  assert.equal(c.length, 4);
});
