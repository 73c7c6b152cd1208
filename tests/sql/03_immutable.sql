-- 03_immutable: protect_immutable fixes column values at INSERT (NULL
-- included); UPDATEs of other columns go through, any change of a protected
-- column is refused with 23001, whatever path the write takes.
\ir common/setup.sql
\set VERBOSITY default

CREATE TABLE stock_lots (
    id int PRIMARY KEY
);
CREATE TABLE spare_pieces (
    id                        int PRIMARY KEY,
    created_by_transaction_id uuid,
    original_stock_id         int REFERENCES stock_lots ON UPDATE CASCADE ON DELETE SET NULL,
    quantity                  int NOT NULL,
    note                      text
);
INSERT INTO stock_lots VALUES (10), (20), (30);
INSERT INTO spare_pieces VALUES
    (1, 'a0000000-0000-4000-8000-000000000001', 10, 5, 'first'),
    (2, 'a0000000-0000-4000-8000-000000000002', 20, 7, 'second'),
    (3, NULL, NULL, 1, 'legacy row without origin');

SELECT integrity.protect_immutable('spare_pieces',
                                   ARRAY['created_by_transaction_id', 'original_stock_id']);

-- Registry row (columns in the given order) and the AFTER UPDATE trigger
-- whose WHEN clause compares the protected columns.
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name = 'spare_pieces'::regclass;
SELECT * FROM guard_triggers('spare_pieces');

-- Allowed: INSERT with any values, UPDATE of other columns, UPDATE that
-- sets a protected column to the value it already has, DELETE.
INSERT INTO spare_pieces VALUES (4, 'a0000000-0000-4000-8000-000000000004', 30, 2, 'fourth');
UPDATE spare_pieces SET quantity = quantity + 1, note = 'restocked' WHERE id = 1;
UPDATE spare_pieces SET created_by_transaction_id = created_by_transaction_id,
                        original_stock_id = original_stock_id;
UPDATE spare_pieces SET created_by_transaction_id = 'a0000000-0000-4000-8000-000000000002' WHERE id = 2;
UPDATE spare_pieces SET created_by_transaction_id = NULL WHERE id = 3;
DELETE FROM spare_pieces WHERE id = 4;
SELECT * FROM spare_pieces ORDER BY id;

-- The guard is one compiled BEFORE trigger, called once per updated row by
-- an UPDATE that assigns a protected column (even its own value, which
-- passes).  An UPDATE that assigns none cannot change one: it runs without
-- the trigger (05_update_plans has the details).
SELECT * FROM integrity_calls('UPDATE spare_pieces SET quantity = quantity');
SELECT * FROM integrity_calls('UPDATE spare_pieces SET quantity = quantity, original_stock_id = original_stock_id');

-- Refused: changing a value, setting a NULL (immutable includes NULL),
-- clearing a value, each protected column.
UPDATE spare_pieces SET created_by_transaction_id = 'a0000000-0000-4000-8000-0000000000ff' WHERE id = 1;
UPDATE spare_pieces SET original_stock_id = 20 WHERE id = 1;
UPDATE spare_pieces SET created_by_transaction_id = 'a0000000-0000-4000-8000-000000000003' WHERE id = 3;
UPDATE spare_pieces SET original_stock_id = NULL WHERE id = 2;
-- A multi-row UPDATE fails as a whole when one row changes a protected column.
UPDATE spare_pieces SET note = 'bulk', original_stock_id = 20;
SELECT * FROM spare_pieces ORDER BY id;

-- Error fields: 23001, schema, table, the column, the trigger as constraint;
-- DETAIL has the key, the qualified table name, the old and new values.
\x on
SELECT * FROM expect_error(
    $$UPDATE spare_pieces SET original_stock_id = 30 WHERE id = 2$$);
SELECT * FROM expect_error(
    $$UPDATE spare_pieces SET created_by_transaction_id = 'a0000000-0000-4000-8000-0000000000ff' WHERE id = 3$$);
\x off

-- INSERT ... ON CONFLICT DO UPDATE: changing another column is fine,
-- changing a protected one is refused.
INSERT INTO spare_pieces VALUES (1, 'a0000000-0000-4000-8000-000000000001', 10, 99, 'upsert')
    ON CONFLICT (id) DO UPDATE SET quantity = EXCLUDED.quantity;
INSERT INTO spare_pieces VALUES (1, 'a0000000-0000-4000-8000-0000000000ff', 10, 1, 'upsert')
    ON CONFLICT (id) DO UPDATE SET created_by_transaction_id = EXCLUDED.created_by_transaction_id;
