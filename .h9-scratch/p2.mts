import { readFileSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
const valid = readFileSync('/tmp/rb/v.arrow');
const samples = fc.sample(fc.oneof(
  fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({min:0,max:255})), {minLength:1,maxLength:8}).map(e => { const b = Buffer.from(valid); for (const [i,v] of e) b[i]=v; return b; }),
  fc.nat(valid.length).map(n => valid.subarray(0, n)),
  fc.uint8Array({maxLength: 200}),
), { numRuns: 2000, seed: 1 });
const s = samples[17];
console.log(s.length);
for (let i = 0; i < Math.min(s.length, valid.length); i++) if (s[i] !== valid[i]) console.log(i, valid[i], '->', s[i]);
writeFileSync('/tmp/rb/case17.arrow', s);
