/**
 * A minimal HTTP/1.1 client for the load test's and the path timing's clients (scripts/load-client.ts,
 * scripts/serve-path.ts): loopback, JSON bodies, replies with a content-length.
 */
import { connect, type Socket } from 'node:net';

/**
 * One kept-alive HTTP/1.1 connection, one request at a time (a closed-loop client), written
 * over node:net: the request in one write, the reply read by its content-length (the server
 * sends one on every non-streamed reply). Ours, instead of node:http's client: on this machine
 * that client's own work added ~0.7-0.9 ms to every c=1 request (scripts/serve-path.ts, loaded
 * machine: 0.89-0.92 against 0.42-0.47 ms from the send to the server's request event, 0.33-0.39
 * against 0.13-0.19 ms from the server's write to the whole reply parsed), 3-5% of a 48-token
 * request, which the load test would have charged to the server.
 */
export class Connection {
  private socket: Socket;
  private buf: Buffer = Buffer.alloc(0);
  private waiter?: { resolve(r: { status: number; body: string }): void; reject(e: Error): void };
  private closed?: Error;
  readonly ready: Promise<void>;
  /** When the current (or last) reply's first bytes arrived: process.hrtime in ms, comparable across threads. */
  firstByteAt = 0;

  constructor(private host: string, port: number) {
    this.socket = connect(port, host);
    this.socket.setNoDelay(true);
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('connect', resolve);
      this.socket.once('error', reject);
    });
    this.socket.on('data', (b: Buffer) => {
      if (this.buf.length === 0) this.firstByteAt = Number(process.hrtime.bigint()) / 1e6;
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

