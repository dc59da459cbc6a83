/**
 * The package's layout shows its dependencies: the import graph of src/, trees/ and training/
 * has no cycles, between files or between folders; nothing below the CLI imports it or training/;
 * trees/ imports nothing outside trees/; and what a library or CLI user loads without training never pulls in
 * TensorFlow.js (it is an optional install); and no policy imports the policy registry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import ts from 'typescript';

const ROOTS = ['src', 'trees', 'training'];

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []);
}

interface Imports {
  /** Relative imports (type-only ones too: they are dependencies of the layout), as repo paths. */
  local: string[];
  /** What loading the module loads: relative paths and package names, type-only imports left out. */
  runtime: string[];
}

/** Static imports and re-exports only: `import()` is how training code is loaded lazily. */
function importsOf(file: string): Imports {
  const src = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest);
  const out: Imports = { local: [], runtime: [] };
  for (const st of src.statements) {
    if (!(ts.isImportDeclaration(st) || ts.isExportDeclaration(st)) || !st.moduleSpecifier || !ts.isStringLiteral(st.moduleSpecifier)) continue;
    const spec = st.moduleSpecifier.text;
    const typeOnly = ts.isImportDeclaration(st) ? !!st.importClause?.isTypeOnly : st.isTypeOnly;
    const dep = spec.startsWith('.') ? normalize(join(dirname(file), spec)) : spec;
    if (spec.startsWith('.')) out.local.push(dep);
    if (!typeOnly) out.runtime.push(dep);
  }
  return out;
}

const graph = new Map(ROOTS.flatMap(tsFiles).map((f) => [f, importsOf(f)]));

/** Every cycle a depth-first walk of `edges` meets, as 'a -> b -> a'. */
function cycles(nodes: Iterable<string>, edges: (n: string) => Iterable<string>): string[] {
  const state = new Map<string, 'open' | 'done'>();
  const found: string[] = [];
  const visit = (n: string, path: string[]): void => {
    if (state.get(n) === 'done') return;
    if (state.get(n) === 'open') return void found.push([...path.slice(path.indexOf(n)), n].join(' -> '));
    state.set(n, 'open');
    for (const m of edges(n)) visit(m, [...path, n]);
    state.set(n, 'done');
  };
  for (const n of nodes) visit(n, []);
  return found;
}

test('the import graph has no cycles', () => {
  assert.deepEqual(cycles(graph.keys(), (f) => graph.get(f)?.local ?? []), []);
});

test('only the CLI imports the CLI and, of src/, training/; trees/ imports nothing outside trees/', () => {
  const bad: string[] = [];
  for (const [f, { local, runtime }] of graph) {
    if (!f.startsWith('src/cli/')) for (const d of local) if (d.startsWith('src/cli/')) bad.push(`${f} -> ${d}`);
    // The library's modules are the pipeline's base: the CLI's training commands alone reach up into it.
    if (f.startsWith('src/') && !f.startsWith('src/cli/')) for (const d of local) if (d.startsWith('training/')) bad.push(`${f} -> ${d}`);
    if (f.startsWith('trees/')) {
      for (const d of local) if (!d.startsWith('trees/')) bad.push(`${f} -> ${d}`);
      for (const p of runtime) if (!graph.has(p) && !p.startsWith('node:')) bad.push(`${f} -> ${p}`);
    }
  }
  assert.deepEqual(bad, []);
});

test('the library and the CLI entry load no TensorFlow.js until a training command runs', () => {
  const seen = new Set<string>();
  const tf: string[] = [];
  const walk = (f: string): void => {
    if (seen.has(f)) return;
    seen.add(f);
    const imp = graph.get(f);
    assert.ok(imp, `${f} is imported but not found`);
    for (const d of imp.runtime) {
      if (d.startsWith('@tensorflow/')) tf.push(`${relative('.', f)} imports ${d}`);
      else if (graph.has(d)) walk(d);
    }
  };
  walk('src/index.ts');
  walk('src/cli/main.ts');
  assert.ok(seen.has('src/cli/commands/train-draft.ts'), 'the walk reaches the training commands');
  assert.deepEqual(tf, []);
});

/** A module's folder: trees/ and training/ whole, src/<dir> inside src/, and src/'s top-level files (api.ts, errors.ts ...) each on their own. */
function folderOf(f: string): string {
  const parts = f.split('/');
  if (parts[0] !== 'src') return parts[0];
  return parts.length > 2 ? `src/${parts[1]}` : f;
}

test('folders depend one way: no two folders import each other, directly or around a loop', () => {
  const edges = new Map<string, Set<string>>();
  for (const [f, { local }] of graph) {
    for (const d of local) {
      const a = folderOf(f), b = folderOf(d);
      if (a !== b) (edges.get(a) ?? edges.set(a, new Set()).get(a)!).add(b);
    }
  }
  assert.ok(edges.get('src/generate')?.has('src/runtime'), 'the folder graph is built');
  assert.deepEqual(cycles(edges.keys(), (n) => edges.get(n) ?? []), []);
});

test('a registry knows its entries, the entries do not know it: no policy module imports src/policies/registry.ts', () => {
  const registry = 'src/policies/registry.ts';
  assert.ok(graph.has(registry), 'the registry is found');
  const bad = [...graph].filter(([f, { local }]) => f.startsWith('src/policies/') && f !== registry && local.includes(registry)).map(([f]) => f);
  assert.deepEqual(bad, []);
});
