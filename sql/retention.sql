-- Retention of append-only tables (guide 000: ledger entries older than two
-- years are archived).  set_retention() records how long rows are kept, in
-- the options of the table's append_only guard; purge_expired() is the one
-- delete the guard lets through: rows older than that, moved into an archive
-- or deleted, in one statement run by integrity._execute_sanctioned().
--
-- A hash-chained table loses a prefix of each chain, up to all of its rows,
-- through purge_expired() or with a partition past the retention that is
-- detached or dropped.  Where a chain now starts is recorded in
-- integrity.chain_anchors: the sequence number and hash of the last row
-- removed, which verify_chain() links the first remaining row to, and the
-- next row of an emptied chain links to.

CREATE TABLE integrity.chain_anchors (
    table_name regclass    NOT NULL,
    chain      jsonb       NOT NULL,
    seq        bigint      NOT NULL,
    hash       bytea       NOT NULL,
    purged_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (table_name, chain)
);
COMMENT ON TABLE integrity.chain_anchors IS
    'Where each purged hash chain starts: the sequence number and hash of its last purged row. Written by purge_expired() and by the detach or drop of a partition past the retention.';
SELECT pg_catalog.pg_extension_config_dump('integrity.chain_anchors', '');
-- Like the registry: anyone may read, only a table's owner may write its rows.
CREATE TRIGGER chain_anchors_owner_check
    BEFORE INSERT OR UPDATE OR DELETE ON integrity.chain_anchors
    FOR EACH ROW EXECUTE FUNCTION integrity._guard_registry_owner_check();
GRANT SELECT, INSERT, UPDATE, DELETE ON integrity.chain_anchors TO PUBLIC;

-- The retention of tbl's append_only guard: how long rows are kept, by which
-- column, and the column's type.  No row when tbl has none.
CREATE FUNCTION integrity._retention_of(tbl regclass)
RETURNS TABLE (keep interval, time_column text, time_type regtype)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (r.options -> 'retention' ->> 'keep')::interval, r.options -> 'retention' ->> 'time_column',
           (SELECT a.atttypid::regtype FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = tbl AND a.attname = r.options -> 'retention' ->> 'time_column'
               AND a.attnum > 0 AND NOT a.attisdropped)
      FROM integrity.guard_registry r
     WHERE r.table_name = tbl AND r.guard = 'append_only' AND r.options ? 'retention'
$$;

CREATE FUNCTION integrity.set_retention(tbl regclass, keep interval, time_column name DEFAULT 'created_at')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- The interval is kept as text in the registry: in a form every IntervalStyle reads back.
SET IntervalStyle = iso_8601
AS $$
DECLARE
    caller constant text := 'set_retention';
    typ regtype;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    PERFORM integrity._require_argument(time_column, 'time_column', caller);
    IF NOT EXISTS (SELECT FROM integrity.guard_registry r WHERE r.table_name = tbl AND r.guard = 'append_only') THEN
        RAISE EXCEPTION '%: table % is not append-only', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A retention lets old rows of an append-only table be purged; other tables can delete them anyway.',
                  HINT = format('Register the guard first: SELECT integrity.protect_append_only(%L);', tbl::text);
    END IF;
    IF keep IS NULL THEN
        -- No retention: every row is kept again.
        UPDATE integrity.guard_registry r SET options = r.options - 'retention'
         WHERE r.table_name = tbl AND r.guard = 'append_only' AND r.options ? 'retention';
        RETURN;
    END IF;
    IF keep <= interval '0' THEN
        RAISE EXCEPTION '%: keep must be a positive interval, not %', caller, keep
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    typ := integrity._column_type(tbl, time_column);
    IF typ NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype) THEN
        RAISE EXCEPTION '%: time column "%" of table % must be timestamptz, timestamp or date, not %',
                        caller, time_column, tbl, typ
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    UPDATE integrity.guard_registry r
       SET options = r.options || jsonb_build_object('retention',
                                                     jsonb_build_object('keep', keep::text, 'time_column', time_column))
     WHERE r.table_name = tbl AND r.guard = 'append_only'
       AND r.options -> 'retention' IS DISTINCT FROM jsonb_build_object('keep', keep::text, 'time_column', time_column);
END;
$$;
COMMENT ON FUNCTION integrity.set_retention(regclass, interval, name) IS
    'Rows of the append-only table older than keep (by time_column) may be purged with purge_expired(); NULL keeps every row again.';

