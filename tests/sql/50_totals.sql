-- 50_totals: maintain_total keeps guide 003's inventory_stock.quantity equal
-- to what its pieces add up to (sprinkler spare pieces by piece_count, HDPE
-- cut pieces by count), through every DML path, and refuses direct writes.
-- The races are in tests/specs/totals_*.spec and pgrx-tests/totals_stress.sh.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE SCHEMA tarko;
SET search_path = tarko, public;

CREATE TABLE inventory_stock (
    id         bigint  PRIMARY KEY,
    stock_type text    NOT NULL,
    quantity   integer NOT NULL DEFAULT 0 CONSTRAINT quantity_not_negative CHECK (quantity >= 0),
    updated_at timestamptz
);
CREATE TABLE sprinkler_spare_pieces (
    id          bigint  PRIMARY KEY,
    stock_id    bigint  REFERENCES inventory_stock ON DELETE CASCADE,
    piece_count integer NOT NULL,
    status      text    NOT NULL DEFAULT 'IN_STOCK',
    deleted_at  timestamptz
);
CREATE INDEX ON sprinkler_spare_pieces (stock_id);
CREATE TABLE hdpe_cut_pieces (
    id            bigint  PRIMARY KEY,
    stock_id      bigint  REFERENCES inventory_stock ON DELETE CASCADE,
    length_meters numeric(10, 2) NOT NULL,
    status        text    NOT NULL DEFAULT 'IN_STOCK',
    deleted_at    timestamptz
);

-- Registration errors, each with its SQLSTATE.
SELECT n, (SELECT e.sqlstate || ': ' || e.message FROM expect_error(call) e) AS error
  FROM (VALUES
    (1, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'nope', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'piece_count')$$),
    (2, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'stock_type', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'piece_count')$$),
    (3, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['nope'], 'piece_count')$$),
    (4, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['status'], 'piece_count')$$),
    (5, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id', 'id'], 'piece_count')$$),
    (6, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'status')$$),
    (7, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.hdpe_cut_pieces', ARRAY['stock_id'], 'length_meters')$$),
    (8, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'piece_count', 'nope = 1')$$),
    (9, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'piece_count', 'piece_count + 1')$$),
    (10, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'piece_count', 'deleted_at < now()')$$),
    (11, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'piece_count', 'true) EXECUTE FUNCTION pg_sleep(1); --')$$),
    (12, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'piece_count', 'status IN (SELECT ''x'')')$$),
    (13, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'piece_count', 'count(*) > 0')$$),
    (14, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.inventory_stock', ARRAY['id'], 'quantity')$$),
    (15, $$SELECT integrity.maintain_total('tarko.inventory_stock', 'id', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'piece_count')$$),
    (16, $$SELECT integrity.maintain_total(NULL, 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'])$$)
  ) AS c(n, call)
 ORDER BY n;
-- Nothing of a refused registration is left behind.
SELECT count(*) AS registered FROM integrity.guards WHERE guard = 'total';
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'integrity_total%';

-- The guide's rule: spare pieces in stock count with their piece_count; cut
-- pieces in stock count one each.  Registering twice changes nothing.
SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'],
                                'piece_count', $$status = 'IN_STOCK' AND deleted_at IS NULL$$);
SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'],
                                'piece_count', $$status = 'IN_STOCK' AND deleted_at IS NULL$$);
SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.hdpe_cut_pieces', ARRAY['stock_id'],
                                filter => $$status = 'IN_STOCK' AND deleted_at IS NULL$$);
SELECT table_name, guard, columns, jsonb_pretty(options - 'name') AS options FROM integrity.guards WHERE guard = 'total';
SELECT tgrelid::regclass, count(*) FROM pg_trigger WHERE tgname LIKE 'integrity_total%' GROUP BY 1 ORDER BY 1;

CREATE VIEW stock AS SELECT id, stock_type, quantity FROM inventory_stock ORDER BY id;

-- A new stock row starts at zero, whatever the INSERT says.
INSERT INTO inventory_stock (id, stock_type, quantity) VALUES (1, 'SPARE', 99), (2, 'SPARE', 0), (3, 'CUT_ROLL', 0);
SELECT * FROM stock;

-- INSERT, multi-row INSERT … SELECT, COPY.
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (1, 1, 10);
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) SELECT g, 1 + g % 2, g FROM generate_series(2, 11) g;
COPY hdpe_cut_pieces (id, stock_id, length_meters, status) FROM stdin;
1	3	12.5	IN_STOCK
2	3	7.25	IN_STOCK
3	3	3.00	SOLD_OUT
\.
SELECT * FROM stock;

-- COMBINE_SPARES: many pieces to SOLD_OUT in one statement, then its revert.
UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT' WHERE id IN (2, 4, 6, 8);
SELECT * FROM stock;
UPDATE sprinkler_spare_pieces SET status = 'IN_STOCK' WHERE id IN (2, 4, 6, 8);
SELECT * FROM stock;

