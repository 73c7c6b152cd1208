-- 47_lifecycle: integrity.track_lifecycle, history and purge_lifecycle_events
-- (issue 10, items 2 and 4).  Every INSERT, UPDATE and DELETE of a tracked
-- table writes one event per row to integrity.lifecycle_events; an UPDATE
-- records only the tracked columns it changed, and nothing when it changed
-- none.  The events table is append-only for everyone.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

-- The events written since the last call, in order.
CREATE TABLE lc_seen (last_id bigint NOT NULL);
INSERT INTO lc_seen VALUES (0);
CREATE FUNCTION lc_new_events()
RETURNS TABLE (table_name text, row_key jsonb, operation text, changes jsonb, actor name)
LANGUAGE plpgsql AS $$
DECLARE
    seen bigint := (SELECT last_id FROM lc_seen);
BEGIN
    RETURN QUERY SELECT e.table_name, e.row_key, e.operation, e.changes, e.actor
                   FROM integrity.lifecycle_events e WHERE e.id > seen ORDER BY e.id;
    UPDATE lc_seen SET last_id = (SELECT coalesce(max(e.id), 0) FROM integrity.lifecycle_events e);
END;
$$;

-- health() of this file's tables and of the events table (other tables in
-- the database would have reports of their own).
CREATE FUNCTION lc_health()
RETURNS TABLE (severity text, table_name regclass, guard text, problem text, remedy text)
LANGUAGE sql AS $$
    SELECT * FROM integrity.health() h
     WHERE h.table_name::text LIKE 'lc\_%' OR h.table_name = 'integrity.lifecycle_events'::regclass
$$;

-- Guide 003's spare pieces, with Prisma-style camelCase columns.
CREATE TABLE lc_pieces (
    id            int PRIMARY KEY,
    "stockId"     int NOT NULL,
    status        text NOT NULL DEFAULT 'IN_STOCK',
    "pieceCount"  numeric NOT NULL,
    note          text,
    updated_at    timestamptz NOT NULL DEFAULT '2026-11-01 00:00+00'
);
INSERT INTO lc_pieces (id, "stockId", "pieceCount") VALUES (1, 10, 1.0), (2, 10, 2), (3, 11, 3);

-- Rows that are there already get no event: registration never scans.
SELECT integrity.track_lifecycle('lc_pieces', exclude => ARRAY['updated_at']);
SELECT guard, columns, options FROM integrity.guards WHERE table_name = 'lc_pieces'::regclass;
SELECT * FROM guard_triggers('lc_pieces');
SELECT count(*) AS events FROM integrity.lifecycle_events;
-- Registering again changes nothing.
SELECT integrity.track_lifecycle('lc_pieces', exclude => ARRAY['updated_at']);
SELECT count(*) AS lifecycle_triggers FROM pg_trigger
 WHERE tgrelid = 'lc_pieces'::regclass AND tgname LIKE 'integrity\_lifecycle\_%';
SELECT * FROM lc_health();

-- INSERT: every tracked column's new value.
INSERT INTO lc_pieces (id, "stockId", "pieceCount", note) VALUES (4, 11, 4, NULL), (5, 12, 5, 'spare');
SELECT * FROM lc_new_events();
-- COPY too.
COPY lc_pieces (id, "stockId", "pieceCount") FROM stdin;
20	16	1
\.
DELETE FROM lc_pieces WHERE id = 20;
SELECT operation, row_key FROM lc_new_events();
-- UPDATE: only the tracked columns that changed, old and new; numeric 1.0 ->
-- 1.00 is a change (it reads back differently).
UPDATE lc_pieces SET status = 'SOLD_OUT', "pieceCount" = 1.00, updated_at = now() WHERE id = 1;
UPDATE lc_pieces SET note = 'cut' WHERE id IN (2, 3);
SELECT * FROM lc_new_events();
-- No event for an UPDATE that changes no tracked column, nor for one that
-- changes only an excluded column, nor for a statement that touches no row.
UPDATE lc_pieces SET status = status;
UPDATE lc_pieces SET updated_at = '2026-11-02 00:00+00';
UPDATE lc_pieces SET status = 'LOST' WHERE id = 99;
DELETE FROM lc_pieces WHERE id = 99;
INSERT INTO lc_pieces SELECT * FROM lc_pieces WHERE false;
SELECT * FROM lc_new_events();
-- DELETE: every tracked column's old value.
DELETE FROM lc_pieces WHERE id = 5;
SELECT * FROM lc_new_events();
-- An UPDATE of the key is recorded under the new key (OLD and NEW rows are
-- paired by position, not by key).
UPDATE lc_pieces SET id = id + 100, status = 'MOVED' WHERE id IN (3, 4);
SELECT * FROM lc_new_events();
-- Events carry the transaction and the time of their statement.
BEGIN;
UPDATE lc_pieces SET note = 'tx' WHERE id = 1;
DELETE FROM lc_pieces WHERE id = 2;
SELECT count(*) AS events, bool_and(e.txid = txid_current()) AS this_txid, bool_and(e.at = now()) AS this_time
  FROM integrity.lifecycle_events e WHERE e.id > (SELECT last_id FROM lc_seen);
