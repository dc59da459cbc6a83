/**
 * An ONNX graph builder over the protobuf writer: values are names (strings), nodes are added
 * in topological order, weights become initializers with raw little-endian data, and
 * `toModel()` encodes a ModelProto. Only the slice of ONNX that eaglet emits is covered.
 *
 * Field numbers follow onnx/onnx.proto (stable since IR version 3).
 */
import { endianness } from 'node:os';
import { basename, dirname } from 'node:path';
import type { FileRegion } from '../model/weights.ts';
import { ProtoWriter } from './protobuf.ts';

/** uint4: two values per byte, the first in the low nibble (ONNX's packing); data holds the packed bytes. */
export type DType = 'float32' | 'int32' | 'int64' | 'bool' | 'uint8' | 'uint4';
/** A dimension: a number, or a symbolic name such as 'T' for sizes known at run time. */
export type Dim = number | string;

/** Typed-array storage per dtype (bool as one byte per element, as ONNX raw_data wants). */
export type TypedData = Float32Array | Int32Array | BigInt64Array | Uint8Array;

/** Attribute values: number = int, number[] = ints, { float } = float, string, or a tensor. */
export type Attr = number | number[] | { float: number } | string | { tensor: ConstTensor };

export interface ConstTensor {
  dtype: DType;
  dims: number[];
  /** The values (read only when embedded in the protobuf or without `file`). */
  data: TypedData;
  /** The same bytes in a file: toExternalModel points ORT there instead of at `data`. */
  file?: FileRegion;
}

const DTYPE_CODE: Record<DType, number> = { float32: 1, uint8: 2, int32: 6, int64: 7, bool: 9, uint4: 21 };

// Attribute type codes (AttributeProto.AttributeType).
const ATTR_FLOAT = 1, ATTR_INT = 2, ATTR_STRING = 3, ATTR_TENSOR = 4, ATTR_INTS = 7;

if (endianness() !== 'LE') throw new Error('eaglet writes ONNX raw_data from typed arrays and needs a little-endian host');

function bytesOf(d: TypedData): Uint8Array {
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

function tensorProto(name: string, t: ConstTensor, external?: { location: string; offset: number; length: number }): ProtoWriter {
  const w = new ProtoWriter().packedInts(1, t.dims).int(2, DTYPE_CODE[t.dtype]);
  if (name) w.string(8, name);
  if (!external) return w.bytes(9, bytesOf(t.data));
  // TensorProto.external_data (13): location/offset/length entries; data_location (14) = EXTERNAL.
  const entry = (k: string, v: string) => new ProtoWriter().string(1, k).string(2, v);
  w.message(13, entry('location', external.location)).message(13, entry('offset', String(external.offset))).message(13, entry('length', String(external.length)));
  return w.int(14, 1);
}

/** One external data "file" of a model: the bytes ORT reads initializers from, by `path`. */
export interface ExternalData {
  path: string;
  data: Uint8Array;
}

/** A model whose large initializers live outside the protobuf (ONNX external data). */
export interface ExternalModel {
  /** The ModelProto without the large weights: small, whatever the model size. */
  bytes: Uint8Array;
  /** The buffers the in-memory weights are read from: each distinct ArrayBuffer of a weight, whole. */
  external: ExternalData[];
  /** The directory of the files file-backed weights are read from (by file name), if any. */
  folder?: string;
  /** Each such file, as it was when its tensors' offsets were read. */
  files: FileRegion[];
}

function valueInfo(name: string, dtype: DType, dims: Dim[]): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of dims) shape.message(1, typeof d === 'number' ? new ProtoWriter().int(1, d) : new ProtoWriter().string(2, d));
  const tensorType = new ProtoWriter().int(1, DTYPE_CODE[dtype]).message(2, shape);
  return new ProtoWriter().string(1, name).message(2, new ProtoWriter().message(1, tensorType));
}

