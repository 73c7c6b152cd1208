-- 53_totals_recheck: a maintained total changes only as the extension writes
-- it, by the amount it applies to that row: a BEFORE UPDATE trigger of the
-- target that sorts before the guard's, or after it (then the recheck,
-- integrity_total_recheck, sees the final row), cannot change it, neither on a
-- user's UPDATE nor on the extension's own write; a trigger fired by the
-- extension's write cannot write another row's total; recompute_totals
-- writes only actual totals.  On guide 003's tables.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE inventory_stock (
    id         bigint  PRIMARY KEY,
    stock_type text    NOT NULL,
    quantity   integer NOT NULL DEFAULT 0,
    updated_at timestamptz
);
CREATE TABLE sprinkler_spare_pieces (
    id          bigint  PRIMARY KEY,
    stock_id    bigint  REFERENCES inventory_stock ON DELETE CASCADE,
    piece_count integer NOT NULL,
    status      text    NOT NULL DEFAULT 'IN_STOCK'
);
SELECT integrity.maintain_total('inventory_stock', 'quantity', 'sprinkler_spare_pieces', ARRAY['stock_id'],
                                'piece_count', $$status = 'IN_STOCK'$$);
INSERT INTO inventory_stock (id, stock_type) VALUES (1, 'SPARE'), (2, 'SPARE'), (3, 'SPARE');
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (10, 1, 5), (11, 2, 7);
CREATE VIEW stock AS
    SELECT s.id, s.quantity,
           (SELECT coalesce(sum(p.piece_count), 0) FROM sprinkler_spare_pieces p
             WHERE p.stock_id = s.id AND p.status = 'IN_STOCK') AS actual
      FROM inventory_stock s ORDER BY s.id;
CREATE FUNCTION guard_triggers() RETURNS SETOF text LANGUAGE sql AS $$
    SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'inventory_stock'::regclass AND tgname LIKE 'integrity%'
     ORDER BY 1
$$;
SELECT * FROM guard_triggers();

CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.quantity := NEW.quantity + 1;
    RETURN NEW;
END $$;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := '2026-01-01';
    RETURN NEW;
END $$;

-- A trigger in the style of the guide's set_updated_at sorts after the
-- guard's ('s' > 'i') and leaves the total alone: it adds the recheck, and
-- the totals keep working.
CREATE TRIGGER set_updated_at BEFORE UPDATE ON inventory_stock FOR EACH ROW EXECUTE FUNCTION touch();
SELECT * FROM guard_triggers();
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (12, 1, 3);
UPDATE sprinkler_spare_pieces SET stock_id = 2 WHERE id = 10;
UPDATE inventory_stock SET stock_type = 'SPRINKLER' WHERE id = 3;
SELECT * FROM stock;
DROP TRIGGER set_updated_at ON inventory_stock;
SELECT * FROM guard_triggers();

-- A later trigger that changes the total: caught by the recheck on a user's
-- UPDATE that leaves the total alone ...
CREATE TRIGGER zz_bump BEFORE UPDATE ON inventory_stock FOR EACH ROW EXECUTE FUNCTION bump();
SELECT * FROM guard_triggers();
\x on
SELECT * FROM expect_error($$UPDATE inventory_stock SET stock_type = 'HDPE' WHERE id = 3$$);
-- ... and on the extension's own write (a piece inserted, moved).
SELECT * FROM expect_error($$INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (13, 1, 4)$$);
SELECT * FROM expect_error($$UPDATE sprinkler_spare_pieces SET stock_id = 1 WHERE id = 11$$);
\x off
SELECT * FROM stock;
-- The recheck is the guard's while it is needed.
DROP TRIGGER integrity_total_recheck ON inventory_stock;
ALTER TABLE inventory_stock DISABLE TRIGGER integrity_total_recheck;
-- Renamed to sort before the guard's, the trigger needs no recheck (the
-- guard then sees what it wrote); renamed back, it does again.
ALTER TRIGGER zz_bump ON inventory_stock RENAME TO a_bump;
SELECT * FROM guard_triggers();
-- An earlier trigger is caught by the guard itself, on a user's UPDATE and
-- on the extension's write.
\x on
SELECT * FROM expect_error($$UPDATE inventory_stock SET stock_type = 'HDPE' WHERE id = 3$$);
SELECT * FROM expect_error($$INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (13, 1, 4)$$);
\x off
ALTER TRIGGER a_bump ON inventory_stock RENAME TO zz_bump;
SELECT * FROM guard_triggers();
DROP TRIGGER zz_bump ON inventory_stock;
SELECT * FROM guard_triggers();
SELECT * FROM stock;

