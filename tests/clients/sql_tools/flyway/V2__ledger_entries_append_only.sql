-- Rows are inserted, never updated or deleted: corrections are new entries.
SELECT integrity.protect_append_only('ledger_entries');
