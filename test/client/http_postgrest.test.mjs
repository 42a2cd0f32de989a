// The HTTP layer against the unmodified npm @supabase/postgrest-js client:
// every route and feature of docs/http.md, errors with their status, code,
// message, details and hint, JWT and API-key authentication.
//
//   cd test/client && npm test   (PG* and DONATELLO_HTTP_URL from test/bin/cluster env)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { PostgrestClient } from '@supabase/postgrest-js';
import { SignJWT } from 'jose';
import { URL_BASE, connect, eventually, principal, setup, value } from './lib/http_fixture.mjs';

const S = 'http_client';
const PASSWORD = 'Violet-Harbor-Engine-42';
let db;
let who;
let token;
let secret;

// A postgrest-js client on the test schema, with optional headers.
function client(headers = {}, schema = S) {
  return new PostgrestClient(URL_BASE, { schema, headers });
}

// A JWT signed with the server's secret (read as superuser).
async function sign(claims, expiresIn = '5m') {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(secret));
}

before(async () => {
  db = await connect();
  await setup(db, S);
  who = await principal(db, 'http-client-org', PASSWORD);
  secret = await value(db, 'SHOW donatello.jwt_secret');
  const api = client({}, 'donatello_api');
  const { data, error } = await api.rpc('login', { email: who.email, password: PASSWORD, org_slug: 'http-client-org' });
  assert.equal(error, null);
  token = data.access_token;
});

after(async () => {
  await db.end();
});

test('GET relation: select with aliases and casts, Content-Range', async () => {
  const res = await client().from('items').select('id,label:name,price::text').order('id').limit(3);
  assert.equal(res.error, null);
  assert.equal(res.status, 200);
  assert.deepEqual(res.data, [
    { id: 1, label: 'item 1', price: '1.5' },
    { id: 2, label: 'item 2', price: '3.0' },
    { id: 3, label: 'item 3', price: '4.5' },
  ]);
});

test('filters: eq neq gt gte lt lte like ilike in is not', async () => {
  const c = client();
  const ids = async (q) => {
    const { data, error } = await q.order('id');
    assert.equal(error, null);
    return data.map((r) => r.id);
  };
  assert.deepEqual(await ids(c.from('items').select('id').eq('id', 3)), [3]);
  assert.deepEqual(await ids(c.from('items').select('id').neq('id', 3).lte('id', 4)), [1, 2, 4]);
  assert.deepEqual(await ids(c.from('items').select('id').gt('price', 12)), [9, 10]);
  assert.deepEqual(await ids(c.from('items').select('id').gte('price', 13.5)), [9, 10]);
  assert.deepEqual(await ids(c.from('items').select('id').lt('id', 3)), [1, 2]);
  assert.deepEqual(await ids(c.from('items').select('id').like('name', 'item 1*')), [1, 10]);
  assert.deepEqual(await ids(c.from('items').select('id').ilike('name', 'ITEM 1%')), [1, 10]);
  assert.deepEqual(await ids(c.from('items').select('id').in('id', [2, 5, 7])), [2, 5, 7]);
  assert.deepEqual(await ids(c.from('items').select('id').in('note', ['note, 1', 'note, 2'])), [1, 2]);
  assert.deepEqual(await ids(c.from('items').select('id').is('note', null)), [4, 8]);
  assert.deepEqual(await ids(c.from('items').select('id').is('active', true).lt('id', 5)), [2, 4]);
  assert.deepEqual(await ids(c.from('items').select('id').not('id', 'in', '(1,2,3,4,5,6,7,8)')), [9, 10]);
  assert.deepEqual(await ids(c.from('items').select('id').not('note', 'is', null).gt('id', 6)), [7, 9, 10]);
  assert.deepEqual(await ids(c.from('items').select('id').contains('tags', ['t1'])), [1, 4, 7, 10]);
  assert.deepEqual(await ids(c.from('items').select('id').filter('id', 'gte', 9)), [9, 10]);
  assert.deepEqual(await ids(c.from('items').select('id').match({ id: 2, active: true })), [2]);
});

