-- 00_setup: install the extension and the helpers the other files use.
-- Every file of this suite runs in the same database, in file-name order.
\set VERBOSITY default
CREATE EXTENSION pg_integrity;

-- The extension lives in its fixed schema and registers its event triggers.
SELECT extname, extnamespace::regnamespace AS schema, extrelocatable
  FROM pg_extension WHERE extname = 'pg_integrity';
SELECT evtname, evtevent, evtenabled, evttags
  FROM pg_event_trigger WHERE evtname LIKE 'integrity%' ORDER BY evtname;

-- The registry starts empty.
SELECT count(*) AS guards FROM integrity.guards;

-- expect_error(sql): runs sql, which must fail, and returns the fields of
-- its error.  Raises if the statement succeeded.
CREATE FUNCTION public.expect_error(sql text)
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
CREATE FUNCTION public.guard_triggers(tbl regclass)
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
CREATE FUNCTION public.all_guard_triggers()
RETURNS TABLE (table_name regclass, tgname name, tgenabled "char")
LANGUAGE sql STABLE AS $$
    SELECT t.tgrelid::regclass, t.tgname, t.tgenabled
      FROM pg_trigger t
     WHERE t.tgname LIKE 'integrity\_%'
     ORDER BY t.tgrelid::regclass::text, t.tgname
$$;

-- pt_triggers(root): the guard triggers of every member of a partition tree.
CREATE FUNCTION pt_triggers(root regclass)
RETURNS TABLE (relation regclass, tgname name, tgenabled "char")
LANGUAGE sql STABLE AS $$
    SELECT t.tgrelid::regclass, t.tgname, t.tgenabled
      FROM pg_trigger t
     WHERE t.tgrelid IN (SELECT relid FROM pg_partition_tree(root))
       AND t.tgname LIKE 'integrity\_%'
     ORDER BY t.tgrelid::regclass::text, t.tgname
$$;

-- Helper round trips: a failing statement is reported, a succeeding one raises.
SELECT sqlstate, message FROM expect_error('SELECT 1/0');
SELECT * FROM expect_error('SELECT 1');
