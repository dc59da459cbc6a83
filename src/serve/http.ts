/**
 * The OpenAI-compatible HTTP API over the serving engine, as a node:http request handler:
 *
 *   POST /v1/completions        prompt (text or token ids) -> text; `stream: true` = SSE
 *   POST /v1/chat/completions   messages -> the model's chat template -> text; SSE likewise
 *   GET  /v1/models, /health, /metrics (Prometheus text)
 *
 * Supported request fields: model, prompt / messages, max_tokens (chat: also
 * max_completion_tokens), temperature (default 1, as OpenAI), top_p, top_k (extension), seed,
 * stop (a string or up to 4), stream, n (1 only). Other fields are ignored; a known field of the
 * wrong type is a 400 naming it. Choices carry `token_ids` (an extension: the generated ids).
 *
 * Faults: a full queue answers 429; a bad body or field 400 with an OpenAI-style error object;
 * a prompt that leaves no room in the context 400 (code context_length_exceeded); a client
 * that disconnects cancels its request (its slot and cache are freed at the next step); a
 * request running longer than `timeoutMs` is cancelled (504, or an error event when streaming).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { LoadedGenerator } from '../api.ts';
import type { GenerationOptions } from '../generate/options.ts';
import type { GenerationStats, StopReason } from '../generate/stats.ts';
import { TextStreamer } from '../tokenizer/streamer.ts';
import { loadChatTemplate, type ChatMessage, type ChatTemplate } from './chat.ts';
import { DrainingError, Engine, ENGINE_OPTIONS, QueueFullError, type EngineOptions } from './engine.ts';
import { pickOptions, resolveOptions, TIMER_MAX_MS, type FlagSpec } from '../option-schema.ts';

/** `createHandler`'s options: the engine's, and what the HTTP layer adds. */
export interface HandlerOptions extends EngineOptions {
  /** The id /v1/models lists and responses carry. Default 'eaglet'. */
  modelName?: string;
  /** Directory whose tokenizer_config.json holds the chat template (default: none: the fallback template). */
  modelDir?: string;
  /** A request running longer is cancelled: an integer in [1, 2^31 - 1] ms. Default 120000 ms. */
  timeoutMs?: number;
  /** Largest request body (bytes, an integer >= 1). Default 1 MiB. */
  maxBodyBytes?: number;
  /**
   * Where the server reports an error it cannot answer with (one line each): the engine's end
   * of a request failing after its reply has gone out. Default: a line to stderr.
   */
  log?: (line: string) => void;
}

/**
 * The handler's options beside the engine's (ENGINE_OPTIONS) and `log`, checked as the CLI
 * checks its flags (the option schema): a bad value or an unknown key fails at once with one
 * line naming the option. A timer above TIMER_MAX_MS would fire at once.
 */
const HANDLER_FLAGS: FlagSpec[] = [
  { flag: 'timeout-ms', type: 'int', above: 0, max: TIMER_MAX_MS, default: 120_000, help: 'a request running longer is cancelled' },
  { flag: 'max-body-bytes', type: 'int', min: 1, default: 1 << 20, help: 'largest request body' },
  { flag: 'model-name', type: 'string', default: 'eaglet', help: 'the model id /v1/models lists' },
  { flag: 'model-dir', type: 'string', help: 'directory whose tokenizer_config.json holds the chat template' },
];
const CLOSE_FLAGS: FlagSpec[] = [{ flag: 'cancel-after-ms', type: 'int', min: 0, max: TIMER_MAX_MS, default: 30_000, help: 'running requests are cancelled after' }];

type Resolved = { engine: EngineOptions; timeoutMs: number; maxBodyBytes: number; modelName: string; modelDir?: string; log?: (line: string) => void };

