-- Maintained totals (src/totals.rs): a column of a target table kept equal to
-- the sum (or count) of the source rows that reference each target row.
--
-- Registration puts on the source a row trigger that collects each row's
-- contribution (when the row satisfies the filter) and a statement trigger that applies what its statement collected, one UPDATE per
-- target row in key order; on the target a trigger that refuses direct writes
-- of the total and one that starts a new row at its sources' total.  The
-- registry row is the target's: options = {"key": [target key columns],
-- "totals": [{column, source, key_columns, value_column, filter,
-- filter_columns}, …]}; columns = the maintained columns.
--
-- The triggers, the filter's analysis (_total_filter, _total_filter_columns)
-- and _execute_total_writes are compiled: sql/compiled_functions.sql declares
-- them.

-- The primary key columns of tbl, in index order; NULL without one.
CREATE FUNCTION integrity._primary_key(tbl regclass)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_agg(a.attname::text ORDER BY k.n)
      FROM pg_catalog.pg_index i
     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = tbl AND i.indisprimary
$$;

-- The actual total of one registered total for the target row aliased t, as
-- an SQL expression: one index lookup per target row given an index on the
-- source's key columns.
CREATE FUNCTION integrity._total_sql(total jsonb, key text[])
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('(SELECT COALESCE(%s, 0) FROM %s s WHERE %s%s)',
                  CASE WHEN total ->> 'value_column' IS NULL THEN 'count(*)'
                       ELSE format('sum(s.%I)', total ->> 'value_column') END,
                  total ->> 'source',
                  (SELECT string_agg(format('s.%I = t.%I', sk, tk), ' AND ' ORDER BY n)
                     FROM unnest(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(total -> 'key_columns')), key)
                          WITH ORDINALITY AS k(sk, tk, n)),
                  CASE WHEN total ->> 'filter' IS NULL THEN ''
                       ELSE format(' AND (%s)', total ->> 'filter') END)
$$;

-- The actual value of maintained column col of the target row aliased t: the
-- sum of every total registered for it (from sources that still exist).
CREATE FUNCTION integrity._column_total_sql(options jsonb, col text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(integrity._total_sql(t, ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'key'))),
                      ' + ' ORDER BY t ->> 'source')
      FROM pg_catalog.jsonb_array_elements(options -> 'totals') AS t
     WHERE t ->> 'column' = col AND integrity._relation(t ->> 'source') IS NOT NULL
$$;