test('or= and and= with nesting and quoted values', async () => {
  const { data, error } = await client()
    .from('items')
    .select('id')
    .or('id.eq.1,and(id.gt.8,id.not.eq.10),note.eq."note, 3"')
    .order('id');
  assert.equal(error, null);
  assert.deepEqual(data.map((r) => r.id), [1, 3, 9]);
  const both = await client().from('items').select('id').or('id.lt.3,id.gt.9').or('id.eq.1,id.eq.10').order('id');
  assert.deepEqual(both.data.map((r) => r.id), [1, 10]);
});

test('order with nulls first/last, multiple columns', async () => {
  const { data } = await client()
    .from('items')
    .select('id,note')
    .order('note', { ascending: false, nullsFirst: true })
    .order('id')
    .limit(3);
  assert.deepEqual(data.map((r) => r.id), [4, 8, 9]);
  const last = await client().from('items').select('id').order('note', { nullsFirst: false }).order('id', { ascending: false });
  assert.deepEqual(last.data.slice(-2).map((r) => r.id), [8, 4]);
});

test('range with exact count, head requests', async () => {
  const res = await client().from('items').select('id', { count: 'exact' }).order('id').range(2, 4);
  assert.equal(res.error, null);
  assert.equal(res.count, 10);
  assert.deepEqual(res.data.map((r) => r.id), [3, 4, 5]);
  assert.equal(res.status, 206);
  const head = await client().from('items').select('*', { count: 'exact', head: true }).gt('id', 7);
  assert.equal(head.error, null);
  assert.equal(head.count, 3);
  assert.equal(head.data, null);
  const raw = await fetch(`${URL_BASE}/items?select=id&limit=2&order=id`, { headers: { 'Accept-Profile': S } });
  assert.equal(raw.headers.get('content-range'), '0-1/*');
  const none = await fetch(`${URL_BASE}/items?id=gt.100`, { headers: { 'Accept-Profile': S, Prefer: 'count=exact' } });
  assert.equal(none.headers.get('content-range'), '*/0');
});

test('single and maybeSingle', async () => {
  const one = await client().from('items').select('id,name').eq('id', 5).single();
  assert.equal(one.error, null);
  assert.deepEqual(one.data, { id: 5, name: 'item 5' });
  const many = await client().from('items').select('id').lt('id', 3).single();
  assert.equal(many.status, 406);
  assert.equal(many.error.code, 'PGRST116');
  assert.equal(many.error.details, 'The result contains 2 rows');
  const zero = await client().from('items').select('id').eq('id', 999).single();
  assert.equal(zero.status, 406);
  assert.equal(zero.error.details, 'The result contains 0 rows');
  const maybe = await client().from('items').select('id').eq('id', 999).maybeSingle();
  assert.equal(maybe.error, null);
  assert.equal(maybe.data, null);
  const maybeOne = await client().from('items').select('id').eq('id', 7).maybeSingle();
  assert.deepEqual(maybeOne.data, { id: 7 });
});

test('views are relations too', async () => {
  const { data, error } = await client().from('cheap_items').select('id').order('id');
  assert.equal(error, null);
  assert.deepEqual(data.map((r) => r.id), [1, 2, 3]);
});

test('insert, insert many with select(), return=minimal', async () => {
  const c = client();
  const one = await c.from('items').insert({ id: 101, name: 'new one', price: 2 }).select('id,name').single();
  assert.equal(one.error, null);
  assert.equal(one.status, 201);
  assert.deepEqual(one.data, { id: 101, name: 'new one' });
  const many = await c.from('items').insert([{ id: 102, name: 'a' }, { id: 103, name: 'b', note: 'x' }]).select('id,note');
  assert.equal(many.status, 201);
  assert.deepEqual(many.data, [{ id: 102, note: null }, { id: 103, note: 'x' }]);
  const minimal = await c.from('items').insert({ id: 104, name: 'quiet' });
  assert.equal(minimal.status, 201);
  assert.equal(minimal.data, null);
  assert.equal(await value(db, `SELECT name FROM ${S}.items WHERE id = 104`), 'quiet');
});

