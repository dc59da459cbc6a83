/**
 * `serve()`: the OpenAI-compatible server on node:http, and the library entry for embedding.
 *
 * ```ts
 * import { createServer } from 'node:http';
 * import { loadGenerator, createHandler } from 'eaglet';
 * const g = await loadGenerator({ keepWeights: true }); // serving builds its batch graphs from the weights
 * const handler = await createHandler(g, { maxBatch: 8 });
 * const app = createServer((req, res) => (req.url?.startsWith('/v1/') ? handler(req, res) : res.end('my app'))).listen(8080);
 * // At shutdown: stop listening, let running requests finish, release the sessions.
 * app.close();
 * await handler.close();
 * await g.dispose();
 * ```
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadGenerator, type LoadOptions, type LoadedGenerator } from '../api.ts';
import { resolveOptions, type FlagSpec } from '../option-schema.ts';
import { closeOptions, createHandler, handlerOptions, type EagletHandler, type HandlerOptions } from './http.ts';

/** host and port: `eaglet serve`'s flags and serve()'s options. */
export const LISTEN_FLAGS: FlagSpec[] = [
  { flag: 'host', type: 'string', default: '127.0.0.1', meta: 'HOST', help: 'address to listen on' },
  { flag: 'port', type: 'int', min: 0, max: 65535, default: 8080, meta: 'PORT', help: 'port to listen on (0: any free port)' },
];

/** `serve`'s options: the handler's, and where to listen. */
export interface ServeOptions extends HandlerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** An integer in [0, 65535]. Default 8080; 0 = any free port. */
  port?: number;
}

/** A listening server; `close` drains it. */
export interface RunningServer {
  server: Server;
  handler: EagletHandler;
  /** e.g. http://127.0.0.1:8080 */
  url: string;
  /** Stops listening and drains (running requests finish; after cancelAfterMs they are cancelled: EagletHandler.close). */
  close(opts?: { cancelAfterMs?: number }): Promise<void>;
}

/**
 * Loads (or takes) a generator and serves it on node:http until closed. A bad or unknown option
 * fails before a model loads, with one line naming it.
 */
export async function serve(model: LoadedGenerator | LoadOptions = {}, opts: ServeOptions = {}): Promise<RunningServer> {
  const { host, port, ...rest } = opts;
  const at = resolveOptions<{ host: string; port: number }>(LISTEN_FLAGS, { host, port });
  handlerOptions(rest);
  // Serving builds its batch graphs from the weights: keep them (see Engine.start).
  const g = 'generator' in model ? model : await loadGenerator({ ...model, keepWeights: true });
  const handler = await createHandler(g, rest);
  const server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  const address = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return {
    server,
    handler,
    url: `http://${address}:${a.port}`,
    async close(o) {
      closeOptions(o); // a bad option fails before the server stops listening
      const closed = new Promise<void>((r) => server.close(() => r()));
      await handler.close(o);
      server.closeIdleConnections?.();
      await closed;
    },
  };
}
