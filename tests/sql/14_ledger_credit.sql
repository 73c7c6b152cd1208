-- 14_ledger_credit: integrity.guard_ledger_credit makes a ledger of DEBIT
-- and CREDIT entries move its account's cached used credit, atomically, and
-- refuses (23514) any entry that would take it above the account's limit or
-- below zero; 23503 when the account does not exist.  INSERT applies an
-- entry, DELETE takes it back, UPDATE takes back the old entry and applies
-- the new one.  Works with protect_append_only on the same ledger (the
-- migration guide's immutable ledger).  Fires on origin writes only: under
-- session_replication_role = replica (logical replication applying rows)
-- entries are not applied again, because the account rows replicate too.
-- The races are in tests/specs/credit_*.spec and
-- pgrx-tests/stock_credit_stress.sh.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE SCHEMA b2b;
SET search_path = b2b, public;

-- The migration guide's tables: a credit limit per retailer-wholesaler pair
-- and an immutable ledger of DEBIT and CREDIT entries between them.
CREATE TABLE retailer_wholesaler_credits (
    retailer_id   bigint NOT NULL,
    wholesaler_id bigint NOT NULL,
    credit_limit  numeric(14, 2) NOT NULL,
    used_credit   numeric(14, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (retailer_id, wholesaler_id)
);
CREATE TABLE ledger_entries (
    id            bigint PRIMARY KEY,
    retailer_id   bigint NOT NULL,
    wholesaler_id bigint NOT NULL,
    entry_type    text NOT NULL,
    amount        numeric(14, 2) NOT NULL,
    description   text,
    created_at    timestamptz NOT NULL DEFAULT '2026-11-01 10:00+00'
);
CREATE INDEX ON ledger_entries (retailer_id, wholesaler_id, entry_type, created_at DESC);
INSERT INTO retailer_wholesaler_credits VALUES
    (1, 20, 1000.00, 0), (1, 21, 500.00, 0), (2, 20, 0.00, 0);

SELECT integrity.guard_credit('retailer_wholesaler_credits');
SELECT integrity.protect_append_only('ledger_entries');
SELECT integrity.guard_ledger_credit('ledger_entries', 'retailer_wholesaler_credits',
                                     ARRAY['retailer_id', 'wholesaler_id']);

-- The registry rows, and the triggers: the credit trigger fires on origin
-- writes only (O), the append-only ones always (A).
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name IN ('ledger_entries'::regclass, 'retailer_wholesaler_credits'::regclass)
 ORDER BY table_name::text, guard;
SELECT * FROM guard_triggers('ledger_entries');

-- balances: every account, its cached used credit and what its ledger says.
CREATE VIEW balances AS
SELECT a.retailer_id, a.wholesaler_id, a.credit_limit, a.used_credit,
       coalesce(sum(CASE l.entry_type WHEN 'DEBIT' THEN l.amount WHEN 'CREDIT' THEN -l.amount END), 0) AS ledger,
       a.used_credit = coalesce(sum(CASE l.entry_type WHEN 'DEBIT' THEN l.amount WHEN 'CREDIT' THEN -l.amount END), 0) AS matches
  FROM retailer_wholesaler_credits a
  LEFT JOIN ledger_entries l USING (retailer_id, wholesaler_id)
 GROUP BY a.retailer_id, a.wholesaler_id, a.credit_limit, a.used_credit
 ORDER BY a.retailer_id, a.wholesaler_id;

------------------------------------------------------------------------------
-- DEBIT raises used credit, CREDIT (a payment) lowers it.
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (1, 1, 20, 'DEBIT', 600.00, 'order 1001');
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (2, 1, 20, 'DEBIT', 400.00, 'order 1002');              -- exactly at the limit
SELECT * FROM balances;
-- One paisa more is refused: 23514 with every error field.
\x on
SELECT * FROM expect_error($$INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
                             VALUES (3, 1, 20, 'DEBIT', 0.01)$$);
\x off
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (3, 1, 20, 'DEBIT', 0.01, 'order 1003');
-- A payment frees credit; then a debit fits again.
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (4, 1, 20, 'CREDIT', 250.00, 'payment');
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (5, 1, 20, 'DEBIT', 250.00, 'order 1004');
-- Paying back more than is owed would take used credit below zero: refused.
\x on
SELECT * FROM expect_error($$INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
                             VALUES (6, 1, 20, 'CREDIT', 1000.01)$$);
\x off
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (6, 1, 20, 'CREDIT', 1000.00, 'settled in full');
-- Each retailer-wholesaler pair has its own limit: the same retailer with
-- another wholesaler is another account, and a zero limit allows no debit.
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (7, 1, 21, 'DEBIT', 500.00, 'order 2001');
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (8, 2, 20, 'DEBIT', 0.01, 'order 3001');
SELECT * FROM balances;

-- No account for the pair: 23503, like a foreign key violation.
\x on
SELECT * FROM expect_error($$INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
                             VALUES (9, 3, 20, 'DEBIT', 1.00)$$);
\x off
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
VALUES (9, 2, 21, 'CREDIT', 1.00);
-- Entries that are not DEBIT or CREDIT, and amounts that are not positive: 23514.
\x on
SELECT * FROM expect_error($$INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
                             VALUES (10, 1, 20, 'REFUND', 1.00)$$);
SELECT * FROM expect_error($$INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
                             VALUES (10, 1, 20, 'DEBIT', 0)$$);
\x off
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
VALUES (10, 1, 20, 'CREDIT', -5.00);
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
VALUES (10, 1, 20, 'debit', 5.00);
SELECT * FROM balances;

-- A multi-row INSERT that crosses the limit part-way changes nothing: not
-- the entries before the one refused, not the account.
-- The DETAIL gives what the account would have become with the entries
-- before it: 1200.00.
SELECT sqlstate, message, detail LIKE '%would become 1200.00,%' AS detail_has_final_value FROM expect_error(
    $$INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
      VALUES (11, 1, 20, 'DEBIT', 300.00, 'batch'), (12, 1, 20, 'DEBIT', 300.00, 'batch'),
             (13, 1, 20, 'DEBIT', 300.00, 'batch'), (14, 1, 20, 'DEBIT', 300.00, 'batch')$$);
-- In order, a debit and a payment and a debit in one statement are fine as
-- long as every step stays within the limit.
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (11, 1, 20, 'DEBIT', 700.00, 'batch'), (12, 1, 20, 'CREDIT', 200.00, 'batch'),
       (13, 1, 20, 'DEBIT', 500.00, 'batch');
SELECT * FROM balances;
-- INSERT ... SELECT, writable CTEs and COPY go through the same trigger.
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
SELECT 14, 1, 20, 'CREDIT', used_credit, 'pay off' FROM retailer_wholesaler_credits
 WHERE (retailer_id, wholesaler_id) = (1, 20);
WITH e AS (INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
           VALUES (15, 1, 20, 'DEBIT', 1000.01) RETURNING id)
SELECT count(*) FROM e;
WITH e AS (INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
           VALUES (15, 1, 20, 'DEBIT', 999.99) RETURNING id, amount)
SELECT * FROM e;
COPY ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount) FROM stdin;
17	1	21	DEBIT	100.01
16	1	21	CREDIT	100.00
\.
COPY ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount) FROM stdin;
16	1	21	CREDIT	100.00
17	1	21	DEBIT	99.99
\.
-- ON CONFLICT DO NOTHING on an existing entry applies nothing; on a new one
-- it applies the entry.
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
VALUES (15, 1, 20, 'DEBIT', 999.99), (18, 1, 21, 'CREDIT', 0.99) ON CONFLICT (id) DO NOTHING;
-- MERGE ... WHEN NOT MATCHED THEN INSERT applies the entries.
MERGE INTO ledger_entries l
USING (VALUES (19, 'DEBIT', 0.02)) AS s(id, entry_type, amount) ON l.id = s.id
WHEN NOT MATCHED THEN INSERT (id, retailer_id, wholesaler_id, entry_type, amount)
     VALUES (s.id, 1, 20, s.entry_type, s.amount);
