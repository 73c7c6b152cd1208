-- 05_update_plans: an UPDATE that assigns neither the version nor a
-- protected column gets its next version from its own plan
-- (integrity._next_version in its target list) and runs without the
-- versioning and immutable triggers: the same rows, errors and guarantees,
-- without a row lock per trigger call.  Every other UPDATE keeps the
-- triggers: one that assigns the version or a protected column, a table with
-- another BEFORE UPDATE trigger (it could change a column after the guards),
-- an UPDATE in a CTE, partitions, stored generated columns.
\ir common/setup.sql
\set VERBOSITY default

CREATE TABLE pieces (
    id                        int PRIMARY KEY,
    created_by_transaction_id text,
    finished_at               date,
    status                    text NOT NULL,
    version                   int
);
INSERT INTO pieces VALUES (1, 'tx1', NULL, 'IN_STOCK', 1), (2, 'tx2', NULL, 'IN_STOCK', 1),
                          (3, 'tx3', NULL, 'IN_STOCK', NULL);
SELECT integrity.protect_immutable('pieces', ARRAY['created_by_transaction_id']);
SELECT integrity.protect_write_once('pieces', ARRAY['finished_at']);
SELECT integrity.enable_versioning('pieces');

-- The plan computes the version; no guard function is called, every row is
-- bumped once from its own version (the legacy NULL starts at 1).
EXPLAIN (VERBOSE, COSTS OFF) UPDATE pieces SET status = 'SOLD_OUT' WHERE id = 1;
SELECT * FROM integrity_calls($$UPDATE pieces SET status = 'SOLD_OUT'$$);
SELECT id, status, version FROM pieces ORDER BY id;

-- A statement that assigns a protected column runs that guard (and, the
-- version being planned, no bump); a change is refused as before.
SELECT * FROM integrity_calls($$UPDATE pieces SET finished_at = '2026-01-01' WHERE id = 1$$);
SELECT * FROM expect_error($$UPDATE pieces SET created_by_transaction_id = 'forged' WHERE id = 1$$);
SELECT * FROM expect_error($$UPDATE pieces SET finished_at = '2026-02-02' WHERE id = 1$$);
-- One that assigns the version runs the bump, which checks it (strict).
SELECT * FROM expect_error($$UPDATE pieces SET status = 'x', version = 99 WHERE id = 2$$);
UPDATE pieces SET status = 'IN_STOCK', version = version WHERE id = 2;
SELECT id, created_by_transaction_id, finished_at, status, version FROM pieces ORDER BY id;

-- A multiple assignment from a sub-SELECT keeps its hidden entry last.
UPDATE pieces SET (status, finished_at) = (SELECT 'IN_STOCK', NULL::date) WHERE id = 2 RETURNING id, status, version;

-- Only the call the planner writes takes the bump out: the same call by
-- hand assigns the version exactly as the bump would, any other call of
-- _next_version is an explicit version the bump checks (strict).
UPDATE pieces SET version = integrity._next_version(version, 'pieces', 'version') WHERE id = 2 RETURNING id, version;
SELECT * FROM expect_error($$UPDATE pieces SET version = integrity._next_version(999, 'pieces', 'version') WHERE id = 2$$);
SELECT * FROM expect_error($$UPDATE pieces SET version = integrity._next_version(NULL::int, 'pieces', 'version')$$);
SELECT * FROM expect_error($$UPDATE pieces SET version = integrity._next_version(id, 'pieces', 'version') WHERE id = 2$$);
-- Called directly, its table and column may not be NULL.
SELECT * FROM expect_error($$SELECT integrity._next_version(32767::smallint, 'pieces', NULL)$$);
SELECT * FROM expect_error($$SELECT integrity._next_version(1, NULL, 'version')$$);
SELECT integrity._next_version(NULL::bigint, 'pieces', 'version'), integrity._next_version(41, 'pieces', 'version');

-- A version at the top of its type is refused as the bump refuses it.
INSERT INTO pieces VALUES (4, 'tx4', NULL, 'IN_STOCK', 2147483647);
SELECT * FROM expect_error($$UPDATE pieces SET status = 'SOLD_OUT' WHERE id = 4$$);
DELETE FROM pieces WHERE id = 4;

