-- 13_credit: integrity.guard_credit keeps credit_limit >= 0 and
-- 0 <= used_credit <= credit_limit on every write (23514, the CHECK
-- constraints of the migration guides, NOT VALID: registration does not
-- scan, an UPDATE of a row that already broke the rule must leave it valid),
-- whatever path the write takes.  Ledger-driven used credit is 14_ledger_credit;
-- the races are in tests/specs/credit_*.spec.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE SCHEMA billing;
SET search_path = billing, public;

-- One credit account per retailer, as in the migration guide.
CREATE TABLE credit_accounts (
    id           bigint PRIMARY KEY,
    retailer_id  bigint NOT NULL UNIQUE,
    credit_limit numeric(14, 2) NOT NULL,
    used_credit  numeric(14, 2) NOT NULL DEFAULT 0
);
-- Rows 1-3 are fine; 4-6 are legacy rows that already break the rule.
INSERT INTO credit_accounts VALUES
    (1, 101, 50000.00,     0.00),
    (2, 102, 20000.00, 19999.99),
    (3, 103,     0.00,     0.00),
    (4, 104, 10000.00, 12500.00),
    (5, 105,  -100.00,     0.00),
    (6, 106,  5000.00,   -25.00);

SELECT integrity.guard_credit('credit_accounts');
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name = 'credit_accounts'::regclass;
SELECT * FROM guard_triggers('credit_accounts');
-- Registration did not scan.
SELECT id, credit_limit, used_credit FROM credit_accounts ORDER BY id;

------------------------------------------------------------------------------
-- Valid writes, bounds included.
UPDATE credit_accounts SET used_credit = credit_limit WHERE id = 1;
UPDATE credit_accounts SET used_credit = 0 WHERE id = 1;
UPDATE credit_accounts SET used_credit = used_credit + 0.01 WHERE id = 2;
UPDATE credit_accounts SET credit_limit = 25000 WHERE id = 2;
INSERT INTO credit_accounts VALUES (7, 107, 1000.00, 1000.00), (8, 108, 0, 0);
INSERT INTO credit_accounts (id, retailer_id, credit_limit) VALUES (9, 109, 750.50);
SELECT id, credit_limit, used_credit FROM credit_accounts WHERE id IN (1, 2, 3, 7, 8, 9) ORDER BY id;

-- Each part of the rule, with every error field.
\x on
-- used credit above the limit
SELECT * FROM expect_error($$UPDATE credit_accounts SET used_credit = used_credit + 5000.01 WHERE id = 2$$);
-- a negative limit
SELECT * FROM expect_error($$UPDATE credit_accounts SET credit_limit = -0.01 WHERE id = 3$$);
-- negative used credit (a payment larger than what is owed)
SELECT * FROM expect_error($$UPDATE credit_accounts SET used_credit = used_credit - 0.01 WHERE id = 8$$);
-- lowering the limit below what is already used
SELECT * FROM expect_error($$UPDATE credit_accounts SET credit_limit = 999.99 WHERE id = 7$$);
-- on INSERT
SELECT * FROM expect_error($$INSERT INTO credit_accounts VALUES (10, 110, 100.00, 100.01)$$);
\x off
-- Plain statements, as an application sees them.
UPDATE credit_accounts SET used_credit = used_credit + 1 WHERE id = 7;
INSERT INTO credit_accounts VALUES (10, 110, -1, 0);
-- A multi-row statement with one bad row changes nothing.
UPDATE credit_accounts SET used_credit = used_credit + 500 WHERE id IN (1, 2, 9);
SELECT id, credit_limit, used_credit FROM credit_accounts WHERE id IN (1, 2, 7, 9, 10) ORDER BY id;

