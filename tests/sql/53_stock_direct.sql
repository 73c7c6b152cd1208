-- 53_stock_direct: reserve_stock, release_stock and commit_stock (of one row,
-- and reserve_stock of several) update without SPI (direct_update.rs) where
-- the table allows it, and
-- give what their SQL statements give: the same results (reserve: false
-- when not enough is available), the same refusals (SQLSTATE, message,
-- DETAIL, HINT, constraint, column), the same rows and the same AFTER
-- trigger events.  Each case runs on four twin tables: 'direct' takes the
-- direct path; 'spi' has a statement-level UPDATE trigger, 'rls' row-level
-- security, 'before' a user's BEFORE UPDATE row trigger, all of which the
-- direct path leaves to the statements.  An error raised inside the
-- statement's UPDATE carries its "SQL statement" context, which tells the
-- paths apart: the CHECK violation below shows 'direct' took the direct path.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE SCHEMA stock_direct;
SET search_path = stock_direct, public;

CREATE TABLE events (tbl text, id bigint, old_reserved numeric, new_reserved numeric, old_stock numeric,
                     new_stock numeric, n serial);
CREATE FUNCTION log_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stock_direct.events (tbl, id, old_reserved, new_reserved, old_stock, new_stock)
    VALUES (TG_TABLE_NAME, NEW.id, OLD.reserved, NEW.reserved, OLD.stock, NEW.stock);
    RETURN NULL;
END $$;
CREATE FUNCTION statement_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
-- The user's BEFORE trigger skips the rows named 'skip'.
CREATE FUNCTION skip_named() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN CASE WHEN NEW.name = 'skip' THEN NULL ELSE NEW END;
END $$;

CREATE FUNCTION make_twin(kind text, typ text, suffix text) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    t text := 'st_' || kind || suffix;
BEGIN
    EXECUTE format('CREATE TABLE %I (id bigint PRIMARY KEY, name text, stock %s, reserved %2$s NOT NULL DEFAULT 0,'
                   ' CONSTRAINT reserved_not_13 CHECK (reserved <> 13))', t, typ);
    -- 1-2 fine, 3-4 legacy rows that break the rule (the guard is NOT
    -- VALID), 5 one short of the CHECK's 13, 6 a NULL stock, 7 skipped by
    -- the 'before' twin's trigger; 8 (numeric twins) a NaN stock.
    EXECUTE format('INSERT INTO %I VALUES (1, ''a'', 10, 0), (2, ''b'', 5, 2), (3, ''over-held'', 4, 6),'
                   ' (4, ''negative reservation'', 8, -1), (5, ''twelve'', 20, 12), (6, ''no stock'', NULL, 0),'
                   ' (7, ''skip'', 10, 1)', t);
    IF typ LIKE 'numeric%' THEN
        EXECUTE format('INSERT INTO %I VALUES (8, ''nan stock'', ''NaN'', 1)', t);
    END IF;
    PERFORM integrity.guard_stock(t::regclass, 'stock', 'reserved');
    EXECUTE format('CREATE TRIGGER log AFTER UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION log_update()', t);
    IF kind = 'spi' THEN
        EXECUTE format('CREATE TRIGGER sql_path AFTER UPDATE ON %I FOR EACH STATEMENT'
                       ' EXECUTE FUNCTION statement_noop()', t);
    ELSIF kind = 'rls' THEN
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY everything ON %I USING (true)', t);
    ELSIF kind = 'before' THEN
        EXECUTE format('CREATE TRIGGER skip BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION skip_named()', t);
    END IF;
END $f$;
SELECT make_twin(kind, 'integer', ''), make_twin(kind, 'numeric(10,2)', '_n')
  FROM unnest(ARRAY['direct', 'spi', 'rls', 'before']) kind;

