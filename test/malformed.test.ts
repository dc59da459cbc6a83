/**
 * Bad files of every format must end in an EagletError whose message names the file: never a
 * RangeError/TypeError, a crash, a hang, or an allocation sized by a lying header.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import fc from 'fast-check';
import { EagletError } from '../src/errors.ts';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { loadHfCheckpoint, parseHfConfig, saveHfCheckpoint, toHfConfig } from '../src/io/hf.ts';
import { readLlama2c, writeLlama2c } from '../src/io/llama2c.ts';
import { loadModel } from '../src/load-model.ts';
import { readLlama2cTokenizer, writeLlama2cTokenizer } from '../src/tokenizer/llama2c.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { tensor } from '../src/model/weights.ts';

const tmp = mkdtempSync(join(tmpdir(), 'eaglet-bad-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));
const T = { timeout: 30_000 };

/** Runs `fn`; it must throw an EagletError naming `file` (and mentioning `words`, if given). */
async function rejects(fn: () => unknown, file: string, words?: RegExp): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof EagletError, `expected an EagletError, got ${(e as Error).stack}`);
    assert.ok(e.message.includes(basename(file)), `message does not name ${basename(file)}: ${e.message}`);
    assert.ok(!e.message.includes('\n'), `message is not one line: ${e.message}`);
    if (words) assert.match(e.message, words);
    return;
  }
  assert.fail(`expected an error about ${file}`);
}

/** Runs `fn`; it may succeed, but if it throws, it must be an EagletError naming `file`. */
function succeedsOrRejects(fn: () => unknown, file: string): void {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof EagletError, `expected an EagletError, got ${(e as Error).stack}`);
    assert.ok(e.message.includes(basename(file)), `message does not name ${basename(file)}: ${e.message}`);
  }
}

const bytesArb = (max: number) => fc.uint8Array({ maxLength: max });
/** Byte edits: [position as a fraction of the file, new byte]. */
const editsArb = fc.array(fc.tuple(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 });
function applyEdits(buf: Uint8Array, edits: [number, number][]): Uint8Array {
  const out = buf.slice();
  for (const [at, b] of edits) out[Math.floor(at * out.length)] = b;
  return out;
}

// --- safetensors --------------------------------------------------------------------------

const stPath = join(tmp, 'model.safetensors');
writeSafetensors(stPath, new Map([
  ['a', tensor([2, 3], Float32Array.of(1, 2, 3, 4, 5, 6))],
  ['b', tensor([4], Float32Array.of(7, 8, 9, 10))],
]), { format: 'pt' });
const validSt = readFileSync(stPath);

/** A safetensors file from a header (object or raw text), data bytes and an optional lying length. */
function rawSafetensors(header: unknown, data: Uint8Array, length?: bigint): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(length ?? BigInt(json.length));
  return Buffer.concat([len, json, data]);
}
const entry = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });

