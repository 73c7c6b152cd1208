-- Reports: integrity.violations() lists existing rows that break a registered
-- guard; integrity.health() compares the registry with the triggers, event
-- triggers and functions that are supposed to enforce it.
--
-- Both run with a fixed search_path, read the catalogs schema-qualified and
-- quote every identifier they put into dynamic SQL.

------------------------------------------------------------------------------
-- Shared helpers.

-- The SQL that (re)registers a registry row's guard with its registered
-- arguments.  Re-running a registration repairs dropped, disabled, re-moded or
-- replaced guard triggers and uncovered partitions.
CREATE FUNCTION integrity._registration_sql(tbl regclass, guard text, columns text[], options jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE guard
        WHEN 'append_only' THEN
            format('SELECT integrity.protect_append_only(%L, allow_truncate => %s);', tbl::text,
                   CASE WHEN (options ->> 'allow_truncate')::boolean THEN 'true' ELSE 'false' END)
            || CASE WHEN options ? 'retention'
                    THEN format(' SELECT integrity.set_retention(%L, %L, %L);', tbl::text,
                                options -> 'retention' ->> 'keep', options -> 'retention' ->> 'time_column')
                    ELSE '' END
        WHEN 'immutable' THEN
            format('SELECT integrity.protect_immutable(%L, %s);', tbl::text, integrity._array_sql(columns))
        WHEN 'write_once' THEN
            format('SELECT integrity.protect_write_once(%L, %s);', tbl::text, integrity._array_sql(columns))
        WHEN 'versioning' THEN
            format('SELECT integrity.enable_versioning(%L, version_column => %L, strict => %s);', tbl::text,
                   columns[1], CASE WHEN NOT (options ->> 'strict')::boolean THEN 'false' ELSE 'true' END)
        WHEN 'stock' THEN
            format('SELECT integrity.guard_stock(%L, stock_column => %L, reserved_column => %L);', tbl::text,
                   columns[1], columns[2])
        WHEN 'credit' THEN
            format('SELECT integrity.guard_credit(%L, limit_column => %L, used_column => %L);', tbl::text,
                   columns[1], columns[2])
        WHEN 'ledger_credit' THEN
            format('SELECT integrity.guard_ledger_credit(%L, %L, %s, amount_column => %L, entry_type_column => %L,'
                   ' debit_value => %L, credit_value => %L, limit_column => %L, used_column => %L);',
                   tbl::text, options ->> 'accounts', integrity._array_sql(columns),
                   options ->> 'amount_column', options ->> 'entry_type_column', options ->> 'debit_value',
                   options ->> 'credit_value', options ->> 'limit_column', options ->> 'used_column')
        WHEN 'hash_chain' THEN
            format('SELECT integrity.enable_hash_chain(%L, %s, seq_column => %L, hash_column => %L);', tbl::text,
                   integrity._array_sql(columns), options ->> 'seq_column', options ->> 'hash_column')
        WHEN 'soft_delete' THEN
            format('SELECT integrity.enable_soft_delete(%L, deleted_column => %L, flag_column => %L);', tbl::text,
                   options ->> 'deleted_column', options ->> 'flag_column')
        WHEN 'lifecycle' THEN
            format('SELECT integrity.track_lifecycle(%L, columns => %s, exclude => %s);', tbl::text,
                   CASE WHEN cardinality(columns) > 0 THEN integrity._array_sql(columns) ELSE 'NULL' END,
                   CASE WHEN options ? 'exclude'
                        THEN integrity._array_sql(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'exclude')))
                        ELSE 'NULL' END)
        WHEN 'total' THEN
            (SELECT string_agg(format('SELECT integrity.maintain_total(%L, %L, %L, %s, value_column => %L, filter => %L);',
                                      tbl::text, t ->> 'column', t ->> 'source',
                                      integrity._array_sql(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(t -> 'key_columns'))),
                                      t ->> 'value_column', t ->> 'filter'), ' ' ORDER BY n)
               FROM pg_catalog.jsonb_array_elements(options -> 'totals') WITH ORDINALITY AS u(t, n))
        END
$$;

