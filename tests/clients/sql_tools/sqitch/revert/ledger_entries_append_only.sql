-- Revert ledger_entries_append_only
BEGIN;
SELECT integrity.unprotect('ledger_entries', 'append_only');
COMMIT;
