-- 44_history_ddl: DDL that would rewrite or remove the rows of an append-only
-- table is refused (55000) while the guard stands, before it does any work:
-- ALTER COLUMN … TYPE (with or without USING), DROP COLUMN, DROP TABLE,
-- DETACH PARTITION (also CONCURRENTLY), dropping a partition (also through
-- DROP SCHEMA … CASCADE or DROP OWNED), and the same through ALTER TYPE …
-- CASCADE on a typed table.  DDL that adds keeps working.  DROP EXTENSION
-- pg_integrity is refused while any guard is registered.  integrity.unprotect()
-- lifts all of it.  A superuser who disables the event triggers can still do
-- it; health() then says so.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE hd_ledger (id int PRIMARY KEY, account_id int NOT NULL, amount numeric(12,2) NOT NULL,
                        description text);
INSERT INTO hd_ledger VALUES (1, 1, 10.00, 'opening'), (2, 1, 5.50, 'order 7');
SELECT integrity.protect_append_only('hd_ledger');

-- Rewrites and removals.
SELECT sqlstate, message, detail, hint, schema_name, table_name
  FROM expect_error($$ALTER TABLE hd_ledger ALTER COLUMN amount TYPE numeric(14,2) USING amount * 2$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hd_ledger ALTER COLUMN amount TYPE numeric(14,2)$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hd_ledger ALTER COLUMN description SET DATA TYPE varchar(3)$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hd_ledger DROP COLUMN description$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hd_ledger ADD COLUMN note text, DROP COLUMN IF EXISTS description$$);
SELECT sqlstate, message, detail, hint FROM expect_error($$DROP TABLE hd_ledger$$);
SELECT sqlstate, message FROM expect_error($$DROP TABLE hd_ledger CASCADE$$);
SELECT * FROM hd_ledger ORDER BY id;
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'hd_ledger'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum;

-- DDL that adds, or changes no row, keeps working.
ALTER TABLE hd_ledger ADD COLUMN booked_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX hd_ledger_account ON hd_ledger (account_id);
ALTER TABLE hd_ledger ALTER COLUMN description SET DEFAULT '';
ALTER TABLE hd_ledger ADD CONSTRAINT hd_amount_positive CHECK (amount > 0);
ALTER TABLE hd_ledger RENAME TO hd_entries;
ALTER TABLE hd_entries RENAME TO hd_ledger;
INSERT INTO hd_ledger (id, account_id, amount) VALUES (3, 2, 1);
SELECT id, amount, description, booked_at IS NOT NULL AS booked FROM hd_ledger ORDER BY id;

-- A monthly-partitioned ledger, one month in a schema of its own.
CREATE SCHEMA hd_months;
CREATE TABLE hd_monthly (id int NOT NULL, booked date NOT NULL, amount numeric NOT NULL) PARTITION BY RANGE (booked);
CREATE TABLE hd_months.hd_monthly_2024_01 PARTITION OF hd_monthly FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE hd_monthly_2024_02 PARTITION OF hd_monthly FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO hd_monthly VALUES (1, '2024-01-15', 10), (2, '2024-02-15', 20);
SELECT integrity.protect_append_only('hd_monthly');
SELECT sqlstate, message, hint FROM expect_error($$ALTER TABLE hd_monthly DETACH PARTITION hd_monthly_2024_02$$);
ALTER TABLE hd_monthly DETACH PARTITION hd_monthly_2024_02 CONCURRENTLY;
SELECT sqlstate, message, detail, hint FROM expect_error($$DROP TABLE hd_monthly_2024_02$$);
SELECT sqlstate, message FROM expect_error($$DROP SCHEMA hd_months CASCADE$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hd_monthly DROP COLUMN amount$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hd_monthly ALTER COLUMN amount TYPE bigint$$);
SELECT tableoid::regclass AS partition, * FROM hd_monthly ORDER BY id;
-- A new month is added and covered as before.
CREATE TABLE hd_monthly_2024_03 PARTITION OF hd_monthly FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
INSERT INTO hd_monthly VALUES (3, '2024-03-15', 30);
SELECT sqlstate FROM expect_error($$DROP TABLE hd_monthly_2024_03$$);

