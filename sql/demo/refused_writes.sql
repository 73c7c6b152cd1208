-- What `make run` shows: the registered guards, writes they allow, writes
-- they refuse with their SQLSTATE.
\set SHOW_CONTEXT never
\pset footer off

\echo '== integrity.guards'
SELECT table_name, guard, columns, options FROM integrity.guards ORDER BY 1, 2;

\echo '== allowed: a new ledger entry; an UPDATE of a piece bumps its version'
INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount, description, created_at)
VALUES (2, 10, 'CREDIT', 8000.00, 'payment', '2026-11-20 12:00+00');
UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT'
 WHERE id = '00000000-0000-4000-8000-000000000001' RETURNING id, status, version;

\echo '== refused: correcting a ledger entry in place'
UPDATE ledger_entries SET amount = 20000.00 WHERE description = 'order 1001';
\echo SQLSTATE :LAST_ERROR_SQLSTATE
\echo '== refused: deleting ledger entries, even under session_replication_role = replica'
SET session_replication_role = replica;
DELETE FROM ledger_entries WHERE retailer_id = 2;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET session_replication_role;
\echo '== refused: truncating one month of the ledger'
TRUNCATE ledger_entries_2026_10;
\echo SQLSTATE :LAST_ERROR_SQLSTATE

\echo '== refused: COMBINE_SPARES overwriting the creating transaction'
UPDATE sprinkler_spare_pieces
   SET status = 'SOLD_OUT', created_by_transaction_id = 'dddddddd-0000-4000-8000-000000000002'
 WHERE id = '00000000-0000-4000-8000-000000000002';
\echo SQLSTATE :LAST_ERROR_SQLSTATE

\echo '== allowed once, then refused: deleted_by_transaction_id is write-once'
UPDATE sprinkler_spare_pieces
   SET deleted_at = now(), deleted_by_transaction_id = 'eeeeeeee-0000-4000-8000-000000000003'
 WHERE id = '00000000-0000-4000-8000-000000000003';
UPDATE sprinkler_spare_pieces SET deleted_by_transaction_id = 'eeeeeeee-0000-4000-8000-000000000004'
 WHERE id = '00000000-0000-4000-8000-000000000003';
\echo SQLSTATE :LAST_ERROR_SQLSTATE

\echo '== optimistic locking: a writer that read version 2 sends version 2 + 1: accepted, no double bump'
UPDATE sprinkler_spare_pieces SET status = 'DISPATCHED', version = 3
 WHERE id = '00000000-0000-4000-8000-000000000001' RETURNING version;
\echo '== refused: a writer that read version 1 long ago sends version 1 + 1 (the row is at 3)'
UPDATE sprinkler_spare_pieces SET status = 'IN_STOCK', version = 2
 WHERE id = '00000000-0000-4000-8000-000000000001';
\echo SQLSTATE :LAST_ERROR_SQLSTATE

\echo '== refused: disabling a guard trigger behind the registry''s back'
ALTER TABLE ledger_entries DISABLE TRIGGER integrity_append_only;
\echo SQLSTATE :LAST_ERROR_SQLSTATE

\echo '== detected: a superuser disables every trigger and rewrites an amount; verify_chain() finds it'
SELECT integrity.chain_digest('ledger_entries') AS digest \gset
BEGIN;
ALTER EVENT TRIGGER integrity_ddl_command_start DISABLE;
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
ALTER TABLE ledger_entries_2026_10 DISABLE TRIGGER ALL;
UPDATE ledger_entries SET amount = 2500.00 WHERE description = 'order 1001';
SELECT * FROM integrity.verify_chain('ledger_entries', :'digest');
ROLLBACK;
\echo '== after the rollback: no rows, the ledger is what was written'
SELECT * FROM integrity.verify_chain('ledger_entries', :'digest');

\echo '== soft delete: deleting a user keeps the row; the WhatsApp number is free again'
DELETE FROM users WHERE id = 2;
INSERT INTO users VALUES (3, 2, '+977 980 000 0002');
SELECT id, whatsapp, deleted_at IS NOT NULL AS deleted FROM users ORDER BY id;
\echo '== refused: restoring the old user would take the number back from the new one'
SELECT integrity.restore('users', 2::bigint);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

\echo '== a maintained total: the stock''s quantity follows its pieces (COMBINE_SPARES sells four)'
SELECT quantity FROM inventory_stock;
UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT'
 WHERE id IN (SELECT id FROM sprinkler_spare_pieces WHERE status = 'IN_STOCK' ORDER BY id LIMIT 4);
SELECT quantity FROM inventory_stock;
\echo '== refused: setting the quantity by hand'
UPDATE inventory_stock SET quantity = 100;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
\echo '== guide 003''s v_stock_quantity_validation, replaced: violations() lists no mismatch'
SELECT * FROM integrity.violations('inventory_stock');

\echo '== a piece''s history: what changed, who changed it, when (refused changes left no trace)'
SELECT operation, changes, actor FROM integrity.history('sprinkler_spare_pieces', '00000000-0000-4000-8000-000000000001'::uuid);