-- ARRAY['a', 'b'] (or '{}'::text[]) as SQL text.
CREATE FUNCTION integrity._array_sql(items text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce('ARRAY[' || string_agg(quote_nullable(item), ', ' ORDER BY n) || ']', '''{}''::text[]')
      FROM unnest(items) WITH ORDINALITY AS u(item, n)
$$;

-- The SQL that removes a guard.
CREATE FUNCTION integrity._unprotect_sql(tbl regclass, guard text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT format('SELECT integrity.unprotect(%L, %L);', tbl::text, guard) $$;

-- The columns of rel that identify a row: its primary key, else its replica
-- identity index, else none (the caller falls back to the ctid).
CREATE FUNCTION integrity._key_columns(rel regclass)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT array_agg(a.attname::text ORDER BY k.n)
              FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
              JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE k.n <= i.indnkeyatts)
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
     WHERE i.indrelid = rel
       AND (i.indisprimary OR (i.indisreplident AND c.relreplident = 'i'))
     ORDER BY i.indisprimary DESC
     LIMIT 1
$$;

-- A jsonb_build_object(...) expression over alias t that identifies a row of
-- rel: {"id": 42}; without a primary key or replica identity index,
-- {"ctid": "(0,1)"} (plus "partition" on a partitioned table).
CREATE FUNCTION integrity._row_key_sql(rel regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT 'pg_catalog.jsonb_build_object(' || string_agg(format('%L, t.%I', col, col), ', ' ORDER BY n) || ')'
           FROM unnest(integrity._key_columns(rel)) WITH ORDINALITY AS k(col, n)),
        CASE WHEN (SELECT relkind FROM pg_catalog.pg_class WHERE oid = rel) = 'p'
             THEN 'pg_catalog.jsonb_build_object(''ctid'', t.ctid, ''partition'', t.tableoid::pg_catalog.regclass)'
             ELSE 'pg_catalog.jsonb_build_object(''ctid'', t.ctid)' END)
$$;

-- Whether rel has every one of the columns.
CREATE FUNCTION integrity._has_columns(rel regclass, columns text[])
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT columns IS NOT NULL
       AND NOT EXISTS (SELECT FROM unnest(columns) AS col
                        WHERE col IS NULL
                           OR NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                           WHERE a.attrelid = rel AND a.attname = col
                                             AND a.attnum > 0 AND NOT a.attisdropped))
$$;

------------------------------------------------------------------------------
-- violations()

-- The row rules of one guard, over the row named row_alias: a condition that
-- is true for a row that breaks the rule, an SQL expression for the detail
-- (evaluated only for such rows), and the columns the rule reads.  Guards
-- without a rule on the data alone (append_only, write_once, ledger_credit)
-- have none here.  nan_possible: the guard's quantities are numeric, which can
-- be NaN.  The stock and credit guards' recheck triggers fire on these rules.
CREATE FUNCTION integrity._row_rules(guard text, columns text[], nan_possible boolean, row_alias text)
RETURNS TABLE (rule_guard text, condition text, detail text, uses text[])
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- An immutable column that is NULL: the guard keeps it NULL forever.
    SELECT 'immutable', format('%s.%I IS NULL', row_alias, col),
           quote_literal(format('immutable column "%s" is NULL: an immutable NULL can never be set', col)),
           ARRAY[col]
      FROM unnest(columns) WITH ORDINALITY AS c(col, n)
     WHERE guard = 'immutable'
    UNION ALL
    SELECT 'versioning', format('(%1$s.%2$I IS NULL OR %1$s.%2$I < 1)', row_alias, columns[1]),
           format('%L || COALESCE(%s.%I::text, %L) || %L',
                  format('version column "%s" is ', columns[1]), row_alias, columns[1], 'NULL', ': versions start at 1'),
           ARRAY[columns[1]]
     WHERE guard = 'versioning'
    UNION ALL
    -- stock: columns = {stock, reserved}; credit: columns = {limit, used}.
    SELECT r.rule_guard, r.condition, r.detail, columns[1:2]
      FROM (SELECT guard AS rule_guard, format('%s.%I', row_alias, columns[1]) AS total,
                   format('%s.%I', row_alias, columns[2]) AS part, columns[1] AS total_name, columns[2] AS part_name,
                   CASE guard WHEN 'stock' THEN 'stock' ELSE 'the credit limit' END AS total_word,
                   CASE guard WHEN 'stock' THEN 'reserved stock' ELSE 'used credit' END AS part_word
             WHERE guard IN ('stock', 'credit')) q
     CROSS JOIN LATERAL (VALUES
        (1, q.rule_guard, format('%s < 0', q.total),
         format('%L || %s::text || %L', format('column "%s" is ', q.total_name), q.total,
                format(': %s must be >= 0', q.total_word))),
        (2, q.rule_guard, format('%s < 0', q.part),
         format('%L || %s::text || %L', format('column "%s" is ', q.part_name), q.part,
                format(': %s must be >= 0', q.part_word))),
        (3, q.rule_guard, format('%s > %s', q.part, q.total),
         format('%L || %s::text || %L || %s::text || %L', format('column "%s" (', q.part_name), q.part,
                format(') exceeds column "%s" (', q.total_name), q.total,
                format('): %s must be <= %s', q.part_word, CASE q.rule_guard WHEN 'stock' THEN 'stock' ELSE 'the limit' END))),
        -- NaN compares greater than every number, so it breaks none of the above.
        (4, q.rule_guard, CASE WHEN nan_possible THEN format('%s = ''NaN''', q.total) END,
         quote_literal(format('column "%s" is NaN: %s must be a number', q.total_name, q.total_word))),
        (5, q.rule_guard, CASE WHEN nan_possible THEN format('%s = ''NaN''', q.part) END,
         quote_literal(format('column "%s" is NaN: %s must be a number', q.part_name, q.part_word)))
        ) AS r(n, rule_guard, condition, detail)
     WHERE r.condition IS NOT NULL
$$;