-- A typed table: ALTER TYPE … CASCADE reaches its columns.
CREATE TYPE hd_entry AS (id int, amount numeric);
CREATE TABLE hd_typed OF hd_entry (PRIMARY KEY (id));
INSERT INTO hd_typed VALUES (1, 1);
SELECT integrity.protect_append_only('hd_typed');
SELECT sqlstate, message FROM expect_error($$ALTER TYPE hd_entry ALTER ATTRIBUTE amount TYPE int CASCADE$$);
SELECT sqlstate, message FROM expect_error($$ALTER TYPE hd_entry DROP ATTRIBUTE amount CASCADE$$);
ALTER TYPE hd_entry ADD ATTRIBUTE note text CASCADE;

-- Immutable, write-once and stock columns: a new type (and its USING
-- expression) would rewrite every value past the guard, and is refused (55000).
CREATE TABLE hd_pieces (id int PRIMARY KEY, created_by int NOT NULL, serial text, stock int NOT NULL DEFAULT 5,
                        reserved_stock int NOT NULL DEFAULT 0);
INSERT INTO hd_pieces VALUES (1, 7, NULL);
SELECT integrity.protect_immutable('hd_pieces', ARRAY['created_by']);
SELECT integrity.protect_write_once('hd_pieces', ARRAY['serial']);
SELECT integrity.guard_stock('hd_pieces');
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hd_pieces ALTER COLUMN created_by TYPE bigint USING created_by + 1$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hd_pieces ALTER COLUMN serial TYPE varchar(2)$$);
SELECT sqlstate, message, column_name FROM expect_error($$ALTER TABLE hd_pieces ALTER COLUMN reserved_stock TYPE int USING stock + 1$$);
SELECT * FROM hd_pieces;

-- DROP EXTENSION, with or without CASCADE, and DROP SCHEMA integrity.
SELECT sqlstate, regexp_replace(message, '\d+ tables', 'N tables') AS message, hint
  FROM expect_error($$DROP EXTENSION pg_integrity$$);
SELECT sqlstate FROM expect_error($$DROP EXTENSION pg_integrity CASCADE$$);
SELECT sqlstate FROM expect_error($$DROP EXTENSION IF EXISTS hd_no_such_extension, pg_integrity CASCADE$$);
SELECT sqlstate FROM expect_error($$DROP SCHEMA integrity CASCADE$$);
SELECT extversion IS NOT NULL AS installed FROM pg_extension WHERE extname = 'pg_integrity';

-- Not bypassed by session_replication_role = replica (the event triggers are
-- ENABLE ALWAYS), nor by a role that owns nothing.
SET session_replication_role = replica;
SELECT sqlstate FROM expect_error($$ALTER TABLE hd_ledger DROP COLUMN description$$);
SELECT sqlstate FROM expect_error($$DROP TABLE hd_ledger$$);
RESET session_replication_role;

-- Bypassed by a superuser who disables the event triggers: health() reports
-- the disabled event trigger while it lasts.
BEGIN;
ALTER EVENT TRIGGER integrity_ddl_command_start DISABLE;
ALTER TABLE hd_ledger DROP COLUMN description;
SELECT severity, problem, remedy FROM integrity.health() WHERE problem LIKE 'event trigger%';
ROLLBACK;
SELECT count(*) AS problems FROM integrity.health() WHERE problem LIKE 'event trigger%';

-- integrity.unprotect() lifts the guard: all of it works again.
SELECT integrity.unprotect('hd_ledger', 'append_only');
ALTER TABLE hd_ledger DROP COLUMN description;
DROP TABLE hd_ledger;
SELECT integrity.unprotect('hd_monthly');
ALTER TABLE hd_monthly DETACH PARTITION hd_monthly_2024_02;
DROP SCHEMA hd_months CASCADE;
DROP TABLE hd_monthly, hd_monthly_2024_02;
SELECT integrity.unprotect('hd_typed');
ALTER TYPE hd_entry DROP ATTRIBUTE amount CASCADE;
DROP TABLE hd_typed, hd_pieces;
DROP TYPE hd_entry;
SELECT count(*) AS dangling_registry_rows FROM integrity.guard_registry
 WHERE NOT EXISTS (SELECT FROM pg_class WHERE oid = table_name);

\ir common/teardown.sql
