// The generation pipeline over HTTP, as an application sees it: the
// unmodified npm @supabase/postgrest-js client calls /rpc/generate,
// /rpc/generation_status and /rpc/budget_status with an API key or with a JWT
// from /rpc/login; plain fetch gets the image from its signed URL
// (GET /images/{id}?exp=&sig=), decoded with pngjs; the generation.* webhooks
// are verified with standardwebhooks (lib/webhook-receiver.mjs). Refusals
// arrive as HTTP statuses with their SQLSTATE: DNS01/DNS02 403, DNB01 402.
// Ends with 10 HTTP clients x 100 generate calls against a budget for
// exactly 50.
//
// Runs in the worker database (PG*, DONATELLO_HTTP_URL from test/bin/cluster env).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import pg from 'pg';
import { PNG } from 'pngjs';
import { PostgrestClient } from '@supabase/postgrest-js';
import { Receiver } from './lib/webhook-receiver.mjs';
import { SCHEMAS, URL_BASE } from './lib/http_fixture.mjs';
import * as fx from './lib/generation_fixture.mjs';
import { startMockProvider } from '../fixtures/mock-provider/server.mjs';

const PROVIDER_KEY = 'sk-generation-http-0123456789';
const PASSWORD = 'Copper-Lantern-Orbit-73';
// a schema of this file's own, with a function raising any SQLSTATE
const ERRORS_SCHEMA = 'gen_http_errors';
// sizes no other test file's models draw, so only this file's models are eligible
const SIZE = '320x192';
const CROWD_SIZE = '384x384';
const tag = `${process.pid}${Date.now() % 100000}`;
const db = new pg.Client();
const receiver = new Receiver();
const { eventually } = fx;
let mock;
let world;
let viaKey; // postgrest-js with the member's API key
let viaJwt; // postgrest-js with the member's access token from /rpc/login
let schemasBefore; // donatello.http_schemas before this file

// A postgrest-js client on donatello_api with these headers.
function client(headers) {
  return new PostgrestClient(URL_BASE, { schema: 'donatello_api', headers });
}

// Log in over HTTP and return a client carrying the access token.
async function loginClient(email, slug) {
  const { data, error, status } = await client({}).rpc('login', { email, password: PASSWORD, org_slug: slug });
  assert.equal(error, null, JSON.stringify(error));
  assert.equal(status, 200);
  assert.equal(data.access_token.split('.').length, 3, 'a JWT');
  return client({ Authorization: `Bearer ${data.access_token}` });
}

// An API key of a user (created as superuser) and a client carrying it.
async function keyClient(user) {
  const key = await fx.value(db, "SELECT donatello.create_api_key($1, 'generation-http', '{*}')", [user]);
  return client({ 'X-API-Key': key.key });
}

// POST /rpc/generate; returns postgrest-js's { data, error, status }.
function generate(c, prompt, settings = { size: SIZE }) {
  return c.rpc('generate', { prompt, settings });
}

// A job id from a generate call that must succeed.
async function accepted(c, prompt, settings) {
  const { data, error, status } = await generate(c, prompt, settings);
  assert.equal(error, null, JSON.stringify(error));
  assert.equal(status, 200);
  assert.match(data, /^[0-9a-f-]{36}$/);
  return data;
}

// POST /rpc/generation_status until the job is completed or failed.
async function finished(c, job) {
  return eventually(async () => {
    const { data, error } = await c.rpc('generation_status', { job_id: job });
    assert.equal(error, null, JSON.stringify(error));
    return ['completed', 'failed'].includes(data.status) ? data : null;
  }, `job ${job}`);
}

// POST /rpc/budget_status: limit, spent, reserved as numbers.
async function budget(c, department) {
  const { data, error } = await c.rpc('budget_status', { department_id: department });
  assert.equal(error, null, JSON.stringify(error));
  const row = Array.isArray(data) ? data[0] : data;
  return { limit: Number(row.limit), spent: Number(row.spent), reserved: Number(row.reserved) };
}

// Micro-units of a difference of two amounts (exact comparisons of money).
const micros = (x) => Math.round(x * 1e6);

