/**
 * Builds eaglet's native onnxruntime addon (src/native/ort-addon.cc: sessions whose graphs use
 * eaglet's custom operators) on first use, with g++, into a cache folder; later calls load the
 * built file. Opt-in (StepSessionOptions.nativeAttention); nothing else needs it.
 *
 * What the build needs, all from this machine or the npm registry:
 * - g++ and an x86-64 CPU with AVX-512 (the kernel is built with -march=native);
 * - Node's C headers (node_api.h), beside the node binary (`<prefix>/include/node`);
 * - ONNX Runtime's C/C++ API headers, which no onnxruntime npm package for Node ships: they are
 *   taken from the iOS framework inside the npm package com.github.asus4.onnxruntime (ORT's own
 *   headers, MIT, API version 29; the 1.30 library serves every earlier API version), fetched
 *   once with `npm pack` (a ~150 MB download; only the headers are kept);
 * - onnxruntime-node's libonnxruntime.so.1, which the addon links so both run one ORT.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EagletError } from '../errors.ts';

/** The npm package whose iOS framework carries ORT's C/C++ API headers, and the version pinned. */
export const ORT_HEADERS_PACKAGE = 'com.github.asus4.onnxruntime@0.4.9';
const HEADERS_IN_PACKAGE = 'package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64_x86_64-simulator/onnxruntime.framework/Headers';

/** This package's root: src/runtime/ runs from the sources (tsx) or as dist/src/runtime/. */
const root = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  return existsSync(join(here, '..', '..', 'package.json')) ? join(here, '..', '..') : join(here, '..', '..', '..');
})();
/** The addon's C++ sources (shipped in the package as src/native/). */
const sourceDir = join(root, 'src', 'native');

/** Where builds and the fetched headers are kept: $EAGLET_NATIVE_DIR, else node_modules/.cache/eaglet-native of this package. */
export function nativeCacheDir(): string {
  return process.env.EAGLET_NATIVE_DIR ?? join(root, 'node_modules', '.cache', 'eaglet-native');
}

function run(cmd: string, args: string[], what: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.error) throw new EagletError(`${what}: ${cmd} could not run (${r.error.message})`);
  if (r.status !== 0) {
    // The first line naming the cause (not collect2's or tar's closing summaries).
    const lines = `${r.stderr}\n${r.stdout}`.split('\n').filter((l) => l.trim() && !/^collect2:|Exiting with failure status/.test(l));
    throw new EagletError(`${what}: ${lines.find((l) => /error|undefined reference|cannot|not found/i.test(l)) ?? lines[0] ?? `${cmd} exited ${r.status}`}`);
  }
  return r.stdout;
}

