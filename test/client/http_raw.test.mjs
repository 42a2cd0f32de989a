// The HTTP layer at the socket level: malformed requests, oversized headers,
// invalid JSON and percent-encoding, unknown columns, SQL-injection attempts in
// filters, select=, order= and identifiers. Each must be answered 4xx, and the
// server must keep answering afterwards; nothing may reach SQL unchecked.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { URL_BASE, connect, setup, value } from './lib/http_fixture.mjs';

const S = 'http_raw';
const { hostname, port } = new URL(URL_BASE);
let db;

// Send raw bytes, read until the server closes; returns { status, head, body }.
function raw(bytes) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), hostname);
    const chunks = [];
    sock.setTimeout(20000, () => {
      sock.destroy();
      reject(new Error('socket timeout'));
    });
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', (e) => (e.code === 'ECONNRESET' ? null : reject(e)));
    sock.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      const split = text.indexOf('\r\n\r\n');
      resolve({ status: m ? Number(m[1]) : 0, head: text.slice(0, split), body: text.slice(split + 4), text });
    });
    sock.write(bytes);
  });
}

// A GET of a target with Connection: close.
function get(target, headers = '') {
  return raw(`GET ${target} HTTP/1.1\r\nHost: x\r\nAccept-Profile: ${S}\r\n${headers}Connection: close\r\n\r\n`);
}

// The server still answers, and the test table is intact.
async function stillServing() {
  const r = await get('/items?select=id&id=eq.1');
  assert.equal(r.status, 200);
  assert.equal(r.body.trim().endsWith('[{"id":1}]'), true, r.body);
  assert.equal(await value(db, `SELECT count(*)::int FROM ${S}.items`), 10);
}

before(async () => {
  db = await connect();
  await setup(db, S);
});

after(async () => {
  await db.end();
});

test('malformed request lines are refused and the server answers on', async () => {
  // libmicrohttpd closes the connection on a line it cannot parse, answers 505
  // to an unknown HTTP version
  for (const line of ['GARBAGE\r\n\r\n', 'GET\r\n\r\n', 'GET /items HTTP/9.9\r\n\r\n']) {
    const r = await raw(line);
    assert.ok(r.status === 0 || (r.status >= 400 && r.status < 600), `${JSON.stringify(line)} -> ${r.status}`);
  }
  // a connection stuck on binary garbage does not hold up the others
  const stuck = net.connect(Number(port), hostname);
  stuck.on('error', () => {});
  stuck.write('\x00\x01\x02 / HTTP/1.1\r\n\r\n');
  await stillServing();
  stuck.destroy();
  await stillServing();
});

test('oversized headers are refused with a 4xx', async () => {
  const r = await get('/items', `X-Big: ${'a'.repeat(64 * 1024)}\r\n`);
  assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}`);
  const many = await get('/items', Array.from({ length: 2000 }, (_, i) => `X-H${i}: v\r\n`).join(''));
  assert.ok(many.status >= 400 && many.status < 500, `status ${many.status}`);
  await stillServing();
});

test('bad percent-encoding and NUL bytes: 400 PGRST100', async () => {
  for (const target of ['/items?id=eq.%zz', '/items?id=eq.%4', '/ite%ms', '/items?na%00me=eq.1', '/items?id=eq.1%00']) {
    const r = await get(target);
    assert.equal(r.status, 400, target);
    assert.equal(JSON.parse(r.body).code, 'PGRST100', target);
  }
  await stillServing();
});

test('invalid JSON bodies: 400', async () => {
  for (const body of ['{', '[1,2', '{"id": }', 'null x', '"just a string"', '[1, 2]']) {
    const r = await raw(`POST /items HTTP/1.1\r\nHost: x\r\nContent-Profile: ${S}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    assert.equal(r.status, 400, body);
  }
  await stillServing();
});

