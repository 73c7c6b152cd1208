-- Stock and credit: a part that must stay within a non-negative total, and the
-- operations that move it without ever overselling or overdrawing.

-- The guards' triggers (stock_guard, credit_guard, ledger_credit_guard) and
-- the single-row operations (reserve_stock, release_stock, commit_stock) are
-- compiled: sql/compiled_functions.sql declares them.

-- A column that holds a quantity: an integer or numeric type.
CREATE FUNCTION integrity._check_quantity_column(tbl regclass, col text, caller text)
RETURNS regtype
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype;
BEGIN
    PERFORM integrity._require_argument(col, 'column', caller);
    typ := integrity._column_type(tbl, col);
    IF typ NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'numeric'::regtype) THEN
        RAISE EXCEPTION 'column "%" of table "%" must be smallint, integer, bigint or numeric, not %', col, tbl, typ
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    RETURN typ;
END;
$$;

CREATE FUNCTION integrity._column_format(tbl regclass, col text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
     WHERE attrelid = tbl AND attname = col AND attnum > 0 AND NOT attisdropped
$$;

-- Whether column target_col can hold any value of column source_col exactly:
-- the same type, an unconstrained numeric, or a wider integer.
CREATE FUNCTION integrity._holds_exactly(target regclass, target_col text, source regclass, source_col text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT integrity._column_format(target, target_col) = integrity._column_format(source, source_col)
        OR integrity._column_format(target, target_col) = 'numeric'
        OR (integrity._column_type(source, source_col) IN ('smallint', 'integer', 'bigint')
            AND array_position(ARRAY['smallint', 'integer', 'bigint', 'numeric']::regtype[],
                               integrity._column_type(target, target_col))
                >= array_position(ARRAY['smallint', 'integer', 'bigint']::regtype[],
                                  integrity._column_type(source, source_col)))
$$;

-- Whether a BEFORE UPDATE row trigger on rel can skip an update (return
-- NULL): an enabled one that is not one of the extension's guards, which
-- refuse a row or let it through but never skip it.  reserve_stock and the
-- ledger credit guard tell a skipped update from a refused one with it.
CREATE FUNCTION integrity._may_skip_updates(rel regclass)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT
                     FROM pg_catalog.pg_trigger g
                     JOIN pg_catalog.pg_proc p ON p.oid = g.tgfoid
                    WHERE g.tgrelid = rel AND g.tgtype::pg_catalog.int4 & 19 = 19 AND g.tgenabled <> 'D'
                      AND p.pronamespace <> 'integrity'::pg_catalog.regnamespace)
$$;

-- guard_stock and guard_credit: 0 <= part <= total and total >= 0, checked on
-- the final row like a NOT VALID CHECK constraint.
CREATE FUNCTION integrity._guard_quantity(tbl regclass, total_column name, part_column name, guard text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'guard_' || guard;
    typ regtype;
BEGIN
    PERFORM integrity._check_table(tbl, caller);
    typ := integrity._check_quantity_column(tbl, total_column, caller);
    IF integrity._check_quantity_column(tbl, part_column, caller) <> typ THEN
        RAISE EXCEPTION '%: columns "%" and "%" of table "%" must have the same type', caller, total_column,
                        part_column, tbl
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    PERFORM integrity._refuse_generated(tbl, part_column, caller);
    IF guard = 'stock' THEN   -- commit_stock consumes stock too
        PERFORM integrity._refuse_generated(tbl, total_column, caller);
    END IF;
    PERFORM integrity._refuse_if_inherited(tbl, ARRAY[guard], caller);
    PERFORM integrity._record_guard(tbl, guard, ARRAY[total_column::text, part_column::text], '{}');
    -- numeric's NaN compares greater than every number and passes the
    -- comparisons: numeric columns are checked for it too.
    PERFORM integrity._place_recheck(tbl, guard,
        format('CREATE OR REPLACE TRIGGER %1$I AFTER INSERT OR UPDATE ON %2$s FOR EACH ROW'
               ' WHEN (NOT (NEW.%3$I >= 0 AND NEW.%4$I >= 0 AND NEW.%4$I <= NEW.%3$I)%8$s)'
               ' EXECUTE FUNCTION integrity.%5$I(%6$L, %7$L)',
               'integrity_' || guard || '_recheck', tbl, total_column, part_column, guard || '_guard',
               total_column, part_column,
               CASE WHEN typ = 'numeric'::regtype
                    THEN format(' OR NEW.%1$I = ''NaN'' OR NEW.%2$I = ''NaN''', total_column, part_column)
                    ELSE '' END));
    EXECUTE format('CREATE OR REPLACE TRIGGER %1$I BEFORE INSERT OR UPDATE ON %2$s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.%3$I(%4$L, %5$L)',
                   'integrity_' || guard, tbl, guard || '_guard', total_column, part_column);
    PERFORM integrity._set_trigger_modes(tbl);
END;
$$;

CREATE FUNCTION integrity.guard_stock(tbl regclass, stock_column name DEFAULT 'stock',
                                      reserved_column name DEFAULT 'reserved_stock')
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT integrity._guard_quantity(tbl, stock_column, reserved_column, 'stock') $$;
COMMENT ON FUNCTION integrity.guard_stock(regclass, name, name) IS
    'stock >= 0, reserved >= 0 and reserved <= stock on every write (23514); existing rows are not scanned.';

CREATE FUNCTION integrity.guard_credit(tbl regclass, limit_column name DEFAULT 'credit_limit',
                                       used_column name DEFAULT 'used_credit')
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT integrity._guard_quantity(tbl, limit_column, used_column, 'credit') $$;
COMMENT ON FUNCTION integrity.guard_credit(regclass, name, name) IS
    'limit >= 0 and 0 <= used <= limit on every write (23514); existing rows are not scanned.';

-- Why value is no value of the ledger's entry type column (an enum without
-- that label, say), or NULL when it is one, or when the column is gone
-- (health() reports that).  Registration refuses such a value; violations()
-- and health() report a guard whose values went bad later (a renamed label).
CREATE FUNCTION integrity._entry_value_problem(ledger regclass, entry_type_column text, value text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype := (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = ledger AND a.attname = entry_type_column AND a.attnum > 0
                       AND NOT a.attisdropped);
BEGIN
    IF typ IS NOT NULL THEN
        EXECUTE format('SELECT %L::%s', value, typ);
    END IF;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLERRM;
END;
$$;

CREATE FUNCTION integrity.guard_ledger_credit(ledger regclass, accounts regclass, key_columns text[],
                                              amount_column name DEFAULT 'amount',
                                              entry_type_column name DEFAULT 'entry_type',
                                              debit_value text DEFAULT 'DEBIT',
                                              credit_value text DEFAULT 'CREDIT',
                                              limit_column name DEFAULT 'credit_limit',
                                              used_column name DEFAULT 'used_credit')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := 'guard_ledger_credit';
    keys text[];
    key text;
    problem text;
BEGIN
    PERFORM integrity._check_table(ledger, caller);
    PERFORM integrity._require_argument(accounts, 'accounts', caller);
    PERFORM integrity._check_table(accounts, caller);
    IF ledger = accounts THEN
        RAISE EXCEPTION '%: the ledger and the accounts must be different tables', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    keys := integrity._check_columns(ledger, key_columns, caller);
    IF cardinality(keys) > 8 THEN
        RAISE EXCEPTION '%: an account key has at most 8 columns', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH key IN ARRAY keys LOOP
        IF integrity._column_type(accounts, key) <> integrity._column_type(ledger, key) THEN
            RAISE EXCEPTION '%: key column "%" has type % in "%" but % in "%"', caller, key,
                            integrity._column_type(ledger, key), ledger, integrity._column_type(accounts, key), accounts
                USING ERRCODE = 'datatype_mismatch';
        END IF;
    END LOOP;
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_index i
         WHERE i.indrelid = accounts AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
           AND i.indnkeyatts = cardinality(keys)
           AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                  FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = accounts AND a.attnum = ANY (i.indkey::int2[]))
               = (SELECT array_agg(k ORDER BY k) FROM unnest(keys) k)) THEN
        RAISE EXCEPTION '%: there is no unique constraint on (%) in "%"', caller, array_to_string(keys, ', '), accounts
            USING ERRCODE = 'invalid_column_reference',
                  HINT = 'Each ledger entry must belong to exactly one account: add a primary key or unique constraint on the key columns.';
    END IF;
    PERFORM integrity._check_quantity_column(ledger, amount_column, caller);
    PERFORM integrity._refuse_generated(accounts, used_column, caller);
    IF integrity._check_quantity_column(accounts, limit_column, caller)
       <> integrity._check_quantity_column(accounts, used_column, caller) THEN
        RAISE EXCEPTION '%: columns "%" and "%" of table "%" must have the same type', caller, limit_column,
                        used_column, accounts
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    -- The account must hold every amount exactly, or it drifts from its ledger.
    IF NOT integrity._holds_exactly(accounts, used_column, ledger, amount_column) THEN
        RAISE EXCEPTION '%: amounts of type % would be rounded into "%" of type %', caller,
                        integrity._column_format(ledger, amount_column), used_column,
                        integrity._column_format(accounts, used_column)
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'Give the account''s used and limit columns the type of the ledger''s amounts.';
    END IF;
    PERFORM integrity._require_argument(entry_type_column, 'entry_type_column', caller);
    IF integrity._column_type(ledger, entry_type_column) = 'bpchar'::regtype THEN
        RAISE EXCEPTION '%: entry type column "%" of table "%" must not be char(n)', caller, entry_type_column, ledger
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = 'char(n) pads its values with spaces, so they would not equal the debit and credit values.',
                  HINT = 'Use text, varchar or an enum for the entry type.';
    END IF;
    PERFORM integrity._require_argument(debit_value, 'debit_value', caller);
    PERFORM integrity._require_argument(credit_value, 'credit_value', caller);
    FOR problem IN
        SELECT format('%s %L is not a value of entry type column "%s" of table "%s": %s', v.argument, v.value,
                      entry_type_column, ledger, p.problem)
          FROM (VALUES ('debit_value', debit_value), ('credit_value', credit_value)) AS v(argument, value)
         CROSS JOIN LATERAL (SELECT integrity._entry_value_problem(ledger, entry_type_column, v.value)) AS p(problem)
         WHERE p.problem IS NOT NULL
    LOOP
        RAISE EXCEPTION '%: %', caller, problem USING ERRCODE = 'invalid_text_representation';
    END LOOP;
    IF debit_value = credit_value THEN
        RAISE EXCEPTION '%: debit_value and credit_value must differ', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integrity._refuse_if_inherited(ledger, ARRAY['ledger_credit'], caller);

    PERFORM integrity._record_guard(ledger, 'ledger_credit', keys, jsonb_build_object(
        'accounts', accounts::text, 'amount_column', amount_column, 'entry_type_column', entry_type_column,
        'debit_value', debit_value, 'credit_value', credit_value,
        'limit_column', limit_column, 'used_column', used_column));
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_ledger_credit AFTER INSERT OR UPDATE OR DELETE ON %s'
                   ' FOR EACH ROW EXECUTE FUNCTION integrity.ledger_credit_guard(%s)',
                   ledger,
                   (SELECT string_agg(quote_literal(arg), ', ')
                      FROM unnest(ARRAY[(SELECT format('%I.%I', n.nspname, c.relname)
                                           FROM pg_catalog.pg_class c
                                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                                          WHERE c.oid = accounts),
                                        amount_column, entry_type_column, debit_value, credit_value,
                                        limit_column, used_column] || keys) AS arg));
    PERFORM integrity._set_trigger_modes(ledger);
