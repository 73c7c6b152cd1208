-- 30_hardening_trigger_misuse: any role can attach the guards' trigger
-- functions to a table of its own, by hand, with arguments that name columns
-- of any type.  The functions check what they are attached to before they
-- read a datum: a column of another type is 42804, never a crash (this used
-- to take the server down with signal 11).  Each statement below runs, then
-- the session shows it is still connected.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

DROP ROLE IF EXISTS regress_integrity_hostile;
CREATE ROLE regress_integrity_hostile;
SET ROLE regress_integrity_hostile;

-- Text columns (by reference: the comparison with a zero datum crashed).
CREATE TEMP TABLE hostile_text (a text, b text);
CREATE TRIGGER x AFTER INSERT ON hostile_text FOR EACH ROW EXECUTE FUNCTION integrity.stock_guard('a', 'b');
SELECT sqlstate, message FROM expect_error($$INSERT INTO hostile_text VALUES ('x', 'y')$$);
SELECT 'still connected' AS server;
DROP TRIGGER x ON hostile_text;
CREATE TRIGGER x AFTER INSERT ON hostile_text FOR EACH ROW EXECUTE FUNCTION integrity.credit_guard('a', 'b');
SELECT sqlstate, message FROM expect_error($$INSERT INTO hostile_text VALUES ('x', 'y')$$);
SELECT 'still connected' AS server;

-- A type without a btree comparison function.
CREATE TEMP TABLE hostile_point (a point, b point);
CREATE TRIGGER x AFTER INSERT ON hostile_point FOR EACH ROW EXECUTE FUNCTION integrity.stock_guard('a', 'b');
SELECT sqlstate, message FROM expect_error($$INSERT INTO hostile_point VALUES ('(1,1)', '(2,2)')$$);
SELECT 'still connected' AS server;

-- numeric and integer mixed: each datum read as the other type.
CREATE TEMP TABLE hostile_mixed (a numeric, b bigint);
CREATE TRIGGER x AFTER INSERT ON hostile_mixed FOR EACH ROW EXECUTE FUNCTION integrity.credit_guard('a', 'b');
SELECT sqlstate, message FROM expect_error($$INSERT INTO hostile_mixed VALUES (10, 20)$$);
SELECT 'still connected' AS server;
DROP TRIGGER x ON hostile_mixed;
CREATE TRIGGER x AFTER INSERT ON hostile_mixed FOR EACH ROW EXECUTE FUNCTION integrity.stock_guard('b', 'a');
SELECT sqlstate, message FROM expect_error($$INSERT INTO hostile_mixed VALUES (10, 20)$$);
SELECT 'still connected' AS server;

-- The ledger credit guard on a ledger whose amount is text.
CREATE TEMP TABLE hostile_accounts (id int PRIMARY KEY, credit_limit numeric, used_credit numeric);
CREATE TEMP TABLE hostile_ledger (id int, entry_type text, amount text);
CREATE TRIGGER x AFTER INSERT ON hostile_ledger FOR EACH ROW
    EXECUTE FUNCTION integrity.ledger_credit_guard('pg_temp.hostile_accounts', 'amount', 'entry_type',
                                                   'DEBIT', 'CREDIT', 'credit_limit', 'used_credit', 'id');
SELECT sqlstate, message FROM expect_error($$INSERT INTO hostile_ledger VALUES (1, 'DEBIT', 'lots')$$);
SELECT 'still connected' AS server;

-- Wrong events and levels are refused as before (39P01).
CREATE TEMP TABLE hostile_ints (a int, b int);
CREATE TRIGGER x AFTER DELETE ON hostile_ints FOR EACH ROW EXECUTE FUNCTION integrity.stock_guard('a', 'b');
INSERT INTO hostile_ints VALUES (1, 1);
SELECT sqlstate, message FROM expect_error($$DELETE FROM hostile_ints$$);
CREATE TRIGGER y AFTER INSERT ON hostile_ints FOR EACH STATEMENT EXECUTE FUNCTION integrity.stock_guard('a', 'b');
SELECT sqlstate, message FROM expect_error($$INSERT INTO hostile_ints VALUES (1, 1)$$);
SELECT 'still connected' AS server;

RESET ROLE;
DROP TABLE hostile_text, hostile_point, hostile_mixed, hostile_accounts, hostile_ledger, hostile_ints;
DROP ROLE regress_integrity_hostile;

\ir common/teardown.sql
