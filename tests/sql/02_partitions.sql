-- 02_partitions: guards on partitioned tables cover existing partitions,
-- partitions created or attached after registration, every level of a
-- multi-level tree, TRUNCATE of a single partition, and UPDATEs that move a
-- row to another partition.
\ir common/setup.sql
\set VERBOSITY default

------------------------------------------------------------------------------
-- Append-only partitioned ledger.
CREATE TABLE pledger (
    id     int,
    region text,
    amount numeric NOT NULL,
    PRIMARY KEY (region, id)
) PARTITION BY LIST (region);
CREATE TABLE pledger_eu PARTITION OF pledger FOR VALUES IN ('eu');
CREATE TABLE pledger_us PARTITION OF pledger FOR VALUES IN ('us');
INSERT INTO pledger VALUES (1, 'eu', 10), (2, 'us', 20);

SELECT integrity.protect_append_only('pledger');
-- Row triggers on the root are cloned onto each partition; the TRUNCATE
-- trigger is installed on each member; all ENABLE ALWAYS.
SELECT * FROM pt_triggers('pledger');
-- One registry row, for the root only.
SELECT table_name, guard, options FROM integrity.guards
 WHERE table_name::text LIKE 'pledger%' ORDER BY table_name::text, guard;

-- Existing partitions: through the root and directly.
UPDATE pledger SET amount = 0 WHERE id = 1;
DELETE FROM pledger WHERE id = 2;
UPDATE pledger_eu SET amount = 0;
DELETE FROM pledger_us;
-- An UPDATE that would move a row to another partition is refused too.
UPDATE pledger SET region = 'us' WHERE id = 1;
-- TRUNCATE of the root and of one partition.  The HINT on a partition
-- names the table whose guard is registered (re-registering the partition
-- itself could not allow it).
TRUNCATE pledger;
SELECT sqlstate, table_name, constraint_name,
       hint LIKE '%protect_append_only(''public.pledger'', allow_truncate => true)%' AS hint_names_guarded_table
  FROM expect_error($$TRUNCATE pledger_us$$);
SELECT sqlstate, table_name, constraint_name FROM expect_error($$TRUNCATE pledger_eu$$);
SELECT tableoid::regclass AS partition, * FROM pledger ORDER BY region, id;

-- A partition created after registration is covered: the row trigger is
-- cloned and the event trigger adds the TRUNCATE trigger, in mode ALWAYS.
CREATE TABLE pledger_apac PARTITION OF pledger FOR VALUES IN ('apac');
SELECT * FROM pt_triggers('pledger_apac');
INSERT INTO pledger VALUES (3, 'apac', 30);
UPDATE pledger SET amount = 0 WHERE id = 3;
DELETE FROM pledger_apac;
SELECT sqlstate, table_name, constraint_name FROM expect_error($$TRUNCATE pledger_apac$$);

-- A table attached as a partition after registration is covered too; its
-- rows, which were freely changeable before, are now protected.
CREATE TABLE pledger_latam (id int, region text, amount numeric NOT NULL, PRIMARY KEY (region, id));
INSERT INTO pledger_latam VALUES (4, 'latam', 40);
UPDATE pledger_latam SET amount = 41;
SELECT * FROM pt_triggers('pledger_latam');
ALTER TABLE pledger ATTACH PARTITION pledger_latam FOR VALUES IN ('latam');
SELECT * FROM pt_triggers('pledger_latam');
UPDATE pledger_latam SET amount = 0;
DELETE FROM pledger WHERE region = 'latam';
SELECT sqlstate, table_name, constraint_name FROM expect_error($$TRUNCATE pledger_latam$$);

-- Multi-level: a sub-partitioned partition created after registration,
-- with its own leaves, is covered at every level.
CREATE TABLE pledger_mea PARTITION OF pledger FOR VALUES IN ('mea') PARTITION BY RANGE (id);
CREATE TABLE pledger_mea_low PARTITION OF pledger_mea FOR VALUES FROM (0) TO (100);
CREATE TABLE pledger_mea_high PARTITION OF pledger_mea FOR VALUES FROM (100) TO (MAXVALUE);
SELECT * FROM pt_triggers('pledger_mea');
INSERT INTO pledger VALUES (5, 'mea', 50), (105, 'mea', 150);
UPDATE pledger SET amount = 0 WHERE region = 'mea';
UPDATE pledger_mea_high SET amount = 0;
DELETE FROM pledger_mea_low;
SELECT sqlstate, table_name, constraint_name FROM expect_error($$TRUNCATE pledger_mea$$);
SELECT sqlstate, table_name, constraint_name FROM expect_error($$TRUNCATE pledger_mea_high$$);
-- Moving a row between the leaves of the sub-partition is refused.
UPDATE pledger SET id = 150 WHERE region = 'mea' AND id = 5;

