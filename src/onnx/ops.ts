/**
 * `Ops<string>` rendered as ONNX nodes: each call appends nodes to a GraphBuilder and returns
 * the output value's name. Opset 23, whose Attention (GQA, additive mask) and RotaryEmbedding
 * are single kernels on ORT's CPU provider (RMSNorm is ORT's own op, see `rmsNorm`): a decoder layer is ~25 nodes, and
 * for small models ORT's per-node overhead (1-2 us) is most of a pass. Measured with ORT
 * profiling on a d=64, 5-layer model: 193 nodes per pass with the standard-op expansions of
 * attention and RoPE (opset 17), 147 now.
 *
 * Activations are 2-D [T, width] (batch 1 is implicit; Gemm wants 2-D) except rope outputs,
 * which keep the [1, T, width] form the Attention kernel and the present outputs want.
 */
import type { ConstTensor, GraphBuilder } from './graph.ts';
import type { HeadLayout, Ops, PastKV } from '../model/definition.ts';
import { ropeCosSin, ropeInvFreq, type RopeSpec } from '../model/rope.ts';
import type { Tensor } from '../model/weights.ts';
import { blockOf, quantizeWeight, ROW_EXACT_BLOCK, type QuantizedTensor, type WeightQuant } from '../model/quantize.ts';

export interface OnnxOpsOptions {
  /**
   * Render Linear layers as com.microsoft MatMulNBits over blockwise-quantized weights (see
   * src/model/quantize.ts), where the input width allows; others stay fp32 Gemm. Default: none (fp32).
   */
  quantize?: WeightQuant & {
    /** MatMulNBits accuracy_level: 4 = int8 activations (fastest on CPUs with VNNI), 0 = fp32. Default 4. */
    accuracyLevel?: number;
    /**
     * 'nbits' (default): com.microsoft MatMulNBits. 'dq': the standard-op form, blockwise
     * DequantizeLinear (opset 21+) then Gemm; kept for scripts/bench-quant.ts, which measures both.
     */
    kernel?: 'nbits' | 'dq';
  };
  /**
   * Another model's ops in the same graph (a draft head rendered next to its target): weights
   * `lookup` lacks are taken from it, so shared tensors (the embedding table) are one initializer.
   */
  fallback?: OnnxOps;
  /** Prefix of this rendering's own initializer names, so two renderings in one graph never collide. Default ''. */
  prefix?: string;
  /**
   * Fuse MatMulNBits Linear layers that read the same input (a layer's q, k, v projections; its
   * gate and up projections) into one MatMulNBits over the weights concatenated along N, then a
   * Split: the activations are quantized once and ORT dispatches one kernel (see `fuseLinears`).
   * Default true; false for A/B measurements.
   */
  fuseLinears?: boolean;
  /**
   * Feed every MatMulNBits whose blocks are larger than ROW_EXACT_BLOCK an even number of rows
   * (an odd pass gets its last row repeated, and the extra output row is dropped), so each row
   * goes through the int8 kernel that computes rows in pairs, whatever the pass's row count: a
   * one-token step then computes its row bit for bit as a verification pass does (see
   * src/model/quantize.ts, QUANT). For a quantized target's graphs; a draft head's proposals
   * need not be exact. Every Linear input of one rendering must have the same rows (one
   * forward pass): the row count is read once, from the first, and a rendering that chains
   * passes (`carry`) is refused. A graph of one pass can pad the pass once at its inputs
   * instead (`evenPass`: the target step's graph). Default false.
   */
  evenRows?: boolean;
  /**
   * 'split' attention that scores every row the same whatever the pass's shape: each row's keys
   * and values are one array in position order (the cache's L live rows, then the T new ones,
   * joined per pass), so a key sits at the same index in a one-token step and in a verification
   * pass, and the softmax and the weighted sum reduce the same numbers in the same order (masked
   * keys add exact zeros). Reading the cache in place ('split' proper) puts the new rows after
   * all S cache slots instead, so a row's sums depend on how its keys divide between the cache
   * and the pass: last-bit differences that int8 activations amplify. Costs a copy of the live
   * K/V rows per layer and pass. For quantized targets; needs the mask from `treeMask`. Default false.
   */
  rowExactAttention?: boolean;
  /**
   * rowExactAttention for token trees: each row's scores are gathered into position order
   * before the softmax (its visible keys first, in index order: the cache's, then its
   * ancestors by depth and itself; its hidden keys after them) and back after it. In a tree a
   * row's ancestors sit at their tree indices with hidden siblings between them, so without
   * this the softmax's sum (MLAS adds exps in SIMD lanes by index) adds the same numbers in
   * other lanes than a one-token step does: last-bit differences that int8 activations amplify.
   * The order is computed in-graph from the mask (two TopK per pass; two GatherElements per
   * layer), so it is for a graph that verifies trees, not the one-token step's. Default false.
   */
  treeOrder?: boolean;
  /**
   * The intra-op threads of the session that runs this graph. rowExactAttention cuts its
   * weights x values product into GEMMs that MLAS never splits by columns only where MLAS could
   * split it: with fewer K/V heads than threads (see valueProduct). Every graph of one target
   * must be built with the same value (their rows are compared bit for bit). Default: unknown,
   * so always cut (exact at up to 8 threads for heads of a multiple of 16; about 2% slower a
   * pass on the 100M q4 fixture: docs/performance.md, "Rows at any thread count").
   */
  gemmThreads?: number;
  /**
   * How the past keys and values this rendering reads are laid out (see ValueLayout). Default
   * `valueLayoutFor(attentionMode)`: each cache is laid out for the attention that reads it.
   */
  valueLayout?: ValueLayout;
  /**
   * Render for one-token causal passes only (T = 1, 'split' attention, a plain decoding step):
   * the mask is a graph input [1, S + 1] (StepFeeds fills it), RoPE runs on [1, heads, 1, hd]
   * (at T = 1 the heads' layout and the rows' are one), and attention's regroupings are
   * Reshapes. Every kernel that computes a value sees the numbers the general graph's does at
   * T = 1 in the same shapes, so a row's results are the same bits (test/one-token.test.ts).
   * Not with rowExactAttention, evenRows padding, per-slot or carried passes. Default false.
   */
  oneToken?: boolean;
  /**
   * With oneToken and the 'transposed' layout: each layer's attention over the past is one
   * eaglet.PastAttention node (src/native/ort-addon.cc), a kernel of ours that reads the cache
   * in place at about the machine's read bandwidth, where MLAS's one-row products read it at
   * 0.68-0.90 of it. Only sessions opened on the native addon (SessionOptions.native) run it.
   * Its sums run in another order than the ORT graph's: results agree to float32 rounding, not
   * bit for bit (test/native-attention.test.ts). Default false.
   */
  nativeAttention?: boolean;
  /**
   * Render each 4- or 8-bit Linear layer with blocks of 128 (eaglet's q4 target, its q8 head) as
   * one eaglet.BlockMatMul node (src/native/block-matmul.h) in place of MatMulNBits: a kernel of ours
   * that reads each packed block once for all of a pass's rows and computes every row alike
   * whatever the pass's rows, so no pass is padded to even rows (evenRows pads only the
   * MatMulNBits left). Only sessions opened on the native addon (SessionOptions.native) run it.
   * Every graph of one target must be rendered with the same value: its sums differ from
   * MatMulNBits' in the last bits. Default false.
   */
  nativeLinear?: boolean;
}

/** Whether a quantized weight of `bits` and `blockSize` renders as eaglet.BlockMatMul under OnnxOpsOptions.nativeLinear. */
export const nativeLinearFits = (bits: number, blockSize: number): boolean => (bits === 4 || bits === 8) && blockSize === 128;

/** MatMulNBits accuracy_level unless OnnxOpsOptions.quantize says otherwise (see there). */
export const DEFAULT_ACCURACY_LEVEL = 4;

/** Additive mask value for hidden keys: exp() of it underflows to exactly 0, with no inf arithmetic. */
export const MASK_NEG = -1e30;

/**
 * How `attention` reads the past: 'split' multiplies the cache's blocks in place; 'fused' uses
 * ONNX's one-kernel Attention, which copies the past into a present buffer every pass.
 */
export type AttentionMode = 'split' | 'fused';

