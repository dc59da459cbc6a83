/**
 * The committed sequence: every token and the target feature of every committed position,
 * preallocated to the context length. The drafter reads its catch-up rows from here and
 * policies read the last feature; each round writes only the rows it accepted.
 */
export class History {
  readonly tokens: Int32Array; // [capacity + 1]: the root token sits at index `length`
  readonly features: Float32Array; // [capacity, d]
  /** Committed positions (= target K/V cache length). */
  length = 0;

  constructor(readonly capacity: number, readonly dim: number) {
    this.tokens = new Int32Array(capacity + 1);
    this.features = new Float32Array(capacity * dim);
  }

  /** Target feature of position p, [d] (a view). */
  feature(p: number): Float32Array {
    return this.features.subarray(p * this.dim, (p + 1) * this.dim);
  }

  /** Commits `count` positions: for j < count, token tokens[rows[j]] with feature row rows[j] of `features` [*, d]. */
  commit(tokens: ArrayLike<number>, features: Float32Array, rows: ArrayLike<number>, count: number): void {
    const d = this.dim;
    for (let j = 0; j < count; j++) {
      this.tokens[this.length] = tokens[rows[j]];
      this.features.set(features.subarray(rows[j] * d, (rows[j] + 1) * d), this.length * d);
      this.length++;
    }
  }

  reset(): void {
    this.length = 0;
  }
}
