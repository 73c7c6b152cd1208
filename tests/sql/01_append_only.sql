-- 01_append_only: protect_append_only allows INSERT and refuses every other
-- way of changing or removing rows (23001), whatever path the write takes.
\ir common/setup.sql
\set VERBOSITY default

CREATE TABLE accounts (
    account text PRIMARY KEY
);
CREATE TABLE ledger (
    id      int PRIMARY KEY,
    account text NOT NULL REFERENCES accounts ON DELETE CASCADE ON UPDATE CASCADE,
    amount  numeric(12,2) NOT NULL,
    note    text
);
INSERT INTO accounts VALUES ('acme'), ('globex'), ('initech');
-- Rows that exist before registration are protected too.
INSERT INTO ledger VALUES (1, 'acme', 100.00, 'opening'),
                          (2, 'globex', 250.00, 'opening'),
                          (3, 'initech', 75.50, 'opening');

SELECT integrity.protect_append_only('ledger');

-- The registry row and the installed triggers (both ENABLE ALWAYS).
SELECT table_name, guard, columns, options FROM integrity.guards ORDER BY table_name::text, guard;
SELECT * FROM guard_triggers('ledger');

-- INSERT is allowed, single and multi-row, and COPY too.
INSERT INTO ledger VALUES (4, 'acme', -20.00, 'refund of #1');
INSERT INTO ledger SELECT 5, 'globex', 10.00, 'fee';
COPY ledger FROM stdin;
6	initech	5.00	copied
\.
SELECT * FROM ledger ORDER BY id;

-- Reading with row locks is not a change.
SELECT id FROM ledger WHERE id = 1 FOR UPDATE;

-- UPDATE and DELETE of existing rows are refused.
UPDATE ledger SET amount = 0 WHERE id = 1;
UPDATE ledger SET note = note;
DELETE FROM ledger WHERE id = 2;
DELETE FROM ledger;
-- TRUNCATE is refused.
TRUNCATE ledger;
TRUNCATE accounts, ledger;
-- ... also when the ledger would only be truncated by CASCADE from its parent.
TRUNCATE accounts CASCADE;
-- An UPDATE or DELETE that matches no row has nothing to refuse.
UPDATE ledger SET amount = 0 WHERE id = 999;
DELETE FROM ledger WHERE id = 999;
SELECT * FROM ledger ORDER BY id;

-- The error fields: 23001, the table, the trigger as constraint, the key
-- and the qualified table name in DETAIL, and a HINT.
\x on
SELECT * FROM expect_error($$UPDATE ledger SET amount = 1 WHERE id = 3$$);
SELECT * FROM expect_error($$DELETE FROM ledger WHERE id = 3$$);
SELECT * FROM expect_error($$TRUNCATE ledger$$);
\x off

-- INSERT ... ON CONFLICT DO NOTHING inserts what is new and leaves the rest.
INSERT INTO ledger VALUES (1, 'acme', 1.00, 'dup'), (7, 'acme', 1.00, 'new')
    ON CONFLICT (id) DO NOTHING;
-- INSERT ... ON CONFLICT DO UPDATE on an existing row is an UPDATE: refused.
INSERT INTO ledger VALUES (1, 'acme', 999.00, 'upsert')
    ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount;
SELECT sqlstate, constraint_name, detail FROM expect_error(
    $$INSERT INTO ledger VALUES (2, 'globex', 0, 'upsert') ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note$$);
-- ... but the same statement on a new key only inserts.
INSERT INTO ledger VALUES (8, 'acme', 2.00, 'upsert new')
    ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount;

-- MERGE: WHEN NOT MATCHED THEN INSERT is allowed; UPDATE and DELETE are refused.
MERGE INTO ledger l
USING (VALUES (9, 'initech', 3.00)) AS s(id, account, amount) ON l.id = s.id
WHEN MATCHED THEN UPDATE SET amount = s.amount
WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.account, s.amount, 'merged');
MERGE INTO ledger l
USING (VALUES (1, 0.00)) AS s(id, amount) ON l.id = s.id
WHEN MATCHED THEN UPDATE SET amount = s.amount;
MERGE INTO ledger l
USING (VALUES (2)) AS s(id) ON l.id = s.id
WHEN MATCHED THEN DELETE;
SELECT sqlstate, constraint_name FROM expect_error(
    $$MERGE INTO ledger l USING (VALUES (3)) AS s(id) ON l.id = s.id WHEN MATCHED THEN DELETE$$);

-- Writable CTEs: the UPDATE or DELETE inside the WITH is refused.
WITH moved AS (UPDATE ledger SET amount = amount * 2 WHERE id = 1 RETURNING id)
SELECT count(*) FROM moved;
WITH gone AS (DELETE FROM ledger WHERE account = 'globex' RETURNING id)
INSERT INTO ledger SELECT id + 100, 'globex', 0, 'shadow' FROM gone;
-- An INSERT inside a writable CTE is fine.
WITH added AS (INSERT INTO ledger VALUES (10, 'acme', 1.00, 'cte') RETURNING id)
SELECT id FROM added;