MERGE INTO ledger_entries l
USING (VALUES (19, 'DEBIT', 0.01)) AS s(id, entry_type, amount) ON l.id = s.id
WHEN NOT MATCHED THEN INSERT (id, retailer_id, wholesaler_id, entry_type, amount)
     VALUES (s.id, 1, 20, s.entry_type, s.amount);
SELECT * FROM balances;

-- The ledger is also append-only: an entry can neither be changed nor
-- removed (23001, from the append-only guard), so the account stays as the
-- ledger says.  Corrections are new, reversing entries.
UPDATE ledger_entries SET amount = 1.00 WHERE id = 15;
DELETE FROM ledger_entries WHERE id = 15;
TRUNCATE ledger_entries;
SELECT sqlstate, constraint_name FROM expect_error(
    $$INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
      VALUES (15, 1, 20, 'DEBIT', 1) ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount$$);
SELECT sqlstate, constraint_name FROM expect_error(
    $$MERGE INTO ledger_entries l USING (VALUES (15)) AS s(id) ON l.id = s.id WHEN MATCHED THEN DELETE$$);
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (20, 1, 20, 'CREDIT', 999.99, 'reverses entry 15');
SELECT * FROM balances;

-- The accounts keep their own guard: the limit cannot be lowered below what
-- is used, and the cached used credit cannot be pushed out of bounds.
SELECT sqlstate, column_name, constraint_name FROM expect_error(
    $$UPDATE retailer_wholesaler_credits SET credit_limit = 400 WHERE (retailer_id, wholesaler_id) = (1, 21)$$);
