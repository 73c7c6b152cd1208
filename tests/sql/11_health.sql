-- 11_health: integrity.health() compares the registry with reality and
-- gives, for each problem, its severity and the exact SQL that repairs it.
-- A clean database reports nothing.  Here every guard kind is broken in
-- every way the extension's event triggers normally refuse (with those
-- event triggers bypassed), each problem is reported, the remedies are run
-- as they are, and health() is clean again.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

------------------------------------------------------------------------------
-- A fresh database with every kind of guard, on ordinary and partitioned
-- tables: health() and violations() return nothing.
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS integrity_health_clean;
RESET client_min_messages;
CREATE DATABASE integrity_health_clean;
\c integrity_health_clean
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE EXTENSION pg_integrity;
SELECT * FROM integrity.health();
CREATE TABLE ledger (id int, month int, amount numeric NOT NULL, PRIMARY KEY (month, id))
    PARTITION BY LIST (month);
CREATE TABLE ledger_1 PARTITION OF ledger FOR VALUES IN (1);
CREATE TABLE pieces (id int PRIMARY KEY, origin int, lot int, version int NOT NULL DEFAULT 1);
CREATE TABLE products (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL DEFAULT 0);
CREATE TABLE accounts (retailer_id int, wholesaler_id int, credit_limit numeric NOT NULL,
                       used_credit numeric NOT NULL DEFAULT 0, PRIMARY KEY (retailer_id, wholesaler_id));
CREATE TABLE entries (id int PRIMARY KEY, retailer_id int, wholesaler_id int, entry_type text, amount numeric);
-- Names that need quoting, and names that are not ASCII.
CREATE TABLE "odd ""name""" (id int PRIMARY KEY, "x""; DROP TABLE pieces; --" int, "créé par" int);
SELECT integrity.protect_immutable('"odd ""name"""', ARRAY['x"; DROP TABLE pieces; --', 'créé par']);
SELECT integrity.protect_append_only('ledger');
SELECT integrity.protect_immutable('ledger', ARRAY['amount']);
SELECT integrity.protect_immutable('pieces', ARRAY['origin']);
SELECT integrity.protect_write_once('pieces', ARRAY['lot']);
SELECT integrity.enable_versioning('pieces', strict => false);
SELECT integrity.guard_stock('products');
SELECT integrity.guard_credit('accounts');
SELECT integrity.guard_ledger_credit('entries', 'accounts', ARRAY['retailer_id', 'wholesaler_id']);
CREATE TABLE ledger_2 PARTITION OF ledger FOR VALUES IN (2);
INSERT INTO ledger VALUES (1, 1, 10), (2, 2, 20);
INSERT INTO pieces VALUES (1, 100, NULL, 1);
INSERT INTO products VALUES (1, 10, 2);
INSERT INTO accounts VALUES (1, 1, 100, 0);
INSERT INTO entries VALUES (1, 1, 1, 'DEBIT', 30);
SELECT count(*) AS guards FROM integrity.guards;
SELECT count(*) AS guard_triggers FROM pg_trigger WHERE tgname LIKE 'integrity\_%';
SELECT * FROM integrity.health();
SELECT * FROM integrity.violations();
\c :regress_db
\set VERBOSITY default
\set SHOW_CONTEXT never
DROP DATABASE integrity_health_clean;

------------------------------------------------------------------------------
-- This file's tables (hl_*).  Other tables in the database would have
-- their own findings; hl_health() shows health() for this file's tables, the
-- extension-wide rows (no table) and registry rows of dropped tables, with
-- OIDs masked.  hl_remedies() gives the remedies of the same rows.
CREATE FUNCTION hl_findings()
RETURNS TABLE (n bigint, severity text, table_name regclass, guard text, problem text, remedy text)
LANGUAGE sql STABLE AS $$
    SELECT h.n, h.severity, h.table_name, h.guard, h.problem, h.remedy
      FROM integrity.health() WITH ORDINALITY AS h(severity, table_name, guard, problem, remedy, n)
     WHERE h.table_name IS NULL OR h.table_name::text LIKE 'hl\_%' OR h.table_name::text LIKE '"hl\_%'
        OR NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = h.table_name)
