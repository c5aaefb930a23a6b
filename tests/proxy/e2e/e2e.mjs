// paygent-proxy end to end with the official SDKs: node e2e.mjs PROXY_BINARY FIXTURES_DIR
// A fake provider (this process, loopback) replays tests/fixtures/proxy; paygent-proxy runs as a
// child process in front of it; the SDKs talk to the proxy. Exits non-zero on the first failure.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const [proxyBinary, fixtures] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const fixture = (name) => readFileSync(path.join(fixtures, name), 'utf8');
const events = (text) => text.split('\n\n').filter((e) => e.length).map((e) => e + '\n\n');

// --- the fake provider -------------------------------------------------------------------------
let hits = 0;
const upstream = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', async () => {
    hits++;
    const request = JSON.parse(body);
    const anthropic = req.url.startsWith('/v1/messages');
    if (JSON.stringify(request).includes('SLOW')) await new Promise((r) => setTimeout(r, 300));
    if (!request.stream) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(fixture(anthropic ? 'anthropic-messages.json' : 'openai-chat.json'));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const endless = JSON.stringify(request).includes('ENDLESS');
    const list = endless
      ? Array.from({ length: 200 }, () =>
          `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4-turbo","choices":[{"index":0,"delta":{"content":"abcdefgh"},"finish_reason":null}]}\n\n`)
      : events(fixture(anthropic ? 'anthropic-messages-stream.sse' : 'openai-chat-stream.sse'));
    for (const e of list) {
      if (res.destroyed) return;
      res.write(e);
      if (endless) await new Promise((r) => setTimeout(r, 10));
    }
    res.end();
  });
});
await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
const upstreamUrl = `http://127.0.0.1:${upstream.address().port}`;

// --- paygent-proxy ----------------------------------------------------------------------------
const proxy = spawn(proxyBinary, ['--listen', '127.0.0.1:0', '--store', '', '--plans', path.join(here, 'plans.json'),
  '--upstream-openai', upstreamUrl, '--upstream-anthropic', upstreamUrl], { stdio: ['ignore', 'pipe', 'inherit'] });
const proxyUrl = await new Promise((resolve, reject) => {
  proxy.on('exit', (code) => reject(new Error(`paygent-proxy exited with ${code}`)));
  proxy.stdout.on('data', (d) => {
    const m = /listening on ([\d.]+):(\d+)/.exec(String(d));
    if (m) resolve(`http://${m[1]}:${m[2]}`);
  });
});
const spend = async (user) => {
  const r = await fetch(`${proxyUrl}/paygent/report?user=${encodeURIComponent(user)}`);
  return r.ok ? (await r.json()).spend_nanos : 0;
};
const waitFor = async (check) => {
  for (let i = 0; i < 200; i++) { if (await check()) return true; await new Promise((r) => setTimeout(r, 25)); }
  return false;
};

const openai = new OpenAI({ apiKey: 'sk-test', baseURL: `${proxyUrl}/v1`, maxRetries: 2 });
const anthropic = new Anthropic({ apiKey: 'sk-ant-test', baseURL: proxyUrl, maxRetries: 2 });
const chatCost = 12 * 2500 + 5 * 10000;   // the fixture's usage at the plan's gpt-4o rates
const claudeCost = 20 * 3000 + 8 * 15000;
const results = [];
const check = async (name, body) => {
  await body();
  results.push(name);
  console.log(`ok  ${name}`);
};

