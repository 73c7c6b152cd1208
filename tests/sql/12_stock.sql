-- 12_stock: integrity.guard_stock keeps 0 <= reserved_stock <= stock on
-- every write (23514, like the CHECK constraints of the migration guides, but
-- NOT VALID: registration does not scan, and an UPDATE of a row that already
-- broke the rule must leave it valid), whatever path the write takes; and
-- integrity.reserve_stock / release_stock / commit_stock (single and
-- multi-row) move stock without ever overselling.  The races themselves are
-- in tests/specs/stock_*.spec and pgrx-tests/stock_credit_stress.sh.
\ir common/setup.sql
\set VERBOSITY default
-- Errors raised inside the operations' PL/pgSQL would show their call stack
-- (with line numbers) as CONTEXT: keep it out.
\set SHOW_CONTEXT never

-- Everything of this file lives in its own schema, dropped at the end.
CREATE SCHEMA inventory;
SET search_path = inventory, public;

CREATE TABLE wholesaler_products (
    id             bigint PRIMARY KEY,
    wholesaler_id  bigint  NOT NULL,
    name           text    NOT NULL,
    stock          integer NOT NULL,
    reserved_stock integer NOT NULL DEFAULT 0
);
-- Rows 1-3 are fine; rows 4-6 are legacy rows that already break the rule.
INSERT INTO wholesaler_products VALUES
    (1, 20, 'PVC pipe 1/2"',      10, 0),
    (2, 20, 'Sprinkler head',      5, 2),
    (3, 21, 'Drip line 100 m',     0, 0),
    (4, 21, 'Legacy: negative',   -3, 0),
    (5, 21, 'Legacy: over-held',   4, 6),
    (6, 22, 'Legacy: negative reservation', 8, -1);

SELECT integrity.guard_stock('wholesaler_products');

-- One registry row; one compiled BEFORE INSERT OR UPDATE row trigger that
-- checks the rule, ENABLE ALWAYS (A).
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name = 'wholesaler_products'::regclass;
SELECT * FROM guard_triggers('wholesaler_products');

-- Registration did not scan: the legacy rows are still there.
SELECT id, stock, reserved_stock FROM wholesaler_products ORDER BY id;

------------------------------------------------------------------------------
-- Valid writes are allowed: the bounds themselves included.
INSERT INTO wholesaler_products VALUES (7, 22, 'Valve', 3, 3);
INSERT INTO wholesaler_products VALUES (8, 22, 'Elbow', 0, 0), (9, 22, 'Tee', 12, 1);
UPDATE wholesaler_products SET reserved_stock = stock WHERE id = 1;
UPDATE wholesaler_products SET reserved_stock = 0 WHERE id = 1;
UPDATE wholesaler_products SET stock = stock + 5 WHERE id = 3;
UPDATE wholesaler_products SET stock = 2 WHERE id = 2;
COPY wholesaler_products FROM stdin;
10	23	Copied	4	1
\.
SELECT id, stock, reserved_stock FROM wholesaler_products WHERE id IN (1, 2, 3, 7, 8, 9, 10) ORDER BY id;

-- Each part of the rule is refused with 23514 and every error field: the
-- column at fault, the trigger as constraint, the row key and the values the
-- row would have had in DETAIL, and a HINT.
\x on
-- stock below zero
SELECT * FROM expect_error($$UPDATE wholesaler_products SET stock = -1 WHERE id = 1$$);
-- reserved_stock below zero
SELECT * FROM expect_error($$UPDATE wholesaler_products SET reserved_stock = -2 WHERE id = 1$$);
-- reserved_stock above stock (selling what is reserved for someone else)
SELECT * FROM expect_error($$UPDATE wholesaler_products SET stock = stock - 12 WHERE id = 9$$);
-- the same on INSERT
SELECT * FROM expect_error($$INSERT INTO wholesaler_products VALUES (11, 23, 'Over', 1, 2)$$);
\x off
-- When both parts break, the first is reported: stock.
SELECT sqlstate, column_name, message FROM expect_error(
    $$UPDATE wholesaler_products SET stock = -1, reserved_stock = 5 WHERE id = 1$$);
