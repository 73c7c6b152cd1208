-- 41_hardening_lookalike_triggers: guard triggers used to be recognised by
-- name.  A BEFORE TRUNCATE trigger named integrity_append_only_truncate that
-- calls a no-op function, planted before protect_append_only or on a
-- partition before ATTACH PARTITION, survived (ATTACH even made it ENABLE
-- ALWAYS) and TRUNCATE went through; and a non-owner with the TRIGGER
-- privilege could CREATE OR REPLACE a guard trigger with WHEN (false).  Guard
-- triggers are now known by function, events, arguments and WHEN clause, and
-- only the table owner may (re)create one.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE FUNCTION la_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;

-- Planted before the registration: replaced by it.
CREATE TABLE la_ledger (id int PRIMARY KEY, amount numeric NOT NULL);
INSERT INTO la_ledger VALUES (1, 10);
CREATE TRIGGER integrity_append_only_truncate BEFORE TRUNCATE ON la_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION la_noop();
SELECT integrity.protect_append_only('la_ledger');
SELECT tgname, tgfoid::regproc AS function FROM pg_trigger
 WHERE tgrelid = 'la_ledger'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT sqlstate, message FROM expect_error($$TRUNCATE la_ledger$$);

-- Planted on a partition before ATTACH PARTITION: replaced too.
CREATE TABLE la_monthly (id int NOT NULL, booked date NOT NULL) PARTITION BY RANGE (booked);
SELECT integrity.protect_append_only('la_monthly');
CREATE TABLE la_monthly_2026_11 (id int NOT NULL, booked date NOT NULL);
INSERT INTO la_monthly_2026_11 VALUES (1, '2026-11-26');
CREATE TRIGGER integrity_append_only_truncate BEFORE TRUNCATE ON la_monthly_2026_11
    FOR EACH STATEMENT EXECUTE FUNCTION la_noop();
ALTER TABLE la_monthly ATTACH PARTITION la_monthly_2026_11 FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
SELECT tgname, tgfoid::regproc AS function, tgenabled FROM pg_trigger
 WHERE tgrelid = 'la_monthly_2026_11'::regclass AND tgname LIKE 'integrity%' ORDER BY 1;
SELECT sqlstate, message FROM expect_error($$TRUNCATE la_monthly_2026_11$$);

-- A non-owner with the TRIGGER privilege cannot replace a guard trigger at
-- all: not with one that never fires, not with other arguments, and not with
-- a WHEN clause that looks like the guard's but never holds.
DROP ROLE IF EXISTS regress_integrity_trigger_user;
CREATE ROLE regress_integrity_trigger_user;
CREATE TABLE la_pieces (id int PRIMARY KEY, created_by int NOT NULL, note text);
INSERT INTO la_pieces VALUES (1, 7, 'x');
SELECT integrity.protect_immutable('la_pieces', ARRAY['created_by']);
GRANT TRIGGER, UPDATE ON la_ledger, la_pieces TO regress_integrity_trigger_user;
SET ROLE regress_integrity_trigger_user;
SELECT sqlstate, message FROM expect_error($$
    CREATE OR REPLACE TRIGGER integrity_append_only BEFORE UPDATE OR DELETE ON la_ledger FOR EACH ROW
        WHEN (false) EXECUTE FUNCTION integrity.append_only_guard()$$);
SELECT sqlstate, message FROM expect_error($$
    CREATE OR REPLACE TRIGGER integrity_immutable AFTER UPDATE ON la_pieces FOR EACH ROW
        WHEN (OLD.created_by IS DISTINCT FROM NEW.created_by) EXECUTE FUNCTION integrity.immutable_guard('note')$$);
SELECT sqlstate, message, detail FROM expect_error($$
    CREATE OR REPLACE TRIGGER integrity_immutable AFTER UPDATE ON la_pieces FOR EACH ROW
        WHEN (OLD.created_by IS DISTINCT FROM NEW.created_by AND OLD.id < 0)
        EXECUTE FUNCTION integrity.immutable_guard('created_by')$$);
-- Other triggers stay theirs to create.
CREATE TRIGGER la_user_trigger AFTER UPDATE ON la_pieces FOR EACH ROW EXECUTE FUNCTION la_noop();
SELECT sqlstate, message FROM expect_error($$UPDATE la_ledger SET amount = 0$$);
SELECT sqlstate, message FROM expect_error($$UPDATE la_pieces SET created_by = 8$$);
RESET ROLE;
-- The owner gets the guard's own refusal for a trigger that is not the guard's.
SELECT sqlstate, message FROM expect_error($$
    CREATE OR REPLACE TRIGGER integrity_append_only BEFORE UPDATE OR DELETE ON la_ledger FOR EACH ROW
        WHEN (false) EXECUTE FUNCTION integrity.append_only_guard()$$);
SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'la_pieces'::regclass AND tgname = 'integrity_immutable';

-- Done while the event trigger is disabled: health() reports it.
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
CREATE OR REPLACE TRIGGER integrity_append_only BEFORE UPDATE OR DELETE ON la_ledger FOR EACH ROW
    WHEN (false) EXECUTE FUNCTION integrity.append_only_guard();
ALTER EVENT TRIGGER integrity_ddl_command_end ENABLE ALWAYS;
SELECT severity, problem, remedy FROM integrity.health() WHERE table_name = 'la_ledger'::regclass;
SELECT integrity.protect_append_only('la_ledger');
SELECT count(*) AS problems FROM integrity.health() WHERE table_name = 'la_ledger'::regclass;
SELECT sqlstate FROM expect_error($$UPDATE la_ledger SET amount = 0$$);

SELECT integrity.unprotect(t, 'append_only') FROM unnest(ARRAY['la_ledger', 'la_monthly']::regclass[]) AS t;
DROP TABLE la_ledger, la_monthly, la_pieces;
DROP FUNCTION la_noop();
DROP ROLE regress_integrity_trigger_user;

\ir common/teardown.sql