test('safetensors: structured corruptions', T, async () => {
  const bad = join(tmp, 'bad.safetensors');
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(0), /too short/],
    [new Uint8Array(5), /too short/],
    [rawSafetensors({}, new Uint8Array(0), 1000n), /header length 1000 exceeds the file size/],
    [rawSafetensors({}, new Uint8Array(0), 2n ** 63n), /exceeds the file size/],
    [rawSafetensors({}, new Uint8Array(0), 2n ** 64n - 1n), /exceeds the file size/],
    [rawSafetensors('{"a": ', new Uint8Array(0)), /not valid JSON/],
    [rawSafetensors(Buffer.from([0x7b, 0xff, 0x7d]).toString('latin1'), new Uint8Array(0)), /not valid JSON/],
    [rawSafetensors([], new Uint8Array(0)), /not a JSON object/],
    [rawSafetensors({ x: entry('F32', [4], [0, 16]) }, new Uint8Array(8)), /outside the 8-byte data section/],
    [rawSafetensors({ x: entry('F32', [2], [8, 4]) }, new Uint8Array(8)), /outside/],
    [rawSafetensors({ x: entry('F32', [2], [0, 8]), y: entry('F32', [2], [4, 12]) }, new Uint8Array(12)), /overlap/],
    [rawSafetensors({ x: entry('F13', [2], [0, 8]) }, new Uint8Array(8)), /unknown dtype "F13"/],
    [rawSafetensors({ x: entry('I32', [1], [0, 4]) }, new Uint8Array(4)), /unsupported dtype "I32"/],
    // I64 is read into float32 memory (EAGLE-3's d2t): values it cannot hold exactly are refused.
    [rawSafetensors({ x: entry('I64', [1], [0, 8]) }, new Uint8Array(new BigInt64Array([2n ** 40n]).buffer)), /outside the supported range/],
    [rawSafetensors({ x: entry('F32', [3], [0, 8]) }, new Uint8Array(8)), /shape \[3\] of F32 needs 12 bytes/],
    [rawSafetensors({ x: entry('F32', [2 ** 40, 2 ** 40], [0, 8]) }, new Uint8Array(8)), /needs/],
    [rawSafetensors({ x: entry('F32', [-2], [0, 8]) }, new Uint8Array(8)), /shape must be/],
    [rawSafetensors({ x: entry('F32', [2.5], [0, 8]) }, new Uint8Array(8)), /shape must be/],
    [rawSafetensors({ x: entry('F32', [2], '0-8') }, new Uint8Array(8)), /data_offsets must be/],
    [rawSafetensors({ x: { shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)), /missing dtype/],
    [rawSafetensors({ x: 3 }, new Uint8Array(8)), /not an object/],
    [rawSafetensors({ __metadata__: { n: 3 } }, new Uint8Array(0)), /__metadata__/],
  ];
  for (const [bytes, words] of cases) {
    writeFileSync(bad, bytes);
    await rejects(() => readSafetensors(bad), bad, words);
  }
  await rejects(() => readSafetensors(join(tmp, 'absent.safetensors')), 'absent.safetensors', /no such file/);
});

test('safetensors: every truncation of a valid file is refused', T, async () => {
  const bad = join(tmp, 'cut.safetensors');
  for (let n = 0; n < validSt.length; n++) {
    writeFileSync(bad, validSt.subarray(0, n));
    await rejects(() => readSafetensors(bad), bad);
  }
});

test('safetensors: random bytes, byte edits and random header lengths', T, () => {
  const bad = join(tmp, 'fuzz.safetensors');
  fc.assert(
    fc.property(fc.oneof(bytesArb(64), editsArb.map((e) => applyEdits(validSt, e)), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((n) => {
      const b = Buffer.from(validSt);
      b.writeBigUInt64LE(n);
      return b;
    })), (bytes) => {
      writeFileSync(bad, bytes);
      succeedsOrRejects(() => readSafetensors(bad), bad);
    }),
    { numRuns: 400 },
  );
});

// --- HF checkpoint directories ------------------------------------------------------------

const cfg = makeConfig({ vocabSize: 7, dim: 8, nLayers: 1, nHeads: 2, hiddenDim: 6, eosTokenIds: [2], bosTokenId: 1 });
const goodConfig = toHfConfig(cfg);
let dirNo = 0;
/** A fresh valid HF checkpoint directory. */
function hfDir(): string {
  const dir = join(tmp, `hf-${dirNo++}`);
  saveHfCheckpoint(dir, cfg, randomWeights(cfg, 1));
  return dir;
}
const writeConfig = (dir: string, c: unknown) => writeFileSync(join(dir, 'config.json'), typeof c === 'string' ? c : JSON.stringify(c));