test('upsert: merge-duplicates with on_conflict, ignore-duplicates', async () => {
  const c = client();
  const up = await c.from('codes').upsert({ code: 'A', label: 'first' }).select();
  assert.equal(up.error, null);
  const again = await c.from('codes').upsert([{ code: 'A', label: 'second' }, { code: 'B', label: 'b' }], { onConflict: 'code' }).select().order('code');
  assert.equal(again.error, null);
  assert.deepEqual(again.data, [{ code: 'A', label: 'second' }, { code: 'B', label: 'b' }]);
  const ignored = await c.from('codes').upsert({ code: 'A', label: 'third' }, { ignoreDuplicates: true }).select();
  assert.equal(ignored.error, null);
  assert.deepEqual(ignored.data, []);
  assert.equal(await value(db, `SELECT label FROM ${S}.codes WHERE code = 'A'`), 'second');
});

test('update and delete with filters; delete without filter refused', async () => {
  const c = client();
  const upd = await c.from('items').update({ note: 'patched' }).gte('id', 102).lte('id', 103).select('id,note').order('id');
  assert.equal(upd.error, null);
  assert.equal(upd.status, 200);
  assert.deepEqual(upd.data, [{ id: 102, note: 'patched' }, { id: 103, note: 'patched' }]);
  const quiet = await c.from('items').update({ note: 'quiet' }).eq('id', 104);
  assert.equal(quiet.status, 204);
  const del = await c.from('items').delete().in('id', [101, 102]).select('id').order('id');
  assert.deepEqual(del.data, [{ id: 101 }, { id: 102 }]);
  const all = await c.from('items').delete();
  assert.equal(all.status, 400);
  assert.equal(all.error.code, '21000');
  assert.equal(await value(db, `SELECT count(*)::int FROM ${S}.items`), 12);
  const gone = await c.from('items').delete({ count: 'exact' }).in('id', [103, 104]);
  assert.equal(gone.status, 204);
  assert.equal(gone.count, 2);
});

test('rpc: POST scalar, set, composite, void; GET and HEAD', async () => {
  const c = client();
  const add = await c.rpc('add', { a: 2, b: 40 });
  assert.equal(add.error, null);
  assert.equal(add.data, 42);
  const dflt = await c.rpc('add', { a: 2 });
  assert.equal(dflt.data, 3);
  const nums = await c.rpc('numbers', { n: 3 });
  assert.deepEqual(nums.data, [1, 2, 3]);
  const rows = await c.rpc('items_above', { min: 12 }).select('id,name');
  assert.deepEqual(rows.data, [{ id: 9, name: 'item 9' }, { id: 10, name: 'item 10' }]);
  const filtered = await c.rpc('items_above', { min: 1 }).gt('id', 8).order('id', { ascending: false });
  assert.deepEqual(filtered.data.map((r) => r.id), [10, 9]);
  const first = await c.rpc('first_item');
  assert.equal(first.data.id, 1);
  const v = await c.rpc('touch', { note: 'touched' });
  assert.equal(v.status, 204);
  assert.equal(v.error, null);
  assert.equal(await value(db, `SELECT note FROM ${S}.items WHERE id = 10`), 'touched');
  const get = await c.rpc('add', { a: 5, b: 6 }, { get: true });
  assert.equal(get.data, 11);
  const head = await c.rpc('numbers', { n: 4 }, { head: true, count: 'exact' });
  assert.equal(head.error, null);
  assert.equal(head.data, null);
  const volatileGet = await c.rpc('touch', { note: 'x' }, { get: true });
  assert.equal(volatileGet.status, 405);
});

