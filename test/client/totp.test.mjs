// TOTP interoperability with oathtool (Debian package oathtool): its codes are
// accepted by totp_activate and login_mfa, replayed codes are not, and its
// HOTP values equal donatello.hotp_code.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { sql, sqlstateOf, lit, freshDatabase, CHEAP, HS } from './lib.mjs';

const oathtool = (...args) => execFileSync('oathtool', args, { encoding: 'utf8' }).trim();
const step = () => Math.floor(Date.now() / 1000 / 30);
let org;

before(() => {
  freshDatabase('donatello_client_totp');
  org = sql("SELECT donatello.create_organization('TOTP Client', 'totp-client')");
});

function newUser(email) {
  const user = sql(`SELECT donatello.create_user('${org}', '${email}', 'T')`);
  sql(`${CHEAP} SELECT donatello.set_password('${user}', 'Totp-Client-2024!')`);
  return user;
}

const challenge = (email) =>
  JSON.parse(sql(`${CHEAP} ${HS} SELECT donatello.login('${email}', 'Totp-Client-2024!')`)).mfa_token;

test('HOTP values of oathtool equal donatello.hotp_code', () => {
  const hex = Buffer.from('12345678901234567890').toString('hex');
  for (let counter = 0; counter < 20; counter++) {
    const ours = sql(`SELECT donatello.hotp_code('\\x${hex}'::bytea, ${counter})`);
    assert.equal(ours, oathtool('--hotp', '-c', String(counter), hex), `counter ${counter}`);
  }
});

test('oathtool codes activate TOTP and pass login_mfa; replayed codes do not', () => {
  const user = newUser('oath@client.test');
  const { secret } = JSON.parse(sql(`SELECT donatello.totp_enroll('${user}')`));
  const s = step();
  const now = oathtool('--totp', '-b', '-N', `@${s * 30 + 1}`, secret);
  sql(`SELECT donatello.totp_activate('${user}', '${now}')`);

  // the same code again, at login: a replay
  const c1 = challenge('oath@client.test');
  assert.equal(sqlstateOf(`${HS} SELECT donatello.login_mfa(${lit(c1)}, '${now}')`), 'DNA04');
  // the next step's code (inside the window) is accepted once
  const next = oathtool('--totp', '-b', '-N', `@${(s + 1) * 30 + 1}`, secret);
  const tokens = JSON.parse(sql(`${HS} SELECT donatello.login_mfa(${lit(c1)}, '${next}')`));
  assert.ok(tokens.access_token);
  const c2 = challenge('oath@client.test');
  assert.equal(sqlstateOf(`${HS} SELECT donatello.login_mfa(${lit(c2)}, '${next}')`), 'DNA04');
  // a code from two steps ago is outside the window
  const old = oathtool('--totp', '-b', '-N', `@${(s - 2) * 30 + 1}`, secret);
  if (old !== next) assert.equal(sqlstateOf(`${HS} SELECT donatello.login_mfa(${lit(c2)}, '${old}')`), 'DNA04');
});

test('oathtool SHA-256 8-digit codes work when enrolled that way', () => {
  const user = newUser('oath256@client.test');
  const { secret, otpauth_uri: uri } = JSON.parse(
    sql(`SET donatello.totp_algorithm = 'sha256'; SET donatello.totp_digits = 8; SELECT donatello.totp_enroll('${user}')`));
  assert.match(uri, /algorithm=SHA256&digits=8/);
  const code = oathtool('--totp=sha256', '-d', '8', '-b', secret);
  assert.equal(code.length, 8);
  sql(`SELECT donatello.totp_activate('${user}', '${code}')`);
  assert.equal(sql(`SELECT active FROM donatello.totp_credentials WHERE user_id = '${user}'`), 't');
});