// GET (or another method) of a path on the HTTP layer, with the body as bytes.
async function httpGet(path, init = {}) {
  const res = await fetch(URL_BASE + path, init);
  const body = Buffer.from(await res.arrayBuffer());
  return { res, body, json: () => JSON.parse(body.toString('utf8')) };
}

before(async () => {
  await db.connect();
  mock = await startMockProvider({ apiKey: PROVIDER_KEY });
  const port = await receiver.listen(0);
  // the HTTP workers' sessions read the retry schedule from the configuration
  await fx.configure(db, {
    'donatello.allowed_hosts': '127.0.0.1',
    'donatello.generation_retry_backoff': '200ms, 400ms',
  });
  world = await fx.createGenerationWorld(db, {
    slug: `gen-http-${tag}`, tag, mock, apiKey: PROVIDER_KEY, password: PASSWORD,
    webhookUrl: `http://127.0.0.1:${port}/generation`,
    models: [
      ['h-primary', 'http-a', 0.04, 9, 9, 9, [SIZE]],
      ['h-backup', 'http-b', 0.05, 5, 5, 5, [SIZE]],
      ['h-primary', 'http-c', 0.01, 5, 5, 5, [CROWD_SIZE]],
    ],
  });
  receiver.expect('/generation', world.hookSecret);
  await db.query(`DROP SCHEMA IF EXISTS ${ERRORS_SCHEMA} CASCADE; CREATE SCHEMA ${ERRORS_SCHEMA};
    CREATE FUNCTION ${ERRORS_SCHEMA}.fail(code text) RETURNS int LANGUAGE plpgsql VOLATILE
      AS $$BEGIN RAISE EXCEPTION USING ERRCODE = code, MESSAGE = 'raised ' || code; END$$;
    GRANT USAGE ON SCHEMA ${ERRORS_SCHEMA} TO donatello_user;`);
  schemasBefore = await fx.value(db, "SELECT current_setting('donatello.http_schemas')");
  await fx.configure(db, { 'donatello.http_schemas': `${SCHEMAS}, ${ERRORS_SCHEMA}` });
  viaKey = await keyClient(world.user);
  viaJwt = await loginClient(world.email, `gen-http-${tag}`);
});

after(async () => {
  await fx.configure(db, {
    'donatello.allowed_hosts': null, 'donatello.generation_retry_backoff': null,
    'donatello.http_schemas': schemasBefore === 'donatello_api' || !schemasBefore ? null : schemasBefore,
  });
  await db.query(`DROP SCHEMA IF EXISTS ${ERRORS_SCHEMA} CASCADE`);
  if (world) await fx.dropProviders(db, world.providers);
  await db.end();
  await receiver.close();
  await mock.close();
});

