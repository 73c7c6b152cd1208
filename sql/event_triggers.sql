-- Event triggers keep the guards whole across DDL:
--  * partitions created in, or attached to, an append-only table get its
--    TRUNCATE trigger, those of a table whose lifecycle is tracked its
--    statement triggers (row triggers are cloned by PostgreSQL itself), and every
--    cloned guard trigger gets the mode of its guard;
--  * a guard trigger cannot be disabled, switched to another mode, dropped,
--    renamed, or replaced by one with another function or other events while
--    its guard is registered: integrity.unprotect() is the way to remove a
--    guard, and it leaves a trace in the registry;
--  * a guarded column cannot be renamed or dropped while its guard is
--    registered (the guard's triggers name their columns);
--  * the registry forgets tables that are dropped.

-- The registered guard (on the table or on a partitioned ancestor) that needs
-- trigger trigger_name on tbl, if any.
CREATE FUNCTION integrity._guard_needing(tbl regclass, trigger_name name)
RETURNS TABLE (guarded_table regclass, guard text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.table_name, r.guard
      FROM integrity.guard_registry r
     CROSS JOIN LATERAL integrity._guard_triggers(r.guard) g
     WHERE (r.table_name = tbl OR r.table_name IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(tbl)))
       AND g.trigger_name = $2
       AND NOT (g.trigger_name = 'integrity_append_only_truncate'
                AND coalesce((r.options ->> 'allow_truncate')::boolean, false))
       AND NOT (g.recheck AND NOT integrity._needs_recheck(r.table_name, r.guard))
    UNION ALL
    -- the triggers of a maintained total on its source
    SELECT r.table_name, r.guard
      FROM integrity.guard_registry r
     CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(r.options -> 'totals') AS t
     WHERE r.guard = 'total' AND integrity._relation(t ->> 'source') = tbl
       AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
       AND $2 LIKE integrity._total_trigger_base(r.options ->> 'name', t ->> 'column') || '%'
     LIMIT 1
$$;

-- After a BEFORE UPDATE trigger on tbl was created, renamed or dropped, or a
-- partition with triggers of its own attached: the guards of tbl (or of its
-- partitioned ancestors) whose recheck trigger is missing although now needed,
-- or there although no longer needed, are registered again, which places or
-- removes it.  The recheck is the guard's own trigger, so only the table's
-- owner may have it added.
CREATE FUNCTION integrity._sync_rechecks(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stale record;
BEGIN
    FOR stale IN
        SELECT r.table_name, r.guard, r.columns, r.options, g.trigger_name, needed
          FROM integrity.guard_registry r
          -- A guard with two rechecks (totals: UPDATE and INSERT) creates them
          -- in one registration, the first by name first: that one stands for
          -- both, or the event fired between the two CREATEs would register
          -- the guard again, and again.
          JOIN (SELECT DISTINCT ON (t.guard) t.guard, t.trigger_name
                  FROM integrity._guard_triggers(NULL) t
                 WHERE t.recheck
                 ORDER BY t.guard, t.trigger_name) g ON g.guard = r.guard
         CROSS JOIN LATERAL integrity._needs_recheck(r.table_name, r.guard) needed
         WHERE (r.table_name = tbl OR r.table_name IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(tbl)))
           AND needed <> EXISTS (SELECT FROM pg_catalog.pg_trigger t
                                  WHERE t.tgrelid = r.table_name AND t.tgname = g.trigger_name)
         ORDER BY r.table_name, r.guard
    LOOP
        IF stale.needed THEN
            PERFORM integrity._require_owner(stale.table_name,
                format('add a BEFORE UPDATE trigger that fires after the trigger of its %s guard (the guard then'
                       ' checks the final row again, with trigger %s)', stale.guard, stale.trigger_name));
        END IF;
        -- pg_restore brings the recheck back itself, and with -j it may
        -- create the trigger that needs it first: placing it here would make
        -- its own CREATE TRIGGER fail.  health() reports a dump without it.
        CONTINUE WHEN current_setting('application_name') = 'pg_restore';
        EXECUTE integrity._registration_sql(stale.table_name, stale.guard, stale.columns, stale.options);
    END LOOP;
END;
$$;

-- The error for DDL that would silently lift a guard.
CREATE FUNCTION integrity._refuse_guard_ddl(action text, trigger_name name, tbl regclass,
                                            guarded_table regclass, guard text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'cannot % trigger "%" on table "%"', action, trigger_name, tbl
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = format('The trigger enforces the %s guard of %s.', guard, guarded_table),
              HINT = format('To lift the guard, call integrity.unprotect(%L, %L).', guarded_table::text, guard);
END;
$$;

-- CREATE [OR REPLACE] TRIGGER and ALTER TRIGGER … RENAME on a guarded table:
-- a trigger that carries a guard's name must be that guard's trigger, and a
-- guard function cannot be moved to another name.  Only the table's owner,
-- who registers guards, may (re)create a guard trigger: the TRIGGER privilege
-- alone would let a non-owner swap in a WHEN clause that never holds.
CREATE FUNCTION integrity._check_trigger_ddl(trigger_oid oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trg record;
    expected record;
BEGIN
    SELECT t.tgrelid::regclass AS rel, t.tgname, t.tgtype, t.tgargs, t.tgqual IS NOT NULL AS has_when,
           p.proname, n.nspname = 'integrity' AS ours
      INTO trg
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE t.oid = trigger_oid;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- A guard trigger is known by its function, events, arguments and whether
    -- it has a WHEN clause, not by its name alone.
    FOR expected IN
        SELECT needed.guarded_table, needed.guard, g.function_name, g.tgtype, g.has_when,
               integrity._trigger_args(g.trigger_name, r.columns, r.options) AS tgargs
          FROM integrity._guard_needing(trg.rel, trg.tgname) needed
          JOIN integrity._guard_triggers(needed.guard) g ON g.trigger_name = trg.tgname
          JOIN integrity.guard_registry r ON r.table_name = needed.guarded_table AND r.guard = needed.guard
    LOOP
        PERFORM integrity._require_owner(trg.rel, format('create or replace its guard trigger "%s"', trg.tgname));
        IF NOT trg.ours OR trg.proname <> expected.function_name OR trg.tgtype <> expected.tgtype
           OR trg.tgargs <> expected.tgargs OR trg.has_when <> expected.has_when THEN
            PERFORM integrity._refuse_guard_ddl('replace', trg.tgname, trg.rel, expected.guarded_table, expected.guard);
        END IF;
    END LOOP;
    -- A guard function under a foreign name on a guarded table: a renamed guard trigger.
    IF trg.ours AND trg.tgname NOT IN (SELECT k.trigger_name FROM integrity._guard_triggers(NULL) k) THEN
        FOR expected IN
            SELECT needed.guarded_table, needed.guard, g.trigger_name
              FROM integrity.guard_registry r
             CROSS JOIN LATERAL integrity._guard_triggers(r.guard) g
             CROSS JOIN LATERAL integrity._guard_needing(trg.rel, g.trigger_name) needed
             WHERE g.function_name = trg.proname
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                                WHERE t.tgrelid = trg.rel AND t.tgname = g.trigger_name)
        LOOP
            PERFORM integrity._refuse_guard_ddl('rename', expected.trigger_name, trg.rel,
                                                expected.guarded_table, expected.guard);
        END LOOP;
    END IF;
END;
$$;

-- A ledger_credit guard knows its accounts table by name (the name its
-- trigger is given survives pg_dump): renaming, moving or dropping that table
-- would make every insert into the ledger fail.  Refused for the tables a
-- command renamed or moved (the name no longer resolves and the table has
-- the accounts' columns) and for the tables a command dropped (by name),
-- unless the ledger went with them.
CREATE FUNCTION integrity._refuse_accounts_ddl(changed regclass[], dropped text[])
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guarded record;
BEGIN
    IF coalesce(cardinality(changed), 0) + coalesce(cardinality(dropped), 0) = 0 THEN
        RETURN;
    END IF;
    SELECT r.table_name, r.options ->> 'accounts' AS accounts INTO guarded
      FROM integrity.guard_registry r
     WHERE r.guard = 'ledger_credit'
       AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
       AND integrity._relation(r.options ->> 'accounts') IS NULL
       AND ((r.options ->> 'accounts') = ANY (dropped)
            OR EXISTS (SELECT FROM unnest(changed) AS t(rel)
                        WHERE integrity._has_columns(t.rel, r.columns || ARRAY[r.options ->> 'limit_column',
                                                                               r.options ->> 'used_column'])))
     ORDER BY r.table_name
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'table "%" is the accounts table of the ledger_credit guard of "%"',
                        guarded.accounts, guarded.table_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The guard finds the table by this name: renamed, moved or dropped, every insert into the ledger would fail.',
                  HINT = format('Call integrity.unprotect(%L, ''ledger_credit'') first, then register the guard again.',
                                guarded.table_name::text);
    END IF;
END;
$$;

-- The triggers of a maintained total name its target, and the registry names
-- its sources: renaming or moving either (or dropping a source while its
-- target stays) would leave the total unmaintained.  Checked after every
-- command that renames or drops tables.
CREATE FUNCTION integrity._refuse_totals_ddl()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    broken record;
BEGIN
    SELECT r.table_name, r.options ->> 'name' AS registered_name, t ->> 'source' AS source,
           r.table_name::text <> r.options ->> 'name' AS target_moved
      INTO broken
      FROM integrity.guard_registry r
     CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(r.options -> 'totals') AS t
     WHERE r.guard = 'total'
       AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
       AND (r.table_name::text <> r.options ->> 'name' OR integrity._relation(t ->> 'source') IS NULL)
     ORDER BY r.table_name
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'table "%" %', CASE WHEN broken.target_moved THEN broken.registered_name ELSE broken.source END,
                        CASE WHEN broken.target_moved THEN 'holds maintained totals'
                             ELSE format('is the source of maintained totals of "%s"', broken.table_name) END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The totals find their tables by name: renamed, moved or dropped, they would stop being maintained.',
                  HINT = format('Call integrity.unprotect(%L, ''total'') first, then register the totals again.',
                                broken.registered_name);
    END IF;
END;
$$;

CREATE FUNCTION integrity._on_ddl_command_end()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    command record;
    guarded record;
    trg record;
BEGIN
    PERFORM integrity._check_trigger_ddl(c.objid)
       FROM pg_catalog.pg_event_trigger_ddl_commands() c
      WHERE c.classid = 'pg_catalog.pg_trigger'::regclass;
    PERFORM integrity._sync_rechecks(t.tgrelid)
       FROM pg_catalog.pg_event_trigger_ddl_commands() c
       JOIN pg_catalog.pg_trigger t ON t.oid = c.objid
      WHERE c.classid = 'pg_catalog.pg_trigger'::regclass;

    -- Tables renamed or moved, also with their schema.
    PERFORM integrity._refuse_accounts_ddl(ARRAY(
        SELECT t.oid::regclass
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pg_catalog.pg_class t
            ON CASE WHEN c.classid = 'pg_catalog.pg_namespace'::regclass THEN t.relnamespace ELSE t.oid END = c.objid
         WHERE c.classid IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_namespace'::regclass)
           AND t.relkind IN ('r', 'p')
           AND integrity._renames(c.command)), NULL);
    PERFORM integrity._refuse_totals_ddl()
      FROM pg_catalog.pg_event_trigger_ddl_commands() c
     WHERE integrity._renames(c.command)
     LIMIT 1;

    -- Tables created, altered or attached by the command, including those
    -- created inside CREATE SCHEMA, and the typed tables an ALTER TYPE …
    -- CASCADE changed along with their type.
    FOR command IN
        SELECT DISTINCT c.objid::regclass AS rel,
               c.command_tag IN ('CREATE TABLE', 'CREATE FOREIGN TABLE')
               OR integrity._attaches_partition(c.command) AS new_partitions
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
         WHERE c.classid = 'pg_catalog.pg_class'::regclass
           AND c.object_type IN ('table', 'table column', 'foreign table', 'foreign table column')
           AND EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = c.objid)
        UNION
        -- (a composite type's attributes are reported as its pg_class row's)
        SELECT t.oid::regclass, false
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pg_catalog.pg_class t
            ON t.reloftype = CASE WHEN c.classid = 'pg_catalog.pg_type'::regclass THEN c.objid
                                  ELSE (SELECT ct.reltype FROM pg_catalog.pg_class ct
                                         WHERE ct.oid = c.objid AND ct.relkind = 'c') END
         WHERE c.classid IN ('pg_catalog.pg_type'::regclass, 'pg_catalog.pg_class'::regclass)
    LOOP
        SELECT r.table_name, r.guard INTO guarded
          FROM pg_catalog.pg_inherits i
          JOIN integrity.guard_registry r ON r.table_name = i.inhparent
         WHERE i.inhrelid = command.rel
           AND command.rel IN (SELECT integrity._inheritance_children(r.table_name))
         ORDER BY r.guard
         LIMIT 1;
        IF FOUND THEN
            PERFORM integrity._refuse_inheritance(guarded.table_name, command.rel, guarded.guard);
        END IF;

        IF command.new_partitions THEN
            PERFORM integrity._sync_rechecks(command.rel);
            FOR guarded IN
                SELECT r.table_name, r.guard, r.options
                  FROM integrity.guard_registry r
                 WHERE r.table_name = command.rel
                    OR r.table_name IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(command.rel))
            LOOP
                IF guarded.guard = 'append_only'
                   AND NOT coalesce((guarded.options ->> 'allow_truncate')::boolean, false) THEN
                    PERFORM integrity._cover_truncate(guarded.table_name);
                END IF;
                IF guarded.guard = 'lifecycle' THEN
                    PERFORM integrity._cover_lifecycle(guarded.table_name);
                END IF;
                PERFORM integrity._set_trigger_modes(guarded.table_name);
            END LOOP;
        END IF;

        FOR guarded IN
            SELECT r.table_name, r.guard, gc.col
              FROM integrity.guard_registry r
             CROSS JOIN LATERAL integrity._guard_columns(r.table_name, r.guard, r.columns, r.options) gc
             WHERE gc.rel = command.rel
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                WHERE a.attrelid = command.rel AND a.attname = gc.col
                                  AND a.attnum > 0 AND NOT a.attisdropped)
        LOOP
            RAISE EXCEPTION 'cannot rename or drop column "%" of table "%"', guarded.col, command.rel
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('The column is protected by the %s guard of %s.', guarded.guard, guarded.table_name),
                      HINT = format('Call integrity.unprotect(%L, %L) first, then register the guard again.',
                                    guarded.table_name::text, guarded.guard);
        END LOOP;

        FOR trg IN
            SELECT t.tgname, t.tgenabled, needed.guarded_table, needed.guard
              FROM pg_catalog.pg_trigger t
              LEFT JOIN (SELECT DISTINCT k.trigger_name, k.mode FROM integrity._guard_triggers(NULL) k) g
                ON g.trigger_name = t.tgname
             CROSS JOIN LATERAL integrity._guard_needing(command.rel, t.tgname) needed
             WHERE t.tgrelid = command.rel
               -- (a maintained total's triggers on its sources fire on origin rows)
               AND t.tgenabled <> coalesce(g.mode, CASE WHEN needed.guard = 'total' THEN 'O'::"char" END)
        LOOP
            PERFORM integrity._refuse_guard_ddl(
                CASE trg.tgenabled WHEN 'D' THEN 'disable' ELSE 'change the firing mode of' END,
                trg.tgname, command.rel, trg.guarded_table, trg.guard);
        END LOOP;
    END LOOP;
END;
$$;

-- The tables whose rows an ALTER TABLE or ALTER TYPE of tbl reaches: tbl, its
-- partitioned ancestors, and the tables typed by tbl when it is a composite
-- type (ALTER TYPE … CASCADE).
CREATE FUNCTION integrity._altered_tables(tbl regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tbl
    UNION
    SELECT a.relid::regclass FROM pg_catalog.pg_partition_ancestors(tbl) a
    UNION
    SELECT t.oid::regclass
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_class t ON t.reloftype = c.reltype
     WHERE c.oid = tbl AND c.relkind = 'c'
$$;

-- Commands that would rewrite or remove rows of an append-only table, or of
-- one of its partitions: ALTER COLUMN … TYPE, DROP COLUMN, SET EXPRESSION,
-- DETACH PARTITION, and the same through ALTER TYPE … CASCADE on the type of
-- a typed table.  Called by the ddl_command_start event trigger, before the
-- command does any work.
CREATE FUNCTION integrity._refuse_history_ddl(tbl regclass, action text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guarded record;
BEGIN
    SELECT r.table_name, n.nspname, g.relname INTO guarded
      FROM integrity.guard_registry r
      JOIN pg_catalog.pg_class g ON g.oid = r.table_name
      JOIN pg_catalog.pg_namespace n ON n.oid = g.relnamespace
     WHERE r.guard = 'append_only'
       AND r.table_name IN (SELECT integrity._altered_tables(tbl))
     ORDER BY r.table_name
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot % of append-only table "%"', action, guarded.table_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The append_only guard of %s keeps every row as it was written.', guarded.table_name),
                  HINT = format('To change the table''s history anyway, lift the guard first:'
                                ' SELECT integrity.unprotect(%L, ''append_only'');', guarded.table_name::text),
                  SCHEMA = guarded.nspname, TABLE = guarded.relname;
    END IF;
END;
$$;

-- ALTER COLUMN … TYPE of a column whose values a guard keeps (immutable and
-- write-once columns, the version, stock and credit): its USING expression
-- rewrites every value past the guard, which no UPDATE could.  Also through
-- ALTER TYPE … CASCADE on the type of a typed table.
CREATE FUNCTION integrity._refuse_column_rewrite(tbl regclass, col text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guarded record;
BEGIN
    SELECT r.table_name, r.guard, n.nspname, g.relname INTO guarded
      FROM integrity.guard_registry r
      JOIN pg_catalog.pg_class g ON g.oid = r.table_name
      JOIN pg_catalog.pg_namespace n ON n.oid = g.relnamespace
     WHERE r.guard IN ('immutable', 'write_once', 'versioning', 'stock', 'credit')
       AND col = ANY (r.columns)
       AND r.table_name IN (SELECT integrity._altered_tables(tbl))
     ORDER BY r.table_name, r.guard
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot change the type of column "%" of table "%"', col, guarded.table_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The column is protected by the %s guard of %s: a new type rewrites every value.',
                                  guarded.guard, guarded.table_name),
                  HINT = format('Call integrity.unprotect(%L, %L) first, then register the guard again.',
                                guarded.table_name::text, guarded.guard),
                  SCHEMA = guarded.nspname, TABLE = guarded.relname, COLUMN = col;
    END IF;
END;
$$;

-- DROP EXTENSION pg_integrity (or DROP SCHEMA integrity) would drop every
-- guard trigger and leave the tables unguarded without a word.
CREATE FUNCTION integrity._refuse_extension_drop()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guarded text[];
BEGIN
    SELECT array_agg(DISTINCT r.table_name::text ORDER BY r.table_name::text) INTO guarded
      FROM integrity.guard_registry r
     WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name);
    IF guarded IS NOT NULL THEN
        RAISE EXCEPTION 'cannot drop extension pg_integrity while it guards % table%', cardinality(guarded),
                        CASE WHEN cardinality(guarded) > 1 THEN 's' ELSE '' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Dropping it would remove the guards of %s%s.', array_to_string(guarded[1:10], ', '),
                                  CASE WHEN cardinality(guarded) > 10
                                       THEN format(' and %s more tables', cardinality(guarded) - 10) ELSE '' END),
                  HINT = 'Lift every guard first: SELECT integrity.unprotect(t)'
                         ' FROM (SELECT DISTINCT table_name FROM integrity.guards) AS g(t);';
    END IF;
