/**
 * safetensors reader and writer (https://github.com/huggingface/safetensors):
 *
 *   [u64 LE header length n][n bytes of JSON header][data section]
 *
 * The header maps tensor names to {dtype, shape, data_offsets: [begin, end]} (offsets relative to
 * the data section) plus an optional "__metadata__" string map. Everything in the header is checked
 * against the file size before anything is allocated from it, so a lying header costs nothing.
 * Tensors are read with positioned reads: only the ones asked for are loaded.
 */
import { closeSync, fstatSync } from 'node:fs';
import { resolve } from 'node:path';
import { FormatError } from '../errors.ts';
import { fileTensor, type FileRegion, type Tensor } from '../model/weights.ts';
import { writeFileAtomic } from './atomic.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './dtype.ts';
import { openForRead, readExact } from './read.ts';

/** The float dtypes eaglet reads and writes (all converted to F32 in memory). */
export type FloatDtype = 'F32' | 'F16' | 'BF16';
/**
 * Every dtype eaglet reads and writes. I64 and BOOL (EAGLE-3's `d2t` offsets and `t2d` mask) are
 * held in memory as float32 too: exact for the small integers they carry (|v| < 2^24 is checked).
 */
export type Dtype = FloatDtype | 'I64' | 'BOOL' | 'U8';
/** U8 holds packed quantized weights: read as raw bytes by readSafetensorsBytes, written from bytes (WriteSafetensorsOptions.bytes). */
const BYTES: Record<Dtype, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, BOOL: 1, U8: 1 };
/** Dtypes of the format that eaglet does not read, named so the error can say "unsupported" not "unknown". */
const OTHER_DTYPES = new Set(['F64', 'F8_E4M3', 'F8_E5M2', 'I32', 'I16', 'I8', 'U64', 'U32', 'U16']);
/** Largest integer magnitude float32 holds exactly. */
const EXACT_INT = 2 ** 24;
/** The format's own bound on the header, which keeps a lying length from allocating much. */
const MAX_HEADER_BYTES = 100_000_000;