-- For total_start (BEFORE INSERT on the target): per maintained column of
-- target, its attribute number, the query that computes a new row's total
-- from the row's key columns ($1, $2, …), and their attribute numbers
-- (separated by spaces).  A new row starts at the total of the source rows
-- that already reference it: zero for a new parent.
CREATE FUNCTION integrity._total_start_sql(target regclass)
RETURNS TABLE (attnum smallint, sql text, key_attnums text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.attnum,
           format('SELECT (%s)::%s FROM (SELECT %s) t', integrity._column_total_sql(r.options, c.col),
                  pg_catalog.format_type(a.atttypid, a.atttypmod),
                  (SELECT string_agg(format('$%s AS %I', k.n, k.col), ', ' ORDER BY k.n)
                     FROM pg_catalog.jsonb_array_elements_text(r.options -> 'key') WITH ORDINALITY AS k(col, n))),
           (SELECT string_agg(ka.attnum::text, ' ' ORDER BY k.n)
              FROM pg_catalog.jsonb_array_elements_text(r.options -> 'key') WITH ORDINALITY AS k(col, n)
              JOIN pg_catalog.pg_attribute ka ON ka.attrelid = target AND ka.attname = k.col)
      FROM integrity.guard_registry r
     CROSS JOIN LATERAL unnest(r.columns) AS c(col)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = target AND a.attname = c.col AND NOT a.attisdropped
     WHERE r.table_name = target AND r.guard = 'total'
       AND integrity._column_total_sql(r.options, c.col) IS NOT NULL
$$;

-- A TRUNCATE of a source would leave every total it feeds behind.
CREATE FUNCTION integrity._total_truncate()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'cannot truncate "%": it is the source of maintained total %.%', TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[1]
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'TRUNCATE fires no row triggers, so the total would keep counting the removed rows.',
              HINT = format('Use DELETE, or call integrity.unprotect(%L, ''total'') first and'
                            ' integrity.recompute_totals() after registering again.', TG_ARGV[0]);
END;
$$;

-- Drops the source triggers of the totals registered with options
-- registered (of one column and source when given); the target may be gone.
CREATE FUNCTION integrity._drop_total_triggers(registered jsonb,
                                               only_column text DEFAULT NULL, only_source regclass DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trg record;
BEGIN
    FOR trg IN
        SELECT DISTINCT tg.tgname, tg.tgrelid::regclass AS rel
          FROM pg_catalog.jsonb_array_elements(registered -> 'totals') AS t
          JOIN pg_catalog.pg_trigger tg
            ON tg.tgrelid = integrity._relation(t ->> 'source')
           AND tg.tgname LIKE integrity._total_trigger_base(registered ->> 'name', t ->> 'column') || '%'
         WHERE (only_column IS NULL OR t ->> 'column' = only_column)
           AND (only_source IS NULL OR integrity._relation(t ->> 'source') = only_source)
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trg.tgname, trg.rel);
    END LOOP;
END;
$$;

CREATE FUNCTION integrity.maintain_total(target regclass, target_column name, source regclass, key_columns text[],
                                         value_column name DEFAULT NULL, filter text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'maintain_total';
    key text[];
    keys text[];
    registered jsonb;
    total jsonb;
    base text;
    source_name text;
    target_name text;
    filter_sql text;
    filter_columns text[];
    apply_args text;
    source_args text;
    i int;
BEGIN
    PERFORM integrity._check_table(target, caller);
    PERFORM integrity._require_argument(source, 'source', caller);
    PERFORM integrity._check_table(source, caller);
    PERFORM integrity._require_argument(target_column, 'target_column', caller);
    PERFORM integrity._require_argument(key_columns, 'key_columns', caller);
    IF target = source THEN
        RAISE EXCEPTION '%: the target and the source must be different tables', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = source) = 'p'
       OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = target) = 'p' THEN
        RAISE EXCEPTION '%: partitioned tables cannot hold or feed maintained totals yet', caller
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF EXISTS (SELECT FROM integrity._inheritance_children(source)) THEN
        RAISE EXCEPTION '%: table "%" has inheritance children', caller, source
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Rows of the children would not reach the total.';
    END IF;
    key := integrity._primary_key(target);
    IF key IS NULL THEN
        RAISE EXCEPTION '%: table "%" has no primary key', caller, target
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'The source rows reference the target row by its primary key.';
    END IF;
    IF cardinality(key) > 8 THEN
        RAISE EXCEPTION '%: a target key has at most 8 columns', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integrity._check_quantity_column(target, target_column, caller);
    PERFORM integrity._refuse_generated(target, target_column, caller);
    IF target_column = ANY (key) THEN
        RAISE EXCEPTION '%: column "%" is part of the primary key of "%"', caller, target_column, target
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    keys := integrity._check_columns(source, key_columns, caller);
    IF cardinality(keys) <> cardinality(key_columns) OR cardinality(keys) <> cardinality(key) THEN
        RAISE EXCEPTION '%: key_columns must name % distinct column(s) of "%", one for each column of the primary key (%) of "%"',
                        caller, cardinality(key), source, array_to_string(key, ', '), target
            USING ERRCODE = 'invalid_column_reference';
    END IF;
    FOR i IN 1 .. cardinality(key) LOOP
        IF integrity._column_type(source, keys[i]) <> integrity._column_type(target, key[i]) THEN
            RAISE EXCEPTION '%: key column "%" has type % in "%" but "%" has type % in "%"', caller, keys[i],
                            integrity._column_type(source, keys[i]), source, key[i],
                            integrity._column_type(target, key[i]), target
                USING ERRCODE = 'datatype_mismatch';
        END IF;
    END LOOP;
    IF value_column IS NOT NULL THEN
        PERFORM integrity._check_quantity_column(source, value_column, caller);
        -- The total must hold every sum exactly, or it drifts from its sources.
        IF NOT integrity._holds_exactly(target, target_column, source, value_column) THEN
            RAISE EXCEPTION '%: values of type % would be rounded into "%" of type %', caller,
                            integrity._column_format(source, value_column), target_column,
                            integrity._column_format(target, target_column)
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Give the total the type of the values it adds up.';
        END IF;
    END IF;
    IF filter IS NOT NULL THEN
        filter_sql := integrity._total_filter(source, filter);
        filter_columns := integrity._total_filter_columns(source, filter);
    END IF;

    source_name := source::text;
    target_name := target::text;
    total := pg_catalog.jsonb_build_object('column', target_column, 'source', source_name, 'key_columns', keys,
                                           'value_column', value_column, 'filter', filter_sql,
                                           'filter_columns', coalesce(filter_columns, '{}'));
    -- A total registered again loses its old triggers first, which the event
    -- trigger lets go only once the registry no longer needs them.
    SELECT r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = target AND r.guard = 'total';
    registered := pg_catalog.jsonb_build_object(
        'name', target_name,
        'key', key,
        'totals', coalesce((SELECT pg_catalog.jsonb_agg(t ORDER BY t ->> 'column', t ->> 'source')
                              FROM pg_catalog.jsonb_array_elements(registered -> 'totals') t
                             WHERE (t ->> 'column', integrity._relation(t ->> 'source'))
                                   IS DISTINCT FROM (target_column::text, source)), '[]'));
    PERFORM integrity._record_total(target, registered);
    PERFORM integrity._drop_total_triggers(pg_catalog.jsonb_build_object('name', target_name,
                                                                         'totals', pg_catalog.jsonb_build_array(total)));
    registered := pg_catalog.jsonb_set(registered, '{totals}', (registered -> 'totals') || pg_catalog.jsonb_build_array(total));
    PERFORM integrity._record_total(target, registered);

    -- The source's triggers.
    base := integrity._total_trigger_base(target_name, target_column);
    source_args := integrity._arguments_sql(ARRAY[target_name, target_column, coalesce(value_column, ''),
                                                  coalesce(filter_sql, '')] || keys);
    apply_args := integrity._arguments_sql(ARRAY[target_name, target_column] || key);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_source(%s)', base, source, source_args);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH STATEMENT'
                   ' EXECUTE FUNCTION integrity.total_apply(%s)', base || '_apply', source, apply_args);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %s FOR EACH STATEMENT'
                   ' EXECUTE FUNCTION integrity._total_truncate(%L, %L)', base || '_truncate', source,
                   target_name, target_column);

    -- The target's triggers, for every maintained column.
    PERFORM integrity._place_total_guard(target);