/** `opts` checked, defaults filled, the engine's share apart; throws a UsageError naming a bad or unknown option. */
export function handlerOptions(opts: HandlerOptions = {}): Resolved {
  const { log, ...rest } = opts; // a callback: no flag's
  const o = resolveOptions<Omit<Resolved, 'engine' | 'log'>>([...ENGINE_OPTIONS, ...HANDLER_FLAGS], rest as Record<string, unknown>);
  return { ...o, engine: pickOptions(ENGINE_OPTIONS, o) as EngineOptions, log };
}

/** close()'s options, defaults filled; throws a UsageError naming a bad or unknown one. */
export function closeOptions(opts: { cancelAfterMs?: number } = {}): { cancelAfterMs: number } {
  return resolveOptions(CLOSE_FLAGS, opts as Record<string, unknown>);
}

/** A request handler for node:http (or any framework that passes Node's req/res). */
export interface EagletHandler {
  (req: IncomingMessage, res: ServerResponse): void;
  readonly engine: Engine;
  /**
   * Stops admitting, refuses queued requests, waits for running ones; after `cancelAfterMs`
   * (an integer in [0, 2^31 - 1] ms, default 30000) cancels them.
   */
  close(opts?: { cancelAfterMs?: number }): Promise<void>;
}

/** A client error: the HTTP status and an OpenAI-style error object. */
export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly param: string | null = null, readonly code: string | null = null, readonly type = status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error') {
    super(message);
  }
}

interface Parsed {
  prompt: number[];
  gen: Partial<GenerationOptions>;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
}

const DEFAULT_MAX_TOKENS = 16; // OpenAI's default for completions

/** Path -> the method it takes. (Module-level, as the field checks below: built once, not per request.) */
const ROUTES = new Map([['/health', 'GET'], ['/v1/models', 'GET'], ['/metrics', 'GET'], ['/v1/completions', 'POST'], ['/v1/chat/completions', 'POST']]);
const isInt = (v: unknown): v is number => Number.isInteger(v);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
const isString = (v: unknown): v is string => typeof v === 'string';