COMMIT;
SELECT operation, row_key FROM lc_new_events();

-- Every path that writes rows: ON CONFLICT DO UPDATE (an INSERT and an
-- UPDATE event), a writable CTE, MERGE (PostgreSQL 15 and later; older
-- versions write the same rows with INSERT and UPDATE).
INSERT INTO lc_pieces (id, "stockId", "pieceCount") VALUES (1, 10, 9), (6, 13, 6)
    ON CONFLICT (id) DO UPDATE SET "pieceCount" = EXCLUDED."pieceCount";
SELECT * FROM lc_new_events();
WITH gone AS (DELETE FROM lc_pieces WHERE id = 6 RETURNING *)
INSERT INTO lc_pieces (id, "stockId", "pieceCount", note) SELECT id + 1, "stockId", "pieceCount", 'recut' FROM gone;
SELECT * FROM lc_new_events();
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE $merge$
            MERGE INTO lc_pieces p
            USING (VALUES (7, 'SOLD_OUT'), (8, 'IN_STOCK')) AS s(id, status) ON p.id = s.id
            WHEN MATCHED THEN UPDATE SET status = s.status
            WHEN NOT MATCHED THEN INSERT (id, "stockId", "pieceCount") VALUES (s.id, 14, 8)$merge$;
    ELSE
        UPDATE lc_pieces SET status = 'SOLD_OUT' WHERE id = 7;
        INSERT INTO lc_pieces (id, "stockId", "pieceCount") VALUES (8, 14, 8);
    END IF;
END
$$;
SELECT * FROM lc_new_events();

-- A role that may write the table: its events name it as the actor, yet it
-- can neither read nor write the events table itself.
CREATE ROLE regress_integrity_clerk;
GRANT SELECT, INSERT, UPDATE, DELETE ON lc_pieces TO regress_integrity_clerk;
SET ROLE regress_integrity_clerk;
UPDATE lc_pieces SET status = 'RESERVED' WHERE id = 8;
SELECT sqlstate, message FROM expect_error($$SELECT count(*) FROM integrity.lifecycle_events$$);
SELECT sqlstate, message FROM expect_error($$INSERT INTO integrity.lifecycle_events (table_name, row_key, operation, changes) VALUES ('public.lc_pieces', '{"id": 1}', 'DELETE', '{}')$$);
-- history(): one row's events, in order, for a role that may read the table.
SELECT operation, changes, actor FROM integrity.history('lc_pieces', 8) ORDER BY id;
SELECT operation, changes -> 'id' AS id_change FROM integrity.history('lc_pieces', 104);
-- The id is taken as the key column's type; a jsonb object works too.
SELECT count(*) AS events FROM integrity.history('lc_pieces', 8::bigint);
SELECT count(*) AS events FROM integrity.history('lc_pieces', '{"id": 8}'::jsonb);
SELECT count(*) AS events FROM integrity.history('lc_pieces', 424242);
RESET ROLE;
SELECT * FROM lc_new_events();
CREATE ROLE regress_integrity_other;
SET ROLE regress_integrity_other;
SELECT * FROM expect_error($$SELECT * FROM integrity.history('lc_pieces', 8)$$);
RESET ROLE;
SELECT sqlstate, message FROM expect_error($$SELECT * FROM integrity.history('lc_pieces', 'x'::text)$$);
SELECT sqlstate, message FROM expect_error($$SELECT * FROM integrity.history(NULL, 8)$$);
SELECT sqlstate, message FROM expect_error($$SELECT * FROM integrity.history('lc_pieces', '[8]'::jsonb)$$);

-- The events table is append-only, for a superuser too, and under
-- session_replication_role = replica.
SELECT * FROM expect_error($$UPDATE integrity.lifecycle_events SET changes = '{}' WHERE id = 1$$);
SELECT * FROM expect_error($$DELETE FROM integrity.lifecycle_events WHERE id = 1$$);
SELECT * FROM expect_error($$TRUNCATE integrity.lifecycle_events$$);
SET session_replication_role = replica;
SELECT sqlstate, message FROM expect_error($$DELETE FROM integrity.lifecycle_events$$);
SELECT sqlstate, message FROM expect_error($$TRUNCATE integrity.lifecycle_events$$);
-- Rows applied by logical replication are recorded on their origin only.
UPDATE lc_pieces SET status = 'REPLICATED' WHERE id = 8;
RESET session_replication_role;
SELECT * FROM lc_new_events();
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'integrity.lifecycle_events'::regclass ORDER BY tgname;