-- Rows and AFTER trigger events (in order) of each twin that differ from
-- the direct twin's, the row the 'before' twin's trigger skips left out.
CREATE FUNCTION twin_differences(suffix text) RETURNS TABLE (twin text, rows bigint, events bigint)
LANGUAGE plpgsql AS $f$
BEGIN
    FOREACH twin IN ARRAY ARRAY['spi', 'rls', 'before'] LOOP
        EXECUTE format('SELECT count(*) FROM stock_direct.%I d FULL JOIN stock_direct.%I t USING (id)'
                       ' WHERE (d.stock, d.reserved) IS DISTINCT FROM (t.stock, t.reserved) AND NOT (%L AND id = 7)',
                       'st_direct' || suffix, 'st_' || twin || suffix, twin = 'before') INTO rows;
        SELECT count(*) INTO events FROM
          (SELECT row_number() OVER (ORDER BY n) AS i, id, old_reserved, new_reserved, old_stock, new_stock
             FROM stock_direct.events WHERE tbl = 'st_direct' || suffix AND NOT (twin = 'before' AND id = 7)) d
          FULL JOIN
          (SELECT row_number() OVER (ORDER BY n) AS i, id, old_reserved, new_reserved, old_stock, new_stock
             FROM stock_direct.events WHERE tbl = 'st_' || twin || suffix) t USING (i)
         WHERE (d.id, d.old_reserved, d.new_reserved, d.old_stock, d.new_stock)
               IS DISTINCT FROM (t.id, t.old_reserved, t.new_reserved, t.old_stock, t.new_stock);
        RETURN NEXT;
    END LOOP;
END $f$;

-- The statement on each twin ($t is the table): its result, or the error's
-- fields; "(in UPDATE)" when the error came from inside the SQL UPDATE.
CREATE FUNCTION on_twins(statement text, suffix text DEFAULT '') RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE
    t text;
    result text;
    state text;
    message text;
    detail text;
    hint text;
    constraint_name text;
    column_name text;
    context text;
BEGIN
    FOREACH t IN ARRAY ARRAY['direct', 'spi', 'rls', 'before'] LOOP
        BEGIN
            EXECUTE replace(statement, '$t', 'stock_direct.st_' || t || suffix) INTO result;
            RETURN NEXT t || ': ' || coalesce(nullif(result, ''), 'ok');
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                    hint = PG_EXCEPTION_HINT, constraint_name = CONSTRAINT_NAME,
                                    column_name = COLUMN_NAME, context = PG_EXCEPTION_CONTEXT;
            RETURN NEXT t || ': ' || state || ' ' || replace(message, 'st_' || t, 'st_*')
                        || coalesce(' | ' || replace(nullif(detail, ''), 'st_' || t, 'st_*'), '')
                        || coalesce(' | ' || replace(nullif(hint, ''), 'st_' || t, 'st_*'), '')
                        || coalesce(' [' || nullif(constraint_name, '') || ']', '')
                        || coalesce(' (column ' || nullif(column_name, '') || ')', '')
                        || CASE WHEN context LIKE '%SQL statement "UPDATE%' THEN ' (in UPDATE)' ELSE '' END;
        END;
    END LOOP;
END $f$;

-- Reserve: enough, exactly what is left, not enough (false), on legacy
-- rows, a NULL stock, no such row, and the quantities the statements refuse.
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 1::bigint, 4)$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 1::bigint, 6)$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 1::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 3::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 4::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 6::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 99::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 2::bigint, q)$$ || ' FROM (VALUES (' || q || ')) v(q)')
  FROM unnest(ARRAY['0', '-1', 'NULL::numeric', '''NaN''::numeric', '''Infinity''::numeric', '1.5', '1.0']) q;
-- An id of another type than the key's: the statements cast it.
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 2, 1)$$);
-- The table's CHECK constraint refuses the new row.
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 5::bigint, 1)$$);
-- A statement trigger created on the direct twin sends it to the statement
-- (the path is read again after the invalidation), and back once dropped.
CREATE TRIGGER sql_path AFTER UPDATE ON st_direct FOR EACH STATEMENT EXECUTE FUNCTION statement_noop();
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 5::bigint, 1)$$);
DROP TRIGGER sql_path ON st_direct;
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 5::bigint, 1)$$);
-- A BEFORE trigger that skips the row (only the 'before' twin has one).
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 7::bigint, 1)$$);

