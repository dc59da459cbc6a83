/**
 * The K/V cache of one model, in JS buffers that attention reads in place.
 *
 * Layout per layer, head-major with `stride` rows reserved per head (length <= stride), keys and
 * values alike, in the cache's layout (see ValueLayout):
 *   'transposed' keys[l], values[l] [nKvHeads, headDim, stride]: split attention's scores
 *                q [rows, hd] x K^T [hd, stride] are one plain MatMul, and weights x (V^T)^T
 *                a MatMul with transposed B (faster for split attention at long contexts)
 *   'rows'       keys[l], values[l] [nKvHeads, stride, headDim]: as ONNX's one-kernel Attention
 *                reads its past, so it reads the cache without a Transpose
 * Each is one preallocated Float32Array of capacity * nKvHeads * headDim floats, of which the
 * first nKvHeads * stride * headDim are handed to ORT zero-copy (`keyView`, `valueView`); the
 * graph masks rows [length, stride) out, so no pass copies or transposes the past. The stride
 * grows in steps (`ensureRows`): a pass reads at most ~3% + 2 * strideStep rows beyond the
 * live ones, so short contexts stay cheap.
 *
 * Pass outputs (new rows) arrive position-major, [T, nKvHeads, headDim] per layer; `append` and
 * `commitRows` scatter them into the head blocks, so work is proportional to the rows written.
 * Rows after `length` are scratch: `stageLayers` writes rows there that later passes read
 * (their `pastRows` > length) and `keep` / `permuteStaged` move them.
 *
 * The layout is the cache's, not the code's: until its first rows are written a cache takes
 * the layout of whichever session feeds it (`useValueLayout`, called by every feed); after that a
 * session of another layout is refused, so the graphs sharing one cache (a target's steps,
 * verification, fused rounds, exit / rest graphs, serving's per-slot graphs) must read one layout.
 *
 * API: append (commit all rows of a pass), commitRows (commit chosen rows of a pass: the
 * accepted path), truncate; staging: stage / stageLayers, keep, permuteStaged; views for ORT:
 * keyView / valueView; copies for tests: pastKeys / pastValues.
 *
 * Slots (serving): a batch cache is one KVCache whose heads are B slots' heads side by side
 * (nKvHeads = B * the model's); `slot(i, heads)` is slot i's cache over heads
 * [i * heads, (i + 1) * heads) of the same buffers: one request's cache, with the whole API
 * above and ORT views of its own (a request alone runs the ordinary single-request pass on it),
 * while a batched pass reads the first B slots at once as [B, nKv, hd, stride] (or [B, nKv, stride, hd]). All slots share
 * the parent's stride, which grows with the longest slot (moving every slot's rows) and shrinks
 * (`shrinkRows`) when long requests leave.
 */
import type { ValueLayout } from '../onnx/ops.ts';