/**
 * How a K/V cache holds each head's past keys and values (both alike): 'rows' [S, hd], as ONNX's
 * one-kernel Attention wants them; 'transposed' [hd, S], so split attention's scores q x K^T are
 * a plain MatMul and its weights [rows, S] x V a MatMul with transposed B, which MLAS runs as
 * dot products over contiguous rows: on a 29M model at 4000 rows (bench:runtime, interleaved, 7
 * runs) T=16 passes ran 2-8% faster in every run at 1 and 2 threads, one-token passes 1-3%
 * (docs/performance.md, "Runtime"). The one-kernel Attention reads transposed K or V only
 * through a Transpose of the whole past per layer and pass (when only the values were laid out
 * per cache, its keys' Transposes were ~1/3 of a 29M pass at 4000 rows), so every cache is laid
 * out for the attention that reads it (valueLayoutFor); split attention over rows reads the keys
 * with a transposed-B product.
 */
export type ValueLayout = 'rows' | 'transposed';

/** The K/V layout a cache read by `mode` attention is best kept in (see ValueLayout). */
export function valueLayoutFor(mode: AttentionMode): ValueLayout {
  return mode === 'split' ? 'transposed' : 'rows';
}

/**
 * Output columns per GEMM of rowExactAttention's weights x values product where MLAS could split
 * it. MLAS (ORT's MatMul on CPU) gives a GEMM more than one thread when its batch (here the K/V
 * heads) has fewer GEMMs than the threads it wants (one per 64K multiply-adds: rows x columns x
 * keys, at most the session's threads), and then splits it along the output columns in blocks of
 * 16 when it has more columns than rows. A part with fewer columns gets larger K blocks
 * (gemmKBlock), so a verification pass whose product was split summed each row's keys in other
 * blocks than a one-token step whose product was not: last-bit differences, which int8
 * activations amplify. A GEMM of at most 16 columns is never split by columns (only by rows,
 * once it has 16 of them, which leaves each row's sum as it is). Ours: the rule is read from
 * MLAS's source (sgemm.cpp: MlasGemmBatch, MlasSgemmOperation; ORT 1.30), and
 * test/quantize-rows.test.ts checks it at 1, 2 and 4 threads.
 */
export const VALUE_SLICE_COLUMNS = 16;

/** The widest head whose rowExactAttention scores are one GEMM: no K block of MLAS is smaller (see rowExactScores). */
export const SCORE_K_SLICE = 128;

/**
 * The K block (keys) MLAS sums a GEMM of `columns` output columns in, when it has more keys than
 * columns (else one block): 128, doubled as its column stride halves from 128 while that still
 * covers `columns`, down to 16 (so 1024 at most). Blocks start at key 0.
 */
export function gemmKBlock(columns: number): number {
  let n = 128, k = 128;
  while (n > 16 && n / 2 >= columns) (n /= 2), (k *= 2);
  return k;
}

/** The fewest slices of at most `most` that cut `width` evenly. */
function fewestSlices(width: number, most: number): number {
  let p = Math.ceil(width / most);
  while (width % p !== 0) p++;
  return p;
}

/**
 * How rowExactAttention multiplies its weights by the values, per K/V head: in `slices` GEMMs
 * (of headDim / slices columns each), which sum each row's keys in blocks of `kBlock` from key 0.
 * Cut (VALUE_SLICE_COLUMNS) unless the session's threads (`gemmThreads`, when known) are no more
 * than the K/V heads: then MLAS never splits one.
 */
export function valueProduct(headDim: number, nKvHeads: number, gemmThreads?: number): { slices: number; kBlock: number } {
  const slices = gemmThreads !== undefined && nKvHeads >= gemmThreads ? 1 : fewestSlices(headDim, VALUE_SLICE_COLUMNS);
  return { slices, kBlock: gemmKBlock(headDim / slices) };
}

/** Below this many bytes of past K/V per layer at full context, models default to 'fused'. */
export const SPLIT_MIN_PAST_BYTES = 1 << 20;

/**
 * The rendering for a model (see AttentionMode). Measured with `npm run bench:runtime`
 * (context sweep, 1 thread): a 29M model (512 K/V floats per row and layer) runs 'split' 2x
 * faster at 4000 rows and ties at 64; the default target's shape (64 floats per row, 256-row
 * context) runs 'fused' ~15% faster at 64 rows, tied at 256; a d=64 2-layer model generating
 * 2000 tokens ran about 2x slower with 'split' (the split graph has ~14 more nodes per layer,
 * and ORT's per-node cost outweighs copying a small past). So: 'split' once the past K/V of
 * one layer at full context reaches 1 MiB. Re-measured after 'fused' stopped transposing a
 * rows cache's keys (`npm run -s bench:runtime -- --sizes none --contexts 64,4000 --repeats 30
 * --threads 2`, then `--threads 1`; docs/performance.md, "K/V read in place", session 18): at
 * 4000 rows 'fused' still runs 1.7-1.8x its floor against split's 1.1-1.3x (its kernel copies
 * the past into a present buffer every pass); at 64 rows a one-token pass ties or favours
 * 'split', so the threshold stands.
 *
 * A target with int8-activation (quantized) Linear layers always gets 'split': ORT's one-kernel
 * Attention computes a row of a T-row pass differently from the same row in a one-token pass by
 * more than the last bits, and int8 activations amplify that into logit gaps far past the
 * float32 near-tie bound. Measured on the 100M cost-scaled fixture at q4 (logits of 5-row passes
 * vs 5 one-token steps, 30 rows): 'fused' 2.1e-2 apart at most, 'split' 7.6e-6; a plain step
 * and a 5-token verify cost the same in either (docs/performance.md, "Quantized targets").
 */
export function defaultAttention(maxSeqLen: number, nKvHeads: number, headDim: number, quantized = false): AttentionMode {
  return quantized || maxSeqLen * nKvHeads * headDim * 2 * 4 >= SPLIT_MIN_PAST_BYTES ? 'split' : 'fused';
}

/** A quantized Linear weight's MatMulNBits initializers: names, tensors and shape. */
interface PackedLinear {
  B: string;
  S: string;
  bt: ConstTensor;
  st: ConstTensor;
  n: number;
  k: number;
  bits: number;
  blockSize: number;
}

/** A quantized Linear layer's weight and its bias (a weight value), if it has one. */
interface LinearMember {
  w: PackedLinear;
  bias?: string;
}

/**
 * The tensors `ts` concatenated along their first axis as one initializer tensor of `dims`:
 * read (and copied) only if the graph embeds it.
 */
function joined(ts: ConstTensor[], dims: number[]): ConstTensor {
  const dtype = ts[0].dtype;
  let data: Uint8Array | Float32Array | undefined;
  const file = spanOf(ts);
  return {
    dtype,
    dims,
    get data() {
      if (!data) {
        const parts = ts.map((t) => t.data), total = parts.reduce((a, p) => a + p.length, 0);
        const out = dtype === 'float32' ? new Float32Array(total) : new Uint8Array(total);
        let at = 0;
        for (const p of parts) (out.set(p as never, at), (at += p.length));
        data = out;
      }
      return data;
    },
    ...(file ? { file } : {}),
  };
}

/** The one file region `ts` fill back to back in this order, or undefined. */
function spanOf(ts: ConstTensor[]): ConstTensor['file'] {
  const first = ts[0].file;
  if (!first) return undefined;
  let end = first.offset + first.length;
  for (const t of ts.slice(1)) {
    const f = t.file;
    if (!f || f.path !== first.path || f.offset !== end) return undefined;
    end += f.length;
  }
  return { ...first, length: end - first.offset };
}

/**
 * Linear layers are fused only if each one's packed bytes reach this size: checkpoints keep
 * tensors this large in the file (io/safetensors FILE_BACKED) and ORT reads initializers this
 * large as external data, so a fused group is all in memory or all in the file, and whether a
 * model is fused never depends on where its weights are (one model, one function: fused and
 * separate MatMulNBits agree bit for bit in test/linear-fusion.test.ts, but that is MLAS's
 * behaviour, not a promise of ORT's).
 */
const FUSE_MIN_BYTES = 4096;

/**
 * evenRows reads the row count once per rendering (from its first Linear input), so a
 * rendering that chains passes of different row counts (`carry`: a fused round's catch-up rows,
 * then one-row head steps) would pad and slice its later Linear inputs by the first pass's rows.
 */
const EVEN_ROWS_CHAINED = 'evenRows (row count read once per rendering) cannot be used in a rendering that chains passes (carry): its passes have different row counts; render each pass shape separately or without evenRows';

