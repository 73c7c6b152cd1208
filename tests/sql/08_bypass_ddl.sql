-- 08_bypass_ddl: DDL that would silently lift a guard is refused (55000)
-- while the guard is registered: disabling a guard trigger, changing its
-- firing mode, dropping, renaming or replacing it, renaming or dropping a
-- guarded column.  unprotect() is the way to lift a guard; dropping the
-- table removes its registry rows; re-running a registration repairs it.
\ir common/setup.sql
\set VERBOSITY default
-- Errors raised by the event trigger functions would show their PL/pgSQL
-- call stack (with source line numbers) as CONTEXT: keep it out.
\set SHOW_CONTEXT never

CREATE TABLE ddl_ledger (id int PRIMARY KEY, amount numeric NOT NULL);
INSERT INTO ddl_ledger VALUES (1, 10), (2, 20);
SELECT integrity.protect_append_only('ddl_ledger');
CREATE TABLE ddl_pieces (
    id      int PRIMARY KEY,
    origin  uuid,
    lot     int,
    version int NOT NULL DEFAULT 1
);
INSERT INTO ddl_pieces VALUES (1, 'b0000000-0000-4000-8000-000000000001', NULL, 1);
SELECT integrity.protect_immutable('ddl_pieces', ARRAY['origin']);
SELECT integrity.protect_write_once('ddl_pieces', ARRAY['lot']);
SELECT integrity.enable_versioning('ddl_pieces');
-- A BEFORE UPDATE trigger that fires after the guards' gives each of them its
-- recheck trigger, which is as protected as the others.
CREATE FUNCTION ddl_pieces_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER zz_ddl_pieces_touch BEFORE UPDATE ON ddl_pieces FOR EACH ROW EXECUTE FUNCTION ddl_pieces_touch();
SELECT tgname FROM guard_triggers('ddl_pieces');

------------------------------------------------------------------------------
-- DISABLE TRIGGER of a guard trigger: refused.
ALTER TABLE ddl_ledger DISABLE TRIGGER integrity_append_only;
ALTER TABLE ddl_ledger DISABLE TRIGGER integrity_append_only_truncate;
ALTER TABLE ddl_pieces DISABLE TRIGGER integrity_immutable;
ALTER TABLE ddl_pieces DISABLE TRIGGER integrity_write_once;
ALTER TABLE ddl_pieces DISABLE TRIGGER integrity_version_bump;
ALTER TABLE ddl_pieces DISABLE TRIGGER integrity_version_check;
-- DISABLE TRIGGER ALL / USER: refused.
ALTER TABLE ddl_ledger DISABLE TRIGGER ALL;
ALTER TABLE ddl_pieces DISABLE TRIGGER USER;
-- The error: 55000, naming the trigger, the guard, and how to lift it.
\x on
SELECT * FROM expect_error($$ALTER TABLE ddl_ledger DISABLE TRIGGER integrity_append_only$$);
\x off

-- Changing the firing mode: ENABLE [REPLICA] TRIGGER on an ALWAYS trigger
-- (it would stop firing under session_replication_role = replica), and
-- ENABLE ALWAYS on an origin-only versioning trigger (it would bump rows
-- applied by logical replication): refused.
ALTER TABLE ddl_ledger ENABLE TRIGGER integrity_append_only;
ALTER TABLE ddl_ledger ENABLE REPLICA TRIGGER integrity_append_only_truncate;
ALTER TABLE ddl_pieces ENABLE TRIGGER integrity_immutable;
ALTER TABLE ddl_pieces ENABLE ALWAYS TRIGGER integrity_version_bump;
SELECT sqlstate, message FROM expect_error($$ALTER TABLE ddl_pieces ENABLE TRIGGER ALL$$);
-- Re-stating the mode a trigger already has is no change, and allowed.
ALTER TABLE ddl_ledger ENABLE ALWAYS TRIGGER integrity_append_only;
ALTER TABLE ddl_pieces ENABLE TRIGGER integrity_version_bump;