UPDATE retailer_wholesaler_credits SET credit_limit = 1500 WHERE (retailer_id, wholesaler_id) = (1, 20);
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
VALUES (21, 1, 20, 'DEBIT', 1500.00);
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
VALUES (21, 1, 20, 'DEBIT', 1499.99);
SELECT * FROM balances;

-- Under session_replication_role = replica the entry is not applied again:
-- logical replication brings the account row with it (decision documented
-- in the README).  The account's own credit guard still holds there.
SET session_replication_role = replica;
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (22, 1, 20, 'CREDIT', 500.00, 'replicated payment');
UPDATE retailer_wholesaler_credits SET used_credit = used_credit - 500 WHERE (retailer_id, wholesaler_id) = (1, 20);
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount, description)
VALUES (23, 9, 99, 'DEBIT', 1.00, 'replicated before its account');
SELECT sqlstate, constraint_name FROM expect_error(
    $$UPDATE retailer_wholesaler_credits SET used_credit = 1500.01 WHERE (retailer_id, wholesaler_id) = (1, 20)$$);
RESET session_replication_role;
SELECT * FROM balances;
-- session_replication_role = local is an origin: entries apply.
SET session_replication_role = local;
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
VALUES (24, 1, 20, 'CREDIT', 0.01);
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
VALUES (25, 1, 20, 'DEBIT', 500.02);
INSERT INTO ledger_entries (id, retailer_id, wholesaler_id, entry_type, amount)
VALUES (25, 1, 20, 'DEBIT', 500.01);
RESET session_replication_role;
SELECT * FROM balances;

------------------------------------------------------------------------------
-- A ledger that is not append-only: DELETE takes an entry back, UPDATE takes
-- back the old entry and applies the new one.  One account per retailer,
-- integer amounts.
CREATE TABLE credit_accounts (
    account_id   int PRIMARY KEY,
    credit_limit int NOT NULL,
    used_credit  int NOT NULL DEFAULT 0
);
CREATE TABLE account_entries (
    id          int PRIMARY KEY,
    account_id  int NOT NULL,
    entry_type  text NOT NULL,
    amount      int NOT NULL,
    note        text
);
INSERT INTO credit_accounts VALUES (1, 1000, 0), (2, 1000, 0), (3, 100, 0), (4, 100, 0);
SELECT integrity.guard_ledger_credit('account_entries', 'credit_accounts', ARRAY['account_id']);
CREATE VIEW account_balances AS
SELECT a.account_id, a.credit_limit, a.used_credit,
       coalesce(sum(CASE l.entry_type WHEN 'DEBIT' THEN l.amount WHEN 'CREDIT' THEN -l.amount END), 0) AS ledger,
       a.used_credit = coalesce(sum(CASE l.entry_type WHEN 'DEBIT' THEN l.amount WHEN 'CREDIT' THEN -l.amount END), 0) AS matches
  FROM credit_accounts a LEFT JOIN account_entries l USING (account_id)
 GROUP BY a.account_id, a.credit_limit, a.used_credit
 ORDER BY a.account_id;