export class OnnxOps implements Ops<string> {
  private weights = new Map<string, string>();
  /** Per (headDim, frequencies): the RoPE cos and sin tables. */
  private ropeTables = new Map<string, [string, string]>();
  /** Per positions value: its [1, T] form. */
  private batched = new Map<string, string>();
  /** Values already in [1, T, width] form (rope outputs): row-wise ops broadcast over the extra axis. */
  private batchedValues = new Set<string>();

  /**
   * @param lookup finds a weight by checkpoint name.
   * @param maxPositions RoPE tables cover positions [0, maxPositions).
   */
  constructor(
    readonly g: GraphBuilder,
    private lookup: (name: string) => Tensor | undefined,
    private maxPositions: number,
    readonly attentionMode: AttentionMode = 'split',
    private opts: OnnxOpsOptions = {},
  ) {
    g.onFinish(() => (this.emitLinearGroups(), this.emitSums()));
    this.valueLayout = opts.valueLayout ?? valueLayoutFor(attentionMode);
  }

  /** Whether this rendering is for one-token passes (OnnxOpsOptions.oneToken). */
  get oneToken(): boolean {
    return !!this.opts.oneToken;
  }

  /** How the past keys and values this rendering reads are laid out (OnnxOpsOptions.valueLayout). */
  readonly valueLayout: ValueLayout;

  weight(name: string): string {
    const hit = this.weights.get(name);
    if (hit) return hit;
    const t = this.lookup(name);
    const fallback = this.opts.fallback;
    if (!t && fallback) return fallback.weight(name);
    if (!t) throw new Error(`missing tensor ${name}`);
    const value = (this.opts.prefix ?? '') + name;
    // A weight held only quantized has no fp32 initializer: only `linear` reads it.
    // A file-backed weight goes to ORT as its file region; `data` is read only if it is embedded.
    if (!t.quant) this.g.initializer(value, { dtype: 'float32', dims: t.shape, get data() { return t.data; }, file: t.file });
    this.weights.set(name, value);
    this.tensors.set(value, t);
    return value;
  }

  /** Per fp32 weight value: its quantized initializers. */
  private quantized = new Map<string, PackedLinear>();

  /** Per initializer value name: the weight it holds. */
  private tensors = new Map<string, Tensor>();

  /** The weight behind a value `weight` returned (this rendering's or its fallback's). */
  tensorOf(value: string): Tensor | undefined {
    return this.tensors.get(value) ?? this.opts.fallback?.tensorOf(value);
  }

  /** The rendering whose weight `value` is: this one or (recursively) its fallback. */
  private ownerOf(value: string): OnnxOps {
    return this.tensors.has(value) || !this.opts.fallback ? this : this.opts.fallback.ownerOf(value);
  }

  embed(table: string, ids: string): string {
    const t = this.tensorOf(table);
    if (!t?.quant) return this.g.op('Gather', [table, ids], { axis: 0 });
    // A table held quantized (a quantized target): the rows are gathered from the packed bytes
    // and dequantized, (q - zero) * scale in fp32, exactly dequantizeWeight's values. The bytes
    // are the owner's one initializer, which a tied LM head's MatMulNBits reads too; the kernel
    // wants its scales shaped like the data, [V, blocks, 1].
    const owner = this.ownerOf(table);
    const { B, S, n, k, bits, blockSize } = owner.packedInits(table, t.quant);
    const q = t.quant, blocks = k / blockSize;
    const S3 = owner.once(`gatherScales/${table}`, () => this.g.initializer(`${S}_3d`, { dtype: 'float32', dims: [n, blocks, 1], get data() { return q.scales; }, file: q.scalesFile }));
    const rows = this.g.node('GatherBlockQuantized', [B, ids, S3], { gather_axis: 0, quantize_axis: 2, block_size: blockSize, bits }, { domain: 'com.microsoft' })[0]; // [T, blocks, blockSize]
    return this.g.op('Reshape', [rows, this.g.ints([-1, k])]);
  }

  /** The name stem of weight value `w`'s quantized initializers: a fallback's weight quantized here gets this rendering's prefix. */
  private quantizedName(w: string): string {
    return this.tensors.has(w) ? w : (this.opts.prefix ?? '') + w;
  }

  /** The MatMulNBits initializers of weight value `w` in packed form `pre`, made once per rendering. */
  private packedInits(w: string, pre: QuantizedTensor): PackedLinear {
    let p = this.quantized.get(w);
    if (p) return p;
    // Not destructured: a checkpoint's packed bytes and scales are read from its file only if
    // embedded (`packedFile` / `scalesFile` point ORT at the file instead).
    const { n, k, bits, blockSize } = pre, blocks = k / blockSize;
    const base = this.quantizedName(w);
    const bt: ConstTensor = { dtype: 'uint8', dims: [n, blocks, (blockSize * bits) / 8], get data() { return pre.packed; }, file: pre.packedFile };
    const st: ConstTensor = { dtype: 'float32', dims: [n * blocks], get data() { return pre.scales; }, file: pre.scalesFile };
    const B = this.g.initializer(`${base}.q${bits}`, bt), S = this.g.initializer(`${base}.scales`, st);
    this.quantized.set(w, (p = { B, S, bt, st, n, k, bits, blockSize }));
    return p;
  }

  linear(x: string, w: string, bias?: string): string {
    const q = this.opts.quantize, t = this.tensorOf(w);
    let packedW = this.quantized.get(w); // a weight read by several passes of one graph is packed once
    if (!packedW && t) {
      // A weight quantized ahead (a quantized checkpoint, --quantize), or one quantized here.
      const block = !t.quant && q ? blockOf(t, q) : 0;
      const pre = t.quant ?? (block > 0 ? { ...quantizeWeight(t, { bits: q!.bits, blockSize: block }), bits: q!.bits, blockSize: block } : undefined);
      if (pre) {
        // The fp32 initializer `w` (if any) stays unread, so the graph builder leaves it out.
        if (q?.kernel === 'dq') {
          const { n, k, bits, blockSize } = pre, blocks = k / blockSize;
          const base = this.quantizedName(w);
          // Same bytes: [N, K] row-major codes, zero point 2^(bits-1) per block, scales [N, K/b].
          const X = this.g.initializer(`${base}.q${bits}`, { dtype: bits === 8 ? 'uint8' : 'uint4', dims: [n, k], data: pre.packed });
          const S = this.g.initializer(`${base}.scales`, { dtype: 'float32', dims: [n, blocks], data: pre.scales });
          const zeros = bits === 8 ? new Uint8Array(n * blocks).fill(128) : new Uint8Array(Math.ceil((n * blocks) / 2)).fill(0x88);
          const Z = this.g.initializer(`${base}.zeros`, { dtype: bits === 8 ? 'uint8' : 'uint4', dims: [n, blocks], data: zeros });
          const W = this.g.op('DequantizeLinear', [X, S, Z], { axis: 1, block_size: blockSize });
          return this.g.op('Gemm', bias ? [x, W, bias] : [x, W], { transB: 1 });
        }
        // A weight held quantized has one set of initializers, its owner's (an embedding lookup
        // may read it too); one quantized here is this rendering's own.
        packedW = t.quant ? this.ownerOf(w).packedInits(w, t.quant) : this.packedInits(w, pre);
        this.quantized.set(w, packedW);
      }
    }
    if (packedW) {
      // A bias that is a weight goes into MatMulNBits (its optional input): ORT would fuse a
      // following Add into a lone MatMulNBits anyway (graph optimization 'extended'), but not one
      // after a fused group's Split, and the kernel's bias sums differently from an Add (last
      // bits, which int8 activations amplify), so fused and separate layers would disagree.
      const b = bias !== undefined && this.tensorOf(bias) ? bias : undefined;
      const member = { w: packedW, bias: b };
      const y = this.opts.fuseLinears === false ? this.matMulNBits(x, [member])[0] : this.groupedLinear(x, member);
      return bias !== undefined && !b ? this.add(y, bias) : y;
    }
    // Gemm reads the [out, in] weight transposed in place, so no transposed copy is stored.
    return this.g.op('Gemm', bias ? [x, w, bias] : [x, w], { transB: 1 });
  }

