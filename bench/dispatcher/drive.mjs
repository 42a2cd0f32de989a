// Dispatcher benchmark driver (bench/dispatcher/run starts it).
//
// A local receiver (test/client/lib/webhook-receiver.mjs, in this process)
// answers 200 and verifies one signature in 50 with the standardwebhooks
// library. Three measurements, one run:
//
//   burst     N events committed in one transaction: deliveries per second
//             from the commit to the last receipt (the drain rate), and
//             commit-to-receipt latency (dominated by queueing here);
//   steady    N events, one per transaction, from 4 connections as fast as they
//             commit: commit-to-receipt latency p50/p99 and deliveries per second;
//   direct    the reference: the same N signed POSTs sent by a plain Node client
//             (256 concurrent, keep-alive) straight to the receiver, no database:
//             what this machine's loopback and receiver allow.
//
// Commit time is taken when COMMIT returns to the client, receipt time when the
// receiver has read the request; both on this process's clock.
import { createRequire } from 'node:module';
import http from 'node:http';
import { performance } from 'node:perf_hooks';

const require = createRequire(new URL('../../test/client/package.json', import.meta.url));
const pg = require('pg');
const { Webhook } = require('standardwebhooks');
const { Receiver } = await import(new URL('../../test/client/lib/webhook-receiver.mjs', import.meta.url));

const N = Number(process.argv[2] ?? 10000);
const port = Number(process.env.BENCH_PORT ?? 18620);
const now = () => performance.timeOrigin + performance.now();

const admin = new pg.Client();
await admin.connect();
const org = (await admin.query(
  "SELECT donatello.create_organization('Dispatcher bench', 'bench-' || (extract(epoch FROM now()) * 1000)::bigint) AS id")).rows[0].id;
const endpoint = (await admin.query('SELECT donatello.create_webhook_endpoint($1, $2, $3) AS e',
  [org, `http://127.0.0.1:${port}/bench`, ['bench.*']])).rows[0].e;

const receiver = new Receiver();
receiver.verifyEvery = 50;
receiver.expect('/bench', endpoint.secret);
const receipts = new Map(); // webhook-id -> time
receiver.onVerified = (d) => { if (!receipts.has(d.id)) receipts.set(d.id, now()); };
await receiver.listen(port);

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// Wait until `count` distinct deliveries of the phase have arrived.
async function awaitReceipts(count) {
  await receiver.until(() => receipts.size >= count, 600000, `${count} receipts`);
}

// delivery id -> seq, for the phase's event type
async function deliverySeqs(type) {
  const { rows } = await admin.query(
    `SELECT o.id, (convert_from(o.body, 'UTF8')::jsonb -> 'data' ->> 'seq')::int AS seq
       FROM donatello.outbox o WHERE o.org_id = $1 AND o.event_type = $2`, [org, type]);
  return new Map(rows.map((r) => [r.id, r.seq]));
}

function report(name, commits, type, seqs, started) {
  const latencies = [];
  let last = 0;
  for (const [id, seq] of seqs) {
    const t = receipts.get(id);
    last = Math.max(last, t);
    latencies.push(t - commits[seq]);
  }
  latencies.sort((a, b) => a - b);
  const seconds = (last - started) / 1000;
  const rate = seqs.size / seconds;
  console.log(`${name.padEnd(7)} ${String(seqs.size).padStart(6)} deliveries in ${seconds.toFixed(2)} s: ` +
    `${rate.toFixed(0)} deliveries/s; commit-to-receipt p50 ${percentile(latencies, 50).toFixed(1)} ms, ` +
    `p99 ${percentile(latencies, 99).toFixed(1)} ms, max ${latencies.at(-1).toFixed(1)} ms`);
  return rate;
}

// burst: N events committed at once; the dispatcher drains them
const burstCommits = [];
const burstStart = now();
await admin.query('BEGIN');
await admin.query("SELECT donatello.emit_event($1, 'bench.burst', jsonb_build_object('seq', n)) FROM generate_series(0, $2::int - 1) n",
  [org, N]);
await admin.query('COMMIT');
const burstCommit = now();
for (let i = 0; i < N; i++) burstCommits[i] = burstCommit;
await awaitReceipts(N);
const burstSeqs = await deliverySeqs('bench.burst');
const burstRate = report('burst', burstCommits, 'bench.burst', burstSeqs, burstCommit);
console.log(`        (queueing the burst took ${((burstCommit - burstStart) / 1000).toFixed(2)} s in one transaction, before its commit)`);

// steady: one event per transaction from 4 connections
const clients = await Promise.all([0, 1, 2, 3].map(async () => { const c = new pg.Client(); await c.connect(); return c; }));
const steadyCommits = [];
const steadyStart = now();
let next = 0;
await Promise.all(clients.map(async (c) => {
  for (;;) {
    const seq = next++;
    if (seq >= N) return;
    await c.query("SELECT donatello.emit_event($1, 'bench.steady', jsonb_build_object('seq', $2::int))", [org, seq]);
    steadyCommits[seq] = now();
  }
}));
await awaitReceipts(2 * N);
const steadySeqs = await deliverySeqs('bench.steady');
report('steady', steadyCommits, 'bench.steady', steadySeqs, steadyStart);
await Promise.all(clients.map((c) => c.end()));

// direct reference: signed POSTs from a plain client, no database
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const wh = new Webhook(endpoint.secret);
const directStart = now();
let sent = 0;
async function sender() {
  for (;;) {
    const seq = sent++;
    if (seq >= N) return;
    const id = `direct_${seq}`;
    const body = JSON.stringify({ type: 'bench.direct', timestamp: new Date().toISOString(), data: { seq } });
    const ts = new Date();
    await new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/bench', method: 'POST', agent,
        headers: { 'content-type': 'application/json', 'webhook-id': id,
          'webhook-timestamp': String(Math.floor(ts / 1000)), 'webhook-signature': wh.sign(id, ts, body) } },
      (res) => { res.resume(); res.on('end', resolve); });
      req.on('error', reject);
      req.end(body);
    });
  }
}
await Promise.all(Array.from({ length: 256 }, sender));
const directRate = N / ((now() - directStart) / 1000);
console.log(`direct  ${String(N).padStart(6)} signed POSTs from a plain Node client: ${directRate.toFixed(0)} requests/s`);
console.log(`ratio   burst deliveries/s over direct requests/s: ${(burstRate / directRate).toFixed(2)}`);

const { rows: [check] } = await admin.query(
  "SELECT count(*) FILTER (WHERE state = 'succeeded') AS ok, count(*) AS total, max(attempt_count) AS max_attempts FROM donatello.outbox WHERE org_id = $1",
  [org]);
console.log(`check   ${check.ok}/${check.total} succeeded, at most ${check.max_attempts} attempt(s) each; ` +
  `${receiver.rejected.length} signature failures among the sampled; receipts counted once per webhook-id: ${receipts.size}`);
agent.destroy();
await receiver.close();
await admin.end();
if (Number(check.ok) !== 2 * N || receiver.rejected.length) process.exit(1);
