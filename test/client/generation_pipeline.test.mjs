// The generation pipeline end to end, at SQL level (the HTTP layer's routes
// wrap the same functions): donatello.generate() for a principal, the
// dispatcher calling the mock provider (OpenAI images API shape), retries,
// fallback, final failure, the budget reserved, settled at the actual cost or
// released, the generation.* webhooks verified with `standardwebhooks`, the
// image served by its signed URL and decoded with `pngjs`, PII and content
// refusals, and 10 clients x 100 requests against a budget for exactly 50.
//
// Runs in the test cluster's donatello database, where the dispatcher works.
//   cd test/client && npm test      (PG* variables from test/bin/cluster env)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import pg from 'pg';
import { PNG } from 'pngjs';
import { Receiver } from './lib/webhook-receiver.mjs';
import * as fx from './lib/generation_fixture.mjs';
import { startMockProvider } from '../fixtures/mock-provider/server.mjs';

const API_KEY = 'sk-pipeline-test-key-0123456789';
const db = new pg.Client();
const receiver = new Receiver();
const tag = `${process.pid}${Date.now() % 100000}`;
const { eventually, refusal } = fx;
let mock;
let org;
let design; // department with a comfortable budget
let user;
let providers;

const value = (sql, params = []) => fx.value(db, sql, params);

// A client acting as a principal (request.jwt.claims), as the HTTP layer does.
async function as(client, userId) {
  await client.query("SELECT set_config('request.jwt.claims', $1, false)",
    [JSON.stringify({ sub: userId, org, role: 'donatello_user' })]);
}

async function generate(prompt, settings = {}, client = db) {
  return (await client.query('SELECT donatello_api.generate($1, $2) AS id', [prompt, settings])).rows[0].id;
}

async function status(jobId) {
  return value('SELECT donatello_api.generation_status($1)', [jobId]);
}

async function finished(jobId) {
  return eventually(async () => {
    const s = await status(jobId);
    return ['completed', 'failed'].includes(s.status) ? s : null;
  }, `job ${jobId}`);
}

async function budget(department) {
  return (await db.query('SELECT "limit", spent, reserved FROM donatello.budget_status($1)', [department])).rows[0];
}

before(async () => {
  await db.connect();
  mock = await startMockProvider({ apiKey: API_KEY });
  const port = await receiver.listen(0);
  await fx.configure(db, { 'donatello.allowed_hosts': '127.0.0.1' });
  // short backoff for most tests; the test of the schedule uses the default
  await db.query("SET donatello.generation_retry_backoff = '200ms, 400ms'");
  // two providers: a cheap, good primary and a dearer backup; a third model
  // is the only one drawing 512x512 (for the concurrency test)
  const world = await fx.createGenerationWorld(db, {
    slug: `pipe-${tag}`, tag, mock, apiKey: API_KEY,
    webhookUrl: `http://127.0.0.1:${port}/generation`,
    models: [
      ['primary', 'pipe-a', 0.04, 9, 9, 9, ['256x256']],
      ['backup', 'pipe-b', 0.05, 5, 5, 5, ['256x256']],
      ['primary', 'pipe-c', 0.01, 5, 5, 5, ['512x512']],
    ],
  });
  ({ org, design, user, providers } = world);
  receiver.expect('/generation', world.hookSecret);
  await as(db, user);
});

after(async () => {
  await fx.configure(db, { 'donatello.allowed_hosts': null });
  await fx.dropProviders(db, providers ?? []);
  await db.end();
  await receiver.close();
  await mock.close();
});

