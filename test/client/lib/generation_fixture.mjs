// Shared setup of the generation pipeline's client tests (SQL level:
// generation_pipeline.test.mjs, HTTP level: generation_http.test.mjs), in the
// worker database (PG* variables from test/bin/cluster env) where the
// dispatcher and the HTTP workers run: settings changed with ALTER SYSTEM,
// an organization with a department, a member, a budget and a blocklist,
// providers and models on the mock provider, a webhook endpoint.
//
// Providers and models are global (not per organization): each test file
// registers its own under its own names and image sizes, so that no other
// file's models are ever eligible for its requests, and drops them at the end
// (dropProviders).
import assert from 'node:assert/strict';

// One value of one row.
export async function value(db, sql, params = []) {
  const { rows } = await db.query(sql, params);
  return rows.length ? Object.values(rows[0])[0] : undefined;
}

// Poll until fn() is truthy (a safety net against hanging, not a performance threshold).
export async function eventually(fn, what, timeoutMs = 90000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await fn();
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ALTER SYSTEM SET each setting (null: RESET), reload, and wait until this session sees it.
export async function configure(db, settings) {
  for (const [name, v] of Object.entries(settings)) {
    await db.query(v === null ? `ALTER SYSTEM RESET ${name}` : `ALTER SYSTEM SET ${name} = '${v}'`);
  }
  await db.query('SELECT pg_reload_conf()');
  for (const [name, v] of Object.entries(settings)) {
    if (v !== null) {
      await eventually(async () => (await value(db, `SELECT current_setting('${name}')`)) === v, `reload of ${name}`);
    }
  }
}

// The error of a promise that must be rejected.
export async function refusal(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('the statement was expected to fail');
}

// Every circuit closed again (after a test that made models fail).
export async function closeCircuits(db) {
  await db.query("UPDATE donatello.model_circuits SET state = 'closed', failures = 0, window_started_at = NULL");
}

// A member of the department (optionally with a password, for login).
export async function createMember(db, org, department, email, password = null) {
  const user = await value(db, "SELECT donatello.create_user($1, $2, 'Pat', $3)", [org, email, department]);
  await db.query("SELECT donatello.grant_role($1, 'member')", [user]);
  if (password !== null) {
    await db.query("SET donatello.password_memory = '8MB'; SET donatello.password_iterations = 1");
    await db.query('SELECT donatello.set_password($1, $2)', [user, password]);
  }
  return user;
}

// A department with a hard budget.
export async function createDepartment(db, org, name, limit) {
  const department = await value(db, 'SELECT donatello.create_department($1, $2)', [org, name]);
  await db.query("SELECT donatello.set_budget($1, $2, 'hard')", [department, limit]);
  return department;
}

/*
 * The world a generation test works in:
 *   slug, tag      the organization's slug; a suffix for provider names
 *   mock, apiKey   the mock provider (startMockProvider) and its key
 *   models         [[provider suffix, model, cost, quality, speed, reliability, sizes]]
 *   webhookUrl     where generation.* events go (null: no endpoint)
 *   password       the member's password (null: none)
 * Returns { org, design (a department with a budget of 10), user, email, hookSecret, providers }.
 */
export async function createGenerationWorld(db, { slug, tag, mock, apiKey, models, webhookUrl = null, password = null }) {
  const org = await value(db, 'SELECT donatello.create_organization($1, $2)', [`Generation tests ${slug}`, slug]);
  const design = await createDepartment(db, org, 'Design', 10);
  const email = `pat-${slug}@example.com`;
  const user = await createMember(db, org, design, email, password);
  await db.query("SELECT donatello.add_blocked_terms($1, ARRAY['gore'], 'violence')", [org]);
  const providers = new Set(models.map(([p]) => `${p}-${tag}`));
  let slash = '';
  for (const name of providers) {
    // one base URL with a trailing slash: both spellings must work
    await db.query("SELECT donatello.register_provider($1, 'openai', $2, $3)", [name, mock.url + slash, apiKey]);
    slash = '/';
  }
  for (const [p, name, cost, quality, speed, reliability, sizes] of models) {
    await db.query('SELECT donatello.register_model($1, $2, $3, $4, $5, $6, true, $7)',
      [`${p}-${tag}`, name, cost, quality, speed, reliability, sizes]);
  }
  let hookSecret = null;
  if (webhookUrl !== null) {
    hookSecret = (await value(db, "SELECT donatello.create_webhook_endpoint($1, $2, '{generation.*}')",
      [org, webhookUrl])).secret;
  }
  return { org, design, user, email, hookSecret, providers: [...providers] };
}

// Drop the providers a test registered (their models and circuits go with them).
export async function dropProviders(db, names) {
  await db.query('DELETE FROM donatello.providers WHERE name = ANY($1)', [names]);
}
