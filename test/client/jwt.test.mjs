// JWT interoperability with the npm jose library: tokens jose mints are
// accepted by donatello.jwt_verify, the ones jose would reject are rejected
// by donatello too, and donatello's tokens (jwt_sign, login) verify with jose.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import * as jose from 'jose';
import { sql, sqlstateOf, lit, freshDatabase, CHEAP, SECRET, HS } from './lib.mjs';

const secret = new TextEncoder().encode(SECRET);
const now = () => Math.floor(Date.now() / 1000);
let rsa, ec;

before(async () => {
  freshDatabase('donatello_client_jwt');
  rsa = await jose.generateKeyPair('RS256', { extractable: true });
  ec = await jose.generateKeyPair('ES256', { extractable: true });
  rsa.spki = await jose.exportSPKI(rsa.publicKey);
  rsa.pkcs8 = await jose.exportPKCS8(rsa.privateKey);
  ec.spki = await jose.exportSPKI(ec.publicKey);
  ec.pkcs8 = await jose.exportPKCS8(ec.privateKey);
});

const verify = (token, settings = HS) =>
  JSON.parse(sql(`${settings} SELECT donatello.jwt_verify(${lit(token)})`));
const rejectCode = (token, settings = HS) => sqlstateOf(`${settings} SELECT donatello.jwt_verify(${lit(token)})`);
const rs256 = () => `SET donatello.jwt_algorithm = 'RS256'; SET donatello.jwt_public_key = ${lit(rsa.spki)};
                     SET donatello.jwt_private_key = ${lit(rsa.pkcs8)};`;
const es256 = () => `SET donatello.jwt_algorithm = 'ES256'; SET donatello.jwt_public_key = ${lit(ec.spki)};
                     SET donatello.jwt_private_key = ${lit(ec.pkcs8)};`;

test('HS256 tokens minted by jose are accepted', async () => {
  const token = await new jose.SignJWT({ sub: 'jose-user', role: 'donatello_user' })
    .setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('5m').sign(secret);
  const claims = verify(token);
  assert.equal(claims.sub, 'jose-user');
  assert.equal(claims.role, 'donatello_user');
});

test('RS256 and ES256 tokens minted by jose are accepted with the configured public key', async () => {
  const r = await new jose.SignJWT({ sub: 'rsa' }).setProtectedHeader({ alg: 'RS256' })
    .setExpirationTime('5m').sign(rsa.privateKey);
  assert.equal(verify(r, rs256()).sub, 'rsa');
  const e = await new jose.SignJWT({ sub: 'ec' }).setProtectedHeader({ alg: 'ES256' })
    .setExpirationTime('5m').sign(ec.privateKey);
  assert.equal(verify(e, es256()).sub, 'ec');
  // and a signature by another key pair is refused
  const other = await jose.generateKeyPair('ES256');
  const forged = await new jose.SignJWT({ sub: 'ec' }).setProtectedHeader({ alg: 'ES256' }).sign(other.privateKey);
  assert.equal(rejectCode(forged, es256()), 'DNA03');
});

test('alg none is rejected (by jose and by donatello)', async () => {
  const token = new jose.UnsecuredJWT({ sub: 'admin' }).setExpirationTime('5m').encode();
  await assert.rejects(jose.jwtVerify(token, secret));
  assert.equal(rejectCode(token), 'DNA03');
});

test('a token of another algorithm is rejected (HS512 with the right secret)', async () => {
  const token = await new jose.SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'HS512' }).sign(secret);
  await assert.rejects(jose.jwtVerify(token, secret, { algorithms: ['HS256'] }));
  assert.equal(rejectCode(token), 'DNA03');
});

test('expired tokens are rejected, beyond the 30 s leeway', async () => {
  const token = await new jose.SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(now() - 120).sign(secret);
  await assert.rejects(jose.jwtVerify(token, secret), { code: 'ERR_JWT_EXPIRED' });
  assert.equal(rejectCode(token), 'DNA03');
  const justExpired = await new jose.SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(now() - 10).sign(secret);
  assert.equal(verify(justExpired).sub, 'x');
});