END;
$$;

-- Dropping an append-only table or one of its partitions (DROP TABLE, DROP
-- SCHEMA … CASCADE, DROP OWNED): a partition is known by the clone of the
-- guard trigger that is dropped with it, as its parent link is gone by now.
CREATE FUNCTION integrity._refuse_history_drop()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped record;
BEGIN
    SELECT o.object_identity AS tbl, o.address_names[1] AS nspname, o.address_names[2] AS relname,
           r.table_name IS NULL AS partition INTO dropped
      FROM pg_catalog.pg_event_trigger_dropped_objects() o
      LEFT JOIN integrity.guard_registry r ON r.table_name = o.objid AND r.guard = 'append_only'
     WHERE o.object_type = 'table'
       AND NOT integrity._drops_expired_partition(o.objid)
       AND (r.table_name IS NOT NULL
            OR EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() t
                        WHERE t.object_type = 'trigger' AND t.address_names[3] = 'integrity_append_only'
                          AND t.address_names[1:2] = o.address_names))
     ORDER BY partition, tbl
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot drop append-only table "%"', dropped.tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = CASE WHEN dropped.partition
                                THEN 'It is a partition of an append-only table: dropping it removes rows of that table.'
                                ELSE 'Dropping it removes every row it holds.' END,
                  HINT = CASE WHEN dropped.partition
                              THEN 'Lift the append_only guard of the partitioned table first with integrity.unprotect().'
                              ELSE format('Lift the guard first: SELECT integrity.unprotect(%L, ''append_only'');',
                                          dropped.tbl) END,
                  SCHEMA = dropped.nspname, TABLE = dropped.relname;
    END IF;
