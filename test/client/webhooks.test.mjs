// The outbound dispatcher against a real receiver: every delivery is verified
// with the npm `standardwebhooks` library; retries run on a compressed
// schedule (seconds instead of minutes). Runs against the test cluster's
// donatello database, where the dispatcher worker runs.
//
//   cd test/client && npm test      (PG* variables from test/bin/cluster env)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { Webhook } from 'standardwebhooks';
import { Receiver } from './lib/webhook-receiver.mjs';

const SCHEDULE = '1s, 1s, 3s'; // 4 attempts; Retry-After is capped at 3 s
const db = new pg.Client();
const receiver = new Receiver();
let port;
let org;

// One value of one row.
async function value(sql, params = []) {
  const { rows } = await db.query(sql, params);
  return rows.length ? Object.values(rows[0])[0] : undefined;
}

// Poll the database until fn() is truthy (between polls the test sleeps; the
// timeout is a safety net against hanging, not a performance threshold).
async function eventually(fn, what, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await fn();
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Set dispatcher settings and wait until this backend sees the reload: the
// postmaster signals every process in the same pass, the dispatcher included.
async function configure(settings) {
  for (const [name, v] of Object.entries(settings)) {
    await db.query(`ALTER SYSTEM SET ${name} = '${v}'`);
  }
  await db.query('SELECT pg_reload_conf()');
  for (const [name, v] of Object.entries(settings)) {
    await eventually(async () => (await value(`SELECT current_setting('${name}')`)) === v, `reload of ${name}`);
  }
}

async function endpoint(path, events = ['test.*'], host = '127.0.0.1', behaviour) {
  const url = `http://${host}:${port}${path}`;
  const created = await value('SELECT donatello.create_webhook_endpoint($1, $2, $3)', [org, url, events]);
  receiver.expect(path, created.secret, behaviour);
  return created;
}

async function emit(type, data) {
  return value('SELECT donatello.emit_event($1, $2, $3)', [org, type, data]);
}

async function deliveryOf(eventId, endpointId) {
  return (await db.query('SELECT * FROM donatello.outbox WHERE event_id = $1 AND endpoint_id = $2', [eventId, endpointId])).rows[0];
}

async function attemptsOf(deliveryId) {
  return (await db.query('SELECT * FROM donatello.delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_no', [deliveryId])).rows;
}

async function finished(eventId, endpointId) {
  return eventually(async () => {
    const d = await deliveryOf(eventId, endpointId);
    return d && ['succeeded', 'failed', 'cancelled'].includes(d.state) ? d : null;
  }, `delivery of event ${eventId}`);
}

before(async () => {
  await db.connect();
  port = await receiver.listen(0);
  await configure({
    'donatello.allowed_hosts': '127.0.0.1',
    'donatello.webhook_retry_schedule': SCHEDULE,
    'donatello.webhook_retry_jitter': '0',
  });
  const slug = `wh-${process.pid}-${Date.now()}`;
  org = await value("SELECT donatello.create_organization('Webhook tests', $1)", [slug]);
});

after(async () => {
  await db.query('ALTER SYSTEM RESET donatello.allowed_hosts');
  await db.query('ALTER SYSTEM RESET donatello.webhook_retry_schedule');
  await db.query('ALTER SYSTEM RESET donatello.webhook_retry_jitter');
  await db.query('SELECT pg_reload_conf()');
  await db.end();
  await receiver.close();
});

test('a webhook is signed as Standard Webhooks and verified by the standardwebhooks library', async () => {
  const ep = await endpoint('/signed');
  const eventId = await emit('test.signed', { answer: 42, text: 'déjà vu' });
  const d = await finished(eventId, ep.id);
  assert.equal(d.state, 'succeeded');
  assert.match(ep.secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
  const [got] = receiver.deliveriesTo('/signed');
  assert.equal(got.id, d.id, 'webhook-id is the delivery id');
  assert.equal(got.type, 'test.signed');
  assert.deepEqual(got.data, { answer: 42, text: 'déjà vu' });
  assert.match(got.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  assert.equal(got.headers['content-type'], 'application/json');
  assert.match(got.headers['user-agent'], /^donatello\/\d+\.\d+\.\d+ /);
  assert.match(got.headers['webhook-signature'], /^v1,[A-Za-z0-9+/]+=*$/);
  // the same body with another secret does not verify: the check can fail
  assert.throws(() => new Webhook('whsec_' + Buffer.alloc(32, 1).toString('base64')).verify(got.body, got.headers));
  const attempts = await attemptsOf(d.id);
  assert.equal(attempts.length, 1);
  assert.equal(attempts[0].status_code, 200);
  assert.equal(attempts[0].response_excerpt, 'answered 200');
  assert.equal(receiver.rejected.length, 0);
});

test('a rolled back emit_event queues and sends nothing', async () => {
  const ep = await endpoint('/rollback', ['test.rollback']);
  await db.query('BEGIN');
  const eventId = await emit('test.rollback', { n: 1 });
  await db.query('ROLLBACK');
  assert.equal(Number(await value('SELECT count(*) FROM donatello.outbox WHERE event_id = $1', [eventId])), 0);
  const committed = await emit('test.rollback', { n: 2 });
  await finished(committed, ep.id);
  assert.deepEqual(receiver.deliveriesTo('/rollback').map((x) => x.data.n), [2]);
});

test('during a secret rotation every delivery carries both signatures', async () => {
  const ep = await endpoint('/rotate');
  const rotated = await value('SELECT donatello.rotate_webhook_secret($1)', [ep.id]);
  assert.notEqual(rotated.secret, ep.secret);
  assert.ok(rotated.previous_secret_expires_at);
  const d = await finished(await emit('test.rotate', { r: 1 }), ep.id);
  assert.equal(d.state, 'succeeded'); // the receiver still holds the old secret
  const [got] = receiver.deliveriesTo('/rotate');
  const signatures = got.headers['webhook-signature'].split(' ');
  assert.equal(signatures.length, 2);
  for (const secret of [ep.secret, rotated.secret]) {
    assert.doesNotThrow(() => new Webhook(secret).verify(got.body, got.headers));
  }
});

test('an event committed after its endpoint was disabled is cancelled, not sent', async () => {
  const ep = await endpoint('/race', ['test.race']);
  const other = new pg.Client();
  await other.connect();
  try {
    await other.query('BEGIN');
    const eventId = (await other.query('SELECT donatello.emit_event($1, $2, $3) AS id', [org, 'test.race', {}])).rows[0].id;
    // disable commits first and cannot see the uncommitted delivery
    await db.query('SELECT donatello.disable_webhook_endpoint($1)', [ep.id]);
    await other.query('COMMIT');
    const d = await finished(eventId, ep.id);
    assert.equal(d.state, 'cancelled');
    assert.match(d.last_error, /endpoint disabled/);
    assert.equal(d.attempt_count, 0);
    assert.equal(receiver.deliveriesTo('/race').length, 0);
  } finally {
    await other.end();
  }
});

test('failures (500, 500) are retried on the schedule until a 200; webhook-id stays the same', async () => {
  const ep = await endpoint('/flaky', ['test.*'], '127.0.0.1', (n) => ({ status: n <= 2 ? 500 : 200 }));
  const d = await finished(await emit('test.flaky', {}), ep.id);
  assert.equal(d.state, 'succeeded');
  const attempts = await attemptsOf(d.id);
  assert.deepEqual(attempts.map((a) => a.status_code), [500, 500, 200]);
  for (let i = 1; i < attempts.length; i++) {
    assert.ok(attempts[i].started_at >= attempts[i - 1].next_attempt_at, 'each retry waits for its scheduled time');
  }
  assert.deepEqual(new Set(receiver.deliveriesTo('/flaky').map((x) => x.id)), new Set([d.id]));
  assert.equal(receiver.counts.get(d.id), 1);
});

test('Retry-After on 429 and 503 is honoured instead of the schedule', async () => {
  for (const status of [429, 503]) {
    const path = `/busy-${status}`;
    const ep = await endpoint(path, ['test.*'], '127.0.0.1', (n) =>
      n === 1 ? { status, headers: { 'retry-after': '2' } } : { status: 200 });
    const d = await finished(await emit('test.busy', { status }), ep.id);
    assert.equal(d.state, 'succeeded');
    const [first, second] = await attemptsOf(d.id);
    assert.equal(first.status_code, status);
    const waitMs = first.next_attempt_at - first.started_at;
    assert.ok(waitMs >= 2000, `retry scheduled ${waitMs} ms after a Retry-After of 2 s (schedule says 1 s)`);
    assert.ok(second.started_at >= first.next_attempt_at);
  }
});

test('410 Gone fails the delivery and disables the endpoint', async () => {
  const ep = await endpoint('/gone', ['test.*'], '127.0.0.1', () => ({ status: 410 }));
  const d = await finished(await emit('test.gone', {}), ep.id);
  assert.equal(d.state, 'failed');
  assert.equal((await attemptsOf(d.id)).length, 1);
  const e = (await db.query('SELECT active, disabled_reason FROM donatello.webhook_endpoints WHERE id = $1', [ep.id])).rows[0];
  assert.equal(e.active, false);
  assert.match(e.disabled_reason, /410/);
  const later = await emit('test.gone', {});
  assert.equal(await deliveryOf(later, ep.id), undefined, 'a disabled endpoint is not queued');
  await assert.rejects(db.query('SELECT donatello.retry_delivery($1)', [d.id]), /is disabled/);
});

test('an exhausted delivery is failed, reported as webhook.delivery_failed, and can be replayed', async () => {
  let healthy = false;
  const ep = await endpoint('/down', ['test.exhaust'], '127.0.0.1', () => ({ status: healthy ? 200 : 500 }));
  const watcher = await endpoint('/watcher', ['webhook.delivery_failed']);
  const eventId = await emit('test.exhaust', {});
  const d = await finished(eventId, ep.id);
  assert.equal(d.state, 'failed');
  assert.deepEqual((await attemptsOf(d.id)).map((a) => a.status_code), [500, 500, 500, 500]);
  await receiver.until(() => receiver.deliveriesTo('/watcher').length === 1, 30000, 'the delivery_failed webhook');
  const [report] = receiver.deliveriesTo('/watcher');
  assert.equal(report.type, 'webhook.delivery_failed');
  assert.equal(report.data.delivery_id, d.id);
  assert.equal(report.data.attempts, 4);
  assert.equal(watcher.id !== ep.id, true);

  healthy = true;
  await db.query('SELECT donatello.retry_delivery($1)', [d.id]);
  const replayed = await eventually(async () => {
    const r = await deliveryOf(eventId, ep.id);
    return r.state === 'succeeded' ? r : null;
  }, 'the replay');
  assert.equal(replayed.attempt_count, 5);
  assert.equal(receiver.counts.get(d.id), 1);
});

test('an endpoint that has failed everything for donatello.webhook_disable_after is disabled', async () => {
  const ep = await endpoint('/failing', ['test.failing'], '127.0.0.1', () => ({ status: 503 }));
  // its failure streak began six days ago (the default limit is five days)
  await db.query("UPDATE donatello.webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1", [ep.id]);
  const d = await finished(await emit('test.failing', {}), ep.id);
  assert.equal(d.state, 'cancelled', 'the retry that was scheduled is cancelled with the endpoint');
  assert.equal((await attemptsOf(d.id)).length, 1);
  const e = (await db.query('SELECT active, disabled_reason FROM donatello.webhook_endpoints WHERE id = $1', [ep.id])).rows[0];
  assert.equal(e.active, false);
  assert.match(e.disabled_reason, /every delivery failed since/);
  // a success ends a streak: another endpoint with an old streak that answers 200 stays enabled
  const ok = await endpoint('/recovered', ['test.failing']);
  await db.query("UPDATE donatello.webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1", [ok.id]);
  await finished(await emit('test.failing', {}), ok.id);
  const r = (await db.query('SELECT active, failing_since, last_success_at FROM donatello.webhook_endpoints WHERE id = $1', [ok.id])).rows[0];
  assert.equal(r.active, true);
  assert.equal(r.failing_since, null);
  assert.ok(r.last_success_at);
});

test('receiver down for a while, then up: every event is delivered', async () => {
  const down = new Receiver();
  const downPort = await down.listen(0);
  await down.close(); // the port is now refused
  const url = `http://127.0.0.1:${downPort}/later`;
  const ep = await value('SELECT donatello.create_webhook_endpoint($1, $2, $3)', [org, url, ['test.later']]);
  const ids = [];
  for (let i = 0; i < 20; i++) ids.push(await emit('test.later', { i }));
  await eventually(async () =>
    Number(await value("SELECT count(*) FROM donatello.outbox WHERE endpoint_id = $1 AND attempt_count >= 2 AND state = 'pending'", [ep.id])) === 20,
  'two refused attempts of every delivery');
  const up = new Receiver();
  up.expect('/later', ep.secret);
  await up.listen(downPort);
  try {
    await up.until(() => up.counts.size === 20, 60000, 'all 20 deliveries');
    await eventually(async () => Number(await value(
      "SELECT count(*) FROM donatello.outbox WHERE endpoint_id = $1 AND state = 'succeeded'", [ep.id])) === 20,
    'all 20 recorded as succeeded');
    assert.deepEqual(up.deliveries.map((x) => x.data.i).sort((a, b) => a - b), [...Array(20).keys()]);
    assert.equal(up.rejected.length, 0);
    const errors = await value("SELECT array_agg(DISTINCT error) FROM donatello.delivery_attempts a JOIN donatello.outbox o ON o.id = a.delivery_id WHERE o.endpoint_id = $1 AND a.status_code IS NULL", [ep.id]);
    assert.match(errors[0], /connect/i);
  } finally {
    await up.close();
  }
});

test('SSRF guard: metadata, private and loopback addresses are refused', async () => {
  for (const url of ['http://169.254.169.254/latest/meta-data/', 'http://10.0.0.1/hook', 'http://127.0.0.2/hook',
    'http://[::1]/hook', 'http://[::ffff:10.0.0.1]/hook', 'http://100.100.100.200/']) {
    await assert.rejects(db.query('SELECT donatello.create_webhook_endpoint($1, $2, $3)', [org, url, ['test.x']]),
      (err) => err.code === 'DNV01' && /refused/.test(err.message), url);
    await assert.rejects(db.query("SELECT donatello.http_enqueue('GET', $1, NULL, NULL, $2)", [url, { org_id: org }]),
      (err) => err.code === 'DNV01', url);
  }
  assert.match(await value("SELECT donatello.check_outbound_url('http://169.254.169.254/')"), /cloud metadata/);
  assert.match(await value("SELECT donatello.check_outbound_url('http://10.0.0.1/')"), /private/);
  assert.match(await value("SELECT donatello.check_outbound_url('http://localhost/')"), /loopback/);
  assert.equal(await value(`SELECT donatello.check_outbound_url('http://127.0.0.1:${port}/')`), null, 'allow-listed');

  // "localhost" resolves to 127.0.0.1 but is not allow-listed: the worker refuses
  // to connect, although the receiver listens right there
  const ep = await endpoint('/ssrf', ['test.ssrf'], 'localhost');
  const d = await finished(await emit('test.ssrf', {}), ep.id);
  assert.equal(d.state, 'failed');
  assert.match(d.last_error, /refused by the SSRF guard: host "localhost" resolves to (127\.0\.0\.1|::1), a loopback address/);
  assert.equal(receiver.deliveriesTo('/ssrf').length, 0);
});

test('http_enqueue: its own retry policy, headers sealed at rest, response stored, hook called once', async () => {
  await db.query(`CREATE SCHEMA IF NOT EXISTS client_hooks;
    CREATE TABLE IF NOT EXISTS client_hooks.calls (request_id uuid, status integer, headers jsonb, body bytea, error text,
                                                   txid bigint DEFAULT txid_current());
    CREATE OR REPLACE FUNCTION client_hooks.on_done(request_id uuid, status integer, headers jsonb, body bytea, error text)
      RETURNS void LANGUAGE sql AS $$ INSERT INTO client_hooks.calls VALUES ($1, $2, $3, $4, $5) $$`);
  receiver.serve('/provider', (n) => (n < 3 ? { status: 502 } : { status: 200, headers: { 'x-provider': 'mock' }, body: '{"image": "ok"}' }));
  const id = await value("SELECT donatello.http_enqueue('POST', $1, $2, convert_to('{\"prompt\": \"a cat\"}', 'UTF8'), $3)", [
    `http://127.0.0.1:${port}/provider`,
    { authorization: 'Bearer provider-key-123', 'content-type': 'application/json' },
    { org_id: org, max_attempts: 3, backoff: ['200ms', '400ms'], retry_on: ['5xx'], hook: 'client_hooks.on_done' },
  ]);
  const call = await eventually(async () => (await db.query('SELECT * FROM client_hooks.calls WHERE request_id = $1', [id])).rows[0], 'the hook');
  assert.equal(call.status, 200);
  assert.equal(call.headers['x-provider'], 'mock');
  assert.equal(call.body.toString(), '{"image": "ok"}');
  assert.equal(call.error, null);
  const row = (await db.query('SELECT * FROM donatello.outbox WHERE id = $1', [id])).rows[0];
  assert.equal(row.state, 'succeeded');
  assert.equal(row.hook_state, 'done');
  assert.equal(row.attempt_count, 3);
  assert.ok(!row.headers_sealed.includes(Buffer.from('provider-key-123')), 'the credential is not stored in clear');
  const sent = receiver.plainRequests.filter((r) => r.path === '/provider');
  assert.equal(sent.length, 3);
  assert.equal(sent[2].headers.authorization, 'Bearer provider-key-123');
  assert.equal(sent[2].body, '{"prompt": "a cat"}');
  assert.equal(Number(await value('SELECT count(*) FROM client_hooks.calls WHERE request_id = $1', [id])), 1);
});

test('http_enqueue: a status outside retry_on fails at once and the hook sees it', async () => {
  receiver.serve('/provider-400', () => ({ status: 400, body: '{"error": "bad prompt"}' }));
  const id = await value("SELECT donatello.http_enqueue('GET', $1, NULL, NULL, $2)", [
    `http://127.0.0.1:${port}/provider-400`, { org_id: org, hook: 'client_hooks.on_done' },
  ]);
  const call = await eventually(async () => (await db.query('SELECT * FROM client_hooks.calls WHERE request_id = $1', [id])).rows[0], 'the hook');
  assert.equal(call.status, 400);
  assert.equal(call.error, 'HTTP 400');
  assert.equal((await db.query('SELECT state, attempt_count FROM donatello.outbox WHERE id = $1', [id])).rows[0].attempt_count, 1);
});
