/**
 * The K/V cache of one model, in JS buffers.
 *
 * Layout per layer: keys[l], values[l]: Float32Array [capacity, nKvHeads * headDim], position
 * major, so the live prefix [0, length) is one contiguous subarray that is handed to ORT
 * zero-copy as past K/V [1, length, nKvHeads, headDim].
 *
 * Rows past `length` are scratch: a verification pass appends the whole tree there, and
 * `keep` moves the accepted rows down, so work is proportional to the rows moved.
 */
export class KVCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  /** Floats per row: nKvHeads * headDim. */
  readonly rowSize: number;
  /** Rows committed. */
  length = 0;

  constructor(readonly nLayers: number, readonly nKvHeads: number, readonly headDim: number, readonly capacity: number) {
    this.rowSize = nKvHeads * headDim;
    this.keys = Array.from({ length: nLayers }, () => new Float32Array(capacity * this.rowSize));
    this.values = Array.from({ length: nLayers }, () => new Float32Array(capacity * this.rowSize));
  }

  /** Past K of layer l: [length, nKv, hd] as a view (no copy). */
  pastKeys(l: number): Float32Array {
    return this.keys[l].subarray(0, this.length * this.rowSize);
  }

  pastValues(l: number): Float32Array {
    return this.values[l].subarray(0, this.length * this.rowSize);
  }

  /**
   * Writes `t` new rows per layer after the committed prefix without committing them.
   * newKeys[l], newValues[l]: [t, nKv, hd].
   */
  stage(newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, t: number): void {
    this.stageLayers(0, newKeys, newValues, t, 0);
  }

  /**
   * Writes `t` rows into layers first .. first + newKeys.length - 1 only, `offset` rows after the
   * committed prefix, without committing them: a pass over part of the layers (a self-drafter's
   * early layers, or the rest of the model during its verification) fills its share of a row.
   */
  stageLayers(first: number, newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, t: number, offset: number): void {
    const at = this.length + offset;
    if (at + t > this.capacity) throw new RangeError(`K/V cache full: ${at} + ${t} rows > capacity ${this.capacity}`);
    if (first < 0 || first + newKeys.length > this.nLayers) throw new RangeError(`layers ${first}..${first + newKeys.length - 1} outside the cache's ${this.nLayers}`);
    const off = at * this.rowSize, n = t * this.rowSize;
    for (let i = 0; i < newKeys.length; i++) {
      this.keys[first + i].set(newKeys[i].subarray(0, n), off);
      this.values[first + i].set(newValues[i].subarray(0, n), off);
    }
  }

  /** Stages `t` rows and commits all of them (plain decoding). */
  append(newKeys: ArrayLike<Float32Array>, newValues: ArrayLike<Float32Array>, t: number): void {
    this.stage(newKeys, newValues, t);
    this.length += t;
  }

  /**
   * Commits staged rows `rows` (indices relative to the staged block, ascending) as the next
   * rows of the prefix, in that order. Rows already in place are not copied.
   */
  keep(rows: ArrayLike<number>): void {
    const rs = this.rowSize, base = this.length;
    for (let j = 0; j < rows.length; j++) {
      const src = rows[j], dst = j;
      if (src < dst) throw new RangeError(`keep: rows must be ascending and distinct, got ${Array.from(rows)}`);
      if (src === dst) continue;
      const from = (base + src) * rs, to = (base + dst) * rs;
      for (let l = 0; l < this.nLayers; l++) {
        this.keys[l].copyWithin(to, from, from + rs);
        this.values[l].copyWithin(to, from, from + rs);
      }
    }
    this.length = base + rows.length;
  }

  /** Drops rows after `length` (e.g. to roll back to a checkpoint). */
  truncate(length: number): void {
    if (length < 0 || length > this.length) throw new RangeError(`truncate(${length}) outside [0, ${this.length}]`);
    this.length = length;
  }
}