-- Multi-level, attached: a partitioned table with a leaf of its own,
-- attached after registration; every member gets the guard.
CREATE TABLE pledger_oc (id int, region text, amount numeric NOT NULL, PRIMARY KEY (region, id))
    PARTITION BY RANGE (id);
CREATE TABLE pledger_oc_all PARTITION OF pledger_oc FOR VALUES FROM (MINVALUE) TO (MAXVALUE);
INSERT INTO pledger_oc VALUES (6, 'oc', 60);
ALTER TABLE pledger ATTACH PARTITION pledger_oc FOR VALUES IN ('oc');
SELECT * FROM pt_triggers('pledger_oc');
DELETE FROM pledger WHERE region = 'oc';
SELECT sqlstate, table_name, constraint_name FROM expect_error($$TRUNCATE pledger_oc_all$$);

-- The whole tree is unchanged.
SELECT tableoid::regclass AS partition, * FROM pledger ORDER BY region, id;

-- Detaching a partition would take its rows out of the guarded table, and
-- dropping one would remove them: both are refused while the guard stands
-- (see 44_history_ddl).
SELECT sqlstate, message FROM expect_error($$ALTER TABLE pledger DETACH PARTITION pledger_latam$$);
SELECT sqlstate, message FROM expect_error($$DROP TABLE pledger_latam$$);
SELECT tgname FROM pg_trigger WHERE tgrelid = 'pledger_latam'::regclass AND tgname = 'integrity_append_only';
SELECT sqlstate FROM expect_error($$UPDATE pledger_latam SET amount = 42$$);
SELECT * FROM pledger_latam ORDER BY id;
-- The rest of the tree is still guarded.
DELETE FROM pledger WHERE region = 'eu';

------------------------------------------------------------------------------
-- Immutable column on a partitioned table: an UPDATE that moves a row to
-- another partition is executed as DELETE + INSERT and fires no AFTER
-- UPDATE trigger; the BEFORE UPDATE twin (integrity_immutable_row_movement)
-- catches it.
CREATE TABLE pieces (
    id     int,
    region text,
    origin uuid,
    note   text,
    PRIMARY KEY (region, id)
) PARTITION BY LIST (region);
CREATE TABLE pieces_eu PARTITION OF pieces FOR VALUES IN ('eu');
CREATE TABLE pieces_us PARTITION OF pieces FOR VALUES IN ('us');
INSERT INTO pieces VALUES (1, 'eu', '00000000-0000-4000-8000-000000000001', 'one'),
                          (2, 'us', '00000000-0000-4000-8000-000000000002', 'two');
SELECT integrity.protect_immutable('pieces', ARRAY['origin']);
SELECT * FROM pt_triggers('pieces');

-- Moving a row without touching the immutable column is allowed.
UPDATE pieces SET region = 'us' WHERE id = 1;
-- Moving it while changing the immutable column is refused.
UPDATE pieces SET region = 'eu', origin = '00000000-0000-4000-8000-0000000000ff' WHERE id = 1;
\x on
SELECT * FROM expect_error(
    $$UPDATE pieces SET region = 'eu', origin = NULL WHERE id = 2$$);
\x off
-- Changing it in place is refused as well.
UPDATE pieces SET origin = '00000000-0000-4000-8000-0000000000ff' WHERE id = 2;
SELECT tableoid::regclass AS partition, * FROM pieces ORDER BY id;

-- A partition created later, and one attached later, get both triggers.
CREATE TABLE pieces_apac PARTITION OF pieces FOR VALUES IN ('apac');
CREATE TABLE pieces_latam (id int, region text, origin uuid, note text, PRIMARY KEY (region, id));
ALTER TABLE pieces ATTACH PARTITION pieces_latam FOR VALUES IN ('latam');
SELECT * FROM pt_triggers('pieces') WHERE relation::text IN ('pieces_apac', 'pieces_latam');
UPDATE pieces SET region = 'apac', origin = '00000000-0000-4000-8000-0000000000ff' WHERE id = 2;
UPDATE pieces SET region = 'apac' WHERE id = 2;
UPDATE pieces SET region = 'latam', origin = '00000000-0000-4000-8000-0000000000ff' WHERE id = 2;
UPDATE pieces SET origin = '00000000-0000-4000-8000-0000000000ff' WHERE id = 2;

