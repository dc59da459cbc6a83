/**
 * Turns one row of target logits into the next token: greedy argmax, or a seeded sample after
 * temperature, top-k and top-p. Speculative and plain decoding share this object, and each
 * emitted token consumes exactly one uniform draw, so with the same seed both produce the same
 * tokens up to near-ties (the lossless sampling rule in trees/accept.ts relies on this).
 *
 * Robust to rounding: the two decodings score a position in passes of different shapes (one
 * token vs a whole tree), whose float32 logits differ in the last bits. So the sampler first
 * chooses the kept set (top-k, then top-p within it), and then walks the CDF over the kept set
 * in token-id order, never in probability order: two near-equal tokens inside the set can swap
 * ranks without moving any CDF boundary by more than the rounding. What rounding can still
 * decide is a draw that lands within ~1e-6 of a boundary, a near-tie exactly at the top-k/top-p
 * cut, or (greedy) two top logits within rounding of each other: see generate/near-tie.ts.
 *
 * Cost: top-k selects with a size-k heap over the raw logits (O(V) comparisons, exponentials
 * only for the k kept); top-p alone needs the softmax normaliser (V exponentials, as plain
 * temperature sampling does) and finds its cut with a histogram and a quickselect of one bucket
 * (O(V)). Nothing sorts the whole vocabulary. Figures: `npm run bench:sampling`.
 */
import { Rng } from '../util/rng.ts';

/** How the next token is drawn from the target's logits (temperature 0: greedy). */
export interface SamplingOptions {
  /** 0 = greedy. Default 0. */
  temperature: number;
  /** Keep the k most likely tokens; 0 = all. Default 0. */
  topK: number;
  /**
   * Keep the smallest set of most likely tokens with cumulative probability >= topP (after
   * top-k, renormalised within the top-k, as Hugging Face's warpers chain); 1 = all. Default 1.
   */
  topP: number;
  seed: number;
}

/** Logit buckets of the top-p histogram. */
const BUCKETS = 1024;

/** One sampler per generation: see the module comment for the rule and its cost. */
export class Sampler {
  private rng: Rng;
  private readonly V: number;
  private probs: Float64Array; // [V] unnormalised weights, valid for the kept set
  private stamp: Uint32Array; // [V] call number of the last distribution() that kept the id
  private calls = 0;
  private kept: Int32Array; // [V] kept ids, ascending after distribution()
  private work: Int32Array; // [V] quickselect scratch
  private bucketWeight = new Float64Array(BUCKETS);
  private heap: TopHeap;
  private norm = 1; // weight of the kept set
  private all = false; // the last distribution kept every id

  constructor(readonly opts: SamplingOptions, vocabSize: number) {
    this.rng = new Rng(opts.seed);
    this.V = vocabSize;
    this.probs = new Float64Array(vocabSize);
    this.stamp = new Uint32Array(vocabSize);
    this.kept = new Int32Array(vocabSize);
    this.work = new Int32Array(vocabSize);
    this.heap = new TopHeap(Math.min(vocabSize, opts.topK));
  }

  get greedy(): boolean {
    return this.opts.temperature === 0;
  }

  /** Next token from logits[offset .. offset+V). Consumes one uniform draw unless greedy. */
  pick(logits: Float32Array, offset = 0): number {
    if (this.greedy) return argmax(logits, offset, this.V);
    const n = this.distribution(logits, offset);
    return this.drawKept(this.rng.next(), n);
  }

  /**
   * The token a uniform draw `u` selects from logits[offset..offset+V) with these options,
   * without touching the sampler's own random stream (the near-tie classifier replays draws).
   */
  pickWith(u: number, logits: Float32Array, offset = 0): number {
    if (this.greedy) return argmax(logits, offset, this.V);
    return this.drawKept(u, this.distribution(logits, offset));
  }

  /** Walks the CDF of the kept set in id order (weights are unnormalised: scale u instead). */
  private drawKept(u: number, n: number): number {
    const kept = this.kept, p = this.probs;
    u *= this.norm;
    if (n === this.V) {
      for (let i = 0; i < n; i++) if ((u -= p[i]) < 0) return i;
      return n - 1; // rounding: u landed past the last bucket
    }
    for (let i = 0; i < n; i++) if ((u -= p[kept[i]]) < 0) return kept[i];
    return kept[n - 1];
  }