------------------------------------------------------------------------------
-- NOT VALID semantics.
-- Touching another column of a legacy row is refused, so is a change that
-- does not make it valid.
UPDATE credit_accounts SET retailer_id = 1104 WHERE id = 4;
UPDATE credit_accounts SET used_credit = 11000 WHERE id = 4;
UPDATE credit_accounts SET credit_limit = -50 WHERE id = 5;
UPDATE credit_accounts SET credit_limit = credit_limit WHERE id = 6;
-- The migration guide's clean-up statement would also "fix" row 5 (negative
-- limit) into another broken row: refused, and row 4 stays as it was.
UPDATE credit_accounts SET used_credit = credit_limit WHERE used_credit > credit_limit;
-- Rows 5 and 6 fixed directly first, the guide's statement then fixes row 4.
-- Once valid, each stays valid.
UPDATE credit_accounts SET credit_limit = 0 WHERE id = 5;
UPDATE credit_accounts SET used_credit = 0 WHERE id = 6;
UPDATE credit_accounts SET used_credit = credit_limit WHERE used_credit > credit_limit;
UPDATE credit_accounts SET used_credit = 12500 WHERE id = 4;
UPDATE credit_accounts SET credit_limit = -100 WHERE id = 5;
SELECT id, credit_limit, used_credit FROM credit_accounts WHERE id IN (4, 5, 6) ORDER BY id;
-- DELETE is not the guard's business.
DELETE FROM credit_accounts WHERE id = 5;

------------------------------------------------------------------------------
-- Every write path reaches the guard.
INSERT INTO credit_accounts VALUES (1, 101, 50000, 0)
    ON CONFLICT (id) DO UPDATE SET used_credit = credit_accounts.used_credit + 50000.01;
INSERT INTO credit_accounts VALUES (1, 101, 50000, 0)
    ON CONFLICT (id) DO UPDATE SET used_credit = credit_accounts.used_credit + 1250;
-- The proposed row is checked before the conflict is, as a CHECK constraint
-- is: an invalid row is refused even where DO NOTHING would skip it.
INSERT INTO credit_accounts VALUES (1, 101, 10, 11)
    ON CONFLICT (id) DO NOTHING;
INSERT INTO credit_accounts VALUES (1, 101, 10, 9)
    ON CONFLICT (id) DO NOTHING;
SELECT sqlstate, column_name, constraint_name FROM expect_error(
    $$INSERT INTO credit_accounts VALUES (7, 107, 0, 0)
      ON CONFLICT (retailer_id) DO UPDATE SET credit_limit = EXCLUDED.credit_limit$$);
MERGE INTO credit_accounts a
USING (VALUES (101, 48750.01)) AS s(retailer_id, charge) ON a.retailer_id = s.retailer_id
WHEN MATCHED THEN UPDATE SET used_credit = a.used_credit + s.charge;
MERGE INTO credit_accounts a
USING (VALUES (101, 750.00), (112, 10.00)) AS s(retailer_id, charge) ON a.retailer_id = s.retailer_id
WHEN MATCHED THEN UPDATE SET used_credit = a.used_credit + s.charge
WHEN NOT MATCHED THEN INSERT VALUES (12, s.retailer_id, 0, s.charge);
MERGE INTO credit_accounts a
USING (VALUES (101, 750.00), (112, 10.00)) AS s(retailer_id, charge) ON a.retailer_id = s.retailer_id
WHEN MATCHED THEN UPDATE SET used_credit = a.used_credit + s.charge
WHEN NOT MATCHED THEN INSERT VALUES (12, s.retailer_id, 100, s.charge);
WITH paid AS (UPDATE credit_accounts SET used_credit = used_credit - 2001 WHERE id = 1 RETURNING id)
SELECT count(*) FROM paid;
WITH paid AS (UPDATE credit_accounts SET used_credit = used_credit - 2000 WHERE id = 1 RETURNING id, used_credit)
SELECT * FROM paid;
CREATE VIEW open_credit AS
    SELECT id, credit_limit, used_credit, credit_limit - used_credit AS available FROM credit_accounts;
UPDATE open_credit SET credit_limit = 0 WHERE id = 12;
UPDATE open_credit SET credit_limit = 20 WHERE id = 12;
-- A BEFORE trigger that rewrites the row after the application wrote it is
-- still caught.
CREATE FUNCTION cap_limit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.credit_limit := 0;
    RETURN NEW;
END $$;
CREATE TRIGGER zz_cap_limit BEFORE UPDATE ON credit_accounts
    FOR EACH ROW WHEN (NEW.retailer_id = 112) EXECUTE FUNCTION cap_limit();