INSERT INTO account_entries VALUES
    (1, 1, 'DEBIT', 600, NULL), (2, 1, 'DEBIT', 300, NULL), (3, 1, 'CREDIT', 100, NULL),
    (4, 2, 'DEBIT', 100, NULL), (5, 2, 'CREDIT', 100, NULL),
    (6, 3, 'DEBIT', 100, NULL), (7, 3, 'CREDIT', 40, NULL), (8, 3, 'DEBIT', 40, NULL),
    (15, 4, 'DEBIT', 100, NULL), (16, 4, 'CREDIT', 100, NULL);
SELECT * FROM account_balances;

-- DELETE takes the entry back: deleting a payment raises used credit.
DELETE FROM account_entries WHERE id = 3;
SELECT * FROM account_balances WHERE account_id = 1;
-- ... refused when that would leave the account below zero (deleting a debit
-- that was paid) or above its limit (deleting a payment of a full account).
SELECT sqlstate, message, constraint_name FROM expect_error($$DELETE FROM account_entries WHERE id = 4$$);
SELECT sqlstate, message FROM expect_error($$DELETE FROM account_entries WHERE id = 7$$);
-- A multi-row DELETE is all or nothing.
SELECT sqlstate FROM expect_error($$DELETE FROM account_entries WHERE id IN (1, 7)$$);
SELECT * FROM account_balances;

-- UPDATE of the amount: the difference moves the account.
UPDATE account_entries SET amount = 700 WHERE id = 1;
SELECT * FROM account_balances WHERE account_id = 1;
-- One more is refused; the DETAIL says what the account would really have
-- become (1001 = 1000 - 700 + 701).
SELECT sqlstate, message, detail LIKE '%would become 1001,%' AS detail_has_final_value
  FROM expect_error($$UPDATE account_entries SET amount = 701 WHERE id = 1$$);
UPDATE account_entries SET amount = 500 WHERE id = 1;
-- UPDATE of the entry type turns a debit into a payment and back.
UPDATE account_entries SET entry_type = 'CREDIT' WHERE id = 2;
SELECT * FROM account_balances WHERE account_id = 1;
UPDATE account_entries SET entry_type = 'DEBIT' WHERE id = 2;
SELECT * FROM account_balances WHERE account_id = 1;
-- Below zero: refused, and the DETAIL gives the final figure
-- (-600 = 800 - 500 - 900), not an intermediate one.
SELECT sqlstate, message, detail LIKE '%would become -600,%' AS detail_has_final_value
  FROM expect_error($$UPDATE account_entries SET entry_type = 'CREDIT', amount = 900 WHERE id = 1$$);
-- UPDATE of the account key moves the entry to another account: taken back
-- from the old one, applied to the new one (refused if that one has no room
-- or does not exist).
UPDATE account_entries SET account_id = 2 WHERE id = 2;
SELECT * FROM account_balances;
SELECT sqlstate, message FROM expect_error($$UPDATE account_entries SET account_id = 3 WHERE id = 1$$);
SELECT sqlstate, message FROM expect_error($$UPDATE account_entries SET account_id = 99 WHERE id = 1$$);
SELECT * FROM account_balances;

-- INSERT ... ON CONFLICT DO UPDATE on an existing entry is an UPDATE of it.
INSERT INTO account_entries VALUES (9, 1, 'DEBIT', 50, 'upsert')
    ON CONFLICT (id) DO UPDATE SET amount = account_entries.amount + EXCLUDED.amount;