-- Plain statements, as an application sees them.
UPDATE wholesaler_products SET reserved_stock = reserved_stock + 11 WHERE id = 1;
INSERT INTO wholesaler_products VALUES (11, 23, 'Negative', -1, 0);
-- A multi-row UPDATE with one bad row changes nothing at all.
UPDATE wholesaler_products SET reserved_stock = reserved_stock + 4 WHERE id IN (1, 2, 9);
-- COPY with a bad row loads nothing.
COPY wholesaler_products FROM stdin;
12	23	Fine	4	0
13	23	Bad	4	5
\.
SELECT id, stock, reserved_stock FROM wholesaler_products WHERE id IN (1, 2, 9, 11, 12, 13) ORDER BY id;

-- A BEFORE trigger that fires after the guard's and oversells is still
-- caught: the guard gets its recheck of the final row while the trigger is
-- there, for INSERT as for UPDATE.
CREATE FUNCTION oversell() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.reserved_stock := NEW.stock + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER zz_oversell BEFORE INSERT OR UPDATE ON wholesaler_products FOR EACH ROW EXECUTE FUNCTION oversell();
SELECT tgname FROM pg_trigger WHERE tgrelid = 'wholesaler_products'::regclass AND tgname LIKE 'integrity%' ORDER BY 1;
SELECT sqlstate, column_name, constraint_name FROM expect_error($$UPDATE wholesaler_products SET name = name WHERE id = 1$$);
SELECT sqlstate, column_name, constraint_name FROM expect_error($$INSERT INTO wholesaler_products VALUES (14, 23, 'Late', 4, 0)$$);
DROP TRIGGER zz_oversell ON wholesaler_products;
DROP FUNCTION oversell();
SELECT tgname FROM pg_trigger WHERE tgrelid = 'wholesaler_products'::regclass AND tgname LIKE 'integrity%' ORDER BY 1;

------------------------------------------------------------------------------
-- NOT VALID semantics: an UPDATE of a legacy row must leave it valid.
-- Touching another column of an invalid row is refused ...
UPDATE wholesaler_products SET name = 'renamed' WHERE id = 4;
UPDATE wholesaler_products SET name = 'renamed' WHERE id = 5;
UPDATE wholesaler_products SET stock = stock WHERE id = 6;
-- ... and so is a change that improves the row without making it valid.
UPDATE wholesaler_products SET stock = -1 WHERE id = 4;
UPDATE wholesaler_products SET reserved_stock = 5 WHERE id = 5;
-- A change that makes the row valid is allowed: the migration guide's own
-- clean-up statements work under the guard (one row each), and so does a
-- direct fix.
UPDATE wholesaler_products SET stock = 0 WHERE stock < 0;
UPDATE wholesaler_products SET reserved_stock = stock WHERE reserved_stock > stock;
UPDATE wholesaler_products SET reserved_stock = 0 WHERE id = 6;
-- Once valid, the row stays valid.
UPDATE wholesaler_products SET stock = -3 WHERE id = 4;
UPDATE wholesaler_products SET reserved_stock = 5 WHERE id = 5;
-- DELETE of rows is not the guard's business (legacy or not).
INSERT INTO wholesaler_products VALUES (14, 24, 'To delete', 1, 1);
DELETE FROM wholesaler_products WHERE id = 14;
SELECT id, name, stock, reserved_stock FROM wholesaler_products WHERE id IN (4, 5, 6) ORDER BY id;

------------------------------------------------------------------------------
-- Every write path reaches the guard.
-- INSERT ... ON CONFLICT DO UPDATE: the UPDATE is checked on the final row.
INSERT INTO wholesaler_products VALUES (1, 20, 'PVC pipe 1/2"', 0, 0)
    ON CONFLICT (id) DO UPDATE SET reserved_stock = wholesaler_products.reserved_stock + 20;
SELECT sqlstate, column_name, constraint_name FROM expect_error(
    $$INSERT INTO wholesaler_products VALUES (1, 20, 'x', 0, 0)
      ON CONFLICT (id) DO UPDATE SET stock = wholesaler_products.stock - 100$$);
INSERT INTO wholesaler_products VALUES (1, 20, 'PVC pipe 1/2"', 0, 0)
    ON CONFLICT (id) DO UPDATE SET reserved_stock = wholesaler_products.reserved_stock + 4;
