// generation_db.mjs — a connection to a database of its own for the
// generation tests (donatello_client_generation), with a fresh donatello
// extension; reaches the throwaway cluster through the PG* variables that
// `test/bin/cluster env` prints (test/bin/run-suites exports them).
import pg from 'pg';

const DATABASE = 'donatello_client_generation';
let prepared = null;

// Create the database if needed and (re)create the extension, once per process.
async function prepare() {
  const admin = new pg.Client({ database: 'postgres' });
  await admin.connect();
  try {
    const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (rowCount === 0) await admin.query(`CREATE DATABASE ${DATABASE}`);
  } finally {
    await admin.end();
  }
  const db = new pg.Client({ database: DATABASE });
  await db.connect();
  try {
    await db.query('DROP EXTENSION IF EXISTS donatello CASCADE');
    await db.query('CREATE EXTENSION donatello');
  } finally {
    await db.end();
  }
}

// A connected client; the caller ends it.
export async function connect() {
  prepared ??= prepare();
  await prepared;
  const client = new pg.Client({ database: DATABASE });
  await client.connect();
  return client;
}