-- A trigger fired by the extension's write of one row's total cannot write
-- another row's total, by any amount.
CREATE FUNCTION mirror() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE inventory_stock SET quantity = quantity + (NEW.quantity - OLD.quantity) WHERE id = 3;
    RETURN NULL;
END $$;
CREATE TRIGGER mirror AFTER UPDATE ON inventory_stock FOR EACH ROW WHEN (NEW.id <> 3) EXECUTE FUNCTION mirror();
SELECT sqlstate, message, detail FROM expect_error($$INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (13, 1, 4)$$);
-- Nor the same row's again.
CREATE OR REPLACE FUNCTION mirror() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE inventory_stock SET quantity = quantity + (NEW.quantity - OLD.quantity) WHERE id = NEW.id;
    RETURN NULL;
END $$;
SELECT sqlstate, message, detail FROM expect_error($$INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (13, 1, 4)$$);
-- Both again on the SPI path (a statement-level UPDATE trigger keeps the
-- direct update off), where the trigger fires while the write is sanctioned.
CREATE OR REPLACE FUNCTION statement_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER sql_path AFTER UPDATE ON inventory_stock FOR EACH STATEMENT EXECUTE FUNCTION statement_noop();
SELECT sqlstate, message, detail FROM expect_error($$INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (13, 1, 4)$$);
CREATE OR REPLACE FUNCTION mirror() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE inventory_stock SET quantity = quantity + (NEW.quantity - OLD.quantity) WHERE id = 3;
    RETURN NULL;
END $$;
SELECT sqlstate, message, detail FROM expect_error($$INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (13, 1, 4)$$);
DROP TRIGGER mirror ON inventory_stock;
-- Without such a trigger the SPI path writes totals as before.
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (14, 3, 2);
DELETE FROM sprinkler_spare_pieces WHERE id = 14;
DROP TRIGGER sql_path ON inventory_stock;
SELECT * FROM stock;

-- recompute_totals writes the actual total, even with an earlier trigger
-- that would add to it: refused then.
SET session_replication_role = replica;
UPDATE inventory_stock SET quantity = 100 WHERE id = 1;
RESET session_replication_role;
CREATE TRIGGER a_bump BEFORE UPDATE ON inventory_stock FOR EACH ROW EXECUTE FUNCTION bump();
SELECT sqlstate, message, detail FROM expect_error($$SELECT integrity.recompute_totals('inventory_stock')$$);
DROP TRIGGER a_bump ON inventory_stock;
SELECT integrity.recompute_totals('inventory_stock') AS corrected;
SELECT * FROM stock;

-- With the event triggers switched off (a superuser), a later trigger comes
-- without its recheck: health() reports it and its remedy puts it in place.
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
CREATE TRIGGER zz_bump BEFORE UPDATE ON inventory_stock FOR EACH ROW EXECUTE FUNCTION bump();
ALTER EVENT TRIGGER integrity_ddl_command_end ENABLE ALWAYS;
SELECT * FROM guard_triggers();
SELECT severity, problem, remedy FROM integrity.health() WHERE table_name = 'inventory_stock'::regclass;
DO $$ BEGIN EXECUTE (SELECT DISTINCT remedy FROM integrity.health() WHERE table_name = 'inventory_stock'::regclass); END $$;
SELECT * FROM guard_triggers();
SELECT * FROM integrity.health() WHERE table_name = 'inventory_stock'::regclass;
SELECT sqlstate FROM expect_error($$UPDATE inventory_stock SET stock_type = 'HDPE' WHERE id = 3$$);
DROP TRIGGER zz_bump ON inventory_stock;
SELECT * FROM guard_triggers();

