-- 32_hardening_schema_rename: reserve_stock, release_stock and commit_stock
-- keep prepared statements per table.  They name the table by schema, and
-- PostgreSQL re-parses a kept plan from its text after any schema change, so
-- a renamed schema used to make them fail (42P01), or, after two schemas
-- swapped names, act on the other schema's table.  They are rebuilt from the
-- table's OID after a schema change.
\ir common/setup.sql
\set VERBOSITY default

CREATE SCHEMA hardening_a;
CREATE SCHEMA hardening_b;
CREATE TABLE hardening_a.products (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL DEFAULT 0);
CREATE TABLE hardening_b.products (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL DEFAULT 0);
INSERT INTO hardening_a.products VALUES (1, 10, 0);
INSERT INTO hardening_b.products VALUES (1, 10, 0);
SELECT integrity.guard_stock('hardening_a.products');
SELECT integrity.guard_stock('hardening_b.products');

-- The statements for hardening_a.products are prepared and kept.
SELECT integrity.reserve_stock('hardening_a.products', 1, 1);

-- The two schemas swap names: the table that was reserved on is now
-- hardening_a_old.products.
ALTER SCHEMA hardening_a RENAME TO hardening_a_old;
ALTER SCHEMA hardening_b RENAME TO hardening_a;
SELECT integrity.reserve_stock('hardening_a_old.products', 1, 2);
SELECT integrity.release_stock('hardening_a_old.products', 1, 1);
SELECT integrity.commit_stock('hardening_a_old.products', 1, 1);
SELECT 'hardening_a_old' AS schema, stock, reserved_stock FROM hardening_a_old.products
UNION ALL
SELECT 'hardening_a', stock, reserved_stock FROM hardening_a.products;

-- A plain rename.
ALTER SCHEMA hardening_a_old RENAME TO hardening_c;
SELECT integrity.reserve_stock('hardening_c.products', 1, 1);
SELECT stock, reserved_stock FROM hardening_c.products;

DROP SCHEMA hardening_a, hardening_c CASCADE;

\ir common/teardown.sql
