-- Lifecycle events: an audit trail per row.  track_lifecycle() puts three
-- AFTER … FOR EACH STATEMENT triggers with transition tables on a table (and
-- on each of its partitions, which a statement that targets a partition
-- directly fires instead); integrity.lifecycle_guard (src/lifecycle.rs) runs
-- the table's INSERT … SELECT from _lifecycle_statement() once per statement,
-- as the owner of integrity.lifecycle_events.  Nobody else may read or write
-- the events table: history() shows one row's events to whoever may read the
-- row's table.  The table is created in sql/lifecycle_events.sql; the
-- triggers and _lifecycle_events_of() are compiled (sql/compiled_functions.sql).

-- The events table is append-only for everyone, superusers and sessions with
-- session_replication_role = replica included.  These triggers belong to the
-- extension, not to the registry: DROP EXTENSION takes them with the table.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM integrity._lifecycle_events_triggers() LOOP
        EXECUTE t.create_sql;
    END LOOP;
END
$$;

-- A jsonb object expression of (key expression, value expression) pairs:
-- jsonb_build_object takes at most 50 pairs, so larger objects are
-- concatenated from several.
CREATE FUNCTION integrity._jsonb_object_sql(keys text[], vals text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(c.chunk, ' || ' ORDER BY c.part), '''{}''::pg_catalog.jsonb')
      FROM (SELECT (u.n - 1) / 50 AS part,
                   'pg_catalog.jsonb_build_object(' || string_agg(format('%L, %s', u.k, u.v), ', ' ORDER BY u.n) || ')'
                   AS chunk
              FROM unnest(keys, vals) WITH ORDINALITY AS u(k, v, n)
             GROUP BY 1) c
$$;

-- The value of column col of the row rowref (`t`, `OLD`), for an event.  The
-- statement runs as the events table's owner, so no code that a role can
-- write may run in it: to_jsonb() of a type that is not built in would call
-- that type's cast to json, which its owner can create.  Such values (enums,
-- composite types, ranges and arrays of them) are written as their text
-- instead, which only the types' C output functions produce.
CREATE FUNCTION integrity._lifecycle_value_sql(tbl regclass, col text, rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN coalesce((SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END < 16384
                                 FROM pg_catalog.pg_attribute a
                                 JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                                WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0), false)
                THEN format('%s.%I', rowref, col)
                ELSE format('CASE WHEN %1$s.%2$I IS NULL THEN NULL ELSE pg_catalog.format(''%%s'', %1$s.%2$I) END',
                            rowref, col) END
$$;

-- The row key of the row rowref, as an event records it: {"id": 42}.
CREATE FUNCTION integrity._lifecycle_key_sql(tbl regclass, rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT integrity._jsonb_object_sql(k, ARRAY(SELECT integrity._lifecycle_value_sql(tbl, c, rowref)
                                                  FROM unnest(k) WITH ORDINALITY AS u(c, n) ORDER BY n))
      FROM (SELECT integrity._key_columns(tbl)) AS key(k)
$$;

-- The lifecycle tracking that covers rel (registered on rel, or on a
-- partitioned ancestor of it) and the columns it tracks, in column order.
CREATE FUNCTION integrity._lifecycle_of(rel regclass)
RETURNS TABLE (tracked_table regclass, tracked text[])
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.table_name,
           ARRAY(SELECT a.attname::text
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = r.table_name AND a.attnum > 0 AND NOT a.attisdropped
                    AND (cardinality(r.columns) = 0 OR a.attname = ANY (r.columns))
                    AND NOT coalesce(r.options -> 'exclude' ? a.attname, false)
                  ORDER BY a.attnum)
      FROM integrity.guard_registry r
     WHERE r.guard = 'lifecycle'
       AND r.table_name IN (SELECT rel UNION ALL SELECT a.relid FROM pg_catalog.pg_partition_ancestors(rel) a)
     LIMIT 1
$$;

-- The statement the lifecycle trigger of rel runs for operation (INSERT,
-- UPDATE or DELETE) over its transition tables old_rows / new_rows; $1 is the
-- OID of the role that ran the statement (the trigger runs this one as the
-- events table's owner).  Events carry the name of the registered table, also
-- when a partition is written directly.  The OLD and NEW rows of an UPDATE
-- are paired by position, which the transition tables keep, so an UPDATE of
-- the key is recorded too, under the new key; "old" and "new" have exactly
-- the table's columns, whatever their names, for _changed_sql() (the whole
-- row is (t.*)::rel: a bare t would be a column named t).  NULL when rel is
-- not tracked.
CREATE FUNCTION integrity._lifecycle_statement(rel regclass, operation text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('INSERT INTO integrity.lifecycle_events (table_name, row_key, operation, changes, actor) ')
           || CASE operation
              WHEN 'UPDATE' THEN
                  format('SELECT %1$L, n.row_key, ''UPDATE'', %3$s, (SELECT pg_catalog.pg_get_userbyid($1))'
                         ' FROM (SELECT pg_catalog.row_number() OVER () AS pair, (t.*)::%2$s AS r FROM old_rows t) AS o'
                         ' JOIN (SELECT pg_catalog.row_number() OVER () AS pair, (t.*)::%2$s AS r, %4$s AS row_key'
                         ' FROM new_rows t) AS n ON o.pair = n.pair'
                         ' CROSS JOIN LATERAL (SELECT (o.r).*) AS old CROSS JOIN LATERAL (SELECT (n.r).*) AS new'
                         ' WHERE %5$s',
                         l.tracked_table::text, rel,
                         (SELECT string_agg(format('CASE WHEN %s THEN pg_catalog.jsonb_build_object(%L,'
                                                   ' pg_catalog.jsonb_build_object(''old'', %s, ''new'', %s))'
                                                   ' ELSE ''{}''::pg_catalog.jsonb END',
                                                   integrity._changed_sql(l.tracked_table, c), c,
                                                   integrity._lifecycle_value_sql(l.tracked_table, c, 'OLD'),
                                                   integrity._lifecycle_value_sql(l.tracked_table, c, 'NEW')),
                                            ' || ' ORDER BY n)
                            FROM unnest(l.tracked) WITH ORDINALITY AS u(c, n)),
                         integrity._lifecycle_key_sql(l.tracked_table, 't'),
                         (SELECT string_agg(integrity._changed_sql(l.tracked_table, c), ' OR ')
                            FROM unnest(l.tracked) AS c))
              ELSE
                  format('SELECT %L, %s, %L, %s, (SELECT pg_catalog.pg_get_userbyid($1)) FROM %s t',
                         l.tracked_table::text, integrity._lifecycle_key_sql(l.tracked_table, 't'), operation,
                         integrity._jsonb_object_sql(l.tracked,
                             ARRAY(SELECT format('pg_catalog.jsonb_build_object(%L, %s)', s.side,
                                                 integrity._lifecycle_value_sql(l.tracked_table, c, 't'))
                                     FROM unnest(l.tracked) WITH ORDINALITY AS u(c, n) ORDER BY n)),
                         CASE operation WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END)
              END
      FROM integrity._lifecycle_of(rel) l
     CROSS JOIN (SELECT CASE operation WHEN 'INSERT' THEN 'new' ELSE 'old' END) AS s(side)
     WHERE operation IN ('INSERT', 'UPDATE', 'DELETE') AND cardinality(l.tracked) > 0
$$;

-- The statement triggers are per relation: each member of the partition tree
-- gets its own (a statement that targets a partition fires the partition's
-- triggers, not its parent's).
CREATE FUNCTION integrity._cover_lifecycle(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
    g record;
BEGIN
    -- A foreign table cannot have triggers with transition tables.
    rel := integrity._foreign_partition(tbl);
    IF rel IS NOT NULL THEN
        RAISE EXCEPTION 'foreign table "%" cannot be a partition of table "%", whose lifecycle is tracked', rel, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A foreign table cannot have the statement triggers that record lifecycle events.';
    END IF;
    -- Replaced also when they are there: that is what tells every backend
    -- (through the relcache) to build the statements again when a
    -- re-registration changed the tracked columns.
    FOR rel IN SELECT integrity._partition_tree(tbl) LOOP
        FOR g IN SELECT * FROM integrity._guard_triggers('lifecycle') LOOP
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT'
                           ' EXECUTE FUNCTION integrity.lifecycle_guard()',
                           g.trigger_name,
                           CASE g.tgtype WHEN 4 THEN 'INSERT' WHEN 16 THEN 'UPDATE' ELSE 'DELETE' END, rel,
                           CASE g.tgtype WHEN 4 THEN 'NEW TABLE AS new_rows'
                                         WHEN 16 THEN 'OLD TABLE AS old_rows NEW TABLE AS new_rows'
                                         ELSE 'OLD TABLE AS old_rows' END);
        END LOOP;
    END LOOP;
END;
$$;

CREATE FUNCTION integrity.track_lifecycle(tbl regclass, columns text[] DEFAULT NULL, exclude text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'track_lifecycle';
    chosen text[] := '{}';
    excluded text[] := '{}';
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    IF tbl = 'integrity.lifecycle_events'::regclass THEN
        RAISE EXCEPTION '%: the lifecycle events table cannot track itself', caller
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Every event written would write another event.';
    END IF;
    IF columns IS NOT NULL AND exclude IS NOT NULL THEN
        RAISE EXCEPTION '%: pass either "columns" or "exclude", not both', caller
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '"columns" tracks only the columns named; "exclude" tracks all others.';
    END IF;
    IF columns IS NOT NULL THEN
        chosen := integrity._check_columns(tbl, columns, caller);
    ELSIF cardinality(exclude) > 0 THEN
        excluded := integrity._check_columns(tbl, exclude, caller);
    END IF;
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY['lifecycle'], caller);
    IF integrity._key_columns(tbl) IS NULL THEN
        RAISE EXCEPTION '%: table "%" has no primary key', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Lifecycle events name their row by its key.',
                  HINT = format('ALTER TABLE %s ADD PRIMARY KEY (…);', tbl);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
                      AND (cardinality(chosen) = 0 OR a.attname = ANY (chosen))
                      AND a.attname <> ALL (excluded)) THEN
        RAISE EXCEPTION '%: "exclude" leaves no column of table "%" to track', caller, tbl
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM integrity._record_guard(tbl, 'lifecycle', chosen,
                                    CASE WHEN cardinality(excluded) > 0
                                         THEN jsonb_build_object('exclude', to_jsonb(excluded)) ELSE '{}' END);
    PERFORM integrity._cover_lifecycle(tbl);
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;
COMMENT ON FUNCTION integrity.track_lifecycle(regclass, text[], text[]) IS
    'Every INSERT, UPDATE and DELETE of a row of the table writes an event to integrity.lifecycle_events: the row''s key, the operation, and the tracked columns (all, only "columns", or all but "exclude"): INSERT {"col": {"new": v}}, DELETE {"col": {"old": v}}, UPDATE only the changed ones {"col": {"old": v, "new": w}} (no event when none changed). Rows applied by logical replication are recorded on their origin only.';

CREATE FUNCTION integrity.history(tbl regclass, id anyelement)
RETURNS SETOF integrity.lifecycle_events
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'history';
    key_columns text[];
    row_key jsonb;
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    PERFORM integrity._require_argument(id, 'id', caller);
    key_columns := integrity._key_columns(tbl);
    IF pg_typeof(id) = 'jsonb'::regtype THEN
        row_key := id::text::jsonb;
        IF jsonb_typeof(row_key) <> 'object' THEN
            RAISE EXCEPTION '%: a jsonb id must be an object of the key columns, like {"id": 42}', caller
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSIF cardinality(key_columns) = 1 THEN
        -- The id as the key column's type, written as the trigger writes keys.
        EXECUTE format('SELECT %s FROM (SELECT CAST($1 AS %s) AS %I) AS t',
                       integrity._lifecycle_key_sql(tbl, 't'),
                       (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = tbl AND a.attname = key_columns[1]),
                       key_columns[1])
           INTO row_key USING id;
    ELSE
        RAISE EXCEPTION '%: table "%" has %', caller, tbl,
                        CASE WHEN key_columns IS NULL THEN 'no primary key' ELSE 'a composite key' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE WHEN key_columns IS NOT NULL
                              THEN format('Pass the key as a jsonb object: %s.',
                                          (SELECT jsonb_object_agg(k, '…') FROM unnest(key_columns) AS k)) END;
    END IF;
    RETURN QUERY SELECT e.* FROM unnest(integrity._lifecycle_events_of(tbl, row_key)) AS e;
END;
$$;
COMMENT ON FUNCTION integrity.history(regclass, anyelement) IS
    'The lifecycle events of one row of the table, in order; id is the primary key value (a jsonb object of the key columns for a composite key). Requires SELECT privilege on the table.';

CREATE FUNCTION integrity.purge_lifecycle_events(older_than interval)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._require_argument(older_than, 'older_than', 'purge_lifecycle_events');
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'purge_lifecycle_events: argument "older_than" must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN integrity._execute_sanctioned('integrity.lifecycle_events',
                                         format('DELETE FROM integrity.lifecycle_events WHERE at < %L::timestamptz',
                                                now() - older_than));
END;
$$;
COMMENT ON FUNCTION integrity.purge_lifecycle_events(interval) IS
    'Deletes the lifecycle events older than older_than and returns how many went. Only the owner of integrity.lifecycle_events may purge.';
