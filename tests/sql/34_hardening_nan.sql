-- 34_hardening_nan: numeric's NaN compares greater than every number, so
-- NaN >= 0 and reserved <= NaN hold: a NaN stock, credit limit or ledger
-- amount used to pass every stock and credit rule (reservations of 1e9
-- succeeded against a NaN stock) and violations() reported nothing.  NaN is
-- refused in guarded quantities (23514) and as an operation's quantity (22023),
-- and violations() reports NaN rows left from before.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE nan_products (id int PRIMARY KEY, stock numeric NOT NULL, reserved_stock numeric NOT NULL DEFAULT 0);
CREATE TABLE nan_credits (account_id int PRIMARY KEY, credit_limit numeric(14, 2) NOT NULL, used_credit numeric(14, 2) NOT NULL DEFAULT 0);
CREATE TABLE nan_entries (id int PRIMARY KEY, account_id int NOT NULL, entry_type text NOT NULL, amount numeric(14, 2) NOT NULL);
INSERT INTO nan_products VALUES (1, 10, 0), (2, 10, 0);
INSERT INTO nan_credits VALUES (1, 100, 0), (2, 100, 0);
-- A legacy row from before the guard.
INSERT INTO nan_products VALUES (3, 'NaN', 0);
SELECT integrity.guard_stock('nan_products');
SELECT integrity.guard_credit('nan_credits');
SELECT integrity.guard_ledger_credit('nan_entries', 'nan_credits', ARRAY['account_id']);

-- Guarded quantities: 23514, with the column at fault.
SELECT sqlstate, message, column_name, constraint_name FROM expect_error($$UPDATE nan_products SET stock = 'NaN' WHERE id = 1$$);
SELECT sqlstate, message, column_name FROM expect_error($$UPDATE nan_products SET reserved_stock = 'NaN' WHERE id = 1$$);
SELECT sqlstate, message, column_name FROM expect_error($$INSERT INTO nan_products VALUES (4, 'NaN', 'NaN')$$);
SELECT sqlstate, message, column_name FROM expect_error($$UPDATE nan_credits SET credit_limit = 'NaN' WHERE account_id = 1$$);
SELECT sqlstate, message, column_name FROM expect_error($$UPDATE nan_credits SET used_credit = 'NaN' WHERE account_id = 2$$);
-- A NaN ledger amount is not a positive amount.
SELECT sqlstate, message, detail FROM expect_error($$INSERT INTO nan_entries VALUES (1, 1, 'DEBIT', 'NaN')$$);

-- Operations: 22023, like zero and negative quantities.
SELECT sqlstate, message FROM expect_error($$SELECT integrity.reserve_stock('nan_products', 1, 'NaN')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.release_stock('nan_products', 1, 'NaN')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.commit_stock('nan_products', 1, 'NaN')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.reserve_stock('nan_products', ARRAY[1, 2], ARRAY[1, 'NaN']::numeric[])$$);

-- Nothing changed; numbers still work.
SELECT integrity.reserve_stock('nan_products', 1, 2), integrity.reserve_stock('nan_products', 2, 1e9);
SELECT * FROM nan_products ORDER BY id;
SELECT * FROM nan_credits ORDER BY account_id;

-- The legacy NaN row is reported.
SELECT guard, row_key, detail FROM integrity.violations('nan_products');

-- Integer quantity columns cannot hold NaN: their rows are checked the same
-- way.  A BEFORE trigger that fires after the guard's gives it the recheck,
-- whose WHEN clause tests for NaN only where the columns are numeric.
CREATE TABLE nan_int_products (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL DEFAULT 0);
SELECT integrity.guard_stock('nan_int_products');
INSERT INTO nan_int_products VALUES (1, 5, 2);
SELECT sqlstate, message FROM expect_error($$UPDATE nan_int_products SET reserved_stock = 6$$);
CREATE FUNCTION nan_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER zz_nan_touch BEFORE INSERT OR UPDATE ON nan_products FOR EACH ROW EXECUTE FUNCTION nan_touch();
CREATE TRIGGER zz_nan_touch BEFORE INSERT OR UPDATE ON nan_int_products FOR EACH ROW EXECUTE FUNCTION nan_touch();
SELECT tgrelid::regclass, tgname, pg_get_triggerdef(oid) LIKE '%NaN%' AS tests_nan FROM pg_trigger
 WHERE tgrelid IN ('nan_products'::regclass, 'nan_int_products'::regclass) AND tgname LIKE 'integrity_stock%'
 ORDER BY tgrelid::regclass::text, tgname;
-- The recheck catches NaN that the later trigger writes.
CREATE OR REPLACE FUNCTION nan_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'nan_products' THEN NEW.stock := 'NaN'; END IF;
    RETURN NEW;
END $$;
SELECT sqlstate, message, constraint_name FROM expect_error($$UPDATE nan_products SET reserved_stock = reserved_stock WHERE id = 2$$);
DROP FUNCTION nan_touch() CASCADE;

DROP TABLE nan_entries, nan_credits, nan_products, nan_int_products;

\ir common/teardown.sql
