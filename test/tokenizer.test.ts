/** Tokenizers: HF tokenizer.json (byte-level BPE fixture), llama2.c tokenizer.bin, and the streamer. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { DEFAULT_PATHS } from '../src/default-model.ts';
import { HfTokenizer } from '../src/tokenizer/hf.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { Llama2cTokenizer, readLlama2cTokenizer, writeLlama2cTokenizer, type Llama2cPiece } from '../src/tokenizer/llama2c.ts';
import { TextStreamer } from '../src/tokenizer/streamer.ts';
import type { Tokenizer } from '../src/tokenizer/tokenizer.ts';

const tmp = mkdtempSync(join(tmpdir(), 'eaglet-tok-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

/** GPT-2's bytes_to_unicode: printable stand-ins for the 256 bytes. */
function bytesToUnicode(): string[] {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(keep(b) ? b : 256 + extra++));
}

/** A tiny byte-level BPE tokenizer.json (GPT-2 style) with a few merges and <s>, </s>. */
function hfFixture(): { json: object; config: object } {
  const byteChars = bytesToUnicode();
  const vocab: Record<string, number> = {};
  byteChars.forEach((c, i) => (vocab[c] = i));
  const sp = byteChars[32]; // 'Ġ'
  const merges = [[sp, 't'], ['h', 'e'], [sp + 't', 'he'], ['i', 'n'], [sp, 'a'], ['Ã', '©']];
  for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length;
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const n = Object.keys(vocab).length;
  return {
    json: {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: [special('<s>', n), special('</s>', n + 1)],
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
    },
    config: { bos_token: '<s>', eos_token: { content: '</s>' }, clean_up_tokenization_spaces: false },
  };
}

const hfDir = join(tmp, 'hf');
mkdirSync(hfDir);
const { json, config } = hfFixture();
writeFileSync(join(hfDir, 'tokenizer.json'), JSON.stringify(json));
writeFileSync(join(hfDir, 'tokenizer_config.json'), JSON.stringify(config));
const hf = loadTokenizer(hfDir);

/** llama2.c-style vocabulary: unk, bos, eos, 256 byte tokens, ASCII, a few merges and one 2-byte char. */
function llama2cPieces(): Llama2cPiece[] {
  const enc = new TextEncoder();
  const strs = ['<unk>', '\n<s>\n', '\n</s>\n'];
  for (let b = 0; b < 256; b++) strs.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  for (let c = 32; c < 127; c++) strs.push(String.fromCharCode(c));
  strs.push('é', ' t', 'he', ' the', 'in', ' a', 'an', ' an');
  // Later (longer) merges score higher, like a sentencepiece model's merge order.
  return strs.map((s, i) => ({ bytes: enc.encode(s), score: i < 259 ? 0 : i - 1000 }));
}
const binPath = join(tmp, 'tokenizer.bin');
writeLlama2cTokenizer(binPath, llama2cPieces());
const l2c = loadTokenizer(binPath, { vocabSize: llama2cPieces().length });

const tokenizers: [string, Tokenizer][] = [['tokenizer.json', hf], ['tokenizer.bin', l2c]];
/** Any code points (no lone surrogates), biased towards ASCII words and multi-byte characters. */
const textArb = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.string({ unit: fc.constantFrom('the', ' the', 'an', ' ', 'é', '日本', '🙂', 'in', 'a', '\n'), maxLength: 15 }),
);

// --- properties ---------------------------------------------------------------------------

for (const [name, tok] of tokenizers) {
  test(`${name}: decode(encode(text)) == text, with and without BOS`, () => {
    fc.assert(
      fc.property(textArb, (text) => {
        const withBos = tok.encode(text, { addBos: true });
        assert.equal(withBos[0], tok.bosId);
        assert.equal(tok.decode(withBos), text);
        assert.ok(withBos.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize));
        // llama2.c keeps sentencepiece's dummy-prefix space when there is no BOS to strip it after.
        assert.equal(tok.decode(tok.encode(text, { addBos: false })), tok === l2c && text !== '' ? ' ' + text : text);
      }),
      { numRuns: 300 },
    );
  });

  test(`${name}: the streamer emits exactly the full decode, never a broken character`, () => {
    fc.assert(
      fc.property(textArb, fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 40 }), fc.boolean(), (text, cuts, eos) => {
        const ids = tok.encode(text);
        if (eos) ids.push(tok.eosIds[0]);
        const streamer = new TextStreamer(tok);
        const chunks: string[] = [];
        for (let i = 0, c = 0; i < ids.length; c++) {
          const n = cuts[c % cuts.length]; // ids arrive in groups, as a speculative round accepts them
          chunks.push(streamer.push(ids.slice(i, i + n)));
          i += n;
        }
        chunks.push(streamer.flush());
        assert.equal(chunks.join(''), tok.decode(ids));
        if (!text.includes('\uFFFD')) assert.ok(chunks.every((c) => !c.includes('\uFFFD')), JSON.stringify(chunks));
      }),
      { numRuns: 200 },
    );
  });
}

// --- examples -----------------------------------------------------------------------------