-- DROP TRIGGER: refused for every guard trigger.
DROP TRIGGER integrity_append_only ON ddl_ledger;
DROP TRIGGER integrity_append_only_truncate ON ddl_ledger;
DROP TRIGGER integrity_immutable ON ddl_pieces;
DROP TRIGGER integrity_write_once ON ddl_pieces;
DROP TRIGGER integrity_version_bump ON ddl_pieces;
DROP TRIGGER IF EXISTS integrity_version_check ON ddl_pieces;
\x on
SELECT * FROM expect_error($$DROP TRIGGER integrity_immutable ON ddl_pieces$$);
\x off

-- Renaming a guard trigger (which would let a later DROP TRIGGER of the
-- new name through) is refused too.
SELECT sqlstate FROM expect_error($$ALTER TRIGGER integrity_append_only ON ddl_ledger RENAME TO renamed_guard$$);
DROP TRIGGER IF EXISTS renamed_guard ON ddl_ledger;
DELETE FROM ddl_ledger WHERE id = 1;

-- Replacing a guard trigger with another definition (CREATE OR REPLACE
-- TRIGGER) is refused.
CREATE FUNCTION ddl_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
SELECT sqlstate FROM expect_error($$CREATE OR REPLACE TRIGGER integrity_append_only
    BEFORE INSERT ON ddl_ledger FOR EACH ROW EXECUTE FUNCTION ddl_noop()$$);
DELETE FROM ddl_ledger WHERE id = 1;

-- Renaming or dropping a guarded column is refused (the guard's triggers
-- name their columns).
ALTER TABLE ddl_pieces RENAME COLUMN origin TO created_by;
ALTER TABLE ddl_pieces RENAME COLUMN version TO revision;
ALTER TABLE ddl_pieces DROP COLUMN lot;
ALTER TABLE ddl_pieces DROP COLUMN origin CASCADE;
SELECT sqlstate, message, detail, hint FROM expect_error($$ALTER TABLE ddl_pieces DROP COLUMN version$$);

-- Changing the type of a guarded column is refused by PostgreSQL itself:
-- the guard's trigger condition uses the column.
ALTER TABLE ddl_pieces ALTER COLUMN origin TYPE text;
ALTER TABLE ddl_pieces ALTER COLUMN version TYPE bigint;

-- The SQLSTATE of each refused DDL statement, in one table.
SELECT n, ddl, (SELECT e.sqlstate FROM expect_error(ddl) e) AS sqlstate
  FROM (VALUES
        (1,  $$ALTER TABLE ddl_ledger DISABLE TRIGGER integrity_append_only$$),
        (2,  $$ALTER TABLE ddl_ledger DISABLE TRIGGER integrity_append_only_truncate$$),
        (3,  $$ALTER TABLE ddl_ledger DISABLE TRIGGER ALL$$),
        (4,  $$ALTER TABLE ddl_pieces DISABLE TRIGGER USER$$),
        (5,  $$ALTER TABLE ddl_pieces DISABLE TRIGGER integrity_write_once$$),
        (6,  $$ALTER TABLE ddl_pieces DISABLE TRIGGER integrity_version_check$$),
        (7,  $$ALTER TABLE ddl_ledger ENABLE TRIGGER integrity_append_only$$),
        (8,  $$ALTER TABLE ddl_ledger ENABLE REPLICA TRIGGER integrity_append_only_truncate$$),
        (9,  $$ALTER TABLE ddl_pieces ENABLE ALWAYS TRIGGER integrity_version_bump$$),
        (10, $$DROP TRIGGER integrity_append_only ON ddl_ledger$$),
        (11, $$DROP TRIGGER integrity_append_only_truncate ON ddl_ledger$$),
        (12, $$DROP TRIGGER integrity_write_once ON ddl_pieces$$),
        (13, $$DROP TRIGGER integrity_version_bump ON ddl_pieces$$),
        (14, $$ALTER TABLE ddl_pieces RENAME COLUMN origin TO created_by$$),
        (15, $$ALTER TABLE ddl_pieces RENAME COLUMN lot TO batch$$),
        (16, $$ALTER TABLE ddl_pieces DROP COLUMN origin CASCADE$$),
        (17, $$ALTER TABLE ddl_pieces DROP COLUMN version CASCADE$$)
       ) AS v(n, ddl)
 ORDER BY n;

