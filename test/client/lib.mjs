// Helpers for the client tests: run SQL through psql against the throwaway
// cluster (test/bin/cluster env sets PGHOST, PGPORT, PGUSER), in a database of
// our own with a fresh donatello.
import { execFileSync, spawnSync } from 'node:child_process';

const bindir = process.env.PG_CONFIG
  ? execFileSync(process.env.PG_CONFIG, ['--bindir']).toString().trim()
  : '';
const PSQL = bindir ? `${bindir}/psql` : 'psql';
// each test file runs in its own process and uses its own database
let DB = 'postgres';

// Run SQL (several statements allowed); returns the last statement's output
// (unaligned, tuples only). Throws an Error whose .sqlstate is set on failure.
export function sql(text, { db = DB } = {}) {
  const r = spawnSync(PSQL, ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose', '-d', db], {
    input: text,
    encoding: 'utf8',
  });
  if (r.status !== 0) {
    const m = /ERROR:\s+([0-9A-Z]{5}):\s+(.*)/.exec(r.stderr);
    const err = new Error(m ? `${m[1]}: ${m[2]}` : r.stderr || `psql exited with ${r.status}`);
    err.sqlstate = m ? m[1] : null;
    throw err;
  }
  return r.stdout.trim();
}

// The SQLSTATE a statement fails with, or null when it succeeds.
export function sqlstateOf(text) {
  try {
    sql(text);
    return null;
  } catch (e) {
    return e.sqlstate;
  }
}

// A SQL literal (dollar-quoted, so PEM keys and tokens pass unchanged).
export function lit(s) {
  if (s.includes('$q$')) throw new Error('cannot quote');
  return `$q$${s}$q$`;
}

// Create this file's database with the extension, and use it from now on.
export function freshDatabase(name) {
  sql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`, { db: 'postgres' });
  sql(`CREATE DATABASE ${name}`, { db: 'postgres' });
  DB = name;
  sql('CREATE EXTENSION donatello');
}

// Settings that keep Argon2id cheap in tests (the cost is tested in pg_regress).
export const CHEAP = "SET donatello.password_memory = '8MB'; SET donatello.password_iterations = 1;";
export const SECRET = 'client-test-secret-client-test-secret-42';
export const HS = `SET donatello.jwt_secret = ${lit(SECRET)};`;