  /**
   * Computes the processed distribution: returns the kept set's size n, its ids ascending in
   * `keptIds(n)`, their probabilities by `prob(id)`. Not for greedy samplers.
   */
  distribution(logits: Float32Array, offset = 0): number {
    const V = this.V, t = this.opts.temperature, { topK, topP } = this.opts;
    const kept = this.kept, p = this.probs;
    let n: number;
    if (topK > 0 && topK < V) {
      // Top-k on raw logits; weights only for the k kept, then top-p within them.
      const h = this.heap;
      h.select(logits, offset, V, topK);
      h.sortDesc();
      const max = h.vals[0];
      let sum = 0;
      for (let i = 0; i < topK; i++) sum += p[h.ids[i]] = Math.exp((h.vals[i] - max) / t);
      n = topP < 1 ? prefixReaching(h.ids, topK, p, topP * sum) : topK;
      for (let i = 0; i < n; i++) kept[i] = h.ids[i];
      sortIds(kept, n);
    } else if (topP < 1) {
      n = this.nucleus(logits, offset);
    } else {
      let max = -Infinity;
      for (let i = 0; i < V; i++) if (logits[offset + i] > max) max = logits[offset + i];
      for (let i = 0; i < V; i++) p[i] = Math.exp((logits[offset + i] - max) / t);
      n = V;
    }
    if (++this.calls === 0xffffffff) {
      this.stamp.fill(0);
      this.calls = 1;
    }
    let sum = 0;
    const stamp = this.stamp, c = this.calls;
    if (n === V) for (let i = 0; i < V; i++) sum += p[i];
    else
      for (let i = 0; i < n; i++) {
        sum += p[kept[i]];
        stamp[kept[i]] = c;
      }
    this.norm = sum;
    this.all = n === V;
    return n;
  }

  /**
   * Top-p over the whole vocabulary: the smallest set of best tokens (by logit, then lower id)
   * whose probability reaches top-p, written ascending to `kept`; returns its size.
   *
   * Without sorting: one pass computes the weights and a histogram of weight over logit
   * buckets; walking the buckets from the top finds the one holding the cut; a mass-weighted
   * quickselect orders only that bucket; one last pass in id order keeps everything at least
   * as good as the worst kept token.
   */
  private nucleus(logits: Float32Array, offset: number): number {
    const V = this.V, t = this.opts.temperature, p = this.probs, kept = this.kept, B = BUCKETS, bw = this.bucketWeight;
    let max = -Infinity, min = Infinity;
    for (let i = 0; i < V; i++) {
      const z = logits[offset + i];
      if (z > max) max = z;
      if (z < min) min = z;
    }
    const scale = max > min ? B / (max - min) : 0;
    bw.fill(0);
    let total = 0;
    for (let i = 0; i < V; i++) {
      const z = logits[offset + i], e = Math.exp((z - max) / t);
      p[i] = e;
      total += e;
      bw[Math.min(B - 1, Math.floor((max - z) * scale))] += e;
    }
    const mass = this.opts.topP * total;
    let acc = 0, cut = 0;
    while (cut < B - 1 && acc + bw[cut] < mass) acc += bw[cut++];
    const a = this.work;
    let m = 0;
    for (let i = 0; i < V; i++) if (Math.min(B - 1, Math.floor((max - logits[offset + i]) * scale)) === cut) a[m++] = i;
    const z = logits.subarray(offset, offset + V);
    const r = massSelect(a, m, z, p, mass - acc);
    let w = a[0];
    for (let i = 1; i < r; i++) if (better(z, w, a[i])) w = a[i];
    let k = 0;
    for (let i = 0; i < V; i++) if (i === w || better(z, i, w)) kept[k++] = i;
    return k;
  }

  /** Kept ids of the last `distribution` call, ascending: [0, n). */
  keptIds(n: number): Int32Array {
    if (this.all) for (let i = 0; i < n; i++) this.kept[i] = i;
    return this.kept.subarray(0, n);
  }

  /** Probability of `id` under the last `distribution` call (0 outside the kept set). */
  prob(id: number): number {
    return this.all || this.stamp[id] === this.calls ? this.probs[id] / this.norm : 0;
  }
}

/** Rank order: higher logit first, then lower id (a strict total order, as argmax and top-k). */
const better = (z: ArrayLike<number>, i: number, j: number) => z[i] > z[j] || (z[i] === z[j] && i < j);