  /**
   * One MatMulNBits over `x` and the weights `ws` (one, or several concatenated along N), each
   * with its bias (all or none have one: see groupedLinear); returns each weight's output.
   */
  private matMulNBits(x: string, members: LinearMember[], outs?: string[]): string[] {
    const ws = members.map((m) => m.w), g = this.g, { k, bits, blockSize } = ws[0], attrs = { K: k, bits, block_size: blockSize, accuracy_level: this.opts.quantize?.accuracyLevel ?? DEFAULT_ACCURACY_LEVEL };
    const split = ws.length > 1, n = ws.reduce((a, w) => a + w.n, 0), blocks = k / blockSize;
    // A fused weight read by several passes of one graph (a fused round's head steps) is one initializer.
    const B = split ? this.once(`fusedB/${ws.map((w) => w.B).join('+')}`, () => g.initializer(ws.map((w) => w.B).join('+'), joined(ws.map((w) => w.bt), [n, blocks, (blockSize * bits) / 8]))) : ws[0].B;
    const S = split ? this.once(`fusedS/${ws.map((w) => w.S).join('+')}`, () => g.initializer(ws.map((w) => w.S).join('+'), joined(ws.map((w) => w.st), [n * blocks]))) : ws[0].S;
    const biases = members.map((m) => m.bias).filter((b) => b !== undefined);
    const bias = biases.length === 0 ? undefined : !split ? biases[0] : this.once(`fusedBias/${biases.join('+')}`, () => g.initializer(biases.join('+'), joined(biases.map((b) => this.biasTensor(b)), [n])));
    if (this.rendersNative(bits, blockSize)) {
      // Row-exact (block-matmul.h): no padded rows.
      const y = g.node('BlockMatMul', [x, B, S, ...(bias ? [bias] : [])], {}, { domain: 'eaglet', outputs: split ? 1 : (outs ?? 1) })[0];
      return split ? g.node('Split', [y, g.ints(ws.map((w) => w.n))], { axis: -1 }, { outputs: outs ?? ws.length }) : [y];
    }
    // A pass padded at its inputs (evenPass) has even rows already.
    const even = this.opts.evenRows && !this.passRows && this.pairsRows(bits, blockSize) ? this.evenRowsOf(x) : undefined;
    // Inputs: A, B, scales, zero points, g_idx, bias. The last node of the chain (MatMulNBits, then the Slice back to the pass's rows, then the Split) writes `outs`.
    const input = even ? g.op('Pad', [x, even.pads], { mode: 'edge' }) : x;
    let y = g.node('MatMulNBits', [input, B, S, ...(bias ? ['', '', bias] : [])], { ...attrs, N: n }, { domain: 'com.microsoft', outputs: split || even ? 1 : (outs ?? 1) })[0];
    if (even) y = g.node('Slice', [y, g.ints([0]), even.rows, g.ints([0])], {}, { outputs: split ? 1 : (outs ?? 1) })[0];
    return split ? g.node('Split', [y, g.ints(ws.map((w) => w.n))], { axis: -1 }, { outputs: outs ?? ws.length }) : [y];
  }

  /**
   * Per input value (and K, bits, block size): the quantized Linear layers reading it, and the
   * node slot where the first of them was asked for. Their outputs are named at once; the nodes
   * are emitted when the graph is finished (emitLinearGroups), as one fused MatMulNBits.
   */
  private evenRowsAt?: { rows: string; pads: string };

  /**
   * The pass's row count [1] and the Pad pads [0, 0, rows % 2, 0] that make it even (see
   * OnnxOpsOptions.evenRows): read from the first Linear input `x`, then shared by all.
   */
  private evenRowsOf(x: string): { rows: string; pads: string } {
    if (this.evenRowsAt) return this.evenRowsAt;
    if (this.carried.size) throw new Error(EVEN_ROWS_CHAINED);
    const g = this.g, rows = g.op('Shape', [x], { start: 0, end: 1 });
    return (this.evenRowsAt = { rows, pads: g.op('Concat', [g.ints([0, 0]), g.op('Mod', [rows, g.ints([2])]), g.ints([0])], { axis: 0 }) });
  }

  /** Set by `evenPass`: the pass's own row count T [1] (its inputs were padded to even rows). */
  private passRows?: string;

  /** Whether a quantized weight of `bits` and `blockSize` renders as eaglet.BlockMatMul here (OnnxOpsOptions.nativeLinear). */
  private rendersNative(bits: number, blockSize: number): boolean {
    return !!this.opts.nativeLinear && nativeLinearFits(bits, blockSize);
  }

  /** Whether the kernel a weight of `bits` and `blockSize` renders as computes rows in pairs: MatMulNBits with blocks above ROW_EXACT_BLOCK. */
  private pairsRows(bits: number, blockSize: number): boolean {
    return blockSize > (ROW_EXACT_BLOCK[bits] ?? Infinity) && !this.rendersNative(bits, blockSize);
  }

  /** Whether evenRows pads this rendering's passes: its quantization's kernel computes rows in pairs. */
  get padsRows(): boolean {
    const q = this.opts.quantize;
    return !!this.opts.evenRows && q !== undefined && this.pairsRows(q.bits, q.blockSize);
  }

  /**
   * evenRows for a whole pass at once: pads its inputs to even rows, ids and positions [T] ->
   * [T'] (T' = T + T % 2, the last row repeated) and the tree [T, W] -> [T', W + T' - T] (the
   * last row repeated, then one more key column, the padding row's own key, that no row sees).
   * The padding row then computes in every layer exactly what the last row does (same token,
   * position and visible keys; MatMulNBits pairs it with the last row, and a paired row's result
   * does not depend on its partner), and no row reads its key or value: a masked key adds exact
   * zeros after the visible ones, as in a verification pass. So every row-wise op runs on T'
   * rows, and instead of a Pad and a Slice per MatMulNBits (66 nodes in a 100M step) the graph
   * has one Pad per input and one Slice per output (`unpadRows`). Without padsRows the inputs
   * come back as they are. Only for a rendering of one pass (not with `carry`).
   */
  evenPass(inp: { ids: string; positions: string; tree: string }): { ids: string; positions: string; tree: string } {
    if (!this.padsRows) return inp;
    if (this.carried.size || this.evenRowsAt) throw new Error(EVEN_ROWS_CHAINED);
    const g = this.g, rows = g.op('Shape', [inp.positions]), extra = g.op('Mod', [rows, g.ints([2])]); // [1] = T, T % 2
    this.passRows = rows;
    const edge = (x: string) => g.op('Pad', [x, g.op('Concat', [g.ints([0]), extra], { axis: 0 })], { mode: 'edge' });
    const lastRow = g.op('Pad', [inp.tree, g.op('Concat', [g.ints([0, 0]), extra, g.ints([0])], { axis: 0 })], { mode: 'edge' }); // [T', W]
    const tree = g.op('Pad', [lastRow, g.op('Concat', [g.ints([0, 0, 0]), extra], { axis: 0 })]); // [T', W + T' - T], the new column false
    return { ids: inp.ids && edge(inp.ids), positions: edge(inp.positions), tree };
  }

  /** Rows [0, T) of `x` along `axis` in a pass padded by `evenPass` (else `x` itself). */
  unpadRows(x: string, axis = 0): string {
    return this.passRows ? this.g.op('Slice', [x, this.g.ints([0]), this.passRows, this.g.ints([axis])]) : x;
  }

  /** A bias weight value as the initializer tensor a fused bias joins (read only if embedded). */
  private biasTensor(bias: string): ConstTensor {
    const t = this.tensorOf(bias)!;
    return { dtype: 'float32', dims: t.shape, get data() { return t.data; }, file: t.file };
  }

  private linearGroups = new Map<string, { x: string; slot: ReturnType<GraphBuilder['reserve']>; members: (LinearMember & { out: string })[] }>();

  /**
   * `x` through the quantized Linear `m`, in the group of Linear layers over `x` (see
   * fuseLinears). Layers with and without a bias are separate groups: the kernel adds a bias in
   * its own summation order, so a fused weight's columns take it or not all alike.
   */
  private groupedLinear(x: string, m: LinearMember): string {
    const { w, bias } = m, key = `${x}/${w.k}/${w.bits}/${w.blockSize}/${bias !== undefined}`;
    let group = this.linearGroups.get(key);
    if (!group) this.linearGroups.set(key, (group = { x, slot: this.g.reserve(), members: [] }));
    const hit = group.members.find((o) => o.w === w && o.bias === bias);
    if (hit) return hit.out;
    const out = this.g.freshValue('MatMulNBits');
    group.members.push({ w, bias, out });
    return out;
  }

