-- 04_write_once: protect_write_once lets a column go from NULL to a value
-- once; after that any change (to another value or back to NULL) is refused
-- with 23001, whatever path the write takes.
\ir common/setup.sql
\set VERBOSITY default

CREATE TABLE invoices (
    id int PRIMARY KEY
);
CREATE TABLE orders (
    id              int PRIMARY KEY,
    tracking_number text,
    invoice_id      int REFERENCES invoices ON UPDATE CASCADE ON DELETE SET NULL,
    shipped_on      date,
    note            text
);
INSERT INTO invoices VALUES (100), (200), (300);
INSERT INTO orders VALUES
    (1, NULL, NULL, NULL, 'new order'),
    (2, 'TRK-0002', 200, '2024-01-02', 'shipped'),
    (3, NULL, NULL, NULL, 'another new order');

SELECT integrity.protect_write_once('orders', ARRAY['tracking_number', 'invoice_id', 'shipped_on']);

-- Registry row and the trigger: it only fires when a column that was
-- already set changes.
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name = 'orders'::regclass;
SELECT * FROM guard_triggers('orders');

-- Allowed: other columns, NULL -> NULL, NULL -> value (once), value -> same value.
UPDATE orders SET note = 'paid' WHERE id = 1;
UPDATE orders SET tracking_number = NULL WHERE id = 1;
UPDATE orders SET tracking_number = 'TRK-0001', invoice_id = 100 WHERE id = 1;
UPDATE orders SET shipped_on = '2024-01-01' WHERE id = 1;
UPDATE orders SET tracking_number = 'TRK-0002', invoice_id = 200, shipped_on = '2024-01-02' WHERE id = 2;
SELECT * FROM orders ORDER BY id;

-- Refused: a set value changes, or goes back to NULL.
UPDATE orders SET tracking_number = 'TRK-9999' WHERE id = 1;
UPDATE orders SET invoice_id = NULL WHERE id = 2;
UPDATE orders SET shipped_on = '2024-02-02' WHERE id = 2;
-- Within one transaction, a value set by an earlier statement is set.
BEGIN;
UPDATE orders SET tracking_number = 'TRK-0003' WHERE id = 3;
UPDATE orders SET tracking_number = 'TRK-0003-bis' WHERE id = 3;
ROLLBACK;
-- A multi-row UPDATE that sets some rows and changes others fails as a whole.
UPDATE orders SET tracking_number = 'TRK-BULK';
SELECT * FROM orders ORDER BY id;

-- Error fields.
\x on
SELECT * FROM expect_error($$UPDATE orders SET invoice_id = 300 WHERE id = 2$$);
SELECT * FROM expect_error($$UPDATE orders SET tracking_number = NULL WHERE id = 1$$);
\x off

-- INSERT ... ON CONFLICT DO UPDATE: the first write of a NULL column is
-- allowed, overwriting a set one is refused.
INSERT INTO orders VALUES (3, 'TRK-0003', NULL, NULL, 'upsert')
    ON CONFLICT (id) DO UPDATE SET tracking_number = EXCLUDED.tracking_number;
INSERT INTO orders VALUES (3, 'TRK-0003-bis', NULL, NULL, 'upsert')
    ON CONFLICT (id) DO UPDATE SET tracking_number = EXCLUDED.tracking_number;

-- MERGE.
MERGE INTO orders o
USING (VALUES (3, 300)) AS s(id, invoice) ON o.id = s.id
WHEN MATCHED THEN UPDATE SET invoice_id = s.invoice;
MERGE INTO orders o
USING (VALUES (3, 100)) AS s(id, invoice) ON o.id = s.id
WHEN MATCHED THEN UPDATE SET invoice_id = s.invoice;

-- Writable CTE.
WITH changed AS (UPDATE orders SET shipped_on = '2025-01-01' WHERE id = 2 RETURNING id)
SELECT count(*) FROM changed;

-- UPDATE through a view.
CREATE VIEW orders_view AS SELECT id, tracking_number, note FROM orders;
UPDATE orders_view SET tracking_number = 'TRK-VIEW' WHERE id = 2;
UPDATE orders_view SET note = 'via view' WHERE id = 2;

-- FK ON UPDATE CASCADE and ON DELETE SET NULL would change a set
-- write-once column: refused.
UPDATE invoices SET id = 201 WHERE id = 200;
DELETE FROM invoices WHERE id = 100;
SELECT * FROM invoices ORDER BY id;

-- A BEFORE UPDATE trigger that sorts after the guard and rewrites a set
-- write-once column is caught; one that fills a NULL one is a first write.
CREATE FUNCTION orders_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.shipped_on := '2030-01-01';
    RETURN NEW;
END $$;
CREATE TRIGGER zz_orders_rewrite BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_rewrite();
UPDATE orders SET note = 'rewritten' WHERE id = 2;
UPDATE orders SET note = 'filled by trigger' WHERE id = 3;
DROP TRIGGER zz_orders_rewrite ON orders;

-- Every value set once is still the value first written.
SELECT * FROM orders ORDER BY id;

-- Other paths for the first write: a writable CTE and a view set a NULL
-- column once; a second write through them is refused.
INSERT INTO orders VALUES (4, NULL, NULL, NULL, 'fourth');
WITH filled AS (UPDATE orders SET tracking_number = 'TRK-0004' WHERE id = 4 RETURNING tracking_number)
SELECT * FROM filled;
UPDATE orders_view SET tracking_number = 'TRK-0004-bis' WHERE id = 4;
-- Clearing a set value by an upsert is refused.
INSERT INTO orders VALUES (4, NULL, NULL, NULL, 'upsert')
    ON CONFLICT (id) DO UPDATE SET tracking_number = EXCLUDED.tracking_number;
-- A statement that changes several set write-once columns names the first
-- one in registration order.
SELECT sqlstate, column_name FROM expect_error(
    $$UPDATE orders SET shipped_on = '2031-01-01', invoice_id = 300, tracking_number = 'X' WHERE id = 2$$);
SELECT * FROM orders ORDER BY id;

-- Binary comparison, as for immutable columns: 1.0 -> 1.00 is a change of
-- a set value; the same value written again is not.
CREATE TABLE measurements (id int PRIMARY KEY, reading numeric, meta jsonb);
INSERT INTO measurements VALUES (1, 1.0, '{"unit": "bar"}'), (2, NULL, NULL);
SELECT integrity.protect_write_once('measurements', ARRAY['reading', 'meta']);
UPDATE measurements SET reading = 1.0, meta = '{"unit": "bar"}' WHERE id = 1;
UPDATE measurements SET reading = 1.00 WHERE id = 1;
UPDATE measurements SET meta = '{"unit": "psi"}' WHERE id = 1;
UPDATE measurements SET reading = 2.50, meta = '{"unit": "psi"}' WHERE id = 2;
UPDATE measurements SET reading = 2.5 WHERE id = 2;
SELECT * FROM measurements ORDER BY id;

\ir common/teardown.sql
