-- 36_hardening_multi_row_all_or_nothing: a reservation of several rows is all
-- or nothing.  A BEFORE UPDATE trigger of the table's own that skips one row
-- (RETURN NULL) used to leave the others reserved while reserve_stock
-- returned true; now it raises 27000 and reserves nothing.  The single-row
-- operations answered a skipped row with "not enough" (false, or a release
-- refused for a reservation that was there), and a skipped update of a
-- ledger's account with "credit limit exceeded": they raise 27000 too.
\ir common/setup.sql
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


-- One row at a time: a skipped row is told apart from a row without enough.
ALTER TABLE aon_products DISABLE TRIGGER aon_skip_two;
UPDATE aon_products SET reserved_stock = 5 WHERE id = 2;
ALTER TABLE aon_products ENABLE TRIGGER aon_skip_two;
SELECT sqlstate, message, detail, hint, table_name, constraint_name
  FROM expect_error($$SELECT integrity.reserve_stock('aon_products', 2, 1)$$);
SELECT integrity.reserve_stock('aon_products', 2, 6) AS not_enough;
SELECT sqlstate, message, detail FROM expect_error($$SELECT integrity.release_stock('aon_products', 2, 1)$$);
SELECT sqlstate, message, detail FROM expect_error($$SELECT integrity.commit_stock('aon_products', 2, 1)$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.release_stock('aon_products', 2, 6)$$);
SELECT integrity.reserve_stock('aon_products', 3, 1) AS reserved_on_another_row;
SELECT * FROM aon_products ORDER BY id;

-- The ledger's account update, skipped by a trigger on the accounts.
CREATE TABLE aon_accounts (account_id int PRIMARY KEY, credit_limit numeric NOT NULL,
                           used_credit numeric NOT NULL DEFAULT 0);
CREATE TABLE aon_entries (id int PRIMARY KEY, account_id int NOT NULL, entry_type text NOT NULL,
                          amount numeric NOT NULL);
INSERT INTO aon_accounts VALUES (1, 100, 0), (2, 100, 0);
SELECT integrity.guard_ledger_credit('aon_entries', 'aon_accounts', ARRAY['account_id']);
CREATE FUNCTION aon_skip_account_one() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.account_id = 1 THEN RETURN NULL; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER aon_skip_account_one BEFORE UPDATE ON aon_accounts
    FOR EACH ROW EXECUTE FUNCTION aon_skip_account_one();
SELECT sqlstate, message, detail, hint, table_name, constraint_name
  FROM expect_error($$INSERT INTO aon_entries VALUES (1, 1, 'DEBIT', 10)$$);
SELECT sqlstate, message FROM expect_error($$INSERT INTO aon_entries VALUES (2, 1, 'DEBIT', 1000)$$);
INSERT INTO aon_entries VALUES (3, 2, 'DEBIT', 10);
SELECT * FROM aon_accounts ORDER BY account_id;
SELECT count(*) AS entries FROM aon_entries;

DROP TABLE aon_products, aon_entries, aon_accounts;
DROP FUNCTION aon_skip_two(), aon_skip_account_one();

\ir common/teardown.sql
