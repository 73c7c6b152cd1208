// Prisma Client (the migration guides' ORM) against the guards, through the
// node-postgres driver adapter and Prisma 7's query compiler: no Rust engine and
// no download. The guide-style migration.sql is applied with psql, as `prisma
// migrate deploy` would apply it (its schema engine cannot be downloaded here).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PrismaPg } from '@prisma/adapter-pg';
import prismaClient from '@prisma/client';
import { closeAtEnd, connect, database, waitUntilBlockedBy } from './lib.js';
import { withPrismaRetry } from './prisma_retry.js';

const { PrismaClient, Prisma } = prismaClient;
const MIGRATION = fileURLToPath(new URL('prisma/migrations/20260101000000_guards/migration.sql', import.meta.url));
const TX_1 = '10000000-0000-0000-0000-000000000001';

let prisma;
let pgClient; // a plain node-postgres session beside Prisma's pool
let ledgerId;
let product;
let piece;

before(async () => {
  const db = await database({ extension: false });
  const psql = process.env.PG_BIN ? join(process.env.PG_BIN, 'psql') : 'psql';
  const run = spawnSync(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-1', '-d', db, '-f', MIGRATION], {
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, `psql: ${run.error ?? run.stderr}`);

  prisma = new PrismaClient({ adapter: new PrismaPg({ database: db }) });
  closeAtEnd(() => prisma.$disconnect());
  pgClient = await connect();
  await prisma.retailerWholesalerCredit.create({ data: { retailerId: 1, wholesalerId: 20, creditLimit: '1000.00' } });
  ({ id: ledgerId } = await prisma.ledgerEntry.create({
    data: { retailerId: 1, wholesalerId: 20, entryType: 'DEBIT', amount: '600.00' },
  }));
  product = await prisma.wholesalerProduct.create({ data: { name: 'drip line 16mm', stock: 10 } });
  piece = await prisma.sprinklerSparePiece.create({
    data: { stockId: 7, createdByTransactionId: TX_1, originalStockId: 7 },
  });
});

// Runs a refused Prisma call and returns its error after the checks every
// refusal shares: a PrismaClientKnownRequestError carrying the driver adapter's
// error, with the SQLSTATE in cause.originalCode.
async function refused(call, code, sqlstate) {
  const err = await call().then(
    () => assert.fail('the guard let it through'),
    (e) => e,
  );
  assert.ok(err instanceof Prisma.PrismaClientKnownRequestError, `${err}`);
  assert.equal(err.code, code);
  assert.equal(err.meta.driverAdapterError.name, 'DriverAdapterError');
  assert.equal(err.meta.driverAdapterError.cause.originalCode, sqlstate);
  return err;
}

describe('migration.sql applied with psql', () => {
  test('registers the guards, and every model reads its table', async () => {
    const { rows } = await pgClient.query('SELECT table_name::text, guard FROM integrity.guards ORDER BY 1, 2');
    assert.deepEqual(
      rows.map((r) => `${r.table_name}:${r.guard}`),
      [
        'ledger_entries:append_only',
        'ledger_entries:ledger_credit',
        'retailer_wholesaler_credits:credit',
        'sprinkler_spare_pieces:immutable',
        'sprinkler_spare_pieces:versioning',
        'wholesaler_products:stock',
      ],
    );
    // The ledger credit guard moved the account's used credit on Prisma's INSERT.
    const account = await prisma.retailerWholesalerCredit.findFirstOrThrow();
    assert.equal(account.usedCredit.toFixed(2), '600.00');
  });
});

