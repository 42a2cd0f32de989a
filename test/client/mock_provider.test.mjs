// The mock provider (test/fixtures/mock-provider): the OpenAI images API
// shape, real PNGs (decoded by pngjs, an independent decoder, and by
// donatello.png_info), determinism, and every injected failure.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { PNG } from 'pngjs';
import { startMockProvider, parseFailures } from '../fixtures/mock-provider/server.mjs';
import { connect } from './lib/generation_db.mjs';

const SERVER = fileURLToPath(new URL('../fixtures/mock-provider/server.mjs', import.meta.url));
const CLI_PORT = 18811;
// each provider gets its own port (18820 and up), so no pooled connection to
// a stopped provider is ever reused
let nextPort = 18820;

// POST a generation request; returns { status, headers, body }.
async function generate(url, request, headers = {}) {
  const res = await fetch(`${url}/v1/images/generations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof request === 'string' ? request : JSON.stringify(request),
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

// The PNG buffers of a successful answer.
function images(answer) {
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.data.map((d) => Buffer.from(d.b64_json, 'base64'));
}

// Run fn against a fresh in-process provider.
async function withProvider(options, fn) {
  const provider = await startMockProvider({ port: nextPort++, ...options });
  try {
    return await fn(provider);
  } finally {
    await provider.close();
  }
}

test('mock provider returns real PNGs of the requested size, in the OpenAI response shape', async () => {
  await withProvider({}, async (p) => {
    for (const size of ['1024x1024', '1792x1024', '256x256']) {
      const answer = await generate(p.url, { model: 'dall-e-3', prompt: 'a fox in a misty forest', n: 1, size, quality: 'standard', response_format: 'b64_json' });
      assert.equal(typeof answer.body.created, 'number');
      assert.equal(answer.body.data.length, 1);
      assert.equal(answer.body.data[0].revised_prompt, 'a fox in a misty forest');
      const png = PNG.sync.read(images(answer)[0]);
      const [w, h] = size.split('x').map(Number);
      assert.equal(png.width, w);
      assert.equal(png.height, h);
      assert.equal(png.depth, 8);
      assert.equal(png.colorType, 2);
    }
  });
});

test('mock provider images are deterministic in model, prompt, size and index', async () => {
  await withProvider({}, async (p) => {
    const base = { model: 'm1', prompt: 'a red bicycle', size: '256x256' };
    const [a] = images(await generate(p.url, base));
    const [again] = images(await generate(p.url, base));
    const [otherPrompt] = images(await generate(p.url, { ...base, prompt: 'a blue bicycle' }));
    const [otherModel] = images(await generate(p.url, { ...base, model: 'm2' }));
    const pair = images(await generate(p.url, { ...base, n: 2 }));
    assert.ok(a.equals(again), 'same request, same bytes');
    assert.ok(!a.equals(otherPrompt), 'another prompt, another image');
    assert.ok(!a.equals(otherModel), 'another model, another image');
    assert.equal(pair.length, 2);
    assert.ok(pair[0].equals(a), 'the first of n is the single image');
    assert.ok(!pair[0].equals(pair[1]), 'the images of one request differ');
    // the pixels differ too, not only the bytes
    const pa = PNG.sync.read(a).data;
    const pb = PNG.sync.read(otherPrompt).data;
    assert.ok(!pa.equals(pb));
  });
});

test('donatello.png_info reads the mock provider images as pngjs does', async () => {
  const db = await connect('mock_provider');
  try {
    await withProvider({}, async (p) => {
      for (const size of ['64x64', '512x768', '1792x1024']) {
        const [bytes] = images(await generate(p.url, { model: 'm', prompt: `size ${size}`, size }));
        const decoded = PNG.sync.read(bytes);
        const { rows } = await db.query('SELECT donatello.png_info($1) AS info', [bytes]);
        assert.deepEqual(rows[0].info, {
          mime_type: 'image/png', width: decoded.width, height: decoded.height, bit_depth: decoded.depth,
          color_type: decoded.colorType, color: 'rgb', interlaced: false,
        });
      }
      // one altered byte in the IHDR chunk is caught by its CRC
      const [bytes] = images(await generate(p.url, { model: 'm', prompt: 'crc', size: '64x64' }));
      bytes[20] ^= 1;
      await assert.rejects(db.query('SELECT donatello.png_info($1)', [bytes]),
        (e) => e.code === 'DNV01' && /CRC/.test(e.detail));
    });
  } finally {
    await db.end();
  }
});

test('mock provider fails with 500 for one model only, until cleared', async () => {
  await withProvider({}, async (p) => {
    p.setFailure({ model: 'broken', mode: '500' });
    for (let i = 0; i < 3; i++) {
      const answer = await generate(p.url, { model: 'broken', prompt: 'x', size: '64x64' });
      assert.equal(answer.status, 500);
      assert.equal(answer.body.error.type, 'server_error');
    }
    assert.equal((await generate(p.url, { model: 'healthy', prompt: 'x', size: '64x64' })).status, 200);
    const control = await fetch(`${p.url}/_mock/failures?model=broken`, { method: 'DELETE' });
    assert.deepEqual(await control.json(), []);
    assert.equal((await generate(p.url, { model: 'broken', prompt: 'x', size: '64x64' })).status, 200);
  });
});

test('mock provider fails a given number of times, then answers (retries succeed)', async () => {
  await withProvider({}, async (p) => {
    const set = await fetch(`${p.url}/_mock/failures`, {
      method: 'POST', body: JSON.stringify({ model: 'flaky', mode: '500', count: 2 }),
    });
    assert.equal(set.status, 200);
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await generate(p.url, { model: 'flaky', prompt: 'x', size: '64x64' })).status);
    assert.deepEqual(statuses, [500, 500, 200]);
    assert.deepEqual(p.requests().map((r) => r.outcome), ['500', '500', 200]);
  });
});

test('mock provider answers 429 with Retry-After', async () => {
  await withProvider({}, async (p) => {
    p.setFailure({ model: 'busy', mode: '429', count: 1, retry_after: 7 });
    const limited = await generate(p.url, { model: 'busy', prompt: 'x', size: '64x64' });
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get('retry-after'), '7');
    assert.equal(limited.body.error.code, 'rate_limit_exceeded');
    assert.equal((await generate(p.url, { model: 'busy', prompt: 'x', size: '64x64' })).status, 200);
  });
});

test('mock provider times out: it accepts the request and never answers', async () => {
  await withProvider({}, async (p) => {
    p.setFailure({ model: 'slow', mode: 'timeout', count: 1 });
    await assert.rejects(
      fetch(`${p.url}/v1/images/generations`, {
        method: 'POST',
        body: JSON.stringify({ model: 'slow', prompt: 'x', size: '64x64' }),
        signal: AbortSignal.timeout(300),
      }),
      (e) => e.name === 'TimeoutError',
    );
    assert.equal(p.requests()[0].outcome, 'timeout');
    // the next request is answered
    assert.equal((await generate(p.url, { model: 'slow', prompt: 'x', size: '64x64' })).status, 200);
  });
});

test('mock provider checks the API key when it has one', async () => {
  await withProvider({ apiKey: 'sk-mock-123' }, async (p) => {
    const request = { model: 'm', prompt: 'x', size: '64x64' };
    const missing = await generate(p.url, request);
    const wrong = await generate(p.url, request, { authorization: 'Bearer sk-other' });
    const right = await generate(p.url, request, { authorization: 'Bearer sk-mock-123' });
    assert.equal(missing.status, 401);
    assert.equal(missing.body.error.code, 'invalid_api_key');
    assert.equal(wrong.status, 401);
    assert.equal(right.status, 200);
    assert.deepEqual(p.requests().map((r) => r.authorized), [false, false, true]);
  });
});

test('mock provider refuses malformed requests as OpenAI does (400, 404, 405)', async () => {
  await withProvider({ models: ['known'] }, async (p) => {
    const cases = [
      ['not json', '{', null],
      ['no prompt', { model: 'known' }, 'prompt'],
      ['n = 0', { model: 'known', prompt: 'x', n: 0 }, 'n'],
      ['size', { model: 'known', prompt: 'x', size: 'big' }, 'size'],
      ['quality', { model: 'known', prompt: 'x', quality: 'ultra' }, 'quality'],
      ['url format', { model: 'known', prompt: 'x', response_format: 'url' }, 'response_format'],
    ];
    for (const [label, body, param] of cases) {
      const answer = await generate(p.url, body);
      assert.equal(answer.status, 400, label);
      assert.equal(answer.body.error.type, 'invalid_request_error', label);
      assert.equal(answer.body.error.param, param, label);
    }
    const unknown = await generate(p.url, { model: 'unknown', prompt: 'x', size: '64x64' });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'model_not_found');
    assert.equal((await fetch(`${p.url}/v1/images/generations`)).status, 405);
    assert.equal((await fetch(`${p.url}/v1/nothing`)).status, 404);
  });
});

test('mock provider runs from the command line with failures from the environment', async () => {
  assert.deepEqual(parseFailures('a=500:2, b=timeout'), [
    { model: 'a', mode: '500', count: 2 }, { model: 'b', mode: 'timeout', count: undefined }]);
  assert.throws(() => parseFailures('a=404'));
  const child = spawn(process.execPath, [SERVER, '--port', String(CLI_PORT)], {
    env: { ...process.env, MOCK_PROVIDER_FAIL: 'down=500' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const line = await new Promise((resolve, reject) => {
      child.stdout.once('data', (d) => resolve(d.toString()));
      child.once('exit', (code) => reject(new Error(`mock provider exited with ${code}`)));
    });
    assert.match(line, new RegExp(`^mock-provider listening on http://127\\.0\\.0\\.1:${CLI_PORT}`));
    const url = `http://127.0.0.1:${CLI_PORT}`;
    assert.equal((await generate(url, { model: 'down', prompt: 'x', size: '64x64' })).status, 500);
    assert.equal((await generate(url, { model: 'up', prompt: 'x', size: '64x64' })).status, 200);
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
});
