-- 36_hardening_multi_row_all_or_nothing: a reservation of several rows is all
-- or nothing.  A BEFORE UPDATE trigger of the table's own that skips one row
-- (RETURN NULL) used to leave the others reserved while reserve_stock
-- returned true; now it raises 27000 and reserves nothing.
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE aon_products (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL DEFAULT 0);
INSERT INTO aon_products VALUES (1, 10, 0), (2, 10, 0), (3, 10, 0);
SELECT integrity.guard_stock('aon_products');
CREATE FUNCTION aon_skip_two() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = 2 THEN RETURN NULL; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER aon_skip_two BEFORE UPDATE ON aon_products FOR EACH ROW EXECUTE FUNCTION aon_skip_two();

SELECT sqlstate, message, detail, hint FROM expect_error($$SELECT integrity.reserve_stock('aon_products', ARRAY[1, 2, 3], ARRAY[1, 1, 1])$$);
SELECT * FROM aon_products ORDER BY id;
-- Rows the trigger lets through are reserved as before.
SELECT integrity.reserve_stock('aon_products', ARRAY[3, 1, 3], ARRAY[1, 2, 3]);
SELECT * FROM aon_products ORDER BY id;

DROP TABLE aon_products;
DROP FUNCTION aon_skip_two();