END;
$$;
COMMENT ON FUNCTION integrity.maintain_total(regclass, name, regclass, text[], name, text) IS
    'Keeps target.target_column equal to the SUM of source.value_column (COUNT when NULL) over the source rows whose key_columns reference the target row and that satisfy filter; direct writes of the total are refused (23001).';

-- Records the totals of target (options as maintain_total writes them).
CREATE FUNCTION integrity._record_total(target regclass, options jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT integrity._record_guard(target, 'total',
                                   ARRAY(SELECT DISTINCT t ->> 'column'
                                           FROM pg_catalog.jsonb_array_elements(options -> 'totals') t ORDER BY 1),
                                   options)
$$;

-- (Re)creates the target's triggers from its registry row.  The rechecks
-- fire for a row whose total or key a trigger after the guard's may have
-- changed: on UPDATE, and on INSERT after the starting total was set.
CREATE FUNCTION integrity._place_total_guard(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registered record;
BEGIN
    SELECT r.columns, r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = target AND r.guard = 'total';
    PERFORM integrity._place_recheck(target, 'total',
        format('CREATE OR REPLACE TRIGGER integrity_total_recheck AFTER UPDATE ON %1$s FOR EACH ROW WHEN (%2$s)'
               ' EXECUTE FUNCTION integrity.total_guard(%3$s);'
               ' CREATE OR REPLACE TRIGGER integrity_total_start_recheck AFTER INSERT ON %1$s FOR EACH ROW'
               ' EXECUTE FUNCTION integrity.total_start()', target,
               (SELECT string_agg(integrity._changed_sql(target, col), ' OR ' ORDER BY n)
                  FROM unnest(registered.columns || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(registered.options -> 'key')))
                       WITH ORDINALITY AS c(col, n)),
               integrity._arguments_sql(integrity._trigger_arguments('integrity_total_recheck', registered.columns,
                                                                     registered.options))));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_total BEFORE UPDATE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_guard(%s)', target,
                   integrity._arguments_sql(integrity._trigger_arguments('integrity_total', registered.columns,
                                                                         registered.options)));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_total_start BEFORE INSERT ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.total_start()', target);