test('a generation completes: image stored and served by its signed URL, budget settled at the actual cost, webhook verified', async () => {
  mock.clearFailures();
  const before = await budget(design);
  const job = await generate('a lighthouse at night', { size: '256x256' });
  const queued = await status(job);
  assert.ok(['queued', 'started', 'completed'].includes(queued.status));
  assert.equal(queued.ranking.candidates[0].model, 'pipe-a', 'the scores are stored with the job');
  assert.equal(queued.estimated_cost, 0.05, 'the reservation covers the dearest model the job may fall back to');

  const s = await finished(job);
  assert.equal(s.status, 'completed');
  assert.deepEqual(s.model, { provider: `primary-${tag}`, model: 'pipe-a' });
  assert.equal(s.actual_cost, 0.04);
  assert.equal(s.calls.length, 1);
  assert.equal(s.calls[0].attempts.length, 1);
  assert.equal(s.calls[0].attempts[0].status, 200);

  // the provider saw the OpenAI request shape, authorized with the opened key
  const seen = mock.requests().filter((r) => r.prompt === 'a lighthouse at night');
  assert.equal(seen.length, 1);
  assert.equal(seen[0].model, 'pipe-a');
  assert.equal(seen[0].authorized, true);
  assert.equal(seen[0].response_format, 'b64_json');
  assert.equal(seen[0].size, '256x256');

  // the key was added by the dispatcher: it is nowhere in the outbox row, nor in the server log
  const row = (await db.query(
    `SELECT convert_from(donatello.secret_open('outbox_headers', o.id, o.headers_sealed), 'UTF8') AS headers, o.body, o.provider_id
       FROM donatello.outbox o JOIN donatello.generation_calls c ON c.request_id = o.id WHERE c.job_id = $1`, [job])).rows[0];
  assert.deepEqual(JSON.parse(row.headers), { 'content-type': 'application/json' });
  assert.ok(row.provider_id);
  assert.ok(!row.body.toString('utf8').includes(API_KEY));
  const logFile = new URL('../../tmp/pg/log/postgres.log', import.meta.url);
  if (fs.existsSync(logFile)) assert.ok(!fs.readFileSync(logFile, 'utf8').includes(API_KEY), 'the key is not in the server log');

  // the image, through its signed URL
  const [image] = s.images;
  const url = new URL(image.url, 'http://donatello.invalid');
  const { rows: [fetched] } = await db.query('SELECT * FROM donatello.image_fetch($1, $2, $3)',
    [image.id, url.searchParams.get('exp'), url.searchParams.get('sig')]);
  assert.equal(fetched.content_type, 'image/png');
  const png = PNG.sync.read(fetched.body);
  assert.equal(png.width, 256);
  assert.equal(png.height, 256);
  const sha = crypto.createHash('sha256').update(fetched.body).digest('hex');
  assert.equal(fetched.etag, `"${sha}"`);
  assert.equal(image.content_hash, sha);
  assert.equal(s.prompt_hash, crypto.createHash('sha256').update('a lighthouse at night').digest('hex'));

  // a tampered signature or another image id is refused (DNP01)
  const badSig = url.searchParams.get('sig').replace(/^./, (c) => (c === 'A' ? 'B' : 'A'));
  assert.equal((await refusal(db.query('SELECT * FROM donatello.image_fetch($1, $2, $3)',
    [image.id, url.searchParams.get('exp'), badSig]))).code, 'DNP01');
  assert.equal((await refusal(db.query('SELECT * FROM donatello.image_fetch($1, $2, $3)',
    [crypto.randomUUID(), url.searchParams.get('exp'), url.searchParams.get('sig')]))).code, 'DNP01');

  // budget: spent the actual cost, nothing left reserved
  const afterBudget = await budget(design);
  assert.equal(Number(afterBudget.spent) - Number(before.spent), 0.04);
  assert.equal(Number(afterBudget.reserved), 0);

  // the webhook, verified by the standardwebhooks library in the receiver
  await receiver.until(() => receiver.deliveriesTo('/generation').some((d) => d.data.job_id === job), 60000, 'generation.completed');
  const d = receiver.deliveriesTo('/generation').find((x) => x.data.job_id === job);
  assert.equal(d.type, 'generation.completed');
  assert.equal(d.data.model, 'pipe-a');
  assert.equal(d.data.cost, 0.04);
  assert.match(d.data.images[0].url, /^\/images\/[0-9a-f-]{36}\?exp=\d+&sig=[A-Za-z0-9_-]{43}$/);
  assert.equal(receiver.rejected.length, 0);
});

test('progress is notified on donatello_generation: queued, started, completed', async () => {
  mock.clearFailures();
  const listener = new pg.Client();
  await listener.connect();
  const seen = [];
  listener.on('notification', (n) => seen.push(JSON.parse(n.payload)));
  await listener.query('LISTEN donatello_generation');
  const job = await generate('a kite over the dunes', { size: '256x256' });
  await finished(job);
  await eventually(() => seen.some((n) => n.job_id === job && n.status === 'completed'), 'completed notification');
  const statuses = seen.filter((n) => n.job_id === job).map((n) => n.status);
  assert.deepEqual(statuses, ['queued', 'started', 'completed']);
  assert.ok(seen.every((n) => !('prompt' in n)), 'notifications never carry the prompt');
  await listener.end();
});

