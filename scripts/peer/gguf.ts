/**
 * A GGUF v3 writer (the file format of llama.cpp) and ggml's Q8_0 / Q4_0 weight blocks: enough to
 * hand llama.cpp (here through node-llama-cpp) a model eaglet made.
 *
 * File layout (little-endian):
 *   "GGUF"  u32 version 3  u64 tensor_count  u64 kv_count
 *   kv_count x (string key, u32 value_type, value)       string = u64 byte length + UTF-8
 *   tensor_count x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
 *   zero padding to `general.alignment` (32), then each tensor's data at its offset (relative to
 *   the data start, a multiple of the alignment).
 * ne[0] is the innermost (contiguous) dimension: a row-major [rows, cols] array is ne = [cols, rows].
 *
 * Quantized blocks run along ne[0], 32 values each:
 *   Q8_0  fp16 d = amax / 127, then 32 int8 q = round(x / d)                      (34 bytes)
 *   Q4_0  fp16 d = m / -8 (m: the signed value of largest magnitude), then 16 bytes: value j in
 *         the low nibble of byte j, value 16 + j in its high nibble, q = min(15, trunc(x / d + 8.5))
 *         and x ~ (q - 8) d                                                        (18 bytes)
 * Both round the way ggml's reference quantizers do (float32 arithmetic, d rounded to fp16 only
 * when stored), so the bytes match what llama.cpp's own tools would write for the same values.
 */
import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { f16ToF32, f32ToF16 } from '../../src/io/dtype.ts';

/** GGUF metadata value types (gguf_type). */
export const GgufType = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 } as const;

/** The ggml tensor types this writer produces, with their ggml_type ids and block shapes. */
export const GGML_TYPES = {
  F32: { id: 0, blockValues: 1, blockBytes: 4 },
  Q4_0: { id: 2, blockValues: 32, blockBytes: 18 },
  Q8_0: { id: 8, blockValues: 32, blockBytes: 34 },
} as const;
export type GgmlTypeName = keyof typeof GGML_TYPES;

export const GGUF_VERSION = 3;
export const GGUF_ALIGNMENT = 32;

/** One metadata value: a scalar of a GGUF type, or a typed array. */
export type GgufValue =
  | { type: 'u32' | 'i32' | 'u64' | 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'string[]'; value: string[] }
  | { type: 'f32[]'; value: Float32Array }
  | { type: 'i32[]'; value: Int32Array };

export const u32 = (value: number): GgufValue => ({ type: 'u32', value });
export const f32 = (value: number): GgufValue => ({ type: 'f32', value });
export const str = (value: string): GgufValue => ({ type: 'string', value });
export const bool = (value: boolean): GgufValue => ({ type: 'bool', value });

/** A tensor to write: `shape` row-major as in numpy / safetensors (written reversed as ne). */
export interface GgufTensor {
  name: string;
  shape: number[];
  type: GgmlTypeName;
  /** The F32 values, produced when the tensor is written (so a writer can stream large models). */
  data: () => Float32Array;
}

/** Grows a byte buffer of little-endian fields. */
class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u32(v: number): void { this.room(4); this.view.setUint32(this.length, v, true); this.length += 4; }
  i32(v: number): void { this.room(4); this.view.setInt32(this.length, v, true); this.length += 4; }
  u64(v: number): void { this.room(8); this.view.setBigUint64(this.length, BigInt(v), true); this.length += 8; }
  f32(v: number): void { this.room(4); this.view.setFloat32(this.length, v, true); this.length += 4; }
  u8(v: number): void { this.room(1); this.buf[this.length++] = v; }
  bytes(b: Uint8Array): void { this.room(b.length); this.buf.set(b, this.length); this.length += b.length; }
  string(s: string): void { const b = new TextEncoder().encode(s); this.u64(b.length); this.bytes(b); }
  pad(alignment: number): void { while (this.length % alignment) this.u8(0); }
  result(): Uint8Array { return this.buf.subarray(0, this.length); }
}

function writeValue(w: ByteWriter, key: string, v: GgufValue): void {
  w.string(key);
  switch (v.type) {
    case 'u32': w.u32(GgufType.UINT32); w.u32(v.value); break;
    case 'i32': w.u32(GgufType.INT32); w.i32(v.value); break;
    case 'u64': w.u32(GgufType.UINT64); w.u64(v.value); break;
    case 'f32': w.u32(GgufType.FLOAT32); w.f32(v.value); break;
    case 'bool': w.u32(GgufType.BOOL); w.u8(v.value ? 1 : 0); break;
    case 'string': w.u32(GgufType.STRING); w.string(v.value); break;
    case 'string[]': w.u32(GgufType.ARRAY); w.u32(GgufType.STRING); w.u64(v.value.length); for (const s of v.value) w.string(s); break;
    case 'f32[]': w.u32(GgufType.ARRAY); w.u32(GgufType.FLOAT32); w.u64(v.value.length); for (const x of v.value) w.f32(x); break;
    case 'i32[]': w.u32(GgufType.ARRAY); w.u32(GgufType.INT32); w.u64(v.value.length); for (const x of v.value) w.i32(x); break;
  }
}