test('API key: generate, poll the status, fetch the image by its signed URL (PNG, hash, ETag, 304, 403, 404, 400), budget settled, webhook verified', async () => {
  mock.clearFailures();
  const before = await budget(viaKey, world.design);
  const job = await accepted(viaKey, 'a lighthouse at night over HTTP');
  const s = await finished(viaKey, job);
  assert.equal(s.status, 'completed');
  assert.deepEqual(s.model, { provider: `h-primary-${tag}`, model: 'http-a' });
  assert.equal(s.estimated_cost, 0.05, 'reserved: the dearest model it may fall back to');
  assert.equal(s.actual_cost, 0.04);
  assert.equal(s.images.length, 1);

  // the budget over HTTP: spent the actual cost, nothing left reserved
  const afterBudget = await budget(viaKey, world.design);
  assert.equal(micros(afterBudget.spent - before.spent), 40000);
  assert.equal(afterBudget.reserved, 0);

  // the image, with plain fetch and no credentials: the signed URL is the credential
  const [image] = s.images;
  assert.match(image.url, /^\/images\/[0-9a-f-]{36}\?exp=\d+&sig=[A-Za-z0-9_-]{43}$/);
  const url = new URL(image.url, URL_BASE);
  const exp = Number(url.searchParams.get('exp'));
  const got = await httpGet(image.url);
  assert.equal(got.res.status, 200);
  assert.equal(got.res.headers.get('content-type'), 'image/png');
  assert.equal(Number(got.res.headers.get('content-length')), got.body.length);
  const png = PNG.sync.read(got.body);
  assert.equal(png.width, 320);
  assert.equal(png.height, 192);
  const sha = crypto.createHash('sha256').update(got.body).digest('hex');
  assert.equal(sha, image.content_hash);
  assert.equal(got.body.length, image.bytes);
  const etag = got.res.headers.get('etag');
  assert.equal(etag, `"${sha}"`);
  const cache = got.res.headers.get('cache-control');
  const maxAge = Number(/max-age=(\d+)/.exec(cache)[1]);
  assert.match(cache, /^private, max-age=\d+, immutable$/);
  assert.ok(maxAge > 0 && maxAge <= exp - Math.floor(Date.now() / 1000) + 1,
    `max-age ${maxAge} does not outlive the URL (exp ${exp})`);

  // HEAD: the same headers, no body
  const head = await httpGet(image.url, { method: 'HEAD' });
  assert.equal(head.res.status, 200);
  assert.equal(head.res.headers.get('etag'), etag);
  assert.equal(Number(head.res.headers.get('content-length')), got.body.length);
  assert.equal(head.body.length, 0);

  // a matching If-None-Match: 304 without the bytes; another tag: the image again
  let r = await httpGet(image.url, { headers: { 'If-None-Match': `"other", W/${etag}` } });
  assert.equal(r.res.status, 304);
  assert.equal(r.body.length, 0);
  assert.equal(r.res.headers.get('etag'), etag);
  r = await httpGet(image.url, { headers: { 'If-None-Match': '"0000"' } });
  assert.equal(r.res.status, 200);
  assert.equal(r.body.length, got.body.length);

  // a tampered signature, another expiry, an expired URL: 403 DNP01
  const sig = url.searchParams.get('sig');
  const tampered = sig.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'));
  for (const path of [
    `${url.pathname}?exp=${exp}&sig=${tampered}`,
    `${url.pathname}?exp=${exp + 1}&sig=${sig}`,
    `${url.pathname}?exp=${exp}&sig=`,
    await fx.value(db, "SELECT donatello.sign_image_url($1, now() - interval '1 minute')", [image.id]),
  ]) {
    r = await httpGet(path);
    assert.equal(r.res.status, 403, path);
    assert.equal(r.json().code, 'DNP01');
    assert.equal(r.res.headers.get('etag'), null, 'nothing about the image leaks');
  }
  // a valid signature for an image that does not exist: 404 DNV02
  r = await httpGet(await fx.value(db, "SELECT donatello.sign_image_url($1, now() + interval '1 minute')", [crypto.randomUUID()]));
  assert.equal(r.res.status, 404);
  assert.equal(r.json().code, 'DNV02');
  // a malformed id, exp or a missing sig: 400 DNV01
  for (const path of [
    `/images/not-a-uuid?exp=${exp}&sig=${sig}`,
    `/images/${image.id.replace(/-/g, '')}?exp=${exp}&sig=${sig}`,
    `${url.pathname}?exp=12x&sig=${sig}`,
    `${url.pathname}?exp=-1&sig=${sig}`,
    `${url.pathname}?exp=9999999999999999999999&sig=${sig}`,
    `${url.pathname}?sig=${sig}`,
    `${url.pathname}?exp=${exp}`,
  ]) {
    r = await httpGet(path);
    assert.equal(r.res.status, 400, path);
    assert.equal(r.json().code, 'DNV01');
  }
  // credentials are not needed, but ones sent along are verified
  r = await httpGet(image.url, { headers: { 'X-API-Key': 'dn_not_a_key' } });
  assert.equal(r.res.status, 401);
  // the route takes GET and HEAD only
  r = await httpGet(image.url, { method: 'POST' });
  assert.equal(r.res.status, 405);
  assert.equal(r.json().code, 'DNH02');

  // the webhook, verified by standardwebhooks; its URL is served by the route
  await receiver.until(() => receiver.deliveriesTo('/generation').some((d) => d.data.job_id === job), 60000, 'generation.completed');
  const d = receiver.deliveriesTo('/generation').find((x) => x.data.job_id === job);
  assert.equal(d.type, 'generation.completed');
  assert.equal(d.data.cost, 0.04);
  assert.equal(d.data.images[0].content_hash, sha);
  r = await httpGet(d.data.images[0].url);
  assert.equal(r.res.status, 200);
  assert.equal(crypto.createHash('sha256').update(r.body).digest('hex'), sha);
  assert.equal(receiver.rejected.length, 0);
});

