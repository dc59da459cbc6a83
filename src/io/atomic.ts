/**
 * Atomic file writes: write `path.tmp-<pid>` then rename over `path`, so a crash or an error
 * mid-write never leaves a half-written file at `path` (rename is atomic on one filesystem).
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';

/** Bytes or text to write; a list of chunks is written in order without concatenating. */
export type FileData = string | Uint8Array | readonly Uint8Array[];

/** Writes `data` to `path` atomically; on failure the temporary file is removed and the error rethrown. */
export function writeFileAtomic(path: string, data: FileData): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const chunks = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  let fd = -1;
  try {
    fd = openSync(tmp, 'w');
    for (const chunk of chunks) {
      // writeSync may write less than asked for large chunks; loop until the chunk is done.
      for (let off = 0; off < chunk.byteLength; ) off += writeSync(fd, chunk, off, chunk.byteLength - off);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
}
