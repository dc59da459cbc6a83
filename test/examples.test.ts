/** The documented examples run as written. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';
import { DEFAULT_PATHS } from '../src/default-model.ts';

test('examples/library.ts runs: streams, aborts at a round boundary, generates', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'examples/library.ts'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.ok(out.streamed >= 10 && out.streamed < 64, `aborted stream emitted ${out.streamed}`);
  assert.equal(out.ids.length, 16);
  assert.equal(out.stopReason, 'max-new-tokens');
});

test('examples/serve.ts runs: the handler inside an existing node:http app, streamed and chat replies', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'examples/serve.ts'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.ok(out.streamed.length > 0);
  assert.equal(out.chatTokens, 16);
  assert.equal(out.own, 'my own app\n');
});

/**
 * The ```ts blocks of the README's "### Library" section and of the entry modules' TSDoc, run as
 * scripts with three substitutions, all visible here: the package name becomes this checkout's
 * src/index.ts, the `path/to/...` placeholders the embedded default pair, and port 8080 a free one.
 */
function runSnippet(code: string): ReturnType<typeof spawnSync> {
  const script = code
    .replaceAll(`from 'eaglet'`, `from '${pathToFileURL(resolve('src/index.ts')).href}'`)
    .replaceAll(`'path/to/hf-dir'`, JSON.stringify(DEFAULT_PATHS.target))
    .replaceAll(`'path/to/head'`, JSON.stringify(DEFAULT_PATHS.draft))
    .replaceAll('listen(8080)', 'listen(0)');
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-doc-'));
  try {
    const file = join(dir, 'snippet.mts');
    writeFileSync(file, script);
    return spawnSync(process.execPath, ['--import', 'tsx', file], { encoding: 'utf8', timeout: 60_000 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const fenced = (text: string): string[] => [...text.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

function readmeSection(heading: string): string {
  const readme = readFileSync('README.md', 'utf8');
  const start = readme.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `README has a "${heading}" section`);
  const end = readme.indexOf('\n#', start + heading.length + 2);
  return readme.slice(start, end < 0 ? undefined : end);
}

/** The code blocks of the file's first comment, with the ` * ` margin removed. */
const tsdocBlocks = (file: string): string[] => fenced(readFileSync(file, 'utf8').split('*/')[0].replace(/^ \* ?/gm, ''));

test('the README Library example runs as written: streams text, then generates with stats', () => {
  const blocks = fenced(readmeSection('### Library'));
  assert.equal(blocks.length, 1);
  const r = runSnippet(blocks[0]);
  assert.equal(r.status, 0, String(r.stderr));
  assert.match(String(r.stdout), /\ntau \d+\.\d\d, \d+ tok\/s\n$/);
});

/**
 * What `npm test` runs through tsx is not type-checked: a snippet calling an option that no longer
 * exists, or reading a field by a wrong name, still runs when the value is only printed. So the
 * README's and the TSDoc's examples are also compiled against the sources, with the project's
 * compiler options less noUnusedLocals (an example may name a result it does not use).
 */
function typeErrors(snippets: { name: string; code: string }[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-doc-types-'));
  try {
    const files = snippets.map(({ name, code }, i) => {
      const file = join(dir, `${i}-${name.replace(/[^a-z0-9]+/gi, '-')}.mts`);
      writeFileSync(file, code.replaceAll(`from 'eaglet'`, `from ${JSON.stringify(resolve('src/index.ts'))}`));
      return file;
    });
    const { config } = ts.readConfigFile('tsconfig.json', ts.sys.readFile);
    const { options } = ts.parseJsonConfigFileContent(config, ts.sys, resolve('.'));
    const program = ts.createProgram(files, { ...options, noEmit: true, noUnusedLocals: false });
    const inSnippets = new Set(files);
    return ts.getPreEmitDiagnostics(program)
      .filter((d) => !d.file || inSnippets.has(resolve(d.file.fileName)) || !d.file.fileName.includes('node_modules'))
      .map((d) => `${d.file ? `${d.file.fileName}: ` : ''}${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every module under src/ whose first comment holds a ```ts example. */
const documented = (dir = 'src'): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? documented(join(dir, e.name)) : e.name.endsWith('.ts') && tsdocBlocks(join(dir, e.name)).length ? [join(dir, e.name)] : []);

test('the TSDoc examples of the modules under src/ (src/api.ts, src/serve/server.ts, any other) run as written', () => {
  const files = documented();
  for (const known of ['src/api.ts', join('src', 'serve', 'server.ts')]) assert.ok(files.includes(known), `${known} has its example`);
  for (const file of files) {
    const blocks = tsdocBlocks(file);
    assert.equal(blocks.length, 1, file);
    const r = runSnippet(blocks[0]);
    assert.equal(r.status, 0, `${file}: ${r.stderr}`);
  }
});

/**
 * The library calls the README writes inline (`code` outside a fenced block), each found in the
 * README as written (white space folded) and run as the `expr` it stands for, then checked by `then`.
 */
const INLINE: { span: string; expr: string; then: string }[] = [
  {
    span: '`await createHandler(await loadGenerator({ keepWeights: true }), { maxBatch: 8 })` is the same server as a request handler',
    expr: 'await createHandler(await loadGenerator({ keepWeights: true }), { maxBatch: 8 })',
    then: 'console.log(JSON.stringify({ maxBatch: made.engine.maxBatch }));\nawait made.close();',
  },
  {
    span: "`loadGenerator({ model, draft: 'self' })` or `{ model, exitLayer: 4 }` in the library",
    expr: "loadGenerator({ model, draft: 'self' })",
    then: "console.log(JSON.stringify({ exitLayers: (await made.generate('export function', { maxNewTokens: 16 })).stats.exitLayerHistogram }));\nawait made.dispose();",
  },
  {
    span: "`loadGenerator({ model, draft: 'self' })` or `{ model, exitLayer: 4 }` in the library",
    expr: 'loadGenerator({ model, exitLayer: 4 })',
    then: "console.log(JSON.stringify({ exitLayers: (await made.generate('export function', { maxNewTokens: 16 })).stats.exitLayerHistogram }));\nawait made.dispose();",
  },
];

const inlineScript = ({ expr, then }: (typeof INLINE)[number]): string =>
  `import { createHandler, loadGenerator } from 'eaglet';\nconst model = 'path/to/hf-dir';\nconst made = await ${expr};\n${then}\n`;

test("the README's inline library calls (createHandler in a node:http app, self-drafting's two forms) run as written", () => {
  const readme = readFileSync('README.md', 'utf8').replace(/\s+/g, ' ');
  const out = INLINE.map((row) => {
    assert.ok(readme.includes(row.span), `README still writes ${row.span}`);
    const r = runSnippet(inlineScript(row));
    assert.equal(r.status, 0, `${row.expr}: ${r.stderr}`);
    return JSON.parse(String(r.stdout));
  });
  assert.deepEqual(out[0], { maxBatch: 8 });
  const drafted = (h: number[]) => h.reduce((a, b) => a + (b ?? 0), 0);
  assert.ok(drafted(out[1].exitLayers) > 0, `draft: 'self' drafted with exit layers ${JSON.stringify(out[1].exitLayers)}`);
  assert.ok(drafted(out[2].exitLayers) > 0 && drafted(out[2].exitLayers) === out[2].exitLayers[4], `exitLayer 4 drafted with layer 4 alone: ${JSON.stringify(out[2].exitLayers)}`);
});

test('the README Library example, its inline calls and the TSDoc examples type-check against the sources', () => {
  const snippets = [
    ...fenced(readmeSection('### Library')).map((code) => ({ name: 'README', code })),
    ...INLINE.map((row) => ({ name: 'README-inline', code: inlineScript(row) })),
    ...documented().flatMap((file) => tsdocBlocks(file).map((code) => ({ name: file, code }))),
  ];
  assert.ok(snippets.length >= 6, `found ${snippets.length} examples`);
  assert.deepEqual(typeErrors(snippets), []);
});
