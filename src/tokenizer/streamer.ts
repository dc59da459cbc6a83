/**
 * Incremental detokenization: ids arrive a few at a time (a speculative round accepts several),
 * text leaves as soon as it is stable. Decoding token by token breaks multi-byte characters split
 * across byte tokens and loses context-dependent spaces, so the streamer decodes a small window
 * twice, with and without the new ids, and emits the difference (the scheme of HF's
 * text-generation-inference). While the window ends in U+FFFD a character is still incomplete,
 * and nothing is emitted until more ids (or flush) arrive.
 */
import type { Tokenizer } from './tokenizer.ts';

/** Ids in (`push`), stable text out; `flush` returns what is left at the end. */
export class TextStreamer {
  private ids: number[] = [];
  /** Start of the context window: ids before it are already emitted and no longer decoded. */
  private prefixOffset = 0;
  /** End of the emitted part: ids from here on have not produced text yet. */
  private readOffset = 0;

  constructor(private readonly tokenizer: Tokenizer) {}

  /** Adds ids; returns the newly stable text (possibly ''). */
  push(ids: number | readonly number[]): string {
    if (typeof ids === 'number') this.ids.push(ids);
    else this.ids.push(...ids);
    const [prefix, full] = this.window();
    if (full.length <= prefix.length || full.endsWith('\uFFFD')) return '';
    // The old new ids become the next context; anything before them is done with.
    this.ids.splice(0, this.readOffset);
    this.prefixOffset = 0;
    this.readOffset = this.ids.length;
    return full.slice(prefix.length);
  }

  /** Emits whatever is left, incomplete characters included, and starts over. */
  flush(): string {
    const [prefix, full] = this.window();
    this.ids = [];
    this.prefixOffset = this.readOffset = 0;
    return full.slice(prefix.length);
  }

  /** [decode(context), decode(context + new ids)] over the current window. */
  private window(): [string, string] {
    const ctx = this.ids.slice(this.prefixOffset, this.readOffset);
    return [this.tokenizer.decode(ctx), this.tokenizer.decode(this.ids.slice(this.prefixOffset))];
  }
}