-- Release and commit: within what is reserved, more than that, legacy rows
-- (an over-held row must end valid), a NULL stock, no such row.
SELECT on_twins($$SELECT integrity.release_stock('$t', 1::bigint, 2)$$);
SELECT on_twins($$SELECT integrity.release_stock('$t', 1::bigint, 9)$$);
SELECT on_twins($$SELECT integrity.release_stock('$t', 3::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.release_stock('$t', 3::bigint, 2)$$);
SELECT on_twins($$SELECT integrity.release_stock('$t', 3::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.release_stock('$t', 6::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.release_stock('$t', 99::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.release_stock('$t', 7::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.commit_stock('$t', 1::bigint, 3)$$);
SELECT on_twins($$SELECT integrity.commit_stock('$t', 1::bigint, 9)$$);
SELECT on_twins($$SELECT integrity.commit_stock('$t', 2::bigint, 2)$$);
SELECT on_twins($$SELECT integrity.commit_stock('$t', 3::bigint, 4)$$);
SELECT on_twins($$SELECT integrity.commit_stock('$t', 6::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.commit_stock('$t', 99::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.commit_stock('$t', 1::bigint, 0.5)$$);

-- numeric(10,2) columns: the quantity's decimals are checked against the
-- columns' scale.
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 1::bigint, 2.25)$$, '_n');
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 1::bigint, 2.255)$$, '_n');
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 1::bigint, 2.250)$$, '_n');
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 1::bigint, 5.51)$$, '_n');
SELECT on_twins($$SELECT integrity.release_stock('$t', 1::bigint, 0.5)$$, '_n');
SELECT on_twins($$SELECT integrity.commit_stock('$t', 1::bigint, 1.75)$$, '_n');
SELECT on_twins($$SELECT integrity.commit_stock('$t', 1::bigint, 99.99)$$, '_n');

-- Several calls in one transaction: each sees the previous one's write.
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 2::bigint, 1)::text || integrity.reserve_stock('$t', 2::bigint, 1)::text$$);

-- Several rows, all or nothing: every row is locked in key order (directly
-- on 'direct', by the statements on the others) and checked, then all of
-- them are updated or none, on every twin alike.  Rows 11-12 have room, 13
-- is one short of the CHECK's 13.
SELECT on_twins($$INSERT INTO $t VALUES (11, 'k', 10, 0), (12, 'l', 10, 0), (13, 'twelve too', 20, 12) RETURNING 'inserted'$$);
SELECT on_twins($$INSERT INTO $t VALUES (11, 'k', 10, 0), (12, 'l', 10, 0), (13, 'twelve too', 20, 12) RETURNING 'inserted'$$, '_n');
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[12, 11, 12]::bigint[], ARRAY[1, 1, 1])$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[4, 11]::bigint[], ARRAY[1, 2])$$);
-- Row 13 has 8 available: false, and row 11 keeps what it had.
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[11, 13]::bigint[], ARRAY[1, 9])$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[11, 99]::bigint[], ARRAY[1, 1])$$);
-- Row 13 would reach the CHECK's 13: the error, and row 11 keeps what it had.
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[13, 11]::bigint[], ARRAY[1, 1])$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[11, 12]::bigint[], ARRAY[0.25, 0.5])$$, '_n');
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[11, 12]::bigint[], ARRAY[0.25, 0.125])$$, '_n');
-- The transaction goes on after an error caught in it.
BEGIN;
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[11, 13]::bigint[], ARRAY[1, 1])$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[11]::bigint[], ARRAY[1])$$);
COMMIT;
SELECT 'direct' AS twin, id, stock, reserved FROM st_direct WHERE id > 10
UNION ALL SELECT 'direct_n', id, stock, reserved FROM st_direct_n WHERE id > 10
ORDER BY twin, id;