  /**
   * Emits each group of Linear layers over one input as one MatMulNBits (see fuseLinears and
   * FUSE_MIN_BYTES). Members whose packed bytes (and scales) lie back to back in one file, as an
   * `eaglet quantize` checkpoint stores q, k, v and gate, up, make a fused weight that is that
   * file region (nothing read into JS); otherwise the fused weight is a concatenated copy.
   */
  private emitLinearGroups(): void {
    for (const { x, slot, members } of this.linearGroups.values()) {
      const fuse = members.length > 1 && members.every((m) => m.w.bt.dims.reduce((a, b) => a * b, 1) >= FUSE_MIN_BYTES);
      this.g.fill(slot, () => {
        if (fuse) this.matMulNBits(x, members, members.map((m) => m.out));
        else for (const m of members) this.matMulNBits(x, [m], [m.out]);
      });
    }
    this.linearGroups.clear();
  }

  /**
   * Sums not yet emitted, by output value: a sum that an RMSNorm reads (a residual add, then the
   * next sublayer's norm) becomes one com.microsoft SkipSimplifiedLayerNormalization, which
   * writes both the norm and the sum: one node instead of two (see `rmsNorm`).
   */
  private sums = new Map<string, { a: string; b: string; slot: ReturnType<GraphBuilder['reserve']>; norm?: { w: string; eps: number; out: string } }>();

  add(a: string, b: string): string {
    const out = this.g.freshValue('Add');
    this.sums.set(out, { a, b, slot: this.g.reserve() });
    return out;
  }

  /** Emits each sum `add` deferred: an Add, or with the norm that reads it as one node (see `sums`). */
  private emitSums(): void {
    for (const [out, { a, b, slot, norm }] of this.sums) {
      this.g.fill(slot, () => {
        if (norm) this.g.node('SkipSimplifiedLayerNormalization', [a, b, norm.w], { epsilon: { float: norm.eps } }, { domain: 'com.microsoft', outputs: [norm.out, '', '', out] });
        else this.g.node('Add', [a, b], {}, { outputs: [out] });
      });
    }
    this.sums.clear();
  }

  mul(a: string, b: string): string {
    return this.g.op('Mul', [a, b]);
  }

  silu(x: string): string {
    return this.g.op('Mul', [x, this.g.op('Sigmoid', [x])]);
  }

  /**
   * ORT's SimplifiedLayerNormalization (an ONNX-domain contrib op; the function of opset 23's
   * RMSNormalization), so that a norm of a sum `add` deferred (a residual add) can be that sum's
   * SkipSimplifiedLayerNormalization (see `sums`): one node fewer per residual add (the 100M
   * target's step 431 -> 415 nodes). Measured on its q4 step at 1 thread with the session
   * positions balanced (scripts/ab-step.ts, ABBA and BAAB): ~0.05 ms less, about the run-to-run noise.
   */
  rmsNorm(x: string, w: string, eps: number): string {
    const sum = this.sums.get(x);
    // Fused only over same-shape 2-D rows and a weight (an initializer: defined before the sum's slot).
    if (sum && !sum.norm && this.tensorOf(w) && !this.batchedValues.has(sum.a) && !this.batchedValues.has(sum.b)) {
      sum.norm = { w, eps, out: this.g.freshValue('SkipSimplifiedLayerNormalization') };
      return sum.norm.out;
    }
    return this.g.op('SimplifiedLayerNormalization', [x, w], { axis: -1, epsilon: { float: eps } });
  }

  headRmsNorm(x: string, w: string, nHeads: number, eps: number): string {
    const g = this.g;
    const heads = g.op('Reshape', [x, g.ints([0, nHeads, -1])]); // [T, nH, hd]
    return g.op('Reshape', [this.rmsNorm(heads, w, eps), g.ints([0, -1])]);
  }

  concat(a: string, b: string): string {
    return this.g.op('Concat', [a, b], { axis: -1 });
  }

  rope(x: string, positions: string, nHeads: number, headDim: number, spec: RopeSpec): string {
    // ONNX RotaryEmbedding (opset 23; non-interleaved = rotate halves): one kernel instead of a
    // seven-node split/swap/multiply chain. Its output keeps the batch axis, [1, T, nH*hd],
    // which is the form `attention` and the present outputs want anyway. (ORT's com.microsoft
    // RotaryEmbedding computes the same; it was not measurably faster on the 100M q4 step.)
    const g = this.g;
    const [cos, sin] = this.ropeCache(headDim, spec);
    if (this.opts.oneToken) {
      // One row: [1, nH*hd] is [1, nH, 1, hd] (batch, heads, seq, hd), the kernel's 4-D form, and
      // that is the query / key heads attention wants; positions are the [1, 1] input as it is.
      const y = g.op('RotaryEmbedding', [g.op('Reshape', [x, g.ints([1, nHeads, 1, headDim])]), cos, sin, positions], { interleaved: 0 });
      this.batchedValues.add(y);
      return y;
    }
    const x3 = g.op('Unsqueeze', [x, g.ints([0])]); // [1, T, nH*hd]
    const y = g.op('RotaryEmbedding', [x3, cos, sin, this.batchPositions(positions)], { interleaved: 0, num_heads: nHeads });
    this.batchedValues.add(y);
    return y;
  }

  /** cos and sin tables [maxPositions, hd/2], computed in float64: angle p * invFreq_i. */
  private ropeCache(headDim: number, spec: RopeSpec): [string, string] {
    const invFreq = ropeInvFreq(headDim, spec);
    const key = `${headDim}/${invFreq.join(',')}`;
    const hit = this.ropeTables.get(key);
    if (hit) return hit;
    const half = headDim / 2, n = this.maxPositions;
    const { cos, sin } = ropeCosSin(invFreq, n); // [maxPos, hd/2]
    const tag = this.ropeTables.size;
    const table = (name: string, data: Float32Array) => this.g.initializer(`${this.opts.prefix ?? ''}rope_${name}_${headDim}_${tag}`, { dtype: 'float32', dims: [n, half], data });
    const r: [string, string] = [table('cos', cos), table('sin', sin)];
    this.ropeTables.set(key, r);
    return r;
  }

  /** x as [1, rows, width]: as it is if it already has that form, else reshaped. */
  batch(x: string, width: number): string {
    return this.batchedValues.has(x) ? x : this.g.op('Reshape', [x, this.g.ints([1, -1, width])]);
  }

  /**
   * `positions` [T] plus `k`, in the [1, T] form rope reads: one Add, and rope then reads it as
   * it is (a chain of one-row steps at the positions after the last catch-up row: one node a
   * step instead of a Slice and an Unsqueeze).
   */
  positionsPlus(positions: string, k: number): string {
    const p = this.g.op('Add', [this.batchPositions(positions), this.g.ints([k])]);
    this.batched.set(p, p);
    return p;
  }

  /** positions [T] -> [1, T], once per positions value. */
  private batchPositions(positions: string): string {
    let p = this.batched.get(positions);
    if (!p) this.batched.set(positions, (p = this.g.op('Unsqueeze', [positions, this.g.ints([0])])));
    return p;
  }

  attention(q: string, k: string, v: string, past: PastKV<string> | null, mask: string, layout: HeadLayout): string {
    if (this.slots) {
      if (!past) throw new Error('per-slot attention needs the batch cache as past');
      return this.slotAttention(q, k, v, past, mask, layout, this.slots);
    }
    return this.attentionMode === 'fused' || !past || this.carried.has(past.keys) ? this.fusedAttention(q, k, v, past, mask, layout) : this.splitAttention(q, k, v, past, mask, layout);
  }

  /** Pasts in the Attention kernel's own layout (see `carry`), by their keys value, with the present K/V of the attention that read them (once rendered). */
  private carried = new Map<string, PastKV<string> | null>();

  /**
   * Marks `past` as held in the Attention kernel's layout, keys [1, nKv, P, hd] untransposed, all
   * P rows live: `attention` then reads it with the one-kernel Attention (whatever the mode) and
   * keeps the kernel's present outputs, [1, nKv, P + T, hd] (past then new rows), which
   * `presentAfter` returns as the next pass's carried past. An in-graph chain of passes thus
   * carries its K/V with no extra nodes. The mask may be '' (none: every key visible).
   */
  carry(past: PastKV<string>): PastKV<string> {
    if (this.evenRowsAt || this.passRows) throw new Error(EVEN_ROWS_CHAINED);
    this.carried.set(past.keys, null);
    return past;
  }

  /** The present K/V of the attention that read the carried `past`: itself carried. */
  presentAfter(past: PastKV<string>): PastKV<string> {
    const present = this.carried.get(past.keys);
    if (!present) throw new Error(`no attention has read the carried past ${past.keys}`);
    return this.carry(present);
  }

