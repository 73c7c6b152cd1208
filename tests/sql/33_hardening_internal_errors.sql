-- 33_hardening_internal_errors: an error a caller can provoke gets a proper
-- SQLSTATE and message, never XX000 with a Rust backtrace in DETAIL.
\ir common/setup.sql
\set VERBOSITY default

-- A relation OID that does not exist.
SELECT sqlstate, message, detail FROM expect_error($$SELECT integrity.reserve_stock(4294967000::oid::regclass, 1, 1)$$);
SELECT sqlstate, message, detail FROM expect_error($$SELECT integrity.release_stock(4294967000::oid::regclass, 1, 1)$$);
SELECT sqlstate, message, detail FROM expect_error($$SELECT integrity.commit_stock(4294967000::oid::regclass, 1, 1)$$);

-- An error PostgreSQL raises inside the extension's compiled code (here: the
-- id's type does not match the key) keeps its SQLSTATE and carries no Rust
-- backtrace in DETAIL, although the test cluster runs with RUST_BACKTRACE=1.
CREATE TABLE internal_errors_products (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL DEFAULT 0);
INSERT INTO internal_errors_products VALUES (1, 10, 0);
SELECT integrity.guard_stock('internal_errors_products');
SELECT sqlstate, message, detail FROM expect_error($$SELECT integrity.reserve_stock('internal_errors_products', row(1, 2), 1)$$);
SELECT current_setting('server_version_num') IS NOT NULL AS still_connected;
DROP TABLE internal_errors_products;

\ir common/teardown.sql