test('HF config.json: bad JSON, unknown architecture, missing/ill-typed fields, unsupported RoPE', T, async () => {
  const dir = hfDir(), file = join(dir, 'config.json');
  const { hidden_size: _, ...noHidden } = goodConfig;
  const cases: [unknown, RegExp][] = [
    ['{"model_type": "llama",', /not valid JSON/],
    ['[1, 2]', /not a JSON object/],
    [{ ...goodConfig, model_type: 'gpt2', architectures: ['GPT2LMHeadModel'] }, /model_type "gpt2" is not supported/],
    [{ ...goodConfig, architectures: ['LlamaForSequenceClassification'] }, /architectures/],
    [noHidden, /missing field hidden_size/],
    [{ ...goodConfig, num_attention_heads: '2' }, /num_attention_heads must be a positive integer/],
    [{ ...goodConfig, num_key_value_heads: 3 }, /multiple of nKvHeads/],
    [{ ...goodConfig, rope_scaling: { rope_type: 'llama3', factor: 8 } }, /rope_scaling.low_freq_factor must be a positive number/],
    [{ ...goodConfig, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 8192 } }, /high_freq_factor \(1\) must exceed low_freq_factor \(4\)/],
    [{ ...goodConfig, rope_scaling: 'llama3' }, /rope_scaling must be an object or null/],
    [{ ...goodConfig, rope_scaling: { type: 'linear', factor: 2 } }, /rope_scaling type "linear"/],
    [{ ...goodConfig, hidden_act: 'gelu' }, /hidden_act "gelu"/],
    [{ ...goodConfig, mlp_bias: true }, /mlp_bias/],
    [{ ...goodConfig, eos_token_id: 'x' }, /eos_token_id/],
    [{ ...goodConfig, tie_word_embeddings: 'yes' }, /tie_word_embeddings must be true or false/],
  ];
  for (const [c, words] of cases) {
    writeConfig(dir, c);
    await rejects(() => loadHfCheckpoint(dir), file, words);
  }
  rmSync(file);
  await rejects(() => loadModel(dir), file, /no such file/);
});

test('HF config parsing: any JSON value gives a config or a ConfigError, never a crash', T, () => {
  const field = fc.constantFrom(...Object.keys(goodConfig), 'rope_scaling', 'sliding_window', 'use_sliding_window');
  fc.assert(
    fc.property(fc.oneof(fc.jsonValue(), fc.array(fc.tuple(field, fc.jsonValue()), { minLength: 1, maxLength: 4 }).map((edits) => ({ ...goodConfig, model_type: 'mistral', architectures: undefined, ...Object.fromEntries(edits) }))), (json) => {
      succeedsOrRejects(() => parseHfConfig(json, 'config.json'), 'config.json');
    }),
    { numRuns: 500 },
  );
});

test('HF weights: shape mismatch with config, NaN, missing tensor, no weights file', T, async () => {
  let dir = hfDir();
  writeConfig(dir, { ...goodConfig, intermediate_size: 5 });
  await rejects(() => loadHfCheckpoint(dir), 'model.safetensors', /mlp.gate_proj.weight has shape \[6,8\], config implies \[5,8\]/);

  dir = hfDir();
  const w = randomWeights(cfg, 2);
  w.get('model.norm.weight')!.data[3] = NaN;
  writeSafetensors(join(dir, 'model.safetensors'), w);
  await rejects(() => loadHfCheckpoint(dir), 'model.safetensors', /model.norm.weight has a non-finite value \(NaN\)/);
  w.get('model.norm.weight')!.data[3] = Infinity;
  writeSafetensors(join(dir, 'model.safetensors'), w);
  await rejects(() => loadHfCheckpoint(dir), 'model.safetensors', /non-finite value \(Infinity\)/);

  w.get('model.norm.weight')!.data[3] = 1;
  w.delete('lm_head.weight');
  writeSafetensors(join(dir, 'model.safetensors'), w);
  await rejects(() => loadHfCheckpoint(dir), 'model.safetensors', /missing tensor lm_head.weight/);

  rmSync(join(dir, 'model.safetensors'));
  await rejects(() => loadHfCheckpoint(dir), dir, /no model.safetensors/);
});

test('HF sharded index: bad JSON, missing weight_map, missing shard, escaping path, tensor not in shard', T, async () => {
  const dir = hfDir(), index = join(dir, 'model.safetensors.index.json');
  const names = [...randomWeights(cfg, 1).keys()];
  const mapTo = (file: string) => Object.fromEntries(names.map((n) => [n, file]));
  rmSync(join(dir, 'model.safetensors'), { force: true });
  writeSafetensors(join(dir, 'part.safetensors'), randomWeights(cfg, 1));
  writeSafetensors(join(dir, 'small.safetensors'), new Map([['model.norm.weight', tensor([8])]]));
  const cases: [string, string, RegExp][] = [
    ['{"weight_map": ', index, /not valid JSON/],
    ['{}', index, /missing weight_map/],
    [JSON.stringify({ weight_map: mapTo('absent.safetensors') }), 'absent.safetensors', /no such file/],
    [JSON.stringify({ weight_map: mapTo('../part.safetensors') }), index, /must be a file name/],
    [JSON.stringify({ weight_map: { ...mapTo('part.safetensors'), 'model.embed_tokens.weight': 'small.safetensors' } }), 'small.safetensors', /model.embed_tokens.weight listed in model.safetensors.index.json is not in this shard/],
  ];
  for (const [text, file, words] of cases) {
    writeFileSync(index, text);
    await rejects(() => loadHfCheckpoint(dir), file, words);
  }
});

