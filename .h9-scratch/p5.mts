import { lyingHeaders, measure, lastRefusal } from '../scripts/robustness-report.ts';
const hs = await lyingHeaders('/tmp/rb/lies');
for (const h of hs) { const m = await measure(h.run); console.log(h.what, m, (await import('../scripts/robustness-report.ts')).lastRefusal); }