INSERT INTO account_entries VALUES (9, 1, 'DEBIT', 50, 'upsert')
    ON CONFLICT (id) DO UPDATE SET amount = account_entries.amount + EXCLUDED.amount;
SELECT * FROM account_balances WHERE account_id = 1;
SELECT sqlstate FROM expect_error($$INSERT INTO account_entries VALUES (9, 1, 'DEBIT', 1000, 'upsert')
    ON CONFLICT (id) DO UPDATE SET amount = account_entries.amount + EXCLUDED.amount$$);
-- MERGE with all three actions.
MERGE INTO account_entries l
USING (VALUES (9, 'keep', 25), (10, 'new', 5), (1, 'drop', 0)) AS s(id, what, amount) ON l.id = s.id
WHEN MATCHED AND s.what = 'drop' THEN DELETE
WHEN MATCHED THEN UPDATE SET amount = s.amount
WHEN NOT MATCHED THEN INSERT VALUES (s.id, 1, 'DEBIT', s.amount, 'merged');
SELECT * FROM account_balances WHERE account_id = 1;
SELECT sqlstate FROM expect_error($$MERGE INTO account_entries l
    USING (VALUES (10, 2000)) AS s(id, amount) ON l.id = s.id
    WHEN MATCHED THEN UPDATE SET amount = s.amount$$);
-- Writable CTEs: a DELETE and an UPDATE in one statement.
WITH d AS (DELETE FROM account_entries WHERE id = 10 RETURNING amount),
     u AS (UPDATE account_entries SET amount = amount + (SELECT amount FROM d) WHERE id = 9 RETURNING amount)
SELECT * FROM u;
SELECT * FROM account_balances WHERE account_id = 1;
-- A refused statement inside a transaction changes nothing; the transaction
-- continues after a savepoint.  A rolled-back entry leaves no trace.
BEGIN;
INSERT INTO account_entries VALUES (11, 1, 'DEBIT', 10, 'in transaction');
SAVEPOINT s;
INSERT INTO account_entries VALUES (13, 1, 'DEBIT', 991, 'over the limit');
ROLLBACK TO SAVEPOINT s;
INSERT INTO account_entries VALUES (12, 1, 'CREDIT', 5, 'after savepoint');
COMMIT;
BEGIN;
INSERT INTO account_entries VALUES (13, 1, 'DEBIT', 100, 'rolled back');
ROLLBACK;
SELECT * FROM account_balances WHERE account_id = 1;