// --- llama2.c checkpoints -----------------------------------------------------------------

const binPath = join(tmp, 'model.bin');
const l2cCfg = { ...cfg, hiddenDim: 4, maxSeqLen: 4 };
writeLlama2c(binPath, l2cCfg, randomWeights(l2cCfg, 4));
const validBin = readFileSync(binPath);
const withHeader = (h: number[], rest: Uint8Array = validBin.subarray(28)) => Buffer.concat([Buffer.from(Int32Array.from(h).buffer), rest]);

test('llama2.c: truncated, trailing bytes, impossible or lying headers, versioned export, NaN', T, async () => {
  const bad = join(tmp, 'bad.bin');
  const nan = Buffer.from(validBin);
  nan.writeFloatLE(NaN, 28 + 4 * 5);
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(0), /too short/],
    [validBin.subarray(0, 27), /too short/],
    [validBin.subarray(0, validBin.length - 1), /truncated/],
    [validBin.subarray(0, 28), /truncated/],
    [Buffer.concat([validBin, new Uint8Array(4)]), /trailing bytes/],
    [withHeader([8, 4, 1, 2, 2, 7, 2 ** 31 - 1]), /implies \d+ \(truncated\)/],
    [withHeader([2 ** 30, 2 ** 30, 2 ** 30, 2, 2, -(2 ** 30), 2 ** 30]), /implies \d+ \(truncated\)/],
    [withHeader([8, 4, 1, 3, 3, 7, 4]), /dim 8 is not divisible by n_heads 3/],
    [withHeader([8, 4, 1, 0, 0, 7, 4]), /n_heads 0/],
    [withHeader([8, 4, 1, 2, 0, 7, 4]), /nKvHeads must be a positive integer/],
    [withHeader([8, 4, -1, 2, 2, 7, 4]), /nLayers must be a positive integer/],
    [withHeader([8, 4, 1, 2, 2, 0, 4]), /vocabSize/],
    [withHeader([0x616b3432, 1, 0, 0, 0, 0, 0]), /versioned export/],
    [nan, /non-finite value \(NaN\)/],
  ];
  for (const [bytes, words] of cases) {
    writeFileSync(bad, bytes);
    await rejects(() => readLlama2c(bad), bad, words);
  }
  await rejects(() => loadModel(join(tmp, 'absent.bin')), 'absent.bin', /no such file/);
});

test('llama2.c: random bytes, truncations and header edits', T, () => {
  const bad = join(tmp, 'fuzz.bin');
  const headerEdit = fc.tuple(fc.integer({ min: 0, max: 6 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })).map(([i, v]) => {
    const b = Buffer.from(validBin);
    b.writeInt32LE(v, 4 * i);
    return b;
  });
  fc.assert(
    fc.property(fc.oneof(bytesArb(200), fc.nat(validBin.length - 1).map((n) => validBin.subarray(0, n)), headerEdit, editsArb.map((e) => applyEdits(validBin.subarray(0, 28), e))), (bytes) => {
      writeFileSync(bad, bytes);
      succeedsOrRejects(() => readLlama2c(bad), bad);
    }),
    { numRuns: 400 },
  );
});

// --- tokenizers ---------------------------------------------------------------------------

const tokPath = join(tmp, 'tokenizer.bin');
const pieces = ['<unk>', '<s>', '</s>', 'a', 'b', 'ab'].map((s, i) => ({ bytes: new TextEncoder().encode(s), score: i }));
writeLlama2cTokenizer(tokPath, pieces);
const validTok = readFileSync(tokPath);