-- ... and its INSERT side too.
INSERT INTO wholesaler_products VALUES (15, 24, 'Upserted', 2, 3)
    ON CONFLICT (id) DO UPDATE SET stock = EXCLUDED.stock;
INSERT INTO wholesaler_products VALUES (15, 24, 'Upserted', 2, 0)
    ON CONFLICT (id) DO NOTHING;
-- MERGE: matched UPDATE and not-matched INSERT are both checked.
MERGE INTO wholesaler_products p
USING (VALUES (9, 12)) AS s(id, qty) ON p.id = s.id
WHEN MATCHED THEN UPDATE SET reserved_stock = p.reserved_stock + s.qty;
MERGE INTO wholesaler_products p
USING (VALUES (16, 1)) AS s(id, qty) ON p.id = s.id
WHEN NOT MATCHED THEN INSERT VALUES (s.id, 24, 'merged', s.qty, s.qty + 1);
MERGE INTO wholesaler_products p
USING (VALUES (9, 2), (16, 1)) AS s(id, qty) ON p.id = s.id
WHEN MATCHED THEN UPDATE SET reserved_stock = p.reserved_stock + s.qty
WHEN NOT MATCHED THEN INSERT VALUES (s.id, 24, 'merged', s.qty, 0);
-- Writable CTEs.
WITH sold AS (UPDATE wholesaler_products SET stock = stock - 100 WHERE id = 9 RETURNING id)
SELECT count(*) FROM sold;
WITH added AS (INSERT INTO wholesaler_products VALUES (17, 24, 'cte', 1, 2) RETURNING id)
SELECT count(*) FROM added;
WITH held AS (UPDATE wholesaler_products SET reserved_stock = reserved_stock + 1 WHERE id = 9 RETURNING id, reserved_stock)
SELECT * FROM held;
-- An auto-updatable view.
CREATE VIEW available_products AS
    SELECT id, stock, reserved_stock, stock - reserved_stock AS available FROM wholesaler_products;
UPDATE available_products SET reserved_stock = stock + 1 WHERE id = 3;
UPDATE available_products SET reserved_stock = 1 WHERE id = 3;
SELECT id, stock, reserved_stock FROM wholesaler_products WHERE id IN (1, 3, 9, 15, 16, 17) ORDER BY id;

-- A BEFORE trigger that rewrites the row after the application wrote it
-- (here: one that "helpfully" reserves everything plus one) is still caught:
-- the guard checks the final row.
CREATE FUNCTION overbook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.reserved_stock := NEW.stock + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER zz_overbook BEFORE INSERT OR UPDATE ON wholesaler_products
    FOR EACH ROW WHEN (NEW.name = 'overbook') EXECUTE FUNCTION overbook();
UPDATE wholesaler_products SET name = 'overbook' WHERE id = 8;
INSERT INTO wholesaler_products VALUES (18, 24, 'overbook', 5, 0);
DROP TRIGGER zz_overbook ON wholesaler_products;

-- Under session_replication_role = replica (how logical replication applies
-- rows) the guard still refuses: its trigger is ENABLE ALWAYS.
SET session_replication_role = replica;
UPDATE wholesaler_products SET reserved_stock = 99 WHERE id = 1;
INSERT INTO wholesaler_products VALUES (18, 24, 'replicated', -1, 0);
SELECT sqlstate, column_name, constraint_name FROM expect_error(
    $$UPDATE wholesaler_products SET stock = -5 WHERE id = 1$$);
-- The operations work under the replica role as well.
SELECT integrity.reserve_stock('wholesaler_products', 10, 1);
SELECT integrity.release_stock('wholesaler_products', 10, 1);
RESET session_replication_role;
SELECT id, stock, reserved_stock FROM wholesaler_products WHERE id IN (1, 8, 10, 18) ORDER BY id;

------------------------------------------------------------------------------
-- reserve_stock / release_stock / commit_stock on one row.
CREATE TABLE stock_moves (id serial, product bigint, op text, qty numeric, result text);
CREATE TABLE products (
    id             integer PRIMARY KEY,
    stock          integer NOT NULL,
    reserved_stock integer NOT NULL DEFAULT 0
);
INSERT INTO products VALUES (1, 10, 0), (2, 3, 3), (3, 0, 0), (4, 2, 5);
SELECT integrity.guard_stock('products');

