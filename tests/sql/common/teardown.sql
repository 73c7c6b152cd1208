\set ECHO none
-- common/teardown.sql: every file of the pg_regress suite \ir-includes it
-- at its end.  It drops what the file created, so that the next file starts
-- from what common/setup.sql makes and nothing else: every guard lifted (as
-- the README's uninstall does), the extensions dropped (pg_integrity is
-- created afresh by the next file's setup, with an empty registry, holds,
-- lifecycle events and check history), and every schema, table, view,
-- sequence, function, type and foreign-data wrapper left in the database
-- dropped.  Then it checks that nothing is left, and raises an error that
-- names what is.  Not echoed, as common/setup.sql.
\set common_quiet :QUIET
\set QUIET on
RESET ROLE;
RESET session_replication_role;
SET client_min_messages = warning;

DO $teardown$
DECLARE
    r record;
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_integrity') THEN
        DELETE FROM integrity.guard_registry g WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = g.table_name);
        PERFORM integrity.unprotect(g.table_name) FROM (SELECT DISTINCT table_name FROM integrity.guards) g;
    END IF;
    FOR r IN SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' LOOP
        EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
    END LOOP;
    FOR r IN SELECT evtname FROM pg_event_trigger LOOP
        EXECUTE format('DROP EVENT TRIGGER IF EXISTS %I', r.evtname);
    END LOOP;
    FOR r IN SELECT nspname FROM pg_namespace
              WHERE nspname NOT IN ('public', 'information_schema') AND nspname !~ '^pg_' LOOP
        EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', r.nspname);
    END LOOP;
    FOR r IN SELECT c.relname,
                    CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                   WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'
                                   WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END AS kind
               FROM pg_class c
              WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
                AND NOT (c.relkind = 'S' AND EXISTS (    -- serial and identity sequences go with their table
                         SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
              ORDER BY c.oid LOOP
        EXECUTE format('DROP %s IF EXISTS public.%I CASCADE', r.kind, r.relname);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS signature,
                    CASE p.prokind WHEN 'a' THEN 'AGGREGATE' ELSE 'ROUTINE' END AS kind
               FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace LOOP
        EXECUTE format('DROP %s IF EXISTS %s CASCADE', r.kind, r.signature);
    END LOOP;
    FOR r IN SELECT t.typname, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END AS kind
               FROM pg_type t
              WHERE t.typnamespace = 'public'::regnamespace AND t.typrelid = 0
                AND NOT EXISTS (SELECT FROM pg_type e WHERE e.typarray = t.oid) LOOP
        EXECUTE format('DROP %s IF EXISTS public.%I CASCADE', r.kind, r.typname);
    END LOOP;
    FOR r IN SELECT fdwname FROM pg_foreign_data_wrapper LOOP
        EXECUTE format('DROP FOREIGN DATA WRAPPER IF EXISTS %I CASCADE', r.fdwname);
    END LOOP;
END
$teardown$;

-- What is left, if anything, is named in the error.
DO $check$
DECLARE
    leftovers text;
BEGIN
    SELECT string_agg(what, ', ') INTO leftovers FROM (
        SELECT format('extension %s', extname) FROM pg_extension WHERE extname <> 'plpgsql'
        UNION ALL SELECT format('schema %s', nspname) FROM pg_namespace
                   WHERE nspname NOT IN ('public', 'information_schema') AND nspname !~ '^pg_'
        UNION ALL SELECT format('relation %s', oid::regclass) FROM pg_class WHERE relnamespace = 'public'::regnamespace
        UNION ALL SELECT format('function %s', oid::regprocedure) FROM pg_proc WHERE pronamespace = 'public'::regnamespace
        UNION ALL SELECT format('type %s', oid::regtype) FROM pg_type WHERE typnamespace = 'public'::regnamespace
        UNION ALL SELECT format('event trigger %s', evtname) FROM pg_event_trigger
        UNION ALL SELECT format('foreign-data wrapper %s', fdwname) FROM pg_foreign_data_wrapper
        UNION ALL SELECT format('foreign server %s', srvname) FROM pg_foreign_server
        UNION ALL SELECT format('publication %s', pubname) FROM pg_publication
        UNION ALL SELECT format('default privileges of %s', defaclrole::regrole) FROM pg_default_acl
        UNION ALL SELECT format('large object %s', oid) FROM pg_largeobject_metadata
        UNION ALL SELECT format('settings of database %s', current_database()) FROM pg_db_role_setting
                   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
        UNION ALL SELECT format('%s on schema public granted to %s', a.privilege_type, a.grantee::regrole)
                    FROM pg_namespace n, aclexplode(n.nspacl) a
                   WHERE n.nspname = 'public' AND a.grantee NOT IN (0, n.nspowner)
    ) l(what);
    IF leftovers IS NOT NULL THEN
        RAISE EXCEPTION 'teardown left %', leftovers;
    END IF;
END
$check$;

RESET client_min_messages;
\set QUIET :common_quiet
\unset common_quiet
\set ECHO all
