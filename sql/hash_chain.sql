-- Hash-chained ledgers.  Every row of a chained table carries its chain's
-- sequence number (1, 2, 3, … per chain) and the SHA-256 of the previous
-- row's hash and of the row's canonical encoding; the integrity_hash_chain
-- trigger (src/hash_chain.rs) fills both in.  The encoding is written once,
-- by integrity._chain_encoding() (src/chain_encoding.rs) over the values
-- settled here, for the trigger's statement and for verify_chain().

-- The column types whose text form depends on a session setting (TimeZone,
-- IntervalStyle, extra_float_digits, lc_monetary, bytea_output), each with
-- the expression over %s (the column) that does not.
CREATE FUNCTION integrity._chain_settled_types()
RETURNS TABLE (type_oid regtype, expression text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('timestamptz'::regtype, '(%s AT TIME ZONE ''UTC'')'),
           ('bytea', 'pg_catalog.encode(%s, ''hex'')'),
           ('float4', 'pg_catalog.encode(pg_catalog.float4send(%s), ''hex'')'),
           ('float8', 'pg_catalog.encode(pg_catalog.float8send(%s), ''hex'')'),
           ('interval', 'pg_catalog.encode(pg_catalog.interval_send(%s), ''hex'')'),
           ('money', 'pg_catalog.encode(pg_catalog.cash_send(%s), ''hex'')')
$$;

-- Why column col of tbl cannot be hashed (NULL when it can): a composite type,
-- or an array or range of a type whose text depends on a session setting
-- (the types themselves, and domains over them, are written as above).
CREATE FUNCTION integrity._chain_column_problem(tbl regclass, col text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE reached(type_oid, contained) AS (
        SELECT a.atttypid, false FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped
        UNION
        SELECT x.inner_type, r.contained OR x.container
          FROM reached r
          JOIN pg_catalog.pg_type t ON t.oid = r.type_oid
         CROSS JOIN LATERAL (VALUES (CASE WHEN t.typtype = 'd' THEN t.typbasetype END, false),
                                    (CASE WHEN t.typelem <> 0 AND t.typlen = -1 THEN t.typelem END, true),
                                    ((SELECT g.rngsubtype FROM pg_catalog.pg_range g
                                       WHERE g.rngtypid = t.oid OR g.rngmultitypid = t.oid), true)
                            ) AS x(inner_type, container)
         WHERE x.inner_type IS NOT NULL
    )
    SELECT CASE WHEN bool_or(t.typtype = 'c')
                THEN format('column "%s" is of a composite type', col)
                WHEN bool_or(r.contained AND r.type_oid IN (SELECT s.type_oid FROM integrity._chain_settled_types() s))
                THEN format('column "%s" is of type %s, whose elements are written differently under other'
                            ' session settings', col,
                            (SELECT r0.type_oid::regtype FROM reached r0 WHERE NOT r0.contained LIMIT 1))
           END
      FROM reached r
      JOIN pg_catalog.pg_type t ON t.oid = r.type_oid
$$;

-- The columns of the row rowref (`t`, `($3)`), comma-separated, every value
-- written as the session settings cannot change it.
CREATE FUNCTION integrity._chain_arguments_sql(tbl regclass, columns text[], rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(format(coalesce(s.expression, '%s'), format('%s.%I', rowref, u.col)), ', '
                               ORDER BY u.n), '')
      FROM unnest(columns) WITH ORDINALITY AS u(col, n)
      LEFT JOIN pg_catalog.pg_attribute a
        ON a.attrelid = tbl AND a.attname = u.col AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
      LEFT JOIN integrity._chain_settled_types() s
        ON s.type_oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
$$;

-- A jsonb array of those columns: the chain key.
CREATE FUNCTION integrity._chain_values_sql(tbl regclass, columns text[], rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('pg_catalog.jsonb_build_array(%s)', integrity._chain_arguments_sql(tbl, columns, rowref))
$$;

-- The encoding a row is hashed with: that jsonb array as text, in UTF-8,
-- written by integrity._chain_encoding() (src/chain_encoding.rs).
CREATE FUNCTION integrity._chain_encoding_sql(tbl regclass, columns text[], rowref text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN cardinality(columns) > 0
                THEN format('integrity._chain_encoding(%s)', integrity._chain_arguments_sql(tbl, columns, rowref))
                ELSE 'pg_catalog.convert_to(''[]'', ''UTF8'')' END
$$;

-- The registered chain that tbl (the table, or one of its partitions) belongs to.
CREATE FUNCTION integrity._chain_of(tbl regclass)
RETURNS TABLE (chained regclass, chain_columns text[], seq_column text, hash_column text, hashed text[])
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.table_name, r.columns, r.options ->> 'seq_column', r.options ->> 'hash_column',
           ARRAY(SELECT pg_catalog.jsonb_array_elements_text(r.options -> 'hashed_columns'))
      FROM integrity.guard_registry r
     WHERE r.guard = 'hash_chain'
       AND r.table_name IN (SELECT tbl UNION ALL SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a)
     LIMIT 1
$$;

-- The chain registered on tbl itself, for the functions that take a chained
-- table: refused with 55000 when there is none.
CREATE FUNCTION integrity._registered_chain(tbl regclass, caller text)
RETURNS TABLE (chained regclass, chain_columns text[], seq_column text, hash_column text, hashed text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    RETURN QUERY SELECT c.* FROM integrity._chain_of(tbl) c WHERE c.chained = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: table "%" has no hash chain', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Register one with integrity.enable_hash_chain().';
    END IF;
END;
$$;

-- What the trigger runs for each row of tbl, holding the lock of the row's
-- chain (src/hash_chain.rs).  link: the row's sequence number and hash, from
-- the chain's last row with a sequence number (a row inserted out of band has
-- none) or, in a chain whose rows were all purged, from its anchor; $1 … $k
-- are the values of the chain columns, $k+1 is the row.
-- encoding: the row's encoding alone ($1 is the row), which the trigger
-- hashes with the last row's hash itself when it reads that row by the chain
-- index.
CREATE FUNCTION integrity._chain_statements(tbl regclass)
RETURNS TABLE (chained regclass, link text, encoding text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.chained,
           format('SELECT coalesce(tail.seq, (SELECT a.seq FROM integrity.chain_anchors a WHERE %6$s), 0) + 1,'
                  ' pg_catalog.sha256(coalesce(tail.hash, (SELECT a.hash FROM integrity.chain_anchors a WHERE %6$s),'
                  ' ''\x''::bytea) || %1$s)'
                  ' FROM (SELECT) AS here LEFT JOIN LATERAL'
                  ' (SELECT t.%2$I AS seq, t.%3$I AS hash FROM %4$s t WHERE t.%2$I IS NOT NULL%5$s ORDER BY t.%2$I DESC LIMIT 1)'
                  ' AS tail ON true',
                  integrity._chain_encoding_sql(c.chained, c.hashed, format('($%s)', cardinality(c.chain_columns) + 1)),
                  c.seq_column, c.hash_column, c.chained, w.clause,
                  format('a.table_name = %s::pg_catalog.regclass AND a.chain = %s', c.chained::oid,
                         integrity._chain_values_sql(c.chained, c.chain_columns,
                                                     format('($%s)', cardinality(c.chain_columns) + 1)))),
           'SELECT ' || integrity._chain_encoding_sql(c.chained, c.hashed, '($1)')
      FROM integrity._chain_of(tbl) c
     CROSS JOIN LATERAL (SELECT string_agg(format(' AND t.%I = $%s', col, n), '' ORDER BY n)
                           FROM unnest(c.chain_columns) WITH ORDINALITY AS u(col, n)) AS w(clause)
$$;

CREATE FUNCTION integrity.enable_hash_chain(tbl regclass, chain_columns text[] DEFAULT NULL,
                                            seq_column name DEFAULT 'chain_seq', hash_column name DEFAULT 'row_hash')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'enable_hash_chain';
    chain text[] := '{}';
    hashed text[];
    options jsonb;
    problem text;
    rel record;
    registered record;
    unchained boolean;
    append_only jsonb;
    chain_index record;
    current_chain jsonb;
    last_seq bigint;
    last_hash bytea;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    PERFORM integrity._require_argument(seq_column, 'seq_column', caller);
    PERFORM integrity._require_argument(hash_column, 'hash_column', caller);
    IF integrity._column_type(tbl, seq_column) <> 'bigint'::regtype THEN
        RAISE EXCEPTION '%: sequence column "%" of table "%" must be bigint, not %', caller, seq_column, tbl,
                        integrity._column_type(tbl, seq_column)
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF integrity._column_type(tbl, hash_column) <> 'bytea'::regtype THEN
        RAISE EXCEPTION '%: hash column "%" of table "%" must be bytea, not %', caller, hash_column, tbl,
                        integrity._column_type(tbl, hash_column)
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    PERFORM integrity._refuse_generated(tbl, seq_column, caller);
    PERFORM integrity._refuse_generated(tbl, hash_column, caller);
    IF seq_column = hash_column THEN
        RAISE EXCEPTION '%: seq_column and hash_column must differ', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(chain_columns) > 0 THEN
        chain := integrity._check_columns(tbl, chain_columns, caller);
    END IF;
    IF seq_column = ANY (chain) OR hash_column = ANY (chain) THEN
        RAISE EXCEPTION '%: the sequence and hash columns cannot be chain columns', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT a.attname INTO problem
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = ANY (chain) AND NOT a.attnotnull
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: chain column "%" of table "%" must be NOT NULL', caller, problem, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL;', tbl, problem);
    END IF;
    -- Every other column is hashed, in column order: those the table has at
    -- the first registration.  Registering again keeps them (the rows were
    -- hashed with them), and cannot regroup or renumber the rows.
    SELECT r.columns, r.options INTO registered
      FROM integrity.guard_registry r WHERE r.table_name = tbl AND r.guard = 'hash_chain';
    IF FOUND THEN
        IF registered.columns IS DISTINCT FROM chain OR registered.options ->> 'seq_column' <> seq_column
           OR registered.options ->> 'hash_column' <> hash_column THEN
            RAISE EXCEPTION '%: table "%" is chained already, by other columns', caller, tbl
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('It is chained by (%s), numbered in %s and hashed in %s.',
                                      array_to_string(registered.columns, ', '), registered.options ->> 'seq_column',
                                      registered.options ->> 'hash_column'),
                      HINT = format('To chain it otherwise, lift the chain first: SELECT integrity.unprotect(%L, ''hash_chain'');',
                                    tbl::text);
        END IF;
        hashed := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(registered.options -> 'hashed_columns'));
    ELSE
        hashed := ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
                           AND a.attname NOT IN (seq_column, hash_column)
                         ORDER BY a.attnum);
    END IF;
    SELECT p INTO problem FROM unnest(hashed) AS col, integrity._chain_column_problem(tbl, col) AS p
     WHERE p IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: %', caller, problem
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = 'A row is hashed in a form that must not depend on the settings of the session that reads it.';
    END IF;

    options := jsonb_build_object('seq_column', seq_column, 'hash_column', hash_column, 'hashed_columns', to_jsonb(hashed));
    PERFORM integrity._record_guard(tbl, 'hash_chain', chain, options);
    -- Rows that are there already without a place in a chain are chained in
    -- key order.  An append-only guard is lifted for that and put back as it
    -- was, in the same transaction: the caller owns the table.
    EXECUTE format('SELECT EXISTS (SELECT FROM %s t WHERE t.%I IS NULL AND t.%I IS NULL)', tbl, seq_column, hash_column)
       INTO unchained;
    SELECT r.options INTO append_only
      FROM integrity.guard_registry r WHERE r.table_name = tbl AND r.guard = 'append_only';
    IF unchained THEN
        IF append_only IS NOT NULL THEN
            PERFORM integrity.unprotect(tbl, 'append_only');
        END IF;
        FOR rel IN EXECUTE format('SELECT t.ctid AS row_id, t.tableoid::regclass AS part, %s AS chain FROM %s t'
                                  ' WHERE t.%I IS NULL AND t.%I IS NULL ORDER BY 3, %s',
                                  integrity._chain_values_sql(tbl, chain, 't'), tbl, seq_column, hash_column,
                                  coalesce((SELECT string_agg(format('t.%I', k), ', ')
                                              FROM unnest(integrity._key_columns(tbl)) AS k), 't.ctid'))
        LOOP
            IF current_chain IS DISTINCT FROM rel.chain THEN
                current_chain := rel.chain;
                EXECUTE format('SELECT t.%1$I, t.%2$I FROM %3$s t WHERE %4$s = $1 AND t.%1$I IS NOT NULL'
                               ' ORDER BY t.%1$I DESC LIMIT 1',
                               seq_column, hash_column, tbl, integrity._chain_values_sql(tbl, chain, 't'))
                   INTO last_seq, last_hash USING rel.chain;
            END IF;
            last_seq := coalesce(last_seq, 0) + 1;
            EXECUTE format('UPDATE %s t SET %I = $1, %I = pg_catalog.sha256($2 || %s) WHERE t.ctid = $3 RETURNING t.%I',
                           rel.part, seq_column, hash_column, integrity._chain_encoding_sql(tbl, hashed, 't'),
                           hash_column)
               INTO last_hash USING last_seq, coalesce(last_hash, '\x'::bytea), rel.row_id;
        END LOOP;
    END IF;

    -- The trigger reads the last row of a chain by this index.
    SELECT left(c.relname || '_chain', 63) AS name, c.relnamespace INTO chain_index
      FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class
                    WHERE relname = chain_index.name AND relnamespace = chain_index.relnamespace) THEN
        EXECUTE format('CREATE INDEX %I ON %s (%s)', chain_index.name, tbl,
                       (SELECT string_agg(format('%I', col), ', ') FROM unnest(chain || seq_column::text) AS col));
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_hash_chain BEFORE INSERT ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.hash_chain_guard(%s)',
                   tbl, integrity._arguments_sql(integrity._trigger_arguments('integrity_hash_chain', chain, options)));
    IF append_only IS NULL OR unchained THEN
        PERFORM integrity.protect_append_only(tbl, coalesce((append_only ->> 'allow_truncate')::boolean, false));
    END IF;
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;
COMMENT ON FUNCTION integrity.enable_hash_chain(regclass, text[], name, name) IS
    'Every INSERT is chained: per chain (the values of chain_columns), seq_column numbers the rows 1, 2, 3, … and hash_column is SHA-256 of the previous row''s hash and the row. Makes the table append-only.';

