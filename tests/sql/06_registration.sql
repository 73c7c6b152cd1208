-- 06_registration: registration calls are idempotent, re-registering with
-- new arguments updates the guard, allow_truncate toggles the TRUNCATE
-- triggers, and unprotect removes one guard, all guards, or says there was
-- nothing to remove.
\ir common/setup.sql
\set VERBOSITY default

-- guard_state(tbl): the registry rows and installed triggers of a table
-- in one deterministic listing.
CREATE FUNCTION guard_state(tbl regclass)
RETURNS TABLE (kind text, name text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT 'registry', g.guard, g.columns::text || ' ' || g.options::text
      FROM integrity.guards g WHERE g.table_name = tbl
    UNION ALL
    SELECT 'trigger', t.tgname::text, t.tgenabled::text || ' ' || t.definition
      FROM guard_triggers(tbl) t
    ORDER BY 1, 2
$$;

-- The registry is configuration that pg_dump dumps.
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'pg_integrity';

------------------------------------------------------------------------------
-- Idempotence: a second identical call changes nothing (registry row,
-- its created_at, the triggers and their modes).
CREATE TABLE reg_ledger (id int PRIMARY KEY, amount numeric NOT NULL);
INSERT INTO reg_ledger VALUES (1, 10), (2, 20);
SELECT integrity.protect_append_only('reg_ledger');
SELECT * FROM guard_state('reg_ledger');
SELECT created_at AS first_created_at FROM integrity.guards WHERE table_name = 'reg_ledger'::regclass \gset
SELECT integrity.protect_append_only('reg_ledger');
SELECT integrity.protect_append_only('reg_ledger', false);
SELECT * FROM guard_state('reg_ledger');
SELECT count(*) AS registry_rows, bool_and(created_at = :'first_created_at') AS created_at_kept
  FROM integrity.guard_registry WHERE table_name = 'reg_ledger'::regclass;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'reg_ledger'::regclass;
DELETE FROM reg_ledger;

-- allow_truncate => true updates the options and drops the TRUNCATE
-- trigger: TRUNCATE goes through, UPDATE and DELETE are still refused.
SELECT integrity.protect_append_only('reg_ledger', allow_truncate => true);
SELECT * FROM guard_state('reg_ledger');
DELETE FROM reg_ledger WHERE id = 1;
TRUNCATE reg_ledger;
SELECT count(*) AS rows_left FROM reg_ledger;
-- ... and back: allow_truncate => false reinstalls it.
INSERT INTO reg_ledger VALUES (3, 30);
SELECT integrity.protect_append_only('reg_ledger', allow_truncate => false);
SELECT * FROM guard_state('reg_ledger');
TRUNCATE reg_ledger;
SELECT * FROM reg_ledger ORDER BY id;

-- allow_truncate on a partitioned table: the TRUNCATE triggers go from
-- every partition; partitions created meanwhile get none; switching back
-- covers them all again.
CREATE TABLE reg_parts (id int, part int, PRIMARY KEY (part, id)) PARTITION BY LIST (part);
CREATE TABLE reg_parts_1 PARTITION OF reg_parts FOR VALUES IN (1);
INSERT INTO reg_parts VALUES (1, 1);
SELECT integrity.protect_append_only('reg_parts');
SELECT integrity.protect_append_only('reg_parts', allow_truncate => true);
CREATE TABLE reg_parts_2 PARTITION OF reg_parts FOR VALUES IN (2);
INSERT INTO reg_parts VALUES (2, 2);
SELECT * FROM pt_triggers('reg_parts');
TRUNCATE reg_parts_1;
DELETE FROM reg_parts_2;
SELECT integrity.protect_append_only('reg_parts', allow_truncate => false);
SELECT * FROM pt_triggers('reg_parts');
TRUNCATE reg_parts_2;
SELECT * FROM reg_parts ORDER BY part, id;

------------------------------------------------------------------------------
-- Immutable: identical calls are idempotent; new columns replace the old
-- list (the registry and the trigger's WHEN clause and arguments).
CREATE TABLE reg_items (
    id   int PRIMARY KEY,
    a    int,
    b    int,
    c    int
);
INSERT INTO reg_items VALUES (1, 1, 1, 1);
SELECT integrity.protect_immutable('reg_items', ARRAY['a', 'b']);
SELECT integrity.protect_immutable('reg_items', ARRAY['a', 'b']);
SELECT * FROM guard_state('reg_items');
-- Duplicate names are registered once.
SELECT integrity.protect_immutable('reg_items', ARRAY['b', 'c', 'b']);
SELECT * FROM guard_state('reg_items');
UPDATE reg_items SET a = 2;
UPDATE reg_items SET c = 2;
SELECT * FROM reg_items ORDER BY id;

-- Write-once: the same.
SELECT integrity.protect_write_once('reg_items', ARRAY['a']);
SELECT integrity.protect_write_once('reg_items', ARRAY['a']);
SELECT integrity.protect_write_once('reg_items', ARRAY['a', 'c']);
SELECT * FROM guard_state('reg_items');

-- Versioning: strict -> lenient, and a different column, update the guard.
ALTER TABLE reg_items ADD COLUMN version int NOT NULL DEFAULT 1, ADD COLUMN rev bigint NOT NULL DEFAULT 0;
SELECT integrity.enable_versioning('reg_items');
SELECT integrity.enable_versioning('reg_items', 'version', true);
SELECT * FROM guard_state('reg_items') WHERE name LIKE '%version%';
SELECT integrity.enable_versioning('reg_items', strict => false);
SELECT * FROM guard_state('reg_items') WHERE name LIKE '%version%';
UPDATE reg_items SET version = 100;
SELECT id, version, rev FROM reg_items ORDER BY id;
SELECT integrity.enable_versioning('reg_items', 'rev');
SELECT * FROM guard_state('reg_items') WHERE name LIKE '%version%';
UPDATE reg_items SET version = 100;
UPDATE reg_items SET rev = 7;
SELECT id, version, rev FROM reg_items ORDER BY id;

-- Several guards on one table work together: one registry row per kind.
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name = 'reg_items'::regclass ORDER BY guard;
UPDATE reg_items SET a = 5;
UPDATE reg_items SET b = 5;
UPDATE reg_items SET version = 5;
SELECT * FROM reg_items ORDER BY id;

------------------------------------------------------------------------------
-- unprotect one guard: its registry row and triggers go, the others stay.
SELECT integrity.unprotect('reg_items', 'immutable');
SELECT * FROM guard_state('reg_items');
UPDATE reg_items SET b = 6;
UPDATE reg_items SET a = 6;
-- unprotect a kind that is not registered on the table: NOTICE, no change.
SELECT integrity.unprotect('reg_items', 'append_only');
-- unprotect all guards of the table.
SELECT integrity.unprotect('reg_items');
SELECT * FROM guard_state('reg_items');
UPDATE reg_items SET a = 7, rev = 0;
SELECT * FROM reg_items ORDER BY id;
-- Nothing registered any more: NOTICE.
SELECT integrity.unprotect('reg_items');
-- A table that never had a guard: NOTICE.
CREATE TABLE reg_plain (id int);
SELECT integrity.unprotect('reg_plain');
SELECT integrity.unprotect('reg_plain', 'versioning');

-- unprotect an append-only partitioned table: the TRUNCATE triggers go
-- from every partition; the cloned row triggers go with the root's.
SELECT integrity.unprotect('reg_parts', 'append_only');
SELECT * FROM pt_triggers('reg_parts');
UPDATE reg_parts SET id = 20 WHERE part = 2;
SELECT * FROM reg_parts ORDER BY part, id;
TRUNCATE reg_parts_2;
SELECT * FROM reg_parts ORDER BY part, id;
SELECT count(*) AS guards_left FROM integrity.guards WHERE table_name::text LIKE 'reg\_parts%';

-- unprotect of the append-only ledger lets the rows change again.
SELECT integrity.unprotect('reg_ledger');
UPDATE reg_ledger SET amount = 31;
SELECT * FROM reg_ledger ORDER BY id;

------------------------------------------------------------------------------
-- Registration is transactional: rolled back, it leaves nothing.
CREATE TABLE reg_rollback (id int PRIMARY KEY, a int, version int);
BEGIN;
SELECT integrity.protect_append_only('reg_rollback');
SELECT integrity.protect_immutable('reg_rollback', ARRAY['a']);
SELECT integrity.enable_versioning('reg_rollback');
SELECT count(*) AS guards_in_transaction FROM integrity.guards WHERE table_name = 'reg_rollback'::regclass;
ROLLBACK;
SELECT * FROM guard_state('reg_rollback');

-- A guard registered on an empty table applies to the rows inserted later.
CREATE TABLE reg_empty (id int PRIMARY KEY, a int);
SELECT integrity.protect_immutable('reg_empty', ARRAY['a']);
INSERT INTO reg_empty VALUES (1, 1);
UPDATE reg_empty SET a = 2;
SELECT * FROM reg_empty ORDER BY id;

\ir common/teardown.sql