-- A guard function cannot be dropped out from under its triggers.
DROP FUNCTION integrity.append_only_guard() CASCADE;

-- Nothing of the above changed the guards.
SELECT * FROM guard_triggers('ddl_ledger');
SELECT tgname, tgenabled FROM guard_triggers('ddl_pieces');
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name IN ('ddl_ledger'::regclass, 'ddl_pieces'::regclass) ORDER BY table_name::text, guard;
UPDATE ddl_ledger SET amount = 0;
TRUNCATE ddl_ledger;
UPDATE ddl_pieces SET origin = NULL;
UPDATE ddl_pieces SET lot = 5;
UPDATE ddl_pieces SET lot = 6;
SELECT * FROM ddl_ledger ORDER BY id;
SELECT * FROM ddl_pieces ORDER BY id;

-- Other DDL on a guarded table and other triggers on it are not affected
-- (dropping a column of an append-only table is refused: 44_history_ddl).
ALTER TABLE ddl_ledger ADD COLUMN memo text;
ALTER TABLE ddl_ledger RENAME COLUMN memo TO remark;
SELECT sqlstate FROM expect_error($$ALTER TABLE ddl_ledger DROP COLUMN remark$$);
ALTER TABLE ddl_pieces ADD COLUMN note text;
ALTER TABLE ddl_pieces RENAME COLUMN note TO comment;
CREATE TRIGGER ddl_other BEFORE UPDATE ON ddl_pieces FOR EACH ROW EXECUTE FUNCTION ddl_noop();
ALTER TABLE ddl_pieces DISABLE TRIGGER ddl_other;
ALTER TABLE ddl_pieces ENABLE TRIGGER ddl_other;
DROP TRIGGER ddl_other ON ddl_pieces;
COMMENT ON TRIGGER integrity_append_only ON ddl_ledger IS 'guards the ledger';

-- Renaming the table or moving it to another schema keeps its guards
-- (the registry refers to the table, not to its name).
CREATE SCHEMA ddl_archive;
ALTER TABLE ddl_ledger RENAME TO ddl_ledger_renamed;
ALTER TABLE ddl_ledger_renamed SET SCHEMA ddl_archive;
SELECT table_name, guard FROM integrity.guards WHERE table_name::text LIKE '%ddl\_ledger%' ORDER BY guard;
SELECT sqlstate, schema_name, table_name, detail FROM expect_error($$DELETE FROM ddl_archive.ddl_ledger_renamed WHERE id = 2$$);
ALTER TABLE ddl_archive.ddl_ledger_renamed SET SCHEMA public;
ALTER TABLE ddl_ledger_renamed RENAME TO ddl_ledger;
DROP SCHEMA ddl_archive;