test('tokens not yet valid (future nbf) are rejected', async () => {
  const token = await new jose.SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'HS256' })
    .setNotBefore(now() + 300).sign(secret);
  await assert.rejects(jose.jwtVerify(token, secret), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
  assert.equal(rejectCode(token), 'DNA03');
});

test('a wrong audience is rejected when an audience is configured', async () => {
  const aud = "SET donatello.jwt_audience = 'donatello-api';";
  const wrong = await new jose.SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'HS256' })
    .setAudience('another-api').sign(secret);
  await assert.rejects(jose.jwtVerify(wrong, secret, { audience: 'donatello-api' }));
  assert.equal(rejectCode(wrong, HS + aud), 'DNA03');
  const right = await new jose.SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'HS256' })
    .setAudience(['donatello-api', 'other']).sign(secret);
  assert.equal(verify(right, HS + aud).sub, 'x');
});

test('an HS256 token signed with the RSA public key (algorithm confusion) is rejected', async () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'admin', exp: now() + 300 })}`;
  const sig = createHmac('sha256', rsa.spki).update(input).digest('base64url');
  const token = `${input}.${sig}`;
  // jose refuses to use a public key as an HMAC secret at all
  await assert.rejects(jose.jwtVerify(token, rsa.publicKey));
  assert.equal(rejectCode(token, rs256()), 'DNA03');
  assert.match(sqlError(token, rs256()), /algorithm "HS256" is not the configured "RS256"/);
});

function sqlError(token, settings) {
  try {
    sql(`${settings} SELECT donatello.jwt_verify(${lit(token)})`);
    return '';
  } catch (e) {
    return e.message;
  }
}

test('tokens signed by donatello (HS256, RS256, ES256) verify with jose', async () => {
  const claims = `'{"sub": "from-donatello", "exp": ${now() + 300}}'`;
  const hs = sql(`${HS} SELECT donatello.jwt_sign(${claims})`);
  assert.equal((await jose.jwtVerify(hs, secret, { algorithms: ['HS256'] })).payload.sub, 'from-donatello');
  const rs = sql(`${rs256()} SELECT donatello.jwt_sign(${claims})`);
  assert.equal((await jose.jwtVerify(rs, rsa.publicKey, { algorithms: ['RS256'] })).payload.sub, 'from-donatello');
  const es = sql(`${es256()} SELECT donatello.jwt_sign(${claims})`);
  const { payload, protectedHeader } = await jose.jwtVerify(es, ec.publicKey, { algorithms: ['ES256'] });
  assert.equal(payload.sub, 'from-donatello');
  assert.equal(protectedHeader.alg, 'ES256');
});

test('access tokens issued by login verify with jose and carry the documented claims', async () => {
  const org = sql("SELECT donatello.create_organization('JWT Client', 'jwt-client')");
  const user = sql(`SELECT donatello.create_user('${org}', 'jo@client.test', 'Jo')`);
  sql(`${CHEAP} SELECT donatello.set_password('${user}', 'Client-Secret-2024!')`);
  const tokens = JSON.parse(sql(`${CHEAP} ${HS} SELECT donatello.login('jo@client.test', 'Client-Secret-2024!')`));
  const { payload } = await jose.jwtVerify(tokens.access_token, secret, { algorithms: ['HS256'] });
  assert.equal(payload.sub, user);
  assert.equal(payload.org, org);
  assert.equal(payload.role, 'donatello_user');
  assert.equal(payload.exp - payload.iat, 900);
  assert.match(payload.sid, /^[0-9a-f-]{36}$/);
  // revoking the session makes donatello reject the token jose still accepts
  sql(`SELECT donatello.revoke_session('${payload.sid}')`);
  assert.equal(rejectCode(tokens.access_token), 'DNA03');
});