-- Reserving what is available (stock - reserved) returns true ...
SELECT integrity.reserve_stock('products', 1, 4) AS reserved;
SELECT integrity.reserve_stock('products', 1, 6) AS reserved;   -- exactly what is left
SELECT id, stock, reserved_stock FROM products WHERE id = 1;
-- ... more than that returns false and changes nothing.
SELECT integrity.reserve_stock('products', 1, 1) AS reserved;
SELECT integrity.reserve_stock('products', 2, 1) AS reserved;   -- all reserved already
SELECT integrity.reserve_stock('products', 3, 1) AS reserved;   -- no stock at all
SELECT integrity.reserve_stock('products', 4, 1) AS reserved;   -- legacy row, over-held
SELECT id, stock, reserved_stock FROM products ORDER BY id;

-- release_stock gives back part of a reservation; commit_stock consumes it
-- (the goods left: stock and reserved both go down).
SELECT integrity.release_stock('products', 1, 3);
SELECT id, stock, reserved_stock FROM products WHERE id = 1;
SELECT integrity.commit_stock('products', 1, 5);
SELECT id, stock, reserved_stock FROM products WHERE id = 1;
SELECT integrity.commit_stock('products', 1, 2);     -- everything that was reserved
SELECT integrity.reserve_stock('products', 1, 3) AS reserved;
SELECT integrity.reserve_stock('products', 1, 1) AS reserved;
SELECT id, stock, reserved_stock FROM products WHERE id = 1;

-- Quantities may be given as any numeric value; ids in any type that casts
-- to the key's type.
SELECT integrity.release_stock('products', 1::bigint, 1.0);
SELECT integrity.reserve_stock('products', '1'::text, 1::smallint) AS reserved;
SELECT integrity.reserve_stock('products', 1::numeric, 1::bigint) AS reserved;
SELECT id, stock, reserved_stock FROM products WHERE id = 1;

-- The operations in one transaction with the application's own writes, and
-- rolled back with it.
BEGIN;
SELECT integrity.reserve_stock('products', 2, 1) AS reserved;
SELECT integrity.release_stock('products', 2, 2);
SELECT integrity.reserve_stock('products', 2, 1) AS reserved;
INSERT INTO stock_moves (product, op, qty, result) VALUES (2, 'reserve', 1, 'true');
SELECT id, stock, reserved_stock FROM products WHERE id = 2;
ROLLBACK;
SELECT id, stock, reserved_stock FROM products WHERE id = 2;
SELECT count(*) AS moves FROM stock_moves;

-- Legacy rows: a release or commit that would leave the row invalid is
-- refused by the guard; one that makes it valid is allowed.
SELECT sqlstate, column_name, constraint_name FROM expect_error(
    $$SELECT integrity.release_stock('products', 4, 1)$$);
SELECT sqlstate, column_name, constraint_name FROM expect_error(
    $$SELECT integrity.commit_stock('products', 4, 2)$$);
SELECT integrity.release_stock('products', 4, 3);
SELECT id, stock, reserved_stock FROM products WHERE id = 4;

-- Bad quantities: 22023, and nothing changes.
SELECT integrity.reserve_stock('products', 1, 0);
SELECT integrity.reserve_stock('products', 1, -2);
SELECT integrity.reserve_stock('products', 1, NULL);
SELECT integrity.release_stock('products', 1, 0);
SELECT integrity.release_stock('products', 1, -1);
SELECT integrity.commit_stock('products', 1, NULL);
SELECT integrity.commit_stock('products', 1, -0.5);
SELECT sqlstate, message, constraint_name FROM expect_error(
    $$SELECT integrity.release_stock('products', 1, NULL)$$);
SELECT id, stock, reserved_stock FROM products WHERE id = 1;