------------------------------------------------------------------------------
-- Partitions: a cloned guard trigger cannot be disabled on one partition,
-- the per-partition TRUNCATE trigger cannot be dropped, and the guard
-- cannot be registered again or removed on the partition itself.
CREATE TABLE ddl_parts (id int, part int, origin int, PRIMARY KEY (part, id)) PARTITION BY LIST (part);
CREATE TABLE ddl_parts_1 PARTITION OF ddl_parts FOR VALUES IN (1);
INSERT INTO ddl_parts VALUES (1, 1, 1);
SELECT integrity.protect_append_only('ddl_parts');
SELECT integrity.protect_immutable('ddl_parts', ARRAY['origin']);
ALTER TABLE ddl_parts_1 DISABLE TRIGGER integrity_append_only;
ALTER TABLE ddl_parts_1 ENABLE TRIGGER integrity_immutable;
ALTER TABLE ddl_parts_1 DISABLE TRIGGER ALL;
DROP TRIGGER integrity_append_only_truncate ON ddl_parts_1;
-- (dropping a cloned trigger is refused by PostgreSQL itself)
DROP TRIGGER integrity_append_only ON ddl_parts_1;
ALTER TABLE ddl_parts_1 RENAME COLUMN origin TO renamed;
SELECT sqlstate, message, hint FROM expect_error($$SELECT integrity.protect_append_only('ddl_parts_1', allow_truncate => true)$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.protect_immutable('ddl_parts_1', ARRAY['origin'])$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.unprotect('ddl_parts_1')$$);
SELECT * FROM pt_triggers('ddl_parts');
DELETE FROM ddl_parts_1;
TRUNCATE ddl_parts_1;
-- A partition of an append-only table cannot be dropped, not even an empty
-- one (see 44_history_ddl).
CREATE TABLE ddl_parts_2 PARTITION OF ddl_parts FOR VALUES IN (2);
SELECT sqlstate, message FROM expect_error($$DROP TABLE ddl_parts_2$$);
SELECT * FROM pt_triggers('ddl_parts');

------------------------------------------------------------------------------
-- Dropping a guarded table that is not append-only is allowed and removes its
-- registry rows.
SELECT count(*) AS ddl_pieces_guards FROM integrity.guards WHERE table_name = 'ddl_pieces'::regclass;
DROP TABLE ddl_pieces;
SELECT count(*) AS dangling_registry_rows FROM integrity.guard_registry
 WHERE NOT EXISTS (SELECT FROM pg_class WHERE oid = table_name);
-- An append-only table, or a schema that holds one, is dropped once the guard
-- is lifted; the other guards' registry rows go with the table.
SELECT sqlstate, message FROM expect_error($$DROP TABLE ddl_parts$$);
SELECT integrity.unprotect('ddl_parts', 'append_only');
DROP TABLE ddl_parts;
CREATE SCHEMA ddl_schema;
CREATE TABLE ddl_schema.entries (id int PRIMARY KEY, v int NOT NULL DEFAULT 1);
SELECT integrity.protect_append_only('ddl_schema.entries');
SELECT integrity.enable_versioning('ddl_schema.entries', 'v');
SELECT sqlstate, message FROM expect_error($$DROP SCHEMA ddl_schema CASCADE$$);
SELECT integrity.unprotect('ddl_schema.entries', 'append_only');
DROP SCHEMA ddl_schema CASCADE;
SELECT count(*) AS dangling_registry_rows FROM integrity.guard_registry
 WHERE NOT EXISTS (SELECT FROM pg_class WHERE oid = table_name);
-- A table dropped and created again under the same name has no guard.
CREATE TABLE ddl_reborn (id int PRIMARY KEY);
SELECT integrity.protect_immutable('ddl_reborn', ARRAY['id']);
DROP TABLE ddl_reborn;
CREATE TABLE ddl_reborn (id int PRIMARY KEY);
INSERT INTO ddl_reborn VALUES (1);
UPDATE ddl_reborn SET id = 2;
SELECT count(*) AS reborn_guards FROM integrity.guards WHERE table_name = 'ddl_reborn'::regclass;