-- Only the table's owner can add a trigger that needs the recheck: the
-- TRIGGER privilege alone is not enough (42501), and nothing is left behind.
CREATE ROLE stock_trigger_maker;
GRANT TRIGGER ON inventory_stock TO stock_trigger_maker;
GRANT EXECUTE ON FUNCTION bump() TO stock_trigger_maker;
SET ROLE stock_trigger_maker;
SELECT sqlstate, message FROM expect_error($$CREATE TRIGGER zz_bump BEFORE UPDATE ON inventory_stock FOR EACH ROW EXECUTE FUNCTION bump()$$);
RESET ROLE;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'inventory_stock'::regclass AND NOT tgisinternal ORDER BY 1;
REVOKE ALL ON inventory_stock FROM stock_trigger_maker;
REVOKE ALL ON FUNCTION bump() FROM stock_trigger_maker;
DROP ROLE stock_trigger_maker;

-- A new stock row starts at the total of its pieces (integrity_total_start).
-- A BEFORE INSERT trigger that fires after that one adds the INSERT recheck
-- (integrity_total_start_recheck): one that leaves the total alone inserts
-- as before, also when the same statement then adds pieces to the new row
-- (their totals arrive after the row's recheck was queued); one that changes
-- the total is refused (23001), also after changing the key.
CREATE TRIGGER set_updated_at BEFORE INSERT ON inventory_stock FOR EACH ROW EXECUTE FUNCTION touch();
SELECT * FROM guard_triggers();
INSERT INTO inventory_stock (id, stock_type) VALUES (4, 'SPARE');
WITH s AS (INSERT INTO inventory_stock (id, stock_type) VALUES (5, 'SPARE') RETURNING id)
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) SELECT 20, id, 6 FROM s;
SELECT * FROM stock;
CREATE TRIGGER zz_bump BEFORE INSERT ON inventory_stock FOR EACH ROW EXECUTE FUNCTION bump();
\x on
SELECT * FROM expect_error($$INSERT INTO inventory_stock (id, stock_type) VALUES (6, 'SPARE')$$);
\x off
CREATE FUNCTION renumber() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.id := NEW.id + 100;
    RETURN NEW;
END $$;
CREATE TRIGGER zz_a_renumber BEFORE INSERT ON inventory_stock FOR EACH ROW EXECUTE FUNCTION renumber();
SELECT sqlstate, message, detail FROM expect_error($$INSERT INTO inventory_stock (id, stock_type) VALUES (6, 'SPARE')$$);
DROP TRIGGER zz_bump ON inventory_stock;
INSERT INTO inventory_stock (id, stock_type) VALUES (6, 'SPARE');
SELECT * FROM stock WHERE id > 100;
SELECT * FROM integrity.health() WHERE table_name = 'inventory_stock'::regclass;
-- Without a later trigger the recheck goes.
DROP TRIGGER zz_a_renumber ON inventory_stock;
DROP TRIGGER set_updated_at ON inventory_stock;
SELECT * FROM guard_triggers();
DELETE FROM sprinkler_spare_pieces WHERE id = 20;
DELETE FROM inventory_stock WHERE id IN (4, 5, 106);

-- The totals are exact, and nothing drifted.
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count) VALUES (13, 1, 4);
UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT' WHERE id = 12;
SELECT * FROM stock;
SELECT count(*) AS drifted FROM integrity.violations('inventory_stock');


-- Two new rows of one statement whose binary keys would run into each other
-- ('a\000', 'bc' and 'a', '\000bc') each keep their own starting total for
-- the recheck.
CREATE TABLE bins (
    aisle      bytea,
    shelf      bytea,
    quantity   integer NOT NULL DEFAULT 0,
    updated_at timestamptz,
    PRIMARY KEY (aisle, shelf)
);
CREATE TABLE bin_pieces (id bigint PRIMARY KEY, aisle bytea, shelf bytea, piece_count integer NOT NULL);
INSERT INTO bin_pieces VALUES (1, '\x6100', '\x6263', 5), (2, '\x61', '\x006263', 7);
SELECT integrity.maintain_total('bins', 'quantity', 'bin_pieces', ARRAY['aisle', 'shelf'], 'piece_count');
CREATE TRIGGER set_updated_at BEFORE INSERT ON bins FOR EACH ROW EXECUTE FUNCTION touch();
INSERT INTO bins (aisle, shelf) VALUES ('\x6100', '\x6263'), ('\x61', '\x006263');
SELECT aisle, shelf, quantity FROM bins ORDER BY aisle, shelf;
\ir common/teardown.sql