-- Unknown ids (and a NULL id): 22023 for every operation.
SELECT integrity.reserve_stock('products', 99, 1);
SELECT integrity.reserve_stock('products', NULL::integer, 1);
SELECT sqlstate FROM expect_error($$SELECT integrity.release_stock('products', 99, 1)$$);
SELECT sqlstate FROM expect_error($$SELECT integrity.commit_stock('products', 99, 1)$$);
-- An id that is not a key value at all is the cast's own error.
SELECT sqlstate, message FROM expect_error($$SELECT integrity.reserve_stock('products', 'abc'::text, 1)$$);

-- Releasing or committing more than is reserved: 23514, nothing changes.
-- The error names the table (schema and table fields, as the guard's own
-- errors do), the reserved column, the guard as constraint, and says in
-- DETAIL which row and how much it holds.
SELECT integrity.release_stock('products', 1, 4);
SELECT integrity.commit_stock('products', 1, 4);
SELECT integrity.release_stock('products', 3, 1);
\x on
SELECT sqlstate, schema_name, table_name, column_name, constraint_name,
       detail LIKE '%products%' AS detail_names_table,
       detail LIKE '%(id)=(1)%' AS detail_names_row_key,
       hint IS NOT NULL AS has_hint
  FROM expect_error($$SELECT integrity.release_stock('products', 1, 4)$$);
SELECT sqlstate, schema_name, table_name, column_name, constraint_name,
       detail LIKE '%products%' AS detail_names_table,
       detail LIKE '%(id)=(1)%' AS detail_names_row_key,
       hint IS NOT NULL AS has_hint
  FROM expect_error($$SELECT integrity.commit_stock('products', 1, 4)$$);
\x off
SELECT id, stock, reserved_stock FROM products ORDER BY id;

-- A quantity the column cannot hold (a fraction of an integer column) is a
-- bad quantity too (22023): it must not be rounded into another quantity
-- (1.5 reserved as 2, a release of 0.4 that releases nothing).
SELECT integrity.release_stock('products', 1, 3);
SELECT id, stock, reserved_stock FROM products WHERE id = 1;
SELECT sqlstate FROM expect_error($$SELECT integrity.reserve_stock('products', 1, 1.5)$$);
SELECT sqlstate FROM expect_error($$SELECT integrity.reserve_stock('products', 1, 0.4)$$);
SELECT integrity.reserve_stock('products', 1, 1) AS reserved;
SELECT sqlstate FROM expect_error($$SELECT integrity.release_stock('products', 1, 0.4)$$);
SELECT sqlstate FROM expect_error($$SELECT integrity.commit_stock('products', 1, 0.5)$$);
SELECT id, stock, reserved_stock FROM products WHERE id = 1;
SELECT integrity.release_stock('products', 1, 1);

-- Tables the operations cannot work on.
CREATE TABLE unguarded_products (id int PRIMARY KEY, stock int, reserved_stock int);
INSERT INTO unguarded_products VALUES (1, 5, 0);
SELECT integrity.reserve_stock('unguarded_products', 1, 1);     -- 55000
SELECT integrity.release_stock('unguarded_products', 1, 1);
SELECT integrity.commit_stock('unguarded_products', 1, 1);
SELECT integrity.reserve_stock('unguarded_products', ARRAY[1], ARRAY[1]);
SELECT sqlstate, hint FROM expect_error($$SELECT integrity.reserve_stock('unguarded_products', 1, 1)$$);
CREATE TABLE keyless_products (sku text, stock int, reserved_stock int);
INSERT INTO keyless_products VALUES ('A', 5, 0);
SELECT integrity.guard_stock('keyless_products');
SELECT integrity.reserve_stock('keyless_products', 'A'::text, 1);  -- 42P10
CREATE TABLE lot_products (lot int, sku text, stock int, reserved_stock int, PRIMARY KEY (lot, sku));
INSERT INTO lot_products VALUES (1, 'A', 5, 0);
SELECT integrity.guard_stock('lot_products');
SELECT integrity.reserve_stock('lot_products', 1, 1);             -- 42P10
SELECT integrity.reserve_stock(NULL, 1, 1);                       -- 22004
SELECT integrity.release_stock(NULL, 1, 1);
SELECT * FROM unguarded_products;
-- The guard still holds on those tables for ordinary writes.
SELECT sqlstate, column_name FROM expect_error($$UPDATE keyless_products SET reserved_stock = 6$$);
UPDATE lot_products SET stock = -1;

