// A 40001 retry loop converges: two sessions race on one strict-versioned row.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectTo, makeSchema, PIECE_1, waitUntilBlocked } from './lib.js';
import { withRetry } from './retry.js';

test('a stale writer retries and converges', async () => {
  const schema = await makeSchema('retry');
  const [holder, racer, observer] = [await connectTo(schema), await connectTo(schema), await connectTo(schema)];
  const setStatus = async (client) => {
    // "Send back what you read": the guard refuses it if the row moved on.
    const { rows } = await client.query('SELECT version FROM sprinkler_spare_pieces WHERE id = $1', [PIECE_1]);
    await client.query("UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT', version = $1 WHERE id = $2", [
      rows[0].version,
      PIECE_1,
    ]);
    return rows[0].version;
  };

  // The other writer updates first and holds the row until the racer waits on it.
  await holder.query('BEGIN');
  await holder.query("UPDATE sprinkler_spare_pieces SET status = 'DISPATCHED' WHERE id = $1", [PIECE_1]);
  const race = withRetry(racer, setStatus);
  await waitUntilBlocked(observer, racer.processID);
  await holder.query('COMMIT');

  // First attempt read version 1, found 2 after the wait (40001); the second read 2.
  assert.deepEqual(await race, { result: 2, attempt: 2 });
  const { rows } = await observer.query('SELECT status, version FROM sprinkler_spare_pieces WHERE id = $1', [PIECE_1]);
  assert.deepEqual(rows, [{ status: 'SOLD_OUT', version: 3 }]);
});

test('the retry loop gives up with the last 40001', async () => {
  const client = await connectTo(await makeSchema('retry_gives_up'));
  let calls = 0;
  // A writer that always sends a version the row never had: every attempt is stale.
  const stale = (c) => {
    calls++;
    return c.query('UPDATE sprinkler_spare_pieces SET version = 9 WHERE id = $1', [PIECE_1]);
  };
  await assert.rejects(withRetry(client, stale, 3), { code: '40001', constraint: 'integrity_version_bump' });
  assert.equal(calls, 3);
  // The connection is usable again: the loop rolled back.
  assert.deepEqual((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
});

test('a non-40001 error is not retried', async () => {
  const client = await connectTo(await makeSchema('retry_no_retry'));
  let calls = 0;
  const refused = (c) => {
    calls++;
    return c.query('DELETE FROM ledger_entries');
  };
  await assert.rejects(withRetry(client, refused), { code: '23001' });
  assert.equal(calls, 1);
});

test('a REPEATABLE READ reservation that races another retries and sees what is left', async () => {
  const schema = await makeSchema('retry_repeatable_read');
  const [holder, racer, observer] = [await connectTo(schema), await connectTo(schema), await connectTo(schema)];
  await racer.query('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ');
  const reserve = async (client, qty) =>
    (await client.query("SELECT integrity.reserve_stock('wholesaler_products', 1, $1) AS ok", [qty])).rows[0].ok;

  // The holder reserves 7 of the 10 and keeps the row locked until the racer waits.
  await holder.query('BEGIN');
  assert.equal(await reserve(holder, 7), true);
  const race = withRetry(racer, (client) => reserve(client, 4));
  await waitUntilBlocked(observer, racer.processID);
  await holder.query('COMMIT');

  // The racer's snapshot predates the holder's commit: 40001, then on its second
  // attempt a fresh snapshot finds 3 available, and the reservation is refused.
  assert.deepEqual(await race, { result: false, attempt: 2 });
  const { rows } = await observer.query('SELECT stock, reserved_stock FROM wholesaler_products');
  assert.deepEqual(rows, [{ stock: 10, reserved_stock: 7 }]);
});
