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
import { closeNumbers, createHandler, handlerNumbers, type EagletHandler, type HandlerOptions } from './http.ts';

/** `serve`'s options: the handler's, and where to listen. */
export interface ServeOptions extends HandlerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8080; 0 = any free port. */
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

/** Loads (or takes) a generator and serves it on node:http until closed. */
export async function serve(model: LoadedGenerator | LoadOptions = {}, opts: ServeOptions = {}): Promise<RunningServer> {
  handlerNumbers(opts); // a bad option fails before a model loads
  // Serving builds its batch graphs from the weights: keep them (see Engine.start).
  const g = 'generator' in model ? model : await loadGenerator({ ...model, keepWeights: true });
  const handler = await createHandler(g, opts);
  const server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8080, opts.host ?? '127.0.0.1', () => resolve());
  });
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return {
    server,
    handler,
    url: `http://${host}:${a.port}`,
    async close(o) {
      closeNumbers(o); // a bad option fails before the server stops listening
      const closed = new Promise<void>((r) => server.close(() => r()));
      await handler.close(o);
      server.closeIdleConnections?.();
      await closed;
    },
  };
}