  /** Set by `perSlot`: attention runs per batch slot (see slotAttention). */
  private slots?: { pad: string; unpad: string };

  /**
   * Renders attention per batch slot from here on (a serving batch pass): rows stay packed
   * [N, width] for every row-wise op (the weights' MatMuls see all N rows at once), and only
   * attention regroups them, `pad` [B * M] int64 (for each slot b and row i < M, the packed row
   * it reads; padding rows read any row) into [B, M] against the past K and V (per
   * `valueLayout`: [B, nKv, S, hd] or [B, nKv, hd, S]), and back through `unpad` [N]
   * (packed row -> its padded row). The mask is
   * then additive [B, M, S + M]: per slot, its past rows then its M new rows.
   */
  perSlot(pad: string, unpad: string): void {
    this.slots = { pad, unpad };
  }

  /**
   * splitAttention with a leading slot axis: each slot's rows score only that slot's past and
   * new rows, so attention costs B x M x (S + M) instead of N x (all slots' rows).
   */
  private slotAttention(q: string, k: string, v: string, past: PastKV<string>, mask: string, { nHeads, nKvHeads, headDim }: HeadLayout, { pad, unpad }: { pad: string; unpad: string }): string {
    const g = this.g, G = nHeads / nKvHeads;
    const bm = g.op('Shape', [mask], { start: 0, end: 2 }); // [2] = B, M
    // Packed [N, w] (or [1, N, w]) -> padded [B, M, ...dims].
    const padded = (x: string, width: number, dims: number[]) =>
      g.op('Reshape', [g.op('Gather', [g.op('Reshape', [x, g.ints([-1, width])]), pad], { axis: 0 }), g.op('Concat', [bm, g.ints(dims)], { axis: 0 })]);
    const scaled = g.op('Mul', [q, g.scalar(1 / Math.sqrt(headDim))]); // scaled before regrouping, as splitAttention
    const q4 = g.op('Reshape', [g.op('Transpose', [padded(scaled, nHeads * headDim, [nKvHeads, G, headDim])], { perm: [0, 2, 1, 3, 4] }), g.ints([0, nKvHeads, -1, headDim])]); // [B, nKv, M*G, hd]
    const kNewT = g.op('Transpose', [padded(k, nKvHeads * headDim, [nKvHeads, headDim])], { perm: [0, 2, 3, 1] }); // [B, nKv, hd, M]
    const vNew = g.op('Transpose', [padded(v, nKvHeads * headDim, [nKvHeads, headDim])], { perm: [0, 2, 1, 3] }); // [B, nKv, M, hd]
    const scores = g.op('Concat', [this.timesPastKeys(q4, past.keys), g.op('MatMul', [q4, kNewT])], { axis: -1 }); // [B, nKv, MG, S+M]
    const weights = g.op('Softmax', [g.op('Add', [scores, this.slotGroupMask(mask, G)])], { axis: -1 });
    const sizes = g.op('Concat', [this.pastRows(past.values), g.op('Shape', [mask], { start: 1, end: 2 })], { axis: 0 });
    const [wPast, wNew] = g.node('Split', [weights, sizes], { axis: -1 }, { outputs: 2 });
    const o = g.op('Add', [this.timesPastValues(wPast, past.values), g.op('MatMul', [wNew, vNew])]); // [B, nKv, MG, hd]
    const byRow = g.op('Transpose', [g.op('Reshape', [o, g.ints([0, nKvHeads, -1, G, headDim])])], { perm: [0, 2, 1, 3, 4] }); // [B, M, nKv, G, hd]
    return g.op('Gather', [g.op('Reshape', [byRow, g.ints([-1, nHeads * headDim])]), unpad], { axis: 0 }); // [N, nH*hd]
  }

  /** Per (mask, G): the slot mask [B, M, S+M] with each row repeated G times -> [B, 1, M*G, S+M], built once. */
  private slotGroupMask(mask: string, G: number): string {
    return this.once(`slotGroupMask/${mask}/${G}`, () => {
      const g = this.g;
      if (G === 1) return g.op('Unsqueeze', [mask, g.ints([1])]);
      const expanded = g.op('Expand', [g.op('Unsqueeze', [mask, g.ints([2])]), g.ints([1, 1, G, 1])]); // [B, M, G, S+M]
      return g.op('Reshape', [expanded, g.op('Concat', [g.op('Shape', [mask], { start: 0, end: 1 }), g.ints([1, -1]), g.op('Shape', [mask], { start: 2, end: 3 })], { axis: 0 })]);
    });
  }

  /**
   * ONNX Attention (opset 23): GQA without repeating K/V, scale 1/sqrt(hd), additive mask, one
   * kernel. Given a past it wants K and V head-major in rows (a cache in the 'transposed' layout
   * costs a Transpose of each), and concatenates past and new rows
   * into a fresh present buffer on every pass: copies of the whole cache per layer, so it only
   * pays where the past is short and ORT's per-node overhead dominates.
   */
  private fusedAttention(q: string, k: string, v: string, past: PastKV<string> | null, mask: string, { nHeads, nKvHeads, headDim }: HeadLayout): string {
    const g = this.g, kvWidth = nKvHeads * headDim;
    const inputs = [this.batch(q, nHeads * headDim), this.batch(k, kvWidth), this.batch(v, kvWidth), mask];
    const carried = past !== null && this.carried.has(past.keys);
    const untransposed = (x: string) => g.op('Transpose', [x], { perm: [0, 1, 3, 2] });
    const inRows = carried || this.valueLayout === 'rows';
    if (past) inputs.push(inRows ? past.keys : untransposed(past.keys), inRows ? past.values : untransposed(past.values));
    // With a past, ORT's kernel insists on writing the present outputs (kept for a carried past).
    const [y, presentK, presentV] = g.node('Attention', inputs, { q_num_heads: nHeads, kv_num_heads: nKvHeads }, { outputs: past ? 3 : 1 }); // [1, T, nH*hd]
    if (carried) this.carried.set(past.keys, { keys: presentK, values: presentV });
    return g.op('Reshape', [y, g.ints([-1, nHeads * headDim])]); // [T, nH*hd]
  }

