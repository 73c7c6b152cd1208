// Shared by the node-postgres and Prisma tests: connections to the test cluster,
// a database per test file, a schema per test holding ../schema.sql's guide tables,
// and the guard cases all client suites check (../guard_cases.json).
//
// The environment comes from make test-clients: PGHOST (the socket directory),
// PGPORT, PGUSER, which node-postgres reads itself, and CLIENTS_DB.

import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { after } from 'node:test';
import pg from 'pg';

const shared = new URL('../', import.meta.url);
export const SCHEMA_SQL = readFileSync(new URL('schema.sql', shared), 'utf8');
const data = JSON.parse(readFileSync(new URL('guard_cases.json', shared), 'utf8'));
export const CASES = data.cases;
export const { PIECE_1, PIECE_2 } = data.pieces;

// node --test runs the test files in parallel processes: each file gets a database
// of its own, named after it, dropped when its tests are done.
const DB = `${process.env.CLIENTS_DB ?? 'integrity_clients_node'}_${basename(process.argv[1] ?? 'x', '.test.js')}`;
let created;
const opened = [];

export async function connect(config = {}) {
  const client = new pg.Client({ database: DB, ...config });
  await client.connect();
  opened.push(client);
  return client;
}

async function admin(sql, database = 'postgres') {
  const client = new pg.Client({ database });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

// The file's database, created afresh (with the extension unless told otherwise:
// the Prisma test creates it from its migration).
export function database({ extension = true } = {}) {
  created ??= (async () => {
    // FORCE: a failed run may have left a connection behind.
    await admin(`DROP DATABASE IF EXISTS "${DB}" WITH (FORCE)`);
    await admin(`CREATE DATABASE "${DB}"`);
    if (extension) await admin('CREATE EXTENSION pg_integrity', DB);
    return DB;
  })();
  return created;
}

const closers = [];

// Registers fn to close a client (a Prisma Client, say) before the database goes.
export function closeAtEnd(fn) {
  closers.push(fn);
}

after(async () => {
  await Promise.all(closers.map((fn) => fn()));
  await Promise.all(opened.map((c) => c.end().catch(() => {})));
  if (created) await admin(`DROP DATABASE IF EXISTS "${DB}" WITH (FORCE)`);
});

let schemas = 0;

// A fresh schema with the guide tables, their guards and a few rows; returns its name.
export async function makeSchema(label) {
  await database();
  const name = `t${++schemas}_${label.replace(/\W/g, '_').toLowerCase().slice(0, 50)}`;
  await admin(`CREATE SCHEMA ${name}; SET search_path = ${name};\n${SCHEMA_SQL}`, DB);
  return name;
}

// A node-postgres client whose search_path is `schema`.
export function connectTo(schema) {
  return connect({ options: `-c search_path=${schema}` });
}

// Returns once backend `pid` waits for a lock another session holds: how the race
// tests order two sessions.
export async function waitUntilBlocked(observer, pid) {
  for (let i = 0; i < 3000; i++) {
    const { rows } = await observer.query('SELECT cardinality(pg_blocking_pids($1)) > 0 AS blocked', [pid]);
    if (rows[0].blocked) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`backend ${pid} never blocked`);
}

// Returns once some session waits for a lock that backend `pid` holds (for a racer
// whose backend is not known, such as one of Prisma's pooled connections).
export async function waitUntilBlockedBy(observer, pid) {
  for (let i = 0; i < 3000; i++) {
    const { rows } = await observer.query(
      'SELECT count(*) > 0 AS blocked FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))',
      [pid],
    );
    if (rows[0].blocked) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no session ever waited for backend ${pid}`);
}