/** Length of the shortest prefix of ids[0..n) (best first) whose weight reaches `mass` (n if none). */
function prefixReaching(ids: Int32Array, n: number, w: Float64Array, mass: number): number {
  let acc = 0;
  for (let i = 0; i < n; i++) {
    acc += w[ids[i]];
    if (acc >= mass) return i + 1;
  }
  return n;
}

function sortIds(ids: Int32Array, n: number): void {
  ids.subarray(0, n).sort();
}

/**
 * Reorders ids a[0..n) so its first r entries are the best r by rank `z` (unordered), r being
 * the smallest count whose weight `w` reaches `mass`; returns r. Quickselect where the side to
 * keep is chosen by accumulated weight instead of by count: O(n) expected.
 */
export function massSelect(a: Int32Array, n: number, z: ArrayLike<number>, w: Float64Array, mass: number): number {
  let lo = 0, hi = n, acc = 0; // a[0..lo) kept, weight acc < mass; the cut lies in (lo, hi]
  while (hi - lo > 1) {
    // Median of three as pivot, moved to hi - 1.
    const mid = (lo + hi) >>> 1;
    let x = a[lo], y = a[mid], c = a[hi - 1];
    if (better(z, y, x)) [x, y] = [y, x];
    if (better(z, c, y)) {
      [y, c] = [c, y];
      if (better(z, y, x)) [x, y] = [y, x];
    }
    const pivot = y;
    const pi = a[mid] === pivot ? mid : a[lo] === pivot ? lo : hi - 1;
    a[pi] = a[hi - 1];
    a[hi - 1] = pivot;
    let s = lo, g = 0;
    for (let j = lo; j < hi - 1; j++) {
      const id = a[j];
      if (better(z, id, pivot)) {
        a[j] = a[s];
        a[s++] = id;
        g += w[id];
      }
    }
    a[hi - 1] = a[s];
    a[s] = pivot;
    if (acc + g >= mass) hi = s;
    else if (acc + g + w[pivot] >= mass) return s + 1;
    else {
      acc += g + w[pivot];
      lo = s + 1;
    }
  }
  return hi;
}

/**
 * The k best logits of a row by a min-heap of size k (root = worst kept): O(V) comparisons
 * against the root, O(log k) per replacement. Ties go to the lower id, as in argmax.
 */
class TopHeap {
  readonly ids: Int32Array;
  readonly vals: Float32Array;
  private k = 0;

  constructor(capacity: number) {
    this.ids = new Int32Array(capacity);
    this.vals = new Float32Array(capacity);
  }

  select(x: Float32Array, offset: number, V: number, k: number): void {
    const ids = this.ids, vals = this.vals;
    this.k = k;
    for (let i = 0; i < k; i++) {
      ids[i] = i;
      vals[i] = x[offset + i];
    }
    for (let i = (k >> 1) - 1; i >= 0; i--) this.down(i);
    let floor = vals[0];
    for (let i = k; i < V; i++) {
      const v = x[offset + i];
      if (v > floor) {
        // A later id with an equal value is worse, so only a strictly larger one enters.
        ids[0] = i;
        vals[0] = v;
        this.down(0);
        floor = vals[0];
      }
    }
  }

  /** `a` is worse than `b`: lower value, or equal value and higher id. */
  private worse(a: number, b: number): boolean {
    const va = this.vals[a], vb = this.vals[b];
    return va < vb || (va === vb && this.ids[a] > this.ids[b]);
  }

  private down(i: number): void {
    const k = this.k, ids = this.ids, vals = this.vals;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < k && this.worse(l, m)) m = l;
      if (r < k && this.worse(r, m)) m = r;
      if (m === i) return;
      const ti = ids[i], tv = vals[i];
      ids[i] = ids[m];
      vals[i] = vals[m];
      ids[m] = ti;
      vals[m] = tv;
      i = m;
    }
  }

  /** Orders ids/vals[0..k) best first, in place (heap sort); the heap property is gone after. */
  sortDesc(): void {
    const ids = this.ids, vals = this.vals;
    for (let end = this.k - 1; end > 0; end--) {
      const ti = ids[0], tv = vals[0];
      ids[0] = ids[end];
      vals[0] = vals[end];
      ids[end] = ti;
      vals[end] = tv;
      this.k = end;
      this.down(0);
    }
    this.k = 0;
  }
}

/** Index of the largest of x[offset .. offset+n); the first on ties. */
export function argmax(x: ArrayLike<number>, offset: number, n: number): number {
  let best = 0, bv = x[offset];
  for (let i = 1; i < n; i++) {
    const v = x[offset + i];
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}
