-- 38_hardening_unusable_columns: registration used to accept columns a guard
-- can never work with: a generated version, stock, reserved or used-credit
-- column (the guard writes it; PostgreSQL refuses every write), and a char(n)
-- entry-type column (its padded values never equal the debit and credit
-- values, so every entry would be refused).  They are refused at registration
-- (428C9, 42804), and nothing is registered.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE unusable_pieces (id int PRIMARY KEY, n int NOT NULL DEFAULT 1,
                              version int GENERATED ALWAYS AS (n + 1) STORED);
CREATE TABLE unusable_products (id int PRIMARY KEY, base int NOT NULL DEFAULT 0,
                                stock int GENERATED ALWAYS AS (base * 2) STORED,
                                reserved_stock int GENERATED ALWAYS AS (base) STORED);
CREATE TABLE unusable_stock (id int PRIMARY KEY, reserved_stock int NOT NULL DEFAULT 0, base int NOT NULL DEFAULT 0,
                             stock int GENERATED ALWAYS AS (base * 2) STORED);
CREATE TABLE unusable_accounts (account_id int PRIMARY KEY, credit_limit numeric NOT NULL,
                                used_credit numeric GENERATED ALWAYS AS (credit_limit / 2) STORED);
CREATE TABLE unusable_limits (account_id int PRIMARY KEY, base numeric NOT NULL DEFAULT 0,
                              credit_limit numeric GENERATED ALWAYS AS (base * 2) STORED,
                              used_credit numeric NOT NULL DEFAULT 0);
CREATE TABLE unusable_entries (id int PRIMARY KEY, account_id int NOT NULL, entry_type char(6) NOT NULL,
                               amount numeric NOT NULL);

SELECT sqlstate, message, detail FROM expect_error($$SELECT integrity.enable_versioning('unusable_pieces')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.guard_stock('unusable_products')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.guard_stock('unusable_stock')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.guard_credit('unusable_accounts')$$);
SELECT sqlstate, message, detail, hint FROM expect_error(
    $$SELECT integrity.guard_ledger_credit('unusable_entries', 'unusable_limits', ARRAY['account_id'])$$);
SELECT sqlstate, message FROM expect_error(
    $$SELECT integrity.guard_ledger_credit('unusable_entries', 'unusable_accounts', ARRAY['account_id'])$$);
-- A generated credit limit is only read: allowed.
SELECT integrity.guard_credit('unusable_limits');
SELECT table_name, guard FROM integrity.guards
 WHERE table_name::text LIKE 'unusable%' ORDER BY 1, 2;
SELECT count(*) AS triggers FROM pg_trigger
 WHERE tgrelid::regclass::text LIKE 'unusable%' AND tgname LIKE 'integrity%' AND NOT tgisinternal;

DROP TABLE unusable_pieces, unusable_products, unusable_stock, unusable_accounts, unusable_limits, unusable_entries;

\ir common/teardown.sql