-- A value change, a move to another parent, a soft delete, a restore.
UPDATE sprinkler_spare_pieces SET piece_count = 20 WHERE id = 1;
UPDATE sprinkler_spare_pieces SET stock_id = 2 WHERE id = 1;
UPDATE sprinkler_spare_pieces SET deleted_at = now() WHERE id = 3;
SELECT * FROM stock;
UPDATE sprinkler_spare_pieces SET deleted_at = NULL WHERE id = 3;
UPDATE hdpe_cut_pieces SET status = 'IN_STOCK' WHERE id = 3;
SELECT * FROM stock;

-- ON CONFLICT, MERGE, writable CTEs, DELETE.
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (1, 2, 5), (12, 1, 4)
    ON CONFLICT (id) DO UPDATE SET piece_count = EXCLUDED.piece_count;
MERGE INTO sprinkler_spare_pieces p
USING (VALUES (2, 1), (5, 0), (13, 6)) AS v(id, n) ON p.id = v.id
 WHEN MATCHED AND v.n = 0 THEN DELETE
 WHEN MATCHED THEN UPDATE SET piece_count = p.piece_count + v.n
 WHEN NOT MATCHED THEN INSERT (id, stock_id, piece_count) VALUES (v.id, 2, v.n);
WITH moved AS (UPDATE sprinkler_spare_pieces SET stock_id = 1 WHERE id IN (6, 7) RETURNING id),
     gone AS (DELETE FROM hdpe_cut_pieces WHERE id = 1 RETURNING id)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM gone) AS gone;
DELETE FROM sprinkler_spare_pieces WHERE id = 8;
SELECT * FROM stock;
-- Every total equals its pieces: violations() has nothing to say.
SELECT * FROM integrity.violations('tarko.inventory_stock');

-- A failed statement, or a rolled-back savepoint, leaves the totals alone.
BEGIN;
SAVEPOINT s;
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (100, 1, 1000);
ROLLBACK TO SAVEPOINT s;
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (101, 1, 1), (1, 1, 1);
COMMIT;
SELECT * FROM stock;
-- The target's own CHECK constraint still decides: a total below zero is
-- refused with its constraint, and nothing changes.
SELECT sqlstate, message, constraint_name
  FROM expect_error('UPDATE tarko.sprinkler_spare_pieces SET piece_count = -1000 WHERE id = 12');
SELECT * FROM stock;

-- A BEFORE UPDATE trigger of the stock that skips the total's update makes
-- the piece's statement fail (27000) rather than leave the total behind.
CREATE FUNCTION skip_stock_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER skip_stock_update BEFORE UPDATE ON inventory_stock FOR EACH ROW EXECUTE FUNCTION skip_stock_update();
SELECT sqlstate, message, detail FROM expect_error('INSERT INTO tarko.sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (300, 2, 1)');
DROP TRIGGER skip_stock_update ON inventory_stock;
DROP FUNCTION skip_stock_update();

-- The total belongs to the database: direct writes are refused (23001) with
-- every field; writes of other columns and writes of the same value pass.
SELECT * FROM expect_error('UPDATE tarko.inventory_stock SET quantity = 5 WHERE id = 1');
SELECT sqlstate, message, detail, column_name, constraint_name
  FROM expect_error('UPDATE tarko.inventory_stock SET id = 10 WHERE id = 2');
UPDATE inventory_stock SET quantity = quantity, updated_at = now() WHERE id = 1;
INSERT INTO inventory_stock (id, stock_type) VALUES (2, 'SPARE')
    ON CONFLICT (id) DO UPDATE SET stock_type = 'SPARE';
SELECT * FROM stock;

-- A stock row inserted after its pieces starts at their total.
ALTER TABLE hdpe_cut_pieces DROP CONSTRAINT hdpe_cut_pieces_stock_id_fkey;
INSERT INTO hdpe_cut_pieces (id, stock_id, length_meters) VALUES (10, 4, 1), (11, 4, 2), (12, 4, 3);
INSERT INTO inventory_stock (id, stock_type, quantity) VALUES (4, 'CUT_ROLL', 0);
SELECT * FROM stock WHERE id = 4;

-- Bypass: a superuser with session_replication_role = replica skips the
-- (origin) triggers, as logical replication does.  violations() names the
-- drift, with the stored and the actual total; recompute_totals() fixes it.
SET session_replication_role = replica;
UPDATE inventory_stock SET quantity = 0 WHERE id = 1;
DELETE FROM hdpe_cut_pieces WHERE id = 10;
RESET session_replication_role;
SELECT * FROM integrity.violations('tarko.inventory_stock');
SELECT integrity.recompute_totals('tarko.inventory_stock') AS corrected;
SELECT integrity.recompute_totals('tarko.inventory_stock') AS corrected_again;
SELECT * FROM integrity.violations('tarko.inventory_stock');
SELECT * FROM stock;

-- Parents deleted with their pieces (ON DELETE CASCADE): the pieces' deltas
-- find no parent left, and the other totals stay exact.
DELETE FROM inventory_stock WHERE id = 1;
SELECT count(*) AS pieces_left FROM sprinkler_spare_pieces WHERE stock_id = 1;
SELECT * FROM integrity.violations('tarko.inventory_stock');