-- Choosing columns: re-registering with columns tracks only those.
SELECT integrity.track_lifecycle('lc_pieces', columns => ARRAY['status', 'stockId']);
SELECT guard, columns, options FROM integrity.guards WHERE table_name = 'lc_pieces'::regclass;
UPDATE lc_pieces SET note = 'untracked' WHERE id = 1;
UPDATE lc_pieces SET status = 'BACK', note = 'half' WHERE id = 1;
INSERT INTO lc_pieces (id, "stockId", "pieceCount") VALUES (9, 15, 9);
SELECT * FROM lc_new_events();
-- A tracked or excluded column cannot be renamed or dropped.
SELECT sqlstate, message FROM expect_error($$ALTER TABLE lc_pieces RENAME COLUMN "stockId" TO stock_id$$);
SELECT integrity.track_lifecycle('lc_pieces', exclude => ARRAY['note']);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE lc_pieces DROP COLUMN note$$);
-- A new column is tracked when only some are excluded.
ALTER TABLE lc_pieces ADD COLUMN "binCode" text;
UPDATE lc_pieces SET "binCode" = 'A1' WHERE id = 9;
SELECT * FROM lc_new_events();

-- Nothing a role can define runs while the events are written (as the
-- events table's owner): not a cast to json of a type that is not built in
-- (its values are recorded as text), not an "=" operator of its own found
-- first on the search path.
CREATE TYPE lc_grade AS ENUM ('A', 'B');
CREATE FUNCTION lc_grade_json(lc_grade) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'cast to json runs as %', current_user;
    RETURN '"cast"'::json;
END;
$$;
CREATE CAST (lc_grade AS json) WITH FUNCTION lc_grade_json(lc_grade);
CREATE FUNCTION lc_grade_eq(lc_grade, lc_grade) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE '= runs as %', current_user;
    RETURN $1::text = $2::text;
END;
$$;
CREATE OPERATOR public.= (LEFTARG = lc_grade, RIGHTARG = lc_grade, FUNCTION = lc_grade_eq);
CREATE TABLE lc_graded (id int PRIMARY KEY, grade lc_grade, grades lc_grade[]);
SELECT integrity.track_lifecycle('lc_graded');
SET search_path = public, pg_catalog;
INSERT INTO lc_graded VALUES (1, 'A', '{A,B}'), (2, NULL, NULL);
UPDATE lc_graded SET grade = 'B', grades = '{B}' WHERE id = 1;
UPDATE lc_graded SET grade = grade;
RESET search_path;
SELECT * FROM lc_new_events();
SELECT integrity.unprotect('lc_graded');
DROP TABLE lc_graded;
DROP OPERATOR public.= (lc_grade, lc_grade);
DROP CAST (lc_grade AS json);
DROP FUNCTION lc_grade_json(lc_grade), lc_grade_eq(lc_grade, lc_grade);
DROP TYPE lc_grade;

-- Columns named like the statement's own aliases (t, r, o, n, old, new, pair,
-- row_key) are recorded like any other column.
CREATE TABLE lc_aliases (id integer PRIMARY KEY, t integer, r text, o integer, n integer,
                         old text, new text, pair integer, row_key text);
SELECT integrity.track_lifecycle('lc_aliases');
INSERT INTO lc_aliases VALUES (1, 1, 'r', 2, 3, 'old', 'new', 4, 'key');
UPDATE lc_aliases SET t = 2, old = 'older', pair = 5;
DELETE FROM lc_aliases;
SELECT * FROM lc_new_events();
SELECT integrity.unprotect('lc_aliases');
DROP TABLE lc_aliases;

-- Registration errors.
CREATE VIEW lc_pieces_view AS SELECT * FROM lc_pieces;
CREATE TABLE lc_keyless (a int, b text);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.track_lifecycle('lc_pieces_view')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.track_lifecycle('lc_pieces', ARRAY['nope'])$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.track_lifecycle('lc_pieces', exclude => ARRAY['nope'])$$);
SELECT sqlstate, message, hint FROM expect_error($$SELECT integrity.track_lifecycle('lc_pieces', ARRAY['status'], ARRAY['note'])$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.track_lifecycle(NULL)$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.track_lifecycle('integrity.lifecycle_events')$$);
SELECT sqlstate, message, hint FROM expect_error($$SELECT integrity.track_lifecycle('lc_keyless')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.track_lifecycle('lc_keyless', exclude => ARRAY['a', 'b'])$$);
SET ROLE regress_integrity_other;
SELECT sqlstate, message FROM expect_error($$SELECT integrity.track_lifecycle('lc_pieces')$$);
RESET ROLE;
-- Nothing was half-installed.
SELECT * FROM guard_triggers('lc_keyless');
SELECT guard, columns, options FROM integrity.guards WHERE table_name = 'lc_pieces'::regclass;