------------------------------------------------------------------------------
-- Multi-row reservation: all or nothing.
CREATE TABLE cart_products (
    id             integer PRIMARY KEY,
    stock          integer NOT NULL,
    reserved_stock integer NOT NULL DEFAULT 0
);
INSERT INTO cart_products VALUES (1, 10, 0), (2, 5, 0), (3, 2, 0), (4, 0, 0);
SELECT integrity.guard_stock('cart_products');

SELECT integrity.reserve_stock('cart_products', ARRAY[3, 1, 2], ARRAY[1, 2, 3]) AS reserved;
SELECT id, stock, reserved_stock FROM cart_products ORDER BY id;
-- Duplicate ids: their quantities add up (1 + 2 = 3 of id 2; 3 + 4 = 7 of id 1).
SELECT integrity.reserve_stock('cart_products', ARRAY[2, 1, 2, 1], ARRAY[1, 3, 1, 4]) AS reserved;
SELECT id, stock, reserved_stock FROM cart_products ORDER BY id;
-- Duplicates that together exceed what is available: false, although each
-- alone would fit.
SELECT integrity.reserve_stock('cart_products', ARRAY[1, 1], ARRAY[1, 1]) AS reserved;
-- Partial insufficiency: false, and nothing at all is reserved.
SELECT integrity.reserve_stock('cart_products', ARRAY[3, 4], ARRAY[1, 1]) AS reserved;
SELECT integrity.reserve_stock('cart_products', ARRAY[1, 3], ARRAY[1, 2]) AS reserved;
SELECT id, stock, reserved_stock FROM cart_products ORDER BY id;
-- One row only, and the array types that cast to the key's type.
SELECT integrity.reserve_stock('cart_products', ARRAY['3']::text[], ARRAY[1]) AS reserved;
SELECT integrity.reserve_stock('cart_products', ARRAY[1]::bigint[], ARRAY[1.0]) AS reserved;
SELECT integrity.reserve_stock('cart_products', ARRAY[2], ARRAY[1]) AS reserved;  -- all reserved
SELECT id, stock, reserved_stock FROM cart_products ORDER BY id;
-- Missing ids: 22023, even when the other rows have stock; nothing changes.
SELECT integrity.reserve_stock('cart_products', ARRAY[1, 99], ARRAY[1, 1]);
SELECT integrity.reserve_stock('cart_products', ARRAY[98, 99], ARRAY[1, 1]);
-- Bad input: NULL id (22004), NULL or non-positive quantity (22023), arrays
-- of different lengths (22023), NULL arrays.
SELECT integrity.reserve_stock('cart_products', ARRAY[1, NULL], ARRAY[1, 1]);
SELECT integrity.reserve_stock('cart_products', ARRAY[1, 2], ARRAY[1, NULL]);
SELECT integrity.reserve_stock('cart_products', ARRAY[1, 2], ARRAY[1, 0]);
SELECT integrity.reserve_stock('cart_products', ARRAY[1, 2], ARRAY[-1, 1]);
SELECT integrity.reserve_stock('cart_products', ARRAY[1, 2], ARRAY[1]);
SELECT integrity.reserve_stock('cart_products', ARRAY[1], ARRAY[1, 1]);
SELECT integrity.reserve_stock('cart_products', ARRAY[1], NULL::numeric[]);
SELECT integrity.reserve_stock('cart_products', NULL::int[], ARRAY[1]);
SELECT sqlstate FROM expect_error($$SELECT integrity.reserve_stock('cart_products', ARRAY[1, 2], ARRAY[1, 0.5])$$);
SELECT integrity.reserve_stock('unguarded_products', ARRAY[1], ARRAY[1]);
SELECT id, stock, reserved_stock FROM cart_products ORDER BY id;
-- A multi-row reservation is one call: undone by the transaction's rollback.
BEGIN;
SELECT integrity.release_stock('cart_products', 1, 3);
SELECT integrity.reserve_stock('cart_products', ARRAY[1, 1], ARRAY[1, 1]) AS reserved;
SELECT id, stock, reserved_stock FROM cart_products WHERE id = 1;
ROLLBACK;
SELECT id, stock, reserved_stock FROM cart_products ORDER BY id;

