-- 10_violations: integrity.violations() lists every existing row that breaks
-- a registered guard, with its key.  Registration never scans a table, so
-- rows inserted before a guard was registered ("legacy data") can break it:
-- immutable columns that are NULL (an immutable NULL can never be set),
-- versions that are NULL or below 1, stock and credit rules, and accounts
-- whose cached used credit differs from their ledger.  Clean data reports
-- nothing; fixed data reports nothing again.  One scan per table.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

------------------------------------------------------------------------------
-- Clean data: nothing to report.
CREATE TABLE viol_pieces (
    id      int PRIMARY KEY,
    origin  uuid,
    lot     int,
    note    text,
    version int
);
INSERT INTO viol_pieces VALUES
    (1, 'c0000000-0000-4000-8000-000000000001', 7,    'one', 1),
    (2, 'c0000000-0000-4000-8000-000000000002', NULL, 'two', 4);
SELECT integrity.protect_immutable('viol_pieces', ARRAY['origin']);
SELECT integrity.protect_write_once('viol_pieces', ARRAY['lot']);
SELECT integrity.enable_versioning('viol_pieces');
SELECT * FROM integrity.violations('viol_pieces');
-- A write-once column may still be NULL: it can be set once.  Not a violation.
SELECT count(*) AS null_lots FROM viol_pieces WHERE lot IS NULL;

------------------------------------------------------------------------------
-- Legacy rows inserted before the guards were registered.
CREATE TABLE viol_legacy (
    id      int PRIMARY KEY,
    origin  uuid,
    batch   text,
    lot     int,
    note    text,
    version int
);
INSERT INTO viol_legacy VALUES
    (1, 'c0000000-0000-4000-8000-000000000011', 'B1', 1,    'fine',              1),
    (2, NULL,                                   'B2', NULL, 'no origin',         1),
    (3, 'c0000000-0000-4000-8000-000000000013', 'B3', 3,    'no version',        NULL),
    (4, 'c0000000-0000-4000-8000-000000000014', NULL, 4,    'no batch, version 0', 0),
    (5, NULL,                                   NULL, 5,    'everything',        -3),
    (6, 'c0000000-0000-4000-8000-000000000016', 'B6', 6,    'fine',              9);
-- Registration accepts the table as it is (it never scans).
SELECT integrity.protect_immutable('viol_legacy', ARRAY['origin', 'batch']);
SELECT integrity.protect_write_once('viol_legacy', ARRAY['lot']);
SELECT integrity.enable_versioning('viol_legacy');
-- Exactly the broken rows, one row per broken rule, with their keys.
SELECT guard, table_name, row_key, detail FROM integrity.violations('viol_legacy')
 ORDER BY row_key ->> 'id', guard, detail;