test('5xx answers are retried with 2 s and 4 s backoff, then the request succeeds on the same model', async () => {
  mock.clearFailures();
  await db.query('RESET donatello.generation_retry_backoff');
  mock.setFailure({ model: 'pipe-a', mode: '500', count: 2 });
  const job = await generate('a windmill in a storm', { size: '256x256' });
  await db.query("SET donatello.generation_retry_backoff = '200ms, 400ms'");
  const s = await finished(job);
  assert.equal(s.status, 'completed');
  assert.equal(s.calls.length, 1);
  const attempts = s.calls[0].attempts;
  assert.deepEqual(attempts.map((a) => a.status), [500, 500, 200]);
  const gap = (i) => Date.parse(attempts[i].started_at) - Date.parse(attempts[i - 1].started_at);
  assert.ok(gap(1) >= 2000, `second attempt ${gap(1)} ms after the first`);
  assert.ok(gap(2) >= 4000, `third attempt ${gap(2)} ms after the second`);
});

test('a timeout and a 429 are retried', async () => {
  mock.clearFailures();
  await db.query("SET donatello.generation_request_timeout = '1s'");
  mock.setFailure({ model: 'pipe-a', mode: 'timeout', count: 1 });
  const job = await generate('a heron at dawn', { size: '256x256' });
  await db.query('RESET donatello.generation_request_timeout');
  let s = await finished(job);
  assert.equal(s.status, 'completed');
  assert.equal(s.calls[0].attempts.length, 2);
  assert.equal(s.calls[0].attempts[0].status, null);
  assert.match(s.calls[0].attempts[0].error, /Timeout/i);

  mock.setFailure({ model: 'pipe-a', mode: '429', count: 1, retry_after: 0 });
  s = await finished(await generate('a heron at dusk', { size: '256x256' }));
  assert.equal(s.status, 'completed');
  assert.deepEqual(s.calls[0].attempts.map((a) => a.status), [429, 200]);
});

test('a model failing after its retries falls back to the next-ranked model', async () => {
  mock.clearFailures();
  mock.setFailure({ model: 'pipe-a', mode: '500' });
  const before = await budget(design);
  const job = await generate('a fox in a misty forest', { size: '256x256' });
  const s = await finished(job);
  mock.clearFailures();
  assert.equal(s.status, 'completed');
  assert.deepEqual(s.calls.map((c) => [c.model, c.state, c.attempts.length]),
    [['pipe-a', 'failed', 3], ['pipe-b', 'succeeded', 1]]);
  assert.equal(s.model.model, 'pipe-b');
  assert.equal(s.actual_cost, 0.05);
  const afterBudget = await budget(design);
  assert.equal(Math.round((Number(afterBudget.spent) - Number(before.spent)) * 1e6), 50000);
  assert.equal(Number(afterBudget.reserved), 0);
  const circuit = await value("SELECT c.failures FROM donatello.model_circuits c JOIN donatello.models m ON m.id = c.model_id WHERE m.name = 'pipe-a'");
  assert.ok(circuit >= 1, 'the failure was reported to the circuit');
  await fx.closeCircuits(db);
});

test('when every model fails the job fails with DNM01, the reservation is released and generation.failed is sent', async () => {
  mock.clearFailures();
  mock.setFailure({ model: 'pipe-a', mode: '500' });
  mock.setFailure({ model: 'pipe-b', mode: '500' });
  const before = await budget(design);
  const job = await generate('a castle on a hill', { size: '256x256' });
  const s = await finished(job);
  mock.clearFailures();
  await fx.closeCircuits(db);
  assert.equal(s.status, 'failed');
  assert.equal(s.error.code, 'DNM01');
  assert.deepEqual(s.calls.map((c) => c.state), ['failed', 'failed']);
  assert.equal(s.images.length, 0);
  const afterBudget = await budget(design);
  assert.equal(Number(afterBudget.spent), Number(before.spent), 'nothing spent');
  assert.equal(Number(afterBudget.reserved), 0, 'the reservation was released');
  await receiver.until(() => receiver.deliveriesTo('/generation').some((d) => d.data.job_id === job), 60000, 'generation.failed');
  const d = receiver.deliveriesTo('/generation').find((x) => x.data.job_id === job);
  assert.equal(d.type, 'generation.failed');
  assert.equal(d.data.error.code, 'DNM01');
});

