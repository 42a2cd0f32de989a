// Fixtures for the HTTP layer's client tests: a schema of test relations and
// functions in the workers' database (where the HTTP workers run), exposed
// through donatello.http_schemas, plus an organization with a user and an
// API key. Every test file calls setup() with its own schema name.
import pg from 'pg';

export const URL_BASE = process.env.DONATELLO_HTTP_URL || 'http://127.0.0.1:3000';
export const SCHEMAS = 'donatello_api, http_client, http_raw';

// A connected superuser client (PG* variables from test/bin/cluster env).
export async function connect() {
  const db = new pg.Client();
  await db.connect();
  return db;
}

// One value of one row.
export async function value(db, sql, params = []) {
  const { rows } = await db.query(sql, params);
  return rows.length ? Object.values(rows[0])[0] : undefined;
}

// Wait until fn() is truthy (a safety-net timeout, not a performance threshold).
export async function eventually(fn, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fn();
      if (r) return r;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The test schema: relations and functions covering every route's shapes.
export async function setup(db, schema) {
  await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await db.query(`
    CREATE SCHEMA ${schema};
    CREATE TABLE ${schema}.items (
      id int PRIMARY KEY, name text NOT NULL, price numeric, tags text[],
      active boolean, note text, "Mixed Case" text);
    INSERT INTO ${schema}.items (id, name, price, tags, active, note)
      SELECT i, 'item ' || i, i * 1.5, ARRAY['t' || (i % 3)], i % 2 = 0,
             CASE WHEN i % 4 = 0 THEN NULL ELSE 'note, ' || i END
        FROM generate_series(1, 10) i;
    CREATE TABLE ${schema}.codes (code text PRIMARY KEY, label text);
    CREATE VIEW ${schema}.cheap_items AS SELECT id, name, price FROM ${schema}.items WHERE price < 5;
    CREATE FUNCTION ${schema}.add(a int, b int DEFAULT 1) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
    CREATE FUNCTION ${schema}.numbers(n int) RETURNS SETOF int LANGUAGE sql STABLE AS 'SELECT generate_series(1, n)';
    CREATE FUNCTION ${schema}.items_above(min numeric) RETURNS SETOF ${schema}.items LANGUAGE sql STABLE
      AS $$SELECT * FROM ${schema}.items WHERE price > min ORDER BY id$$;
    CREATE FUNCTION ${schema}.first_item() RETURNS ${schema}.items LANGUAGE sql STABLE
      AS $$SELECT * FROM ${schema}.items ORDER BY id LIMIT 1$$;
    CREATE FUNCTION ${schema}.touch(note text) RETURNS void LANGUAGE sql VOLATILE
      AS $$UPDATE ${schema}.items SET note = touch.note WHERE id = 10$$;
    CREATE FUNCTION ${schema}.fail(code text, msg text) RETURNS int LANGUAGE plpgsql VOLATILE
      AS $$BEGIN RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg, DETAIL = 'some detail', HINT = 'some hint'; END$$;
    CREATE FUNCTION ${schema}.whoami() RETURNS jsonb LANGUAGE sql STABLE AS $$
      SELECT jsonb_build_object('user', current_user,
        'claims', current_setting('request.jwt.claims', true)::jsonb,
        'method', current_setting('request.method', true),
        'path', current_setting('request.path', true),
        'headers', current_setting('request.headers', true)::jsonb,
        'read_only', current_setting('transaction_read_only'))$$;
    CREATE FUNCTION ${schema}.sleep(seconds float8) RETURNS int LANGUAGE sql VOLATILE
      AS 'SELECT 1 FROM pg_sleep(seconds)';
    CREATE TABLE ${schema}.secret (id int);
    GRANT USAGE ON SCHEMA ${schema} TO donatello_anon, donatello_user, donatello_service;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ${schema}.items, ${schema}.codes, ${schema}.cheap_items
      TO donatello_anon, donatello_user, donatello_service;
    REVOKE ALL ON ${schema}.secret FROM PUBLIC;
    GRANT SELECT ON ${schema}.secret TO donatello_user;
  `);
  // expose the test schemas (the workers reload on SIGHUP)
  await db.query(`ALTER SYSTEM SET donatello.http_schemas = '${SCHEMAS}'`);
  await db.query('SELECT pg_reload_conf()');
  await eventually(async () => {
    const r = await fetch(`${URL_BASE}/items?limit=1`, { headers: { 'Accept-Profile': schema } });
    return r.status === 200;
  }, 'the HTTP workers to expose the test schema');
}

// An organization with one user (a password) and an API key; returns them.
export async function principal(db, slug, password) {
  await db.query("SET donatello.password_memory = '8MB'; SET donatello.password_iterations = 1");
  await db.query(`DELETE FROM donatello.organizations WHERE slug = $1`, [slug]).catch(() => {});
  const org = await value(db, 'SELECT donatello.create_organization($1, $1)', [slug]);
  const user = await value(db, 'SELECT donatello.create_user($1, $2, $3)', [org, `alice@${slug}.test`, 'Alice']);
  await db.query('SELECT donatello.grant_role($1, $2)', [user, 'org_admin']);
  await db.query('SELECT donatello.set_password($1, $2)', [user, password]);
  const key = await value(db, 'SELECT donatello.create_api_key($1, $2, $3)', [user, 'tests', ['*']]);
  return { org, user, email: `alice@${slug}.test`, key: key.key, keyId: key.key_id };
}
