-- 43_hardening_ledger_columns: the event trigger protected only the columns a
-- guard was registered with.  Renaming a ledger's amount or entry type column
-- (then adding a new column under the old name) silently rebound the ledger
-- credit guard, and renaming the accounts' key, limit or used columns broke
-- every insert.  Every column a guard reads is protected now (55000).
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE lc_accounts (account_id int PRIMARY KEY, credit_limit numeric NOT NULL,
                          used_credit numeric NOT NULL DEFAULT 0, note text);
CREATE TABLE lc_entries (id int PRIMARY KEY, account_id int NOT NULL, entry_type text NOT NULL,
                         amount numeric NOT NULL, memo text);
INSERT INTO lc_accounts VALUES (1, 100, 0);
SELECT integrity.guard_ledger_credit('lc_entries', 'lc_accounts', ARRAY['account_id']);
INSERT INTO lc_entries VALUES (1, 1, 'DEBIT', 10);

SELECT sqlstate, message, detail FROM expect_error($$ALTER TABLE lc_entries RENAME COLUMN amount TO old_amount$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE lc_entries RENAME COLUMN entry_type TO kind$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE lc_entries DROP COLUMN amount$$);
SELECT sqlstate, message, detail FROM expect_error($$ALTER TABLE lc_accounts RENAME COLUMN account_id TO id$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE lc_accounts RENAME COLUMN credit_limit TO max_credit$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE lc_accounts DROP COLUMN used_credit$$);
-- Columns no guard reads stay free.
ALTER TABLE lc_entries RENAME COLUMN memo TO description;
ALTER TABLE lc_accounts DROP COLUMN note;
-- The guard still works on the columns it was registered with.
INSERT INTO lc_entries VALUES (2, 1, 'DEBIT', 5);
SELECT used_credit FROM lc_accounts;
SELECT count(*) AS problems FROM integrity.health() WHERE table_name = 'lc_entries'::regclass;

DROP TABLE lc_entries, lc_accounts;