END;
$$;

CREATE FUNCTION integrity._on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped record;
BEGIN
    FOR dropped IN
        SELECT o.rel, o.tgname, needed.guarded_table, needed.guard
          FROM (SELECT integrity._relation(format('%I.%I', address_names[1], address_names[2])) AS rel,
                       address_names[3]::name AS tgname
                  FROM pg_catalog.pg_event_trigger_dropped_objects()
                 WHERE object_type = 'trigger' AND address_names[3] LIKE 'integrity\_%') o
         CROSS JOIN LATERAL integrity._guard_needing(o.rel, o.tgname) needed
         WHERE o.rel IS NOT NULL
    LOOP
        PERFORM integrity._refuse_guard_ddl('drop', dropped.tgname, dropped.rel, dropped.guarded_table, dropped.guard);
    END LOOP;

    -- A trigger that fired after a guard's is gone: its recheck may go too.
    PERFORM integrity._sync_rechecks(o.rel)
       FROM (SELECT DISTINCT integrity._relation(format('%I.%I', address_names[1], address_names[2])) AS rel
               FROM pg_catalog.pg_event_trigger_dropped_objects()
              WHERE object_type = 'trigger') o
      WHERE o.rel IS NOT NULL;

    PERFORM integrity._refuse_history_drop();
    PERFORM integrity._refuse_accounts_ddl(NULL, ARRAY(
        SELECT o.object_identity FROM pg_catalog.pg_event_trigger_dropped_objects() o WHERE o.object_type = 'table'));

    -- The totals of a dropped target go with it, their sources' triggers too
    -- (registry row first: dropping those triggers runs this again).
    FOR dropped IN
        DELETE FROM integrity.guard_registry r
         WHERE r.guard = 'total' AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
        RETURNING r.options
    LOOP
        PERFORM integrity._drop_total_triggers(dropped.options);
    END LOOP;
    PERFORM integrity._refuse_totals_ddl();

    -- The holds on a dropped table go with it (a scan: only pending holds
    -- are indexed by table).
    DELETE FROM integrity.hold_records h
     WHERE h.table_name::pg_catalog.oid IN (SELECT o.objid FROM pg_catalog.pg_event_trigger_dropped_objects() o
                                             WHERE o.object_type = 'table');
    DELETE FROM integrity.guard_registry r
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name);
    DELETE FROM integrity.chain_anchors a
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = a.table_name);
END;
$$;

-- Installed last, as they act on the commands of the rest of the script.
DO $$
DECLARE
    e record;
BEGIN
    FOR e IN SELECT * FROM integrity._event_triggers() LOOP
        EXECUTE integrity._event_trigger_sql(e.evtname);
    END LOOP;
END
$$;
