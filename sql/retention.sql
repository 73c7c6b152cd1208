-- Retention of append-only tables (guide 000: ledger entries older than two
-- years are archived).  set_retention() records how long rows are kept, in
-- the options of the table's append_only guard; purge_expired() is the one
-- delete the guard lets through: rows older than that, moved into an archive
-- or deleted, in one statement run by integrity._execute_sanctioned().
--
-- A hash-chained table loses a prefix of each chain, up to all of its rows.
-- Where a chain now starts is recorded in integrity.chain_anchors: the
-- sequence number and hash of the last row purged, which verify_chain() links
-- the first remaining row to, and the next row of an emptied chain links to.

CREATE TABLE integrity.chain_anchors (
    table_name regclass    NOT NULL,
    chain      jsonb       NOT NULL,
    seq        bigint      NOT NULL,
    hash       bytea       NOT NULL,
    purged_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (table_name, chain)
);
COMMENT ON TABLE integrity.chain_anchors IS
    'Where each purged hash chain starts: the sequence number and hash of its last purged row. Written by purge_expired().';
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

-- Whether partition part of an append-only table (partitioned by range on
-- its time column) holds only rows past the retention: its upper bound is
-- not later than the cutoff.  Such a partition can be detached (and archived)
-- or dropped.  Hash-chained tables lose rows only through purge_expired(),
-- which keeps their chains linked.
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
    IF NOT FOUND OR EXISTS (SELECT FROM integrity._chain_of(parent))
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

-- DETACH PARTITION of an append-only table: allowed for a partition past the
-- retention, refused (55000) otherwise.
CREATE FUNCTION integrity._refuse_detach(parent regclass, part regclass)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF part IS NULL OR NOT integrity._expired_partition(part) THEN
        PERFORM integrity._refuse_history_ddl(parent, format('detach partition "%s"',
                                                             coalesce((SELECT c.relname FROM pg_catalog.pg_class c
                                                                        WHERE c.oid = part), '?')));
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
            ' anchored AS (INSERT INTO integrity.chain_anchors AS a (table_name, chain, seq, hash)'
            '   SELECT DISTINCT ON (2) %6$L::pg_catalog.regclass, %7$s, t.%4$I, t.%8$I FROM purged AS t ORDER BY 2, 3 DESC'
            '   ON CONFLICT (table_name, chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,'
            '   purged_at = pg_catalog.now() WHERE a.seq < excluded.seq) ',
            tbl, expired,
            coalesce((SELECT string_agg(format('l.%1$I = t.%1$I', col), ' AND ') FROM unnest(chain.chain_columns) AS col),
                     'true'),
            chain.seq_column, integrity._expired_sql(tbl, 'l'), tbl::oid,
            integrity._chain_values_sql(tbl, chain.chain_columns, 't'), chain.hash_column);
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