test('JWT from /rpc/login: generate and read the status with the access token', async () => {
  mock.clearFailures();
  const job = await accepted(viaJwt, 'a kite over the dunes over HTTP');
  const s = await finished(viaJwt, job);
  assert.equal(s.status, 'completed');
  assert.equal(s.images[0].width, 320);
  const r = await httpGet(s.images[0].url);
  assert.equal(r.res.status, 200);
  assert.equal(PNG.sync.read(r.body).height, 192);
  // the API key's client sees the same job (same user)
  const { data } = await viaKey.rpc('generation_status', { job_id: job });
  assert.equal(data.job_id, job);
  // without credentials: 401
  const anon = await client({}).rpc('generation_status', { job_id: job });
  assert.equal(anon.status, 401);
});

test('a failing model: its retries and the fallback show in generation_status; settled at the fallback model\'s cost', async () => {
  mock.clearFailures();
  mock.setFailure({ model: 'http-a', mode: '500' });
  const before = await budget(viaJwt, world.design);
  const job = await accepted(viaJwt, 'a fox in a misty forest over HTTP');
  const s = await finished(viaJwt, job);
  mock.clearFailures();
  await fx.closeCircuits(db);
  assert.equal(s.status, 'completed');
  assert.deepEqual(s.calls.map((c) => [c.model, c.state, c.attempts.map((a) => a.status)]),
    [['http-a', 'failed', [500, 500, 500]], ['http-b', 'succeeded', [200]]]);
  assert.deepEqual(s.model, { provider: `h-backup-${tag}`, model: 'http-b' });
  assert.equal(s.actual_cost, 0.05);
  const afterBudget = await budget(viaJwt, world.design);
  assert.equal(micros(afterBudget.spent - before.spent), 50000);
  assert.equal(afterBudget.reserved, 0);
  const r = await httpGet(s.images[0].url);
  assert.equal(r.res.status, 200);
});

test('every model failing: the job fails with DNM01, the reservation is released (budget_status over HTTP), generation.failed sent', async () => {
  mock.clearFailures();
  mock.setFailure({ model: 'http-a', mode: '500' });
  mock.setFailure({ model: 'http-b', mode: '500' });
  const before = await budget(viaKey, world.design);
  const job = await accepted(viaKey, 'a castle on a hill over HTTP');
  const inFlight = await budget(viaKey, world.design);
  const s = await finished(viaKey, job);
  mock.clearFailures();
  await fx.closeCircuits(db);
  assert.equal(s.status, 'failed');
  assert.equal(s.error.code, 'DNM01');
  assert.deepEqual(s.calls.map((c) => [c.model, c.state]), [['http-a', 'failed'], ['http-b', 'failed']]);
  assert.equal(s.images.length, 0);
  // reserved while in flight (unless it already failed), released at the end
  assert.ok([0, 50000].includes(micros(inFlight.reserved - before.reserved)), JSON.stringify(inFlight));
  const afterBudget = await budget(viaKey, world.design);
  assert.equal(afterBudget.spent, before.spent, 'nothing spent');
  assert.equal(afterBudget.reserved, 0, 'the reservation was released');
  await receiver.until(() => receiver.deliveriesTo('/generation').some((d) => d.data.job_id === job), 60000, 'generation.failed');
  const d = receiver.deliveriesTo('/generation').find((x) => x.data.job_id === job);
  assert.equal(d.type, 'generation.failed');
  assert.equal(d.data.error.code, 'DNM01');
});

test('refusals as HTTP statuses: PII 403 DNS01, blocked term 403 DNS02, budget exhausted 402 DNB01; nothing reserved', async () => {
  const before = await budget(viaKey, world.design);
  let r = await generate(viaKey, 'poster for card 4111 1111 1111 1111');
  assert.equal(r.status, 403);
  assert.equal(r.error.code, 'DNS01');
  assert.equal(r.error.details, 'Found: credit_card.');
  assert.ok(!JSON.stringify(r.error).includes('4111'), 'the card number is never echoed');
  r = await generate(viaJwt, 'a gore scene');
  assert.equal(r.status, 403);
  assert.equal(r.error.code, 'DNS02');
  assert.match(r.error.details, /violence/);
  assert.deepEqual(await budget(viaKey, world.design), before);

  // a department whose budget (0.03) is below the estimated cost (0.05)
  const tiny = await fx.createDepartment(db, world.org, 'Tiny', 0.03);
  const poor = await keyClient(await fx.createMember(db, world.org, tiny, `poor-${tag}@example.com`));
  r = await generate(poor, 'a modest sketch');
  assert.equal(r.status, 402);
  assert.equal(r.error.code, 'DNB01');
  assert.equal(r.data, null);
  const b = await budget(poor, tiny);
  assert.deepEqual([b.limit, b.spent, b.reserved], [0.03, 0, 0]);
});