/** ORT's API headers in the cache, fetched from the npm registry the first time (progress on stderr). */
export function ortHeaders(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): string {
  const dir = join(nativeCacheDir(), `ort-headers-${ORT_HEADERS_PACKAGE.replace(/[^\w.-]+/g, '-')}`);
  if (existsSync(join(dir, 'onnxruntime_cxx_api.h'))) return dir;
  mkdirSync(nativeCacheDir(), { recursive: true });
  const tmp = mkdtempSync(join(nativeCacheDir(), 'fetch-')); // on the cache's file system, so the headers move by rename
  try {
    log(`eaglet: fetching ONNX Runtime's C/C++ API headers (npm pack ${ORT_HEADERS_PACKAGE}, ~150 MB, once) ...`);
    run('npm', ['pack', ORT_HEADERS_PACKAGE, '--pack-destination', tmp, '--silent'], `fetching ${ORT_HEADERS_PACKAGE}`);
    const tgz = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new EagletError(`fetching ${ORT_HEADERS_PACKAGE}: npm pack wrote no tarball`);
    run('tar', ['xzf', join(tmp, tgz), '-C', tmp, HEADERS_IN_PACKAGE], `unpacking ${tgz}`);
    rmSync(dir, { recursive: true, force: true });
    try {
      renameSync(join(tmp, HEADERS_IN_PACKAGE), dir);
    } catch (e) {
      if (!existsSync(join(dir, 'onnxruntime_cxx_api.h'))) throw e; // another process fetched them first
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return dir;
}

/** The folder holding onnxruntime-node's libonnxruntime.so.1 (the ORT every session runs). */
function ortLibDir(): string {
  const pkg = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  const base = join(pkg, 'bin');
  for (const napi of existsSync(base) ? readdirSync(base) : []) {
    const d = join(base, napi, process.platform, process.arch);
    if (existsSync(join(d, 'libonnxruntime.so.1'))) return d;
  }
  throw new EagletError(`libonnxruntime.so.1 not found under ${base}/*/${process.platform}/${process.arch}: the native addon links onnxruntime-node's ORT (Linux only)`);
}

/** This host's /proc/cpuinfo flags line ('' elsewhere). */
function cpuFlags(): string {
  const cpu = process.platform === 'linux' && existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  return cpu.split('\n').find((l) => l.startsWith('flags')) ?? '';
}

/**
 * Why eaglet.BlockMatMul cannot run here (it needs AVX-512 with VNNI and BW; the addon itself
 * builds without them), or null when it can: checked at load, so a user learns it before any
 * session opens rather than from ORT on the first run.
 */
export function blockMatMulUnsupported(flags = cpuFlags(), arch: string = process.arch): string | null {
  const missing = ['avx512f', 'avx512bw', 'avx512_vnni'].filter((f) => !new RegExp(`\\b${f}\\b`).test(flags));
  return arch === 'x64' && missing.length === 0 ? null : `eaglet's own matmul kernel needs an x86-64 Linux CPU with AVX-512 VNNI (this ${process.platform}/${arch} host's /proc/cpuinfo lacks ${missing.join(', ') || 'nothing, but it is not x86-64'})`;
}

/**
 * The built addon's path, building it if its sources, compiler flags, ORT library, headers
 * package or CPU features changed (the file name carries a hash of them). A missing g++, header or library is one error line.
 */
export function buildNativeAddon(): string {
  const flagsLine = cpuFlags();
  if (process.arch !== 'x64' || !/\bavx512f\b/.test(flagsLine)) throw new EagletError(`the native addon needs an x86-64 Linux CPU with AVX-512 (this ${process.platform}/${process.arch} host's /proc/cpuinfo lists no avx512f)`);
  const names = ['ort-addon.cc', 'past-attention.h', 'block-matmul.h'];
  const missing = names.find((f) => !existsSync(join(sourceDir, f)));
  if (missing) throw new EagletError(`${join(sourceDir, missing)} not found: the native addon is built from eaglet's src/native/ sources`);
  const sources = names.map((f) => readFileSync(join(sourceDir, f)));
  const libDir = ortLibDir();
  const flags = ['-std=c++17', '-O3', '-march=native', '-fPIC', '-shared', '-pthread', '-DNODE_GYP_MODULE_NAME=eaglet_native'];
  const hash = createHash('sha256');
  const lib = statSync(join(libDir, 'libonnxruntime.so.1'));
  // Sources, flags, the ORT library, the headers package and this CPU's features (-march=native).
  for (const s of [...sources, flags.join(' '), `${libDir} ${lib.size} ${lib.mtimeMs}`, ORT_HEADERS_PACKAGE, flagsLine]) hash.update(s);
  const out = join(nativeCacheDir(), `eaglet-native-${hash.digest('hex').slice(0, 12)}.node`);
  if (existsSync(out)) return out;
  const nodeInclude = join(dirname(dirname(process.execPath)), 'include', 'node');
  if (!existsSync(join(nodeInclude, 'node_api.h'))) throw new EagletError(`Node's C headers not found (${nodeInclude}/node_api.h): the native addon needs them to build`);
  const headers = ortHeaders();
  const tmp = `${out}.${process.pid}.tmp`;
  run('g++', [...flags, `-I${nodeInclude}`, `-I${headers}`, join(sourceDir, 'ort-addon.cc'), '-o', tmp, `-L${libDir}`, '-l:libonnxruntime.so.1', `-Wl,-rpath,${libDir}`], 'building src/native/ort-addon.cc');
  renameSync(tmp, out);
  // Earlier builds are stale (a process that loaded one keeps its mapping after the unlink).
  for (const f of readdirSync(nativeCacheDir())) if (/^eaglet-native-\w+\.node$/.test(f) && join(nativeCacheDir(), f) !== out) rmSync(join(nativeCacheDir(), f), { force: true });
  return out;
}
