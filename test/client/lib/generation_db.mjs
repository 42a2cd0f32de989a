// generation_db.mjs — a connection to a database of the calling test file's
// own (donatello_client_<name>: test files may run in parallel), with a fresh
// donatello extension; reaches the throwaway cluster through the PG*
// variables that `test/bin/cluster env` prints (test/bin/run-suites exports
// them).
import pg from 'pg';

const prepared = new Map();

// Create the database if needed and (re)create the extension, once per process.
async function prepare(database) {
  const admin = new pg.Client({ database: 'postgres' });
  await admin.connect();
  try {
    const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (rowCount === 0) await admin.query(`CREATE DATABASE ${database}`);
  } finally {
    await admin.end();
  }
  const db = new pg.Client({ database });
  await db.connect();
  try {
    await db.query('DROP EXTENSION IF EXISTS donatello CASCADE');
    await db.query('CREATE EXTENSION donatello');
  } finally {
    await db.end();
  }
}

// A connected client to donatello_client_<name>; the caller ends it.
export async function connect(name) {
  const database = `donatello_client_${name}`;
  if (!prepared.has(database)) prepared.set(database, prepare(database));
  await prepared.get(database);
  const client = new pg.Client({ database });
  await client.connect();
  return client;
}
