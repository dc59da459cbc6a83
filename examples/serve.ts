/**
 * The server inside an existing node:http app (run: node --import tsx examples/serve.ts).
 * `createHandler` gives the OpenAI-compatible routes as a request handler; the app keeps its own
 * routes. Here the app listens on a free port, asks itself for a completion (streamed) and a
 * chat reply over HTTP, prints them as JSON, and shuts down.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHandler, loadGenerator } from '../src/index.ts';

// The embedded default pair (target + draft head); pass { model, draft } for your own.
const g = await loadGenerator({ keepWeights: true }); // serving builds its batch graphs from the weights
const eaglet = await createHandler(g, { maxBatch: 4, modelName: 'default' });

const app = createServer((req, res) => {
  if (req.url?.startsWith('/v1/') || req.url === '/metrics') return eaglet(req, res);
  res.end('my own app\n');
});
await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;

const stream = await fetch(`${base}/v1/completions`, {
  method: 'POST',
  body: JSON.stringify({ prompt: 'function add(a, b) {', max_tokens: 24, temperature: 0, stream: true }),
});
let text = '';
for (const event of (await stream.text()).split('\n\n')) {
  if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
  text += JSON.parse(event.slice(6)).choices[0].text;
}
const chat = await (await fetch(`${base}/v1/chat/completions`, {
  method: 'POST',
  body: JSON.stringify({ messages: [{ role: 'user', content: 'Write a loop' }], max_tokens: 16, temperature: 0 }),
})).json();
const own = await (await fetch(`${base}/`)).text();

console.log(JSON.stringify({ streamed: text, chat: chat.choices[0].message.content, chatTokens: chat.usage.completion_tokens, own }));
await eaglet.close(); // drains: running requests finish
app.close();
await g.dispose();
