\set ECHO none
-- common/setup.sql: what every file of the pg_regress suite starts from.
-- Each file \ir-includes it at its top and common/teardown.sql at its end,
-- so that it runs alone on a fresh database (make test-regress TESTS=NAME)
-- exactly as it runs in the whole suite: on a database that holds the
-- extension, the helper functions below and nothing else.  Idempotent
-- (IF NOT EXISTS, CREATE OR REPLACE).  Not echoed: the expected output
-- shows only the \ir line and the \set above (pg_regress runs psql with
-- ECHO all, which the end of this file sets again).  Roles are
-- cluster-wide: each file creates the roles it uses and drops them at its end.
\set common_quiet :QUIET
\set QUIET on
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS pg_integrity;

-- expect_error(sql): runs sql, which must fail, and returns the fields of
-- its error.  Raises if the statement succeeded.
CREATE OR REPLACE FUNCTION public.expect_error(sql text)
RETURNS TABLE (sqlstate text, message text, detail text, hint text,
               schema_name text, table_name text, column_name text, constraint_name text)
LANGUAGE plpgsql AS $$
DECLARE
    e_state text; e_message text; e_detail text; e_hint text;
    e_schema text; e_table text; e_column text; e_constraint text;
BEGIN
    BEGIN
        EXECUTE sql;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS
            e_state      = RETURNED_SQLSTATE,
            e_message    = MESSAGE_TEXT,
            e_detail     = PG_EXCEPTION_DETAIL,
            e_hint       = PG_EXCEPTION_HINT,
            e_schema     = SCHEMA_NAME,
            e_table      = TABLE_NAME,
            e_column     = COLUMN_NAME,
            e_constraint = CONSTRAINT_NAME;
        RETURN QUERY SELECT e_state, e_message, NULLIF(e_detail, ''), NULLIF(e_hint, ''),
                            NULLIF(e_schema, ''), NULLIF(e_table, ''), NULLIF(e_column, ''),
                            NULLIF(e_constraint, '');
        RETURN;
    END;
    RAISE EXCEPTION 'expected an error, but the statement succeeded: %', sql;
END;
$$;

-- guard_triggers(tbl): the pg_integrity triggers on a table, with their
-- firing mode (A = always, O = origin, D = disabled) and timing/events.
CREATE OR REPLACE FUNCTION public.guard_triggers(tbl regclass)
RETURNS TABLE (tgname name, tgenabled "char", definition text)
LANGUAGE sql STABLE AS $$
    SELECT t.tgname, t.tgenabled,
           regexp_replace(pg_get_triggerdef(t.oid), ' ON \S+ ', ' ON <table> ')
      FROM pg_trigger t
     WHERE t.tgrelid = tbl AND t.tgname LIKE 'integrity\_%'
     ORDER BY t.tgname
$$;

-- all_guard_triggers(): every pg_integrity trigger in the database, to
-- check that a failed registration left nothing behind.
CREATE OR REPLACE FUNCTION public.all_guard_triggers()
RETURNS TABLE (table_name regclass, tgname name, tgenabled "char")
LANGUAGE sql STABLE AS $$
    SELECT t.tgrelid::regclass, t.tgname, t.tgenabled
      FROM pg_trigger t
     WHERE t.tgname LIKE 'integrity\_%'
     ORDER BY t.tgrelid::regclass::text, t.tgname
$$;

-- pt_triggers(root): the guard triggers of every member of a partition tree.
CREATE OR REPLACE FUNCTION public.pt_triggers(root regclass)
RETURNS TABLE (relation regclass, tgname name, tgenabled "char")
LANGUAGE sql STABLE AS $$
    SELECT t.tgrelid::regclass, t.tgname, t.tgenabled
      FROM pg_trigger t
     WHERE t.tgrelid IN (SELECT relid FROM pg_partition_tree(root))
       AND t.tgname LIKE 'integrity\_%'
     ORDER BY t.tgrelid::regclass::text, t.tgname
$$;

-- integrity_calls(sql): runs sql and returns how many times it called each
-- function of the extension (track_functions = all for the transaction; the
-- counts of earlier transactions that are not flushed yet are subtracted).
CREATE OR REPLACE FUNCTION public.integrity_calls(sql text)
RETURNS TABLE (funcname name, calls bigint)
LANGUAGE plpgsql AS $$
DECLARE
    before jsonb;
BEGIN
    PERFORM set_config('track_functions', 'all', true);
    SELECT coalesce(jsonb_object_agg(f.funcname, f.calls), '{}') INTO before
      FROM pg_stat_xact_user_functions f WHERE f.schemaname = 'integrity';
    EXECUTE sql;
    RETURN QUERY
        SELECT f.funcname, f.calls - coalesce((before ->> f.funcname)::bigint, 0)
          FROM pg_stat_xact_user_functions f
         WHERE f.schemaname = 'integrity' AND f.calls > coalesce((before ->> f.funcname)::bigint, 0)
         ORDER BY f.funcname;
END
$$;

RESET client_min_messages;
\set QUIET :common_quiet
\unset common_quiet
\set ECHO all