------------------------------------------------------------------------------
-- Other column types: text keys and numeric quantities.
CREATE TABLE bulk_goods (
    sku            text PRIMARY KEY,
    stock          numeric(12, 3) NOT NULL,
    reserved_stock numeric(12, 3) NOT NULL DEFAULT 0
);
INSERT INTO bulk_goods VALUES ('CEMENT-50KG', 10.5, 0), ('SAND-M3', 2, 0), ('gravel-m3', 1, 0);
SELECT integrity.guard_stock('bulk_goods');
SELECT integrity.reserve_stock('bulk_goods', 'CEMENT-50KG'::text, 0.25) AS reserved;
SELECT integrity.reserve_stock('bulk_goods', 'CEMENT-50KG'::text, 10.251) AS reserved;
SELECT integrity.reserve_stock('bulk_goods', 'CEMENT-50KG'::text, 10.25) AS reserved;
SELECT integrity.release_stock('bulk_goods', 'CEMENT-50KG'::text, 0.125);
SELECT integrity.commit_stock('bulk_goods', 'CEMENT-50KG'::text, 10.375);
SELECT integrity.reserve_stock('bulk_goods', ARRAY['SAND-M3', 'gravel-m3', 'CEMENT-50KG'], ARRAY[2, 0.5, 0.125]) AS reserved;
SELECT integrity.reserve_stock('bulk_goods', ARRAY['SAND-M3', 'gravel-m3'], ARRAY[0.001, 0.5]) AS reserved;
SELECT integrity.reserve_stock('bulk_goods', 'NO-SUCH-SKU'::text, 1);
-- More decimals than the column keeps would be rounded away: a bad quantity.
SELECT sqlstate FROM expect_error($$SELECT integrity.reserve_stock('bulk_goods', 'gravel-m3'::text, 0.0004)$$);
SELECT * FROM bulk_goods ORDER BY sku;
-- A violation reports numeric values as the column shows them.
SELECT message, detail FROM expect_error($$UPDATE bulk_goods SET reserved_stock = 0.126 WHERE sku = 'CEMENT-50KG'$$);

-- Columns that may be NULL: like a CHECK constraint, NULL passes the rule;
-- there is nothing available to reserve on such a row.
CREATE TABLE draft_products (id int PRIMARY KEY, stock int, reserved_stock int);
INSERT INTO draft_products VALUES (1, NULL, 0), (2, 4, NULL);
SELECT integrity.guard_stock('draft_products');
UPDATE draft_products SET reserved_stock = 7 WHERE id = 1;
UPDATE draft_products SET stock = 9 WHERE id = 2;
SELECT integrity.reserve_stock('draft_products', 1, 1) AS reserved;
SELECT integrity.reserve_stock('draft_products', 2, 1) AS reserved;
UPDATE draft_products SET stock = 6 WHERE id = 1;
SELECT * FROM draft_products ORDER BY id;

