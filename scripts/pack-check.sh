#!/usr/bin/env bash
# The package as a new user gets it: `npm pack`, install the tarball into an empty project (no
# CUDA download), then check that plain `node` imports it and generates from the embedded
# default, that a strict `tsc` consumer compiles, that `npx eaglet --help` runs, that training on
# a TensorFlow.js backend without TensorFlow.js names the package to install, and how big
# node_modules is.
#
#   scripts/pack-check.sh [WORK_DIR]     (default: a new temp dir; needs the npm registry)
#
# Exits non-zero on the first failed check. Takes about a minute plus the install; not part of
# `npm test` for that reason.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d -t eaglet-pack-XXXXXX)}"
mkdir -p "$work"
cd "$work"
echo "work dir: $work"

step() { printf '\n== %s\n' "$*"; }

step "npm pack (runs prepare: the dist build)"
tarball="$(cd "$repo" && npm pack --silent --pack-destination "$work" | tail -n 1)"
tar -tzf "$tarball" | sed 's|^package/||' > files.txt
echo "$tarball: $(wc -l < files.txt) files, $(du -k "$tarball" | cut -f1) KB"
# src/native/ is shipped: the opt-in native addon is built from it on the user's machine (src/runtime/native-build.ts).
if grep -E '^(test|scripts|\.ci|src|training|trees)/' files.txt | grep -v '^src/native/'; then echo "FAIL: the tarball carries sources or dev files (above)"; exit 1; fi
for f in dist/src/index.js dist/src/index.d.ts dist/src/index.js.map dist/src/cli/main.js bin/eaglet.js data/default/target/config.json README.md; do
  grep -qx "$f" files.txt || { echo "FAIL: $f missing from the tarball"; exit 1; }
done

step "install into an empty project (ONNXRUNTIME_NODE_INSTALL=skip: no CUDA download)"
mkdir -p consumer && cd consumer
# allowScripts records that onnxruntime-node's postinstall (a CUDA download) stays off; npm 11 still
# runs unlisted scripts, hence the environment variable too. eaglet's own `prepare` is listed only
# because a tarball is a non-registry source (npm does not run it for tarballs)
# (non-registry sources are keyed by their source).
printf '{ "name": "consumer", "version": "1.0.0", "private": true, "type": "module",\n  "allowScripts": { "onnxruntime-node": false, "file:%s": false } }\n' "$work/$tarball" > package.json
ONNXRUNTIME_NODE_INSTALL=skip npm install --no-fund --no-audit "$work/$tarball" 2>&1 | tee ../install.log
if grep -i 'warn' ../install.log; then echo "FAIL: npm warned while installing (above)"; exit 1; fi
size_mb=$(du -sm node_modules | cut -f1)
echo "inference-only node_modules: ${size_mb} MB"
du -sm node_modules/* node_modules/@* 2>/dev/null | sort -n | tail -n 5
[ "$size_mb" -le 350 ] || { echo "FAIL: node_modules is over 350 MB"; exit 1; }
[ ! -e node_modules/@tensorflow ] || { echo "FAIL: @tensorflow was installed for an inference-only consumer"; exit 1; }

step "plain node: import { loadGenerator } from 'eaglet', generate from the embedded default"
cat > generate.mjs <<'EOF'
import { loadGenerator } from 'eaglet';
const g = await loadGenerator();
const { text, stats } = await g.generate('export declare function', { maxNewTokens: 24 });
await g.dispose();
if (stats.newTokens !== 24 || !text) throw new Error(`expected 24 tokens of text, got ${stats.newTokens}: ${JSON.stringify(text)}`);
console.log(JSON.stringify(text), `(${stats.newTokens} tokens, ${stats.targetPasses} target passes)`);
EOF
node generate.mjs

step "strict tsc consumer (typescript 5.9, strict, skipLibCheck off)"
npm install --no-fund --no-audit --no-save typescript@5.9.3 @types/node@20 > /dev/null
cat > tsconfig.json <<'EOF'
{
  "compilerOptions": {
    "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext",
    "strict": true, "noUncheckedIndexedAccess": true, "exactOptionalPropertyTypes": true,
    "verbatimModuleSyntax": true, "isolatedModules": true, "skipLibCheck": false,
    "noEmit": true, "types": ["node"]
  },
  "files": ["consumer.ts"]
}
EOF
cat > consumer.ts <<'EOF'
import { loadGenerator, type LoadOptions, type TextChunk, UsageError } from 'eaglet';

const options: LoadOptions = { tree: { maxDepth: 4, totalTokens: 8, topK: 2 } };
const g = await loadGenerator(options);
const chunks: TextChunk[] = [];
for await (const chunk of g.stream('export', { maxNewTokens: 4 })) chunks.push(chunk);
const err: Error = new UsageError('--x', 'bad');
console.log(chunks.length, err.message);
await g.dispose();
EOF
npx tsc -p . && echo "tsc: no errors"

step "npx eaglet --help"
npx eaglet --help | head -n 3

# Training without tfjs falls back to the ORT backend (auto); naming a tfjs backend (wasm) is what
# needs the package.
step "a training command on a tfjs backend without TensorFlow.js: one line naming the package"
mkdir -p corpus && printf 'export declare function f(): void;\n' > corpus/a.d.ts
set +e
npx eaglet train-target --corpus-dir corpus --out target-out --steps 1 --backend wasm 2> train.err
code=$?
set -e
cat train.err
[ "$code" -ne 0 ] && [ "$(wc -l < train.err)" -eq 1 ] && grep -q 'npm install @tensorflow/tfjs' train.err || { echo "FAIL: expected one line naming @tensorflow/tfjs and a non-zero exit (got $code)"; exit 1; }

step "all checks passed ($size_mb MB node_modules)"
