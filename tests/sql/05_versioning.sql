-- 05_versioning: enable_versioning makes every UPDATE leave
-- version = OLD.version + 1.  Strict mode accepts an explicit version equal
-- to the one read ("what you read") or read + 1 ("read + 1"), without double
-- bump, and refuses anything else as a stale write (40001).  Lenient mode
-- overrides whatever the UPDATE wrote.
\ir common/setup.sql
\set VERBOSITY default

CREATE TABLE products (
    id      int PRIMARY KEY,
    name    text NOT NULL,
    price   numeric(10,2) NOT NULL,
    version int NOT NULL DEFAULT 1
);
INSERT INTO products VALUES (1, 'valve', 10.00, 1), (2, 'nozzle', 2.50, 1), (3, 'pipe', 7.00, 5);

SELECT integrity.enable_versioning('products');

-- Registry row and triggers: the bump (BEFORE) and the check (AFTER, only
-- when the final version is not OLD + 1), both for origin writes only.
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name = 'products'::regclass;
SELECT * FROM guard_triggers('products');

-- INSERT keeps the version it is given; DELETE is not affected.
INSERT INTO products VALUES (4, 'gauge', 3.00, 1), (5, 'clamp', 1.00, 42);
DELETE FROM products WHERE id = 5;

-- An UPDATE that does not mention the version bumps it by one, even when
-- no value changes.
UPDATE products SET price = 11.00 WHERE id = 1;
UPDATE products SET name = name WHERE id = 2;
SELECT id, price, version FROM products ORDER BY id;
-- "read + 1": the caller sends the next version; no double bump.
UPDATE products SET price = 12.00, version = 3 WHERE id = 1;
UPDATE products SET version = version + 1 WHERE id = 2;
-- "what you read": the caller sends the version it read; bumped once.
UPDATE products SET price = 13.00, version = 3 WHERE id = 1;
UPDATE products SET version = version WHERE id = 2;
SELECT id, price, version FROM products ORDER BY id;
-- A multi-row UPDATE bumps each row once from its own version.
UPDATE products SET price = price + 1;
SELECT id, price, version FROM products ORDER BY id;

-- An UPDATE that does not assign the version gets it from its own plan:
-- _next_version runs once per row and neither trigger fires
-- (05_update_plans has the details).  One that assigns it runs the bump once
-- per row; the check function is not called when the version is right (its
-- WHEN clause is false).
BEGIN;
SELECT * FROM integrity_calls('UPDATE products SET price = price');
SELECT * FROM integrity_calls('UPDATE products SET price = price, version = version');
ROLLBACK;

-- Strict: any other explicit version is a stale write, refused with 40001.
-- Row 1 is at version 5 here.
UPDATE products SET price = 0, version = 3 WHERE id = 1;
UPDATE products SET price = 0, version = 7 WHERE id = 1;
UPDATE products SET price = 0, version = NULL WHERE id = 1;
UPDATE products SET version = version - 1;
SELECT id, price, version FROM products ORDER BY id;

-- Error fields: 40001, the column, the bump trigger as constraint, the
-- key, the versions in DETAIL, a retry HINT.
\x on
SELECT * FROM expect_error($$UPDATE products SET price = 0, version = 4 WHERE id = 1$$);
\x off

-- Optimistic locking, both conventions.  Two clients read row 3 at version 6.
SELECT id, version FROM products WHERE id = 3;
-- Client A ("read + 1") writes first: 6 -> 7.
UPDATE products SET price = 20.00, version = 7 WHERE id = 3 AND version = 6;
-- Client B ("read + 1") also sends 7, which is now exactly the row's
-- version: strict mode cannot tell it from a fresh "what you read" writer
-- and accepts it (7 -> 8).  This is documented: the WHERE version = $read
-- clause is what catches this case ...
UPDATE products SET price = 21.00, version = 7 WHERE id = 3;
-- ... as here, where a WHERE clause on the version read matches no row
-- (the price stays 21.00).
UPDATE products SET price = 21.50, version = 7 WHERE id = 3 AND version = 6;
-- A writer two versions behind (read 6, row at 8) is refused whichever
-- convention it uses.
UPDATE products SET price = 22.00, version = 6 WHERE id = 3;
UPDATE products SET price = 22.00, version = 7 WHERE id = 3;
SELECT id, price, version FROM products WHERE id = 3;

-- INSERT ... ON CONFLICT DO UPDATE bumps; a stale EXCLUDED.version is refused.
INSERT INTO products VALUES (2, 'nozzle', 3.00, 1)
    ON CONFLICT (id) DO UPDATE SET price = EXCLUDED.price;
INSERT INTO products VALUES (2, 'nozzle', 3.50, 1)
    ON CONFLICT (id) DO UPDATE SET price = EXCLUDED.price, version = EXCLUDED.version;
SELECT sqlstate, column_name, constraint_name FROM expect_error(
    $$INSERT INTO products VALUES (2, 'nozzle', 3.50, 1)
      ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version$$);