/** One tensor's entry in the header, validated. `begin`/`end` are absolute file offsets. */
export interface TensorEntry {
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

/** A validated header: entries in file order plus the metadata map. */
export interface SafetensorsHeader {
  entries: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

/** Reads and validates the header of `path` without reading any tensor data. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const fd = openForRead(path);
  try {
    return readHeader(fd, path);
  } finally {
    closeSync(fd);
  }
}

/** Options of readSafetensors. */
export interface ReadSafetensorsOptions {
  /**
   * F32 tensors of at least this many bytes are not read: they come back as file-backed tensors
   * (fileTensor: their file region, values read only if `data` is asked for), which ORT reads
   * from the file itself. Default: none (every tensor is read).
   */
  fileBackedFrom?: number;
}

/**
 * F32 tensors of 4 KiB and more (every Linear weight and the embedding table of a real model)
 * stay in the checkpoint file: ORT reads them from there as external data, and JS reads one
 * only if something asks for its values. Smaller ones (norms, biases) are read.
 */
export const FILE_BACKED: ReadSafetensorsOptions = { fileBackedFrom: 4096 };

/**
 * Reads the tensors of `path` (those for which `want(name)` is true, default all) as F32.
 * Throws FormatError naming the file for anything malformed.
 */
export function readSafetensors(path: string, want: (name: string) => boolean = () => true, opts: ReadSafetensorsOptions = {}): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const fd = openForRead(path);
  try {
    const { entries, metadata } = readHeader(fd, path);
    const tensors = new Map<string, Tensor>();
    const abs = resolve(path), from = opts.fileBackedFrom ?? Infinity, st = fstatSync(fd);
    for (const [name, e] of entries) {
      if (!want(name)) continue;
      if (e.dtype === 'F32' && e.end - e.begin >= from) {
        tensors.set(name, fileTensor([...e.shape], { path: abs, offset: e.begin, length: e.end - e.begin, fileSize: st.size, mtimeMs: st.mtimeMs }, () => readLater(abs, e, name, st.size, st.mtimeMs, (fd) => readTensor(fd, e, name, path).data),
          (start, into) => readLater(abs, e, name, st.size, st.mtimeMs, (fd) => readExact(fd, new Uint8Array(into.buffer, into.byteOffset, into.byteLength), e.begin + 4 * start)),
        ));
      } else tensors.set(name, readTensor(fd, e, name, path));
    }
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

/** A U8 tensor's shape and raw bytes; `file`: where the bytes sit, when they were left there (then `bytes` reads them on each access). */
export interface ByteTensor {
  shape: number[];
  bytes: Uint8Array;
  file?: FileRegion;
}

/**
 * The U8 tensors of `path` for which `want(name)` is true, as raw bytes (packed quantized
 * weights). With `opts.fileBackedFrom`, tensors of at least that many bytes are not read: they
 * come with their `file` region, and `bytes` reads them from the file when asked.
 */
export function readSafetensorsBytes(path: string, want: (name: string) => boolean, opts: ReadSafetensorsOptions = {}): Map<string, ByteTensor> {
  const fd = openForRead(path);
  try {
    const out = new Map<string, ByteTensor>();
    const abs = resolve(path), from = opts.fileBackedFrom ?? Infinity, st = fstatSync(fd);
    for (const [name, e] of readHeader(fd, path).entries) {
      if (!want(name)) continue;
      if (e.dtype !== 'U8') throw new FormatError(path, `tensor ${name}: dtype ${e.dtype}, expected U8 (packed quantized weights)`);
      if (e.end - e.begin >= from) {
        const file = { path: abs, offset: e.begin, length: e.end - e.begin, fileSize: st.size, mtimeMs: st.mtimeMs };
        out.set(name, { shape: [...e.shape], file, get bytes() { return readLater(abs, e, name, st.size, st.mtimeMs, (fd) => readBytes(fd, e)); } });
        continue;
      }
      out.set(name, { shape: [...e.shape], bytes: readBytes(fd, e) });
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

function readBytes(fd: number, e: TensorEntry): Uint8Array {
  const bytes = new Uint8Array(e.end - e.begin);
  readExact(fd, bytes, e.begin);
  return bytes;
}

function readHeader(fd: number, path: string): SafetensorsHeader {
  const bad = (problem: string) => new FormatError(path, problem);
  const size = fstatSync(fd).size;
  if (size < 8) throw bad(`not a safetensors file: ${size} bytes, too short for the 8-byte header length`);
  const lenBytes = new Uint8Array(8);
  readExact(fd, lenBytes, 0);
  const n = Number(new DataView(lenBytes.buffer).getBigUint64(0, true));
  if (n > size - 8) throw bad(`header length ${n} exceeds the file size (${size} bytes): truncated or not a safetensors file`);
  if (n > MAX_HEADER_BYTES) throw bad(`header length ${n} exceeds the format's ${MAX_HEADER_BYTES}-byte limit`);
  const headerBytes = new Uint8Array(n);
  readExact(fd, headerBytes, 8);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw bad(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(json)) throw bad('header is not a JSON object');

  const dataStart = 8 + n, dataLen = size - dataStart;
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isObject(v) || Object.values(v).some((x) => typeof x !== 'string')) throw bad('__metadata__ must map strings to strings');
      metadata = v as Record<string, string>;
      continue;
    }
    if (!isObject(v)) throw bad(`tensor ${name}: header entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = v;
    if (typeof dtype !== 'string') throw bad(`tensor ${name}: missing dtype`);
    if (!(dtype in BYTES)) {
      const kind = OTHER_DTYPES.has(dtype) ? 'unsupported' : 'unknown';
      throw bad(`tensor ${name}: ${kind} dtype ${JSON.stringify(dtype)} (eaglet reads F32, F16, BF16, I64, BOOL, U8)`);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) throw bad(`tensor ${name}: shape must be a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) throw bad(`tensor ${name}: data_offsets must be two non-negative integers`);
    const [b, e] = offsets as number[];
    if (b > e || e > dataLen) throw bad(`tensor ${name}: data_offsets [${b}, ${e}] fall outside the ${dataLen}-byte data section`);
    // Product in floating point: a huge shape just fails the comparison instead of overflowing.
    const bytes = (shape as number[]).reduce((a, s) => a * s, BYTES[dtype as Dtype]);
    if (bytes !== e - b) throw bad(`tensor ${name}: shape [${shape}] of ${dtype} needs ${bytes} bytes, data_offsets give ${e - b}`);
    entries.set(name, { dtype: dtype as Dtype, shape: shape as number[], begin: dataStart + b, end: dataStart + e });
  }
  const sorted = [...entries].sort((x, y) => x[1].begin - y[1].begin);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i][1].begin < sorted[i - 1][1].end) throw bad(`tensors ${sorted[i - 1][0]} and ${sorted[i][0]} overlap in the data section`);
  }
  return { entries, metadata };
}

/** A file-backed tensor's contents, read when asked for (the file reopened: it was closed after the header). */
function readLater<T>(path: string, e: TensorEntry, name: string, size: number, mtimeMs: number, read: (fd: number) => T): T {
  const fd = openForRead(path);
  try {
    const st = fstatSync(fd);
    if (st.size !== size || st.mtimeMs !== mtimeMs) throw new FormatError(path, `tensor ${name}: the file changed since it was loaded`);
    return read(fd);
  } finally {
    closeSync(fd);
  }
}