test('tokenizer.json: merges apply, special ids come from tokenizer_config.json', () => {
  assert.equal(hf.vocabSize, 256 + 6 + 2);
  assert.equal(hf.bosId, 262);
  assert.deepEqual(hf.eosIds, [263]);
  const ids = hf.encode('the then', { addBos: false });
  assert.equal(ids.length, 4); // t|he, Ġthe, n
  assert.equal(hf.decode([hf.bosId!, ...ids, 263]), 'the then');
  assert.equal(hf.decode([]), '');
  assert.deepEqual(loadTokenizer(join(hfDir, 'tokenizer.json')).encode('café'), hf.encode('café'));
});

test('tokenizer.json, byte-level: decode equals the library\'s decoding (the fast table, its fallbacks, clean-up on or off)', () => {
  const base = hfFixture();
  const j = base.json as { added_tokens: object[] };
  // A non-special added token over a vocabulary entry (byte 3's stand-in: the library emits it verbatim, not as byte 3): decoded by the library.
  const withAdded = { ...j, added_tokens: [...j.added_tokens, { id: 3, content: bytesToUnicode()[3], single_word: false, lstrip: false, rstrip: false, normalized: false, special: false }] };
  const embedded = JSON.parse(readFileSync(join(DEFAULT_PATHS.target, 'tokenizer.json'), 'utf8')), embeddedConfig = JSON.parse(readFileSync(join(DEFAULT_PATHS.target, 'tokenizer_config.json'), 'utf8'));
  const cases: [string, object, Record<string, unknown>, boolean][] = [
    ['fixture', base.json, base.config as Record<string, unknown>, true],
    ['fixture, clean-up on', base.json, { ...base.config, clean_up_tokenization_spaces: true }, false],
    ['fixture, an added token', withAdded, base.config as Record<string, unknown>, true],
    ['embedded', embedded, embeddedConfig, true],
  ];
  for (const [name, tj, cfg, fast] of cases) {
    const tok = new HfTokenizer(tj, cfg, name), lib = new HfLibTokenizer(tj, cfg);
    assert.equal((tok as unknown as { bytesOf?: unknown }).bytesOf !== undefined, fast, `${name}: the fast table is ${fast ? 'missing' : 'used'}`);
    const reference = (ids: number[]) => {
      const keep = ids.filter((id) => id !== tok.bosId && !tok.eosIds.includes(id));
      return keep.length === 0 ? '' : lib.decode(keep, { skip_special_tokens: true });
    };
    const V = tok.vocabSize;
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.integer({ min: 0, max: V - 1 }), fc.constantFrom(0, 3, V - 1, V - 2, tok.bosId ?? 0, V, V + 5)), { maxLength: 40 }), (ids) => {
        assert.equal(tok.decode(ids), reference(ids), `${name}: ${ids.join(',')}`);
      }),
      { numRuns: 300 },
    );
  }
});

test('tokenizer.bin: run.c encode (dummy prefix, best-score merges, byte fallback) and decode', () => {
  const tok = l2c as Llama2cTokenizer;
  const id = (s: string) => tok.pieces.findIndex((p) => new TextDecoder().decode(p.bytes) === s);
  assert.deepEqual(tok.encode('the an'), [1, id(' the'), id(' an')]);
  assert.deepEqual(tok.encode('€'), [1, id(' '), id('<0xE2>'), id('<0x82>'), id('<0xAC>')]);
  assert.deepEqual(tok.encode('é'), [1, id(' '), id('é')]);
  assert.equal(tok.decode([1, id(' the'), id('<0xE2>'), id('<0x82>'), id('<0xAC>'), 2]), 'the€');
  assert.equal(tok.decode([id(' the')]), ' the'); // the leading space is stripped only right after BOS
  assert.equal(readLlama2cTokenizer(binPath).vocabSize, tok.vocabSize); // vocab size optional: read to the end
});

test('tokenizer.bin: decode == the UTF-8 decoding of its pieces\' bytes joined (whole-character pieces as text, byte tokens as bytes)', () => {
  const tok = l2c as Llama2cTokenizer, pieces = llama2cPieces(), td = new TextDecoder('utf-8', { ignoreBOM: true });
  const bytesOf = (id: number) => {
    const m = /^<0x([0-9A-F]{2})>$/.exec(new TextDecoder().decode(pieces[id].bytes));
    return m ? Uint8Array.of(parseInt(m[1], 16)) : pieces[id].bytes;
  };
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.integer({ min: 0, max: tok.vocabSize - 1 }), fc.constantFrom(1, 2, 259 + 69, tok.vocabSize - 1)), { maxLength: 20 }), (ids) => {
      const parts = ids.map((id, i) => {
        if (id === 1 || id === 2) return new Uint8Array(0);
        const b = bytesOf(id);
        return i > 0 && ids[i - 1] === 1 && b[0] === 0x20 ? b.subarray(1) : b;
      });
      assert.equal(tok.decode(ids), td.decode(Buffer.concat(parts)));
    }),
    { numRuns: 500 },
  );
});

test('streamer holds back a split multi-byte character until it completes', () => {
  const s = new TextStreamer(l2c);
  const ids = l2c.encode('€!'); // BOS, ' ', E2, 82, AC, '!'
  assert.deepEqual(ids.map((i) => s.push(i)), ['', '', '', '', '€', '!']);
  assert.equal(s.flush(), '');
});