/** Builds the handler: checks `opts` (handlerOptions), creates the engine over `g` and measures SmartSpec's step costs. */
export async function createHandler(g: LoadedGenerator, opts: HandlerOptions = {}): Promise<EagletHandler> {
  const { timeoutMs, maxBodyBytes: maxBody, modelName, modelDir, log: logTo, engine: engineOpts } = handlerOptions(opts);
  const engine = new Engine(g, engineOpts);
  await engine.start();
  const chat = loadChatTemplate(modelDir);
  const created = Math.floor(Date.now() / 1000);
  // Response ids: a random prefix per handler and a counter, unique per server. (randomBytes per
  // request took 60 us of a c=1 request's path, on a CPU whose caches the passes had just evicted.)
  const idPrefix = randomBytes(8).toString('hex');
  let idCount = 0;
  const running = new Set<AbortController>();
  let closing = false;
  const cfg = g.model.config;
  const log = logTo ?? ((line: string) => void process.stderr.write(`${line}\n`));

  const handler = ((req: IncomingMessage, res: ServerResponse) => {
    void route(req, res).catch((e) => fail(res, e));
  }) as EagletHandler;

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    const allowed = ROUTES.get(path);
    if (allowed === undefined) throw new HttpError(404, `no route ${method} ${path}`, null, 'not_found');
    if (method !== allowed) {
      res.setHeader('allow', allowed);
      throw new HttpError(405, `${path} takes ${allowed}, not ${method}`, null, 'method_not_allowed');
    }
    if (path === '/health') return json(res, closing ? 503 : 200, { status: closing ? 'draining' : 'ok', batch: engine.batcher.size, queue: engine.queueLength });
    if (path === '/v1/models') return json(res, 200, { object: 'list', data: [{ id: modelName, object: 'model', created, owned_by: 'eaglet', max_model_len: cfg.maxSeqLen }] });
    if (path === '/metrics') {
      const lane = engine.servedTargetPasses; // not the start-up calibration's
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(engine.metrics.render({ batchSize: engine.batcher.size, queueLength: engine.queueLength, targetPasses: lane.passes, targetCalls: lane.calls }));
      return;
    }
    const body = await readJson(req, maxBody);
    const t1 = performance.now();
    const isChat = path === '/v1/chat/completions';
    const p = parseRequest(body, isChat, chat);
    await complete(req, res, p, isChat, [t0, t1, performance.now()]);
  }

  /** Validates the body into a prompt and generation options; throws HttpError(400). */
  function parseRequest(body: unknown, isChat: boolean, template: ChatTemplate): Parsed {
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'the request body must be a JSON object');
    const b = body as Record<string, unknown>;
    const opt = <T>(name: string, check: (v: unknown) => v is T, want: string): T | undefined => {
      const v = b[name];
      if (v === undefined || v === null) return undefined;
      if (!check(v)) throw new HttpError(400, `'${name}' must be ${want}, got ${JSON.stringify(v)?.slice(0, 80)}`, name, 'invalid_type');
      return v;
    };
    opt('model', isString, 'a string');
    const n = opt('n', isInt, 'an integer');
    if (n !== undefined && n !== 1) throw new HttpError(400, `'n' must be 1: one choice per request`, 'n', 'unsupported_value');
    let prompt: number[];
    if (isChat) {
      const msgs = b.messages;
      if (msgs === undefined) throw new HttpError(400, "'messages' is required", 'messages', 'missing_field');
      if (!Array.isArray(msgs) || msgs.length === 0) throw new HttpError(400, "'messages' must be a non-empty array of {role, content}", 'messages', 'invalid_type');
      const messages: ChatMessage[] = msgs.map((m, i) => {
        if (!m || typeof m !== 'object' || typeof m.role !== 'string') throw new HttpError(400, `'messages[${i}]' must be an object with a string 'role'`, `messages[${i}]`, 'invalid_type');
        let content = m.content;
        // The OpenAI content-parts form: text parts only.
        if (Array.isArray(content) && content.every((c) => c && c.type === 'text' && typeof c.text === 'string')) content = content.map((c: { text: string }) => c.text).join('');
        if (typeof content !== 'string') throw new HttpError(400, `'messages[${i}].content' must be a string (or text parts)`, `messages[${i}].content`, 'invalid_type');
        return { role: m.role, content };
      });
      if (!g.tokenizer) throw new HttpError(400, 'this model has no tokenizer: chat needs one (use /v1/completions with token ids)', 'messages', 'no_tokenizer');
      prompt = g.tokenizer.encode(template.render(messages), { addBos: !template.fromModel && g.tokenizer.bosId !== undefined });
    } else {
      let pr = b.prompt;
      if (pr === undefined) throw new HttpError(400, "'prompt' is required", 'prompt', 'missing_field');
      if (Array.isArray(pr) && pr.length === 1 && (typeof pr[0] === 'string' || Array.isArray(pr[0]))) pr = pr[0]; // a batch of one
      if (typeof pr === 'string') {
        if (pr.length === 0) throw new HttpError(400, "'prompt' is empty", 'prompt', 'invalid_value');
        if (!g.tokenizer) throw new HttpError(400, 'this model has no tokenizer: give the prompt as token ids', 'prompt', 'no_tokenizer');
        prompt = g.tokenizer.encode(pr, { addBos: g.tokenizer.bosId !== undefined });
      } else if (Array.isArray(pr) && pr.length > 0 && pr.every(isInt)) {
        const bad = pr.findIndex((t: number) => t < 0 || t >= cfg.vocabSize);
        if (bad >= 0) throw new HttpError(400, `'prompt' token id ${pr[bad]} at index ${bad} is outside the vocabulary [0, ${cfg.vocabSize})`, 'prompt', 'invalid_value');
        prompt = pr as number[];
      } else throw new HttpError(400, "'prompt' must be a non-empty string or a non-empty array of token ids (one prompt per request)", 'prompt', 'invalid_type');
    }
    if (prompt.length >= cfg.maxSeqLen)
      throw new HttpError(400, `the prompt has ${prompt.length} tokens; this model's context is ${cfg.maxSeqLen}: shorten it to leave room to generate`, isChat ? 'messages' : 'prompt', 'context_length_exceeded');
    const maxTokens = opt('max_tokens', isInt, 'an integer') ?? (isChat ? opt('max_completion_tokens', isInt, 'an integer') : undefined);
    if (maxTokens !== undefined && maxTokens < 1) throw new HttpError(400, `'max_tokens' must be at least 1, got ${maxTokens}`, 'max_tokens', 'invalid_value');
    const temperature = opt('temperature', isNum, 'a number');
    if (temperature !== undefined && (temperature < 0 || temperature > 2)) throw new HttpError(400, `'temperature' must be in [0, 2], got ${temperature}`, 'temperature', 'invalid_value');
    const topP = opt('top_p', isNum, 'a number');
    if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new HttpError(400, `'top_p' must be in (0, 1], got ${topP}`, 'top_p', 'invalid_value');
    const topK = opt('top_k', isInt, 'an integer');
    if (topK !== undefined && topK < 0) throw new HttpError(400, `'top_k' must be >= 0, got ${topK}`, 'top_k', 'invalid_value');
    const seed = opt('seed', isInt, 'an integer');
    if (seed !== undefined && (seed < 0 || seed > Number.MAX_SAFE_INTEGER)) throw new HttpError(400, `'seed' must be a non-negative integer, got ${seed}`, 'seed', 'invalid_value');
    const stream = opt('stream', isBool, 'a boolean') ?? false;
    const so = b.stream_options;
    if (so !== undefined && so !== null && (typeof so !== 'object' || Array.isArray(so))) throw new HttpError(400, "'stream_options' must be an object", 'stream_options', 'invalid_type');
    const includeUsage = Boolean(so && (so as Record<string, unknown>).include_usage === true);
    let stop: string[] = [];
    const s = b.stop;
    if (typeof s === 'string') stop = [s];
    else if (Array.isArray(s) && s.length <= 4 && s.every((x) => typeof x === 'string')) stop = s;
    else if (s !== undefined && s !== null) throw new HttpError(400, "'stop' must be a string or an array of at most 4 strings", 'stop', 'invalid_type');
    stop = stop.filter((x) => x.length > 0);
    if (stop.length && !g.tokenizer) throw new HttpError(400, "'stop' strings need a tokenizer", 'stop', 'no_tokenizer');
    return {
      prompt,
      gen: {
        maxNewTokens: maxTokens ?? (isChat ? cfg.maxSeqLen : DEFAULT_MAX_TOKENS),
        temperature: temperature ?? 1,
        topP: topP ?? 1,
        topK: topK ?? 0,
        seed: seed ?? Math.floor(Math.random() * 2 ** 31), // a sampling seed, not a secret
      },
      stop,
      stream,
      includeUsage,
    };
  }

  /** @param at when the handler started, the body was read, it was parsed (RequestPhases). */
  async function complete(req: IncomingMessage, res: ServerResponse, p: Parsed, isChat: boolean, at: [number, number, number]): Promise<void> {
    const id = `${isChat ? 'chatcmpl' : 'cmpl'}-${idPrefix}${(idCount++).toString(16).padStart(8, '0')}`;
    const ac = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => ((timedOut = true), ac.abort(new Error('timeout'))), timeoutMs);
    const onClose = () => {
      if (!res.writableFinished) ac.abort(new Error('client disconnected'));
    };
    res.on('close', onClose);
    running.add(ac);
    let it;
    try {
      it = engine.submit(p.prompt, p.gen, ac.signal);
    } catch (e) {
      clearTimeout(timer);
      running.delete(ac);
      if (e instanceof QueueFullError) throw new HttpError(429, e.message, null, 'queue_full');
      if (e instanceof DrainingError) throw new HttpError(503, e.message, null, 'shutting_down');
      throw e;
    }
    // Text as it comes only when it is needed as it comes (events, stop strings); otherwise decoded once at the end.
    const streamer = g.tokenizer && (p.stream || p.stop.length) ? new TextStreamer(g.tokenizer) : undefined;
    const ids: number[] = [];
    let text = '', sent = 0; // text decoded so far; how much of it went out (streaming)
    let stopHit = false;
    const hold = p.stop.reduce((m, s) => Math.max(m, s.length - 1), 0); // a stop string may still be completing
    const object = isChat ? 'chat.completion.chunk' : 'text_completion';
    const chunk = (delta: string, tokenIds: number[], finish: string | null, extra: object = {}, role = false) =>
      `data: ${JSON.stringify({
        id, object, created: Math.floor(Date.now() / 1000), model: modelName,
        choices: [isChat ? { index: 0, delta: role ? { role: 'assistant', content: '' } : finish === null ? { content: delta } : {}, token_ids: tokenIds, finish_reason: finish } : { index: 0, text: delta, token_ids: tokenIds, logprobs: null, finish_reason: finish }],
        ...extra,
      })}\n\n`;
    if (p.stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      if (isChat) res.write(chunk('', [], null, {}, true)); // the role first, as OpenAI does
    }
    // Why generation ended. The stream's last chunk says so: the reply then goes out before the
    // engine ends the request (frees its slot, leaves the batch), which runs while the client reads.
    let ended: StopReason | undefined, early = false;
    let error: unknown;
    let first = 0, end = 0, textMs = 0; // textMs: the handler's own work per chunk (detokenize, stop strings, SSE)
    try {
      for (let r = await it.next(); ; r = await it.next()) {
        if (r.done) {
          ended = r.value.stopReason;
          break;
        }
        const tc = performance.now();
        first ||= tc;
        ids.push(...r.value.ids);
        text += streamer?.push(r.value.ids) ?? '';
        const cut = firstStop(text, p.stop);
        if (cut >= 0) {
          text = text.slice(0, cut);
          stopHit = true;
          ac.abort(new Error('stop string'));
        }
        if (p.stream && !res.destroyed) {
          const upTo = stopHit ? text.length : Math.max(sent, text.length - hold);
          if (upTo > sent || !streamer) {
            res.write(chunk(text.slice(sent, upTo), r.value.ids, null));
            sent = upTo;
          }
        }
        textMs += performance.now() - tc;
        if (stopHit) {
          await it.return(undefined as never);
          break;
        }
        if (r.value.end) {
          ended = r.value.end;
          early = true;
          break;
        }
      }
    } catch (e) {
      error = e;
    } finally {
      end = performance.now();
      clearTimeout(timer);
      res.off('close', onClose);
      running.delete(ac);
    }
    try {
      if (!stopHit && !error) {
        text += streamer ? streamer.flush() : g.tokenizer?.decode(ids) ?? '';
        const cut = firstStop(text, p.stop);
        if (cut >= 0) (text = text.slice(0, cut)), (stopHit = true);
      }
      const finalTextMs = performance.now() - end;
      if (res.destroyed) return; // the client left: nothing to answer
      const reason = stopHit || ended === 'eos' ? 'stop' : 'length';
      const usage = { prompt_tokens: p.prompt.length, completion_tokens: ids.length, total_tokens: p.prompt.length + ids.length };
      const failure = error ? new HttpError(500, `generation failed: ${(error as Error).message}`, null, 'generation_failed') : timedOut && !stopHit ? new HttpError(504, `the request ran longer than ${timeoutMs} ms and was cancelled`, null, 'timeout') : undefined;
      if (failure) engine.metrics.errors++;
      else
        res.once('finish', () => {
          const [start, read, parsed] = at;
          first ||= end;
          engine.metrics.timed({ read: read - start, parse: parsed - read, prefill: first - parsed, decode: end - first - textMs, text: textMs + finalTextMs, reply: performance.now() - end - finalTextMs });
        });
      if (p.stream) {
        if (failure) res.write(`data: ${JSON.stringify(errorBody(failure))}\n\n`);
        else {
          if (text.length > sent) res.write(chunk(text.slice(sent), [], null));
          res.write(chunk('', [], reason, p.includeUsage ? { usage } : {}));
        }
        res.end('data: [DONE]\n\n');
        return;
      }
      if (failure) throw failure;
      const choice = isChat
        ? { index: 0, message: { role: 'assistant', content: text }, token_ids: ids, logprobs: null, finish_reason: reason }
        : { index: 0, text, token_ids: ids, logprobs: null, finish_reason: reason };
      json(res, 200, { id, object: isChat ? 'chat.completion' : 'text_completion', created: Math.floor(Date.now() / 1000), model: modelName, choices: [choice], usage });
    } finally {
      if (early) void endStream(it, id, log);
    }
  }

  Object.defineProperty(handler, 'engine', { value: engine });
  handler.close = async (o) => {
    const { cancelAfterMs } = closeOptions(o);
    closing = true;
    const timer = setTimeout(() => {
      for (const ac of running) ac.abort(new Error('server shutting down'));
    }, cancelAfterMs);
    try {
      await engine.drain();
    } finally {
      clearTimeout(timer);
    }
    await engine.dispose();
  };
  return handler;
}

