/**
 * The K/V cache of one model, in JS buffers that attention reads in place.
 *
 * Layout per layer, head-major with `stride` rows reserved per head (length <= stride):
 *   keys[l]   [nKvHeads, headDim, stride]  each head's keys TRANSPOSED: attention's scores
 *                                          q [rows, hd] x K^T [hd, stride] are one plain MatMul
 *   values[l] [nKvHeads, stride, headDim]  weights [rows, stride] x V [stride, hd]
 * Each is one preallocated Float32Array of capacity * nKvHeads * headDim floats, of which the
 * first nKvHeads * stride * headDim are handed to ORT zero-copy (`keyView`, `valueView`); the
 * graph masks rows [length, stride) out, so no pass copies or transposes the past. The stride
 * grows in steps (`ensureRows`): a pass reads at most ~3% + 2 * strideStep rows beyond the
 * live ones, so short contexts stay cheap.
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

  /** Past K of layer l as ORT reads it: [nKv, hd, stride] (transposed per head), a view. */
  keyView(l: number): Float32Array {
    return this.keys[l].subarray(0, this.nKvHeads * this.stride * this.headDim);
  }

  /** Past V of layer l: [nKv, stride, hd], a view. */
  valueView(l: number): Float32Array {
    return this.values[l].subarray(0, this.nKvHeads * this.stride * this.headDim);
  }

  /** Committed keys of layer l position-major, [length, nKv * hd]: a copy (tests, inspection). */
  pastKeys(l: number): Float32Array {
    return this.gather(this.keys[l], true);
  }

  /** Committed values of layer l, [length, nKv * hd]: a copy. */
  pastValues(l: number): Float32Array {
    return this.gather(this.values[l], false);
  }

  /** Position-major copy [length, nKv * hd] of a head-major buffer (keys: transposed per head). */
  private gather(buf: Float32Array, transposed: boolean): Float32Array {
    const { nKvHeads: H, headDim: hd, stride, length } = this;
    const out = new Float32Array(length * this.rowSize);
    for (let h = 0; h < H; h++)
      for (let r = 0; r < length; r++)
        for (let i = 0; i < hd; i++) out[(r * H + h) * hd + i] = buf[transposed ? (h * hd + i) * stride + r : (h * stride + r) * hd + i];
    return out;
  }

  /**
   * Makes room for `rows` rows per head. Growing the stride moves the live part of every
   * per-head row block up (last first, in place: blocks only move to higher offsets); it grows
   * by at least 1/32 of the rows and `strideStep`, so the moves cost O(1) amortised per
   * appended row.
   */
  ensureRows(rows: number): void {
    if (rows > this.capacity) throw new RangeError(`K/V cache full: ${rows} rows > capacity ${this.capacity}`);
    if (rows <= this.stride) return;
    const step = this.strideStep, old = this.stride, n = this.length;
    const next = Math.min(this.capacity, Math.ceil((rows + Math.max(step, rows >> 5)) / step) * step);
    const hd = this.headDim;
    for (let l = 0; l < this.nLayers; l++) {
      const k = this.keys[l], v = this.values[l];
      // keys: nKv * hd blocks of `stride` floats; values: nKv blocks of stride * hd floats.
      for (let b = this.nKvHeads * hd - 1; b > 0; b--) k.copyWithin(b * next, b * old, b * old + n);
      for (let h = this.nKvHeads - 1; h > 0; h--) v.copyWithin(h * next * hd, h * old * hd, (h * old + n) * hd);
    }
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
        const from = (src * H + h) * hd, kTo = h * hd * stride + dst, vTo = (h * stride + dst) * hd;
        for (let i = 0; i < hd; i++) {
          k[kTo + i * stride] = nk[from + i];
          v[vTo + i] = nv[from + i];
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