SELECT sqlstate, column_name, constraint_name FROM expect_error(
    $$INSERT INTO spare_pieces VALUES (2, NULL, 30, 1, 'x')
      ON CONFLICT (id) DO UPDATE SET original_stock_id = EXCLUDED.original_stock_id$$);

-- MERGE: WHEN MATCHED UPDATE of a protected column is refused, of other
-- columns allowed; DELETE and INSERT are not the guard's business.
MERGE INTO spare_pieces p
USING (VALUES (2, 30)) AS s(id, stock) ON p.id = s.id
WHEN MATCHED THEN UPDATE SET original_stock_id = s.stock;
MERGE INTO spare_pieces p
USING (VALUES (2, 8), (5, 1)) AS s(id, qty) ON p.id = s.id
WHEN MATCHED THEN UPDATE SET quantity = s.qty
WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'a0000000-0000-4000-8000-000000000005', 10, s.qty, 'merged');

-- Writable CTE.
WITH changed AS (
    UPDATE spare_pieces SET original_stock_id = 30 WHERE id = 1 RETURNING id)
SELECT count(*) FROM changed;

-- UPDATE through a view.
CREATE VIEW spare_pieces_view AS SELECT id, created_by_transaction_id, quantity FROM spare_pieces;
UPDATE spare_pieces_view SET created_by_transaction_id = NULL WHERE id = 1;
UPDATE spare_pieces_view SET quantity = 42 WHERE id = 1;

-- FK ON UPDATE CASCADE into an immutable column: the cascaded UPDATE is
-- refused, so the parent key cannot change either.
UPDATE stock_lots SET id = 11 WHERE id = 10;
-- FK ON DELETE SET NULL is an UPDATE of the immutable column: refused.
DELETE FROM stock_lots WHERE id = 20;
-- A parent row that no piece references can change freely.
UPDATE stock_lots SET id = 31 WHERE id = 30;
SELECT * FROM stock_lots ORDER BY id;

-- A BEFORE UPDATE trigger that sorts before the guard's runs first: the
-- guard sees what it wrote.
CREATE FUNCTION spare_pieces_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.created_by_transaction_id := 'a0000000-0000-4000-8000-0000000000ee';
    RETURN NEW;
END $$;
CREATE TRIGGER aa_spare_pieces_rewrite BEFORE UPDATE ON spare_pieces
    FOR EACH ROW EXECUTE FUNCTION spare_pieces_rewrite();
SELECT tgname FROM pg_trigger WHERE tgrelid = 'spare_pieces'::regclass AND tgname LIKE 'integrity%' ORDER BY 1;
UPDATE spare_pieces SET note = 'rewritten by a trigger' WHERE id = 1;
DROP TRIGGER aa_spare_pieces_rewrite ON spare_pieces;

-- One that sorts after the guard's could change the row after the guard
-- looked at it: creating it adds the recheck, an AFTER trigger whose WHEN
-- clause sees the final row, and the rewrite is still caught.
CREATE TRIGGER zz_spare_pieces_rewrite BEFORE UPDATE ON spare_pieces
    FOR EACH ROW EXECUTE FUNCTION spare_pieces_rewrite();
SELECT * FROM guard_triggers('spare_pieces');
UPDATE spare_pieces SET note = 'rewritten by a trigger' WHERE id = 1;
\x on
SELECT * FROM expect_error($$UPDATE spare_pieces SET note = 'rewritten by a trigger' WHERE id = 2$$);
\x off
-- The recheck is the guard's while it is needed: it cannot be dropped, and
-- health() is clean.
DROP TRIGGER integrity_immutable_recheck ON spare_pieces;
SELECT * FROM integrity.health() WHERE table_name = 'spare_pieces'::regclass;
-- Renamed to sort first, the trigger no longer needs a recheck; renamed back,
-- it does again.
ALTER TRIGGER zz_spare_pieces_rewrite ON spare_pieces RENAME TO a_spare_pieces_rewrite;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'spare_pieces'::regclass AND tgname LIKE 'integrity%' ORDER BY 1;
ALTER TRIGGER a_spare_pieces_rewrite ON spare_pieces RENAME TO zz_spare_pieces_rewrite;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'spare_pieces'::regclass AND tgname LIKE 'integrity%' ORDER BY 1;
-- Dropping the trigger removes the recheck.
DROP TRIGGER zz_spare_pieces_rewrite ON spare_pieces;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'spare_pieces'::regclass AND tgname LIKE 'integrity%' ORDER BY 1;

-- With the event triggers switched off (a superuser), a later trigger comes
-- without its recheck: health() reports it and its remedy puts it in place.
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
CREATE TRIGGER zz_spare_pieces_rewrite BEFORE UPDATE ON spare_pieces
    FOR EACH ROW EXECUTE FUNCTION spare_pieces_rewrite();