  /**
   * Attention that reads the cache in place. Past K/V are the cache's head blocks, K^T and V^T
   * [1, nKv, hd, S] or K and V [1, nKv, S, hd] (`valueLayout`); each query group (the G = nH/nKv query heads of one
   * K/V head, T rows each) is scored against its head's past with one batched MatMul and
   * against the T new rows separately; the two score blocks are joined in score space
   * ([TG, S + T], small), masked, softmaxed, split again, and each part multiplies its own V.
   * Past rows beyond the live length are masked out (weight exactly 0).
   */
  private splitAttention(q: string, k: string, v: string, past: PastKV<string>, mask: string, { nHeads, nKvHeads, headDim }: HeadLayout): string {
    const g = this.g, G = nHeads / nKvHeads;
    // Scaled query rows grouped per K/V head, t-major within a group: [1, nKv, T*G, hd]. The
    // scale is applied before the regrouping so ORT does not fuse it into the MatMul: the fused
    // (alpha != 1) form misses MLAS's one-row fast path and measured ~2x slower at T = 1.
    const scaled = g.op('Mul', [q, g.scalar(1 / Math.sqrt(headDim))]);
    if (this.opts.oneToken) return this.oneTokenAttention(scaled, k, v, past, mask, { nHeads, nKvHeads, headDim });
    const q4 = g.op('Reshape', [g.op('Transpose', [g.op('Reshape', [scaled, g.ints([-1, nKvHeads, G, headDim])])], { perm: [1, 0, 2, 3] }), g.ints([1, nKvHeads, -1, headDim])]);
    const heads = (x: string, perm: number[]) => g.op('Transpose', [g.op('Reshape', [x, g.ints([-1, nKvHeads, headDim])])], { perm });
    const kNewT = heads(k, [1, 2, 0]); // [nKv, hd, T]
    const vNew = () => heads(v, [1, 0, 2]); // [nKv, T, hd]; made only where read (ORT runs unread nodes too)
    const live = this.liveRows.get(mask);
    if (live) {
      // Position order (OnnxOpsOptions.rowExactAttention): [live past rows, new rows], mask [T, L+T].
      const rows = this.valueLayout === 'rows';
      const liveOf = (pastX: string, axis: number) => g.op('Slice', [pastX, g.ints([0]), live, g.ints([axis])]);
      const join = (pastX: string, axis: number, fresh: string) => g.op('Concat', [liveOf(pastX, axis), g.op('Unsqueeze', [fresh, g.ints([0])])], { axis });
      // Keys in rows are transposed here (this path copies the live rows anyway): the same products in either layout.
      const pastKeysT = rows ? g.op('Transpose', [liveOf(past.keys, 2)], { perm: [0, 1, 3, 2] }) : liveOf(past.keys, 3);
      const keys = g.op('Concat', [pastKeysT, g.op('Unsqueeze', [kNewT, g.ints([0])])], { axis: 3 }); // [1, nKv, hd, L+T]
      const values = rows ? join(past.values, 2, vNew()) : join(past.values, 3, heads(v, [1, 2, 0])); // [1, nKv, L+T, hd] or [1, nKv, hd, L+T]
      // MLAS multiplies a one-row A (a one-token step with G = 1) with another kernel, which sums
      // in another order: with G = 1 both products get an extra (zero) row, so they never see one.
      const extra = G === 1 ? (x: string) => g.op('Pad', [x, g.ints([0, 0, 0, 0, 0, 0, 1, 0])]) : (x: string) => x;
      const drop = G === 1 ? (x: string, axis = 2) => g.op('Slice', [x, g.ints([0]), g.ints([-1]), g.ints([axis])]) : (x: string) => x;
      // treeOrder: scores gathered into each row's position order, the weights back to key order.
      const order = this.treeOrders.get(mask);
      const gather = (x: string, key: 'order' | 'unorder') => (order ? g.op('GatherElements', [x, this.groupOrder(order[key], G, nKvHeads)], { axis: -1 }) : x);
      const w = extra(gather(g.op('Softmax', [g.op('Add', [gather(drop(this.rowExactScores(extra(q4), keys, nKvHeads, headDim)), 'order'), this.groupMask(mask, G)])], { axis: -1 }), 'unorder'));
      const { slices } = valueProduct(headDim, nKvHeads, this.opts.gemmThreads);
      if (slices === 1) return this.byRow(drop(this.timesPastValues(w, values)), nHeads, nKvHeads, G, headDim);
      // The product per slice of the values' columns (valueProduct): weights
      // [1, nKv, 1, M, L+T] broadcast over the slices of the values [1, nKv, P, ., .].
      const n = headDim / slices;
      const sliced = rows
        ? g.op('Transpose', [g.op('Reshape', [values, g.ints([1, nKvHeads, -1, slices, n])])], { perm: [0, 1, 3, 2, 4] }) // [1, nKv, P, L+T, n]
        : g.op('Reshape', [values, g.ints([1, nKvHeads, slices, n, -1])]); // [1, nKv, P, n, L+T]
      const o = drop(this.timesPastValues(g.op('Unsqueeze', [w, g.ints([2])]), sliced), 3); // [1, nKv, P, T*G, n]
      const byRow = g.op('Transpose', [g.op('Reshape', [o, g.ints([nKvHeads, slices, -1, G, n])])], { perm: [2, 0, 3, 1, 4] }); // [T, nKv, G, P, n]
      return g.op('Reshape', [byRow, g.ints([-1, nHeads * headDim])]);
    }
    const scores = g.op('Concat', [this.timesPastKeys(q4, past.keys), g.op('MatMul', [q4, kNewT])], { axis: -1 }); // [1, nKv, TG, S+T]
    const weights = g.op('Softmax', [g.op('Add', [scores, this.groupMask(mask, G)])], { axis: -1 });
    const [wPast, wNew] = g.node('Split', [weights, this.splitSizes(past.values, mask)], { axis: -1 }, { outputs: 2 });
    const o = g.op('Add', [this.timesPastValues(wPast, past.values), g.op('MatMul', [wNew, vNew()])]); // [1, nKv, TG, hd]
    return this.byRow(o, nHeads, nKvHeads, G, headDim);
  }

  /**
   * splitAttention at T = 1 (OnnxOpsOptions.oneToken): the same products, joins and softmax in
   * the same shapes, with every regrouping a Reshape (at one row they move no data). `scaled`
   * and `k` are rope's [1, heads, 1, hd]; `mask` the [1, S + 1] input.
   */
  private oneTokenAttention(scaled: string, k: string, v: string, past: PastKV<string>, mask: string, { nHeads, nKvHeads, headDim }: HeadLayout): string {
    const g = this.g, G = nHeads / nKvHeads;
    // A Reshape even at G = 1: a scaling Mul feeding a MatMul directly is fused into it by ORT (see splitAttention).
    const q4 = g.op('Reshape', [scaled, g.ints([1, nKvHeads, G, headDim])]); // [1, nKv, G, hd]
    const kNewT = g.op('Reshape', [k, g.ints([nKvHeads, headDim, 1])]);
    const vNew = g.op('Reshape', [v, g.ints([nKvHeads, 1, headDim])]);
    if (this.opts.nativeAttention) {
      if (this.valueLayout !== 'transposed') throw new Error("nativeAttention reads the 'transposed' K/V layout only");
      if (headDim % 8 !== 0 || headDim > 256) throw new Error(`nativeAttention: head size ${headDim} is not a multiple of 8 up to 256`);
      const o = g.node('PastAttention', [q4, kNewT, vNew, past.keys, past.values, mask], {}, { domain: 'eaglet' })[0]; // [1, nKv, G, hd]
      return g.op('Reshape', [o, g.ints([1, nHeads * headDim])]);
    }
    const scores = g.op('Concat', [this.timesPastKeys(q4, past.keys), g.op('MatMul', [q4, kNewT])], { axis: -1 }); // [1, nKv, G, S+1]
    const weights = g.op('Softmax', [g.op('Add', [scores, mask])], { axis: -1 });
    const sizes = this.once('oneTokenSplit', () => this.g.op('Concat', [this.pastRows(past.values), this.g.ints([1])], { axis: 0 }));
    const [wPast, wNew] = g.node('Split', [weights, sizes], { axis: -1 }, { outputs: 2 });
    // wNew [1, nKv, G, 1] x vNew [nKv, 1, hd] multiplies over one key: a broadcast Mul computes the same
    // products, and ORT runs it on the calling thread (a batched MatMul goes to the pool).
    const newPart = g.op('Mul', [wNew, vNew]);
    const o = g.op('Add', [this.timesPastValues(wPast, past.values), newPart]); // [1, nKv, G, hd]
    return g.op('Reshape', [o, g.ints([1, nHeads * headDim])]);
  }

  /**
   * rowExactAttention's scores: query rows [1, nKv, M, hd] x keys [1, nKv, hd, L+T]. MLAS sums a
   * GEMM's K axis (here hd) in blocks whose size depends on its column count (the keys, and how
   * they are split across threads: see VALUE_SLICE_COLUMNS, gemmKBlock); a block is never smaller than 128,
   * so a head of at most SCORE_K_SLICE dims is always one block. A wider head is cut into that
   * many slices, each one GEMM, and their products are added in slice order.
   */
  private rowExactScores(q4: string, keys: string, nKvHeads: number, headDim: number): string {
    const g = this.g, slices = fewestSlices(headDim, SCORE_K_SLICE);
    if (slices === 1) return g.op('MatMul', [q4, keys]);
    const n = headDim / slices;
    const qs = g.op('Transpose', [g.op('Reshape', [q4, g.ints([1, nKvHeads, -1, slices, n])])], { perm: [0, 1, 3, 2, 4] }); // [1, nKv, C, M, n]
    const parts = g.node('Split', [g.op('MatMul', [qs, g.op('Reshape', [keys, g.ints([1, nKvHeads, slices, n, -1])])])], { axis: 2, num_outputs: slices }, { outputs: slices }); // C x [1, nKv, 1, M, L+T]
    return g.op('Squeeze', [parts.slice(1).reduce((sum, p) => g.op('Add', [sum, p]), parts[0]), g.ints([2])]);
  }

  /** Attention output per K/V head [1, nKv, T*G, hd] -> [T, nH*hd]. */
  private byRow(o: string, nHeads: number, nKvHeads: number, G: number, headDim: number): string {
    const g = this.g;
    const byRow = g.op('Transpose', [g.op('Reshape', [o, g.ints([nKvHeads, -1, G, headDim])])], { perm: [1, 0, 2, 3] }); // [T, nKv, G, hd]
    return g.op('Reshape', [byRow, g.ints([-1, nHeads * headDim])]); // [T, nH*hd]
  }