UPDATE credit_accounts SET used_credit = 5 WHERE id = 12;
DROP TRIGGER zz_cap_limit ON credit_accounts;
-- Under session_replication_role = replica the guard still refuses.
SET session_replication_role = replica;
UPDATE credit_accounts SET used_credit = 1e6 WHERE id = 1;
SELECT sqlstate, column_name, constraint_name FROM expect_error(
    $$INSERT INTO credit_accounts VALUES (13, 113, -5, 0)$$);
UPDATE credit_accounts SET used_credit = 10 WHERE id = 12;
RESET session_replication_role;
SELECT id, retailer_id, credit_limit, used_credit FROM credit_accounts ORDER BY id;

-- The read-check-write pattern of application code is harmless now: the
-- write that would overdraw is refused whatever the application read.
BEGIN;
SELECT credit_limit - used_credit AS available FROM credit_accounts WHERE id = 2;
UPDATE credit_accounts SET used_credit = used_credit + 4500.00 WHERE id = 2;
SELECT credit_limit - used_credit AS available FROM credit_accounts WHERE id = 2;
UPDATE credit_accounts SET used_credit = used_credit + 0.01 WHERE id = 2;
ROLLBACK;

------------------------------------------------------------------------------
-- Per retailer-wholesaler credit (composite key), integer money in paisa,
-- custom column names.
CREATE TABLE retailer_wholesaler_credits (
    retailer_id   bigint NOT NULL,
    wholesaler_id bigint NOT NULL,
    max_paisa     bigint NOT NULL,
    owed_paisa    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (retailer_id, wholesaler_id)
);
INSERT INTO retailer_wholesaler_credits VALUES (101, 20, 100000, 0), (101, 21, 50000, 60000);
SELECT integrity.guard_credit('retailer_wholesaler_credits', 'max_paisa', 'owed_paisa');
SELECT table_name, guard, columns FROM integrity.guards
 WHERE table_name = 'retailer_wholesaler_credits'::regclass;
UPDATE retailer_wholesaler_credits SET owed_paisa = 100000 WHERE (retailer_id, wholesaler_id) = (101, 20);
\x on
SELECT * FROM expect_error(
    $$UPDATE retailer_wholesaler_credits SET owed_paisa = owed_paisa + 1 WHERE (retailer_id, wholesaler_id) = (101, 20)$$);
\x off
UPDATE retailer_wholesaler_credits SET max_paisa = 55000 WHERE (retailer_id, wholesaler_id) = (101, 21);
UPDATE retailer_wholesaler_credits SET max_paisa = 60000 WHERE (retailer_id, wholesaler_id) = (101, 21);
SELECT * FROM retailer_wholesaler_credits ORDER BY retailer_id, wholesaler_id;

-- Nullable columns: like a CHECK constraint, NULL passes.
CREATE TABLE trial_accounts (id int PRIMARY KEY, credit_limit int, used_credit int);
INSERT INTO trial_accounts VALUES (1, NULL, 10), (2, 10, NULL);
SELECT integrity.guard_credit('trial_accounts');
UPDATE trial_accounts SET used_credit = 1000 WHERE id = 1;
UPDATE trial_accounts SET credit_limit = 0 WHERE id = 2;
UPDATE trial_accounts SET credit_limit = -1 WHERE id = 2;
UPDATE trial_accounts SET credit_limit = 5 WHERE id = 1;
SELECT * FROM trial_accounts ORDER BY id;

-- A partitioned table: every partition, existing and future, is covered.
CREATE TABLE regional_accounts (
    id           int NOT NULL,
    region       text NOT NULL,
    credit_limit int NOT NULL,
    used_credit  int NOT NULL DEFAULT 0,
    PRIMARY KEY (id, region)
) PARTITION BY LIST (region);
CREATE TABLE regional_accounts_ktm PARTITION OF regional_accounts FOR VALUES IN ('KTM');
SELECT integrity.guard_credit('regional_accounts');
CREATE TABLE regional_accounts_pkr PARTITION OF regional_accounts FOR VALUES IN ('PKR');
SELECT * FROM pt_triggers('regional_accounts');
INSERT INTO regional_accounts VALUES (1, 'KTM', 10, 10), (2, 'PKR', 10, 0);
INSERT INTO regional_accounts VALUES (3, 'PKR', 10, 11);
SELECT sqlstate, table_name, column_name FROM expect_error(
    $$UPDATE regional_accounts SET used_credit = 11 WHERE id = 1$$);