-- An UPDATE is judged by its net effect on the account, not by taking the
-- old entry back into an impossible intermediate state first: changing a
-- note, or making a payment larger, is allowed however full or paid-up the
-- account is.  try_sql returns 'ok' or the SQLSTATE.
--   account 3 (limit 100): DEBIT 100, CREDIT 40, DEBIT 40 -- at its limit.
--   account 4 (limit 100): DEBIT 100, CREDIT 100 -- fully paid.
CREATE FUNCTION try_sql(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT * FROM account_balances WHERE account_id IN (3, 4);
SELECT try_sql($$UPDATE account_entries SET note = 'checked' WHERE id = 6$$) AS debit_note_full_account,
       try_sql($$UPDATE account_entries SET note = 'checked' WHERE id = 7$$) AS payment_note_full_account,
       try_sql($$UPDATE account_entries SET note = 'checked' WHERE id = 15$$) AS debit_note_paid_account,
       try_sql($$UPDATE account_entries SET note = 'checked' WHERE id = 16$$) AS payment_note_paid_account;
SELECT try_sql($$UPDATE account_entries SET amount = 50 WHERE id = 7$$) AS larger_payment_full_account,
       try_sql($$UPDATE account_entries SET amount = 150 WHERE id = 15$$) AS larger_debit_paid_account;
-- A net effect out of bounds is still refused: a smaller payment of a full
-- account, a debit larger than the limit.
SELECT try_sql($$UPDATE account_entries SET amount = 30 WHERE id = 7$$) AS smaller_payment_full_account,
       try_sql($$UPDATE account_entries SET amount = 201 WHERE id = 15$$) AS debit_over_limit;
SELECT id, account_id, entry_type, amount, note FROM account_entries WHERE account_id IN (3, 4) ORDER BY id;
SELECT * FROM account_balances;

------------------------------------------------------------------------------
-- Custom columns and values: an enum entry type, amounts in paisa.
CREATE TYPE entry_kind AS ENUM ('charge', 'payment', 'memo');
CREATE TABLE shop_accounts (
    shop_code text PRIMARY KEY,
    max_paisa bigint NOT NULL,
    owed      bigint NOT NULL DEFAULT 0
);
CREATE TABLE shop_ledger (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_code text NOT NULL,
    kind      entry_kind NOT NULL,
    paisa     bigint
);
INSERT INTO shop_accounts VALUES ('KTM-001', 100000, 0), ('PKR-007', 5000, 0);
SELECT integrity.guard_ledger_credit('shop_ledger', 'shop_accounts', ARRAY['shop_code'],
    amount_column => 'paisa', entry_type_column => 'kind', debit_value => 'charge',
    credit_value => 'payment', limit_column => 'max_paisa', used_column => 'owed');
SELECT table_name, guard, columns, options FROM integrity.guards WHERE table_name = 'shop_ledger'::regclass;
INSERT INTO shop_ledger (shop_code, kind, paisa) VALUES
    ('KTM-001', 'charge', 99999), ('KTM-001', 'payment', 9999), ('PKR-007', 'charge', 5000);
SELECT sqlstate, message, detail FROM expect_error($$INSERT INTO shop_ledger (shop_code, kind, paisa) VALUES ('PKR-007', 'charge', 1)$$);
SELECT sqlstate, message, detail FROM expect_error($$INSERT INTO shop_ledger (shop_code, kind, paisa) VALUES ('KTM-001', 'memo', 1)$$);
SELECT sqlstate, message, detail FROM expect_error($$INSERT INTO shop_ledger (shop_code, kind, paisa) VALUES ('KTM-001', 'charge', NULL)$$);
SELECT sqlstate, message, detail FROM expect_error($$INSERT INTO shop_ledger (shop_code, kind, paisa) VALUES ('ktm-001', 'charge', 1)$$);
SELECT * FROM shop_accounts ORDER BY shop_code;

-- Amounts with decimals on accounts kept in whole units: whatever the guard
-- decides (refuse the registration, or refuse the entries), the account must
-- never silently differ from its ledger.
CREATE TABLE unit_accounts (account_id int PRIMARY KEY, credit_limit int NOT NULL, used_credit int NOT NULL DEFAULT 0);
CREATE TABLE decimal_entries (id int PRIMARY KEY, account_id int NOT NULL, entry_type text NOT NULL, amount numeric(10, 2) NOT NULL);
INSERT INTO unit_accounts VALUES (1, 100, 0);
SELECT try_sql($$SELECT integrity.guard_ledger_credit('decimal_entries', 'unit_accounts', ARRAY['account_id'])$$) <> ''
       AS attempted;
SELECT try_sql($$INSERT INTO decimal_entries VALUES (1, 1, 'DEBIT', 10.40)$$) <> '' AS attempted;
SELECT try_sql($$INSERT INTO decimal_entries VALUES (2, 1, 'DEBIT', 10.40)$$) <> '' AS attempted;
SELECT try_sql($$INSERT INTO decimal_entries VALUES (3, 1, 'DEBIT', 0.40)$$) <> '' AS attempted;
SELECT try_sql($$INSERT INTO decimal_entries VALUES (4, 1, 'CREDIT', 0.60)$$) <> '' AS attempted;
SELECT NOT EXISTS (SELECT FROM integrity.guards WHERE table_name = 'decimal_entries'::regclass)
       OR a.used_credit = coalesce((SELECT sum(CASE entry_type WHEN 'DEBIT' THEN amount ELSE -amount END)
                                      FROM decimal_entries WHERE account_id = a.account_id), 0) AS consistent
  FROM unit_accounts a;

-- A partitioned ledger, as in the demo: partitions existing and future are
-- covered, and moving an entry between partitions keeps the account right.
CREATE TABLE monthly_entries (
    id            bigint NOT NULL,
    retailer_id   bigint NOT NULL,
    wholesaler_id bigint NOT NULL,
    entry_type    text NOT NULL,
    amount        numeric(14, 2) NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE monthly_entries_2026_10 PARTITION OF monthly_entries
    FOR VALUES FROM ('2026-10-01 00:00+00') TO ('2026-11-01 00:00+00');
CREATE TABLE monthly_credits (LIKE retailer_wholesaler_credits INCLUDING ALL);
INSERT INTO monthly_credits VALUES (1, 20, 500, 0);
SELECT integrity.guard_ledger_credit('monthly_entries', 'monthly_credits', ARRAY['retailer_id', 'wholesaler_id']);
CREATE TABLE monthly_entries_2026_11 PARTITION OF monthly_entries
    FOR VALUES FROM ('2026-11-01 00:00+00') TO ('2026-12-01 00:00+00');
SELECT * FROM pt_triggers('monthly_entries');
INSERT INTO monthly_entries VALUES (1, 1, 20, 'DEBIT', 300, '2026-10-05 00:00+00'),
                                   (2, 1, 20, 'DEBIT', 200, '2026-11-05 00:00+00');
SELECT sqlstate, table_name, constraint_name FROM expect_error(
    $$INSERT INTO monthly_entries VALUES (3, 1, 20, 'DEBIT', 0.01, '2026-11-06 00:00+00')$$);
UPDATE monthly_entries SET created_at = '2026-11-20 00:00+00' WHERE id = 1;
SELECT tableoid::regclass AS partition, id, amount FROM monthly_entries ORDER BY id;
SELECT * FROM monthly_credits;
DELETE FROM monthly_entries WHERE id = 1;
SELECT * FROM monthly_credits;

------------------------------------------------------------------------------
-- Registration.
-- Idempotent (the key columns may be listed in any order); the append-only
-- guard may come before or after.
SELECT integrity.guard_ledger_credit('ledger_entries', 'retailer_wholesaler_credits',
                                     ARRAY['retailer_id', 'wholesaler_id']);
SELECT integrity.guard_ledger_credit('ledger_entries', 'retailer_wholesaler_credits',
                                     ARRAY['wholesaler_id', 'retailer_id']);
SELECT table_name, guard, columns FROM integrity.guards WHERE table_name = 'ledger_entries'::regclass ORDER BY guard;
SELECT tgname, tgenabled FROM guard_triggers('ledger_entries');
SELECT integrity.protect_append_only('account_entries');
SELECT tgname, tgenabled FROM guard_triggers('account_entries');
INSERT INTO account_entries VALUES (14, 2, 'DEBIT', 1, 'append-only now');
SELECT sqlstate FROM expect_error($$DELETE FROM account_entries WHERE id = 14$$);
SELECT integrity.unprotect('account_entries', 'append_only');
-- Re-registration with other values takes effect at once, in this session too.
SELECT integrity.guard_ledger_credit('shop_ledger', 'shop_accounts', ARRAY['shop_code'],
    amount_column => 'paisa', entry_type_column => 'kind', debit_value => 'memo',
    credit_value => 'payment', limit_column => 'max_paisa', used_column => 'owed');
INSERT INTO shop_ledger (shop_code, kind, paisa) VALUES ('KTM-001', 'memo', 1);
SELECT sqlstate, message FROM expect_error($$INSERT INTO shop_ledger (shop_code, kind, paisa) VALUES ('KTM-001', 'charge', 1)$$);
SELECT * FROM shop_accounts ORDER BY shop_code;
-- unprotect removes it: entries no longer move the account.
SELECT integrity.unprotect('shop_ledger', 'ledger_credit');
SELECT tgname FROM guard_triggers('shop_ledger');
INSERT INTO shop_ledger (shop_code, kind, paisa) VALUES ('KTM-001', 'charge', 1);
SELECT * FROM shop_accounts ORDER BY shop_code;

-- Bad registration input: clear errors, nothing installed.
CREATE TABLE bad_accounts (
    retailer_id   int,
    wholesaler_id bigint,
    credit_limit  numeric,
    used_credit   numeric,
    label         text
);
CREATE TABLE keyed_accounts (
    retailer_id   bigint,
    wholesaler_id bigint,
    credit_limit  numeric,
    used_credit   numeric,
    label         text,
    UNIQUE (retailer_id, wholesaler_id)
);
CREATE UNIQUE INDEX keyed_accounts_partial ON keyed_accounts (retailer_id) WHERE label IS NULL;
CREATE TABLE bad_ledger (
    id            int PRIMARY KEY,
    retailer_id   bigint,
    wholesaler_id bigint,
    entry_type    text,
    amount        numeric,
    label         text
);
SELECT integrity.guard_ledger_credit(NULL, 'keyed_accounts', ARRAY['retailer_id']);        -- 22004
SELECT integrity.guard_ledger_credit('bad_ledger', NULL, ARRAY['retailer_id']);
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', NULL);
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['retailer_id', 'wholesaler_id'],
                                     debit_value => NULL);
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', '{}');                 -- 22023
SELECT integrity.guard_ledger_credit('bad_ledger', 'bad_ledger', ARRAY['id']);
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['retailer_id', 'wholesaler_id'],
                                     debit_value => 'X', credit_value => 'X');
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['retailer_id', 'nope']);   -- 42703
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['id']);
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['retailer_id', 'wholesaler_id'],
                                     amount_column => 'nope');
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['retailer_id', 'wholesaler_id'],
                                     limit_column => 'nope');
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['retailer_id', 'wholesaler_id'],
                                     entry_type_column => 'nope');