test('tokenizer.bin: truncated, bad lengths, vocab size mismatch, too few tokens', T, async () => {
  const bad = join(tmp, 'bad-tokenizer.bin');
  const edit = (at: number, v: number) => {
    const b = Buffer.from(validTok);
    b.writeInt32LE(v, at);
    return b;
  };
  const cases: [Uint8Array, number | undefined, RegExp][] = [
    [new Uint8Array(2), undefined, /too short/],
    [edit(0, 0), 6, /max_token_length 0/],
    [edit(8, -1), 6, /token 0 has length -1/],
    [edit(8, 2 ** 30), 6, /token 0 has length 1073741824/],
    [validTok.subarray(0, validTok.length - 1), 6, /truncated inside token 5/],
    [validTok, 7, /truncated at token 6 of 7/],
    [validTok, 5, /trailing bytes after 5 tokens/],
    [validTok.subarray(0, 4 + 8 + 5), undefined, /only 1 tokens/],
  ];
  for (const [bytes, vocab, words] of cases) {
    writeFileSync(bad, bytes);
    await rejects(() => readLlama2cTokenizer(bad, vocab), bad, words);
  }
  writeFileSync(bad, edit(4, 0x7fc00000)); // NaN score of token 0
  await rejects(() => readLlama2cTokenizer(bad, 6), bad, /NaN score/);
});

test('tokenizer.bin: random bytes, truncations and edits', T, () => {
  const bad = join(tmp, 'fuzz-tokenizer.bin');
  fc.assert(
    fc.property(fc.oneof(bytesArb(100), fc.nat(validTok.length - 1).map((n) => validTok.subarray(0, n)), editsArb.map((e) => applyEdits(validTok, e))), fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }), (bytes, vocab) => {
      writeFileSync(bad, bytes);
      succeedsOrRejects(() => readLlama2cTokenizer(bad, vocab), bad);
    }),
    { numRuns: 400 },
  );
});

test('tokenizer.json / tokenizer_config.json: bad JSON, not a tokenizer, unknown format', T, async () => {
  const dir = join(tmp, 'tok');
  mkdirSync(dir);
  const json = join(dir, 'tokenizer.json');
  for (const text of ['{"model": ', '{}', '[]', '3', '{"model": {"type": "Nope"}}']) {
    writeFileSync(json, text);
    await rejects(() => loadTokenizer(dir), json);
  }
  writeFileSync(json, JSON.stringify({ added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, model: { type: 'WordLevel', vocab: { a: 0 }, unk_token: 'a' } }));
  writeFileSync(join(dir, 'tokenizer_config.json'), '[1]');
  await rejects(() => loadTokenizer(json), 'tokenizer_config.json', /not a JSON object/);
  await rejects(() => loadTokenizer(join(tmp, 'vocab.txt')), 'vocab.txt', /no such file/);
  writeFileSync(join(tmp, 'vocab.txt'), 'a');
  await rejects(() => loadTokenizer(join(tmp, 'vocab.txt')), 'vocab.txt', /unknown tokenizer format/);
  await rejects(() => loadTokenizer(tmp), tmp, /no tokenizer.json/);
});

test('tokenizer.json: arbitrary JSON gives a tokenizer or a FormatError', T, () => {
  const dir = join(tmp, 'tok-fuzz');
  mkdirSync(dir);
  const json = join(dir, 'tokenizer.json');
  const part = fc.oneof(fc.constant(null), fc.jsonValue({ maxDepth: 2 }));
  fc.assert(
    fc.property(fc.oneof(fc.jsonValue(), fc.record({ added_tokens: fc.oneof(fc.constant([]), fc.jsonValue({ maxDepth: 2 })), normalizer: part, pre_tokenizer: part, post_processor: part, decoder: part, model: fc.oneof(part, fc.record({ type: fc.constantFrom('BPE', 'WordPiece', 'Unigram', 'WordLevel'), vocab: part, merges: part })) })), (value) => {
      writeFileSync(json, JSON.stringify(value));
      succeedsOrRejects(() => loadTokenizer(json), json);
    }),
    { numRuns: 300 },
  );
});
