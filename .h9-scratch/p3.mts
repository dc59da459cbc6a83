import { readFileSync, writeFileSync } from 'node:fs';
import { readFeatureLog } from '/work/main/training/feature-log.ts';
const valid = readFileSync('/tmp/rb/v.arrow');
const [at, v] = process.argv.slice(2).map(Number);
const b = Buffer.from(valid); b[at] = v;
writeFileSync('/tmp/rb/one.arrow', b);
const t0 = performance.now();
try { for await (const x of readFeatureLog('/tmp/rb/one.arrow')) console.log('rows', x.rows, x.features.length); } catch (e) { console.log('err', (e as Error).message.slice(0, 200)); }
console.log('ms', performance.now() - t0, process.memoryUsage().rss / 2**20);
