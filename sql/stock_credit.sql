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
    columns text[] := ARRAY[total_column::text, part_column::text];
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
    PERFORM integrity._record_guard(tbl, guard, columns, '{}');
    -- The recheck fires for exactly the rows that violations() reports.
    PERFORM integrity._place_recheck(tbl, guard,
        format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE ON %s FOR EACH ROW WHEN (%s)'
               ' EXECUTE FUNCTION integrity.%I(%s)',
               'integrity_' || guard || '_recheck', tbl,
               (SELECT string_agg(format('(%s)', r.condition), ' OR ' ORDER BY r.n)
                  FROM integrity._row_rules(guard, columns, typ = 'numeric'::regtype, 'NEW')
                       WITH ORDINALITY AS r(rule_guard, condition, detail, uses, n)),
               guard || '_guard',
               integrity._arguments_sql(integrity._trigger_arguments('integrity_' || guard || '_recheck', columns, '{}'))));
    EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE INSERT OR UPDATE ON %s FOR EACH ROW'
                   ' EXECUTE FUNCTION integrity.%I(%s)',
                   'integrity_' || guard, tbl, guard || '_guard',
                   integrity._arguments_sql(integrity._trigger_arguments('integrity_' || guard, columns, '{}')));
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
    options jsonb;
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

    options := jsonb_build_object('accounts', accounts::text, 'amount_column', amount_column,
                                  'entry_type_column', entry_type_column, 'debit_value', debit_value,
                                  'credit_value', credit_value, 'limit_column', limit_column, 'used_column', used_column);
    PERFORM integrity._record_guard(ledger, 'ledger_credit', keys, options);
    EXECUTE format('CREATE OR REPLACE TRIGGER integrity_ledger_credit AFTER INSERT OR UPDATE OR DELETE ON %s'
                   ' FOR EACH ROW EXECUTE FUNCTION integrity.ledger_credit_guard(%s)',
                   ledger, integrity._arguments_sql(integrity._trigger_arguments('integrity_ledger_credit', keys, options)));
    PERFORM integrity._set_trigger_modes(ledger);
END;
$$;
COMMENT ON FUNCTION integrity.guard_ledger_credit(regclass, regclass, text[], name, name, text, text, name, name) IS
    'Each ledger entry moves its account''s used credit (DEBIT up, CREDIT down) atomically; refused (23514) above the limit or below zero.';

------------------------------------------------------------------------------
-- Stock operations: reserve_stock (of one row or several), release_stock and
-- commit_stock, and _stock_target (a table's stock guard, as they read it),
-- are compiled (src/stock_operations.rs; declared in compiled_functions.sql).
-- Each is one statement on the row (or, for several rows, a lock of all of
-- them in key order first), so concurrent callers queue on the row lock and
-- each decides on the latest committed row: never oversold.
