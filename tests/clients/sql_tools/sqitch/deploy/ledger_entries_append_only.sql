-- Deploy ledger_entries_append_only
-- requires: ledger_entries
BEGIN;
SELECT integrity.protect_append_only('ledger_entries');
COMMIT;