-- The expression (over alias row_alias) that a row of tbl is past its retention.
CREATE FUNCTION integrity._expired_sql(tbl regclass, row_alias text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%s.%I < %L::%s', row_alias, r.time_column, pg_catalog.now() - r.keep, r.time_type)
      FROM integrity._retention_of(tbl) r
$$;

-- The statement that moves the anchors of chained table tbl's chains to the
-- last of the rows that source (a table, or a WITH query, read as t) holds
-- of each: run by purge_expired() on the rows it deletes, and for a
-- partition that is detached or dropped, before its rows are gone.  An
-- anchor only moves forward.
CREATE FUNCTION integrity._chain_anchor_sql(tbl regclass, source text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('INSERT INTO integrity.chain_anchors AS a (table_name, chain, seq, hash)'
                  ' SELECT DISTINCT ON (2) %1$L::pg_catalog.regclass, %2$s, t.%3$I, t.%4$I FROM %5$s AS t ORDER BY 2, 3 DESC'
                  ' ON CONFLICT (table_name, chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,'
                  ' purged_at = pg_catalog.now() WHERE a.seq < excluded.seq',
                  c.chained::oid, integrity._chain_values_sql(c.chained, c.chain_columns, 't'), c.seq_column,
                  c.hash_column, source)
      FROM integrity._chain_of(tbl) c
     WHERE c.chained = tbl
$$;

-- Whether partition part of an append-only table (partitioned by range on
-- its time column) holds only rows past the retention: its upper bound is
-- not later than the cutoff.
CREATE FUNCTION integrity._expired_partition(part regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent regclass := (SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = part);
    retention record;
    upper_bound text;
    expired boolean;
BEGIN
    SELECT * INTO retention FROM integrity._retention_of(parent);
    IF NOT FOUND
       OR NOT EXISTS (SELECT FROM pg_catalog.pg_partitioned_table p
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
                      WHERE p.partrelid = parent AND p.partstrat = 'r' AND p.partnatts = 1
                        AND a.attname = retention.time_column) THEN
        RETURN false;
    END IF;
    upper_bound := substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM ' TO \((.*)\)$')
      FROM pg_catalog.pg_class c WHERE c.oid = part;
    IF upper_bound IS NULL OR upper_bound = 'MAXVALUE' THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT %s::%s <= %L::%s', upper_bound, retention.time_type, now() - retention.keep,
                   retention.time_type)
       INTO expired;
    RETURN expired;
END;
$$;

-- Whether partition part of an append-only table may be detached or dropped
-- (action): it holds only rows past the retention and, on a hash-chained
-- table, the first rows of every chain it has rows of, all of them chained.
-- Then the anchors of those chains move to its last rows, as purge_expired()
-- moves them, before the rows are gone: the chains still verify, and a
-- detached partition keeps the rows with their hashes.  Called by the
-- ddl_command_start event trigger; a chained partition that is not the start
-- of its chains is refused (55000).  The chained table down to the partition
-- is locked first, top-down as an INSERT locks it, so that no row joins a
-- chain between the check and the command.  Earlier partitions that the same
-- command drops are behind the anchors already.
CREATE FUNCTION integrity._release_partition(part regclass, action text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    rel record;
    row_key jsonb;
    chain jsonb;
    outside bigint;
    inside bigint;
    last_rows text;
    refusal text;
BEGIN
    IF NOT integrity._expired_partition(part) THEN
        RETURN false;
    END IF;
    SELECT * INTO c FROM integrity._chain_of(part);
    IF NOT FOUND THEN
        RETURN true;
    END IF;
    PERFORM integrity._require_owner(c.chained, format('%s partition %s, which moves the anchors of its chains',
                                                       action, part));
    FOR rel IN
        SELECT a.relid, a.n FROM pg_catalog.pg_partition_ancestors(part) WITH ORDINALITY AS a(relid, n)
         WHERE a.n <= (SELECT b.n FROM pg_catalog.pg_partition_ancestors(part) WITH ORDINALITY AS b(relid, n)
                        WHERE b.relid = c.chained)
         ORDER BY a.n DESC
    LOOP
        EXECUTE format('LOCK TABLE %s%s IN ACCESS EXCLUSIVE MODE', CASE WHEN rel.n > 1 THEN 'ONLY ' END, rel.relid);
    END LOOP;

    EXECUTE format('SELECT %s FROM %s AS t WHERE t.%I IS NULL OR t.%I IS NULL LIMIT 1',
                   integrity._row_key_sql(c.chained), part, c.seq_column, c.hash_column)
       INTO row_key;
    IF row_key IS NOT NULL THEN
        refusal := format('Row %s in it is not chained: it was inserted while the chain trigger did not run.',
                          row_key);
    ELSE
        -- The last row of each chain in the partition, found by the chain
        -- columns (in the order of the chain index: no sort of the partition).
        last_rows := format('(SELECT DISTINCT ON (%1$s) t.* FROM %2$s AS t ORDER BY %1$s, t.%3$I DESC)',
                            coalesce((SELECT string_agg(format('t.%I', col), ', ') FROM unnest(c.chain_columns) AS col),
                                     integrity._chain_values_sql(c.chained, c.chain_columns, 't')),
                            part, c.seq_column);
        -- The first chain whose rows outside the partition (and past its
        -- anchor) start before the partition's last row.
        EXECUTE format('SELECT %1$s, l.%2$I, m.%2$I FROM %3$s AS m'
                       '  LEFT JOIN integrity.chain_anchors AS a'
                       '    ON a.table_name = %4$L::pg_catalog.regclass AND a.chain = %1$s'
                       ' CROSS JOIN LATERAL (SELECT l.%2$I FROM %5$s AS l WHERE %6$s AND l.%2$I < m.%2$I'
                       '                        AND l.%2$I > coalesce(a.seq, 0) AND l.tableoid <> ALL ($1)'
                       '                      ORDER BY l.%2$I LIMIT 1) AS l'
                       ' ORDER BY 1 LIMIT 1',
                       integrity._chain_values_sql(c.chained, c.chain_columns, 'm'), c.seq_column, last_rows,
                       c.chained::oid, c.chained,
                       coalesce((SELECT string_agg(format('l.%1$I = m.%1$I', col), ' AND ')
                                   FROM unnest(c.chain_columns) AS col), 'true'))
           INTO chain, outside, inside
          USING ARRAY(SELECT t.relid::oid FROM pg_catalog.pg_partition_tree(part) t);
        IF chain IS NOT NULL THEN
            refusal := format('Chain %s has row %s outside it, before its row %s: without the partition the chain'
                              ' would have a gap.', chain, outside, inside);
        END IF;
    END IF;
    IF refusal IS NOT NULL THEN
        SELECT n.nspname, g.relname, p.relname AS part_name INTO rel
          FROM pg_catalog.pg_class g
          JOIN pg_catalog.pg_namespace n ON n.oid = g.relnamespace
         CROSS JOIN pg_catalog.pg_class p
         WHERE g.oid = c.chained AND p.oid = part;
        RAISE EXCEPTION 'cannot % partition "%" of hash-chained table "%"', action, rel.part_name, c.chained
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = refusal,
                  HINT = format('Detach or drop the older partitions first, or remove the expired rows, which keeps'
                                ' the chains linked: SELECT integrity.purge_expired(%L);', c.chained::text),
                  SCHEMA = rel.nspname, TABLE = rel.relname;
    END IF;
    EXECUTE integrity._chain_anchor_sql(c.chained, last_rows);
    RETURN true;
END;
$$;

-- DETACH PARTITION of an append-only table: allowed for a partition past the
-- retention (_release_partition), refused (55000) otherwise.  A hash-chained
-- table's partition cannot be detached CONCURRENTLY: that commits in two
-- transactions, and its chains' anchors must move in the one that takes its
-- rows away.
CREATE FUNCTION integrity._refuse_detach(parent regclass, part regclass, detach_concurrently boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name text := coalesce((SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = part), '?');
BEGIN
    IF detach_concurrently AND EXISTS (SELECT FROM integrity._chain_of(part)) THEN
        RAISE EXCEPTION 'cannot detach partition "%" of hash-chained table "%" concurrently', name,
                        (SELECT c.chained FROM integrity._chain_of(part) c)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A concurrent detach commits in two transactions; the anchors of the chains must move in the'
                           ' one that takes the rows away.',
                  HINT = format('Detach it without CONCURRENTLY: ALTER TABLE %s DETACH PARTITION %s;', parent, part);
    END IF;
    IF part IS NULL OR NOT integrity._release_partition(part, 'detach') THEN
        PERFORM integrity._refuse_history_ddl(parent, format('detach partition "%s"', name));
    END IF;
END;
$$;

CREATE FUNCTION integrity.purge_expired(tbl regclass, archive regclass DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller constant text := 'purge_expired';
    chain record;
    expired text;
    purge text;
    mismatch text;
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    expired := integrity._expired_sql(tbl, 't');
    IF expired IS NULL THEN
        RAISE EXCEPTION '%: table % has no retention', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Set one first, e.g. SELECT integrity.set_retention(%L, ''2 years'');', tbl::text);
    END IF;
    PERFORM integrity._require_owner(tbl, 'purge its rows');
    IF archive IS NOT NULL THEN
        IF archive = tbl OR archive IN (SELECT integrity._partition_tree(tbl)) THEN
            RAISE EXCEPTION '%: the archive must be another table than %', caller, tbl
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = archive) NOT IN ('r', 'p') THEN
            RAISE EXCEPTION '%: archive "%" is not a table', caller, archive
                USING ERRCODE = 'wrong_object_type';
        END IF;
        -- The archive has the table's columns, in the same order.
        SELECT format('column %s is %s in %s but %s in %s', coalesce(t.n, a.n),
                      CASE WHEN t.n IS NULL THEN 'missing' ELSE format('%I %s', t.attname, t.typ) END, tbl,
                      CASE WHEN a.n IS NULL THEN 'missing' ELSE format('%I %s', a.attname, a.typ) END, archive)
          INTO mismatch
          FROM (SELECT row_number() OVER (ORDER BY attnum) AS n, attname, format_type(atttypid, atttypmod) AS typ
                  FROM pg_catalog.pg_attribute WHERE attrelid = tbl AND attnum > 0 AND NOT attisdropped) t
          FULL JOIN (SELECT row_number() OVER (ORDER BY attnum) AS n, attname, format_type(atttypid, atttypmod) AS typ
                       FROM pg_catalog.pg_attribute WHERE attrelid = archive AND attnum > 0 AND NOT attisdropped) a
            ON a.n = t.n
         WHERE (t.attname, t.typ) IS DISTINCT FROM (a.attname, a.typ)
         ORDER BY coalesce(t.n, a.n)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION '%: archive % does not have the columns of %', caller, archive, tbl
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = initcap(left(mismatch, 1)) || substr(mismatch, 2) || '.';
        END IF;
    END IF;

    SELECT * INTO chain FROM integrity._chain_of(tbl) c WHERE c.chained = tbl;
    IF FOUND THEN
        -- A prefix of each chain: rows whose chain holds no younger row at or
        -- before them (all of its rows when all are past the retention); the
        -- last purged row becomes the anchor, which the next row links to.
        purge := format(
            'WITH purged AS (DELETE FROM %1$s AS t WHERE %2$s'
            '   AND NOT EXISTS (SELECT FROM %1$s AS l WHERE %3$s AND l.%4$I <= t.%4$I AND NOT coalesce(%5$s, false))'
            '   RETURNING t.*),'
            ' anchored AS (%6$s) ',
            tbl, expired,
            coalesce((SELECT string_agg(format('l.%1$I = t.%1$I', col), ' AND ') FROM unnest(chain.chain_columns) AS col),
                     'true'),
            chain.seq_column, integrity._expired_sql(tbl, 'l'), integrity._chain_anchor_sql(tbl, 'purged'));
    ELSIF archive IS NOT NULL THEN
        purge := format('WITH purged AS (DELETE FROM %s AS t WHERE %s RETURNING t.*) ', tbl, expired);
    ELSE
        RETURN integrity._execute_sanctioned(tbl, format('DELETE FROM %s AS t WHERE %s', tbl, expired));
    END IF;
    RETURN integrity._execute_sanctioned(tbl, purge || CASE WHEN archive IS NULL THEN 'SELECT FROM purged'
                                                            ELSE format('INSERT INTO %s SELECT * FROM purged', archive) END);
END;
$$;
COMMENT ON FUNCTION integrity.purge_expired(regclass, regclass) IS
    'Deletes the rows of the append-only table older than its retention, or moves them into archive, in one statement; the number of rows. Hash chains start where the purge stopped.';
