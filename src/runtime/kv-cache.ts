/**
 * The K/V cache of one model, in JS buffers that attention reads in place.
 *
 * Layout per layer: keys[l], values[l]: one preallocated Float32Array of
 * capacity * nKvHeads * headDim floats, used HEAD-MAJOR as [nKvHeads, stride, headDim]: head h's
 * rows sit contiguously at h * stride * headDim. `view(l)` hands ORT the first
 * nKvHeads * stride * headDim floats zero-copy as past K/V [1, nKvHeads, stride, headDim]; the
 * graph multiplies each head's [stride, hd] block directly (no per-pass concat or transpose) and
 * masks rows [length, stride) out. `stride` >= length grows in steps (see `ensureRows`), so a
 * pass reads at most a few percent more rows than are live and short contexts stay cheap.
 *
 * Pass outputs (new rows) arrive position-major, [T, nKvHeads, headDim] per layer; `append` and
 * `commitRows` scatter them into the head blocks, so work is proportional to the rows written.
 */
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
   * @param capacity most rows ever held (preallocated).
   * @param strideStep the stride starts at, grows by at least, and is a multiple of this many rows.
   */
  constructor(readonly nLayers: number, readonly nKvHeads: number, readonly headDim: number, readonly capacity: number, readonly strideStep = KVCache.STRIDE_STEP) {
    this.rowSize = nKvHeads * headDim;
    this.stride = Math.min(capacity, strideStep);
    this.keys = Array.from({ length: nLayers }, () => new Float32Array(capacity * this.rowSize));
    this.values = Array.from({ length: nLayers }, () => new Float32Array(capacity * this.rowSize));
  }

  /** Past K of layer l as ORT reads it: [nKv, stride, hd] head-major, a view (no copy). */
  keyView(l: number): Float32Array {
    return this.keys[l].subarray(0, this.nKvHeads * this.stride * this.headDim);
  }

  /** Past V of layer l: [nKv, stride, hd], a view. */
  valueView(l: number): Float32Array {
    return this.values[l].subarray(0, this.nKvHeads * this.stride * this.headDim);
  }

  /** Committed keys of layer l position-major, [length, nKv * hd]: a copy (tests, inspection). */
  pastKeys(l: number): Float32Array {
    return this.gather(this.keys[l]);
  }

  /** Committed values of layer l, [length, nKv * hd]: a copy. */
  pastValues(l: number): Float32Array {
    return this.gather(this.values[l]);
  }

  private gather(buf: Float32Array): Float32Array {
    const { nKvHeads: H, headDim: hd, stride, length } = this;
    const out = new Float32Array(length * this.rowSize);
    for (let h = 0; h < H; h++)
      for (let r = 0; r < length; r++) out.set(buf.subarray((h * stride + r) * hd, (h * stride + r + 1) * hd), (r * H + h) * hd);
    return out;
  }

  /**
   * Makes room for `rows` rows per head. Growing the stride moves each head's live rows up
   * (last head first, in place); it grows by at least 1/16 of the rows and `strideStep`, so
   * the moves cost O(1) amortised per appended row while a pass never reads more than
   * ~6% + 2 * strideStep rows beyond the live ones.
   */
  ensureRows(rows: number): void {
    if (rows > this.capacity) throw new RangeError(`K/V cache full: ${rows} rows > capacity ${this.capacity}`);
    if (rows <= this.stride) return;
    const step = this.strideStep;
    const next = Math.min(this.capacity, Math.ceil((rows + Math.max(step, rows >> 4)) / step) * step);
    const hd = this.headDim, live = this.length * hd;
    for (let l = 0; l < this.nLayers; l++)
      for (const buf of [this.keys[l], this.values[l]])
        for (let h = this.nKvHeads - 1; h > 0; h--) buf.copyWithin(h * next * hd, h * this.stride * hd, h * this.stride * hd + live);
    this.stride = next;
  }

  /**
   * Appends `t` rows per layer and commits them. newKeys[l], newValues[l]: [>= t, nKv, hd]
   * (a pass's outputs; rows [0, t) are used).
   */
  append(newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, t: number): void {
    this.ensureRows(this.length + t);
    for (let r = 0; r < t; r++) this.writeRow(newKeys, newValues, r, this.length + r);
    this.length += t;
  }

  /**
   * Commits rows `rows` of a pass's outputs (e.g. the accepted path of a verified tree, in
   * order) as the next rows of the cache, copied straight from the outputs.
   */
  commitRows(newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, rows: ArrayLike<number>): void {
    this.ensureRows(this.length + rows.length);
    for (let j = 0; j < rows.length; j++) this.writeRow(newKeys, newValues, rows[j], this.length + j);
    this.length += rows.length;
  }

  /** Copies output row `src` of every layer into cache row `dst` of each head block. */
  private writeRow(newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, src: number, dst: number): void {
    const { nKvHeads: H, headDim: hd, stride } = this;
    for (let l = 0; l < this.nLayers; l++) {
      const k = this.keys[l], v = this.values[l], nk = newKeys[l], nv = newValues[l];
      if (nk.length < (src + 1) * this.rowSize || nv.length < (src + 1) * this.rowSize) throw new RangeError(`row ${src} is outside the pass outputs of layer ${l}`);
      for (let h = 0; h < H; h++) {
        const from = (src * H + h) * hd, to = (h * stride + dst) * hd;
        for (let i = 0; i < hd; i++) {
          k[to + i] = nk[from + i];
          v[to + i] = nv[from + i];
        }
      }
    }
  }

  /** Drops rows after `length` (e.g. a drafter's staged rows, or a rollback). */
  truncate(length: number): void {
    if (length < 0 || length > this.length) throw new RangeError(`truncate(${length}) outside [0, ${this.length}]`);
    this.length = length;
  }
}
