-- 07_registration_errors: bad registration input is refused with a clear
-- error and the SQLSTATE PostgreSQL itself would use, and a failed call
-- leaves nothing half-installed; hostile identifiers are plain names; only
-- the owner of a table can change its guards.
\ir common/setup.sql
\set VERBOSITY default
-- Errors raised inside the registration functions would show their PL/pgSQL
-- call stack (with source line numbers) as CONTEXT: keep it out.
\set SHOW_CONTEXT never

CREATE TABLE bad_target (
    id      int PRIMARY KEY,
    a       int,
    amount  numeric,
    label   text,
    version int
);
INSERT INTO bad_target VALUES (1, 1, 1.5, 'x', 1);

-- NULL arguments: 22004.
SELECT integrity.protect_append_only(NULL);
SELECT integrity.protect_append_only('bad_target', NULL);
SELECT integrity.protect_immutable(NULL, ARRAY['a']);
SELECT integrity.protect_immutable('bad_target', NULL);
SELECT integrity.protect_write_once('bad_target', ARRAY['a', NULL]);
SELECT integrity.enable_versioning(NULL);
SELECT integrity.enable_versioning('bad_target', NULL);
SELECT integrity.enable_versioning('bad_target', 'version', NULL);
SELECT integrity.unprotect(NULL);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.protect_write_once('bad_target', NULL)$$);

-- An empty column list: 22023.
SELECT integrity.protect_immutable('bad_target', '{}');
SELECT sqlstate, message FROM expect_error($$SELECT integrity.protect_write_once('bad_target', ARRAY[]::text[])$$);

-- Unknown columns: 42703 (also system columns, and names that differ only
-- in case: column names are taken as written, not case-folded).
SELECT integrity.protect_immutable('bad_target', ARRAY['a', 'no_such_column']);
SELECT integrity.protect_write_once('bad_target', ARRAY['ctid']);
SELECT integrity.protect_immutable('bad_target', ARRAY['A']);
SELECT integrity.enable_versioning('bad_target', 'no_such_column');
SELECT sqlstate, message FROM expect_error($$SELECT integrity.enable_versioning('bad_target', 'xmin')$$);
-- A dropped column is gone, whatever its internal name.
ALTER TABLE bad_target ADD COLUMN gone int;
ALTER TABLE bad_target DROP COLUMN gone;
SELECT sqlstate FROM expect_error(format('SELECT integrity.protect_immutable(%L, ARRAY[%L])',
    'bad_target', (SELECT attname FROM pg_attribute WHERE attrelid = 'bad_target'::regclass AND attisdropped)));
-- The default version column must exist too.
CREATE TABLE bad_no_version (id int PRIMARY KEY);
SELECT integrity.enable_versioning('bad_no_version');

-- A version column that is not smallint, integer or bigint: 42804.
SELECT integrity.enable_versioning('bad_target', 'amount');
SELECT integrity.enable_versioning('bad_target', 'label');

-- Not a table: 42809 for views, materialized views, sequences, foreign
-- tables, indexes, composite types, temporary tables and system catalogs.
CREATE VIEW bad_view AS SELECT * FROM bad_target;
CREATE MATERIALIZED VIEW bad_matview AS SELECT * FROM bad_target;
CREATE SEQUENCE bad_sequence;
CREATE TYPE bad_composite AS (a int);
CREATE FOREIGN DATA WRAPPER bad_fdw;
CREATE SERVER bad_server FOREIGN DATA WRAPPER bad_fdw;
CREATE FOREIGN TABLE bad_foreign (id int, a int) SERVER bad_server;
CREATE TEMPORARY TABLE bad_temp (id int PRIMARY KEY, a int, version int);
INSERT INTO bad_temp VALUES (1, 1, 1);
SELECT integrity.protect_append_only('bad_view');
SELECT integrity.protect_immutable('bad_matview', ARRAY['a']);
SELECT integrity.protect_append_only('bad_sequence');
SELECT integrity.protect_append_only('bad_foreign');
SELECT integrity.protect_append_only('bad_target_pkey');
SELECT integrity.protect_append_only('bad_composite');
SELECT integrity.protect_append_only('bad_temp');
SELECT integrity.enable_versioning('bad_temp');
SELECT integrity.protect_append_only('pg_catalog.pg_class');
SELECT integrity.protect_immutable('pg_catalog.pg_class', ARRAY['relname']);
SELECT integrity.protect_append_only('information_schema.sql_features');
\x on
SELECT * FROM expect_error($$SELECT integrity.protect_write_once('bad_view', ARRAY['a'])$$);
\x off
-- A table that does not exist is refused by the regclass input itself.
SELECT integrity.protect_append_only('no_such_table');

-- Unknown guard name for unprotect: 22023.
SELECT integrity.unprotect('bad_target', 'no_such_guard');