  /** Per mask `treeMask` made for rowExactAttention: the live length L [1] it covers. */
  private liveRows = new Map<string, string>();

  /** Per mask `treeMask` made with treeOrder: each row's key order [T, L+T] (position order) and its inverse. */
  private treeOrders = new Map<string, { order: string; unorder: string }>();

  /** Per (index [T, L+T], G, nKv): the index with each row repeated G times, for every K/V head -> [1, nKv, T*G, L+T], built once. */
  private groupOrder(index: string, G: number, nKvHeads: number): string {
    return this.once(`groupOrder/${index}/${G}/${nKvHeads}`, () => {
      const g = this.g;
      const cols = g.op('Shape', [index], { start: 1, end: 2 });
      const rows = G === 1 ? index : g.op('Reshape', [g.op('Expand', [g.op('Unsqueeze', [index, g.ints([1])]), g.ints([1, G, 1])]), g.op('Concat', [g.ints([-1]), cols], { axis: 0 })]); // [T*G, L+T]
      return g.op('Expand', [g.op('Unsqueeze', [rows, g.ints([0, 1])]), g.op('Concat', [g.ints([1, nKvHeads, 1]), cols], { axis: 0 })]);
    });
  }

  /** Per (mask, G): the mask [T, S+T] with each row repeated G times -> [T*G, S+T], built once. */
  private groupMask(mask: string, G: number): string {
    if (G === 1) return mask;
    return this.once(`groupMask/${mask}/${G}`, () => {
      const g = this.g;
      const cols = g.op('Shape', [mask], { start: 1, end: 2 });
      const expanded = g.op('Expand', [g.op('Unsqueeze', [mask, g.ints([1])]), g.op('Concat', [g.ints([1, G]), g.ints([1])], { axis: 0 })]); // [T, G, S+T]
      return g.op('Reshape', [expanded, g.op('Concat', [g.ints([-1]), cols], { axis: 0 })]);
    });
  }

  /**
   * [S, T] for splitting [.., S+T] scores: S from a past V input (every layer's past has the
   * same S rows, so the first layer's serves all), T from the mask's rows.
   */
  private splitSizes(pastValues: string, mask: string): string {
    return this.once(`splitSizes/${mask}`, () => this.g.op('Concat', [this.pastRows(pastValues), this.g.op('Shape', [mask], { start: 0, end: 1 })], { axis: 0 }));
  }

  /** [1] = S, the rows per head of a past V input in this rendering's `valueLayout`. */
  private pastRows(pastValues: string): string {
    const axis = this.valueLayout === 'rows' ? 2 : 3;
    return this.g.op('Shape', [pastValues], { start: axis, end: axis + 1 });
  }

  /**
   * Query rows `q4` [.., M, hd] times the past keys: a plain MatMul over K^T [.., hd, S], or over
   * keys in rows [.., S, hd] a com.microsoft FusedMatMul with transB.
   */
  private timesPastKeys(q4: string, pastKeys: string): string {
    if (this.valueLayout === 'transposed') return this.g.op('MatMul', [q4, pastKeys]);
    return this.g.node('FusedMatMul', [q4, pastKeys], { transB: 1, alpha: { float: 1 } }, { domain: 'com.microsoft' })[0];
  }

  /**
   * Attention weights over the past `w` [.., M, S] times the past values: a plain MatMul over V
   * [.., S, hd], or over V^T [.., hd, S] a com.microsoft FusedMatMul with transB (MLAS reads V^T
   * in place; at one row, hd dot products over contiguous rows: see ValueLayout).
   */
  private timesPastValues(w: string, pastValues: string): string {
    if (this.valueLayout === 'rows') return this.g.op('MatMul', [w, pastValues]);
    return this.g.node('FusedMatMul', [w, pastValues], { transB: 1, alpha: { float: 1 } }, { domain: 'com.microsoft' })[0];
  }

  /** Graph values every layer shares (masks, split sizes): built by the first layer that asks, then reused. */
  private shared = new Map<string, string>();
  private once(key: string, build: () => string): string {
    let v = this.shared.get(key);
    if (v === undefined) this.shared.set(key, (v = build()));
    return v;
  }

  /**
   * The additive mask [T, S+T] over the past block's S rows then the T new rows, from a bool
   * matrix `tree` [T, W] over the last W live keys (row i: which of them token i sees; W = T for
   * a tree of new tokens, W > T when the cache's last W - T rows are staged draft rows of other
   * branches), a past V input `pastValues` (S rows per head) and the live length `pastLength` [1]
   * (L <= S). Columns: [0, L+T-W) zeros, [L+T-W, L) the tree's staged part, [L, S) hidden
   * (unused cache rows), [S, S+T) the tree's new part. JS only ever fills [T, W]. With
   * rowExactAttention (and 'split'): [T, L+T], the keys in position order, [0, L+T-W) zeros then the tree.
   */
  treeMask(tree: string, pastValues: string, pastLength: string): string {
    const g = this.g;
    const t = g.op('Shape', [tree], { start: 0, end: 1 }); // [1] = T
    const w = g.op('Shape', [tree], { start: 1, end: 2 }); // [1] = W
    const staged = g.op('Sub', [w, t]); // [1] = W - T
    const fill = (cols: string, value: number) =>
      g.op('ConstantOfShape', [g.op('Concat', [t, cols], { axis: 0 })], { value: { tensor: { dtype: 'float32' as const, dims: [1], data: new Float32Array([value]) } } });
    const open = fill(g.op('Sub', [pastLength, staged]), 0); // [T, L - (W-T)]
    const fresh = g.op('Where', [tree, g.scalar(0), g.scalar(MASK_NEG)]); // [T, W]
    if (this.opts.rowExactAttention && this.attentionMode === 'split') {
      if (this.opts.treeOrder) return this.orderedTreeMask(tree, t, w, g.op('Sub', [pastLength, staged]), open, pastLength);
      // [T, L+T]: the L - (W-T) keys every row sees, then the tree over the last W (rowExactAttention).
      const mask = g.op('Concat', [open, fresh], { axis: 1 });
      this.liveRows.set(mask, pastLength);
      return mask;
    }
    const s = this.pastRows(pastValues); // [1] = S
    const unused = fill(g.op('Sub', [s, pastLength]), MASK_NEG); // [T, S - L]
    const [old, cur] = g.node('Split', [fresh, g.op('Concat', [staged, t], { axis: 0 })], { axis: 1 }, { outputs: 2 }); // [T, W-T], [T, T]
    return g.op('Concat', [open, old, unused, cur], { axis: 1 });
  }

  /**
   * treeMask with treeOrder: the mask [T, L+T] over each row's keys in position order (the
   * O = L - (W-T) open keys, then its visible tree keys in index order, then its hidden ones:
   * trailing, as in a chain), and the orders attention gathers its scores by. The order is a
   * sort of the tree's columns by (hidden, index): in a verification tree (nodes in topological
   * order) a node's visible columns are its ancestors by depth, then itself.
   */
  private orderedTreeMask(tree: string, t: string, w: string, o: string, open: string, pastLength: string): string {
    const g = this.g, int = (v: number) => g.constant('int64', [], [v]);
    const range = (n: string) => g.op('Range', [int(0), g.op('Squeeze', [n, g.ints([0])]), int(1)]); // [n] = 0..n-1
    const byIndex = range(w); // [W]
    // Sort keys: a visible column j is j, a hidden one W + j; ascending TopK indices are the order.
    const [sorted, order] = g.node('TopK', [g.op('Where', [tree, byIndex, g.op('Add', [byIndex, w])]), w], { axis: 1, largest: 0, sorted: 1 }, { outputs: 2 }); // [T, W]
    const unorder = g.node('TopK', [order, w], { axis: 1, largest: 0, sorted: 1 }, { outputs: 2 })[1]; // the inverse permutation
    const fresh = g.op('Where', [g.op('Less', [sorted, w]), g.scalar(0), g.scalar(MASK_NEG)]); // [T, W], visible first
    const openIdx = g.op('Expand', [range(o), g.op('Concat', [t, o], { axis: 0 })]); // [T, O]: the open keys stay in place
    const full = (x: string) => g.op('Concat', [openIdx, g.op('Add', [x, o])], { axis: 1 }); // [T, L+T]
    const mask = g.op('Concat', [open, fresh], { axis: 1 });
    this.liveRows.set(mask, pastLength);
    this.treeOrders.set(mask, { order: full(order), unorder: full(unorder) });
    return mask;
  }
}
