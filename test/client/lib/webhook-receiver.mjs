// A real webhook receiver for the dispatcher's tests, demo and benchmark.
//
// Every request is verified with the npm `standardwebhooks` library (the
// reference implementation of the Standard Webhooks spec) against the secret
// registered for its path, and counted by webhook-id. What the receiver
// answers is decided per path by a behaviour function, so a test can answer
// 500 three times, then 200; or 429 with Retry-After; or 410.
//
// As a program (demo, benchmark):
//   node lib/webhook-receiver.mjs --port 18600 --secret whsec_... [--path /hook] [--quiet]
//        [--ids FILE] [--delay-ms N] [--answer /path=STATUS ...]
// prints "listening" once ready, then one JSON line per verified delivery
// (none with --quiet); --ids appends "<webhook-id> <receipt wall-clock time in ms>" per
// verified delivery to FILE; --delay-ms answers each request N ms late;
// --answer answers every request to /path with STATUS, unverified.
import fs from 'node:fs';
import http from 'node:http';
import { Webhook } from 'standardwebhooks';

export class Receiver {
  constructor() {
    this.secrets = new Map(); // path -> whsec_ secret
    this.behaviours = new Map(); // path -> (attempt, req) => {status, headers, body}
    this.counts = new Map(); // webhook-id -> verified receipts
    this.deliveries = []; // {path, id, type, data, attempt, status, receivedAt}
    this.rejected = []; // {path, reason}
    this.attemptsByPath = new Map();
    this.plain = new Map(); // path -> behaviour, for unsigned requests (provider calls)
    this.plainRequests = []; // {path, method, headers, body, attempt}
    this.waiters = [];
    this.delayMs = 0;
    this.verifyEvery = 1; // verify one request in N (benchmark: the tests verify all)
    this.seen = 0;
    this.onVerified = null; // (delivery) => void
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 60000;
  }

  // Start listening on 127.0.0.1:port (0: any free port); resolves to the port.
  listen(port = 0) {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve(this.server.address().port));
    });
  }

  close() {
    this.server.closeAllConnections?.();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  // The secret that deliveries to `path` must be signed with.
  expect(path, secret, behaviour) {
    this.secrets.set(path, secret);
    if (behaviour) this.behaviours.set(path, behaviour);
  }

  handle(req, res) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const path = req.url;
      const attempt = (this.attemptsByPath.get(path) ?? 0) + 1;
      this.attemptsByPath.set(path, attempt);
      if (this.plain.has(path)) {
        const answer = this.plain.get(path)(attempt, req);
        this.plainRequests.push({ path, method: req.method, headers: req.headers, body, attempt });
        res.writeHead(answer.status, { 'content-type': 'application/json', ...(answer.headers ?? {}) });
        res.end(answer.body ?? '{}');
        this.notify();
        return;
      }
      const secret = this.secrets.get(path);
      let payload;
      try {
        if (!secret) throw new Error(`no secret registered for ${path}`);
        if (this.verifyEvery > 1 && ++this.seen % this.verifyEvery !== 0) {
          payload = JSON.parse(body);
        } else payload = new Webhook(secret).verify(body, {
          'webhook-id': req.headers['webhook-id'],
          'webhook-timestamp': req.headers['webhook-timestamp'],
          'webhook-signature': req.headers['webhook-signature'],
        });
      } catch (err) {
        this.rejected.push({ path, reason: String(err.message ?? err) });
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end('signature verification failed');
        this.notify();
        return;
      }
      const behaviour = this.behaviours.get(path);
      const answer = behaviour ? behaviour(attempt, req) : { status: 200 };
      const id = req.headers['webhook-id'];
      const delivery = {
        path,
        id,
        type: payload.type,
        data: payload.data,
        timestamp: payload.timestamp,
        headers: req.headers,
        body,
        attempt,
        status: answer.status,
        receivedAt: process.hrtime.bigint(),
      };
      this.deliveries.push(delivery);
      const reply = () => {
        if (answer.status >= 200 && answer.status < 300) {
          this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
          this.onVerified?.(delivery);
        }
        res.writeHead(answer.status, { 'content-type': 'text/plain', ...(answer.headers ?? {}) });
        res.end(answer.body ?? `answered ${answer.status}`);
        this.notify();
      };
      if (this.delayMs > 0) setTimeout(reply, this.delayMs);
      else reply();
    });
  }

  notify() {
    this.waiters = this.waiters.filter((w) => {
      if (w.predicate()) {
        w.resolve();
        return false;
      }
      return true;
    });
  }

  // Resolves when predicate() holds; rejects after timeoutMs (a safety net
  // against hanging, not a performance threshold).
  until(predicate, timeoutMs = 60000, what = 'condition') {
    if (predicate()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      this.waiters.push({
        predicate,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  // Answer unsigned requests to `path` (queued HTTP requests) with behaviour.
  serve(path, behaviour) {
    this.plain.set(path, behaviour);
  }

  deliveriesTo(path) {
    return this.deliveries.filter((d) => d.path === path);
  }
}

// Program mode: verify and print every delivery to one path.
if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : dflt;
  };
  const quiet = args.includes('--quiet');
  const receiver = new Receiver();
  receiver.expect(opt('path', '/hook'), opt('secret'));
  receiver.delayMs = Number(opt('delay-ms', '0'));
  args.forEach((a, i) => {
    if (a !== '--answer') return;
    const [path, status] = args[i + 1].split('=');
    receiver.serve(path, () => ({ status: Number(status) }));
  });
  const idsFile = opt('ids');
  if (idsFile) {
    const fd = fs.openSync(idsFile, 'a');
    receiver.onVerified = (d) => fs.writeSync(fd, `${d.id} ${(performance.timeOrigin + performance.now()).toFixed(3)}\n`);
  }
  const port = await receiver.listen(Number(opt('port', '0')));
  const log = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
  log({ listening: port });
  receiver.notify = () => {
    const d = receiver.deliveries.at(-1);
    const r = receiver.rejected.at(-1);
    if (r && receiver.rejected.length > (receiver.lastRejected ?? 0)) {
      receiver.lastRejected = receiver.rejected.length;
      log({ rejected: r.reason });
    } else if (d && !quiet) {
      log({
        verified: true,
        'webhook-id': d.id,
        'webhook-signature': d.headers['webhook-signature'].slice(0, 20) + '...',
        type: d.type,
        data: d.data,
      });
    }
  };
  const stop = () => receiver.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