-- The SQLSTATE of every refused call above, in one table.
SELECT n, call, (SELECT e.sqlstate FROM expect_error('SELECT integrity.' || call) e) AS sqlstate
  FROM (VALUES
        (1,  $$protect_append_only(NULL)$$),
        (2,  $$protect_append_only('bad_target', NULL)$$),
        (3,  $$protect_immutable('bad_target', NULL)$$),
        (4,  $$protect_write_once('bad_target', ARRAY['a', NULL])$$),
        (5,  $$enable_versioning('bad_target', NULL)$$),
        (6,  $$enable_versioning('bad_target', 'version', NULL)$$),
        (7,  $$unprotect(NULL)$$),
        (8,  $$protect_immutable('bad_target', '{}')$$),
        (9,  $$unprotect('bad_target', 'no_such_guard')$$),
        (10, $$protect_immutable('bad_target', ARRAY['a', 'no_such_column'])$$),
        (11, $$protect_write_once('bad_target', ARRAY['ctid'])$$),
        (12, $$enable_versioning('bad_no_version')$$),
        (13, $$enable_versioning('bad_target', 'amount')$$),
        (14, $$enable_versioning('bad_target', 'label')$$),
        (15, $$protect_append_only('bad_view')$$),
        (16, $$protect_immutable('bad_matview', ARRAY['a'])$$),
        (17, $$protect_append_only('bad_sequence')$$),
        (18, $$protect_append_only('bad_foreign')$$),
        (19, $$protect_append_only('bad_target_pkey')$$),
        (20, $$protect_append_only('bad_composite')$$),
        (21, $$protect_append_only('bad_temp')$$),
        (22, $$enable_versioning('bad_temp')$$),
        (23, $$protect_append_only('pg_catalog.pg_class')$$),
        (24, $$protect_append_only('information_schema.sql_features')$$)
       ) AS v(n, call)
 ORDER BY n;

-- Nothing was half-installed by any of the failed calls.
SELECT * FROM integrity.guards WHERE table_name::text LIKE 'bad\_%' ORDER BY table_name::text, guard;
SELECT * FROM all_guard_triggers() WHERE table_name::text LIKE 'bad\_%';
SELECT count(*) AS temp_table_triggers FROM pg_trigger WHERE tgrelid = 'bad_temp'::regclass;
SELECT count(*) AS catalog_triggers FROM pg_trigger WHERE tgrelid = 'pg_catalog.pg_class'::regclass;

-- A failed re-registration leaves the existing guard as it was.
SELECT integrity.protect_immutable('bad_target', ARRAY['a']);
SELECT integrity.protect_immutable('bad_target', ARRAY['a', 'no_such_column']);
SELECT integrity.enable_versioning('bad_target');
SELECT integrity.enable_versioning('bad_target', 'label', false);
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name = 'bad_target'::regclass ORDER BY guard;
SELECT * FROM guard_triggers('bad_target');
SELECT integrity.unprotect('bad_target');

------------------------------------------------------------------------------
-- Hostile identifiers are plain names: a table and columns named like SQL
-- injections, with spaces and upper case, are quoted everywhere.
CREATE TABLE victim (id int);
CREATE TABLE "x""; DROP TABLE victim; --" (
    "id; DROP TABLE victim; --" int PRIMARY KEY,
    "x""; DROP TABLE victim; --" text,
    "Mixed Case Column"          int,
    "it's"                       text,
    "Version"                    int NOT NULL DEFAULT 1
);
INSERT INTO "x""; DROP TABLE victim; --" VALUES (1, 'evil', 1, NULL, 1);
SELECT integrity.protect_immutable('"x""; DROP TABLE victim; --"', ARRAY['x"; DROP TABLE victim; --', 'Mixed Case Column']);
SELECT integrity.protect_write_once('"x""; DROP TABLE victim; --"', ARRAY['it''s']);
SELECT integrity.enable_versioning('"x""; DROP TABLE victim; --"', 'Version');
SELECT integrity.protect_append_only('"x""; DROP TABLE victim; --"');
SELECT to_regclass('victim') AS victim_still_there;
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name = '"x""; DROP TABLE victim; --"'::regclass ORDER BY guard;
SELECT tgname, tgenabled FROM guard_triggers('"x""; DROP TABLE victim; --"');
-- The guards work and name the columns as they are (COLUMN_NAME unquoted).
SELECT integrity.unprotect('"x""; DROP TABLE victim; --"', 'append_only');
\x on
SELECT * FROM expect_error($$UPDATE "x""; DROP TABLE victim; --" SET "x""; DROP TABLE victim; --" = 'changed'$$);
SELECT * FROM expect_error($$UPDATE "x""; DROP TABLE victim; --" SET "Mixed Case Column" = 2$$);
\x off
UPDATE "x""; DROP TABLE victim; --" SET "it's" = 'set once';
SELECT sqlstate, column_name, constraint_name FROM expect_error($$UPDATE "x""; DROP TABLE victim; --" SET "it's" = 'twice'$$);
SELECT sqlstate, column_name, constraint_name FROM expect_error($$UPDATE "x""; DROP TABLE victim; --" SET "Version" = 7$$);
SELECT * FROM "x""; DROP TABLE victim; --";
-- Case matters: "version" is not "Version".
SELECT integrity.enable_versioning('"x""; DROP TABLE victim; --"', 'version');