function readTensor(fd: number, e: TensorEntry, name: string, path: string): Tensor {
  const count = (e.end - e.begin) / BYTES[e.dtype];
  const data = new Float32Array(count); // [prod(shape)]
  if (e.dtype === 'I64') {
    const raw = new BigInt64Array(count); // [prod(shape)]
    readExact(fd, new Uint8Array(raw.buffer), e.begin);
    for (let i = 0; i < count; i++) {
      const v = Number(raw[i]);
      if (!(Math.abs(v) < EXACT_INT)) throw new FormatError(path, `tensor ${name}: I64 value ${raw[i]} at index ${i} is outside the supported range (|v| < 2^24)`);
      data[i] = v;
    }
  } else if (e.dtype === 'BOOL' || e.dtype === 'U8') {
    const raw = new Uint8Array(count); // [prod(shape)]
    readExact(fd, raw, e.begin);
    for (let i = 0; i < count; i++) data[i] = e.dtype === 'U8' ? raw[i] : raw[i] ? 1 : 0;
  } else if (e.dtype === 'F32') {
    readExact(fd, new Uint8Array(data.buffer), e.begin); // little-endian host: bytes land as F32 directly
  } else {
    const raw = new Uint16Array(count); // [prod(shape)] raw half bits
    readExact(fd, new Uint8Array(raw.buffer), e.begin);
    (e.dtype === 'F16' ? f16ToF32 : bf16ToF32)(raw, data);
  }
  return { shape: [...e.shape], data };
}

/** Options of writeSafetensors. */
export interface WriteSafetensorsOptions {
  /** Storage dtype of every float tensor. Default 'F32'. */
  dtype?: FloatDtype;
  /** Per-tensor storage dtype overriding `dtype` (I64 / BOOL values must be integers / 0-1). */
  dtypes?: Record<string, Dtype>;
  /** U8 tensors given as raw bytes, written after `tensors` (packed quantized weights). */
  bytes?: Map<string, { shape: number[]; bytes: Uint8Array }>;
}

/**
 * Writes `tensors` (in map order) to `path` atomically, with optional string metadata.
 * The header is padded with spaces to a multiple of 8 bytes, as the reference writer does.
 */
export function writeSafetensors(path: string, tensors: Map<string, Tensor>, metadata?: Record<string, string>, opts: WriteSafetensorsOptions = {}): void {
  // Entries, then Object.fromEntries: defines own properties, so even a tensor named "__proto__" is kept.
  const header: [string, unknown][] = [];
  if (metadata && Object.keys(metadata).length > 0) header.push(['__metadata__', metadata]);
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    if (name === '__metadata__') throw new Error(`${path}: __metadata__ is reserved and cannot name a tensor`);
    const dtype = opts.dtypes?.[name] ?? opts.dtype ?? 'F32';
    const bytes = encode(t.data, dtype, `${path}: tensor ${name}`);
    header.push([name, { dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] }]);
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  for (const [name, { shape, bytes }] of opts.bytes ?? []) {
    if (bytes.length !== shape.reduce((a, b) => a * b, 1)) throw new Error(`${path}: tensor ${name}: ${bytes.length} bytes for U8 shape [${shape}]`);
    header.push([name, { dtype: 'U8', shape, data_offsets: [offset, offset + bytes.byteLength] }]);
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(Object.fromEntries(header));
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const jsonBytes = Buffer.from(json, 'utf8');
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(jsonBytes.byteLength), true);
  writeFileAtomic(path, [len, jsonBytes, ...chunks]);
}

function encode(data: Float32Array, dtype: Dtype, what: string): Uint8Array {
  if (dtype === 'U8') throw new Error(`${what}: U8 tensors are written from bytes (WriteSafetensorsOptions.bytes)`);
  if (dtype === 'I64' || dtype === 'BOOL') {
    const out = dtype === 'I64' ? new BigInt64Array(data.length) : new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (dtype === 'I64' ? !Number.isInteger(v) : v !== 0 && v !== 1) throw new Error(`${what}: value ${v} at index ${i} is not ${dtype === 'I64' ? 'an integer' : '0 or 1'}`);
      if (out instanceof BigInt64Array) out[i] = BigInt(v);
      else out[i] = v;
    }
    return new Uint8Array(out.buffer);
  }
  if (dtype === 'F32') return new Uint8Array(data.buffer, data.byteOffset, data.byteLength); // zero-copy view
  const out = new Uint16Array(data.length);
  (dtype === 'F16' ? f32ToF16 : f32ToBf16)(data, out);
  return new Uint8Array(out.buffer);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}