-- Through an auto-updatable view, UPDATE and DELETE reach the table's trigger.
CREATE VIEW ledger_view AS SELECT id, account, amount, note FROM ledger WHERE amount > 0;
UPDATE ledger_view SET note = 'via view' WHERE id = 1;
DELETE FROM ledger_view WHERE id = 1;
INSERT INTO ledger_view VALUES (11, 'initech', 4.00, 'via view');
-- A view with INSTEAD OF triggers that writes the table is refused the same way.
CREATE VIEW ledger_notes AS SELECT id, note FROM ledger;
CREATE FUNCTION ledger_notes_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger SET note = NEW.note WHERE id = OLD.id;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_notes_update INSTEAD OF UPDATE ON ledger_notes
    FOR EACH ROW EXECUTE FUNCTION ledger_notes_update();
UPDATE ledger_notes SET note = 'instead of' WHERE id = 1;

-- FK ON DELETE CASCADE from the parent would delete ledger rows: refused,
-- and the parent row stays as well.
DELETE FROM accounts WHERE account = 'globex';
-- FK ON UPDATE CASCADE would update ledger rows: refused.
UPDATE accounts SET account = 'acme corp' WHERE account = 'acme';
-- A parent row without ledger rows can still be deleted.
INSERT INTO accounts VALUES ('hooli');
DELETE FROM accounts WHERE account = 'hooli';
SELECT * FROM accounts ORDER BY account;

-- ON DELETE SET NULL / SET DEFAULT are UPDATEs of the ledger: refused.
CREATE TABLE batches (batch int PRIMARY KEY);
CREATE TABLE batch_entries (
    id    int PRIMARY KEY,
    batch int REFERENCES batches ON DELETE SET NULL
);
INSERT INTO batches VALUES (1);
INSERT INTO batch_entries VALUES (1, 1);
SELECT integrity.protect_append_only('batch_entries');
DELETE FROM batches WHERE batch = 1;
SELECT * FROM batch_entries ORDER BY id;

-- A BEFORE trigger that sorts after the guard cannot undo the refusal, and
-- one that sorts before it can only skip the row (nothing changes).
CREATE FUNCTION ledger_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    NEW.amount := 0;
    RETURN NEW;
END $$;
CREATE TRIGGER zz_ledger_rewrite BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_rewrite();
UPDATE ledger SET note = 'rewritten' WHERE id = 1;
DELETE FROM ledger WHERE id = 1;
DROP TRIGGER zz_ledger_rewrite ON ledger;
CREATE FUNCTION skip_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END $$;
CREATE TRIGGER aa_skip_row BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION skip_row();
UPDATE ledger SET amount = 0 WHERE id = 1;
DELETE FROM ledger WHERE id = 1;
DROP TRIGGER aa_skip_row ON ledger;

-- A refused statement changes nothing, also for the rows before the one
-- that failed, and the transaction can continue after a savepoint rollback.
BEGIN;
INSERT INTO ledger VALUES (12, 'acme', 6.00, 'in transaction');
SAVEPOINT s;
UPDATE ledger SET amount = amount + 1;
ROLLBACK TO SAVEPOINT s;
INSERT INTO ledger VALUES (13, 'acme', 7.00, 'after savepoint');
COMMIT;

-- Every row is still exactly as inserted.
SELECT * FROM ledger ORDER BY id;

-- A composite primary key is reported with all its columns.
CREATE TABLE ledger_lines (
    entry_id int,
    line     int,
    amount   numeric,
    PRIMARY KEY (entry_id, line)
);
INSERT INTO ledger_lines VALUES (1, 1, 10), (1, 2, -10);
SELECT integrity.protect_append_only('ledger_lines');
DELETE FROM ledger_lines WHERE entry_id = 1 AND line = 2;
-- Without a primary key, the replica identity index names the row.
CREATE TABLE ledger_events (
    event_id uuid NOT NULL,
    payload  text
);
CREATE UNIQUE INDEX ledger_events_event_id ON ledger_events (event_id);
ALTER TABLE ledger_events REPLICA IDENTITY USING INDEX ledger_events_event_id;
INSERT INTO ledger_events VALUES ('6f1c2d3e-4b5a-4c6d-8e7f-001122334455', 'created');
SELECT integrity.protect_append_only('ledger_events');
UPDATE ledger_events SET payload = 'changed';
SELECT * FROM ledger_lines ORDER BY entry_id, line;
SELECT * FROM ledger_events ORDER BY event_id;

-- Unlogged tables can be append-only too.
CREATE UNLOGGED TABLE scratch_log (id int PRIMARY KEY, msg text);
INSERT INTO scratch_log VALUES (1, 'one');
SELECT integrity.protect_append_only('scratch_log');
DELETE FROM scratch_log;
SELECT * FROM scratch_log ORDER BY id;

-- A table in another schema, with a name that needs quoting: the DETAIL
-- and HINT name it qualified and quoted.
CREATE SCHEMA "Audit Trail";
CREATE TABLE "Audit Trail"."Entries" (id int PRIMARY KEY, what text);
INSERT INTO "Audit Trail"."Entries" VALUES (1, 'x');
SELECT integrity.protect_append_only('"Audit Trail"."Entries"');
\x on
SELECT * FROM expect_error($$DELETE FROM "Audit Trail"."Entries"$$);
SELECT * FROM expect_error($$TRUNCATE "Audit Trail"."Entries"$$);
\x off

SELECT table_name, guard, columns, options FROM integrity.guards ORDER BY table_name::text, guard;

\ir common/teardown.sql