/**
 * Runs a stream that has yielded its last chunk to its end (the engine's end of the request).
 * Nothing can answer an error here (the reply has gone out, or the client left), so it is only
 * logged, as one line; a log sink that throws is ignored rather than left to crash the server
 * (this promise is not awaited).
 */
async function endStream(it: AsyncGenerator<unknown, GenerationStats>, id: string, log: (line: string) => void): Promise<void> {
  try {
    while (!(await it.next()).done);
  } catch (e) {
    const why = String((e as Error)?.message ?? e).replace(/\s*\n\s*/g, ' | ');
    try {
      log(`eaglet serve: ${id}: the engine's end of the request failed after its last token: ${why}`);
    } catch {
      // The sink failed too; there is nowhere left to report to.
    }
  }
}

/** Index of the earliest stop string in `text`, or -1. */
function firstStop(text: string, stop: string[]): number {
  let best = -1;
  for (const s of stop) {
    const i = text.indexOf(s);
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}

function errorBody(e: HttpError) {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}

function fail(res: ServerResponse, e: unknown): void {
  const err = e instanceof HttpError ? e : new HttpError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, null, 'internal_error');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  json(res, err.status, errorBody(err));
}

/**
 * The body as JSON: 413 past `limit` bytes, 400 when it does not parse. A small body that came
 * with the head is buffered in the request stream by the microtask after the 'request' event:
 * read in place (`read()`), without the flowing mode's 'data' and 'end' ticks (measured at
 * concurrency 1: request event -> Engine.submit 0.19 -> 0.13 ms). Otherwise (a body still
 * arriving, chunked, or past the limit) the stream's events.
 */
async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length']);
  if (declared > 0 && declared <= limit) {
    await undefined;
    if (req.readableLength === declared && req.readableFlowing === null) return parseJson(req.read() as Buffer);
  }
  return parseJson(await readBody(req, limit));
}

function parseJson(b: Buffer): unknown {
  const s = b.toString('utf8');
  if (s.trim() === '') throw new HttpError(400, 'the request body is empty: send a JSON object', null, 'invalid_json');
  try {
    return JSON.parse(s);
  } catch (e) {
    throw new HttpError(400, `the request body is not valid JSON: ${(e as Error).message}`, null, 'invalid_json');
  }
}

/** The body's bytes as they stream in: 413 past `limit` bytes. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0, done = false;
    req.on('data', (b: Buffer) => {
      if (done) return;
      size += b.length;
      if (size > limit) {
        done = true;
        reject(new HttpError(413, `the request body is larger than ${limit} bytes`, null, 'body_too_large'));
        req.resume();
        return;
      }
      parts.push(b);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      resolve(parts.length === 1 ? parts[0] : Buffer.concat(parts));
    });
    req.on('error', (e) => {
      if (!done) (done = true), reject(e);
    });
  });
}
