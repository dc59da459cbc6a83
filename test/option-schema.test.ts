/** The library side of the option schema (resolveOptions): every spec type checks its value's type, naming the option. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveOptions, type FlagSpec } from '../src/option-schema.ts';
import { UsageError } from '../src/errors.ts';

const SPECS: FlagSpec[] = [
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 8, help: '' },
  { flag: 'model-name', type: 'string', default: 'eaglet', help: '' },
  { flag: 'mode', type: 'string', choices: ['a', 'b'], help: '' },
  { flag: 'stop-at-eos', type: 'bool', default: true, help: '' },
  { flag: 'ids', type: 'ints', help: '' },
];

const refuses = (given: Record<string, unknown>, message: string) =>
  assert.throws(() => resolveOptions(SPECS, given), (e) => e instanceof UsageError && e.message === message, JSON.stringify(given));

test('a value of the wrong type is one UsageError naming the option, for every spec type', () => {
  // Fails on the old code for the string, bool and ints rows: those values were taken as they came.
  refuses({ modelName: 42 }, 'modelName: expected a string, got the number 42');
  refuses({ modelName: { id: 'x' } }, 'modelName: expected a string, got an object');
  refuses({ mode: 1 }, 'mode: expected a string, got the number 1');
  refuses({ stopAtEos: 'false' }, "stopAtEos: expected true or false, got the string 'false'");
  refuses({ stopAtEos: 0 }, 'stopAtEos: expected true or false, got the number 0');
  refuses({ ids: '1,2' }, "ids: expected an array of integers, got the string '1,2'");
  refuses({ ids: [1, 2.5] }, 'ids: expected an array of integers, got an array');
  // A number option names the wrong type too (was 'got 8' for the string '8' and for [8], and a
  // TypeError, not a UsageError, for an object without a prototype).
  refuses({ maxNewTokens: '8' }, "maxNewTokens: expected a number, got the string '8'");
  refuses({ maxNewTokens: [8] }, 'maxNewTokens: expected a number, got an array');
  refuses({ maxNewTokens: Object.create(null) }, 'maxNewTokens: expected a number, got an object');
  refuses({ maxNewTokens: NaN }, 'maxNewTokens: expected a number, got NaN');
  refuses({ mode: 'c' }, "mode: must be one of a, b, got 'c'");
});

test('values of the right type pass as given, defaults fill the rest', () => {
  assert.deepEqual(resolveOptions(SPECS, { modelName: '', mode: 'b', stopAtEos: false, ids: [3, 1] }), { maxNewTokens: 8, modelName: '', mode: 'b', stopAtEos: false, ids: [3, 1] });
  assert.deepEqual(resolveOptions(SPECS, {}), { maxNewTokens: 8, modelName: 'eaglet', stopAtEos: true });
  assert.deepEqual(resolveOptions(SPECS, { modelName: null }), resolveOptions(SPECS, {}), 'null, as undefined, is not given');
});