test('another organization cannot read a job over HTTP: 404 DNV02, as for an unknown job', async () => {
  const { data: job } = await viaKey.rpc('generate', { prompt: 'a quiet harbour over HTTP', settings: { size: SIZE } });
  const elsewhere = await fx.value(db, 'SELECT donatello.create_organization($1, $1)', [`gen-http-else-${tag}`]);
  const dept = await fx.createDepartment(db, elsewhere, 'Design', 1);
  const stranger = await keyClient(await fx.createMember(db, elsewhere, dept, `stranger-${tag}@example.com`));
  for (const id of [job, crypto.randomUUID()]) {
    const r = await stranger.rpc('generation_status', { job_id: id });
    assert.equal(r.status, 404);
    assert.equal(r.error.code, 'DNV02');
  }
  assert.equal((await finished(viaKey, job)).status, 'completed');
});

test('10 HTTP clients x 100 generate calls against a budget for exactly 50: exactly 50 accepted, the rest 402, invariants hold', async () => {
  mock.clearFailures();
  const dept = await fx.createDepartment(db, world.org, 'Crowd', 0.5); // 50 x 0.01 (http-c, the only 384x384 model)
  const email = `crowd-${tag}@example.com`;
  await fx.createMember(db, world.org, dept, email, PASSWORD);
  const clients = await Promise.all(Array.from({ length: 10 }, () => loginClient(email, `gen-http-${tag}`)));
  const refused = new Map();
  const jobs = [];
  await Promise.all(clients.map(async (c, n) => {
    for (let i = 0; i < 100; i++) {
      const { data, error, status } = await generate(c, `crowd ${n} request ${i}`, { size: CROWD_SIZE });
      if (error === null) {
        assert.equal(status, 200);
        jobs.push(data);
      } else {
        const k = `${status} ${error.code}`;
        refused.set(k, (refused.get(k) ?? 0) + 1);
      }
    }
  }));
  assert.equal(jobs.length, 50);
  assert.equal(new Set(jobs).size, 50);
  assert.ok([...refused.keys()].every((k) => k === '402 DNB01' || k === '402 DNB02'), [...refused.keys()].join());
  assert.equal([...refused.values()].reduce((a, b) => a + b, 0), 950);
  for (const job of jobs) assert.equal((await finished(clients[0], job)).status, 'completed');
  const b = await budget(clients[0], dept);
  assert.deepEqual([b.spent, b.reserved], [0.5, 0]);
  assert.deepEqual((await db.query('SELECT * FROM donatello.budget_check_invariants()')).rows, []);
});

test('every DN SQLSTATE of docs/errors.md is answered with the status the table gives', async () => {
  const doc = fs.readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const rows = [...doc.matchAll(/^\| `(DN[A-Z][0-9]{2})` \| ([^|]*) \| ([0-9]{3}) \|/gm)]
    .filter((m) => !m[2].includes('HTTP only'));
  assert.ok(rows.length >= 17, `${rows.length} codes read from docs/errors.md`);
  for (const code of ['DNV02', 'DNM01', 'DNS01', 'DNS02', 'DNB01', 'DNB02', 'DNP01']) {
    assert.ok(rows.some((m) => m[1] === code), `${code} is documented`);
  }
  const c = new PostgrestClient(URL_BASE, { schema: ERRORS_SCHEMA, headers: viaKey.headers });
  for (const [, code, , status] of rows) {
    const r = await c.rpc('fail', { code });
    assert.equal(r.error?.code, code);
    assert.equal(r.status, Number(status), `${code} -> ${r.status}, docs/errors.md says ${status}`);
  }
});