END;
$$;

-- Corrects every total of target that differs from its sources: each such
-- row is locked first, then its total is computed on a snapshot taken after
-- the lock (so a writer that changed its sources meanwhile has either applied
-- its delta already or will apply it after us), then written.  Runs while
-- writers work; under REPEATABLE READ a row a writer changed raises 40001.
CREATE FUNCTION integrity.recompute_totals(target regclass)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registered record;
    col text;
    actual text;
    key_list text;
    key_match text;
    drifted jsonb;
    corrected bigint := 0;
BEGIN
    PERFORM integrity._require_argument(target, 'target', 'recompute_totals');
    SELECT r.columns, r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = target AND r.guard = 'total';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'recompute_totals: table "%" has no maintained total', target
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Register one with integrity.maintain_total().';
    END IF;
    PERFORM integrity._require_owner(target, 'correct its maintained totals');
    SELECT string_agg(format('t.%I', k), ', ' ORDER BY n),
           string_agg(format('t.%I = (pg_catalog.jsonb_populate_record(NULL::%s, $1)).%I', k, target, k), ' AND ' ORDER BY n)
      INTO key_list, key_match
      FROM pg_catalog.jsonb_array_elements_text(registered.options -> 'key') WITH ORDINALITY AS u(k, n);
    FOREACH col IN ARRAY registered.columns LOOP
        actual := integrity._column_total_sql(registered.options, col);
        CONTINUE WHEN actual IS NULL;
        FOR drifted IN EXECUTE format('SELECT pg_catalog.to_jsonb(t) FROM %s t WHERE t.%I IS DISTINCT FROM %s ORDER BY %s',
                                      target, col, actual, key_list)
        LOOP
            EXECUTE format('SELECT 1 FROM %s t WHERE %s FOR NO KEY UPDATE', target, key_match) USING drifted;
            corrected := corrected + integrity._execute_total_writes(target, format(
                'UPDATE %s t SET %I = %s WHERE %s AND t.%I IS DISTINCT FROM %s',
                target, col, actual, replace(key_match, '$1', quote_literal(drifted) || '::jsonb'), col, actual));
        END LOOP;
    END LOOP;
    RETURN corrected;
END;
$$;
COMMENT ON FUNCTION integrity.recompute_totals(regclass) IS
    'Sets every maintained total of target that differs from its source rows to their actual total, locking each row it corrects; the number of rows corrected.';

-- violations(): target rows whose total differs from their sources.  $1 is
-- the target.
CREATE FUNCTION integrity._total_drift_sql(target regclass, columns text[], options jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format(
               'SELECT ''total'', $1, %s, %L || COALESCE(t.%I::text, ''NULL'') || %L || (%s)::text'
               ' FROM %s t WHERE t.%I IS DISTINCT FROM %s',
               integrity._row_key_sql(target), format('maintained total "%s" is ', c.col), c.col,
               ', but its source rows add up to ', c.actual, target, c.col, c.actual), ' UNION ALL ' ORDER BY c.col)
      FROM (SELECT col, integrity._column_total_sql(options, col) AS actual FROM unnest(columns) AS col) c
     WHERE c.actual IS NOT NULL
$$;
