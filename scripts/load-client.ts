/**
 * The load test's clients (scripts/load-test.ts), in a worker thread: the server's event loop
 * then spends nothing on building requests or parsing replies, as with clients in another
 * process. Each message is one level: `c` closed-loop clients over keep-alive connections
 * send the prompts in order (greedy completions of `maxTokens`); the reply lists each
 * request's ids and latency, and the level's wall time (first send to last reply).
 */
import { connect, type Socket } from 'node:net';
import { parentPort } from 'node:worker_threads';

export interface LevelJob {
  url: string;
  prompts: number[][];
  concurrency: number;
  maxTokens: number;
}

export interface LevelResult {
  /** Per prompt, in the job's order: the reply's token ids and its latency (ms). */
  replies: { ids: number[]; ms: number }[];
  wallMs: number;
}

/**
 * One kept-alive HTTP/1.1 connection, one request at a time (a closed-loop client), written
 * over node:net: the request in one write, the reply read by its content-length (the server
 * sends one on every non-streamed reply). Ours, instead of node:http's client: on this machine
 * that client's own work added ~0.9 ms to every c=1 request (timestamps along the path: 0.92
 * against 0.47 ms from the send to the server's request event, 0.39 against 0.13 ms from the
 * server's write to the whole reply parsed), 3-4% of a 48-token request, which the load test
 * would have charged to the server.
 */
class Connection {
  private socket: Socket;
  private buf: Buffer = Buffer.alloc(0);
  private waiter?: { resolve(r: { status: number; body: string }): void; reject(e: Error): void };
  private closed?: Error;
  readonly ready: Promise<void>;

  constructor(private host: string, port: number) {
    this.socket = connect(port, host);
    this.socket.setNoDelay(true);
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('connect', resolve);
      this.socket.once('error', reject);
    });
    this.socket.on('data', (b: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, b]) : b;
      this.parse();
    });
    const end = (e?: Error) => {
      this.closed = e ?? new Error('the server closed the connection');
      this.waiter?.reject(this.closed);
      this.waiter = undefined;
    };
    this.socket.on('error', end);
    this.socket.on('close', () => end());
  }

  /** A reply is complete once its head and content-length bytes of body are in. */
  private parse(): void {
    if (!this.waiter) return;
    const h = this.buf.indexOf('\r\n\r\n');
    if (h < 0) return;
    const head = this.buf.toString('latin1', 0, h);
    const len = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!len) return this.fail(new Error(`a reply without content-length: ${head.split('\r\n')[0]}`));
    const n = Number(len[1]);
    if (this.buf.length < h + 4 + n) return;
    const body = this.buf.toString('utf8', h + 4, h + 4 + n);
    this.buf = this.buf.subarray(h + 4 + n);
    const w = this.waiter;
    this.waiter = undefined;
    w.resolve({ status: Number(head.slice(9, 12)), body });
  }

  private fail(e: Error): void {
    this.waiter?.reject(e);
    this.waiter = undefined;
    this.socket.destroy();
  }

  send(method: string, path: string, body = ''): Promise<{ status: number; body: string }> {
    if (this.closed) return Promise.reject(this.closed);
    if (this.waiter) return Promise.reject(new Error('one request at a time per connection'));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      const head = `${method} ${path} HTTP/1.1\r\nhost: ${this.host}\r\n${body ? `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` : ''}\r\n`;
      this.socket.write(head + body);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

async function complete(conn: Connection, prompt: number[], maxTokens: number): Promise<{ ids: number[]; ms: number }> {
  const start = performance.now();
  const r = await conn.send('POST', '/v1/completions', JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0 }));
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body}`);
  return { ids: JSON.parse(r.body).choices[0].token_ids, ms: performance.now() - start };
}

async function open(url: string): Promise<Connection> {
  const u = new URL(url), conn = new Connection(u.hostname, Number(u.port));
  await conn.ready;
  const r = await conn.send('GET', '/health');
  if (r.status !== 200) throw new Error(`GET /health: HTTP ${r.status}`);
  return conn;
}

async function run(job: LevelJob): Promise<LevelResult> {
  const replies: LevelResult['replies'] = new Array(job.prompts.length);
  let next = 0;
  // Connections are kept alive within a level only: a server closes idle ones (after 5 s), and a
  // request racing that close would fail. The level's c connections open before its clock
  // starts (one GET /health each, at once): a kept-alive client does not connect per request,
  // and connecting made the first requests reach the server one engine step apart.
  const conns = await Promise.all(Array.from({ length: job.concurrency }, () => open(job.url)));
  // While the level runs, the clients' thread polls instead of sleeping between replies: on this
  // machine (a VM) a thread that sleeps through a 10 ms reply takes ~0.6 ms to wake (a bare
  // node:http server answering after 10 ms of work: 1.3 ms per request over its work, 0.7 ms
  // with the client polling), which is the client's latency, not the server's.
  let polling = true;
  const poll = () => {
    if (polling) setImmediate(poll);
  };
  setImmediate(poll);
  const start = performance.now();
  try {
    await Promise.all(conns.map(async (conn) => {
      while (next < job.prompts.length) {
        const i = next++;
        replies[i] = await complete(conn, job.prompts[i], job.maxTokens);
      }
    }));
    return { replies, wallMs: performance.now() - start };
  } finally {
    polling = false;
    for (const c of conns) c.close();
  }
}

// 'spin' / 'rest': poll as during a level, with no requests, until told to rest: the load test's
// single-request yardstick runs beside the same busy client thread as the servers do (one of this
// machine's two cores), so their ratio does not credit the yardstick with a core the servers lacked.
let spinning = false;
const spin = () => {
  if (spinning) setImmediate(spin);
};
parentPort!.on('message', (job: LevelJob | 'close' | 'spin' | 'rest') => {
  if (job === 'close') {
    parentPort!.close();
    return;
  }
  if (job === 'spin' || job === 'rest') {
    if (job === 'spin' && !spinning) setImmediate(spin);
    spinning = job === 'spin';
    parentPort!.postMessage({ ok: true });
    return;
  }
  run(job).then((r) => parentPort!.postMessage({ ok: r }), (e: Error) => parentPort!.postMessage({ error: e.message }));
});