-- The rows of tbl's chains that do not hold: for each chain, the first row
-- that was changed, removed, inserted out of band or re-ordered; with a digest
-- from chain_digest(), also a removed or re-forged end of a chain.  One pass
-- over the table, in the order it holds the rows (src/chain_verify.rs), which
-- starts again in chain order when the rows are too far out of it.  A chain
-- that purge_expired() shortened starts at its anchor
-- (integrity.chain_anchors).
CREATE FUNCTION integrity.verify_chain(tbl regclass, digest jsonb DEFAULT NULL)
RETURNS TABLE (chain jsonb, row_key jsonb, problem text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    rows_sql text;
    digest_chains text[];
    digest_seqs bigint[];
    digest_hashes bytea[];
BEGIN
    SELECT * INTO c FROM integrity._registered_chain(tbl, 'verify_chain');
    IF digest IS NOT NULL AND (jsonb_typeof(digest -> 'chains') IS DISTINCT FROM 'array'
                               OR digest ->> 'table' IS DISTINCT FROM tbl::text) THEN
        RAISE EXCEPTION 'verify_chain: argument "digest" is not a digest of table "%"', tbl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass what integrity.chain_digest(%L) returned.', tbl::text);
    END IF;
    -- The digest's chains, as three arrays in one order.
    SELECT array_agg(d.chain::text), array_agg(d.seq), array_agg(pg_catalog.decode(d.hash, 'hex'))
      INTO digest_chains, digest_seqs, digest_hashes
      FROM pg_catalog.jsonb_to_recordset(digest -> 'chains') AS d(chain jsonb, seq bigint, hash text);
    -- Each row's chain columns, sequence number, hash, the encoding it was
    -- hashed with, and where it is (for its chain as jsonb and its row key,
    -- which row_of reads).
    rows_sql := format('SELECT %s t.%I, t.%I, %s, t.tableoid, t.ctid FROM %s t',
                       (SELECT string_agg(format('t.%I, ', col), '') FROM unnest(c.chain_columns) AS col),
                       c.seq_column, c.hash_column, integrity._chain_encoding_sql(tbl, c.hashed, 't'), tbl);
    RETURN QUERY
        SELECT DISTINCT ON (p.chain::jsonb) p.chain::jsonb, p.row_key::jsonb, p.problem
          FROM integrity._chain_problems(tbl, rows_sql,
                   rows_sql || ' ORDER BY ' || (SELECT string_agg(format('t.%I', col), ', ')
                                                  FROM unnest(c.chain_columns || c.seq_column) AS col),
                   format('SELECT %s::pg_catalog.text, %s::pg_catalog.text FROM %s t'
                          ' WHERE t.tableoid = $1 AND t.ctid = $2',
                          integrity._chain_values_sql(tbl, c.chain_columns, 't'), integrity._row_key_sql(tbl), tbl),
                   digest_chains, digest_seqs, digest_hashes) AS p
         ORDER BY p.chain::jsonb, p.seq NULLS FIRST;
END;
$$;
COMMENT ON FUNCTION integrity.verify_chain(regclass, jsonb) IS
    'No rows when every chain of the table holds; otherwise the first bad row of each broken chain. With a digest from chain_digest(), also detects a removed or re-written end of a chain.';

-- What a DBA keeps outside the database: the last sequence number and hash
-- of every chain.
CREATE FUNCTION integrity.chain_digest(tbl regclass)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    chains jsonb;
BEGIN
    SELECT * INTO c FROM integrity._registered_chain(tbl, 'chain_digest');
    EXECUTE format('SELECT coalesce(jsonb_agg(jsonb_build_object(''chain'', d.chain, ''seq'', d.seq,'
                   ' ''hash'', pg_catalog.encode(d.hash, ''hex'')) ORDER BY d.chain), ''[]'')'
                   ' FROM (SELECT DISTINCT ON (1) %s AS chain, t.%I AS seq, t.%I AS hash FROM %s t'
                   ' WHERE t.%I IS NOT NULL ORDER BY 1, 2 DESC) d',
                   integrity._chain_values_sql(tbl, c.chain_columns, 't'), c.seq_column, c.hash_column, tbl,
                   c.seq_column)
       INTO chains;
    RETURN jsonb_build_object('table', tbl::text, 'taken_at', now(), 'chains', chains);
END;
$$;
COMMENT ON FUNCTION integrity.chain_digest(regclass) IS
    'The last sequence number and hash of every chain of the table, to keep outside the database and pass to verify_chain() later.';