------------------------------------------------------------------------------
-- Deleting the registry row by hand is an explicit act of the table's
-- owner, like unprotect(): afterwards the triggers are no longer needed by
-- a registered guard, so DISABLE and DROP TRIGGER are allowed.  (health()
-- reports such orphaned or missing triggers.)
CREATE TABLE ddl_manual (id int PRIMARY KEY, amount numeric);
INSERT INTO ddl_manual VALUES (1, 1);
SELECT integrity.protect_append_only('ddl_manual');
DELETE FROM integrity.guard_registry WHERE table_name = 'ddl_manual'::regclass;
-- The triggers stay, and still refuse rows, until they are dropped.
DELETE FROM ddl_manual;
ALTER TABLE ddl_manual DISABLE TRIGGER integrity_append_only;
DROP TRIGGER integrity_append_only_truncate ON ddl_manual;
SELECT * FROM guard_triggers('ddl_manual');
UPDATE ddl_manual SET amount = 2;
-- Re-running the registration repairs everything: the registry row, the
-- dropped TRUNCATE trigger and the disabled row trigger.
SELECT integrity.protect_append_only('ddl_manual');
SELECT table_name, guard, columns, options FROM integrity.guards WHERE table_name = 'ddl_manual'::regclass;
SELECT * FROM guard_triggers('ddl_manual');
UPDATE ddl_manual SET amount = 3;
TRUNCATE ddl_manual;
SELECT * FROM ddl_manual ORDER BY id;
-- The same for the column guards and versioning: with their registry rows
-- gone their triggers can be dropped; re-registering reinstalls them.
CREATE TABLE ddl_manual_cols (id int PRIMARY KEY, origin int, version int NOT NULL DEFAULT 1);
INSERT INTO ddl_manual_cols VALUES (1, 1, 1);
SELECT integrity.protect_immutable('ddl_manual_cols', ARRAY['origin']);
SELECT integrity.enable_versioning('ddl_manual_cols');
-- Only the immutable row is deleted: the versioning triggers stay needed.
DELETE FROM integrity.guard_registry WHERE table_name = 'ddl_manual_cols'::regclass AND guard = 'immutable';
DROP TRIGGER integrity_immutable ON ddl_manual_cols;
DROP TRIGGER integrity_version_bump ON ddl_manual_cols;
DELETE FROM integrity.guard_registry WHERE table_name = 'ddl_manual_cols'::regclass AND guard = 'versioning';
DROP TRIGGER integrity_version_bump ON ddl_manual_cols;
SELECT tgname, tgenabled FROM guard_triggers('ddl_manual_cols');
UPDATE ddl_manual_cols SET origin = 2;
SELECT * FROM ddl_manual_cols ORDER BY id;
SELECT integrity.protect_immutable('ddl_manual_cols', ARRAY['origin']);
SELECT integrity.enable_versioning('ddl_manual_cols');
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name = 'ddl_manual_cols'::regclass ORDER BY guard;
SELECT tgname, tgenabled FROM guard_triggers('ddl_manual_cols');
UPDATE ddl_manual_cols SET origin = 3;
UPDATE ddl_manual_cols SET id = id;
SELECT * FROM ddl_manual_cols ORDER BY id;

-- unprotect() after the registry row was deleted by hand removes the
-- leftover triggers.
CREATE TABLE ddl_leftover (id int PRIMARY KEY);
SELECT integrity.protect_append_only('ddl_leftover');
DELETE FROM integrity.guard_registry WHERE table_name = 'ddl_leftover'::regclass;
SELECT integrity.unprotect('ddl_leftover');
SELECT * FROM guard_triggers('ddl_leftover');

-- Two guards of one table left in the wrong mode behind the event trigger's
-- back (it was disabled): re-running either registration repairs both.
CREATE TABLE ddl_two_broken (id int PRIMARY KEY, origin int, version int NOT NULL DEFAULT 1);
INSERT INTO ddl_two_broken VALUES (1, 1, 1);
SELECT integrity.protect_immutable('ddl_two_broken', ARRAY['origin']);
SELECT integrity.protect_append_only('ddl_two_broken');
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
ALTER TABLE ddl_two_broken DISABLE TRIGGER integrity_immutable, ENABLE TRIGGER integrity_append_only;
ALTER EVENT TRIGGER integrity_ddl_command_end ENABLE ALWAYS;
SELECT tgname, tgenabled FROM guard_triggers('ddl_two_broken');
SELECT integrity.protect_append_only('ddl_two_broken');
SELECT tgname, tgenabled FROM guard_triggers('ddl_two_broken');
SELECT sqlstate FROM expect_error($$UPDATE ddl_two_broken SET origin = 2$$);

\ir common/teardown.sql
