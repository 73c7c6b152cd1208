-- 43_hardening_ledger_columns: the event trigger protected only the columns a
-- guard was registered with.  Renaming a ledger's amount or entry type column
-- (then adding a new column under the old name) silently rebound the ledger
-- credit guard, and renaming the accounts' key, limit or used columns broke
-- every insert.  Every column a guard reads is protected now (55000), and so
-- is the accounts table itself, which the guard finds by name: renaming it,
-- moving it to another schema (or renaming its schema) and dropping it broke
-- every insert into the ledger.
\ir common/setup.sql
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

-- The accounts table keeps its name and schema, and stays.
CREATE SCHEMA lc_archive;
SELECT sqlstate, message, detail, hint FROM expect_error($$ALTER TABLE lc_accounts RENAME TO lc_accounts_old$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE lc_accounts SET SCHEMA lc_archive$$);
SELECT sqlstate, message FROM expect_error($$ALTER SCHEMA public RENAME TO lc_public$$);
SELECT sqlstate, message FROM expect_error($$DROP TABLE lc_accounts$$);
SELECT sqlstate, message FROM expect_error($$DROP TABLE lc_accounts CASCADE$$);
-- Other tables move freely.
CREATE TABLE lc_other (account_id int, credit_limit numeric, used_credit numeric);
ALTER TABLE lc_other RENAME TO lc_other_renamed;
ALTER TABLE lc_other_renamed SET SCHEMA lc_archive;
DROP TABLE lc_archive.lc_other_renamed;
INSERT INTO lc_entries VALUES (3, 1, 'DEBIT', 1);
SELECT used_credit FROM lc_accounts;
-- Renaming the ledger itself is harmless: the guard knows it by OID.
ALTER TABLE lc_entries RENAME TO lc_entries_renamed;
INSERT INTO lc_entries_renamed VALUES (4, 1, 'DEBIT', 1);
SELECT used_credit FROM lc_accounts;
-- Once the guard is lifted, all of it works again.
SELECT integrity.unprotect('lc_entries_renamed', 'ledger_credit');
ALTER TABLE lc_accounts RENAME TO lc_accounts_old;
ALTER TABLE lc_accounts_old SET SCHEMA lc_archive;
SELECT integrity.guard_ledger_credit('lc_entries_renamed', 'lc_archive.lc_accounts_old', ARRAY['account_id']);
-- The ledger may go together with its accounts.
DROP TABLE lc_entries_renamed, lc_archive.lc_accounts_old;
SELECT count(*) AS guards FROM integrity.guard_registry WHERE guard = 'ledger_credit';
DROP SCHEMA lc_archive;

\ir common/teardown.sql