-- DDL that would strand a total is refused; the guard's triggers stay.
SELECT sqlstate, message FROM expect_error('ALTER TABLE tarko.sprinkler_spare_pieces RENAME COLUMN piece_count TO pieces');
SELECT sqlstate, message FROM expect_error('ALTER TABLE tarko.sprinkler_spare_pieces DROP COLUMN status');
SELECT sqlstate, message FROM expect_error('ALTER TABLE tarko.inventory_stock RENAME COLUMN quantity TO qty');
SELECT sqlstate, message FROM expect_error('ALTER TABLE tarko.sprinkler_spare_pieces RENAME TO spare_pieces');
SELECT sqlstate, message FROM expect_error('ALTER TABLE tarko.inventory_stock RENAME TO stock_rows');
SELECT sqlstate, message FROM expect_error('ALTER TABLE tarko.inventory_stock SET SCHEMA public');
SELECT sqlstate, message FROM expect_error('DROP TABLE tarko.hdpe_cut_pieces');
SELECT sqlstate, message FROM expect_error('TRUNCATE tarko.sprinkler_spare_pieces');
SELECT sqlstate, message FROM expect_error('ALTER TABLE tarko.inventory_stock DISABLE TRIGGER integrity_total');
SELECT sqlstate, message FROM expect_error(format('DROP TRIGGER %I ON tarko.sprinkler_spare_pieces',
    (SELECT tgname FROM pg_trigger WHERE tgrelid = 'tarko.sprinkler_spare_pieces'::regclass AND tgname LIKE '%\_apply')));
SELECT sqlstate, message FROM expect_error(format('ALTER TABLE tarko.sprinkler_spare_pieces DISABLE TRIGGER %I',
    (SELECT tgname FROM pg_trigger WHERE tgrelid = 'tarko.sprinkler_spare_pieces'::regclass AND tgname ~ '^integrity_total_[0-9a-f]+$')));
-- Adding things keeps working.
ALTER TABLE sprinkler_spare_pieces ADD COLUMN note text;
CREATE INDEX ON hdpe_cut_pieces (stock_id);
SELECT * FROM integrity.health();

-- A superuser who disables the event triggers can drop a total's trigger on
-- a source: health() reports it, and its remedy puts it back.
ALTER EVENT TRIGGER integrity_sql_drop DISABLE;
SELECT format('DROP TRIGGER %I ON tarko.hdpe_cut_pieces', tgname) AS drop_apply
  FROM pg_trigger WHERE tgrelid = 'tarko.hdpe_cut_pieces'::regclass AND tgname LIKE '%\_apply' \gset
:drop_apply;
ALTER EVENT TRIGGER integrity_sql_drop ENABLE ALWAYS;
SELECT severity, table_name, guard, regexp_replace(problem, 'integrity_total_[0-9a-f]+', 'integrity_total_…') AS problem
  FROM integrity.health();
SELECT remedy FROM integrity.health() WHERE guard = 'total' \gset
:remedy
SELECT * FROM integrity.health();

-- Only the owner corrects totals or registers them.
CREATE ROLE totals_clerk;
GRANT USAGE ON SCHEMA tarko TO totals_clerk;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tarko TO totals_clerk;
SET ROLE totals_clerk;
SELECT sqlstate, message FROM expect_error($$SELECT integrity.recompute_totals('tarko.inventory_stock')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity._execute_total_writes('tarko.inventory_stock', 'UPDATE tarko.inventory_stock SET quantity = 0')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.hdpe_cut_pieces', ARRAY['stock_id'])$$);
-- … but the clerk's piece writes keep the totals exact.
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (200, 2, 7);
SELECT sqlstate FROM expect_error('UPDATE tarko.inventory_stock SET quantity = 1 WHERE id = 2');
RESET ROLE;
SELECT * FROM stock;

-- The registration health() and the manifest would repair with.
SELECT integrity._registration_sql(table_name, guard, columns, options) FROM integrity.guards WHERE guard = 'total';

-- unprotect lifts the totals: their triggers go, direct writes pass again.
SELECT integrity.unprotect('tarko.inventory_stock', 'total');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'integrity_total%';
UPDATE inventory_stock SET quantity = 0 WHERE id = 1;
SELECT sqlstate FROM expect_error($$SELECT integrity.recompute_totals('tarko.inventory_stock')$$);

-- A dropped target takes its sources' triggers with it.
SELECT integrity.maintain_total('tarko.inventory_stock', 'quantity', 'tarko.sprinkler_spare_pieces', ARRAY['stock_id'], 'piece_count');
DROP TABLE inventory_stock CASCADE;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'integrity_total%';
SELECT count(*) AS registered FROM integrity.guards WHERE guard = 'total';

RESET search_path;
DROP SCHEMA tarko CASCADE;
DROP OWNED BY totals_clerk;
DROP ROLE totals_clerk;

\ir common/teardown.sql