-- Moving a row to another partition is checked before it leaves.
SELECT sqlstate, table_name, column_name FROM expect_error(
    $$UPDATE regional_accounts SET region = 'PKR', credit_limit = 5 WHERE id = 1$$);
UPDATE regional_accounts SET region = 'PKR' WHERE id = 1;
SELECT tableoid::regclass AS partition, * FROM regional_accounts ORDER BY id;

------------------------------------------------------------------------------
-- Registration.
SELECT integrity.guard_credit('credit_accounts');
SELECT integrity.guard_credit('credit_accounts', 'credit_limit', 'used_credit');
SELECT table_name, guard, columns FROM integrity.guards WHERE table_name = 'credit_accounts'::regclass;
SELECT tgname, tgenabled FROM guard_triggers('credit_accounts');
-- A stock guard and a credit guard are separate kinds on the same table.
CREATE TABLE consignments (
    id             int PRIMARY KEY,
    stock          int NOT NULL,
    reserved_stock int NOT NULL DEFAULT 0,
    credit_limit   int NOT NULL,
    used_credit    int NOT NULL DEFAULT 0
);
INSERT INTO consignments VALUES (1, 5, 0, 100, 0);
SELECT integrity.guard_stock('consignments');
SELECT integrity.guard_credit('consignments');
SELECT table_name, guard, columns FROM integrity.guards
 WHERE table_name = 'consignments'::regclass ORDER BY guard;
SELECT tgname, tgenabled FROM guard_triggers('consignments');
SELECT sqlstate, column_name, constraint_name FROM expect_error($$UPDATE consignments SET used_credit = 101$$);
SELECT sqlstate, column_name, constraint_name FROM expect_error($$UPDATE consignments SET reserved_stock = 6$$);
SELECT integrity.unprotect('consignments', 'credit');
SELECT table_name, guard FROM integrity.guards WHERE table_name = 'consignments'::regclass;
SELECT tgname FROM guard_triggers('consignments');
UPDATE consignments SET used_credit = 101;
UPDATE consignments SET reserved_stock = 6;
SELECT * FROM consignments;

-- Bad registration input: nothing is installed.
CREATE TABLE bad_credit (
    id      int PRIMARY KEY,
    lim     numeric,
    used    integer,
    label   text,
    money_l money,
    money_u money
);
SELECT integrity.guard_credit(NULL);                                  -- 22004
SELECT integrity.guard_credit('bad_credit', NULL);
SELECT integrity.guard_credit('bad_credit', 'lim', NULL);
SELECT integrity.guard_credit('bad_credit');                          -- 42703
SELECT integrity.guard_credit('bad_credit', 'lim', 'nope');
SELECT integrity.guard_credit('bad_credit', 'lim', 'used');           -- 42804: different types
SELECT integrity.guard_credit('bad_credit', 'money_l', 'money_u');    -- 42804: not a quantity
SELECT integrity.guard_credit('bad_credit', 'label', 'label');
CREATE VIEW bad_credit_view AS SELECT * FROM bad_credit;
SELECT integrity.guard_credit('bad_credit_view', 'lim', 'lim');       -- 42809
SELECT sqlstate FROM expect_error($$SELECT integrity.guard_credit('regional_accounts_ktm')$$);
SELECT * FROM guard_triggers('bad_credit');
SELECT count(*) AS bad_credit_guards FROM integrity.guards WHERE table_name = 'bad_credit'::regclass;
-- Only the owner may register or remove the guard.
CREATE ROLE credit_clerk;
GRANT USAGE ON SCHEMA billing TO credit_clerk;
SET ROLE credit_clerk;
SELECT sqlstate FROM expect_error($$SELECT integrity.guard_credit('credit_accounts')$$);
SELECT sqlstate FROM expect_error($$SELECT integrity.unprotect('credit_accounts', 'credit')$$);
RESET ROLE;
REVOKE USAGE ON SCHEMA billing FROM credit_clerk;
DROP ROLE credit_clerk;

SET client_min_messages = warning;
DROP SCHEMA billing CASCADE;
RESET client_min_messages;
SELECT count(*) AS dangling_registry_rows FROM integrity.guard_registry
 WHERE NOT EXISTS (SELECT FROM pg_class WHERE oid = table_name);

\ir common/teardown.sql
