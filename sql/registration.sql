-- Registration: one idempotent call per rule.  Each call validates its
-- arguments, records the rule in integrity.guard_registry and installs the
-- triggers that enforce it.  Registration never scans the table.
--
-- These functions run as the caller (table ownership is what authorizes them)
-- with a fixed search_path; every identifier they put into DDL is quoted.

-- Which triggers each guard kind installs (all kinds when guard is NULL): their
-- function, their pg_trigger.tgtype (events, timing, level), and the mode each
-- one runs in: 'A' (ENABLE ALWAYS: also under session_replication_role =
-- replica) or 'O' (origin only: rows that logical replication applies must not
-- be bumped or applied to an account twice, and their lifecycle events are
-- recorded on their origin).  A recheck trigger is there only while the table
-- needs it (integrity._needs_recheck).
CREATE FUNCTION integrity._guard_triggers(guard text)
RETURNS TABLE (trigger_name name, function_name name, tgtype smallint, mode "char", per_partition boolean,
               guard text, has_when boolean, recheck boolean)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.trigger_name::name, t.function_name::name, t.tgtype::smallint, t.mode::"char", t.per_partition,
           t.guard, t.has_when, t.recheck
      FROM (VALUES -- tgtype: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32
            ('append_only',   'integrity_append_only',             'append_only_guard',          27, 'A', false, false, false),
            ('append_only',   'integrity_append_only_truncate',    'append_only_truncate_guard', 34, 'A', true,  false, false),
            ('immutable',     'integrity_immutable',               'immutable_guard',            19, 'A', false, false, false),
            ('immutable',     'integrity_immutable_recheck',       'immutable_guard',            17, 'A', false, true,  true),
            ('write_once',    'integrity_write_once',              'write_once_guard',           19, 'A', false, false, false),
            ('write_once',    'integrity_write_once_recheck',      'write_once_guard',           17, 'A', false, true,  true),
            ('versioning',    'integrity_version_bump',            'version_bump',               19, 'O', false, false, false),
            ('versioning',    'integrity_version_check',           'version_check',              17, 'O', false, true,  true),
            ('stock',         'integrity_stock',                   'stock_guard',                23, 'A', false, false, false),
            ('stock',         'integrity_stock_recheck',           'stock_guard',                21, 'A', false, true,  true),
            ('credit',        'integrity_credit',                  'credit_guard',               23, 'A', false, false, false),
            ('credit',        'integrity_credit_recheck',          'credit_guard',               21, 'A', false, true,  true),
            ('ledger_credit', 'integrity_ledger_credit',           'ledger_credit_guard',        29, 'O', false, false, false),
            ('hash_chain',    'integrity_hash_chain',              'hash_chain_guard',            7, 'O', false, false, false),
            ('soft_delete',   'integrity_soft_delete',             'soft_delete_guard',          11, 'O', false, false, false),
            -- on the target of maintained totals (their sources' triggers: sql/totals.sql)
            ('total',         'integrity_total',                   'total_guard',                19, 'O', false, false, false),
            ('total',         'integrity_total_recheck',           'total_guard',                17, 'O', false, true,  true),
            ('total',         'integrity_total_start',             'total_start',                 7, 'O', false, false, false),
            ('total',         'integrity_total_start_recheck',     'total_start',                 5, 'O', false, false, true),
            -- AFTER … FOR EACH STATEMENT with transition tables, one event each
            ('lifecycle',     'integrity_lifecycle_insert',        'lifecycle_guard',             4, 'O', true,  false, false),
            ('lifecycle',     'integrity_lifecycle_update',        'lifecycle_guard',            16, 'O', true,  false, false),
            ('lifecycle',     'integrity_lifecycle_delete',        'lifecycle_guard',             8, 'O', true,  false, false)
           ) AS t(guard, trigger_name, function_name, tgtype, mode, per_partition, has_when, recheck)
     WHERE $1 IS NULL OR t.guard = $1
$$;

CREATE FUNCTION integrity._require_argument(value anyelement, argument text, caller text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '%: argument "%" must not be NULL', caller, argument
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
END;
$$;

-- The table a guard may be put on: an ordinary or partitioned table that is
-- neither temporary nor a system catalog, owned by the caller.
CREATE FUNCTION integrity._check_table(tbl regclass, caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel record;
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    SELECT c.relkind, c.relpersistence, n.nspname, c.oid < 16384 AS builtin
      INTO rel
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid
            USING ERRCODE = 'undefined_table';
    END IF;
    IF rel.builtin OR rel.nspname IN ('pg_catalog', 'information_schema', 'pg_toast') THEN
        RAISE EXCEPTION 'cannot guard system catalog "%"', tbl
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = format('%s is %s; pg_integrity guards ordinary and partitioned tables.', tbl,
                                  CASE rel.relkind
                                      WHEN 'v' THEN 'a view'
                                      WHEN 'm' THEN 'a materialized view'
                                      WHEN 'f' THEN 'a foreign table'
                                      WHEN 'S' THEN 'a sequence'
                                      WHEN 'c' THEN 'a composite type'
                                      ELSE 'an index' END);
    END IF;
    IF rel.relpersistence = 't' THEN
        RAISE EXCEPTION 'cannot guard temporary table "%"', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'A temporary table and its triggers disappear with the session.';
    END IF;
    PERFORM integrity._require_owner(tbl, 'register pg_integrity guards on it');
END;
$$;

-- The named columns, checked to exist, without duplicates, in the given order.
CREATE FUNCTION integrity._check_columns(tbl regclass, columns text[], caller text)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col text;
    checked text[] := '{}';
BEGIN
    PERFORM integrity._require_argument(columns, 'columns', caller);
    IF cardinality(columns) = 0 THEN
        RAISE EXCEPTION '%: argument "columns" must name at least one column', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH col IN ARRAY columns LOOP
        IF col IS NULL THEN
            RAISE EXCEPTION '%: argument "columns" must not contain NULL', caller
                USING ERRCODE = 'null_value_not_allowed';
        END IF;
        PERFORM integrity._column_type(tbl, col);
        IF col <> ALL (checked) THEN
            checked := checked || col;
        END IF;
    END LOOP;
    RETURN checked;
END;
$$;

CREATE FUNCTION integrity._column_type(tbl regclass, col text)
RETURNS regtype
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype;
BEGIN
    SELECT atttypid INTO typ
      FROM pg_catalog.pg_attribute
     WHERE attrelid = tbl AND attname = col AND attnum > 0 AND NOT attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', col, tbl
            USING ERRCODE = 'undefined_column';
    END IF;
    RETURN typ;
END;
$$;

-- A column a guard writes (the version, the reserved and consumed stock, the
-- used credit) cannot be generated: PostgreSQL refuses every write of it.
CREATE FUNCTION integrity._refuse_generated(tbl regclass, col text, caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_attribute
                WHERE attrelid = tbl AND attname = col AND attnum > 0 AND attgenerated <> '') THEN
        RAISE EXCEPTION '%: column "%" of table "%" is a generated column', caller, col, tbl
            USING ERRCODE = 'generated_always',
                  DETAIL = 'The guard writes this column, and a generated column cannot be written.';
    END IF;
END;
$$;

-- SQL that is true when column col differs between OLD and NEW.  Where the
-- type's default btree equality is binary equality (its "equalimage" support
-- function says so: integers, uuid, timestamps, text under a deterministic
-- collation, ...), IS DISTINCT FROM is used; otherwise (numeric, float, json,
-- arrays, nondeterministic collations, types without equality) the binary
-- image comparison, so that 1.0 -> 1.00 counts as a change too.
CREATE FUNCTION integrity._changed_sql(tbl regclass, col text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN EXISTS (
               SELECT
                 FROM pg_catalog.pg_attribute a
                 JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                 JOIN pg_catalog.pg_opclass c
                   ON c.opcdefault
                  AND c.opcmethod = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree')
                  AND c.opcintype = CASE t.typtype WHEN 'd' THEN t.typbasetype ELSE t.oid END
                 JOIN pg_catalog.pg_amproc p
                   ON p.amprocfamily = c.opcfamily
                  AND p.amproclefttype = c.opcintype
                  AND p.amprocrighttype = c.opcintype
                  AND p.amprocnum = 4
                 LEFT JOIN pg_catalog.pg_collation coll ON coll.oid = a.attcollation
                WHERE a.attrelid = tbl AND a.attname = col
                  -- bpchar's equality ignores trailing spaces, which an
                  -- unconstrained bpchar keeps: 'a' = 'a   '.
                  AND c.opcintype <> 'pg_catalog.bpchar'::pg_catalog.regtype
                  AND (p.amproc = 'pg_catalog.btequalimage'::regproc
                       OR (p.amproc = 'pg_catalog.btvarstrequalimage'::regproc
                           AND coalesce(coll.collisdeterministic, true))))
           THEN format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', col)
           ELSE format('pg_catalog.record_image_ne(ROW(OLD.%1$I), ROW(NEW.%1$I))', col)
           END
$$;

-- The table and all its partitions, at any depth.
CREATE FUNCTION integrity._partition_tree(tbl regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tbl
    UNION
    SELECT tree.relid
      FROM pg_catalog.pg_partition_tree(tbl) AS tree
      JOIN pg_catalog.pg_class c ON c.oid = tree.relid
     WHERE c.relkind IN ('r', 'p')
$$;

-- The ALTER TABLE that puts the named triggers of rel in their modes ('A':
-- ENABLE ALWAYS, 'O': ENABLE), for _set_trigger_modes and health().  All of
-- a relation's guard triggers are set in one ALTER TABLE, so that the event
-- trigger, which checks every guard trigger's mode at the end of each ALTER
-- TABLE, never sees a half-done relation.
CREATE FUNCTION integrity._enable_triggers_sql(rel regclass, triggers name[], modes "char"[])
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('ALTER TABLE %s %s;', rel,
                  string_agg(format('ENABLE %sTRIGGER %I', CASE t.mode WHEN 'A' THEN 'ALWAYS ' ELSE '' END, t.name),
                             ', ' ORDER BY t.name))
      FROM unnest(triggers, modes) AS t(name, mode)
$$;

-- A foreign table among the partitions of tbl, if any: it cannot have the
-- statement triggers that some guards put on every partition.
CREATE FUNCTION integrity._foreign_partition(tbl regclass)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tree.relid
      FROM pg_catalog.pg_partition_tree(tbl) AS tree
      JOIN pg_catalog.pg_class c ON c.oid = tree.relid
     WHERE c.relkind = 'f'
     LIMIT 1
$$;

-- Puts every guard trigger on the table and its partitions in its mode
-- (partitions inherit row triggers as clones with their own enabled state):
-- registering one guard also repairs the modes of the others.
CREATE FUNCTION integrity._set_trigger_modes(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fix text;
BEGIN
    FOR fix IN
        SELECT integrity._enable_triggers_sql(t.tgrelid::regclass, array_agg(t.tgname), array_agg(g.mode))
          FROM integrity._guard_triggers(NULL) g
          JOIN pg_catalog.pg_trigger t ON t.tgname = g.trigger_name
         WHERE t.tgrelid IN (SELECT integrity._partition_tree(tbl))
           AND t.tgenabled <> g.mode
         GROUP BY t.tgrelid
    LOOP
        EXECUTE fix;
    END LOOP;
END;
$$;

-- The name every trigger of a target column's total starts with on its
-- sources: from the target's name, which the registry keeps and pg_dump
-- restores, so that a registration after a restore replaces its triggers.
CREATE FUNCTION integrity._total_trigger_base(target_name text, target_column text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'integrity_total_' || left(md5(target_name || '.' || target_column), 12) $$;

-- The arguments trigger trigger_name of a registry row's guard has: what its
-- registration creates it with, and what health() and the event triggers
-- check that it still has.
CREATE FUNCTION integrity._trigger_arguments(trigger_name name, columns text[], options jsonb)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN trigger_name IN ('integrity_immutable', 'integrity_immutable_recheck',
                              'integrity_write_once', 'integrity_write_once_recheck',
                              'integrity_soft_delete') THEN columns
        WHEN trigger_name = 'integrity_version_bump' THEN
            ARRAY[columns[1], CASE WHEN coalesce((options ->> 'strict')::boolean, true) THEN 'strict' ELSE 'lenient' END]
        WHEN trigger_name = 'integrity_version_check' THEN columns[1:1]
        WHEN trigger_name IN ('integrity_stock', 'integrity_stock_recheck',
                              'integrity_credit', 'integrity_credit_recheck') THEN columns[1:2]
        -- the accounts by name, which pg_dump keeps
        WHEN trigger_name = 'integrity_ledger_credit' THEN
            ARRAY[(SELECT format('%I.%I', n.nspname, c.relname)
                     FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = integrity._relation(options ->> 'accounts')),
                  options ->> 'amount_column', options ->> 'entry_type_column',
                  options ->> 'debit_value', options ->> 'credit_value',
                  options ->> 'limit_column', options ->> 'used_column'] || columns
        WHEN trigger_name = 'integrity_hash_chain' THEN
            ARRAY[options ->> 'seq_column', options ->> 'hash_column'] || columns
        -- the maintained columns, an empty string, the target's key columns
        WHEN trigger_name IN ('integrity_total', 'integrity_total_recheck') THEN
            columns || ARRAY[''] || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'key'))
        ELSE '{}'::text[] END
$$;

-- Trigger arguments as the argument list of CREATE TRIGGER … EXECUTE FUNCTION.
CREATE FUNCTION integrity._arguments_sql(args text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(string_agg(quote_literal(a), ', ' ORDER BY n), '') FROM unnest(args) WITH ORDINALITY AS u(a, n) $$;

-- Every column a guard reads, with the relation it is read from: the columns
-- it was registered with and, for a ledger, its amount and entry type columns
-- and the accounts' key, limit and used columns, for a hash chain every column
-- it hashes and its sequence and hash columns, for an append-only table with a
-- retention its time column, for lifecycle tracking the columns it leaves out
-- (renamed, one would be tracked).  The event trigger refuses
-- renaming or dropping them; health() reports those that are gone.
CREATE FUNCTION integrity._guard_columns(tbl regclass, guard text, columns text[], options jsonb)
RETURNS TABLE (rel regclass, col text, n bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tbl, c.col, c.n FROM unnest(columns) WITH ORDINALITY AS c(col, n)
    UNION ALL
    SELECT tbl, c.col, 100 + c.n
      FROM unnest(ARRAY[options ->> 'amount_column', options ->> 'entry_type_column']) WITH ORDINALITY AS c(col, n)
     WHERE guard = 'ledger_credit'
    UNION ALL
    SELECT tbl, options -> 'retention' ->> 'time_column', 400
     WHERE guard = 'append_only' AND options ? 'retention'
    UNION ALL
    SELECT tbl, c.col, 300 + c.n
      FROM unnest(ARRAY[options ->> 'seq_column', options ->> 'hash_column']
                  || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(options -> 'hashed_columns')))
           WITH ORDINALITY AS c(col, n)
     WHERE guard = 'hash_chain'
    UNION ALL
    SELECT tbl, c.col, 400 + c.n
      FROM pg_catalog.jsonb_array_elements_text(options -> 'exclude') WITH ORDINALITY AS c(col, n)
     WHERE guard = 'lifecycle'
    UNION ALL
    SELECT integrity._relation(options ->> 'accounts'), c.col, 200 + c.n
      FROM unnest(columns || ARRAY[options ->> 'limit_column', options ->> 'used_column']) WITH ORDINALITY AS c(col, n)
     WHERE guard = 'ledger_credit' AND integrity._relation(options ->> 'accounts') IS NOT NULL
    UNION ALL
    SELECT tbl, k.col, 500 + k.n
      FROM pg_catalog.jsonb_array_elements_text(options -> 'key') WITH ORDINALITY AS k(col, n)
     WHERE guard = 'total'
    UNION ALL
    SELECT integrity._relation(t.total ->> 'source'), c.col, 600 + 100 * t.n + c.n
      FROM pg_catalog.jsonb_array_elements(options -> 'totals') WITH ORDINALITY AS t(total, n)
     CROSS JOIN LATERAL unnest(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(t.total -> 'key_columns'))
                               || ARRAY[t.total ->> 'value_column']
                               || ARRAY(SELECT pg_catalog.jsonb_array_elements_text(t.total -> 'filter_columns')))
                        WITH ORDINALITY AS c(col, n)
     WHERE guard = 'total' AND integrity._relation(t.total ->> 'source') IS NOT NULL AND c.col IS NOT NULL
$$;

-- The relations a delete of tbl's rows can reach: tbl and its partitions, and
-- (recursively) the tables whose ON DELETE CASCADE foreign keys reference one
-- of them, with their partitions.
CREATE FUNCTION integrity._cascade_reach(tbl regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE reach(rel) AS (
        SELECT integrity._partition_tree(tbl)
        UNION
        SELECT tree.rel
          FROM reach r
          JOIN pg_catalog.pg_constraint c ON c.confrelid = r.rel AND c.contype = 'f' AND c.confdeltype = 'c'
         CROSS JOIN LATERAL integrity._partition_tree(c.conrelid::regclass) AS tree(rel))
    SELECT rel FROM reach
$$;

-- Inheritance children (not partitions) of tbl: the guards are not cloned onto
-- them, yet UPDATE, DELETE and TRUNCATE of tbl reach their rows.
CREATE FUNCTION integrity._inheritance_children(tbl regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.inhrelid::regclass
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = tbl AND NOT c.relispartition
     ORDER BY 1
$$;

-- The inheritance refusal, for registration and for the event trigger.
CREATE FUNCTION integrity._refuse_inheritance(parent regclass, child regclass, guard text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'table "%" cannot inherit from "%", which has the % guard', child, parent, guard
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = format('Guards cover partitions, not inheritance children, yet UPDATE, DELETE and TRUNCATE'
                              ' of %s reach the rows of %s.', parent, child),
              HINT = format('Make %s a partition (CREATE TABLE … PARTITION OF), or remove the inheritance'
                            ' (ALTER TABLE %s NO INHERIT %s) before registering.', child, child, parent);
END;
$$;

-- A partition is guarded through its partitioned ancestor: registering or
-- removing the same guard on the partition itself is refused.
CREATE FUNCTION integrity._refuse_if_inherited(tbl regclass, guards text[], caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ancestor record;
BEGIN
    SELECT r.table_name, r.guard INTO ancestor
      FROM integrity.guard_registry r
     WHERE r.table_name IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(tbl))
       AND r.table_name <> tbl AND r.guard = ANY (guards)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: table "%" is a partition of "%", which has the % guard', caller, tbl,
                        ancestor.table_name, ancestor.guard
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Partitions share the guards of their partitioned table; manage them on %s.',
                                ancestor.table_name);
    END IF;
END;
$$;

CREATE FUNCTION integrity._record_guard(tbl regclass, guard text, columns text[], options jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT integrity._refuse_inheritance(tbl, child, guard) FROM integrity._inheritance_children(tbl) child LIMIT 1;
    INSERT INTO integrity.guard_registry AS g (table_name, guard, columns, options)
    VALUES (tbl, guard, columns, options)
    ON CONFLICT (table_name, guard) DO UPDATE
        SET columns = EXCLUDED.columns, options = EXCLUDED.options
        WHERE (g.columns, g.options) IS DISTINCT FROM (EXCLUDED.columns, EXCLUDED.options)
$$;

-- TRUNCATE triggers are not inherited by partitions: each member of the tree
-- gets its own.
CREATE FUNCTION integrity._cover_truncate(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    -- A foreign table cannot have a TRUNCATE trigger.
    rel := integrity._foreign_partition(tbl);
    IF rel IS NOT NULL THEN
        RAISE EXCEPTION 'foreign table "%" cannot be a partition of append-only table "%"', rel, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A foreign table cannot have the trigger that refuses TRUNCATE of a partition.',
                  HINT = 'Keep foreign tables out of the partition tree, or register the guard with allow_truncate => true.';
    END IF;
    FOR rel IN SELECT integrity._partition_tree(tbl) LOOP
        -- A trigger of that name that is not this one (planted before the
        -- registration, say) is replaced.
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger
                        WHERE tgrelid = rel AND tgname = 'integrity_append_only_truncate'
                          AND tgfoid = 'integrity.append_only_truncate_guard()'::pg_catalog.regprocedure
                          AND tgtype = 34 AND tgqual IS NULL AND tgnargs = 0) THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER integrity_append_only_truncate BEFORE TRUNCATE ON %s'
                           ' FOR EACH STATEMENT EXECUTE FUNCTION integrity.append_only_truncate_guard()', rel);
        END IF;
    END LOOP;
END;
$$;

-- Drops the named triggers of a guard from the table (and, for per-partition
-- triggers, from its partitions).  Callers remove the registry row first: the
-- event trigger refuses to drop a trigger that a registered guard still needs.
CREATE FUNCTION integrity._drop_triggers(tbl regclass, guard text, only_trigger name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trg record;
BEGIN
    FOR trg IN
        SELECT t.tgrelid::regclass AS rel, t.tgname
          FROM integrity._guard_triggers(guard) g
          JOIN pg_catalog.pg_trigger t ON t.tgname = g.trigger_name
         WHERE (only_trigger IS NULL OR g.trigger_name = only_trigger)
           AND t.tgparentid = 0  -- clones on partitions go with their parent
           AND (t.tgrelid = tbl OR (g.per_partition AND t.tgrelid IN (SELECT integrity._partition_tree(tbl))))
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trg.tgname, trg.rel);
    END LOOP;
END;
$$;

-- Whether the guard's BEFORE trigger on tbl needs its recheck: some other
-- BEFORE row trigger for the same events (UPDATE; for stock and credit also
-- INSERT) on tbl or one of its partitions fires after it (triggers fire in name
-- order) and could change NEW after the guard looked at it.  Another guard's trigger counts too unless that guard is registered on
-- the table (then it is the extension's own, which writes only its column).
-- Disabled triggers count: enabling one is no DDL the event triggers see.
CREATE FUNCTION integrity._needs_recheck(tbl regclass, guard text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT
          FROM integrity._guard_triggers(guard) own
          JOIN pg_catalog.pg_trigger t
            ON t.tgrelid IN (SELECT integrity._partition_tree(tbl))
           AND t.tgtype & 67 = 3 AND t.tgtype & own.tgtype & 20 <> 0  -- ROW, BEFORE, INSERT or UPDATE (not INSTEAD OF)
           AND t.tgname COLLATE "C" > own.trigger_name COLLATE "C"
         WHERE own.tgtype & 67 = 3 AND EXISTS (SELECT FROM integrity._guard_triggers(guard) r WHERE r.recheck)
           AND NOT EXISTS (SELECT
                             FROM integrity._guard_triggers(NULL) g
                             JOIN integrity.guard_registry reg ON reg.table_name = tbl AND reg.guard = g.guard
                            WHERE g.trigger_name = t.tgname
                              AND t.tgfoid = pg_catalog.to_regprocedure(format('integrity.%I()', g.function_name))))
$$;

-- Creates the guard's recheck trigger with statement create_sql when the table
-- needs it, and drops it otherwise.  The recheck goes first: the event trigger
-- that sees the guard's BEFORE trigger created then finds the table complete.
CREATE FUNCTION integrity._place_recheck(tbl regclass, guard text, create_sql text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF integrity._needs_recheck(tbl, guard) THEN
        EXECUTE create_sql;
    ELSE
        PERFORM integrity._drop_triggers(tbl, g.guard, g.trigger_name)
           FROM integrity._guard_triggers(_place_recheck.guard) g
          WHERE g.recheck;
    END IF;
END;
$$;

-- The triggers that keep integrity.lifecycle_events append-only (for
-- superusers and under session_replication_role = replica too), for the
-- extension script and for health().  They are no guard of the registry: they
-- go with the extension.
CREATE FUNCTION integrity._lifecycle_events_triggers()
RETURNS TABLE (trigger_name name, tgtype smallint, create_sql text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.trigger_name::name, t.tgtype::smallint,
           format('CREATE TRIGGER %1$I BEFORE %2$s ON integrity.lifecycle_events FOR EACH %3$s'
                  ' EXECUTE FUNCTION integrity.lifecycle_events_guard();'
                  ' ALTER TABLE integrity.lifecycle_events ENABLE ALWAYS TRIGGER %1$I;',
                  t.trigger_name, t.events, t.level)
      FROM (VALUES ('lifecycle_events_append_only', 27, 'UPDATE OR DELETE', 'ROW'),
                   ('lifecycle_events_no_truncate', 34, 'TRUNCATE', 'STATEMENT')
           ) AS t(trigger_name, tgtype, events, level)
$$;

-- The extension's event triggers, for installation and for the remedies of
-- health().  ddl_command_start refuses commands that would rewrite or remove
-- guarded rows before they run.  ddl_command_end checks and extends the
-- guards after tables are created (also inside CREATE SCHEMA), altered or
-- attached, typed tables changed with their type, triggers created or
-- altered, schemas renamed.  sql_drop refuses drops of guard triggers and of
-- append-only tables, and forgets dropped tables.
CREATE FUNCTION integrity._event_triggers()
RETURNS TABLE (evtname name, evtevent text, tags text[], evtfunction name, consequence text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('integrity_ddl_command_start'::name, 'ddl_command_start',
            ARRAY['ALTER TABLE', 'ALTER TYPE', 'DROP EXTENSION', 'DROP SCHEMA', 'DROP TABLE'], '_on_ddl_command_start'::name,
            'columns of append-only tables can be dropped or changed, their partitions detached,'
            ' and the extension dropped with all its guards'),
           ('integrity_ddl_command_end', 'ddl_command_end',
            ARRAY['CREATE TABLE', 'ALTER TABLE', 'CREATE TRIGGER', 'ALTER TRIGGER', 'CREATE SCHEMA', 'ALTER SCHEMA',
                  'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE', 'ALTER TYPE'], '_on_ddl_command_end',
            'guard triggers can be disabled, re-moded or replaced, guarded columns renamed or dropped,'
            ' and new partitions are not covered'),
           ('integrity_sql_drop', 'sql_drop', NULL, '_on_sql_drop',
            'guard triggers and append-only tables can be dropped, and dropped tables stay in the registry')
$$;

-- The statement that makes one of them (an event trigger's tags are literals
-- in its definition).  Like the guards themselves, their keepers also run
-- under session_replication_role = replica.
CREATE FUNCTION integrity._event_trigger_sql(evtname name)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('CREATE EVENT TRIGGER %1$I ON %2$s%3$s EXECUTE FUNCTION integrity.%4$I(); ALTER EVENT TRIGGER %1$I ENABLE ALWAYS;',
                  e.evtname, e.evtevent,
                  ' WHEN TAG IN (' || (SELECT string_agg(pg_catalog.quote_literal(t), ', ') FROM unnest(e.tags) t) || ')',
                  e.evtfunction)
      FROM integrity._event_triggers() e
     WHERE e.evtname = $1
$$;

------------------------------------------------------------------------------

CREATE FUNCTION integrity.protect_append_only(tbl regclass, allow_truncate boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._check_table(tbl, 'protect_append_only');
    PERFORM integrity._require_argument(allow_truncate, 'allow_truncate', 'protect_append_only');
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY['append_only'], 'protect_append_only');
    IF EXISTS (SELECT FROM integrity.guard_registry r
                WHERE r.table_name IN (SELECT tbl UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tbl) a)
                  AND r.guard = 'soft_delete') THEN
        RAISE EXCEPTION 'protect_append_only: table "%" has soft delete; its rows are marked deleted by an UPDATE', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'An append-only table refuses every UPDATE and DELETE of its rows.',
                  HINT = format('Lift soft delete first: SELECT integrity.unprotect(%L, ''soft_delete'');', tbl::text);
    END IF;
    -- A retention set with set_retention() stays.
    PERFORM integrity._record_guard(tbl, 'append_only', '{}',
                                    jsonb_build_object('allow_truncate', allow_truncate)
                                    || coalesce((SELECT jsonb_build_object('retention', r.options -> 'retention')
                                                   FROM integrity.guard_registry r
                                                  WHERE r.table_name = tbl AND r.guard = 'append_only'
                                                    AND r.options ? 'retention'), '{}'));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_append_only BEFORE UPDATE OR DELETE ON %s'
                   ' FOR EACH ROW EXECUTE FUNCTION integrity.append_only_guard()', tbl);
    IF allow_truncate THEN
        PERFORM integrity._drop_triggers(tbl, 'append_only', 'integrity_append_only_truncate');
    ELSE
        PERFORM integrity._cover_truncate(tbl);
    END IF;
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;
COMMENT ON FUNCTION integrity.protect_append_only(regclass, boolean) IS
    'Rows of the table can be inserted but never updated or deleted; TRUNCATE is refused unless allow_truncate.';

-- immutable and write_once differ only in their condition and function.
CREATE FUNCTION integrity._protect_columns(tbl regclass, columns text[], guard text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := CASE guard WHEN 'immutable' THEN 'protect_immutable' ELSE 'protect_write_once' END;
    checked text[];
    condition text;
    trigger_name text := 'integrity_' || guard;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    checked := integrity._check_columns(tbl, columns, caller);
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY[guard], caller);
    SELECT string_agg(CASE guard
                          WHEN 'immutable' THEN integrity._changed_sql(tbl, col)
                          ELSE format('(OLD.%I IS NOT NULL AND %s)', col, integrity._changed_sql(tbl, col))
                      END, ' OR ')
      INTO condition
      FROM unnest(checked) AS col;

    PERFORM integrity._record_guard(tbl, guard, checked, '{}');
    PERFORM integrity._place_recheck(tbl, guard,
        format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %s FOR EACH ROW WHEN (%s)'
               ' EXECUTE FUNCTION integrity.%I(%s)',
               trigger_name || '_recheck', tbl, condition, guard || '_guard',
               integrity._arguments_sql(integrity._trigger_arguments(trigger_name || '_recheck', checked, '{}'))));
    EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION integrity.%I(%s)',
                   trigger_name, tbl, guard || '_guard',
                   integrity._arguments_sql(integrity._trigger_arguments(trigger_name, checked, '{}')));
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;

CREATE FUNCTION integrity.protect_immutable(tbl regclass, columns text[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT integrity._protect_columns(tbl, columns, 'immutable') $$;
COMMENT ON FUNCTION integrity.protect_immutable(regclass, text[]) IS
    'The columns keep the value they had at INSERT (NULL included); UPDATEs that change them fail with 23001.';

CREATE FUNCTION integrity.protect_write_once(tbl regclass, columns text[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT integrity._protect_columns(tbl, columns, 'write_once') $$;
COMMENT ON FUNCTION integrity.protect_write_once(regclass, text[]) IS
    'The columns may go from NULL to a value once and never change afterwards (23001).';

CREATE FUNCTION integrity.enable_versioning(tbl regclass, version_column name DEFAULT 'version',
                                            strict boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype;
    options jsonb := jsonb_build_object('strict', strict);
BEGIN
    PERFORM integrity._check_table(tbl, 'enable_versioning');
    PERFORM integrity._require_argument(version_column, 'version_column', 'enable_versioning');
    PERFORM integrity._require_argument(strict, 'strict', 'enable_versioning');
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY['versioning'], 'enable_versioning');
    PERFORM integrity._refuse_generated(tbl, version_column, 'enable_versioning');
    typ := integrity._column_type(tbl, version_column);
    IF typ NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN
        RAISE EXCEPTION 'version column "%" of table "%" must be smallint, integer or bigint, not %',
                        version_column, tbl, typ
            USING ERRCODE = 'datatype_mismatch';
    END IF;

    PERFORM integrity._record_guard(tbl, 'versioning', ARRAY[version_column::text], options);
    PERFORM integrity._place_recheck(tbl, 'versioning',
        format('CREATE OR REPLACE TRIGGER integrity_version_check AFTER UPDATE ON %s FOR EACH ROW'
               ' WHEN (NEW.%2$I IS DISTINCT FROM COALESCE(OLD.%2$I + 1, 1))'
               ' EXECUTE FUNCTION integrity.version_check(%3$s)',
               tbl, version_column,
               integrity._arguments_sql(integrity._trigger_arguments('integrity_version_check',
                                                                     ARRAY[version_column::text], options))));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_version_bump BEFORE UPDATE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.version_bump(%s)',
                   tbl, integrity._arguments_sql(integrity._trigger_arguments('integrity_version_bump',
                                                                              ARRAY[version_column::text], options)));
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;
COMMENT ON FUNCTION integrity.enable_versioning(regclass, name, boolean) IS
    'Every UPDATE leaves version = OLD.version + 1; strict mode refuses stale versions with 40001.';

CREATE FUNCTION integrity.unprotect(tbl regclass, guard text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kinds text[] := ARRAY(SELECT DISTINCT g.guard FROM integrity._guard_triggers(NULL) g ORDER BY 1);
    kind text;
    registered boolean;
    installed boolean;
    totals jsonb;
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', 'unprotect');
    IF guard IS NOT NULL THEN
        IF guard <> ALL (kinds) THEN
            RAISE EXCEPTION 'unknown guard "%"', guard
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Guards are ' || array_to_string(kinds, ', ') || '.';
        END IF;
        kinds := ARRAY[guard];
    END IF;
    PERFORM integrity._require_owner(tbl, 'remove its pg_integrity guards');
    PERFORM integrity._refuse_if_inherited(tbl, kinds, 'unprotect');

    WITH removed AS (
        DELETE FROM integrity.guard_registry r
         WHERE r.table_name = tbl AND r.guard = ANY (kinds)
        RETURNING r.guard, r.options)
    SELECT count(*) > 0, max(removed.options::text) FILTER (WHERE removed.guard = 'total')::jsonb
      INTO registered, totals FROM removed;
    -- The triggers of the totals on their sources.
    IF totals IS NOT NULL THEN
        PERFORM integrity._drop_total_triggers(totals);
    END IF;
    -- A chain registered again later starts from its rows, not from an old purge.
    IF 'hash_chain' = ANY (kinds) THEN
        DELETE FROM integrity.chain_anchors a WHERE a.table_name = tbl;
    END IF;
    -- Triggers go too when their registry row was already gone.
    SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t, unnest(kinds) k, integrity._guard_triggers(k) g
                    WHERE t.tgrelid = tbl AND t.tgname = g.trigger_name AND t.tgparentid = 0)
      INTO installed;
    FOREACH kind IN ARRAY kinds LOOP
        PERFORM integrity._drop_triggers(tbl, kind);
    END LOOP;
    IF NOT (registered OR installed) THEN
        RAISE NOTICE 'table "%" has no % guard, skipping', tbl, coalesce(guard, 'pg_integrity');
    END IF;
END;
$$;
COMMENT ON FUNCTION integrity.unprotect(regclass, text) IS
    'Removes one guard (or all guards) from the table: its registry row and its triggers.';