-- Without an argument: every guarded table (here filtered to this file's tables).
SELECT guard, table_name, row_key FROM integrity.violations()
 WHERE table_name::text LIKE 'viol\_%'
 ORDER BY table_name::text, row_key ->> 'id', guard, detail;

-- One scan of the table for all rules of all its guards (inside a
-- transaction block, the backend's scan counters move for our scans only).
BEGIN;
SELECT seq_scan + coalesce(idx_scan, 0) AS scans_before
  FROM pg_stat_xact_user_tables WHERE relid = 'viol_legacy'::regclass \gset
SELECT count(*) AS violations FROM integrity.violations('viol_legacy');
SELECT seq_scan + coalesce(idx_scan, 0) - :scans_before AS scans
  FROM pg_stat_xact_user_tables WHERE relid = 'viol_legacy'::regclass;
COMMIT;

-- The detail is what the guards enforce: an immutable NULL cannot be set.
SELECT sqlstate, message FROM expect_error($$UPDATE viol_legacy SET origin = 'c0000000-0000-4000-8000-000000000012' WHERE id = 2$$);

-- Fixing: a NULL or 0 version is bumped to 1 by any UPDATE; a negative one
-- (which strict versioning will not let a writer set) and the immutable
-- NULLs are repaired with the guards lifted for the repair, in one
-- transaction.
UPDATE viol_legacy SET note = note || ' (touched)' WHERE version IS NULL OR version = 0;
SELECT id, version FROM viol_legacy WHERE id IN (3, 4) ORDER BY id;
BEGIN;
SELECT integrity.unprotect('viol_legacy', 'immutable');
SELECT integrity.unprotect('viol_legacy', 'versioning');
UPDATE viol_legacy SET origin = 'c0000000-0000-4000-8000-000000000012' WHERE id = 2;
UPDATE viol_legacy SET origin = 'c0000000-0000-4000-8000-000000000015', batch = 'B5', version = 1 WHERE id = 5;
UPDATE viol_legacy SET batch = 'B4' WHERE id = 4;
SELECT integrity.protect_immutable('viol_legacy', ARRAY['origin', 'batch']);
SELECT integrity.enable_versioning('viol_legacy');
COMMIT;
SELECT * FROM integrity.violations('viol_legacy');

------------------------------------------------------------------------------
-- Partitioned table: the guard is registered on the root; its rows are
-- checked in every partition, and a partition can be checked on its own.
CREATE TABLE viol_parts (
    id     int,
    region text,
    origin int,
    PRIMARY KEY (region, id)
) PARTITION BY LIST (region);
CREATE TABLE viol_parts_eu PARTITION OF viol_parts FOR VALUES IN ('eu');
CREATE TABLE viol_parts_us PARTITION OF viol_parts FOR VALUES IN ('us');
INSERT INTO viol_parts VALUES (1, 'eu', 10), (2, 'eu', NULL), (3, 'us', NULL), (4, 'us', 40);
SELECT integrity.protect_immutable('viol_parts', ARRAY['origin']);
SELECT guard, table_name, row_key, detail FROM integrity.violations('viol_parts') ORDER BY row_key ->> 'id';
SELECT guard, table_name, row_key FROM integrity.violations('viol_parts_us');
-- A partition is not reported twice by violations().
SELECT table_name, row_key FROM integrity.violations()
 WHERE table_name::text LIKE 'viol\_parts%' ORDER BY row_key ->> 'id';

------------------------------------------------------------------------------
-- Row keys without a primary key: the replica identity index, else the ctid.
CREATE TABLE viol_by_index (code text NOT NULL, origin int);
CREATE UNIQUE INDEX viol_by_index_code ON viol_by_index (code);
ALTER TABLE viol_by_index REPLICA IDENTITY USING INDEX viol_by_index_code;
INSERT INTO viol_by_index VALUES ('A', 1), ('B', NULL);
SELECT integrity.protect_immutable('viol_by_index', ARRAY['origin']);
SELECT row_key FROM integrity.violations('viol_by_index');

CREATE TABLE viol_no_key (origin int, version bigint);
INSERT INTO viol_no_key VALUES (1, 1), (NULL, 1), (3, 0);
SELECT integrity.protect_immutable('viol_no_key', ARRAY['origin']);
SELECT integrity.enable_versioning('viol_no_key');
SELECT guard, row_key, detail FROM integrity.violations('viol_no_key') ORDER BY row_key ->> 'ctid';

CREATE TABLE viol_no_key_parts (region text, origin int) PARTITION BY LIST (region);
CREATE TABLE viol_no_key_parts_eu PARTITION OF viol_no_key_parts FOR VALUES IN ('eu');
INSERT INTO viol_no_key_parts VALUES ('eu', NULL);
SELECT integrity.protect_immutable('viol_no_key_parts', ARRAY['origin']);
SELECT row_key FROM integrity.violations('viol_no_key_parts');

------------------------------------------------------------------------------
-- Hostile identifiers are just names.
CREATE TABLE "viol_odd ""table""" (
    "Key; --"                  int PRIMARY KEY,
    "x""; DROP TABLE viol_pieces; --" int,
    "Version"                  int
);
INSERT INTO "viol_odd ""table""" VALUES (1, NULL, 1), (2, 2, 0);
SELECT integrity.protect_immutable('"viol_odd ""table"""', ARRAY['x"; DROP TABLE viol_pieces; --']);
SELECT integrity.enable_versioning('"viol_odd ""table"""', 'Version');
SELECT guard, table_name, row_key, detail FROM integrity.violations('"viol_odd ""table"""')
 ORDER BY row_key ->> 'Key; --';
SELECT count(*) AS viol_pieces_still_there FROM viol_pieces;

------------------------------------------------------------------------------
-- Stock: stock >= 0, reserved >= 0, reserved <= stock.
CREATE TABLE viol_products (
    id             int PRIMARY KEY,
    name           text,
    stock          int,
    reserved_stock int
);
INSERT INTO viol_products VALUES
    (1, 'fine',          10, 2),
    (2, 'negative',      -1, 0),
    (3, 'over-reserved',  5, 6),
    (4, 'both wrong',    -2, -1),
    (5, 'NULL stock',  NULL, 0);
SELECT integrity.guard_stock('viol_products');
SELECT guard, row_key, detail FROM integrity.violations('viol_products') ORDER BY row_key ->> 'id', detail;
-- An UPDATE of such a row must leave it valid (like a NOT VALID CHECK).
SELECT sqlstate FROM expect_error($$UPDATE viol_products SET name = 'still negative' WHERE id = 2$$);
UPDATE viol_products SET stock = 0 WHERE id = 2;
UPDATE viol_products SET reserved_stock = 5 WHERE id = 3;
UPDATE viol_products SET stock = 0, reserved_stock = 0 WHERE id = 4;
SELECT * FROM integrity.violations('viol_products');

-- Credit: limit >= 0, 0 <= used <= limit; with numeric columns.
CREATE TABLE viol_credit (
    retailer_id   int,
    wholesaler_id int,
    credit_limit  numeric(12,2),
    used_credit   numeric(12,2),
    PRIMARY KEY (retailer_id, wholesaler_id)
);
INSERT INTO viol_credit VALUES
    (1, 1, 1000.00, 250.50),
    (1, 2, -10.00, 0),
    (2, 1, 100.00, 100.01),
    (2, 2, 100.00, -0.50);
SELECT integrity.guard_credit('viol_credit');
SELECT guard, row_key, detail FROM integrity.violations('viol_credit')
 ORDER BY row_key ->> 'retailer_id', row_key ->> 'wholesaler_id';
UPDATE viol_credit SET credit_limit = 0 WHERE (retailer_id, wholesaler_id) = (1, 2);
UPDATE viol_credit SET used_credit = 100.00 WHERE (retailer_id, wholesaler_id) = (2, 1);
UPDATE viol_credit SET used_credit = 0 WHERE (retailer_id, wholesaler_id) = (2, 2);
SELECT * FROM integrity.violations('viol_credit');

------------------------------------------------------------------------------
-- Ledger credit: each account's used credit must be what its ledger says
-- (debits minus credits for its key).  Legacy drift is reported per account;
-- ledger entries whose key has no account are reported too.
CREATE TABLE viol_accounts (
    retailer_id   int,
    wholesaler_id int,
    credit_limit  numeric NOT NULL,
    used_credit   numeric NOT NULL,
    PRIMARY KEY (retailer_id, wholesaler_id)
);
CREATE TABLE viol_ledger (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id   int NOT NULL,
    wholesaler_id int NOT NULL,
    entry_type    text NOT NULL,
    amount        numeric NOT NULL
);
INSERT INTO viol_accounts VALUES
    (1, 1, 1000, 300),   -- ledger: 500 - 200 = 300, in step
    (1, 2, 1000, 50),    -- ledger: 80, drifted
    (2, 1, 1000, 10),    -- no entries: should be 0
    (2, 2, 1000, 0);     -- no entries, in step
INSERT INTO viol_ledger (retailer_id, wholesaler_id, entry_type, amount) VALUES
    (1, 1, 'DEBIT', 500), (1, 1, 'CREDIT', 200),
    (1, 2, 'DEBIT', 100), (1, 2, 'CREDIT', 20),
    (3, 3, 'DEBIT', 40);  -- no such account
SELECT integrity.guard_ledger_credit('viol_ledger', 'viol_accounts', ARRAY['retailer_id', 'wholesaler_id']);
SELECT guard, table_name, row_key, detail FROM integrity.violations('viol_ledger')
 ORDER BY row_key ->> 'retailer_id', row_key ->> 'wholesaler_id';
-- The accounts table reports the same drift.
SELECT count(*) AS drifted FROM integrity.violations('viol_accounts');
-- Entries written under the guard keep the accounts in step with the ledger.
INSERT INTO viol_ledger (retailer_id, wholesaler_id, entry_type, amount) VALUES
    (1, 1, 'DEBIT', 25), (2, 2, 'DEBIT', 70), (2, 2, 'CREDIT', 30);
SELECT retailer_id, wholesaler_id, used_credit FROM viol_accounts ORDER BY 1, 2;
SELECT row_key FROM integrity.violations('viol_ledger')
 ORDER BY row_key ->> 'retailer_id', row_key ->> 'wholesaler_id';
-- Fixing the drift: correct the cached values, add the missing account.
UPDATE viol_accounts SET used_credit = 80 WHERE (retailer_id, wholesaler_id) = (1, 2);
UPDATE viol_accounts SET used_credit = 0 WHERE (retailer_id, wholesaler_id) = (2, 1);
INSERT INTO viol_accounts VALUES (3, 3, 100, 40);
SELECT * FROM integrity.violations('viol_ledger');
SELECT * FROM integrity.violations('viol_accounts');

------------------------------------------------------------------------------
-- What is left: the rows planted for the key and identifier tests.  DELETE
-- is how a row with an immutable NULL goes; any UPDATE bumps a version 0.
SELECT guard, table_name, row_key FROM integrity.violations() WHERE table_name::text LIKE '%viol\_%'
 ORDER BY table_name::text, row_key::text, guard;
DELETE FROM viol_parts WHERE origin IS NULL;
DELETE FROM viol_by_index WHERE origin IS NULL;
DELETE FROM viol_no_key WHERE origin IS NULL;
DELETE FROM viol_no_key_parts WHERE origin IS NULL;
DELETE FROM "viol_odd ""table""" WHERE "x""; DROP TABLE viol_pieces; --" IS NULL;
UPDATE viol_no_key SET origin = origin WHERE version = 0;
UPDATE "viol_odd ""table""" SET "Version" = "Version" WHERE "Version" = 0;
SELECT * FROM integrity.violations() WHERE table_name::text LIKE '%viol\_%';

-- NULL-safe and quiet where there is nothing to check.
SELECT count(*) FROM integrity.violations(NULL) WHERE table_name::text LIKE '%viol\_%';
CREATE TABLE viol_unguarded (id int PRIMARY KEY, v int);
INSERT INTO viol_unguarded VALUES (1, NULL);
SELECT * FROM integrity.violations('viol_unguarded');
SELECT * FROM integrity.violations('pg_catalog.pg_class');
-- An append-only table has no row rule.
CREATE TABLE viol_ledger_only (id int PRIMARY KEY, amount int);
INSERT INTO viol_ledger_only VALUES (1, NULL);
SELECT integrity.protect_append_only('viol_ledger_only');
SELECT * FROM integrity.violations('viol_ledger_only');

\ir common/teardown.sql