/** Bytes a tensor of `shape` takes as `type`; throws when its rows do not split into whole blocks. */
export function tensorBytes(name: string, shape: number[], type: GgmlTypeName): number {
  const t = GGML_TYPES[type], inner = shape[shape.length - 1], count = shape.reduce((a, b) => a * b, 1);
  if (inner % t.blockValues !== 0) throw new Error(`${name}: rows of ${inner} values do not split into ${type} blocks of ${t.blockValues}`);
  return (count / t.blockValues) * t.blockBytes;
}

/** The GGUF header, metadata and tensor infos, padded to the alignment: everything before the data. */
export function ggufHeader(meta: Record<string, GgufValue>, tensors: Omit<GgufTensor, 'data'>[]): Uint8Array {
  const w = new ByteWriter();
  const entries = Object.entries({ 'general.alignment': u32(GGUF_ALIGNMENT), ...meta });
  w.bytes(new TextEncoder().encode('GGUF'));
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  w.u64(entries.length);
  for (const [k, v] of entries) writeValue(w, k, v);
  let offset = 0;
  for (const t of tensors) {
    w.string(t.name);
    w.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) w.u64(d);
    w.u32(GGML_TYPES[t.type].id);
    w.u64(offset);
    offset += tensorBytes(t.name, t.shape, t.type);
    offset = Math.ceil(offset / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
  }
  w.pad(GGUF_ALIGNMENT);
  return w.result();
}

/** `values` (whole rows) encoded as `type`. */
export function encodeTensor(values: Float32Array, type: GgmlTypeName): Uint8Array {
  if (type === 'F32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const t = GGML_TYPES[type], blocks = values.length / t.blockValues;
  if (!Number.isInteger(blocks)) throw new Error(`${values.length} values do not split into ${type} blocks of ${t.blockValues}`);
  const out = new Uint8Array(blocks * t.blockBytes);
  const quant = type === 'Q8_0' ? quantizeBlockQ8_0 : quantizeBlockQ4_0;
  for (let b = 0; b < blocks; b++) quant(values.subarray(b * 32, b * 32 + 32), out.subarray(b * t.blockBytes, (b + 1) * t.blockBytes));
  return out;
}

/**
 * Writes a GGUF v3 file: `meta` (general.alignment is added), then `tensors` in order, each
 * produced, encoded and written one at a time. Written to a temporary name and renamed, so a
 * crash never leaves a partial file at `path`.
 */
export function writeGguf(path: string, meta: Record<string, GgufValue>, tensors: GgufTensor[]): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    const header = ggufHeader(meta, tensors);
    writeSync(fd, header);
    const zeros = new Uint8Array(GGUF_ALIGNMENT);
    for (const t of tensors) {
      const values = t.data();
      const count = t.shape.reduce((a, b) => a * b, 1);
      if (values.length !== count) throw new Error(`${t.name}: ${values.length} values for shape [${t.shape}]`);
      const bytes = encodeTensor(values, t.type);
      writeSync(fd, bytes);
      const pad = (GGUF_ALIGNMENT - (bytes.length % GGUF_ALIGNMENT)) % GGUF_ALIGNMENT;
      if (pad) writeSync(fd, zeros, 0, pad);
    }
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
}

// One-value fp16 conversions through dtype.ts's array forms.
const one32 = new Float32Array(1), one16 = new Uint16Array(1);
function toF16Bits(x: number): number {
  one32[0] = x;
  f32ToF16(one32, one16);
  return one16[0];
}
/** The F32 value of fp16 bits `h`. */
export function f16Value(h: number): number {
  one16[0] = h;
  f16ToF32(one16, one32);
  return one32[0];
}

/** ggml's quantize_row_q8_0_ref on one block of 32 values into 34 bytes. */
export function quantizeBlockQ8_0(x: Float32Array, out: Uint8Array): void {
  let amax = 0;
  for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[j]));
  const d = Math.fround(amax / 127), id = d ? Math.fround(1 / d) : 0;
  const h = toF16Bits(d);
  out[0] = h & 0xff;
  out[1] = h >> 8;
  for (let j = 0; j < 32; j++) {
    const v = Math.fround(x[j] * id);
    out[2 + j] = (Math.sign(v) * Math.round(Math.abs(v))) & 0xff; // roundf: halves away from zero
  }
}

/** ggml's quantize_row_q4_0_ref on one block of 32 values into 18 bytes. */
export function quantizeBlockQ4_0(x: Float32Array, out: Uint8Array): void {
  let amax = 0, max = 0;
  for (let j = 0; j < 32; j++) {
    if (amax < Math.abs(x[j])) {
      amax = Math.abs(x[j]);
      max = x[j];
    }
  }
  const d = Math.fround(max / -8), id = d ? Math.fround(1 / d) : 0;
  const h = toF16Bits(d);
  out[0] = h & 0xff;
  out[1] = h >> 8;
  // x * id lies in [-8, 8], so x * id + 8.5 >= 0.5 and truncation is floor.
  const q = (v: number) => Math.min(15, Math.trunc(Math.fround(Math.fround(v * id) + 8.5)));
  for (let j = 0; j < 16; j++) out[2 + j] = q(x[j]) | (q(x[16 + j]) << 4);
}