test('a chunked body over the limit is read, discarded and answered 413', async () => {
  const chunk = 'x'.repeat(600 * 1024);
  const size = chunk.length.toString(16);
  const r = await raw(`POST /codes HTTP/1.1\r\nHost: x\r\nContent-Profile: ${S}\r\nContent-Type: application/json\r\n` +
    `Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n${size}\r\n${chunk}\r\n${size}\r\n${chunk}\r\n0\r\n\r\n`);
  assert.equal(r.status, 413);
  assert.equal(JSON.parse(r.body).code, 'DNH01');
  await stillServing();
});

test('unknown columns in select, filters, order and columns=: 400 42703', async () => {
  for (const target of ['/items?select=nope', '/items?nope=eq.1', '/items?order=nope', '/items?or=(nope.eq.1)',
    '/items?select=id,ctid', '/items?xmin=eq.1']) {
    const r = await get(target);
    assert.equal(r.status, 400, target);
    assert.equal(JSON.parse(r.body).code, '42703', target);
  }
  await stillServing();
});

test('SQL injection attempts in values, select, order and identifiers never reach SQL', async () => {
  const attempts = [
    `/items?id=eq.${encodeURIComponent('1; DROP TABLE http_raw.items; --')}`,
    `/items?name=eq.${encodeURIComponent("' OR 1=1 --")}`,
    `/items?${encodeURIComponent('id; DROP TABLE http_raw.items; --')}=eq.1`,
    `/items?${encodeURIComponent('"id"); DROP TABLE http_raw.items; --')}=eq.1`,
    `/items?select=${encodeURIComponent('id,(SELECT 1)')}`,
    `/items?select=${encodeURIComponent('id::int); DROP TABLE http_raw.items; --')}`,
    `/items?select=${encodeURIComponent('x:id::text[] ; drop')}`,
    `/items?select=${encodeURIComponent('pg_sleep(10)')}`,
    `/items?order=${encodeURIComponent('id; DROP TABLE http_raw.items')}`,
    `/items?order=${encodeURIComponent('(SELECT 1).desc')}`,
    `/items?or=${encodeURIComponent('(id.eq.1)or(1=1)')}`,
    `/items?or=${encodeURIComponent('(id.eq.1,name.eq.x) OR 1=1')}`,
    `/items?id=in.${encodeURIComponent('(1) OR 1=1')}`,
    `/items?active=is.${encodeURIComponent('true OR 1=1')}`,
    `/items?limit=${encodeURIComponent('1; DROP TABLE http_raw.items')}`,
    `/items?offset=-1`,
    `/${encodeURIComponent('items; DROP TABLE http_raw.items')}`,
    `/${encodeURIComponent('pg_catalog.pg_class')}`,
    `/rpc/${encodeURIComponent('add(1,1); DROP TABLE http_raw.items; --')}`,
    `/rpc/add?a=${encodeURIComponent('1); DROP TABLE http_raw.items; --')}`,
  ];
  for (const target of attempts) {
    const r = await get(target);
    if (r.status === 200) {
      // only a value compared as a value may succeed, and it matches nothing
      assert.equal(JSON.parse(r.body).length, 0, `${target} -> ${r.body}`);
    } else {
      assert.ok(r.status >= 400 && r.status < 500, `${target} -> ${r.status} ${r.body}`);
    }
  }
  await stillServing();
});

test('keep-alive: several requests on one connection', async () => {
  const one = `GET /items?select=id&id=eq.2 HTTP/1.1\r\nHost: x\r\nAccept-Profile: ${S}\r\n\r\n`;
  const last = `GET /items?select=id&id=eq.3 HTTP/1.1\r\nHost: x\r\nAccept-Profile: ${S}\r\nConnection: close\r\n\r\n`;
  const r = await raw(one + one + last);
  assert.equal(r.text.match(/HTTP\/1\.1 200/g).length, 3);
  assert.ok(r.text.includes('[{"id":3}]'));
});

test('unknown method and path: 405 and 404 in PostgREST shape', async () => {
  const put = await raw(`PUT /items HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  assert.equal(put.status, 405);
  const deep = await get('/a/b/c');
  assert.equal(deep.status, 404);
  assert.equal(JSON.parse(deep.body).code, 'PGRST125');
  await stillServing();
});