$$;
CREATE FUNCTION hl_health()
RETURNS TABLE (severity text, table_name text, guard text, problem text, remedy text)
LANGUAGE sql STABLE AS $$
    SELECT f.severity,
           CASE WHEN f.table_name IS NULL THEN NULL
                WHEN EXISTS (SELECT FROM pg_class c WHERE c.oid = f.table_name) THEN f.table_name::text
                ELSE '<dropped>' END,
           f.guard,
           regexp_replace(f.problem, '\m[0-9]{4,}\M', '<oid>', 'g'),
           regexp_replace(f.remedy, '\m[0-9]{4,}\M', '<oid>', 'g')
      FROM hl_findings() f
     ORDER BY f.n
$$;
CREATE FUNCTION hl_remedies()
RETURNS SETOF text
LANGUAGE sql STABLE AS $$ SELECT f.remedy FROM hl_findings() f ORDER BY f.n $$;
CREATE FUNCTION hl_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;

CREATE TABLE hl_ledger (id int PRIMARY KEY, amount numeric NOT NULL);
INSERT INTO hl_ledger VALUES (1, 10), (2, 20);
SELECT integrity.protect_append_only('hl_ledger');
CREATE TABLE hl_trunc (id int PRIMARY KEY);
INSERT INTO hl_trunc VALUES (1);
SELECT integrity.protect_append_only('hl_trunc');
CREATE TABLE hl_pieces (id int PRIMARY KEY, origin int, lot int, note text, version int NOT NULL DEFAULT 1);
INSERT INTO hl_pieces VALUES (1, 100, NULL, 'one', 1);
SELECT integrity.protect_immutable('hl_pieces', ARRAY['origin']);
SELECT integrity.protect_write_once('hl_pieces', ARRAY['lot']);
SELECT integrity.enable_versioning('hl_pieces');
-- A BEFORE UPDATE trigger that fires after the guards' gives the guards
-- their recheck triggers.
CREATE FUNCTION hl_pieces_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER zz_hl_pieces_touch BEFORE UPDATE ON hl_pieces FOR EACH ROW EXECUTE FUNCTION hl_pieces_touch();
CREATE TABLE hl_parts (id int, region text, amount int, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE hl_parts_eu PARTITION OF hl_parts FOR VALUES IN ('eu');
CREATE TABLE hl_parts_us PARTITION OF hl_parts FOR VALUES IN ('us');
INSERT INTO hl_parts VALUES (1, 'eu', 10), (2, 'us', 20);
SELECT integrity.protect_append_only('hl_parts');
SELECT integrity.protect_immutable('hl_parts', ARRAY['amount']);
CREATE TABLE hl_products (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL);
INSERT INTO hl_products VALUES (1, 10, 2);
SELECT integrity.guard_stock('hl_products');
CREATE TABLE hl_accounts (retailer_id int, wholesaler_id int, credit_limit numeric NOT NULL,
                          used_credit numeric NOT NULL, PRIMARY KEY (retailer_id, wholesaler_id));
CREATE TABLE hl_entries (id int PRIMARY KEY, retailer_id int, wholesaler_id int, entry_type text, amount numeric);
INSERT INTO hl_accounts VALUES (1, 1, 100, 0);
SELECT integrity.guard_credit('hl_accounts');
SELECT integrity.guard_ledger_credit('hl_entries', 'hl_accounts', ARRAY['retailer_id', 'wholesaler_id']);
INSERT INTO hl_entries VALUES (1, 1, 1, 'DEBIT', 30);
CREATE TABLE hl_renamed (id int PRIMARY KEY, a int, b int, version int);
SELECT integrity.protect_immutable('hl_renamed', ARRAY['a', 'b']);
SELECT integrity.enable_versioning('hl_renamed');
CREATE TABLE hl_orphan (id int PRIMARY KEY, origin int);
SELECT integrity.protect_immutable('hl_orphan', ARRAY['origin']);
CREATE TABLE "hl_odd ""t""" (id int PRIMARY KEY, "x""; DROP TABLE hl_ledger; --" int);
INSERT INTO "hl_odd ""t""" VALUES (1, 10);
SELECT integrity.protect_immutable('"hl_odd ""t"""', ARRAY['x"; DROP TABLE hl_ledger; --']);
CREATE TABLE hl_dropme (id int PRIMARY KEY);
SELECT integrity.protect_append_only('hl_dropme');
-- Guarded tables without a primary key are a warning: with a unique index
-- on NOT NULL columns the remedy promotes it; without one, the remedy
-- names the statement and leaves the columns to the reader.
CREATE TABLE hl_nopk (code text NOT NULL, amount int);
CREATE UNIQUE INDEX hl_nopk_code ON hl_nopk (code);
SELECT integrity.protect_append_only('hl_nopk', allow_truncate => true);
CREATE TABLE hl_nopk_bare (amount int);
INSERT INTO hl_nopk_bare VALUES (1);
SELECT integrity.protect_append_only('hl_nopk_bare');
\x on
SELECT * FROM hl_health();
\x off

------------------------------------------------------------------------------
-- Problems the event triggers let through.
-- A registry row deleted by hand (the table owner may): its triggers stay,
-- unwatched.
DELETE FROM integrity.guard_registry WHERE table_name = 'hl_orphan'::regclass;
-- A guard trigger replaced with the same function and events but other
-- arguments (the event trigger refuses that: done while it is disabled).
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
CREATE OR REPLACE TRIGGER integrity_credit AFTER INSERT OR UPDATE ON hl_accounts
    FOR EACH ROW EXECUTE FUNCTION integrity.credit_guard('credit_limit', 'credit_limit');
ALTER EVENT TRIGGER integrity_ddl_command_end ENABLE ALWAYS;
-- A TRUNCATE trigger on a table whose append-only guard allows TRUNCATE.
CREATE TRIGGER integrity_append_only_truncate BEFORE TRUNCATE ON hl_nopk
    EXECUTE FUNCTION integrity.append_only_truncate_guard();
ALTER TABLE hl_nopk ENABLE ALWAYS TRIGGER integrity_append_only_truncate;

------------------------------------------------------------------------------
-- Problems the event triggers refuse, with the event triggers bypassed:
-- integrity_ddl_command_end set to fire on origin sessions only (and this
-- session in replica mode), integrity_ddl_command_start disabled,
-- integrity_sql_drop removed altogether.
ALTER EVENT TRIGGER integrity_ddl_command_end ENABLE;
ALTER EVENT TRIGGER integrity_ddl_command_start DISABLE;
ALTER EXTENSION pg_integrity DROP EVENT TRIGGER integrity_sql_drop;
DROP EVENT TRIGGER integrity_sql_drop;
SET session_replication_role = replica;
-- Disabled and dropped guard triggers.
ALTER TABLE hl_ledger DISABLE TRIGGER integrity_append_only;
DROP TRIGGER integrity_append_only_truncate ON hl_ledger;
-- Triggers in the wrong firing mode: an ALWAYS guard in origin mode (skipped
-- under replica role) and in replica mode (skipped by ordinary sessions);
-- an origin-only versioning trigger set to ALWAYS.
ALTER TABLE hl_pieces ENABLE TRIGGER integrity_immutable;
ALTER TABLE hl_pieces ENABLE REPLICA TRIGGER integrity_write_once;
ALTER TABLE hl_pieces ENABLE ALWAYS TRIGGER integrity_version_bump;
-- A renamed guard trigger: missing under its name, unwatched under the new one.
ALTER TRIGGER integrity_version_check ON hl_pieces RENAME TO hl_version_check;
-- Partitions: a guard trigger disabled on one partition; a partition
-- attached without its TRUNCATE trigger; a detached partition that keeps its
-- TRUNCATE trigger.
ALTER TABLE hl_parts_eu DISABLE TRIGGER integrity_immutable;
CREATE TABLE hl_parts_ap (id int, region text, amount int, PRIMARY KEY (region, id));
ALTER TABLE hl_parts ATTACH PARTITION hl_parts_ap FOR VALUES IN ('ap');
ALTER TABLE hl_parts DETACH PARTITION hl_parts_us;
-- Guard triggers replaced by triggers running another function on other
-- events; a replaced TRUNCATE trigger.
CREATE OR REPLACE TRIGGER integrity_stock BEFORE INSERT ON hl_products
    FOR EACH ROW EXECUTE FUNCTION hl_noop();
DROP TRIGGER integrity_append_only_truncate ON hl_trunc;
CREATE TRIGGER integrity_append_only_truncate BEFORE TRUNCATE ON hl_trunc EXECUTE FUNCTION hl_noop();
-- Registered columns renamed; the accounts table of a ledger credit guard
-- renamed.
ALTER TABLE hl_renamed RENAME COLUMN b TO b2;
ALTER TABLE hl_renamed RENAME COLUMN version TO revision;
ALTER TABLE hl_accounts RENAME TO hl_accounts_renamed;
-- A guard trigger dropped from a table whose names need quoting.
DROP TRIGGER integrity_immutable ON "hl_odd ""t""";
-- A guarded table dropped: its registry row stays behind.
DROP TABLE hl_dropme;
-- A guard function replaced by other code.
CREATE OR REPLACE FUNCTION integrity.write_once_guard() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
RESET session_replication_role;

-- Reports keep working on a broken registry.
SELECT count(*) >= 0 AS works FROM integrity.violations();
SELECT * FROM integrity.violations('hl_renamed');

-- Every problem, with its remedy.
\x on
SELECT * FROM hl_health();
\x off
SELECT severity, count(*) FROM hl_health() GROUP BY severity ORDER BY min(CASE severity WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END);

------------------------------------------------------------------------------
-- Running the remedies as they are, top to bottom, repairs everything (but
-- the primary key whose columns only the reader can choose).  Each remedy
-- is shown (OIDs masked) before it runs.
\pset tuples_only on
\set ECHO none
SELECT format('SELECT %L', '>> ' || regexp_replace(remedy, '\m[0-9]{4,}\M', '<oid>', 'g')), remedy
  FROM hl_remedies() AS r(remedy) WHERE remedy NOT LIKE '%<%' \gexec
\set ECHO all
\pset tuples_only off
\x on
SELECT * FROM hl_health();
\x off
ALTER TABLE hl_nopk_bare ADD COLUMN id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
SELECT * FROM hl_health();
SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname LIKE 'integrity%' ORDER BY evtname;
SELECT e.evtname, d.deptype FROM pg_event_trigger e
  JOIN pg_depend d ON d.classid = 'pg_event_trigger'::regclass AND d.objid = e.oid
   AND d.refclassid = 'pg_extension'::regclass
 WHERE e.evtname LIKE 'integrity%' ORDER BY e.evtname;

-- The guards hold again.
SELECT sqlstate FROM expect_error($$DELETE FROM hl_ledger WHERE id = 1$$);
SELECT sqlstate FROM expect_error($$TRUNCATE hl_ledger$$);
SELECT sqlstate FROM expect_error($$TRUNCATE hl_parts_ap$$);
SELECT sqlstate FROM expect_error($$TRUNCATE hl_trunc$$);
SELECT sqlstate FROM expect_error($$UPDATE hl_parts SET amount = 11 WHERE id = 1$$);
SELECT sqlstate FROM expect_error($$INSERT INTO hl_products VALUES (2, 1, 5)$$);
SELECT sqlstate FROM expect_error($$INSERT INTO hl_accounts_renamed VALUES (2, 2, 10, 20)$$);
SET session_replication_role = replica;
SELECT sqlstate FROM expect_error($$UPDATE hl_pieces SET origin = 101$$);
RESET session_replication_role;
UPDATE hl_pieces SET lot = 7;
SELECT sqlstate FROM expect_error($$UPDATE hl_pieces SET lot = 8$$);
UPDATE hl_pieces SET note = 'bumped';
SELECT id, lot, note, version FROM hl_pieces;
TRUNCATE hl_nopk;
TRUNCATE hl_parts_us;
SELECT sqlstate FROM expect_error($$UPDATE "hl_odd ""t""" SET "x""; DROP TABLE hl_ledger; --" = 1$$);
SELECT table_name, guard, columns FROM integrity.guards
 WHERE table_name::text LIKE '%hl\_%' ORDER BY table_name::text, guard;

------------------------------------------------------------------------------
-- The extension's event triggers disabled, or firing on replica sessions
-- only: errors, repaired by ENABLE ALWAYS.
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
ALTER EVENT TRIGGER integrity_sql_drop ENABLE REPLICA;
SELECT * FROM hl_health();
\pset tuples_only on
\set ECHO none
SELECT format('SELECT %L', '>> ' || remedy), remedy FROM hl_remedies() AS r(remedy) \gexec
\set ECHO all
\pset tuples_only off
SELECT * FROM hl_health();
SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname LIKE 'integrity%' ORDER BY evtname;

\ir common/teardown.sql
