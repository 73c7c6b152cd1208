-- Verify ledger_entries_append_only: division by zero when the guard is missing.
BEGIN;
SELECT 1 / count(*) FROM integrity.guards
 WHERE table_name = 'ledger_entries'::regclass AND guard = 'append_only';
ROLLBACK;
