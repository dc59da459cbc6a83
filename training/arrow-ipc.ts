/**
 * A guard in front of apache-arrow's IPC reader. apache-arrow trusts the lengths in message
 * headers: a flipped byte in a flatbuffer vector length makes it loop and allocate millions of
 * objects. Checking every header length against the file first turns such a file into a clear
 * FormatError. Used by every reader of eaglet's Arrow logs (feature logs, round logs).
 */
import { closeSync, fstatSync } from 'node:fs';
import { Field as FbField } from 'apache-arrow/fb/field';
import { Message as FbMessage } from 'apache-arrow/fb/message';
import { MessageHeader } from 'apache-arrow/fb/message-header';
import { RecordBatch as FbRecordBatch } from 'apache-arrow/fb/record-batch';
import { Schema as FbSchema } from 'apache-arrow/fb/schema';
import { ByteBuffer } from 'flatbuffers';
import { FormatError } from '../src/errors.ts';
import { openForRead, readExact } from '../src/io/read.ts';

/** Message metadata larger than this is not something our writer (or any sane one) produces. */
const MAX_METADATA_BYTES = 1 << 20;

/**
 * Walks the IPC stream's message headers (not the bodies) and checks every length in them
 * against the file and the metadata buffer. apache-arrow trusts these lengths: a flipped byte
 * in a flatbuffer vector length makes it loop and allocate millions of objects, so a lying
 * header must fail here, before the library sees it.
 */
export function checkIpcHeaders(path: string): void {
  ipcMessages(path);
}

/** One message of an IPC stream: where it starts (its continuation marker) and its size with the body. */
export interface IpcMessage {
  offset: number;
  bytes: number;
  type: 'schema' | 'record-batch';
}

/**
 * The stream's messages in file order, every header checked as `checkIpcHeaders` describes: the
 * byte ranges a reader needs to decode any record batch on its own (after the schema message).
 */
export function ipcMessages(path: string): IpcMessage[] {
  const fd = openForRead(path);
  const messages: IpcMessage[] = [];
  try {
    const size = fstatSync(fd).size, word = new DataView(new ArrayBuffer(4));
    const int32At = (pos: number): number => (readExact(fd, new Uint8Array(word.buffer), pos), word.getInt32(0, true));
    for (let pos = 0, index = 0; pos < size; index++) {
      const start = pos;
      const bad = (problem: string) => new FormatError(path, `not an Arrow IPC stream: message ${index} at byte ${pos}: ${problem}`);
      if (pos + 4 > size) throw bad('truncated');
      let len = int32At(pos);
      if (len === -1) { // continuation marker, then the length
        if (pos + 8 > size) throw bad('truncated');
        len = int32At((pos += 4));
      }
      pos += 4;
      if (len === 0) return messages; // end-of-stream marker
      if (len < 0 || len > size - pos) throw bad(`metadata length ${len} runs past the end of the ${size}-byte file`);
      if (len > MAX_METADATA_BYTES) throw bad(`metadata length ${len} is implausibly large`);
      const meta = new Uint8Array(len);
      readExact(fd, meta, pos);
      const problem = metadataProblem(meta);
      if (typeof problem === 'string') throw bad(problem);
      pos += len;
      if (problem > size - pos) throw bad(`body length ${problem} runs past the end of the ${size}-byte file`);
      pos += problem;
      const type = FbMessage.getRootAsMessage(new ByteBuffer(meta)).headerType() === MessageHeader.Schema ? 'schema' : 'record-batch';
      messages.push({ offset: start, bytes: pos - start, type });
    }
    return messages;
  } finally {
    closeSync(fd);
  }
}

/** The body length of one message's flatbuffer metadata, or what is wrong with it. */
function metadataProblem(meta: Uint8Array): number | string {
  const bb = new ByteBuffer(meta), cap = meta.length;
  if (cap < 8 || bb.readInt32(0) + 4 > cap) return 'metadata is not a flatbuffer';
  const msg = FbMessage.getRootAsMessage(bb);
  const body = Number(msg.bodyLength());
  if (!Number.isSafeInteger(body) || body < 0) return `body length ${body} is negative or too large`;
  if (msg.customMetadataLength() * 4 > cap) return 'custom metadata count exceeds the metadata size';
  const type = msg.headerType();
  if (type === MessageHeader.Schema) {
    const schema = msg.header(new FbSchema()) as FbSchema | null;
    if (!schema) return 'schema message without a schema';
    if (schema.customMetadataLength() * 4 > cap || schema.featuresLength() * 8 > cap) return 'schema counts exceed the metadata size';
    // Every field table takes at least 4 bytes, so a schema cannot hold more than cap / 4 of them (offsets may form cycles: count visits).
    let budget = cap / 4;
    const fieldsOk = (n: number, get: (i: number) => FbField | null, depth: number): boolean => {
      if (n * 4 > cap || depth > 8) return false;
      for (let i = 0; i < n; i++) {
        const f = get(i);
        if (!f) continue;
        if (--budget < 0 || f.customMetadataLength() * 4 > cap || !fieldsOk(f.childrenLength(), (j) => f.children(j), depth + 1)) return false;
      }
      return true;
    };
    if (!fieldsOk(schema.fieldsLength(), (i) => schema.fields(i), 0)) return 'schema field lists exceed the metadata size';
  } else if (type === MessageHeader.RecordBatch) {
    const batch = msg.header(new FbRecordBatch()) as FbRecordBatch | null;
    if (!batch) return 'record batch message without a header';
    if (batch.nodesLength() * 16 > cap || batch.buffersLength() * 16 > cap || batch.variadicBufferCountsLength() * 8 > cap) return 'record batch counts exceed the metadata size';
  } else {
    return `unexpected message type ${MessageHeader[type] ?? type} (an eaglet log holds a schema and record batches)`;
  }
  return body;
}

