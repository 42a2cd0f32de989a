// Runs the libFuzzer harness of the HTTP layer's query-string/filter parser
// (test/fuzz/) for a bounded time (HTTP_FUZZ_SECONDS, default 30): the test
// fails if libFuzzer finds a crash, a sanitizer error or a broken invariant.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const run = fileURLToPath(new URL('../fuzz/run', import.meta.url));

test('libFuzzer: the request-target parser survives random query strings', () => {
  const seconds = process.env.HTTP_FUZZ_SECONDS || '30';
  const r = spawnSync(run, [seconds], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`.slice(-4000));
  assert.match(r.stderr, /Done \d+ runs/);
});