ALTER EVENT TRIGGER integrity_ddl_command_end ENABLE ALWAYS;
SELECT severity, problem, remedy FROM integrity.health() WHERE table_name = 'spare_pieces'::regclass;
DO $$ BEGIN EXECUTE (SELECT remedy FROM integrity.health() WHERE table_name = 'spare_pieces'::regclass); END $$;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'spare_pieces'::regclass AND tgname LIKE 'integrity%' ORDER BY 1;
UPDATE spare_pieces SET note = 'rewritten by a trigger' WHERE id = 1;

-- Only the table's owner can add a trigger that needs a recheck: the
-- TRIGGER privilege alone is not enough (42501), and nothing is left behind.
DROP TRIGGER zz_spare_pieces_rewrite ON spare_pieces;
CREATE ROLE spare_pieces_trigger_maker;
GRANT TRIGGER ON spare_pieces TO spare_pieces_trigger_maker;
GRANT EXECUTE ON FUNCTION spare_pieces_rewrite() TO spare_pieces_trigger_maker;
SET ROLE spare_pieces_trigger_maker;
CREATE TRIGGER zz_spare_pieces_rewrite BEFORE UPDATE ON spare_pieces
    FOR EACH ROW EXECUTE FUNCTION spare_pieces_rewrite();
CREATE TRIGGER aa_spare_pieces_note BEFORE UPDATE ON spare_pieces
    FOR EACH ROW EXECUTE FUNCTION spare_pieces_rewrite();
RESET ROLE;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'spare_pieces'::regclass AND NOT tgisinternal ORDER BY 1;
DROP TRIGGER aa_spare_pieces_note ON spare_pieces;
REVOKE ALL ON spare_pieces FROM spare_pieces_trigger_maker;
REVOKE ALL ON FUNCTION spare_pieces_rewrite() FROM spare_pieces_trigger_maker;
DROP ROLE spare_pieces_trigger_maker;

-- UPDATE ... FROM another table is refused the same way.
CREATE TABLE origin_fixes (id int, new_origin uuid);
INSERT INTO origin_fixes VALUES (2, 'a0000000-0000-4000-8000-0000000000dd');
UPDATE spare_pieces p SET created_by_transaction_id = f.new_origin FROM origin_fixes f WHERE f.id = p.id;
-- An UPDATE changing both protected columns names the first one in
-- registration order.
SELECT sqlstate, column_name FROM expect_error(
    $$UPDATE spare_pieces SET original_stock_id = 20, created_by_transaction_id = NULL WHERE id = 1$$);
-- Immutable is about UPDATE: a row can still be deleted and inserted
-- again with other values (protect_append_only is the guard against that).
DELETE FROM spare_pieces WHERE id = 5;
INSERT INTO spare_pieces VALUES (5, 'a0000000-0000-4000-8000-000000000055', 20, 1, 're-inserted');

-- Every protected value is still the one inserted.
SELECT * FROM spare_pieces ORDER BY id;

------------------------------------------------------------------------------
-- Types whose equality is not binary equality: a change that compares
-- equal but reads back differently (1.0 -> 1.00, case under a
-- case-insensitive type, jsonb key order is normalized so it is no
-- change; -0 equals 0 for float8) counts as a change.  citext rather than a
-- nondeterministic ICU collation: not every supported build has ICU.
CREATE SCHEMA case_insensitive;
CREATE EXTENSION citext SCHEMA case_insensitive;
CREATE DOMAIN positive_int AS int CHECK (VALUE > 0);
CREATE TABLE typed_values (
    id     int PRIMARY KEY,
    amount numeric,
    code   case_insensitive.citext,
    doc    jsonb,
    tags   text[],
    lot    positive_int,
    ratio  float8,
    other  int
);
INSERT INTO typed_values VALUES (1, 1.0, 'abc', '{"a": 1, "b": 2}', '{x,y}', 7, 0, 0);
SELECT integrity.protect_immutable('typed_values', ARRAY['amount', 'code', 'doc', 'tags', 'lot', 'ratio']);
-- Same values: allowed.
UPDATE typed_values SET amount = 1.0, code = 'abc', doc = '{"b": 2, "a": 1}', tags = '{x,y}',
                        lot = 7, ratio = 0, other = 1;
-- Equal under the type's equality, different to a reader: refused.
UPDATE typed_values SET amount = 1.00;
UPDATE typed_values SET code = 'ABC';
UPDATE typed_values SET ratio = '-0';
-- Plainly different values: refused.
UPDATE typed_values SET doc = '{"a": 1}';
UPDATE typed_values SET tags = '{x,y,z}';
UPDATE typed_values SET lot = 8;
SELECT * FROM typed_values ORDER BY id;

\ir common/teardown.sql