END;
$$;
COMMENT ON FUNCTION integrity.guard_ledger_credit(regclass, regclass, text[], name, name, text, text, name, name) IS
    'Each ledger entry moves its account''s used credit (DEBIT up, CREDIT down) atomically; refused (23514) above the limit or below zero.';

------------------------------------------------------------------------------
-- Stock operations.  Each is one statement on the row (or, for several rows,
-- a lock of all of them in key order first), so concurrent callers queue on
-- the row lock and each decides on the latest committed row: never oversold.

-- The stock guard of tbl: its columns, its single-column primary key, and the
-- scale a quantity must fit (0 for integer columns, NULL for unconstrained numeric).
CREATE FUNCTION integrity._stock_target(tbl regclass, caller text,
                                        OUT stock_column text, OUT reserved_column text,
                                        OUT key_column text, OUT key_type text, OUT quantity_scale integer)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM integrity._require_argument(tbl, 'tbl', caller);
    SELECT r.columns[1], r.columns[2] INTO stock_column, reserved_column
      FROM integrity.guard_registry r
     WHERE r.table_name = tbl AND r.guard = 'stock';
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: table "%" has no stock guard', caller, tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Register it first: SELECT integrity.guard_stock(%L);', tbl::text);
    END IF;
    SELECT a.attname, format_type(a.atttypid, a.atttypmod) INTO key_column, key_type
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid = tbl AND i.indisprimary AND i.indnkeyatts = 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: table "%" needs a single-column primary key', caller, tbl
            USING ERRCODE = 'invalid_column_reference';
    END IF;
    SELECT CASE WHEN a.atttypid <> 'numeric'::regtype THEN 0
                WHEN a.atttypmod >= 4 THEN (a.atttypmod - 4) & 65535 END
      INTO quantity_scale
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = reserved_column;
END;
$$;

