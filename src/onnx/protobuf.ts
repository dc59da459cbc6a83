/**
 * A minimal protobuf *writer*: just what ONNX ModelProto needs (varints, fixed32 floats,
 * length-delimited strings/bytes/messages). No reader: eaglet only ever writes models.
 *
 * A message is kept as a list of byte chunks with a running length, so nesting a message or
 * adding a large weight's raw bytes never copies them; `finish()` copies everything once into
 * the final buffer.
 */

const WIRE_VARINT = 0;
const WIRE_FIXED32 = 5;
const WIRE_LEN = 2;

const utf8 = new TextEncoder();

export class ProtoWriter {
  private chunks: Uint8Array[] = [];
  /** Encoded size in bytes so far. */
  length = 0;

  /** Small scratch for tags and varints; flushed into `chunks` when full or before raw bytes. */
  private scratch = new Uint8Array(256);
  private used = 0;

  private byte(b: number): void {
    if (this.used === this.scratch.length) this.flush();
    this.scratch[this.used++] = b;
    this.length++;
  }

  private flush(): void {
    if (this.used === 0) return;
    this.chunks.push(this.scratch.slice(0, this.used));
    this.used = 0;
  }

  /** Unsigned or non-negative varint; negative int64s take the 10-byte two's-complement form. */
  private varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    if (x < 0x80n) return this.byte(Number(x)); // the common case, without a loop
    while (x >= 0x80n) {
      this.byte(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.byte(Number(x));
  }

  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  private raw(bytes: Uint8Array): void {
    this.flush();
    this.chunks.push(bytes);
    this.length += bytes.length;
  }

  /** int32 / int64 / enum / bool field (varint wire type). */
  int(field: number, v: number | bigint): this {
    this.tag(field, WIRE_VARINT);
    this.varint(v);
    return this;
  }

  /** float field (fixed32). */
  float(field: number, v: number): this {
    this.tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    for (const x of b) this.byte(x);
    return this;
  }

  /** Packed repeated int64 (proto3 default for repeated scalars; proto2 parsers accept it too). */
  packedInts(field: number, vs: ArrayLike<number>): this {
    const inner = new ProtoWriter();
    for (let i = 0; i < vs.length; i++) inner.varint(vs[i]);
    return this.message(field, inner);
  }

  string(field: number, s: string): this {
    return this.bytes(field, utf8.encode(s));
  }

  /** Length-delimited bytes; `b` is referenced, not copied, until `finish()`. */
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    this.varint(b.length);
    this.raw(b);
    return this;
  }

  /** Embedded message. `m` must not be written to afterwards. */
  message(field: number, m: ProtoWriter): this {
    m.flush();
    this.tag(field, WIRE_LEN);
    this.varint(m.length);
    this.flush();
    for (const c of m.chunks) this.chunks.push(c);
    this.length += m.length;
    return this;
  }

  /** The encoded message as one buffer. */
  finish(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.length);
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}