test('a prompt with personal data is refused with DNS01 (the kinds in DETAIL), a blocked term with DNS02; nothing is reserved', async () => {
  const before = await budget(design);
  const jobs = await value('SELECT count(*)::int FROM donatello.generation_jobs');
  let err = await refusal(generate('poster for card 4111 1111 1111 1111, mail jane@example.com', { size: '256x256' }));
  assert.equal(err.code, 'DNS01');
  assert.equal(err.detail, 'Found: credit_card, email.');
  assert.ok(!err.message.includes('4111') && !err.detail.includes('4111'), 'the value is never echoed');
  err = await refusal(generate('a GÖRE scene', { size: '256x256' }));
  assert.equal(err.code, 'DNS02');
  assert.match(err.detail, /violence/);
  err = await refusal(generate('   ', {}));
  assert.equal(err.code, 'DNV01');
  assert.equal(await value('SELECT count(*)::int FROM donatello.generation_jobs'), jobs);
  assert.deepEqual(await budget(design), before);
});

test('a job whose provider request is gone is finished by the maintenance function: failed, reservation released', async () => {
  mock.clearFailures();
  mock.setFailure({ model: 'pipe-a', mode: 'timeout' });
  const job = await generate('a lantern in the fog', { size: '256x256' });
  await eventually(async () => (await status(job)).status === 'started', 'the request in flight');
  const before = await budget(design);
  assert.equal(Number(before.reserved), 0.05);
  await db.query('DELETE FROM donatello.outbox o USING donatello.generation_jobs g WHERE g.id = $1 AND o.id = g.current_request_id', [job]);
  assert.equal(await value('SELECT donatello.generation_finish_stuck()'), 1);
  assert.equal(await value('SELECT donatello.generation_finish_stuck()'), 0, 'once only');
  const s = await status(job);
  mock.clearFailures();
  assert.equal(s.status, 'failed');
  assert.equal(s.error.code, 'DNM01');
  assert.match(s.error.message, /deleted/);
  assert.equal(Number((await budget(design)).reserved), 0);
});

test('another organization cannot read a job: DNV02 as for an unknown one', async () => {
  mock.clearFailures();
  const job = await generate('a quiet harbour', { size: '256x256' });
  await finished(job);
  const other = await value("SELECT donatello.create_organization('Elsewhere', $1)", [`else-${tag}`]);
  const stranger = await value("SELECT donatello.create_user($1, $2, 'Stranger')", [other, `stranger-${tag}@example.com`]);
  await db.query("SELECT donatello.grant_role($1, 'org_admin')", [stranger]);
  await db.query("SELECT set_config('request.jwt.claims', $1, false)", [JSON.stringify({ sub: stranger, org: other })]);
  const err = await refusal(status(job));
  await as(db, user);
  assert.equal(err.code, 'DNV02');
});

test('10 clients x 100 requests against a budget for exactly 50: exactly 50 accepted, invariants hold', async () => {
  mock.clearFailures();
  const dept = await fx.createDepartment(db, org, 'Crowd', 0.5); // 50 x 0.01 (pipe-c, the only 512x512 model)
  const crowdUser = await fx.createMember(db, org, dept, `crowd-${tag}@example.com`);
  const codes = new Map();
  const accepted = [];
  await Promise.all(Array.from({ length: 10 }, async (_, c) => {
    const client = new pg.Client();
    await client.connect();
    await as(client, crowdUser);
    for (let i = 0; i < 100; i++) {
      try {
        accepted.push(await generate(`crowd ${c} request ${i}`, { size: '512x512' }, client));
      } catch (err) {
        codes.set(err.code, (codes.get(err.code) ?? 0) + 1);
      }
    }
    await client.end();
  }));
  assert.equal(accepted.length, 50);
  assert.ok([...codes.keys()].every((c) => c === 'DNB01' || c === 'DNB02'), [...codes.keys()].join());
  assert.equal([...codes.values()].reduce((a, b) => a + b, 0), 950);
  for (const job of accepted) assert.equal((await finished(job)).status, 'completed');
  const b = await budget(dept);
  assert.equal(Number(b.spent), 0.5);
  assert.equal(Number(b.reserved), 0);
  assert.deepEqual((await db.query('SELECT * FROM donatello.budget_check_invariants()')).rows, []);
});
