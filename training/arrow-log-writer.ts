/**
 * What every Arrow log writer (feature logs, round logs) shares: an IPC stream written to
 * `<path>.tmp-<pid>` and moved into place, after its JSON sidecar, only by `finish`, so a
 * crash or `abort` never leaves a partial log under the final name; and the column helpers
 * their schemas and record batches are built with.
 */
import { createWriteStream, mkdirSync, renameSync, rmSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { Field, FixedSizeList, makeData, RecordBatch, RecordBatchStreamWriter, Struct, type Data, type DataType, type Schema } from 'apache-arrow';
import { writeFileAtomic } from '../src/io/atomic.ts';

export class ArrowLogWriter {
  private readonly writer = new RecordBatchStreamWriter();
  private readonly tmpPath: string;
  private readonly sink: WriteStream;
  private readonly source: Readable;

  /** @param path final path of the log (written only by `finish`); its folder is made. */
  constructor(readonly path: string) {
    this.tmpPath = `${path}.tmp-${process.pid}`;
    mkdirSync(dirname(path), { recursive: true }); // like every other output: its folder is made
    this.sink = createWriteStream(this.tmpPath);
    this.source = this.writer.toNodeStream();
    this.source.pipe(this.sink);
  }

  /** Writes a record batch of `n` rows from `columns` (one per schema field), then waits for the file stream to drain (keeps memory bounded). */
  async write(schema: Schema, n: number, columns: Data[]): Promise<void> {
    this.writer.write(new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: n, children: columns })));
    // Let the pipe move the queued bytes into the file stream, then respect its backpressure.
    await new Promise((resolve) => setImmediate(resolve));
    if (this.sink.writableNeedDrain) await once(this.sink, 'drain');
  }

  /** Ends the stream, writes `sidecar` as JSON to `sidecarPath`, then renames the log into place. */
  async finish(sidecarPath: string, sidecar: unknown): Promise<void> {
    this.writer.finish();
    await finished(this.sink);
    writeFileAtomic(sidecarPath, JSON.stringify(sidecar, null, 2) + '\n');
    renameSync(this.tmpPath, this.path);
  }

  /** Drops the partial file. */
  async abort(): Promise<void> {
    this.source.unpipe(this.sink);
    this.source.destroy();
    this.sink.destroy();
    await finished(this.sink).catch(() => undefined); // a destroyed stream reports a premature close
    rmSync(this.tmpPath, { force: true });
  }
}

/** A non-nullable column of `width` values of `type` per row (an Arrow FixedSizeList). */
export function listField(name: string, type: DataType, width: number): Field {
  return new Field(name, new FixedSizeList(width, new Field('item', type, false)), false);
}

/**
 * Column `field` of `n` rows over the first values of `values` (a view, not a copy: the IPC
 * writer queues it, so the caller hands over fresh buffers per batch). A FixedSizeList column
 * takes its width's values per row.
 */
export function columnData(field: Field, n: number, values: Int32Array | Float32Array): Data {
  const type = field.type;
  if (!(type instanceof FixedSizeList)) return makeData({ type, length: n, data: values.subarray(0, n) });
  const w = type.listSize;
  return makeData({ type, length: n, child: makeData({ type: type.children[0].type, length: n * w, data: values.subarray(0, n * w) }) });
}