SELECT integrity.guard_ledger_credit('bad_ledger', 'bad_accounts', ARRAY['retailer_id', 'wholesaler_id']);  -- 42804
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['retailer_id', 'wholesaler_id'],
                                     amount_column => 'label');
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['retailer_id', 'wholesaler_id'],
                                     used_column => 'label');
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['wholesaler_id']);          -- 42P10
SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['retailer_id']);            -- partial index
SELECT sqlstate, hint FROM expect_error($$SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['wholesaler_id'])$$);
CREATE VIEW bad_accounts_view AS SELECT * FROM keyed_accounts;
SELECT integrity.guard_ledger_credit('bad_ledger', 'bad_accounts_view', ARRAY['retailer_id', 'wholesaler_id']);  -- 42809
SELECT sqlstate FROM expect_error($$SELECT integrity.guard_ledger_credit('monthly_entries_2026_10', 'monthly_credits', ARRAY['retailer_id', 'wholesaler_id'])$$);
SELECT * FROM guard_triggers('bad_ledger');
SELECT count(*) AS bad_ledger_guards FROM integrity.guards WHERE table_name = 'bad_ledger'::regclass;
-- Only the ledger's owner may register the guard.
CREATE ROLE ledger_clerk;
GRANT USAGE ON SCHEMA b2b TO ledger_clerk;
SET ROLE ledger_clerk;
SELECT sqlstate FROM expect_error($$SELECT integrity.guard_ledger_credit('bad_ledger', 'keyed_accounts', ARRAY['retailer_id', 'wholesaler_id'])$$);
RESET ROLE;
REVOKE USAGE ON SCHEMA b2b FROM ledger_clerk;
DROP ROLE ledger_clerk;

-- The append-only ledger (and its schema) is dropped once its guard is lifted.
SET client_min_messages = warning;
SELECT sqlstate, message FROM expect_error($$DROP SCHEMA b2b CASCADE$$);
SELECT integrity.unprotect('b2b.ledger_entries', 'append_only');
DROP SCHEMA b2b CASCADE;
RESET client_min_messages;
SELECT count(*) AS dangling_registry_rows FROM integrity.guard_registry
 WHERE NOT EXISTS (SELECT FROM pg_class WHERE oid = table_name);

\ir common/teardown.sql