test('rpc sets request.jwt.claims, request.method, request.path, request.headers and the role', async () => {
  const anon = await client({ 'X-Custom': 'Hello' }).rpc('whoami', {}, { get: true });
  assert.equal(anon.error, null);
  assert.equal(anon.data.user, 'donatello_anon');
  assert.equal(anon.data.method, 'GET');
  assert.equal(anon.data.path, '/rpc/whoami');
  assert.equal(anon.data.headers['x-custom'], 'Hello');
  assert.equal(anon.data.read_only, 'on');
  const authed = await client({ Authorization: `Bearer ${token}` }).rpc('whoami');
  assert.equal(authed.data.user, 'donatello_user');
  assert.equal(authed.data.claims.sub, who.user);
  assert.equal(authed.data.claims.org, who.org);
  assert.equal(authed.data.method, 'POST');
  assert.equal(authed.data.headers.authorization, undefined, 'credentials are not copied into request.headers');
});

test('JWT: role claim picks the role; disallowed role, bad signature, expired token -> 401', async () => {
  const service = await sign({ role: 'donatello_service', sub: who.user, org: who.org });
  const ok = await client({ Authorization: `Bearer ${service}` }).rpc('whoami');
  assert.equal(ok.data.user, 'donatello_service');
  const su = await sign({ role: 'postgres' });
  const refused = await client({ Authorization: `Bearer ${su}` }).rpc('whoami');
  assert.equal(refused.status, 401);
  assert.equal(refused.error.code, 'DNA03');
  const raw = await fetch(`${URL_BASE}/rpc/whoami`, { method: 'POST', headers: { Authorization: `Bearer ${token}x` } });
  assert.equal(raw.status, 401);
  assert.match(raw.headers.get('www-authenticate'), /^Bearer error="invalid_token", error_description=".+"$/);
  const expired = await sign({ role: 'donatello_user' }, Math.floor(Date.now() / 1000) - 3600);
  const late = await client({ Authorization: `Bearer ${expired}` }).rpc('whoami');
  assert.equal(late.status, 401);
  const basic = await client({ Authorization: 'Basic dXNlcjpwYXNz' }).rpc('whoami');
  assert.equal(basic.status, 401);
});

test('API key: X-API-Key and apikey headers become claims, rate-limit headers', async () => {
  const r1 = await fetch(`${URL_BASE}/rpc/whoami`, {
    method: 'POST', headers: { 'X-API-Key': who.key, 'Content-Profile': S, 'Content-Type': 'application/json' }, body: '{}',
  });
  assert.equal(r1.status, 200);
  const body = await r1.json();
  assert.equal(body.user, 'donatello_user');
  assert.equal(body.claims.sub, who.user);
  assert.equal(body.claims.key_id, who.keyId);
  assert.deepEqual(body.claims.scopes, ['*']);
  assert.ok(Number(r1.headers.get('x-ratelimit-limit')) >= 1);
  assert.ok(r1.headers.get('x-ratelimit-remaining') !== null);
  assert.ok(r1.headers.get('x-ratelimit-reset') !== null);
  const viaClient = await client({ apikey: who.key }).rpc('whoami');
  assert.equal(viaClient.data.claims.key_id, who.keyId);
  const bad = await client({ 'X-API-Key': 'dnk_notavalidkeyatall' }).rpc('whoami');
  assert.equal(bad.status, 401);
  assert.equal(bad.error.code, 'DNA01');
});

test('API key rate limit: 429 with Retry-After and X-RateLimit-*', async () => {
  await db.query("SET donatello.password_memory = '8MB'");
  const key = await value(db, 'SELECT donatello.create_api_key($1, $2, $3)', [who.user, 'limited', ['*']]);
  await db.query('ALTER SYSTEM SET donatello.api_key_rate_limit = 3');
  await db.query("ALTER SYSTEM SET donatello.api_key_rate_limit_period = '1h'");
  await db.query('SELECT pg_reload_conf()');
  try {
    let last;
    await eventually(async () => {
      last = await fetch(`${URL_BASE}/rpc/whoami`, { method: 'POST', headers: { 'X-API-Key': key.key, 'Content-Profile': S } });
      return last.status === 429;
    }, 'the rate limit');
    assert.equal(last.headers.get('x-ratelimit-limit'), '3');
    assert.equal(last.headers.get('x-ratelimit-remaining'), '0');
    assert.ok(Number(last.headers.get('retry-after')) >= 1);
    const err = await last.json();
    assert.equal(err.code, 'DNR01');
    const metrics = await (await fetch(`${URL_BASE}/metrics`)).text();
    assert.match(metrics, /donatello_http_rate_limited_total [1-9]/);
  } finally {
    await db.query('ALTER SYSTEM RESET donatello.api_key_rate_limit');
    await db.query('ALTER SYSTEM RESET donatello.api_key_rate_limit_period');
    await db.query('SELECT pg_reload_conf()');
  }
});