-- Custom column names; a partitioned table (the guard covers every
-- partition, existing and future, and reserve_stock works on the root).
CREATE TABLE regional_stock (
    id       int NOT NULL,
    region   text NOT NULL,
    on_hand  bigint NOT NULL,
    promised bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE TABLE regional_stock_1 PARTITION OF regional_stock FOR VALUES FROM (0) TO (100);
INSERT INTO regional_stock VALUES (1, 'Kathmandu', 5, 0);
SELECT integrity.guard_stock('regional_stock', 'on_hand', 'promised');
CREATE TABLE regional_stock_2 PARTITION OF regional_stock FOR VALUES FROM (100) TO (200);
INSERT INTO regional_stock VALUES (150, 'Pokhara', 5, 0);
SELECT * FROM pt_triggers('regional_stock');
SELECT integrity.reserve_stock('regional_stock', ARRAY[150, 1], ARRAY[5, 5]) AS reserved;
SELECT integrity.reserve_stock('regional_stock', 1, 1) AS reserved;
UPDATE regional_stock SET promised = 6 WHERE id = 150;
INSERT INTO regional_stock VALUES (151, 'Pokhara', 1, 2);
SELECT sqlstate, table_name, column_name, constraint_name FROM expect_error(
    $$UPDATE regional_stock SET on_hand = 4 WHERE id = 1$$);
SELECT * FROM regional_stock ORDER BY id;

------------------------------------------------------------------------------
-- Registration.
-- Idempotent: the same call again changes nothing.
SELECT integrity.guard_stock('products');
SELECT integrity.guard_stock('products', 'stock', 'reserved_stock');
SELECT table_name, guard, columns FROM integrity.guards WHERE table_name = 'products'::regclass;
SELECT tgname, tgenabled FROM guard_triggers('products');
-- Registering other columns replaces the rule (one row, one trigger).
ALTER TABLE products ADD COLUMN damaged integer NOT NULL DEFAULT 0;
SELECT integrity.guard_stock('products', 'stock', 'damaged');
SELECT table_name, guard, columns FROM integrity.guards WHERE table_name = 'products'::regclass;
SELECT * FROM guard_triggers('products');
UPDATE products SET damaged = 11 WHERE id = 1;
UPDATE products SET reserved_stock = 0 WHERE id = 4;
SELECT integrity.reserve_stock('products', 1, 1) AS reserved;   -- now reserves "damaged"
SELECT id, stock, reserved_stock, damaged FROM products WHERE id = 1;
SELECT integrity.guard_stock('products');
-- unprotect removes the rule; writes and operations are then unguarded.
SELECT integrity.unprotect('products', 'stock');
SELECT count(*) AS stock_guards FROM integrity.guards WHERE table_name = 'products'::regclass;
SELECT * FROM guard_triggers('products');
UPDATE products SET reserved_stock = 100 WHERE id = 1;
SELECT integrity.reserve_stock('products', 1, 1);

-- Bad registration input: nothing is installed.
CREATE TABLE bad_stock (
    id      int PRIMARY KEY,
    qty     integer,
    held    bigint,
    label   text,
    amount  numeric,
    ratio   real
);
SELECT integrity.guard_stock(NULL);                                  -- 22004
SELECT integrity.guard_stock('bad_stock', NULL, 'held');
SELECT integrity.guard_stock('bad_stock', 'qty', NULL);
SELECT integrity.guard_stock('bad_stock');                           -- 42703: no "stock"
SELECT integrity.guard_stock('bad_stock', 'qty', 'no_such_column');
SELECT integrity.guard_stock('bad_stock', 'qty', 'held');            -- 42804: different types
SELECT integrity.guard_stock('bad_stock', 'label', 'label');         -- 42804: not a quantity
SELECT integrity.guard_stock('bad_stock', 'ratio', 'ratio');
SELECT integrity.guard_stock('bad_stock', 'amount', 'qty');
CREATE VIEW bad_stock_view AS SELECT * FROM bad_stock;
SELECT integrity.guard_stock('bad_stock_view', 'qty', 'qty');        -- 42809
CREATE TEMP TABLE temp_stock (id int PRIMARY KEY, stock int, reserved_stock int);
SELECT sqlstate FROM expect_error($$SELECT integrity.guard_stock('temp_stock')$$);
SELECT sqlstate FROM expect_error($$SELECT integrity.guard_stock('regional_stock_1', 'on_hand', 'promised')$$);
SELECT * FROM guard_triggers('bad_stock');
SELECT count(*) AS bad_stock_guards FROM integrity.guards WHERE table_name = 'bad_stock'::regclass;
-- A table owned by someone else cannot be guarded: 42501.
CREATE ROLE stock_clerk;
GRANT USAGE ON SCHEMA inventory TO stock_clerk;
SET ROLE stock_clerk;
SELECT sqlstate FROM expect_error($$SELECT integrity.guard_stock('cart_products')$$);
SELECT sqlstate FROM expect_error($$SELECT integrity.unprotect('cart_products', 'stock')$$);
RESET ROLE;
REVOKE USAGE ON SCHEMA inventory FROM stock_clerk;
DROP ROLE stock_clerk;

------------------------------------------------------------------------------
-- Dropping the tables drops their registry rows.
SET client_min_messages = warning;
DROP SCHEMA inventory CASCADE;
RESET client_min_messages;
SELECT count(*) AS dangling_registry_rows FROM integrity.guard_registry
 WHERE NOT EXISTS (SELECT FROM pg_class WHERE oid = table_name);

\ir common/teardown.sql