function attribute(name: string, v: Attr): ProtoWriter {
  const w = new ProtoWriter().string(1, name);
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: ${v} is not an integer; use { float: ${v} }`);
    return w.int(3, v).int(20, ATTR_INT);
  }
  if (typeof v === 'string') return w.string(4, v).int(20, ATTR_STRING);
  if (Array.isArray(v)) return w.packedInts(8, v).int(20, ATTR_INTS);
  if ('float' in v) return w.float(2, v.float).int(20, ATTR_FLOAT);
  return w.message(5, tensorProto('', v.tensor)).int(20, ATTR_TENSOR);
}

export interface ModelOptions {
  /** Default-domain opset. */
  opset: number;
  irVersion: number;
}

/** Builds one ONNX graph. Value names are unique within the builder. */
export class GraphBuilder {
  /** Nodes in order; a slot (see `reserve`) holds the nodes filled into it later. */
  private nodes: (ProtoWriter | ProtoWriter[])[] = [];
  /** Where `node` appends: the node list, or a reserved slot while it is being filled. */
  private sink: (ProtoWriter | ProtoWriter[])[] = this.nodes;
  /** Run once before the model is encoded (see `onFinish`). */
  private finishers: (() => void)[] = [];
  private finished = false;
  private inits: { name: string; t: ConstTensor }[] = [];
  /** Every value some node reads: initializers outside it are left out of the model. */
  private read = new Set<string>();
  /** Non-default domains used (e.g. com.microsoft contrib ops), each imported at opset 1. */
  private domains = new Set<string>();
  private inputs: ProtoWriter[] = [];
  private outputs: ProtoWriter[] = [];
  private counter = 0;
  private constCache = new Map<string, string>();

  constructor(readonly name: string) {}

  private fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  /** A fresh value name, for a value a reserved slot's nodes will produce. */
  freshValue(prefix: string): string {
    return this.fresh(prefix);
  }

  /**
   * Reserves the current position in the node order: `fill(slot, build)` later puts the nodes
   * `build` adds there. A renderer that learns only later how to compute some values (e.g.
   * several Linear layers over one input, fused into one node) names them now and fills the
   * slot before encoding; the slot's nodes may read only values defined before the slot.
   */
  reserve(): ProtoWriter[] {
    const slot: ProtoWriter[] = [];
    this.sink.push(slot);
    return slot;
  }

  /** Adds the nodes `build` creates to `slot` (from `reserve`). */
  fill(slot: ProtoWriter[], build: () => void): void {
    const sink = this.sink;
    this.sink = slot;
    try {
      build();
    } finally {
      this.sink = sink;
    }
  }

  /** Runs `f` once, just before the model is first encoded (to fill reserved slots). */
  onFinish(f: () => void): void {
    this.finishers.push(f);
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    for (const f of this.finishers) f();
  }

  /** Declares a graph input. */
  input(name: string, dtype: DType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, dtype, dims));
    return name;
  }

  /** Declares `value` as the graph output `name` (adding an Identity when the names differ). */
  output(value: string, name: string, dtype: DType, dims: Dim[]): void {
    if (value !== name) this.node('Identity', [value], {}, { outputs: [name] });
    this.outputs.push(valueInfo(name, dtype, dims));
  }

  /** A named initializer (a weight). The data is referenced, not copied, until `toModel()`. */
  initializer(name: string, t: ConstTensor): string {
    this.inits.push({ name, t });
    return name;
  }

  /** A small float32 or int64 constant, shared between identical requests. */
  constant(dtype: 'float32' | 'int64', dims: number[], values: ArrayLike<number>): string {
    const key = `${dtype}[${dims}]${Array.from(values).join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const data = dtype === 'float32' ? Float32Array.from(values) : BigInt64Array.from(Array.from(values), (v) => BigInt(v));
    const name = this.initializer(this.fresh('const'), { dtype, dims, data });
    this.constCache.set(key, name);
    return name;
  }

  /** int64 1-D constant, the usual shape/axes argument. */
  ints(values: number[]): string {
    return this.constant('int64', [values.length], values);
  }

  /** float32 scalar constant. */
  scalar(v: number): string {
    return this.constant('float32', [], [v]);
  }

  /**
   * Adds a node and returns its output names. `outputs` is a count (auto names) or explicit
   * names; an empty input name marks an omitted optional input.
   */
  node(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, opts: { outputs?: number | string[]; domain?: string } = {}): string[] {
    const outs = Array.isArray(opts.outputs) ? opts.outputs : Array.from({ length: opts.outputs ?? 1 }, () => this.fresh(opType));
    const w = new ProtoWriter();
    for (const i of inputs) (w.string(1, i), this.read.add(i));
    for (const o of outs) w.string(2, o);
    w.string(3, this.fresh(`n_${opType}`)).string(4, opType);
    for (const [k, v] of Object.entries(attrs)) w.message(5, attribute(k, v));
    if (opts.domain) (w.string(7, opts.domain), this.domains.add(opts.domain));
    this.sink.push(w);
    return outs;
  }

  /** Single-output node. */
  op(opType: string, inputs: string[], attrs: Record<string, Attr> = {}): string {
    return this.node(opType, inputs, attrs)[0];
  }

  /** Encodes the whole model, weights embedded (one protobuf: at most 2 GB). */
  toModel(o: ModelOptions): Uint8Array {
    this.finish();
    return this.encode(o, this.usedInits().map(({ name, t }) => tensorProto(name, t)));
  }

  /**
   * Encodes the model with every initializer of at least `minBytes` as ONNX external data,
   * copying no weight, so the protobuf stays small and models over protobuf's 2 GB limit load:
   *
   * - initializers with a file region point into that file (location = its name; all such
   *   files must share one directory, `folder`);
   * - the others point into the buffer that already holds them (location = one name per
   *   distinct ArrayBuffer, offset = the view's byteOffset).
   *
   * ORT takes external data from in-memory buffers or from files, not both in one session. So
   * when some weights are file-backed, the in-memory ones are embedded in the protobuf instead
   * (a draft head, weights quantized at load: small next to the target), up to
   * `maxEmbeddedBytes`; past that the file-backed ones are read into memory too (their `data`).
   */
  toExternalModel(o: ModelOptions, minBytes = 4096, maxEmbeddedBytes = 2 ** 30): ExternalModel {
    this.finish();
    const inits = this.usedInits();
    const fromFile = (t: ConstTensor) => t.file !== undefined && t.file.length >= minBytes;
    const inMemoryBytes = inits.reduce((a, { t }) => (fromFile(t) || t.data.byteLength < minBytes ? a : a + t.data.byteLength), 0);
    const useFiles = inits.some(({ t }) => fromFile(t)) && inMemoryBytes <= maxEmbeddedBytes;
    const buffers = new Map<ArrayBufferLike, ExternalData>();
    const files = new Map<string, FileRegion>();
    let folder: string | undefined;
    const protos = inits.map(({ name, t }) => {
      const f = t.file;
      if (useFiles && f && fromFile(t)) {
        if (folder !== undefined && dirname(f.path) !== folder) throw new Error(`weights come from two directories (${folder}, ${dirname(f.path)}); ORT reads external data from one`);
        folder = dirname(f.path);
        files.set(f.path, f);
        return tensorProto(name, t, { location: basename(f.path), offset: f.offset, length: f.length });
      }
      if (useFiles || t.data.byteLength < minBytes) return tensorProto(name, t);
      let b = buffers.get(t.data.buffer);
      if (!b) buffers.set(t.data.buffer, (b = { path: `weights_${buffers.size}.bin`, data: new Uint8Array(t.data.buffer) }));
      return tensorProto(name, t, { location: b.path, offset: t.data.byteOffset, length: t.data.byteLength });
    });
    return { bytes: this.encode(o, protos), external: [...buffers.values()], folder, files: [...files.values()] };
  }

  /** The initializers some node reads: unused ones (e.g. an LM head a reduced head replaces) are left out. */
  private usedInits(): { name: string; t: ConstTensor }[] {
    return this.inits.filter(({ name }) => this.read.has(name));
  }

  private encode(o: ModelOptions, inits: ProtoWriter[]): Uint8Array {
    const g = new ProtoWriter();
    for (const n of this.nodes.flat()) g.message(1, n);
    g.string(2, this.name);
    for (const t of inits) g.message(5, t);
    for (const i of this.inputs) g.message(11, i);
    for (const out of this.outputs) g.message(12, out);
    const m = new ProtoWriter().int(1, o.irVersion).string(2, 'eaglet').message(7, g);
    m.message(8, new ProtoWriter().string(1, '').int(2, o.opset));
    for (const d of this.domains) m.message(8, new ProtoWriter().string(1, d).int(2, 1));
    return m.finish();
  }
}