test('schema switching: Accept-Profile / Content-Profile; unknown schema 406 PGRST106', async () => {
  const api = client({ Authorization: `Bearer ${token}` }, 'donatello_api');
  const perms = await api.rpc('my_permissions');
  assert.equal(perms.error, null);
  assert.ok(Array.isArray(perms.data) && perms.data.length > 0);
  const orgs = await api.from('organizations').select('slug');
  assert.deepEqual(orgs.data, [{ slug: 'http-client-org' }]);
  const bad = await client({}, 'donatello').from('users').select();
  assert.equal(bad.status, 406);
  assert.equal(bad.error.code, 'PGRST106');
  const badWrite = await client({}, 'pg_catalog').from('pg_class').insert({});
  assert.equal(badWrite.status, 406);
});

test('errors: 400 (parse, unknown column, P0001), 401/403 (privileges), 404, 409', async () => {
  const c = client();
  const parse = await c.from('items').select('id').filter('id', 'nope', 1);
  assert.equal(parse.status, 400);
  assert.equal(parse.error.code, 'PGRST100');
  const column = await c.from('items').select('nope');
  assert.equal(column.status, 400);
  assert.equal(column.error.code, '42703');
  assert.equal(column.error.message, `column ${S}.items.nope does not exist`);
  const raised = await c.rpc('fail', { code: 'P0001', msg: 'nope' });
  assert.equal(raised.status, 400);
  assert.deepEqual(raised.error, { code: 'P0001', message: 'nope', details: 'some detail', hint: 'some hint' });
  const dn = await c.rpc('fail', { code: 'DNB01', msg: 'budget' });
  assert.equal(dn.status, 402);
  const custom = await c.rpc('fail', { code: 'PT418', msg: 'teapot' });
  assert.equal(custom.status, 418);
  const anon = await c.from('secret').select();
  assert.equal(anon.status, 401);
  assert.equal(anon.error.code, '42501');
  const user = await client({ Authorization: `Bearer ${token}` }).from('secret').insert({ id: 1 });
  assert.equal(user.status, 403);
  const missing = await c.from('nothing_here').select();
  assert.equal(missing.status, 404);
  assert.equal(missing.error.code, 'PGRST205');
  const fn = await c.rpc('no_such_function', { x: 1 });
  assert.equal(fn.status, 404);
  assert.equal(fn.error.code, 'PGRST202');
  const wrongArgs = await c.rpc('add', { a: 1, zzz: 2 });
  assert.equal(wrongArgs.status, 404);
  const dup = await c.from('codes').insert({ code: 'B', label: 'again' });
  assert.equal(dup.status, 409);
  assert.equal(dup.error.code, '23505');
  assert.match(dup.error.details, /Key \(code\)=\(B\) already exists/);
});

test('413: request body over donatello.http_max_body_size', async () => {
  const big = 'x'.repeat(1024 * 1024 + 10);
  const res = await client().from('codes').insert({ code: 'big', label: big });
  assert.equal(res.status, 413);
  assert.equal(res.error.code, 'DNH01');
  const ok = await client().from('codes').select('code').eq('code', 'A');
  assert.equal(ok.status, 200);
});

