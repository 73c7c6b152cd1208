-- 42_hardening_ledger_options: guard_ledger_credit used to accept a
-- debit_value or credit_value that is no value of the entry type column (an
-- enum without that label), and such a guard, or one whose label was renamed
-- later, made violations() fail for the whole database with 22P02.  The values
-- are checked at registration (22P02); violations() reports the broken guard
-- and goes on, and health() reports it.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TYPE lo_entry_type AS ENUM ('DEBIT', 'CREDIT');
CREATE TABLE lo_accounts (account_id int PRIMARY KEY, credit_limit numeric NOT NULL, used_credit numeric NOT NULL DEFAULT 0);
CREATE TABLE lo_entries (id int PRIMARY KEY, account_id int NOT NULL, entry_type lo_entry_type NOT NULL,
                         amount numeric NOT NULL);
INSERT INTO lo_accounts VALUES (1, 100, 0);

SELECT sqlstate, message FROM expect_error(
    $$SELECT integrity.guard_ledger_credit('lo_entries', 'lo_accounts', ARRAY['account_id'], debit_value => 'debit')$$);
SELECT count(*) AS guards FROM integrity.guards WHERE table_name = 'lo_entries'::regclass;

SELECT integrity.guard_ledger_credit('lo_entries', 'lo_accounts', ARRAY['account_id']);
INSERT INTO lo_entries VALUES (1, 1, 'DEBIT', 10);
SELECT used_credit FROM lo_accounts;

-- The label is renamed later.
ALTER TYPE lo_entry_type RENAME VALUE 'DEBIT' TO 'CHARGE';
SELECT guard, table_name, row_key, detail FROM integrity.violations() WHERE table_name = 'lo_entries'::regclass;
SELECT count(*) FILTER (WHERE table_name = 'lo_entries'::regclass) AS broken_guards_reported
  FROM integrity.violations();
SELECT severity, guard, problem, remedy FROM integrity.health() WHERE table_name = 'lo_entries'::regclass;
-- Entries are refused until the guard is registered again.
SELECT sqlstate, message FROM expect_error($$INSERT INTO lo_entries VALUES (2, 1, 'CHARGE', 5)$$);
SELECT integrity.unprotect('lo_entries', 'ledger_credit');
SELECT integrity.guard_ledger_credit('lo_entries', 'lo_accounts', ARRAY['account_id'], debit_value => 'CHARGE');
SELECT count(*) AS problems FROM integrity.health() WHERE table_name = 'lo_entries'::regclass;
INSERT INTO lo_entries VALUES (2, 1, 'CHARGE', 5);
SELECT used_credit FROM lo_accounts;

DROP TABLE lo_entries, lo_accounts;
DROP TYPE lo_entry_type;

\ir common/teardown.sql