-- The same rows and the same AFTER trigger events on every twin (the
-- 'before' twin's skipped row 7 apart).
SELECT 'direct' AS twin, id, name, stock, reserved FROM st_direct
UNION ALL SELECT 'direct_n', id, name, stock, reserved FROM st_direct_n
ORDER BY twin, id;
SELECT * FROM twin_differences('');
SELECT * FROM twin_differences('_n');
SELECT tbl, count(*) AS events FROM events GROUP BY 1 ORDER BY 1;

-- A NaN stock (row 8 of the numeric twins) breaks the stock guard's rule,
-- which the direct path proves only for numbers: it leaves the row to the
-- statements, whose UPDATE the guard refuses, of one row and of several
-- alike.
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 8::bigint, 1)$$, '_n');
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[11, 8]::bigint[], ARRAY[1, 1])$$, '_n');
SELECT on_twins($$SELECT integrity.release_stock('$t', 8::bigint, 1)$$, '_n');

-- The direct path does not fire the stock guard's trigger, whose rule its
-- checks prove; a second trigger running the guard's function (here on a
-- cap column) is no rule it checks: the guard's trigger and that one fire.
CREATE TABLE capped (id bigint PRIMARY KEY, stock integer, reserved integer NOT NULL DEFAULT 0, cap integer);
INSERT INTO capped VALUES (1, 10, 0, 2), (2, 10, 0, 2);
SELECT integrity.guard_stock('capped', 'stock', 'reserved');
CREATE TRIGGER cap BEFORE UPDATE ON capped FOR EACH ROW EXECUTE FUNCTION integrity.stock_guard('cap', 'reserved');
SELECT sqlstate, message FROM public.expect_error($$SELECT integrity.reserve_stock('stock_direct.capped', 1::bigint, 3)$$);
SELECT sqlstate, message
  FROM public.expect_error($$SELECT integrity.reserve_stock('stock_direct.capped', ARRAY[1, 2]::bigint[], ARRAY[3, 1])$$);
SELECT integrity.reserve_stock('capped', ARRAY[2, 1]::bigint[], ARRAY[1, 2]), integrity.reserve_stock('capped', 2::bigint, 1);
TABLE capped;
-- Ids that only the statements can take (no cast from uuid to the key's
-- bigint) are refused for that before their NULL is.
SELECT sqlstate, message FROM public.expect_error($$SELECT integrity.reserve_stock('stock_direct.capped', NULL::uuid[], ARRAY[1])$$);
DROP TABLE capped;

-- A read-only transaction: the direct path leaves the write to the statement,
-- which refuses it (25006) on every twin alike.
BEGIN TRANSACTION READ ONLY;
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 1::bigint, 1)$$);
ROLLBACK;

-- The statements resolve their operators in pg_catalog whatever the
-- caller's search_path (the direct path resolves none): operators that
-- would shadow theirs in a schema the caller puts first are not called.
CREATE SCHEMA trap;
CREATE FUNCTION trap.fire_bn(a bigint, b numeric) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trap operator called';
END $$;
CREATE FUNCTION trap.fire_nn(a numeric, b numeric) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trap operator called';
END $$;
CREATE FUNCTION trap.fire_sum(a bigint, b numeric) RETURNS numeric LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trap operator called';
END $$;
CREATE OPERATOR trap.>= (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = trap.fire_bn);
CREATE OPERATOR trap.>= (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = trap.fire_nn);
CREATE OPERATOR trap.+ (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = trap.fire_sum);
SET search_path = trap, pg_catalog, stock_direct;
SELECT sqlstate, message FROM public.expect_error($$SELECT 2::bigint >= 1::numeric$$);
SELECT on_twins($$SELECT integrity.release_stock('$t', 2::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', 2::bigint, 1)$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[12, 11]::bigint[], ARRAY[1, 1])$$);
SELECT on_twins($$SELECT integrity.reserve_stock('$t', ARRAY[2, 13]::bigint[], ARRAY[1, 99])$$);
DROP SCHEMA trap CASCADE;

RESET search_path;
DROP SCHEMA stock_direct CASCADE;
\ir common/teardown.sql