-- The triggers cannot be walked around: disabling or dropping one is
-- refused, and with the event triggers off, health() reports it.
SELECT sqlstate, message FROM expect_error($$ALTER TABLE lc_pieces DISABLE TRIGGER integrity_lifecycle_update$$);
SELECT sqlstate, message FROM expect_error($$DROP TRIGGER integrity_lifecycle_delete ON lc_pieces$$);
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
ALTER TABLE lc_pieces DISABLE TRIGGER integrity_lifecycle_update;
ALTER TABLE integrity.lifecycle_events DISABLE TRIGGER lifecycle_events_append_only;
ALTER TABLE integrity.lifecycle_events ENABLE TRIGGER lifecycle_events_no_truncate;
ALTER EVENT TRIGGER integrity_ddl_command_end ENABLE ALWAYS;
SELECT * FROM lc_health();
DO $$
DECLARE
    fix record;
BEGIN
    FOR fix IN SELECT remedy FROM lc_health() LOOP
        EXECUTE fix.remedy;
    END LOOP;
END
$$;
SELECT * FROM lc_health();

-- Partitioned tables: events name the registered table, whether a statement
-- targets it or a partition; partitions created or attached later are covered.
CREATE TABLE lc_parts (id int, region text, qty int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE lc_parts_eu PARTITION OF lc_parts FOR VALUES IN ('eu');
CREATE TABLE lc_parts_us PARTITION OF lc_parts FOR VALUES IN ('us');
INSERT INTO lc_parts VALUES (1, 'eu', 1), (2, 'us', 2);
SELECT integrity.track_lifecycle('lc_parts');
SELECT * FROM pt_triggers('lc_parts');
UPDATE lc_parts SET qty = qty + 10;
UPDATE lc_parts_eu SET qty = 0;
DELETE FROM lc_parts_us;
-- A row moved to another partition is one UPDATE.
UPDATE lc_parts SET region = 'us' WHERE id = 1;
SELECT * FROM lc_new_events();
CREATE TABLE lc_parts_asia PARTITION OF lc_parts FOR VALUES IN ('asia');
CREATE TABLE lc_parts_africa (id int NOT NULL, region text NOT NULL, qty int);
ALTER TABLE lc_parts ATTACH PARTITION lc_parts_africa FOR VALUES IN ('africa');
SELECT * FROM pt_triggers('lc_parts');
INSERT INTO lc_parts_asia VALUES (3, 'asia', 3);
INSERT INTO lc_parts_africa VALUES (4, 'africa', 4);
SELECT * FROM lc_new_events();
-- A composite key: history() takes it as a jsonb object.
SELECT operation, changes FROM integrity.history('lc_parts', '{"id": 1, "region": "us"}'::jsonb);
SELECT sqlstate, message, hint FROM expect_error($$SELECT * FROM integrity.history('lc_parts', 1)$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.track_lifecycle('lc_parts_eu')$$);
SELECT * FROM lc_health();

-- purge_lifecycle_events: the owner of the events table removes old events.
SELECT sqlstate, message FROM expect_error($$SELECT integrity.purge_lifecycle_events(NULL)$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.purge_lifecycle_events('-1 day')$$);
SET ROLE regress_integrity_clerk;
SELECT sqlstate, message FROM expect_error($$SELECT integrity.purge_lifecycle_events('0 s')$$);
RESET ROLE;
SELECT integrity.purge_lifecycle_events('1 day') AS purged;
SELECT integrity.purge_lifecycle_events('0 s') > 0 AS purged;
SELECT count(*) AS events FROM integrity.lifecycle_events;

-- unprotect removes the triggers; writes are no longer recorded.
SELECT integrity.unprotect('lc_pieces', 'lifecycle');
SELECT integrity.unprotect('lc_parts');
SELECT * FROM pt_triggers('lc_parts');
SELECT * FROM guard_triggers('lc_pieces');
UPDATE lc_pieces SET status = 'UNTRACKED';
SELECT count(*) AS events FROM lc_new_events();
SELECT * FROM lc_health();

DROP TABLE lc_pieces, lc_parts, lc_keyless, lc_seen CASCADE;
DROP FUNCTION lc_new_events(), lc_health();
DROP ROLE regress_integrity_clerk, regress_integrity_other;

\ir common/teardown.sql