test('statement timeout: a long statement is cancelled, the worker answers on', async () => {
  await db.query("ALTER SYSTEM SET donatello.http_statement_timeout = '1s'");
  await db.query('SELECT pg_reload_conf()');
  try {
    let res;
    await eventually(async () => {
      res = await client().rpc('sleep', { seconds: 10 });
      return res.status === 504;
    }, 'the statement timeout to apply');
    assert.equal(res.error.code, '57014');
  } finally {
    await db.query('ALTER SYSTEM RESET donatello.http_statement_timeout');
    await db.query('SELECT pg_reload_conf()');
  }
  const after = await client().rpc('add', { a: 1, b: 1 });
  assert.equal(after.data, 2);
});

test('login, refresh, logout and API keys over HTTP (donatello_api)', async () => {
  const anon = client({}, 'donatello_api');
  const wrong = await anon.rpc('login', { email: who.email, password: 'wrong-password-1', org_slug: 'http-client-org' });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.error.code, 'DNA01');
  const { data: tokens } = await anon.rpc('login', { email: who.email, password: PASSWORD, org_slug: 'http-client-org' });
  const refreshed = await anon.rpc('refresh', { refresh_token: tokens.refresh_token });
  assert.equal(refreshed.error, null);
  assert.ok(refreshed.data.access_token);
  const authed = client({ Authorization: `Bearer ${refreshed.data.access_token}` }, 'donatello_api');
  const created = await authed.rpc('create_api_key', { name: 'from http', scopes: ['generation:create'] });
  assert.equal(created.error, null);
  assert.match(created.data.key, /^dnk_/);
  const keys = await authed.rpc('api_keys');
  assert.ok(keys.data.some((k) => k.name === 'from http'));
  // the audit trail records who did it over HTTP, from where, with what client
  const { rows: audit } = await db.query(
    `SELECT user_id::text, client_ip, user_agent FROM donatello.audit_log
      WHERE table_name = 'donatello.api_keys' AND action = 'insert' AND new_data ->> 'id' = $1`, [created.data.key_id]);
  assert.equal(audit.length, 1);
  assert.equal(audit[0].user_id, who.user);
  assert.equal(audit[0].client_ip, '127.0.0.1');
  assert.ok(audit[0].user_agent, 'the request\'s User-Agent is recorded');
  const revoked = await authed.rpc('revoke_api_key', { key_id: created.data.key_id });
  assert.equal(revoked.status, 204);
  const out = await anon.rpc('logout', { refresh_token: refreshed.data.refresh_token });
  assert.equal(out.status, 204);
});

test('OpenAPI document, /health, /metrics, CORS', async () => {
  const doc = await (await fetch(`${URL_BASE}/`, { headers: { 'Accept-Profile': S } })).json();
  assert.equal(doc.openapi, '3.0.3');
  assert.ok(doc.paths['/items'].get);
  assert.ok(doc.paths['/rpc/add'].get);
  assert.ok(doc.paths['/rpc/touch'].post && !doc.paths['/rpc/touch'].get);
  assert.equal(doc.paths['/secret'], undefined, 'anonymous callers do not see what they cannot use');
  assert.equal(doc.components.schemas.items.properties.id.type, 'integer');
  const health = await fetch(`${URL_BASE}/health`);
  assert.equal(health.status, 200);
  assert.equal((await health.json()).status, 'ok');
  const metrics = await (await fetch(`${URL_BASE}/metrics`)).text();
  assert.match(metrics, /donatello_http_requests_total\{route="relation",method="GET",status="200"\} \d+/);
  assert.match(metrics, /donatello_http_request_duration_seconds_bucket\{route="rpc",le="\+Inf"\} \d+/);
  assert.match(metrics, /# TYPE donatello_dispatcher_backlog gauge/);
  const pre = await fetch(`${URL_BASE}/items`, {
    method: 'OPTIONS',
    headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'authorization' },
  });
  assert.equal(pre.status, 200);
  assert.equal(pre.headers.get('access-control-allow-origin'), '*');
  assert.match(pre.headers.get('access-control-allow-methods'), /PATCH/);
  const get = await fetch(`${URL_BASE}/items?limit=1`, { headers: { Origin: 'https://app.example', 'Accept-Profile': S } });
  assert.match(get.headers.get('access-control-expose-headers'), /Content-Range/);
});