describe('what Prisma Client raises for each guard', () => {
  test('23001 append-only: P2003 with the guard trigger as the constraint', async () => {
    for (const call of [
      () => prisma.ledgerEntry.update({ where: { id: ledgerId }, data: { amount: '1.00' } }),
      () => prisma.ledgerEntry.delete({ where: { id: ledgerId } }),
      () => prisma.ledgerEntry.deleteMany({}),
    ]) {
      const err = await refused(call, 'P2003', '23001');
      assert.equal(err.meta.modelName, 'LedgerEntry');
      assert.equal(err.meta.driverAdapterError.cause.kind, 'RestrictViolation');
      assert.deepEqual(err.meta.driverAdapterError.cause.constraint, { index: 'integrity_append_only' });
      assert.match(err.meta.driverAdapterError.cause.originalMessage, /^cannot (update|delete) rows of append-only table "ledger_entries"$/);
      // Prisma's message for P2003 speaks of a foreign key: match on the code and
      // the cause, not on the message.
      assert.match(err.message, /Foreign key constraint violated on the constraint: `integrity_append_only`/);
    }
    assert.equal(await prisma.ledgerEntry.count(), 1);
  });

  test('23001 immutable: P2003 with the column as the constraint fields', async () => {
    const err = await refused(
      () => prisma.sprinklerSparePiece.update({ where: { id: piece.id }, data: { createdByTransactionId: piece.id } }),
      'P2003',
      '23001',
    );
    assert.deepEqual(err.meta.driverAdapterError.cause.constraint, { fields: ['created_by_transaction_id'] });
  });

  test('23514 stock, credit and ledger credit: P2039 with detail, hint and column', async () => {
    const stock = await refused(
      () => prisma.wholesalerProduct.update({ where: { id: product.id }, data: { reservedStock: 11 } }),
      'P2039',
      '23514',
    );
    assert.deepEqual(stock.meta.driverAdapterError.cause, {
      originalCode: '23514',
      originalMessage: 'reserved_stock of table "wholesaler_products" cannot exceed stock',
      kind: 'postgres',
      code: '23514',
      severity: 'ERROR',
      message: 'reserved_stock of table "wholesaler_products" cannot exceed stock',
      detail: `Key (id)=(${product.id}) in table public.wholesaler_products would have stock 10 and reserved_stock 11.`,
      column: 'reserved_stock',
      hint:
        'Reserve, release and consume stock with integrity.reserve_stock(), release_stock() and commit_stock(): ' +
        'they check what is available under the row lock and never oversell.',
    });
    const credit = await refused(
      () =>
        prisma.retailerWholesalerCredit.update({
          where: { retailerId_wholesalerId: { retailerId: 1, wholesalerId: 20 } },
          data: { usedCredit: '1000.01' },
        }),
      'P2039',
      '23514',
    );
    assert.equal(credit.meta.driverAdapterError.cause.column, 'used_credit');
    const ledger = await refused(
      () => prisma.ledgerEntry.create({ data: { retailerId: 1, wholesalerId: 20, entryType: 'DEBIT', amount: '400.01' } }),
      'P2039',
      '23514',
    );
    const cause = ledger.meta.driverAdapterError.cause;
    assert.equal(cause.column, undefined);
    assert.match(cause.detail, /^Key \(id\)=\(\d+\) in table public\.ledger_entries: used_credit of public\.retailer_wholesaler_credits would become 1000\.01, with credit_limit 1000\.00\.$/);
    assert.equal(cause.hint, "Record a payment first, or raise the account's credit limit.");
    // Prisma's message keeps the SQLSTATE and the server's message.
    assert.match(ledger.message, /Database error\. Code: `23514`\. Message: `credit limit exceeded for account/);
  });

  test('40001 stale version: P2034, the retryable write conflict', async () => {
    const err = await refused(
      () => prisma.sprinklerSparePiece.update({ where: { id: piece.id }, data: { version: 7 } }),
      'P2034',
      '40001',
    );
    assert.equal(err.meta.driverAdapterError.cause.kind, 'TransactionWriteConflict');
    assert.equal(
      err.meta.driverAdapterError.cause.originalMessage,
      'could not update row of table "sprinkler_spare_pieces": stale version',
    );
  });

  test('a refused raw statement: P2010 with the same cause', async () => {
    const err = await refused(() => prisma.$executeRaw`DELETE FROM ledger_entries`, 'P2010', '23001');
    assert.deepEqual(err.meta.driverAdapterError.cause.constraint, { index: 'integrity_append_only' });
  });
});

describe('optimistic locking with enable_versioning', () => {
  test('a plain update bumps the version once, and Prisma returns the bumped row', async () => {
    const previous = await prisma.sprinklerSparePiece.findUniqueOrThrow({ where: { id: piece.id } });
    const updated = await prisma.sprinklerSparePiece.update({ where: { id: piece.id }, data: { status: 'DISPATCHED' } });
    assert.equal(updated.version, previous.version + 1);
  });

  test('the guides\' "WHERE version = read, increment" idiom: fresh bumps once, stale touches 0 rows', async () => {
    const { version: read } = await prisma.sprinklerSparePiece.findUniqueOrThrow({ where: { id: piece.id } });
    const update = (status) =>
      prisma.sprinklerSparePiece.updateMany({
        where: { id: piece.id, version: read },
        data: { status, version: { increment: 1 } },
      });
    // SET version = version + 1 is OLD.version + 1: strict versioning accepts it and
    // bumps nothing more.
    assert.deepEqual(await update('SOLD_OUT'), { count: 1 });
    assert.deepEqual(await update('IN_STOCK'), { count: 0 });
    const after = await prisma.sprinklerSparePiece.findUniqueOrThrow({ where: { id: piece.id } });
    assert.deepEqual([after.status, after.version], ['SOLD_OUT', read + 1]);
  });

  test('a stale writer in an interactive transaction retries on P2034 and converges', async () => {
    const { version: start } = await prisma.sprinklerSparePiece.findUniqueOrThrow({ where: { id: piece.id } });
    const holder = await connect();
    // The other writer updates first and holds the row until Prisma waits on it.
    await holder.query('BEGIN');
    await holder.query("UPDATE sprinkler_spare_pieces SET status = 'DISPATCHED' WHERE id = $1", [piece.id]);

    const race = withPrismaRetry(prisma, async (tx) => {
      // "Send back what you read": the guard refuses it if the row moved on.
      const { version } = await tx.sprinklerSparePiece.findUniqueOrThrow({ where: { id: piece.id } });
      await tx.sprinklerSparePiece.update({ where: { id: piece.id }, data: { status: 'SOLD_OUT', version } });
      return version;
    });
    await waitUntilBlockedBy(pgClient, holder.processID);
    await holder.query('COMMIT');

    // First attempt read `start`, found start + 1 after the wait (40001); the second
    // read start + 1 and committed start + 2.
    assert.deepEqual(await race, { result: start + 1, attempt: 2 });
    const after = await prisma.sprinklerSparePiece.findUniqueOrThrow({ where: { id: piece.id } });
    assert.deepEqual([after.status, after.version], ['SOLD_OUT', start + 2]);
  });
});

describe('integrity.reserve_stock from Prisma', () => {
  test('true while stock lasts, false after; a rolled back transaction gives it back', async () => {
    const reserve = (client, qty) =>
      client.$queryRaw`SELECT integrity.reserve_stock('wholesaler_products', ${product.id}::int, ${qty}::int) AS ok`;
    await assert.rejects(
      prisma.$transaction(async (tx) => {
        assert.deepEqual(await reserve(tx, 7), [{ ok: true }]);
        assert.deepEqual(await reserve(tx, 4), [{ ok: false }]);
        throw new Error('cancel the order');
      }),
      /cancel the order/,
    );
    let row = await prisma.wholesalerProduct.findUniqueOrThrow({ where: { id: product.id } });
    assert.deepEqual([row.stock, row.reservedStock], [10, 0]);
    assert.deepEqual(await reserve(prisma, 3), [{ ok: true }]);
    row = await prisma.wholesalerProduct.findUniqueOrThrow({ where: { id: product.id } });
    assert.equal(row.reservedStock, 3);
  });
});
