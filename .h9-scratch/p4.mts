import { readFileSync, writeFileSync } from 'node:fs';
const v = readFileSync('/tmp/rb/v.arrow');
const b = Buffer.from(v);
for (const n of [5n, 2n]) { const needle = Buffer.alloc(8); needle.writeBigInt64LE(n); console.log(n, b.indexOf(needle, 600)); }
