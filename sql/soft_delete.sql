-- Soft delete.  A DELETE of a row of a soft-delete table keeps the row and
-- sets its deleted column to now() (and its flag column to true); the
-- integrity_soft_delete trigger (src/soft_delete.rs) runs the statement
-- written here.  restore() brings a row back, with the rows its delete
-- cascaded to; purge_deleted() and hard_delete() are the deletes that remove
-- rows for good.  soft_delete_guard() is declared in sql/compiled_functions.sql.

-- The foreign keys between tables (declared on the tables themselves, not
-- the clones on their partitions), with their columns in order and whether
-- they cascade deletes.  A soft delete follows those that cascade into a
-- child with soft delete too.
CREATE FUNCTION integrity._foreign_keys()
RETURNS TABLE (parent regclass, parent_columns text[], child regclass, child_columns text[], cascades boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.confrelid::regclass,
           ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, n)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum
                  ORDER BY k.n),
           c.conrelid::regclass,
           ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                  ORDER BY k.n),
           c.confdeltype = 'c'
      FROM pg_catalog.pg_constraint c
     WHERE c.contype = 'f' AND c.conparentid = 0
$$;

-- The condition that a child row (alias child_alias) references a parent row
-- (alias p), as the foreign key compares them.
CREATE FUNCTION integrity._references_sql(child_alias text, child_columns text[], parent_columns text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%s.%I = p.%I', child_alias, cc, pc), ' AND ' ORDER BY n)
      FROM unnest(child_columns, parent_columns) WITH ORDINALITY AS k(cc, pc, n)
$$;

-- The soft_delete guard of tbl or of its partitioned ancestor: its deleted
-- and flag columns.  NULL when there is none.
CREATE FUNCTION integrity._soft_delete_of(tbl regclass)
RETURNS TABLE (registered regclass, deleted_column text, flag_column text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.table_name, r.options ->> 'deleted_column', r.options ->> 'flag_column'
      FROM integrity.guard_registry r
     WHERE r.guard = 'soft_delete'
       AND r.table_name IN (SELECT tbl UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a)
$$;

-- The SET list that marks a row deleted (at) or live again (at = NULL).
CREATE FUNCTION integrity._soft_delete_set_sql(deleted_column text, flag_column text, deleted boolean)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%I = %s', deleted_column, CASE WHEN deleted THEN 'pg_catalog.now()' ELSE 'NULL' END)
           || CASE WHEN flag_column IS NOT NULL
                   THEN format(', %I = %s', flag_column, CASE WHEN deleted THEN 'true' ELSE 'false' END) ELSE '' END
$$;

-- The statement the trigger runs for a row of rel ($1: the row's ctid): it
-- marks the row deleted and deletes the live rows of soft-delete children
-- that cascade from it (their triggers mark them deleted at the same now()).
-- When the row itself is reached by a cascade from a parent row that is gone
-- (deleted for good), it leaves the row alone and returns true: the row goes
-- with its parent, as a hard delete would have it.  A table without
-- cascading foreign keys gets a plain UPDATE that returns nothing (no
-- RETURNING to set up for every row) and names every function and operator
-- by schema: the trigger runs it with the caller's search_path (and the
-- other statement with pg_catalog's).  NULL when rel has no soft_delete guard.
CREATE FUNCTION integrity._soft_delete_statement(rel regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN parents.present IS NULL AND children.deletes IS NULL
                THEN format('UPDATE ONLY %s AS t SET %s WHERE t.ctid OPERATOR(pg_catalog.=) $1', rel, g.set_list)
                ELSE format('WITH parents AS (SELECT %s AS present FROM ONLY %s AS c WHERE c.ctid = $1),'
                            ' deleted AS (UPDATE ONLY %s AS t SET %s FROM parents WHERE t.ctid = $1 AND parents.present'
                            ' RETURNING t.*)%s'
                            ' SELECT NOT present FROM parents',
                            coalesce(parents.present, 'true'), rel, rel, g.set_list, coalesce(children.deletes, ''))
           END
      FROM (SELECT s.registered,
                   integrity._soft_delete_set_sql(s.deleted_column, s.flag_column, true) AS set_list
              FROM integrity._soft_delete_of(rel) s) g
     CROSS JOIN LATERAL (
            -- MATCH SIMPLE: a key with a NULL references nothing.
            SELECT string_agg(format('(%s OR EXISTS (SELECT FROM %s AS p WHERE %s))',
                                     (SELECT string_agg(format('c.%I IS NULL', col), ' OR ')
                                        FROM unnest(k.child_columns) AS col),
                                     k.parent, integrity._references_sql('c', k.child_columns, k.parent_columns)),
                              ' AND ' ORDER BY k.parent::text, k.child_columns) AS present
              FROM integrity._foreign_keys() k
             WHERE k.child = g.registered AND k.cascades) parents
     CROSS JOIN LATERAL (
            SELECT string_agg(format(', cascade_%s AS (DELETE FROM %s AS c USING deleted AS p WHERE %s AND c.%I IS NULL)',
                                     k.n, k.child, integrity._references_sql('c', k.child_columns, k.parent_columns),
                                     s.deleted_column),
                              '' ORDER BY k.n) AS deletes
              FROM (SELECT k.*, row_number() OVER (ORDER BY k.child::text, k.child_columns) AS n
                      FROM integrity._foreign_keys() k
                     WHERE k.parent = g.registered AND k.cascades) k
             CROSS JOIN LATERAL integrity._soft_delete_of(k.child) s
             WHERE s.registered = k.child) children
$$;

-- The soft_delete guard a caller of restore(), purge_deleted() or
-- hard_delete() names: tbl must be registered itself.
CREATE FUNCTION integrity._require_soft_delete(tbl regclass, caller text)
RETURNS TABLE (registered regclass, deleted_column text, flag_column text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    RETURN QUERY SELECT s.registered, s.deleted_column, s.flag_column
                   FROM integrity._soft_delete_of(tbl) s WHERE s.registered = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: table % has no soft_delete guard', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Register it with SELECT integrity.enable_soft_delete(%L);', tbl::text);
    END IF;
END;
$$;

-- The row of tbl that restore() and hard_delete() act on, named by its
-- primary key: id is the key's value, or, for a key of several columns, a
-- jsonb object of them ({"id": 1, "at": "2026-05-01"}), as history() takes
-- it.  filter is a condition on the row as t; key says which row it is, for
-- errors ("id = 1").
CREATE FUNCTION integrity._key_filter(tbl regclass, id anyelement, caller text, OUT filter text, OUT key text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_columns text[] := integrity._key_columns(tbl);
    given jsonb;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = tbl AND i.indisprimary) THEN
        RAISE EXCEPTION '%: table % has no primary key', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The id argument is a value of the primary key.';
    END IF;
    IF pg_typeof(id) <> 'jsonb'::regtype THEN
        IF cardinality(key_columns) > 1 THEN
            RAISE EXCEPTION '%: table % has a primary key of % columns', caller, tbl, cardinality(key_columns)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Pass the key as a jsonb object: %s.',
                                    (SELECT jsonb_object_agg(k, '…') FROM unnest(key_columns) AS k));
        END IF;
        filter := format('t.%I = %L::%s', key_columns[1], id, pg_typeof(id));
        key := format('%s = %s', key_columns[1], id);
        RETURN;
    END IF;
    given := id::text::jsonb;
    IF jsonb_typeof(given) <> 'object'
       OR (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(given) AS k)
          IS DISTINCT FROM (SELECT array_agg(k ORDER BY k) FROM unnest(key_columns) AS k)
       OR EXISTS (SELECT FROM unnest(key_columns) AS k WHERE given ->> k IS NULL) THEN
        RAISE EXCEPTION '%: id % does not name the primary key of table %', caller, given, tbl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('A jsonb id is an object of every key column, none NULL: %s.',
                                (SELECT jsonb_object_agg(k, '…') FROM unnest(key_columns) AS k));
    END IF;
    SELECT string_agg(format('t.%I = %L::%s', k, given ->> k, integrity._column_type(tbl, k)), ' AND ' ORDER BY n),
           format('(%s) = (%s)', string_agg(k, ', ' ORDER BY n), string_agg(given ->> k, ', ' ORDER BY n))
      INTO filter, key
      FROM unnest(key_columns) WITH ORDINALITY AS u(k, n);
END;
$$;

CREATE FUNCTION integrity.enable_soft_delete(tbl regclass, deleted_column name DEFAULT 'deleted_at',
                                             flag_column name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller constant text := 'enable_soft_delete';
    typ regtype;
    contradicting text;
    columns text[];
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    PERFORM integrity._require_argument(deleted_column, 'deleted_column', caller);
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY['soft_delete'], caller);
    typ := integrity._column_type(tbl, deleted_column);
    IF typ NOT IN ('timestamp'::regtype, 'timestamptz'::regtype) THEN
        RAISE EXCEPTION '%: deleted column "%" of table % must be timestamp or timestamptz, not %',
                        caller, deleted_column, tbl, typ
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    PERFORM integrity._refuse_generated(tbl, deleted_column, caller);
    IF flag_column IS NOT NULL THEN
        typ := integrity._column_type(tbl, flag_column);
        IF typ <> 'boolean'::regtype THEN
            RAISE EXCEPTION '%: flag column "%" of table % must be boolean, not %', caller, flag_column, tbl, typ
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        PERFORM integrity._refuse_generated(tbl, flag_column, caller);
        IF flag_column = deleted_column THEN
            RAISE EXCEPTION '%: deleted_column and flag_column must differ', caller
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    SELECT r.guard INTO contradicting
      FROM integrity.guard_registry r
     WHERE r.table_name IN (SELECT tbl UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a)
       AND r.guard IN ('append_only', 'hash_chain')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: table % is append-only; its rows cannot be marked deleted', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The %s guard refuses every UPDATE and DELETE of its rows.', contradicting),
                  HINT = 'Record a deletion as a new entry instead.';
    END IF;

    columns := ARRAY[deleted_column::text] || ARRAY(SELECT flag_column::text WHERE flag_column IS NOT NULL);
    PERFORM integrity._record_guard(tbl, 'soft_delete', columns,
                                    jsonb_build_object('deleted_column', deleted_column, 'flag_column', flag_column));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_soft_delete BEFORE DELETE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.soft_delete_guard(%s)', tbl,
                   integrity._arguments_sql(integrity._trigger_arguments('integrity_soft_delete', columns, '{}')));
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;
COMMENT ON FUNCTION integrity.enable_soft_delete(regclass, name, name) IS
    'DELETE keeps the row and sets deleted_column = now() (and flag_column = true), cascading to soft-delete children.';

-- Marks live again the rows of tbl that match filter (over alias t) and were
-- deleted at the moment deleted_at (text), then, for each of them, the rows
-- of soft-delete children that their delete cascaded to (deleted at the same
-- moment).  The number of rows of tbl restored.
CREATE FUNCTION integrity._restore_rows(tbl regclass, filter text, deleted_at text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deleted_column text;
    flag_column text;
    restored jsonb;
    child record;
    n bigint := 0;
BEGIN
    SELECT s.deleted_column, s.flag_column INTO deleted_column, flag_column
      FROM integrity._soft_delete_of(tbl) s WHERE s.registered = tbl;
    FOR restored IN
        EXECUTE format('UPDATE %s AS t SET %s WHERE (%s) AND t.%I = %L::%s RETURNING pg_catalog.to_jsonb(t)',
                       tbl, integrity._soft_delete_set_sql(deleted_column, flag_column, false),
                       filter, deleted_column, deleted_at, integrity._column_type(tbl, deleted_column))
    LOOP
        n := n + 1;
        FOR child IN
            SELECT k.child, k.child_columns, k.parent_columns
              FROM integrity._foreign_keys() k
             WHERE k.parent = tbl AND k.cascades
               AND EXISTS (SELECT FROM integrity._soft_delete_of(k.child) s WHERE s.registered = k.child)
        LOOP
            PERFORM integrity._restore_rows(
                child.child,
                (SELECT string_agg(format('t.%I = %L::%s', cc, restored ->> pc, integrity._column_type(child.child, cc)),
                                   ' AND ' ORDER BY i)
                   FROM unnest(child.child_columns, child.parent_columns) WITH ORDINALITY AS k(cc, pc, i)),
                deleted_at);
        END LOOP;
    END LOOP;
    RETURN n;
END;
$$;

CREATE FUNCTION integrity.restore(tbl regclass, id anyelement)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guard record;
    target record;
    deleted_at text;
    found_rows bigint;
BEGIN
    SELECT * INTO guard FROM integrity._require_soft_delete(tbl, 'restore');
    PERFORM integrity._require_argument(id, 'id', 'restore');
    target := integrity._key_filter(tbl, id, 'restore');
    EXECUTE format('SELECT t.%I::text FROM %s AS t WHERE %s FOR UPDATE', guard.deleted_column, tbl, target.filter)
       INTO deleted_at;
    GET DIAGNOSTICS found_rows = ROW_COUNT;
    IF found_rows = 0 THEN
        RAISE EXCEPTION 'restore: no row of table % has %', tbl, target.key
            USING ERRCODE = 'no_data_found';
    END IF;
    IF deleted_at IS NULL THEN
        RETURN false;
    END IF;
    -- A live row that took the restored row's place under a partial unique
    -- index makes the UPDATE fail with 23505, naming the index and the key;
    -- the rows restored before it are rolled back with it.
    RETURN integrity._restore_rows(tbl, target.filter, deleted_at) > 0;
END;
$$;
COMMENT ON FUNCTION integrity.restore(regclass, anyelement) IS
    'Brings a soft-deleted row back, with the rows its delete cascaded to: true, or false when it was not deleted.';

CREATE FUNCTION integrity.purge_deleted(tbl regclass, older_than interval)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Rows are deleted in ranges of this many pages (64 MB): each range is
    -- its own statement, whose cascades run at its end.
    batch constant bigint := 8192;
    guard record;
    cutoff text;
    pages bigint;
    first_page bigint := 0;
    purged bigint := 0;
BEGIN
    SELECT * INTO guard FROM integrity._require_soft_delete(tbl, 'purge_deleted');
    PERFORM integrity._require_argument(older_than, 'older_than', 'purge_deleted');
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'purge_deleted: older_than must not be negative, not %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integrity._require_owner(tbl, 'delete its rows for good');
    cutoff := format('%L::%s', now() - older_than, integrity._column_type(tbl, guard.deleted_column));
    SELECT max(pg_catalog.pg_relation_size(r) / current_setting('block_size')::bigint) INTO pages
      FROM integrity._partition_tree(tbl) AS r;
    WHILE first_page < pages LOOP
        purged := purged + integrity._execute_sanctioned(tbl,
            format('DELETE FROM %s AS t WHERE t.ctid >= ''(%s,0)''::tid AND t.ctid < ''(%s,0)''::tid AND t.%I < %s',
                   tbl, first_page, first_page + batch, guard.deleted_column, cutoff));
        first_page := first_page + batch;
    END LOOP;
    RETURN purged;
END;
$$;
COMMENT ON FUNCTION integrity.purge_deleted(regclass, interval) IS
    'Deletes for good the rows soft-deleted longer ago than older_than (with what cascades from them); the number of rows of tbl deleted.';

CREATE FUNCTION integrity.hard_delete(tbl regclass, id anyelement)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    target record;
BEGIN
    PERFORM integrity._require_soft_delete(tbl, 'hard_delete');
    PERFORM integrity._require_argument(id, 'id', 'hard_delete');
    target := integrity._key_filter(tbl, id, 'hard_delete');
    PERFORM integrity._require_owner(tbl, 'delete its rows for good');
    IF integrity._execute_sanctioned(tbl, format('DELETE FROM %s AS t WHERE %s', tbl, target.filter)) = 0 THEN
        RAISE EXCEPTION 'hard_delete: no row of table % has %', tbl, target.key
            USING ERRCODE = 'no_data_found';
    END IF;
END;
$$;
COMMENT ON FUNCTION integrity.hard_delete(regclass, anyelement) IS
    'Deletes one row of a soft-delete table for good, deleted or not (an erasure request), with what cascades from it.';

-- violations(): live rows that reference a soft-deleted row, through the
-- foreign key from child to parent (a soft-delete table).  NULL when a
-- column is missing.
CREATE FUNCTION integrity._deleted_parent_sql(parent regclass, parent_columns text[], parent_deleted text,
                                              child regclass, child_columns text[])
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('SELECT ''soft_delete'', %L::pg_catalog.regclass, %s,'
                  ' %L || %s || %L || p.%I::text'
                  ' FROM %s AS t JOIN %s AS p ON %s WHERE p.%I IS NOT NULL%s',
                  child, integrity._row_key_sql(child),
                  format('the row references %s (', parent),
                  (SELECT string_agg(format('%L || COALESCE(p.%I::text, ''NULL'')', pc || '=', pc), ' || '', '' || '
                                     ORDER BY n)
                     FROM unnest(parent_columns) WITH ORDINALITY AS k(pc, n)),
                  '), which was deleted at ', parent_deleted,
                  child, parent, integrity._references_sql('t', child_columns, parent_columns), parent_deleted,
                  (SELECT format(' AND t.%I IS NULL', s.deleted_column)
                     FROM integrity._soft_delete_of(child) s))
     WHERE integrity._has_columns(parent, parent_columns || parent_deleted)
       AND integrity._has_columns(child, child_columns)
$$;