-- One query that checks every row rule of the guards registered on owners
-- (rel itself, or rel and its partitioned ancestors) against the rows of rel
-- in a single scan: the OR of the rules filters the scan (what a hand-written
-- query would do), and only the rows it lets through are expanded into one
-- output row per broken rule, with their key and detail.  The query has the
-- shape a DBA would write by hand and no more expressions than that (on a
-- large table JIT compiles them, and its time counts).  Rules whose columns
-- no longer exist are left out (health() reports them).  NULL when there is
-- no rule to check.  $1 of the query is the table_name it reports.
CREATE FUNCTION integrity._violations_sql(rel regclass, owners regclass[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    rules record;
BEGIN
    SELECT string_agg(format('(%L, %s, %s)', rs.rule_guard, rs.condition, rs.detail), ', ' ORDER BY rs.n) AS vals,
           string_agg(format('(%s)', rs.condition), ' OR ' ORDER BY rs.n) AS filter
      INTO rules
      FROM (SELECT row_number() OVER (ORDER BY r.guard, ru.ord) AS n, ru.rule_guard, ru.condition, ru.detail
              FROM integrity.guard_registry r
             CROSS JOIN LATERAL integrity._row_rules(r.guard, r.columns, coalesce((
                            SELECT a.atttypid = 'pg_catalog.numeric'::pg_catalog.regtype
                              FROM pg_catalog.pg_attribute a
                             WHERE a.attrelid = rel AND a.attname = r.columns[1] AND NOT a.attisdropped), false), 't')
                        WITH ORDINALITY AS ru(rule_guard, condition, detail, uses, ord)
             WHERE r.table_name = ANY (owners)
               AND integrity._has_columns(rel, ru.uses)) rs;
    IF rules.vals IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN format('SELECT v.guard, $1, %s, v.detail'
                  ' FROM %s t CROSS JOIN LATERAL (VALUES %s) AS v(guard, broken, detail)'
                  ' WHERE (%s) AND v.broken',
                  integrity._row_key_sql(rel), rel, rules.vals, rules.filter);
END;
$$;

-- Accounts whose cached used credit differs from what their ledger says
-- (debits minus credits per key) plus what their pending credit holds hold,
-- and ledger keys without an account.  One
-- scan of each table: the ledger is aggregated per key and full-joined with
-- the accounts.  NULL when a table or column of the guard is missing.
CREATE FUNCTION integrity._ledger_drift_sql(ledger regclass, accounts regclass, keys text[], options jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    amount text := options ->> 'amount_column';
    entry_type text := options ->> 'entry_type_column';
    used text := options ->> 'used_column';
    k text;
    a_cols text := '';
    l_cols text := '';
    l_group text := '';
    a_alias text := '';
    join_on text := '';
    key_json text := '';
    hold_key text := '';
    i int := 0;
BEGIN
    IF ledger IS NULL OR accounts IS NULL OR coalesce(cardinality(keys), 0) = 0
       OR options ->> 'debit_value' IS NULL OR options ->> 'credit_value' IS NULL
       OR NOT integrity._has_columns(ledger, keys || ARRAY[amount, entry_type])
       OR NOT integrity._has_columns(accounts, keys || ARRAY[used]) THEN
        RETURN NULL;
    END IF;
    FOREACH k IN ARRAY keys LOOP
        i := i + 1;
        a_cols := a_cols || format('a.%I, ', k);
        l_cols := l_cols || format('l.%I, ', k);
        l_group := l_group || CASE WHEN i > 1 THEN ', ' ELSE '' END || format('l.%I', k);
        a_alias := a_alias || format('k%s, ', i);
        join_on := join_on || CASE WHEN i > 1 THEN ' AND ' ELSE '' END || format('a.k%1$s = l.k%1$s', i);
        key_json := key_json || CASE WHEN i > 1 THEN ', ' ELSE '' END || format('%L, COALESCE(a.k%s, l.k%s)', k, i, i);
        hold_key := hold_key || CASE WHEN i > 1 THEN ', ' ELSE '' END || format('%L, a.k%s', k, i);
    END LOOP;
    RETURN format(
        'SELECT ''ledger_credit'', $1, pg_catalog.jsonb_build_object(%s),'
        ' CASE WHEN a.present IS NULL'
        '  THEN %L || (COALESCE(l.debits, 0) - COALESCE(l.credits, 0))::text'
        '       || '': debits '' || COALESCE(l.debits, 0)::text || '', credits '' || COALESCE(l.credits, 0)::text || %L'
        '  ELSE %L || COALESCE(a.used::text, ''NULL'') || %L || (COALESCE(l.debits, 0) - COALESCE(l.credits, 0))::text'
        '       || '' (debits '' || COALESCE(l.debits, 0)::text || '', credits '' || COALESCE(l.credits, 0)::text || '')'''
        '       || COALESCE('' and its pending holds hold '' || h.held::text, '''')'
        ' END'
        ' FROM (SELECT true, %s a.%I FROM %s a) AS a(present, %s used)'
        ' FULL JOIN (SELECT %s sum(l.%I) FILTER (WHERE l.%I = %L), sum(l.%I) FILTER (WHERE l.%I = %L)'
        '              FROM %s l GROUP BY %s) AS l(%s debits, credits)'
        '   ON %s'
        ' LEFT JOIN (SELECT h.row_id, sum(h.quantity) FROM integrity.hold_records h'
        '             WHERE h.table_name = $1 AND h.kind = ''credit'' AND h.status = ''pending'''
        '             GROUP BY h.row_id) AS h(row_id, held)'
        '   ON h.row_id = pg_catalog.jsonb_build_object(%s)'
        ' WHERE a.present IS NULL'
        '    OR a.used IS DISTINCT FROM COALESCE(l.debits, 0) - COALESCE(l.credits, 0) + COALESCE(h.held, 0)',
        key_json,
        format('ledger %s has entries for this key (net ', ledger),
        format('), but %s has no row for it', accounts),
        format('column "%s" is ', used),
        format(', but ledger %s says ', ledger),
        a_cols, used, accounts, a_alias,
        l_cols, amount, entry_type, options ->> 'debit_value', amount, entry_type, options ->> 'credit_value',
        ledger, l_group, a_alias,
        join_on, hold_key);
END;
$$;

CREATE FUNCTION integrity.violations(tbl regclass DEFAULT NULL)
RETURNS TABLE (guard text, table_name regclass, row_key jsonb, detail text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    target record;
    query text;
BEGIN
    -- Row rules: one query (one scan) per table.  Without tbl, every guarded
    -- table; with tbl, its own guards and those of its partitioned ancestors.
    FOR target IN
        SELECT t.rel, t.owners
          FROM (SELECT tbl AS rel,
                       ARRAY(SELECT tbl UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a) AS owners
                 WHERE tbl IS NOT NULL
                UNION ALL
                SELECT DISTINCT r.table_name, ARRAY[r.table_name]
                  FROM integrity.guard_registry r
                 WHERE tbl IS NULL) t
         WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = t.rel)
         ORDER BY t.rel::text COLLATE "C"
    LOOP
        query := integrity._violations_sql(target.rel, target.owners);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.rel;
        END IF;
    END LOOP;

    -- Ledger credit: drift between each account and its ledger.
    FOR target IN
        SELECT r.table_name AS ledger, integrity._relation(r.options ->> 'accounts') AS accounts, r.columns, r.options
          FROM integrity.guard_registry r
         WHERE r.guard = 'ledger_credit'
           AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
           AND (tbl IS NULL OR r.table_name = tbl OR integrity._relation(r.options ->> 'accounts') = tbl)
         ORDER BY r.table_name::text COLLATE "C"
    LOOP
        RETURN QUERY
            SELECT 'ledger_credit', target.ledger, NULL::jsonb,
                   format('the guard is broken, its ledger is not checked: %s %L is no value of column "%s" (%s);'
                          ' see integrity.health()', v.argument, v.value, target.options ->> 'entry_type_column',
                          v.problem)
              FROM (VALUES ('debit_value', target.options ->> 'debit_value'),
                           ('credit_value', target.options ->> 'credit_value')) AS v0(argument, value)
             CROSS JOIN LATERAL (SELECT v0.argument, v0.value,
                                        integrity._entry_value_problem(target.ledger, target.options ->> 'entry_type_column',
                                                                       v0.value) AS problem) v
             WHERE v.problem IS NOT NULL;
        IF FOUND THEN
            CONTINUE;
        END IF;
        query := integrity._ledger_drift_sql(target.ledger, target.accounts, target.columns, target.options);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.accounts;
        END IF;
    END LOOP;

    -- Holds: stock rows that reserve less than their pending holds hold.
    FOR target IN
        SELECT r.table_name AS rel, r.columns[2] AS reserved_column
          FROM integrity.guard_registry r
         WHERE r.guard = 'stock' AND (tbl IS NULL OR r.table_name = tbl)
           AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
           AND EXISTS (SELECT FROM integrity.hold_records h WHERE h.table_name = r.table_name AND h.status = 'pending')
         ORDER BY r.table_name::text COLLATE "C"
    LOOP
        query := integrity._hold_shortfall_sql(target.rel, target.reserved_column);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.rel;
        END IF;
    END LOOP;

    -- Maintained totals: target rows whose total differs from their sources.
    FOR target IN
        SELECT r.table_name AS rel, r.columns, r.options
          FROM integrity.guard_registry r
         WHERE r.guard = 'total' AND (tbl IS NULL OR r.table_name = tbl)
           AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.table_name)
         ORDER BY r.table_name::text COLLATE "C"
    LOOP
        query := integrity._total_drift_sql(target.rel, target.columns, target.options);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query USING target.rel;
        END IF;
    END LOOP;

    -- Soft delete: live rows that reference a soft-deleted row.
    FOR target IN
        SELECT k.parent, k.parent_columns, s.deleted_column, k.child, k.child_columns
          FROM integrity._foreign_keys() k
         CROSS JOIN LATERAL integrity._soft_delete_of(k.parent) s
         WHERE s.registered = k.parent
           AND (tbl IS NULL OR k.child = tbl OR k.parent = tbl)
         ORDER BY k.child::text COLLATE "C", k.parent::text COLLATE "C", k.child_columns
    LOOP
        query := integrity._deleted_parent_sql(target.parent, target.parent_columns, target.deleted_column,
                                               target.child, target.child_columns);
        IF query IS NOT NULL THEN
            RETURN QUERY EXECUTE query;
        END IF;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION integrity.violations(regclass) IS
    'Existing rows that break a registered guard (of tbl, or of every guarded table): NULL immutable columns, versions NULL or below 1, stock and credit rules, accounts whose used credit differs from their ledger and pending credit holds, stock rows reserving less than their pending holds, live rows referencing a soft-deleted row. One scan per table.';

------------------------------------------------------------------------------
-- health()

-- pg_trigger.tgtype as SQL: 'BEFORE UPDATE OR DELETE FOR EACH ROW'.
CREATE FUNCTION integrity._tgtype_text(tgtype smallint)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN tgtype & 2 <> 0 THEN 'BEFORE' WHEN tgtype & 64 <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END
           || ' '
           || array_to_string(ARRAY[CASE WHEN tgtype & 4 <> 0 THEN 'INSERT' END,
                                    CASE WHEN tgtype & 16 <> 0 THEN 'UPDATE' END,
                                    CASE WHEN tgtype & 8 <> 0 THEN 'DELETE' END,
                                    CASE WHEN tgtype & 32 <> 0 THEN 'TRUNCATE' END], ' OR ')
           || CASE WHEN tgtype & 1 <> 0 THEN ' FOR EACH ROW' ELSE ' FOR EACH STATEMENT' END
$$;

-- The arguments trigger trigger_name of a registry row must have, as
-- pg_trigger.tgargs stores them (each followed by a NUL byte).
CREATE FUNCTION integrity._trigger_args(trigger_name name, columns text[], options jsonb)
RETURNS bytea
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(convert_to(arg, pg_catalog.getdatabaseencoding()) || '\x00'::bytea, ''::bytea
                               ORDER BY n), ''::bytea)
      FROM unnest(integrity._trigger_arguments(trigger_name, columns, options)) WITH ORDINALITY AS a(arg, n)
$$;

-- Rows come in repair order: by severity and table, and within a table the
-- registry clean-ups first.  Every remedy is idempotent, and a remedy that
-- re-registers a guard first puts the firing modes of every guard trigger of
-- the table (and its partitions) right, in one ALTER TABLE per relation: the
-- event trigger refuses any ALTER TABLE that leaves a guard trigger in the
-- wrong mode, including the one a registration runs.  So the remedies can be
-- run one by one, top to bottom, or each on its own.
CREATE FUNCTION integrity.health()
RETURNS TABLE (severity text, table_name regclass, guard text, problem text, remedy text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
-- The catalog query is small but its estimates are not: without this, JIT
-- compilation would take seconds.
SET jit = off
AS $$
WITH registered AS (
    SELECT r.table_name AS tbl, r.guard, r.columns, r.options, c.relkind,
           CASE WHEN r.guard = 'ledger_credit' THEN integrity._relation(r.options ->> 'accounts') END AS accounts
      FROM integrity.guard_registry r
      LEFT JOIN pg_catalog.pg_class c ON c.oid = r.table_name
),
-- Every column a registered guard reads, with the relation it is read from.
guard_columns AS (
    SELECT r.tbl, r.guard, u.rel, u.col, u.n,
           EXISTS (SELECT FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = u.rel AND a.attname = u.col AND a.attnum > 0 AND NOT a.attisdropped) AS present
      FROM registered r
     CROSS JOIN LATERAL integrity._guard_columns(r.tbl, r.guard, r.columns, r.options) u
     WHERE r.relkind IS NOT NULL AND u.col IS NOT NULL
),
-- Registry rows whose triggers can be checked: the table, the accounts table
-- and every column are there.
sound AS (
    SELECT r.*
      FROM registered r
     WHERE r.relkind IS NOT NULL
       AND (r.guard <> 'ledger_credit' OR r.accounts IS NOT NULL)
       AND NOT EXISTS (SELECT FROM guard_columns gc
                        WHERE gc.tbl = r.tbl AND gc.guard = r.guard AND NOT gc.present)
),
-- The triggers each registered guard needs, on the table and on every
-- partition (row triggers as clones, TRUNCATE triggers of their own).
expected AS (
    SELECT r.tbl, r.guard, r.columns, r.options, m.rel,
           g.trigger_name, g.function_name, g.tgtype, g.mode, g.per_partition, g.has_when
      FROM registered r
     CROSS JOIN LATERAL integrity._guard_triggers(r.guard) g
     CROSS JOIN LATERAL integrity._partition_tree(r.tbl) AS m(rel)
     WHERE r.relkind IS NOT NULL
       AND NOT (g.recheck AND NOT integrity._needs_recheck(r.tbl, r.guard))
       AND NOT (g.trigger_name = 'integrity_append_only_truncate'
                AND coalesce((r.options ->> 'allow_truncate')::boolean, false))
),
found AS (
    SELECT e.*, t.oid AS tgoid, t.tgenabled, t.tgtype AS actual_tgtype, t.tgargs,
           t.tgqual IS NOT NULL AS actual_has_when,
           t.tgfoid::regprocedure AS actual_function,
           coalesce(p.proname = e.function_name AND n.nspname = 'integrity', false) AS own_function,
           format('trigger %s of the %s guard', e.trigger_name, e.guard)
           || CASE WHEN e.rel = e.tbl THEN '' ELSE format(' on partition %s of %s', e.rel, e.tbl) END AS what
      FROM expected e
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = e.rel AND t.tgname = e.trigger_name
      LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE (e.tbl, e.guard) IN (SELECT s.tbl, s.guard FROM sound s)
),
-- One ALTER TABLE per relation that puts every guard trigger on it that is
-- disabled or in the wrong mode back in its mode.
relation_fix AS (
    SELECT f.rel, integrity._enable_triggers_sql(f.rel, array_agg(f.trigger_name), array_agg(f.mode)) AS fix
      FROM found f
     WHERE f.tgoid IS NOT NULL AND f.tgenabled <> f.mode
     GROUP BY f.rel
),
-- The same for a whole partition tree, followed by a space ('' when none).
tree_fix AS (
    SELECT r.tbl, coalesce(string_agg(rf.fix || ' ', '' ORDER BY rf.rel::text COLLATE "C"), '') AS fix
      FROM (SELECT DISTINCT rr.tbl FROM registered rr WHERE rr.relkind IS NOT NULL) r
     CROSS JOIN LATERAL integrity._partition_tree(r.tbl) AS m(rel)
      LEFT JOIN relation_fix rf ON rf.rel = m.rel
     GROUP BY r.tbl
),
-- The registration of each guard, after the mode fixes of its table.
registration AS (
    SELECT r.tbl, r.guard, tf.fix,
           tf.fix || integrity._registration_sql(r.tbl, r.guard, r.columns, r.options) AS sql
      FROM registered r
      JOIN tree_fix tf ON tf.tbl = r.tbl
),
-- Triggers that carry a guard trigger's name but that no registered guard needs.
stray AS (
    SELECT t.tgrelid::regclass AS rel, t.tgname, g.guard,
           (SELECT rg.sql
              FROM registration rg
             WHERE rg.guard = g.guard
               AND (rg.tbl = t.tgrelid
                    OR rg.tbl IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(t.tgrelid) a))
             LIMIT 1) AS registration
      FROM pg_catalog.pg_trigger t
      JOIN (SELECT DISTINCT k.trigger_name, k.guard FROM integrity._guard_triggers(NULL) k) g
        ON g.trigger_name = t.tgname
     WHERE t.tgparentid = 0
       AND NOT EXISTS (SELECT FROM expected e WHERE e.rel = t.tgrelid AND e.trigger_name = t.tgname)
),
-- step orders the problems of one table: registry rows that must go (1),
-- guards re-registered with the columns they have left (2), the rest (3).
problems (severity, table_name, guard, step, problem, remedy) AS (
    -- The registry outlived the table.
    SELECT 'error', r.tbl, r.guard, 1,
           format('the %s guard is registered for a table that no longer exists (OID %s)', r.guard, r.tbl::oid),
           format('DELETE FROM integrity.guard_registry WHERE table_name::oid = %s AND guard = %L;', r.tbl::oid, r.guard)
      FROM registered r
     WHERE r.relkind IS NULL
    UNION ALL
    -- A debit or credit value that is no value of the entry type column any
    -- more (an enum label renamed): every entry is refused as of no known type.
    SELECT 'error', r.tbl, r.guard, 3,
           format('%s %L of the ledger_credit guard is no value of column "%s": %s; remove the guard and register'
                  ' it again with values of the column', v.argument, v.value, r.options ->> 'entry_type_column',
                  p.problem),
           integrity._unprotect_sql(r.tbl, r.guard)
      FROM registered r
     CROSS JOIN LATERAL (VALUES ('debit_value', r.options ->> 'debit_value'),
                                ('credit_value', r.options ->> 'credit_value')) AS v(argument, value)
     CROSS JOIN LATERAL (SELECT integrity._entry_value_problem(r.tbl, r.options ->> 'entry_type_column', v.value)
                          WHERE r.relkind IS NOT NULL AND r.guard = 'ledger_credit') AS p(problem)
     WHERE p.problem IS NOT NULL
    UNION ALL
    -- Inheritance children, which the guards do not cover (the event trigger
    -- refuses new ones; these are older, or made while it was disabled).
    SELECT 'error', r.tbl, r.guard, 3,
           format('%s inherits from %s, which has the %s guard: guards cover partitions, not inheritance'
                  ' children, yet UPDATE, DELETE and TRUNCATE of %s reach its rows', child, r.tbl, r.guard, r.tbl),
           format('ALTER TABLE %s NO INHERIT %s;', child, r.tbl)
      FROM registered r
     CROSS JOIN LATERAL integrity._inheritance_children(r.tbl) AS child
     WHERE r.relkind IS NOT NULL
    UNION ALL
    SELECT 'error', r.tbl, r.guard, 1,
           format('accounts table %s of the ledger_credit guard no longer exists (dropped or renamed):'
                  ' remove the guard, then register it again with the accounts table as it is now',
                  r.options ->> 'accounts'),
           integrity._unprotect_sql(r.tbl, r.guard)
      FROM registered r
     WHERE r.relkind IS NOT NULL AND r.guard = 'ledger_credit' AND r.accounts IS NULL
    UNION ALL
    -- A registered column is gone (renamed or dropped while the event
    -- trigger was not watching).  A column guard is registered again with
    -- the columns it has left; other guards are removed.
    SELECT 'error', gc.rel, gc.guard, CASE WHEN left_over.columns IS NULL THEN 1 ELSE 2 END,
           format('column "%s" of %s, registered for the %s guard%s, no longer exists (renamed or dropped): %s',
                  gc.col, gc.rel, gc.guard, CASE WHEN gc.rel <> gc.tbl THEN format(' of %s', gc.tbl) ELSE '' END,
                  CASE WHEN left_over.columns IS NOT NULL
                       THEN 'the guard is registered again with the columns it has left; add the new name of a renamed column'
                       ELSE 'remove the guard, then register it again with the columns as they are now' END),
           CASE WHEN left_over.columns IS NOT NULL
                THEN format('BEGIN; %s %s%s COMMIT;', integrity._unprotect_sql(gc.tbl, gc.guard), tf.fix,
                            integrity._registration_sql(gc.tbl, gc.guard, left_over.columns, '{}'))
                ELSE integrity._unprotect_sql(gc.tbl, gc.guard) END
      FROM guard_columns gc
      JOIN tree_fix tf ON tf.tbl = gc.tbl
     CROSS JOIN LATERAL (SELECT array_agg(o.col ORDER BY o.n) AS columns
                           FROM guard_columns o
                          WHERE o.tbl = gc.tbl AND o.guard = gc.guard AND o.present
                            AND gc.guard IN ('immutable', 'write_once')) left_over
     WHERE NOT gc.present
    UNION ALL
    -- Guard triggers: missing, replaced, disabled, in the wrong mode.
    SELECT 'error', f.rel, f.guard, 3,
           CASE WHEN f.rel = f.tbl THEN format('trigger %s of the %s guard is missing', f.trigger_name, f.guard)
                ELSE format('partition %s of %s is not covered: trigger %s of the %s guard is missing',
                            f.rel, f.tbl, f.trigger_name, f.guard) END,
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NULL
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: it runs %s %s, not integrity.%s() %s', f.what,
                  f.actual_function, integrity._tgtype_text(f.actual_tgtype), f.function_name,
                  integrity._tgtype_text(f.tgtype)),
           -- CREATE OR REPLACE TRIGGER repairs a row trigger; TRUNCATE triggers
           -- are only created where missing, so the guard is put back whole.
           CASE WHEN f.per_partition
                THEN format('BEGIN; %s%s %s COMMIT;', rg.fix, integrity._unprotect_sql(f.tbl, f.guard),
                            integrity._registration_sql(f.tbl, f.guard, f.columns, f.options))
                ELSE rg.sql END
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND (NOT f.own_function OR f.actual_tgtype <> f.tgtype)
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: its arguments differ from the registered ones', f.what),
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND f.own_function AND f.actual_tgtype = f.tgtype
       AND f.tgargs <> integrity._trigger_args(f.trigger_name, f.columns, f.options)
    UNION ALL
    SELECT 'error', f.rel, f.guard, 3,
           format('%s was replaced: it %s', f.what,
                  CASE WHEN f.actual_has_when THEN 'has a WHEN clause, which can keep it from firing'
                       ELSE 'lacks its WHEN clause' END),
           rg.sql
      FROM found f
      JOIN registration rg ON rg.tbl = f.tbl AND rg.guard = f.guard
     WHERE f.tgoid IS NOT NULL AND f.own_function AND f.actual_tgtype = f.tgtype
       AND f.tgargs = integrity._trigger_args(f.trigger_name, f.columns, f.options)
       AND f.actual_has_when <> f.has_when
    UNION ALL
    SELECT CASE WHEN f.mode = 'O' AND f.tgenabled = 'A' THEN 'warning' ELSE 'error' END,
           f.rel, f.guard, 3,
           format('%s is %s', f.what,
                  CASE WHEN f.tgenabled = 'D' THEN 'disabled: the guard is not enforced'
                       WHEN f.mode = 'A' AND f.tgenabled = 'O'
                            THEN 'ENABLE (origin only), not ENABLE ALWAYS: sessions with session_replication_role = replica skip it'
                       WHEN f.tgenabled = 'R'
                            THEN format('ENABLE REPLICA, not %s: ordinary sessions skip it',
                                        CASE f.mode WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'ENABLE' END)
                       ELSE 'ENABLE ALWAYS, not ENABLE (origin only): it also fires for rows that logical replication applies, which their origin already processed'
                  END),
           rf.fix
      FROM found f
      JOIN relation_fix rf ON rf.rel = f.rel
     WHERE f.tgoid IS NOT NULL AND f.tgenabled <> f.mode
    UNION ALL
    -- Guard triggers that no registered guard needs.
    SELECT CASE WHEN s.registration IS NULL THEN 'warning' ELSE 'info' END, s.rel, s.guard, 3,
           CASE WHEN s.registration IS NULL
                THEN format('trigger %s of the %s guard is on a table the registry has no %s guard for'
                            ' (registry row deleted, or a partition detached from a guarded table): unprotect'
                            ' removes it; registering the guard again keeps it', s.tgname, s.guard, s.guard)
                ELSE format('trigger %s is not part of the %s guard as registered', s.tgname, s.guard) END,
           coalesce(s.registration, integrity._unprotect_sql(s.rel, s.guard))
      FROM stray s
    UNION ALL
    -- A guard function under a name the extension does not manage (a renamed guard trigger).
    SELECT 'warning', t.tgrelid::regclass, min(g.guard), 3,
           format('trigger %s runs guard function integrity.%s() under a name pg_integrity does not manage:'
                  ' neither the registry nor the event triggers watch it', t.tgname, p.proname),
           format('DROP TRIGGER %I ON %s;', t.tgname, t.tgrelid::regclass)
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'integrity'
      JOIN integrity._guard_triggers(NULL) g ON g.function_name = p.proname
     WHERE t.tgparentid = 0
       AND t.tgname NOT IN (SELECT k.trigger_name FROM integrity._guard_triggers(NULL) k)
     GROUP BY t.tgrelid, t.tgname, p.proname
    UNION ALL
    -- Guarded tables without a primary key.
    SELECT 'warning', r.tbl, NULL, 3,
           format('guarded table %s has no primary key: guard errors and violations() cannot name its rows'
                  ' by a stable key', r.tbl),
           tf.fix
           || CASE WHEN r.relkind = 'r' AND candidate.index_name IS NOT NULL
                   THEN format('ALTER TABLE %s ADD PRIMARY KEY USING INDEX %I;', r.tbl, candidate.index_name)
                   ELSE format('ALTER TABLE %s ADD PRIMARY KEY (%s);', r.tbl,
                               coalesce(candidate.key_columns, '<columns that identify a row>')) END
      FROM (SELECT DISTINCT rr.tbl, rr.relkind FROM registered rr WHERE rr.relkind IS NOT NULL) r
      JOIN tree_fix tf ON tf.tbl = r.tbl
      LEFT JOIN LATERAL (
            -- a valid, unique, non-partial index on NOT NULL columns
            SELECT ic.relname AS index_name,
                   (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
                      FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) AS key_columns
              FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
             WHERE i.indrelid = r.tbl AND i.indisunique AND i.indisvalid AND i.indimmediate
               AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = i.indnatts
               AND NOT EXISTS (SELECT FROM unnest(i.indkey::int2[]) AS k(attnum)
                                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                                WHERE NOT a.attnotnull)
             ORDER BY i.indnatts, ic.relname
             LIMIT 1) candidate ON true
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_constraint con WHERE con.conrelid = r.tbl AND con.contype = 'p')
    UNION ALL
    -- The extension's event triggers: missing, disabled, or not ENABLE ALWAYS.
    SELECT CASE WHEN e.evtenabled = 'O' THEN 'warning' ELSE 'error' END, NULL, NULL, 1,
           format('event trigger %s %s%s', v.evtname,
                  CASE WHEN e.oid IS NULL THEN 'is missing: '
                       WHEN e.evtenabled = 'D' THEN 'is disabled: '
                       WHEN e.evtenabled = 'O' THEN 'is ENABLE (origin only), not ENABLE ALWAYS: in sessions with session_replication_role = replica, '
                       ELSE 'is ENABLE REPLICA, not ENABLE ALWAYS: in ordinary sessions, ' END,
                  v.consequence),
           CASE WHEN e.oid IS NULL
                THEN integrity._event_trigger_sql(v.evtname)
                     || format(' ALTER EXTENSION pg_integrity ADD EVENT TRIGGER %I;', v.evtname)
                ELSE format('ALTER EVENT TRIGGER %I ENABLE ALWAYS;', v.evtname) END
      FROM integrity._event_triggers() v
      LEFT JOIN pg_catalog.pg_event_trigger e ON e.evtname = v.evtname
     WHERE e.oid IS NULL OR e.evtenabled <> 'A'
    UNION ALL
    -- The triggers that keep the lifecycle events append-only: missing,
    -- replaced, disabled or skipped under session_replication_role = replica.
    SELECT 'error', e.rel, 'lifecycle', 1,
           format('trigger %s of %s is %s', l.trigger_name, e.rel,
                  CASE WHEN t.oid IS NULL THEN 'missing: events can be changed or removed'
                       WHEN NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false)
                            OR t.tgtype <> l.tgtype
                            THEN format('replaced: it runs %s %s', t.tgfoid::regprocedure, integrity._tgtype_text(t.tgtype))
                       WHEN t.tgenabled = 'D' THEN 'disabled: events can be changed or removed'
                       ELSE 'not ENABLE ALWAYS: sessions with session_replication_role = replica can change or remove events' END),
           CASE WHEN t.oid IS NULL THEN l.create_sql
                WHEN NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false)
                     OR t.tgtype <> l.tgtype
                     THEN format('DROP TRIGGER %I ON %s; %s', l.trigger_name, e.rel, l.create_sql)
                ELSE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I;', e.rel, l.trigger_name) END
      FROM (SELECT integrity._relation('integrity.lifecycle_events') AS rel) e
     CROSS JOIN integrity._lifecycle_events_triggers() l
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = e.rel AND t.tgname = l.trigger_name
      LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE e.rel IS NOT NULL
       AND (t.oid IS NULL OR t.tgenabled <> 'A' OR t.tgtype <> l.tgtype
            OR NOT coalesce(p.proname = 'lifecycle_events_guard' AND n.nspname = 'integrity', false))
    UNION ALL
    -- The compiled guard functions: replaced by other code, or gone.  What
    -- they should be, and the remedy, is their declaration.
    SELECT 'error', NULL, min(g.guard), 1,
           CASE WHEN min(p.oid::int8) IS NULL
                THEN format('guard function integrity.%s() is missing', g.function_name)
                ELSE format('guard function integrity.%s() is not the extension''s compiled code any more'
                            ' (it is %s)', g.function_name,
                            CASE WHEN min(l.lanname) = 'c' THEN format('symbol %s of %s', min(p.prosrc), min(p.probin))
                                 ELSE 'LANGUAGE ' || min(l.lanname) END) END,
           'CREATE OR REPLACE ' || c.declaration || ';'
           || CASE WHEN min(p.oid::int8) IS NULL
                   THEN concat(' ' || c.comment_sql || ';',
                               format(' ALTER EXTENSION pg_integrity ADD FUNCTION integrity.%I(%s);', c.name, c.arguments))
                   ELSE '' END
      FROM integrity._guard_triggers(NULL) g
      JOIN integrity._compiled_functions() c ON c.name = g.function_name
      LEFT JOIN (pg_catalog.pg_proc p
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'integrity'
                 JOIN pg_catalog.pg_language l ON l.oid = p.prolang)
             ON p.proname = g.function_name AND p.pronargs = 0
     GROUP BY g.function_name, c.name, c.arguments, c.symbol, c.declaration, c.comment_sql
    HAVING min(p.oid::int8) IS NULL
        OR bool_or(l.lanname <> 'c' OR p.probin NOT IN ('pg_integrity', '$libdir/pg_integrity')
                   OR p.prosrc <> c.symbol)
    UNION ALL
    -- A maintained total's triggers on its sources: missing or disabled, the
    -- total is no longer maintained (registering it again puts them back); a
    -- source that is gone leaves the total behind.
    SELECT 'error', r.tbl, r.guard, 3,
           CASE WHEN x.source IS NULL
                THEN format('source table %s of the total of column "%s" no longer exists: remove the totals,'
                            ' then register them again with the tables as they are now', x.source_name, x.col)
                ELSE format('trigger %s of the total of column "%s" on %s is %s: the total is not maintained',
                            x.tgname, x.col, x.source, CASE WHEN t.oid IS NULL THEN 'missing' ELSE 'disabled' END) END,
           CASE WHEN x.source IS NULL THEN integrity._unprotect_sql(r.tbl, r.guard)
                ELSE integrity._registration_sql(r.tbl, r.guard, r.columns, r.options) END
      FROM registered r
     CROSS JOIN LATERAL (SELECT tt ->> 'column' AS col, tt ->> 'source' AS source_name,
                                integrity._relation(tt ->> 'source') AS source,
                                (integrity._total_trigger_base(r.options ->> 'name', tt ->> 'column') || f.suffix)::name AS tgname
                           FROM pg_catalog.jsonb_array_elements(r.options -> 'totals') AS tt
                          CROSS JOIN (VALUES (''), ('_apply'), ('_truncate')) AS f(suffix)) x
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = x.source AND t.tgname = x.tgname
     WHERE r.guard = 'total' AND r.relkind IS NOT NULL
       AND (x.source IS NULL OR t.oid IS NULL OR t.tgenabled = 'D')
       AND (x.source IS NOT NULL OR x.tgname LIKE '%\_apply')
    UNION ALL
    -- Refused writes are counted (integrity.refusals) only with the preload.
    SELECT 'info', NULL, NULL, 1,
           'refused writes are not counted (integrity.refusals, LISTEN integrity_refusals): '
           'pg_integrity is not in shared_preload_libraries',
           pg_catalog.format('ALTER SYSTEM SET shared_preload_libraries = %L; -- then restart the server',
                             pg_catalog.concat_ws(', ', NULLIF(pg_catalog.current_setting('shared_preload_libraries'), ''),
                                                  'pg_integrity'))
     WHERE integrity._refusals_dropped() IS NULL
    UNION ALL
    SELECT 'warning', NULL, NULL, 1,
           pg_catalog.format('%s refused writes were not counted: all %s refusal counters are in use', d,
                             pg_catalog.current_setting('pg_integrity.max_refusal_entries')),
           'SELECT integrity.reset_refusals(); -- or raise pg_integrity.max_refusal_entries, then restart the server'
      FROM integrity._refusals_dropped() AS d
     WHERE d > 0
)
SELECT p.severity, p.table_name, p.guard, p.problem, p.remedy
  FROM problems p
 ORDER BY CASE p.severity WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
          p.table_name::text COLLATE "C" NULLS FIRST, p.step, p.guard COLLATE "C" NULLS FIRST, p.problem COLLATE "C"
$$;
COMMENT ON FUNCTION integrity.health() IS
    'The registry against reality: missing, replaced, disabled or replica-skipped guard triggers, uncovered partitions, stray guard triggers, dropped tables and columns, guarded tables without a primary key, the extension''s event triggers and guard functions, the triggers that keep integrity.lifecycle_events append-only. Each row gives the SQL that repairs it; a healthy database returns no rows.';