export class KVCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  /** Floats per row (position): nKvHeads * headDim. */
  readonly rowSize: number;
  /** Rows committed (attention sees rows [0, length)). */
  length = 0;
  /** Rows reserved per head in the current layout (length <= stride <= capacity). */
  stride: number;

  /** Default `strideStep`. */
  static readonly STRIDE_STEP = 64;

  /**
   * Heads [0, liveHeads) hold rows a layout change (ensureRows, shrinkRows) must keep; the
   * rest are dropped. Default all. A batch cache sets it to the heads of its slots up to the
   * highest busy one, so a lone request's growth moves its own rows, not every empty slot's.
   */
  liveHeads: number;

  /** First head of this cache in its buffers (non-zero for a slot). */
  readonly headBase: number = 0;
  /** The cache this one is a slot of. */
  readonly parent?: KVCache;

  /** The keys' and values' layout (a slot's is its parent's); see useValueLayout. */
  private ownValueLayout: ValueLayout = 'rows';
  /** Whether any row was ever written (since resetLayout): the layout is then fixed. */
  private written = false;

  /** How the keys and values are laid out (see the module comment): 'rows' until a session says otherwise. */
  get valueLayout(): ValueLayout {
    return (this.parent ?? this).ownValueLayout;
  }

  /**
   * Called with the layout of each graph fed this cache: a cache nothing was written to yet takes
   * it (free: no rows to move); one holding rows in the other layout refuses, since the graph
   * would read its keys and values transposed. Returns the cache (`new KVCache(...).useValueLayout(l)`
   * lays out a cache filled before any session feeds it).
   */
  useValueLayout(layout: ValueLayout): this {
    const root = this.parent ?? this;
    if (root.ownValueLayout === layout) return this;
    if (root.written) throw new Error(`K/V cache: a graph reading '${layout}' keys and values was fed a cache holding '${root.ownValueLayout}' ones; every graph sharing a cache must read one layout (see ValueLayout)`);
    root.ownValueLayout = layout;
    return this;
  }

  /**
   * @param capacity most rows ever held (preallocated).
   * @param strideStep the stride starts at, grows by at least, and is a multiple of this many rows.
   */
  constructor(readonly nLayers: number, readonly nKvHeads: number, readonly headDim: number, readonly capacity: number, readonly strideStep = KVCache.STRIDE_STEP) {
    this.rowSize = nKvHeads * headDim;
    this.liveHeads = nKvHeads;
    this.stride = Math.min(capacity, strideStep);
    this.keys = Array.from({ length: nLayers }, () => new Float32Array(capacity * this.rowSize));
    this.values = Array.from({ length: nLayers }, () => new Float32Array(capacity * this.rowSize));
  }

  /**
   * Slot i of `heads` heads: a cache over heads [i * heads, (i + 1) * heads) of these buffers,
   * with this cache's capacity and (shared) stride. Writes to a slot touch only its heads.
   */
  slot(i: number, heads: number): KVCache {
    if (!Number.isInteger(i) || i < 0 || !Number.isInteger(heads) || heads < 1 || (i + 1) * heads > this.nKvHeads) throw new RangeError(`slot ${i} of ${heads} heads is outside the cache's ${this.nKvHeads} heads`);
    const s: KVCache = Object.create(KVCache.prototype);
    Object.assign(s, { nLayers: this.nLayers, nKvHeads: heads, headDim: this.headDim, capacity: this.capacity, strideStep: this.strideStep });
    Object.assign(s, { keys: this.keys, values: this.values, rowSize: heads * this.headDim, length: 0, headBase: i * heads, parent: this, scratch: new Float32Array(0) });
    Object.defineProperty(s, 'stride', { get: () => this.stride }); // the parent's layout, wherever it has grown
    return s;
  }

  /** Past K of layer l as ORT reads it: [nKv, stride, hd] ('rows') or [nKv, hd, stride] ('transposed'), a view. */
  keyView(l: number): Float32Array {
    return this.heads(this.keys[l], 0, this.nKvHeads);
  }

  /** Past V of layer l: [nKv, stride, hd] ('rows') or [nKv, hd, stride] ('transposed'), a view. */
  valueView(l: number): Float32Array {
    return this.heads(this.values[l], 0, this.nKvHeads);
  }

  /** Heads [from, from + n) of this cache in `buf`, in the current layout: a view. */
  heads(buf: Float32Array, from: number, n: number): Float32Array {
    const block = this.stride * this.headDim, h = this.headBase + from;
    return buf.subarray(h * block, (h + n) * block);
  }

  /** Keys of rows [from, from + count) of layer l, position-major [count, nKv * hd]: a copy (tests, inspection). Default: the committed rows. */
  pastKeys(l: number, from = 0, count = this.length - from): Float32Array {
    return this.gather(this.keys[l], this.valueLayout === 'transposed', from, count);
  }

  /** Values of rows [from, from + count) of layer l, [count, nKv * hd]: a copy. */
  pastValues(l: number, from = 0, count = this.length - from): Float32Array {
    return this.gather(this.values[l], this.valueLayout === 'transposed', from, count);
  }

  /** Position-major copy [count, nKv * hd] of rows from.. of a head-major buffer (transposed per head or not). */
  private gather(buf: Float32Array, transposed: boolean, from: number, count: number): Float32Array {
    const reserved = Math.min(this.stride, this.capacity); // a slot reserves its capacity
    if (from < 0 || count < 0 || from + count > reserved) throw new RangeError(`rows ${from}..${from + count - 1} outside the cache's ${reserved} reserved rows`);
    const out = new Float32Array(count * this.rowSize);
    for (let r = 0; r < count; r++) this.readRow(buf, transposed, from + r, out, r * this.rowSize);
    return out;
  }

  /**
   * Makes room for `rows` rows per head. Growing the stride moves every per-head row block up (last first, in place: blocks only move to higher offsets); it grows
   * by at least 1/32 of the rows and `strideStep`, so the moves cost O(1) amortised per
   * appended row.
   */
  ensureRows(rows: number): void {
    if (rows > this.capacity) throw new RangeError(`K/V cache full: ${rows} rows > capacity ${this.capacity}`);
    if (this.parent) return this.parent.ensureRows(rows); // a slot's rows live in its parent's layout
    if (rows <= this.stride) return;
    const step = this.strideStep, old = this.stride, n = old; // staged rows past `length` move too
    const next = Math.min(this.capacity, Math.ceil((rows + Math.max(step, rows >> 5)) / step) * step);
    const hd = this.headDim, H = this.liveHeads, vt = this.valueLayout === 'transposed';
    for (let l = 0; l < this.nLayers; l++) {
      const k = this.keys[l], v = this.values[l];
      // Transposed: nKv * hd blocks of `stride` floats; in rows: nKv blocks of stride * hd floats.
      for (const buf of [k, v])
        if (vt) for (let b = H * hd - 1; b > 0; b--) buf.copyWithin(b * next, b * old, b * old + n);
        else for (let h = H - 1; h > 0; h--) buf.copyWithin(h * next * hd, h * old * hd, (h * old + n) * hd);
    }
    this.stride = next;
  }

  /**
   * Appends `t` rows per layer and commits them. newKeys[l], newValues[l]: [>= t, nKv, hd]
   * (a pass's outputs; rows [0, t) are used).
   */
  append(newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, t: number): void {
    this.stageLayers(0, newKeys, newValues, t, 0);
    this.length += t;
  }

  /**
   * Commits rows `rows` of a pass's outputs (e.g. the accepted path of a verified tree, in
   * order) as the next rows of the cache, copied straight from the outputs: nothing else of
   * the pass is written.
   */
  commitRows(newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, rows: ArrayLike<number>): void {
    this.ensureRows(this.length + rows.length);
    this.markWritten();
    for (let j = 0; j < rows.length; j++) this.writeRow(0, newKeys, newValues, rows[j], this.length + j);
    this.length += rows.length;
  }

  /**
   * Staging, for passes that must read rows of other passes before anything is accepted (a
   * drafter's tree levels, a self-drafter's early layers): writes `t` rows of layers
   * first .. first + newKeys.length - 1, `offset` rows after the committed prefix, without
   * committing them. Passes see them through their `pastRows`; `keep` commits some.
   */
  stageLayers(first: number, newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, t: number, offset: number): void {
    const at = this.length + offset;
    if (first < 0 || first + newKeys.length > this.nLayers) throw new RangeError(`layers ${first}..${first + newKeys.length - 1} outside the cache's ${this.nLayers}`);
    this.ensureRows(at + t);
    this.markWritten();
    for (let r = 0; r < t; r++) this.writeRow(first, newKeys, newValues, r, at + r);
  }

  private markWritten(): void {
    (this.parent ?? this).written = true;
  }

  /** Stages `t` rows of every layer right after the committed prefix. */
  stage(newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, t: number): void {
    this.stageLayers(0, newKeys, newValues, t, 0);
  }

  /**
   * Commits staged rows `rows` (indices relative to the staged block, ascending) as the next
   * rows of the prefix, in that order. Rows already in place are not copied.
   */
  keep(rows: ArrayLike<number>): void {
    const base = this.length;
    for (let j = 0; j < rows.length; j++) {
      if (rows[j] < j) throw new RangeError(`keep: rows must be ascending and distinct, got ${Array.from(rows)}`);
      if (rows[j] !== j) for (let l = 0; l < this.nLayers; l++) this.copyRow(l, base + rows[j], base + j);
    }
    this.length = base + rows.length;
  }

  /**
   * Reorders staged rows of layers first .. first + count - 1: staged row j becomes the old
   * staged row rows[j], for j < rows.length (any order; rows may repeat).
   */
  permuteStaged(rows: ArrayLike<number>, first: number, count: number): void {
    const n = rows.length, rs = this.rowSize, base = this.length;
    if (this.scratch.length < n * rs) this.scratch = new Float32Array(n * rs);
    const tmp = this.scratch, vt = this.valueLayout === 'transposed';
    for (let l = first; l < first + count; l++)
      for (const buf of [this.keys[l], this.values[l]]) {
        for (let j = 0; j < n; j++) this.readRow(buf, vt, base + rows[j], tmp, j * rs);
        for (let j = 0; j < n; j++) this.writeRowOf(buf, vt, tmp, j * rs, base + j);
      }
  }

  private scratch = new Float32Array(0);

  /** Copies output row `src` of layers first.. into cache row `dst` of each head block. */
  private writeRow(first: number, newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, src: number, dst: number): void {
    const rs = this.rowSize, vt = this.valueLayout === 'transposed';
    for (let i = 0; i < newKeys.length; i++) {
      const nk = newKeys[i], nv = newValues[i];
      if (nk.length < (src + 1) * rs || nv.length < (src + 1) * rs) throw new RangeError(`row ${src} is outside the pass outputs of layer ${first + i}`);
      this.writeRowOf(this.keys[first + i], vt, nk, src * rs, dst);
      this.writeRowOf(this.values[first + i], vt, nv, src * rs, dst);
    }
  }

  /** Position-major row from[at .. at + rowSize) -> cache row `dst` of `buf`. */
  private writeRowOf(buf: Float32Array, transposed: boolean, from: Float32Array, at: number, dst: number): void {
    const { nKvHeads: H, headDim: hd, stride, headBase: h0 } = this;
    for (let h = 0; h < H; h++)
      if (transposed) for (let i = 0; i < hd; i++) buf[((h0 + h) * hd + i) * stride + dst] = from[at + h * hd + i];
      else for (let i = 0; i < hd; i++) buf[((h0 + h) * stride + dst) * hd + i] = from[at + h * hd + i];
  }

  /** Cache row `src` of `buf` -> position-major to[at .. at + rowSize). */
  private readRow(buf: Float32Array, transposed: boolean, src: number, to: Float32Array, at: number): void {
    const { nKvHeads: H, headDim: hd, stride, headBase: h0 } = this;
    for (let h = 0; h < H; h++)
      if (transposed) for (let i = 0; i < hd; i++) to[at + h * hd + i] = buf[((h0 + h) * hd + i) * stride + src];
      else for (let i = 0; i < hd; i++) to[at + h * hd + i] = buf[((h0 + h) * stride + src) * hd + i];
  }

  /** Cache row `from` -> row `to` in layer l. */
  private copyRow(l: number, from: number, to: number): void {
    const { nKvHeads: H, headDim: hd, stride, headBase: h0 } = this, k = this.keys[l], v = this.values[l], vt = this.valueLayout === 'transposed';
    for (const buf of [k, v])
      if (vt) for (let b = h0 * hd; b < (h0 + H) * hd; b++) buf[b * stride + to] = buf[b * stride + from];
      else for (let h = h0; h < h0 + H; h++) buf.copyWithin((h * stride + to) * hd, (h * stride + from) * hd, (h * stride + from + 1) * hd);
  }

  /**
   * Shrinks the stride to what the first `rows` rows per head need (with ensureRows' slack), moving
   * the head blocks down; rows from `rows` on are dropped. A batch cache calls it when its highest
   * slots empty, so later passes read fewer rows.
   */
  shrinkRows(rows: number): void {
    if (this.parent) throw new RangeError('shrinkRows: a slot shares its parent\'s layout');
    const step = this.strideStep, old = this.stride;
    const next = Math.min(this.capacity, Math.max(step, Math.ceil((rows + Math.max(step, rows >> 5)) / step) * step));
    if (next >= old) return;
    const n = Math.min(rows, next), hd = this.headDim, H = this.liveHeads, vt = this.valueLayout === 'transposed';
    for (let l = 0; l < this.nLayers; l++) {
      const k = this.keys[l], v = this.values[l];
      // Blocks move to lower offsets: first to last, so none is overwritten before it moves.
      for (const buf of [k, v])
        if (vt) for (let b = 1; b < H * hd; b++) buf.copyWithin(b * next, b * old, b * old + n);
        else for (let h = 1; h < H; h++) buf.copyWithin(h * next * hd, h * old * hd, (h * old + n) * hd);
    }
    this.stride = next;
    this.length = Math.min(this.length, n);
  }

  /** Back to the smallest layout (stride = strideStep), dropping every row: only for a cache that holds nothing live (e.g. after timing passes on it). */
  resetLayout(): void {
    if (this.parent) throw new RangeError('resetLayout: a slot shares its parent\'s layout');
    this.length = 0;
    this.written = false;
    this.stride = Math.min(this.capacity, this.strideStep);
  }

  /** Drops rows after `length` (e.g. a drafter's staged rows, or a rollback). */
  truncate(length: number): void {
    if (length < 0 || length > this.length) throw new RangeError(`truncate(${length}) outside [0, ${this.length}]`);
    this.length = length;
  }
}