try {
  await check('openai JSON metered exactly, cost in a header', async () => {
    const { data, response } = await openai.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], user: 'e2e-a' }).withResponse();
    assert.equal(data.choices[0].message.content, 'Hello there!');
    assert.equal(response.headers.get('x-paygent-cost-nanos'), String(chatCost));
    assert.equal(await spend('e2e-a'), chatCost);
  });
  await check('openai stream metered exactly (usage chunk added, then removed)', async () => {
    const stream = await openai.chat.completions.create({ model: 'gpt-4o', stream: true, user: 'e2e-b',
      messages: [{ role: 'user', content: 'hi' }] });
    let text = '';
    for await (const chunk of stream) {
      assert.ok(!chunk.usage, 'the caller did not ask for usage');
      text += chunk.choices[0]?.delta?.content ?? '';
    }
    assert.equal(text, 'Hello there!');
    assert.equal(await spend('e2e-b'), chatCost);
  });
  await check('anthropic JSON and stream metered exactly', async () => {
    const message = await anthropic.messages.create({ model: 'claude-3-5-sonnet', max_tokens: 64,
      metadata: { user_id: 'e2e-c' }, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(message.content[0].text, 'Hello there!');
    const stream = anthropic.messages.stream({ model: 'claude-3-5-sonnet', max_tokens: 64,
      metadata: { user_id: 'e2e-c' }, messages: [{ role: 'user', content: 'hi' }] });
    const final = await stream.finalMessage();
    assert.equal(final.usage.output_tokens, 8);
    assert.equal(await spend('e2e-c'), 2 * claudeCost);
  });
  await check('over the cap: OpenAI RateLimitError naming the limit, no retry reaches upstream', async () => {
    const before = hits;
    await assert.rejects(
      openai.chat.completions.create({ model: 'gpt-4o-mini', user: 'e2e-d', messages: [{ role: 'user', content: 'hello there' }] }),
      (e) => e instanceof OpenAI.RateLimitError && e.status === 429 && /model_limit:gpt-4o-mini/.test(e.message) &&
        /resets/.test(e.message));
    assert.equal(hits, before);
  });
  await check('over the cap: Anthropic RateLimitError naming the limit, no retry reaches upstream', async () => {
    const before = hits;
    await assert.rejects(
      anthropic.messages.create({ model: 'claude-3-haiku', max_tokens: 50, metadata: { user_id: 'e2e-e' },
        messages: [{ role: 'user', content: 'hello there' }] }),
      (e) => e instanceof Anthropic.RateLimitError && /model_limit:claude-3-haiku/.test(e.message));
    assert.equal(hits, before);
  });
  await check('a stream cut at the cap reaches the SDK as an error naming the limit', async () => {
    const stream = await openai.chat.completions.create({ model: 'gpt-4-turbo', stream: true, user: 'e2e-f',
      messages: [{ role: 'user', content: 'ENDLESS' }] });
    let chunks = 0;
    await assert.rejects((async () => { for await (const _ of stream) chunks++; })(),
      (e) => e instanceof OpenAI.APIError && /paygent/.test(e.message) && /cut at the hard cap/.test(e.message));
    assert.ok(chunks > 0 && chunks < 200, `chunks forwarded: ${chunks}`);
    assert.ok(await spend('e2e-f') > 0);
  });
  await check('a client that abandons a stream is still metered', async () => {
    const stream = await openai.chat.completions.create({ model: 'gpt-4o', stream: true, user: 'e2e-g', max_tokens: 1000,
      messages: [{ role: 'user', content: 'ENDLESS' }] });
    for await (const _ of stream) break;  // the SDK aborts the request
    assert.ok(await waitFor(async () => (await spend('e2e-g')) > 0), 'metered after the client left');
  });
  await check('concurrent calls at a cap do not overshoot it', async () => {
    const before = hits;
    const body = { model: 'gpt-3.5-turbo', max_tokens: 10, user: 'e2e-h', messages: [{ role: 'user', content: 'SLOW' }] };
    const estimate = Math.ceil(JSON.stringify(body).length / 4) + 10;  // what the proxy reserves, in tokens
    const settled = await Promise.allSettled(Array.from({ length: 20 }, () =>
      new OpenAI({ apiKey: 'sk-test', baseURL: `${proxyUrl}/v1`, maxRetries: 0 }).chat.completions.create(body)));
    const admitted = settled.filter((s) => s.status === 'fulfilled').length;
    const refused = settled.filter((s) => s.status === 'rejected' && s.reason instanceof OpenAI.RateLimitError).length;
    assert.equal(admitted + refused, 20);
    assert.ok(admitted >= 1 && admitted * estimate <= 300, `admitted ${admitted} of estimate ${estimate}`);
    assert.equal(hits - before, admitted);
  });
  console.log(`PASSED: ${results.length} checks`);
} finally {
  proxy.kill('SIGTERM');
  upstream.close();
  upstream.closeAllConnections?.();
}
