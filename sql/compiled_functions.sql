-- The functions compiled into the library (src/*.rs), declared here and
-- nowhere else: each one's name, arguments, result, attributes, the symbol
-- that implements it and, for those callers see, its comment.  The list is
-- data, so that the declarations below and health(), which checks the guard
-- trigger functions against it and declares again one that was replaced or
-- dropped, read the same row: a symbol is written once.
--
-- They are declared before the SQL that uses them (SQL-language bodies are
-- checked at creation), after the lifecycle events table, whose rows one of
-- them returns.
CREATE FUNCTION integrity._compiled_functions()
RETURNS TABLE (name text, arguments text, result text, symbol text, declaration text, comment_sql text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT f.name, f.arguments, f.result, f.symbol,
       concat_ws(' ', format('FUNCTION integrity.%I(%s) RETURNS %s LANGUAGE c', f.name, f.arguments, f.result),
                 f.attributes, format('AS %L, %L', 'MODULE_PATHNAME', f.symbol)),
       CASE WHEN f.description IS NOT NULL
            THEN format('COMMENT ON FUNCTION integrity.%I(%s) IS %L', f.name,
                        pg_catalog.regexp_replace(f.arguments, ' DEFAULT [^,]+', '', 'g'), f.description) END
  FROM (VALUES
    -- The guards' triggers.  They run on every guarded row: they take no
    -- search_path setting, and what SQL they run is schema-qualified.
    ('append_only_guard', '', 'trigger', NULL, 'integrity_append_only_guard',
     'Trigger: refuses UPDATE and DELETE of rows of an append-only table (23001).'),
    ('append_only_truncate_guard', '', 'trigger', NULL, 'integrity_append_only_truncate_guard',
     'Trigger: refuses TRUNCATE of an append-only table (23001).'),
    ('immutable_guard', '', 'trigger', NULL, 'integrity_immutable_guard',
     'Trigger: refuses a change of the immutable columns named in its arguments (23001).'),
    ('write_once_guard', '', 'trigger', NULL, 'integrity_write_once_guard',
     'Trigger: refuses a change of the write-once columns named in its arguments once set (23001).'),
    ('version_bump', '', 'trigger', NULL, 'integrity_version_bump',
     'Trigger: sets the version column to OLD + 1; in strict mode refuses stale versions (40001).'),
    ('version_check', '', 'trigger', NULL, 'integrity_version_check',
     'Trigger: refuses a row whose version a later BEFORE trigger moved off OLD + 1 (23001).'),
    -- The version an UPDATE that does not assign it gives each row, in the
    -- target list the planner hook adds it to (src/update_plans.rs): what
    -- version_bump would set.  Every role may run it (the statement calls it
    -- with the privileges of whoever updates).
    ('_next_version', 'version smallint, tbl regclass, version_column name', 'smallint', 'STABLE PARALLEL SAFE',
     'integrity_next_version_int2', NULL),
    ('_next_version', 'version integer, tbl regclass, version_column name', 'integer', 'STABLE PARALLEL SAFE',
     'integrity_next_version_int4', NULL),
    ('_next_version', 'version bigint, tbl regclass, version_column name', 'bigint', 'STABLE PARALLEL SAFE',
     'integrity_next_version_int8', NULL),
    ('stock_guard', '', 'trigger', NULL, 'integrity_stock_guard',
     'Trigger: refuses a row whose stock is negative or whose reserved stock is negative or above stock (23514).'),
    ('credit_guard', '', 'trigger', NULL, 'integrity_credit_guard',
     'Trigger: refuses a row whose credit limit is negative or whose used credit is negative or above the limit (23514).'),
    ('ledger_credit_guard', '', 'trigger', NULL, 'integrity_ledger_credit_guard',
     'Trigger: applies each ledger entry to its account''s used credit, refusing to leave it above the limit or below zero (23514).'),
    ('hash_chain_guard', '', 'trigger', NULL, 'integrity_hash_chain_guard',
     'Trigger: numbers each inserted row within its chain and sets its hash from the chain''s last row.'),
    ('lifecycle_guard', '', 'trigger', NULL, 'integrity_lifecycle_guard',
     'Trigger: AFTER INSERT, UPDATE or DELETE FOR EACH STATEMENT with transition tables; writes the statement''s lifecycle events.'),
    ('lifecycle_events_guard', '', 'trigger', NULL, 'integrity_lifecycle_events_guard',
     'Trigger: refuses UPDATE, DELETE and TRUNCATE of integrity.lifecycle_events (23001), except the deletes of purge_lifecycle_events().'),
    ('soft_delete_guard', '', 'trigger', NULL, 'integrity_soft_delete_guard',
     'Trigger: turns the DELETE of a row into setting its deleted column to now() (and its flag column to true).'),
    ('total_source', '', 'trigger', NULL, 'integrity_total_source',
     'Trigger: collects the contribution of each source row to its target row''s maintained total.'),
    ('total_apply', '', 'trigger', NULL, 'integrity_total_apply',
     'Trigger: applies what a statement on a source table collected, one update per target row, in key order.'),
    ('total_start', '', 'trigger', NULL, 'integrity_total_start',
     'Trigger: starts a new target row''s maintained totals at the total of the source rows that already reference it.'),
    ('total_guard', '', 'trigger', NULL, 'integrity_total_guard',
     'Trigger: refuses a direct change of a maintained total or of its row''s key (23001).'),

    -- The stock operations (src/stock_operations.rs): they are called once
    -- per order line, and keep their prepared statements per table.  They
    -- pin search_path only where they run SQL (when the rows are not
    -- updated directly): a SET clause costs every call a GUC level.
    ('reserve_stock', 'tbl regclass, id anyelement, qty numeric', 'boolean', NULL,
     'integrity_reserve_stock',
     'Reserves qty of the row''s available stock (stock - reserved): true when reserved, false when not enough is available.'),
    ('reserve_stock', 'tbl regclass, ids anyarray, qtys numeric[]', 'boolean', NULL,
     'integrity_reserve_stock_rows',
     'Reserves qtys[i] of row ids[i] for every i, or nothing: true when all were reserved, false when any lacks stock. Locks rows in key order.'),
    ('release_stock', 'tbl regclass, id anyelement, qty numeric', 'void', NULL,
     'integrity_release_stock',
     'Gives back qty of the row''s reservation (reserved goes down); more than is reserved raises 23514.'),
    ('commit_stock', 'tbl regclass, id anyelement, qty numeric', 'void', NULL,
     'integrity_commit_stock',
     'Consumes qty of the row''s reservation (stock and reserved both go down); more than is reserved raises 23514.'),
    -- The stock guard of tbl, read as the operations read it (from its
    -- trigger): its columns, its single-column primary key, and the scale a
    -- quantity must fit (0 for integer columns, NULL for unconstrained numeric).
    ('_stock_target', 'tbl regclass, caller text, OUT stock_column text, OUT reserved_column text, '
     'OUT key_column text, OUT key_type text, OUT quantity_scale integer', 'record',
     'STABLE SET search_path = pg_catalog, pg_temp', 'integrity_stock_target', NULL),

    -- The hot paths of holds (src/holds.rs), on the stock operations' kept
    -- statements: a hold placed on one row, and settled.
    ('place_hold', 'tbl regclass, id anyelement, qty numeric, ttl interval DEFAULT NULL, '
     'idempotency_key text DEFAULT NULL', 'bigint', NULL, 'integrity_place_hold',
     'Reserves qty of the row as reserve_stock does and records the hold: its id, or NULL when not enough is available. The same idempotency key returns the same hold.'),
    ('commit_hold', 'hold_id bigint, qty numeric DEFAULT NULL', 'text', NULL,
     'integrity_commit_hold',
     'Consumes a pending hold (all of it, or qty and releases the rest); returns the hold''s status. A credit hold hands its amount to the DEBIT entry inserted next in the same transaction.'),
    ('release_hold', 'hold_id bigint', 'text', NULL, 'integrity_release_hold',
     'Gives a pending hold back; returns the hold''s status.'),

    -- The ddl_command_start event trigger, and what the other event triggers
    -- ask of a DDL command (src/ddl_commands.rs).
    ('_on_ddl_command_start', '', 'event_trigger', NULL, 'integrity_on_ddl_command_start', NULL),
    ('_attaches_partition', 'pg_catalog.pg_ddl_command', 'boolean', 'STRICT', 'integrity_attaches_partition', NULL),
    ('_renames', 'pg_catalog.pg_ddl_command', 'boolean', 'STRICT', 'integrity_renames', NULL),
    ('_drops_expired_partition', 'pg_catalog.oid', 'boolean', 'STRICT', 'integrity_drops_expired_partition', NULL),

    -- Runs a statement that the extension built to delete guarded rows for
    -- good (src/sanctioned.rs): only for the owner of tbl, and only the guards
    -- of the relations _cascade_reach(tbl) lists let its deletes through.
    ('_execute_sanctioned', 'tbl regclass, statement text', 'bigint', 'STRICT', 'integrity_execute_sanctioned', NULL),
    -- Runs a statement with the maintained totals of tbl writable (src/sanctioned.rs).
    ('_execute_total_writes', 'tbl regclass, statement text', 'bigint', 'STRICT', 'integrity_execute_total_writes', NULL),

    -- One row's lifecycle events, in order, for a caller who may read the
    -- table (src/lifecycle.rs checks the privilege and reads the events as
    -- their table's owner).
    ('_lifecycle_events_of', 'tbl regclass, row_key jsonb', 'integrity.lifecycle_events[]', 'STABLE STRICT',
     'integrity_lifecycle_events_of', NULL),

    -- A maintained total's filter, analyzed as a boolean, immutable expression
    -- over its source's columns and written back by PostgreSQL's deparser;
    -- and the source columns it reads (src/totals.rs).
    ('_total_filter', 'source regclass, filter text', 'text', 'STRICT STABLE', 'integrity_total_filter', NULL),
    ('_total_filter_columns', 'source regclass, filter text', 'text[]', 'STRICT STABLE',
     'integrity_total_filter_columns', NULL),

    -- The top-level AND-ed terms of a stored expression over relation's
    -- columns (pg_index.indpred, say), read from its node tree
    -- (src/predicates.rs): nested ANDs flattened, each term deparsed as
    -- pg_get_expr does (on one line) and without the parentheses that enclose
    -- it: '(a IS NULL) AND ((b = 1) OR (c = 2))' gives {'a IS NULL',
    -- '(b = 1) OR (c = 2)'}, whatever the literals hold.
    ('_conjuncts', 'expr pg_node_tree, relation oid', 'text[]', 'STABLE STRICT', 'integrity_conjuncts', NULL),

    -- The canonical encoding of a chained row (src/chain_encoding.rs):
    -- convert_to(jsonb_build_array(<values>)::text, 'UTF8'), written directly.
    ('_chain_encoding', 'VARIADIC "any"', 'bytea', 'STABLE', 'integrity_chain_encoding', NULL),
    -- verify_chain()'s pass over a chained table (src/chain_verify.rs): the
    -- problems it found, at most one per chain and one per chain of the
    -- digest, each with its row's key and sequence number.
    ('_chain_problems', 'tbl regclass, scan text, ordered text, row_of text, digest_chains text[], '
     'digest_seqs bigint[], digest_hashes bytea[]', 'TABLE (chain text, row_key text, seq bigint, problem text)', 'STABLE',
     'chain_problems_wrapper', NULL),

    -- Refusal counting (src/refusals.rs), in shared memory with pg_integrity
    -- in shared_preload_libraries: the counters, a reset, and the refusals
    -- that found every counter in use (NULL without the preload).
    ('_refusal_counters', '',
     'TABLE (table_oid oid, guard text, sqlstate text, refusals bigint, first_at timestamptz, '
     'last_at timestamptz, last_role text, last_detail text)',
     NULL, 'refusal_counters_wrapper', NULL),
    ('reset_refusals', '', 'void', NULL, 'reset_refusal_counters_wrapper',
     'Forgets every refusal counter (of every database). Superusers, and roles granted EXECUTE on it.'),
    ('_refusals_dropped', '', 'bigint', NULL, 'refusals_dropped_wrapper', NULL)
  ) AS f(name, arguments, result, attributes, symbol, description)
$$;

DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT * FROM integrity._compiled_functions() LOOP
        EXECUTE 'CREATE ' || f.declaration;
        IF f.comment_sql IS NOT NULL THEN
            EXECUTE f.comment_sql;
        END IF;
    END LOOP;
END
$$;