-- Column privileges: a role allowed to UPDATE only status gets its rows
-- bumped, as with the trigger (the version is not the role's write).
CREATE ROLE update_plans_clerk;
GRANT SELECT, UPDATE (status) ON pieces TO update_plans_clerk;
SET ROLE update_plans_clerk;
UPDATE pieces SET status = 'RESERVED' WHERE id = 1 RETURNING id, version;
RESET ROLE;

-- Row-level security sees the bumped version, as it sees a BEFORE trigger's
-- row: a policy that caps the version refuses the UPDATE that crosses it.
ALTER TABLE pieces ENABLE ROW LEVEL SECURITY;
CREATE POLICY all_rows ON pieces FOR SELECT USING (true);
CREATE POLICY cap ON pieces FOR UPDATE USING (true) WITH CHECK (version <= 5);
SET ROLE update_plans_clerk;
UPDATE pieces SET status = 'SOLD_OUT' WHERE id = 1 RETURNING id, version;
SELECT * FROM expect_error($$UPDATE pieces SET status = 'IN_STOCK' WHERE id = 1$$);
RESET ROLE;
ALTER TABLE pieces DISABLE ROW LEVEL SECURITY;

-- A prepared statement follows the guard: lifted, the version stays;
-- registered again, it is bumped again (the plan is made again each time).
PREPARE sell(int) AS UPDATE pieces SET status = 'SOLD_OUT' WHERE id = $1 RETURNING id, version;
EXECUTE sell(2);
SELECT integrity.unprotect('pieces', 'versioning');
EXECUTE sell(2);
SELECT integrity.enable_versioning('pieces');
EXECUTE sell(2);

-- Replica mode: the triggers fire for origin writes only, and the planned
-- version does the same: the row keeps the version it has.
SET session_replication_role = replica;
EXECUTE sell(2);
UPDATE pieces SET status = 'IN_STOCK' WHERE id = 2 RETURNING id, version;
RESET session_replication_role;

-- Another BEFORE UPDATE trigger, even one that fires before the guards,
-- keeps the plan without the version: it sees the row as the UPDATE wrote
-- it (suppress_redundant_updates_trigger skips an UPDATE that changes
-- nothing, before the bump would change the version).
CREATE TRIGGER a_skip_unchanged BEFORE UPDATE ON pieces FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
EXPLAIN (VERBOSE, COSTS OFF) UPDATE pieces SET status = status WHERE id = 1;
UPDATE pieces SET status = status WHERE id = 1 RETURNING id, version;
DROP TRIGGER a_skip_unchanged ON pieces;

-- Another BEFORE UPDATE trigger keeps every guard's trigger: a trigger that
-- sorts after the guards and rewrites a protected column or the version is
-- caught as before, also by a statement prepared before it existed.
CREATE FUNCTION forge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'forge origin' THEN NEW.created_by_transaction_id := 'forged'; END IF;
    IF NEW.status = 'forge version' THEN NEW.version := 1000; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER zz_forge BEFORE UPDATE ON pieces FOR EACH ROW EXECUTE FUNCTION forge();
EXECUTE sell(3);
SELECT * FROM expect_error($$UPDATE pieces SET status = 'forge origin' WHERE id = 3$$);
SELECT * FROM expect_error($$UPDATE pieces SET status = 'forge version' WHERE id = 3$$);
SELECT * FROM integrity_calls($$UPDATE pieces SET status = 'IN_STOCK' WHERE id = 3$$);
DROP TRIGGER zz_forge ON pieces;
SELECT id, created_by_transaction_id, status, version FROM pieces ORDER BY id;

-- An UPDATE in a CTE keeps the triggers, with the same result.
WITH sold AS (UPDATE pieces SET status = 'SOLD_OUT' WHERE id = 3 RETURNING id, version) SELECT * FROM sold;

-- Partitioned tables and stored generated columns keep the triggers.
CREATE TABLE lots (id int, region text, version bigint) PARTITION BY LIST (region);
CREATE TABLE lots_north PARTITION OF lots FOR VALUES IN ('north');
CREATE TABLE lots_south PARTITION OF lots FOR VALUES IN ('south');
ALTER TABLE lots ADD PRIMARY KEY (id, region);
INSERT INTO lots VALUES (1, 'north', 1), (2, 'south', 7);
SELECT integrity.enable_versioning('lots');
UPDATE lots SET region = 'south' WHERE id = 1;
UPDATE lots SET id = id RETURNING tableoid::regclass, id, version;
CREATE TABLE labels (id int PRIMARY KEY, name text, version smallint,
                     label text GENERATED ALWAYS AS (name || ' v' || version) STORED);
INSERT INTO labels (id, name, version) VALUES (1, 'valve', 1);
SELECT integrity.enable_versioning('labels');
EXPLAIN (VERBOSE, COSTS OFF) UPDATE labels SET name = 'valve';
UPDATE labels SET name = 'big valve' RETURNING *;

-- The planned version of a smallint and a bigint column.
CREATE TABLE small (id int PRIMARY KEY, v smallint);
CREATE TABLE big (id int PRIMARY KEY, v bigint);
INSERT INTO small VALUES (1, 32766);
INSERT INTO big VALUES (1, 9223372036854775806);
SELECT integrity.enable_versioning('small', 'v');
SELECT integrity.enable_versioning('big', 'v');
UPDATE small SET id = id RETURNING *;
UPDATE big SET id = id RETURNING *;
SELECT * FROM expect_error($$UPDATE small SET id = id$$);
SELECT * FROM expect_error($$UPDATE big SET id = id$$);

DROP OWNED BY update_plans_clerk;
DROP ROLE update_plans_clerk;
\ir common/teardown.sql