-- MERGE bumps, and refuses a stale version.
MERGE INTO products p
USING (VALUES (2, 4.00)) AS s(id, price) ON p.id = s.id
WHEN MATCHED THEN UPDATE SET price = s.price;
MERGE INTO products p
USING (VALUES (2, 1)) AS s(id, version) ON p.id = s.id
WHEN MATCHED THEN UPDATE SET version = s.version;
-- A writable CTE returns the bumped version.
WITH changed AS (UPDATE products SET price = 5.00 WHERE id = 2 RETURNING id, version)
SELECT * FROM changed;
-- An UPDATE through a view bumps too.
CREATE VIEW products_view AS SELECT id, price FROM products;
UPDATE products_view SET price = 6.00 WHERE id = 2;
SELECT id, price, version FROM products ORDER BY id;

-- An FK ON UPDATE CASCADE into a versioned table is an UPDATE of the child
-- rows: they are bumped once.
CREATE TABLE categories (code text PRIMARY KEY);
CREATE TABLE catalog_items (
    id       int PRIMARY KEY,
    category text REFERENCES categories ON UPDATE CASCADE,
    version  bigint NOT NULL DEFAULT 1
);
INSERT INTO categories VALUES ('pipes');
INSERT INTO catalog_items VALUES (1, 'pipes', 1), (2, 'pipes', 10);
SELECT integrity.enable_versioning('catalog_items');
UPDATE categories SET code = 'tubes';
SELECT * FROM catalog_items ORDER BY id;

-- A BEFORE trigger that sorts after integrity_version_bump and rewrites
-- the version is refused by integrity_version_check (23001).
CREATE FUNCTION products_rewrite_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := 1000;
    RETURN NEW;
END $$;
CREATE TRIGGER zz_products_rewrite_version BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION products_rewrite_version();
UPDATE products SET price = 1.00 WHERE id = 4;
\x on
SELECT * FROM expect_error($$UPDATE products SET price = 1.00 WHERE id = 4$$);
\x off
DROP TRIGGER zz_products_rewrite_version ON products;
-- A later trigger that leaves the version at OLD + 1 is fine.
CREATE FUNCTION products_keep_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER zz_products_keep_version BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION products_keep_version();
UPDATE products SET price = 1.00 WHERE id = 4;
DROP TRIGGER zz_products_keep_version ON products;
-- A trigger that sorts before the bump and sets OLD + 1 is not bumped twice.
CREATE TRIGGER aa_products_keep_version BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION products_keep_version();
UPDATE products SET price = 2.00 WHERE id = 4;
DROP TRIGGER aa_products_keep_version ON products;
SELECT id, price, version FROM products ORDER BY id;

------------------------------------------------------------------------------
-- Lenient mode: whatever version the UPDATE writes, the row ends at OLD + 1.
CREATE TABLE drafts (
    id          int PRIMARY KEY,
    body        text,
    row_version smallint
);
INSERT INTO drafts VALUES (1, 'a', 1), (2, 'b', 1), (3, 'legacy', NULL);
SELECT integrity.enable_versioning('drafts', 'row_version', strict => false);
SELECT table_name, guard, columns, options FROM integrity.guards
 WHERE table_name = 'drafts'::regclass;
UPDATE drafts SET body = 'a2' WHERE id = 1;
UPDATE drafts SET body = 'a3', row_version = 100 WHERE id = 1;
UPDATE drafts SET body = 'a4', row_version = 0 WHERE id = 1;
UPDATE drafts SET body = 'b2', row_version = NULL WHERE id = 2;
UPDATE drafts SET body = 'b3', row_version = row_version + 1 WHERE id = 2;
-- A row without a version (legacy data) starts counting at 1.
UPDATE drafts SET body = 'legacy 2' WHERE id = 3;
SELECT * FROM drafts ORDER BY id;

-- Strict mode and a NULL version: the legacy row starts at 1 whatever the
-- UPDATE sets.
CREATE TABLE legacy_rows (id int PRIMARY KEY, version bigint);
INSERT INTO legacy_rows VALUES (1, NULL), (2, NULL);
SELECT integrity.enable_versioning('legacy_rows');
UPDATE legacy_rows SET version = 5 WHERE id = 1;
UPDATE legacy_rows SET version = NULL WHERE id = 2;
SELECT * FROM legacy_rows ORDER BY id;

-- The version cannot wrap around: it reaches the type's maximum, then
-- UPDATE fails with 22003.
INSERT INTO drafts VALUES (4, 'near the end', 32766);
UPDATE drafts SET body = 'at the end' WHERE id = 4;
SELECT * FROM drafts WHERE id = 4;
SELECT sqlstate, message FROM expect_error($$UPDATE drafts SET body = 'past the end' WHERE id = 4$$);
INSERT INTO legacy_rows VALUES (3, 9223372036854775807);
SELECT sqlstate, message FROM expect_error($$UPDATE legacy_rows SET id = 4 WHERE id = 3$$);
SELECT * FROM legacy_rows ORDER BY id;

\ir common/teardown.sql
