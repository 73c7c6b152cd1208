// node-postgres: what an application catches when it hits each guard, for the
// cases every client suite checks (../guard_cases.json).

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import pg from 'pg';
import { CASES, connectTo, makeSchema, PIECE_1 } from './lib.js';

describe('node-postgres DatabaseError fields', () => {
  let schema;
  let client;
  before(async () => {
    // Every statement here is refused and rolled back: the cases share one schema.
    schema = await makeSchema('pg_errors');
    client = await connectTo(schema);
  });

  test('there is one case per guard kind', () => assert.equal(CASES.length, 9));

  for (const c of CASES) {
    test(c.id, async () => {
      const expected = (s) => s?.replaceAll('{schema}', schema);
      const err = await client.query(c.sql).then(
        () => assert.fail('the guard let it through'),
        (e) => e,
      );
      assert.ok(err instanceof pg.DatabaseError, `not a DatabaseError: ${err}`);
      assert.equal(err.code, c.sqlstate);
      assert.equal(err.severity, 'ERROR');
      assert.equal(err.schema, schema);
      assert.equal(err.table, c.table);
      // node-postgres leaves a field the server did not send undefined.
      assert.equal(err.column, c.column ?? undefined);
      assert.equal(err.constraint, c.constraint);
      assert.ok(err.detail.startsWith(expected(c.detail)), `DETAIL: ${err.detail}`);
      assert.equal(err.hint, expected(c.hint));
    });
  }

  test('a refused statement aborts the transaction and changes nothing', async () => {
    await client.query('BEGIN');
    await assert.rejects(
      client.query("INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount) VALUES (1, 20, 'DEBIT', 400.01)"),
      { code: '23514', constraint: 'integrity_ledger_credit' },
    );
    await assert.rejects(client.query('SELECT 1'), { code: '25P02' });
    await client.query('ROLLBACK');
    const { rows } = await client.query(
      'SELECT count(*)::int AS n, (SELECT used_credit FROM retailer_wholesaler_credits) AS used FROM ledger_entries',
    );
    assert.deepEqual(rows, [{ n: 1, used: '600.00' }]);
  });

  test('a parameterized (extended protocol) statement reports the same fields', async () => {
    await assert.rejects(
      client.query('UPDATE sprinkler_spare_pieces SET version = $1 WHERE id = $2', [7, PIECE_1]),
      { code: '40001', table: 'sprinkler_spare_pieces', column: 'version', constraint: 'integrity_version_bump' },
    );
  });
});

describe('integrity.reserve_stock from node-postgres', () => {
  test('reserves while stock lasts, never oversells, and a rollback gives it back', async () => {
    const client = await connectTo(await makeSchema('reserve_stock'));
    const reserve = "SELECT integrity.reserve_stock('wholesaler_products', $1::int, $2) AS reserved";
    await client.query('BEGIN');
    // 10 in stock: 7 can be reserved, then 4 more cannot (false, not an error).
    assert.deepEqual((await client.query(reserve, [1, 7])).rows, [{ reserved: true }]);
    assert.deepEqual((await client.query(reserve, [1, 4])).rows, [{ reserved: false }]);
    assert.deepEqual((await client.query('SELECT reserved_stock FROM wholesaler_products')).rows, [{ reserved_stock: 7 }]);
    await client.query('ROLLBACK');
    assert.deepEqual((await client.query('SELECT stock, reserved_stock FROM wholesaler_products')).rows, [
      { stock: 10, reserved_stock: 0 },
    ]);
  });
});