-- A BEFORE UPDATE trigger that sorts after the guard and rewrites the
-- immutable column is caught in place.  Known limitation (README): when the
-- UPDATE also moves the row to another partition, PostgreSQL fires no AFTER
-- UPDATE trigger, so a rewrite by a BEFORE trigger that sorts after
-- integrity_immutable_row_movement goes through.
CREATE FUNCTION pieces_rewrite_origin() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.origin := '00000000-0000-4000-8000-0000000000ee';
    RETURN NEW;
END $$;
CREATE TRIGGER zz_pieces_rewrite_origin BEFORE UPDATE ON pieces
    FOR EACH ROW EXECUTE FUNCTION pieces_rewrite_origin();
UPDATE pieces SET note = 'in place' WHERE id = 1;
UPDATE pieces SET region = 'eu' WHERE id = 1;
DROP TRIGGER zz_pieces_rewrite_origin ON pieces;
SELECT tableoid::regclass AS partition, * FROM pieces ORDER BY id;

------------------------------------------------------------------------------
-- Write-once column on a partitioned table: setting it while moving the
-- row is allowed once; changing it while moving is refused.
CREATE TABLE shipments (
    id      int,
    region  text,
    tracking text,
    PRIMARY KEY (region, id)
) PARTITION BY LIST (region);
CREATE TABLE shipments_eu PARTITION OF shipments FOR VALUES IN ('eu');
CREATE TABLE shipments_us PARTITION OF shipments FOR VALUES IN ('us');
INSERT INTO shipments VALUES (1, 'eu', NULL), (2, 'eu', 'TRK-2');
SELECT integrity.protect_write_once('shipments', ARRAY['tracking']);
SELECT * FROM pt_triggers('shipments');
UPDATE shipments SET region = 'us', tracking = 'TRK-1' WHERE id = 1;
UPDATE shipments SET region = 'eu', tracking = 'TRK-1b' WHERE id = 1;
UPDATE shipments SET region = 'us', tracking = NULL WHERE id = 2;
UPDATE shipments SET region = 'us' WHERE id = 2;
SELECT tableoid::regclass AS partition, * FROM shipments ORDER BY id;

------------------------------------------------------------------------------
-- Versioning on a partitioned table: the origin-only triggers are cloned
-- to present and future partitions; a row that moves partition is bumped
-- once.
CREATE TABLE vparts (
    id      int,
    region  text,
    note    text,
    version int NOT NULL DEFAULT 1,
    PRIMARY KEY (region, id)
) PARTITION BY LIST (region);
CREATE TABLE vparts_eu PARTITION OF vparts FOR VALUES IN ('eu');
CREATE TABLE vparts_us PARTITION OF vparts FOR VALUES IN ('us');
INSERT INTO vparts VALUES (1, 'eu', 'one', 1), (2, 'us', 'two', 1);
SELECT integrity.enable_versioning('vparts');
CREATE TABLE vparts_apac PARTITION OF vparts FOR VALUES IN ('apac');
SELECT * FROM pt_triggers('vparts');
UPDATE vparts SET note = 'edited' WHERE id = 1;
UPDATE vparts SET region = 'apac' WHERE id = 1;
UPDATE vparts SET region = 'us', version = 3 WHERE id = 1;
-- A stale version is refused also when the row would move.
UPDATE vparts SET region = 'eu', version = 1 WHERE id = 1;
SELECT tableoid::regclass AS partition, * FROM vparts ORDER BY id;
-- A later BEFORE trigger that rewrites the version is caught in place; when
-- the row also moves partition it is not (the known limitation above).
CREATE FUNCTION vparts_rewrite_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := 100;
    RETURN NEW;
END $$;
CREATE TRIGGER zz_vparts_rewrite_version BEFORE UPDATE ON vparts
    FOR EACH ROW EXECUTE FUNCTION vparts_rewrite_version();
UPDATE vparts SET note = 'in place' WHERE id = 2;
UPDATE vparts SET region = 'eu' WHERE id = 2;
DROP TRIGGER zz_vparts_rewrite_version ON vparts;
SELECT tableoid::regclass AS partition, * FROM vparts ORDER BY id;

-- Registry: one row per guarded root.
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name::text IN ('pledger', 'pieces', 'shipments', 'vparts')
 ORDER BY table_name::text, guard;

\ir common/teardown.sql
