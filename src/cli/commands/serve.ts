/** `eaglet serve`: the OpenAI-compatible HTTP server (src/serve/). */
import { loadGenerator } from '../../api.ts';
import { DEFAULT_PATHS } from '../../default-model.ts';
import { UsageError } from '../../errors.ts';
import { camel, TIMER_MAX_MS, type FlagSpec } from '../../option-schema.ts';
import { ENGINE_FLAGS } from '../../serve/engine.ts';
import { LISTEN_FLAGS, serve as startServer } from '../../serve/server.ts';
import { defineCommand } from '../command.ts';
import { DRAFT_QUANT_FLAG, MODEL_FLAGS, QUANTIZE_FLAG, quantFromFlags, THREADS_FLAG, TREE_FLAGS, treeFromFlags, withTreeFlags } from '../common-flags.ts';

/** The longest --timeout / --drain-timeout in seconds: setTimeout fires a longer delay at once. */
const MAX_TIMER_S = Math.floor(TIMER_MAX_MS / 1000);

const FLAGS: FlagSpec[] = [
  ...MODEL_FLAGS,
  { flag: 'draft', type: 'string', meta: 'PATH|random[:N]', help: 'EAGLE draft head directory (or "random"): enables speculation; the embedded default brings its own' },
  DRAFT_QUANT_FLAG,
  QUANTIZE_FLAG,
  ...TREE_FLAGS,
  { flag: 'fused-round', type: 'bool', help: 'with a chain tree (--tree-top-k 1): a request alone in the batch drafts and verifies in ONE ORT call per round, as generate does (holds another copy of the target\'s weights; default: on for the embedded default pair, --no-fused-round to turn it off)' },
  THREADS_FLAG,
  ...LISTEN_FLAGS,
  ...ENGINE_FLAGS,
  { flag: 'timeout', type: 'number', above: 0, max: MAX_TIMER_S, default: 120, meta: 'S', help: 'seconds a request may run before it is cancelled (504)' },
  { flag: 'drain-timeout', type: 'number', min: 0, max: MAX_TIMER_S, default: 30, meta: 'S', help: 'on SIGTERM/SIGINT, seconds running requests get to finish before they are cancelled' },
  { flag: 'model-name', type: 'string', meta: 'NAME', help: 'the model id /v1/models lists (default: the model directory name, or eaglet-default)' },
];

export const serve = defineCommand({
  summary: 'OpenAI-compatible HTTP server with continuous batching and SmartSpec',
  usage: 'Usage: eaglet serve [--model PATH --draft DIR] [--host H] [--port P] [--max-batch B] [--policy P] [flags]',
  description: `Serves POST /v1/completions and /v1/chat/completions (streaming with "stream": true),
GET /v1/models, /health and /metrics (Prometheus). Requests join and leave the batch between
steps; one target pass verifies every active request's draft. SIGTERM or SIGINT stops
accepting, lets running requests finish (--drain-timeout) and exits 0.
Without --model it serves the embedded default (data/default) with its draft head.`,
  flags: FLAGS,
  async run(f) {
    if (f.draft === 'self') throw new UsageError('--draft', 'self-drafting is not batched: serve with an EAGLE head (a directory or random)');
    const g = await withTreeFlags(f, () => loadGenerator({
      model: f.model as string | undefined,
      tokenizer: f.tokenizer as string | undefined,
      draft: f.draft as string | undefined,
      tree: treeFromFlags(f),
      threads: f.threads as number,
      ...quantFromFlags(f),
      keepWeights: true, // the batch graphs are built from them
    }));
    for (const note of g.notes) process.stderr.write(`${note}\n`);
    const modelDir = (f.model as string | undefined) ?? DEFAULT_PATHS.target;
    const name = (f.modelName as string | undefined) ?? (f.model ? String(f.model).replace(/\/+$/, '').split('/').pop()! : 'eaglet-default');
    let s;
    try {
      s = await startServer(g, {
        host: f.host as string, port: f.port as number, maxBatch: f.maxBatch as number, maxQueue: f.maxQueue as number,
        policy: f.policy as string | undefined, threads: f.threads as number, fusedRound: (f.fusedRound as boolean | undefined) ?? (f.model === undefined && f.draft === undefined && g.generator.drafter.shape.topK === 1), timeoutMs: Math.max(1, Math.round((f.timeout as number) * 1000)), modelDir, modelName: name,
      });
    } catch (e) {
      await g.dispose();
      const code = (e as NodeJS.ErrnoException).code;
      // The port is taken or privileged; the host is no address of this machine, or no name at all.
      const why: Record<string, [string, string]> = {
        EADDRINUSE: ['--port', 'in use'], EACCES: ['--port', 'not permitted'],
        EADDRNOTAVAIL: ['--host', 'not an address of this machine'], ENOTFOUND: ['--host', 'unknown host'], EAI_AGAIN: ['--host', 'host name lookup failed'],
      };
      if (code && why[code]) throw new UsageError(why[code][0], `cannot listen on ${f.host}:${f.port}: ${why[code][1]} (${code})`);
      // The library names its option (policy: static-9 past the tree's depth); here it is a flag.
      const flag = e instanceof UsageError && FLAGS.find((s) => camel(s.flag) === e.flag);
      if (flag) throw new UsageError(`--${flag.flag}`, (e as UsageError).problem);
      throw e;
    }
    const e = s.handler.engine;
    process.stderr.write(`eaglet serve: ${name} on ${s.url} (max batch ${e.maxBatch}, policy ${e.policy.kind === 'static' ? `static-${e.policy.depth}` : e.policy.kind})\n`);
    const signal = await new Promise<string>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'));
      process.once('SIGINT', () => resolve('SIGINT'));
    });
    process.stderr.write(`eaglet serve: ${signal}: draining ${e.activeRequests} running request(s)\n`);
    await s.close({ cancelAfterMs: Math.round((f.drainTimeout as number) * 1000) });
    await g.dispose();
    process.stderr.write('eaglet serve: stopped\n');
  },
});