-- A table whose name needs quoting inside a string literal: the HINT that
-- suggests a call quotes it correctly.
CREATE TABLE "it's a ledger" (id int PRIMARY KEY);
INSERT INTO "it's a ledger" VALUES (1);
SELECT integrity.protect_append_only('"it''s a ledger"');
SELECT sqlstate, table_name,
       hint LIKE '%protect_append_only(''public."it''''s a ledger"'', allow_truncate => true)%' AS hint_is_valid_sql
  FROM expect_error($$TRUNCATE "it's a ledger"$$);
SELECT to_regclass('victim') AS victim_still_there;

------------------------------------------------------------------------------
-- Ownership: only the owner of a table (or a member of the owning role)
-- can register or remove its guards, or touch its registry rows (42501).
-- (roles are cluster-wide: leftovers of an interrupted run go first)
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_integrity_member, regress_integrity_owner, regress_integrity_other;
RESET client_min_messages;
CREATE ROLE regress_integrity_owner;
CREATE ROLE regress_integrity_member IN ROLE regress_integrity_owner;
CREATE ROLE regress_integrity_other;
GRANT CREATE ON SCHEMA public TO regress_integrity_owner, regress_integrity_other;

SET ROLE regress_integrity_owner;
CREATE TABLE owned_ledger (id int PRIMARY KEY, a int, version int NOT NULL DEFAULT 1);
INSERT INTO owned_ledger VALUES (1, 1, 1);
GRANT SELECT, UPDATE, DELETE ON owned_ledger TO regress_integrity_other;
SELECT integrity.protect_append_only('owned_ledger');
RESET ROLE;

SET ROLE regress_integrity_other;
SELECT integrity.protect_immutable('owned_ledger', ARRAY['a']);
SELECT integrity.protect_write_once('owned_ledger', ARRAY['a']);
SELECT integrity.enable_versioning('owned_ledger');
SELECT integrity.protect_append_only('owned_ledger', allow_truncate => true);
SELECT integrity.unprotect('owned_ledger');
SELECT integrity.unprotect('owned_ledger', 'append_only');
\x on
SELECT * FROM expect_error($$SELECT integrity.protect_immutable('owned_ledger', ARRAY['a'])$$);
\x off
-- The registry is readable, but its rows for someone else's table cannot
-- be deleted, changed or forged.
SELECT table_name, guard FROM integrity.guards WHERE table_name = 'owned_ledger'::regclass;
DELETE FROM integrity.guard_registry WHERE table_name = 'owned_ledger'::regclass;
UPDATE integrity.guard_registry SET options = '{"allow_truncate": true}' WHERE table_name = 'owned_ledger'::regclass;
INSERT INTO integrity.guard_registry (table_name, guard) VALUES ('owned_ledger', 'immutable');
TRUNCATE integrity.guard_registry;
-- A non-owner cannot drop the guard triggers either (PostgreSQL's own check).
DROP TRIGGER integrity_append_only ON owned_ledger;
-- And the guard applies to them as to anyone.
DELETE FROM owned_ledger;
-- Their own table, on the other hand, they can guard.
CREATE TABLE others_table (id int PRIMARY KEY);
SELECT integrity.protect_append_only('others_table');
RESET ROLE;

-- A member of the owning role can register and remove guards.
SET ROLE regress_integrity_member;
SELECT integrity.enable_versioning('owned_ledger');
SELECT integrity.unprotect('owned_ledger', 'versioning');
RESET ROLE;

-- Nothing changed on owned_ledger by the refused calls.
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name IN ('owned_ledger'::regclass, 'others_table'::regclass) ORDER BY table_name::text, guard;
SELECT * FROM guard_triggers('owned_ledger');
SELECT * FROM owned_ledger ORDER BY id;
SELECT current_user;

-- Clean up the roles.  Their append-only tables cannot be dropped (not even
-- by DROP OWNED) before the guards are lifted; dropping their other tables
-- drops their registry rows.
SELECT sqlstate, message FROM expect_error($$DROP OWNED BY regress_integrity_other CASCADE$$);
SELECT integrity.unprotect(t) FROM unnest(ARRAY['owned_ledger', 'others_table']::regclass[]) AS t;
DROP OWNED BY regress_integrity_owner, regress_integrity_member, regress_integrity_other CASCADE;
REVOKE CREATE ON SCHEMA public FROM regress_integrity_owner, regress_integrity_other;
DROP ROLE regress_integrity_member;
DROP ROLE regress_integrity_owner;
DROP ROLE regress_integrity_other;
SELECT count(*) AS registry_rows_of_dropped_tables FROM integrity.guard_registry
 WHERE NOT EXISTS (SELECT FROM pg_class WHERE oid = table_name);

\ir common/teardown.sql
