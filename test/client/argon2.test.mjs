// Argon2id interoperability with the npm hash-wasm library: PHC strings
// written by donatello verify with hash-wasm, and hash-wasm's verify in
// donatello (and can be logged in with).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { argon2id, argon2Verify } from 'hash-wasm';
import { sql, lit, freshDatabase, CHEAP, HS } from './lib.mjs';

before(() => freshDatabase('donatello_client_argon2'));

test('donatello Argon2id strings (default 64 MiB, t=2) verify with hash-wasm', async () => {
  const hash = sql(`SELECT donatello.password_hash('Interop-Password-1!')`);
  assert.match(hash, /^\$argon2id\$v=19\$m=65536,t=2,p=1\$/);
  assert.equal(await argon2Verify({ password: 'Interop-Password-1!', hash }), true);
  assert.equal(await argon2Verify({ password: 'Interop-Password-2!', hash }), false);
});

test('hash-wasm Argon2id strings verify in donatello (several costs, 1 to 4 lanes)', async () => {
  for (const [memorySize, iterations, parallelism] of [[65536, 2, 1], [19456, 2, 1], [8192, 3, 2], [8192, 1, 4]]) {
    const hash = await argon2id({
      password: 'From-Hash-Wasm-9?', salt: randomBytes(16), parallelism, iterations, memorySize,
      hashLength: 32, outputType: 'encoded',
    });
    assert.equal(sql(`SELECT donatello.password_verify('From-Hash-Wasm-9?', ${lit(hash)})`), 't', hash);
    assert.equal(sql(`SELECT donatello.password_verify('From-Hash-Wasm-8?', ${lit(hash)})`), 'f', hash);
  }
});

test('a user whose stored hash came from hash-wasm logs in, and the hash is upgraded', async () => {
  const org = sql("SELECT donatello.create_organization('Argon Client', 'argon-client')");
  const user = sql(`SELECT donatello.create_user('${org}', 'ari@client.test', 'Ari')`);
  const hash = await argon2id({
    password: 'Imported-Pass-7$', salt: randomBytes(16), parallelism: 1, iterations: 3, memorySize: 4096,
    hashLength: 32, outputType: 'encoded',
  });
  sql(`INSERT INTO donatello.user_credentials (org_id, user_id, password_hash) VALUES ('${org}', '${user}', ${lit(hash)})`);
  const tokens = JSON.parse(sql(`${CHEAP} ${HS} SELECT donatello.login('ari@client.test', 'Imported-Pass-7$')`));
  assert.ok(tokens.access_token);
  const stored = sql(`SELECT password_hash FROM donatello.user_credentials WHERE user_id = '${user}'`);
  assert.match(stored, /^\$argon2id\$v=19\$m=8192,t=1,p=1\$/);
  assert.equal(await argon2Verify({ password: 'Imported-Pass-7$', hash: stored }), true);
});