-- A quantity to move: positive, and representable in the stock columns (a
-- fraction of an integer stock would otherwise be rounded away silently).
CREATE FUNCTION integrity._require_quantity(qty numeric, scale integer, caller text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF qty IS NULL OR qty <= 0 OR qty = 'NaN' THEN
        RAISE EXCEPTION '%: quantity must be positive, not %', caller, coalesce(qty::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF scale IS NOT NULL AND qty <> round(qty, scale) THEN
        RAISE EXCEPTION '%: quantity % has more decimal places than the stock columns hold (%)', caller, qty, scale
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

CREATE FUNCTION integrity._unknown_row(tbl regclass, key_column text, id text, caller text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%: table "%" has no row with % = %', caller, tbl, key_column, coalesce(id, 'NULL')
        USING ERRCODE = 'invalid_parameter_value';
END;
$$;

CREATE FUNCTION integrity.reserve_stock(tbl regclass, ids anyarray, qtys numeric[])
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record := integrity._stock_target(tbl, 'reserve_stock');
    verdict record;
    updated bigint;
    wanted bigint;
BEGIN
    PERFORM integrity._require_argument(ids, 'ids', 'reserve_stock');
    IF qtys IS NULL OR cardinality(qtys) <> cardinality(ids) THEN
        RAISE EXCEPTION 'reserve_stock: ids and qtys must have the same number of elements'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_position(ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'reserve_stock: ids must not contain NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF cardinality(ids) = 0 THEN
        RAISE EXCEPTION 'reserve_stock: ids must name at least one row' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM integrity._require_quantity(q, t.quantity_scale, 'reserve_stock') FROM unnest(qtys) q;

    -- Lock every row in key order (so that two multi-row reservations can
    -- never deadlock each other), then decide on the locked rows.
    EXECUTE format($sql$
        WITH wanted AS (
            SELECT w.k::%4$s AS k, sum(w.q) AS q FROM unnest($1, $2) AS w(k, q) GROUP BY 1),
        locked AS (
            SELECT r.%3$I AS k, r.%5$I - r.%2$I AS available
              FROM %1$s r WHERE r.%3$I IN (SELECT k FROM wanted) ORDER BY r.%3$I FOR UPDATE)
        SELECT min(w.k::text) FILTER (WHERE l.k IS NULL) AS missing,
               coalesce(bool_and(l.available >= w.q), false) AS enough
          FROM wanted w LEFT JOIN locked l ON l.k = w.k
        $sql$, tbl, t.reserved_column, t.key_column, t.key_type, t.stock_column)
       INTO verdict USING ids, qtys;
    IF verdict.missing IS NOT NULL THEN
        PERFORM integrity._unknown_row(tbl, t.key_column, verdict.missing, 'reserve_stock');
    END IF;
    IF NOT verdict.enough THEN
        RETURN false;
    END IF;
    EXECUTE format($sql$
        UPDATE %1$s r SET %2$I = r.%2$I + w.q
          FROM (SELECT w.k::%4$s AS k, sum(w.q) AS q FROM unnest($1, $2) AS w(k, q) GROUP BY 1) w
         WHERE r.%3$I = w.k
        $sql$, tbl, t.reserved_column, t.key_column, t.key_type)
       USING ids, qtys;
    -- A BEFORE UPDATE trigger of the table's own can skip a row (RETURN NULL):
    -- then nothing is reserved, as the error rolls the other rows back.
    GET DIAGNOSTICS updated = ROW_COUNT;
    wanted := (SELECT count(DISTINCT k) FROM unnest(ids) AS k);
    IF updated <> wanted THEN
        RAISE EXCEPTION 'reserve_stock: a trigger on table "%" skipped % of the % rows to reserve', tbl,
                        wanted - updated, wanted
            USING ERRCODE = 'triggered_data_change_violation',
                  DETAIL = 'Nothing was reserved: a reservation of several rows is all or nothing.',
                  HINT = format('Check the BEFORE UPDATE triggers of %s that can return NULL.', tbl);
    END IF;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION integrity.reserve_stock(regclass, anyarray, numeric[]) IS
    'Reserves qtys[i] of row ids[i] for every i, or nothing: true when all were reserved, false when any lacks stock. Locks rows in key order.';
