#!/usr/bin/env node
// The CLI, compiled to dist/ by `npm run build` (run by `prepare` and `prepack`). In a checkout,
// `npm run eaglet -- ...` runs the TypeScript sources directly.
try {
  await import('../dist/src/cli/main.js');
} catch (e) {
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !String(e.message).includes('dist/src/cli/main.js')) throw e;
  process.stderr.write('error: eaglet is not built (dist/ is missing): run `npm run build` in its folder\n');
  process.exitCode = 1;
}
