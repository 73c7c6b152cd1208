-- 51_totals_direct: the update of a maintained total without SPI
-- (direct_update.rs) gives what the SPI UPDATE gives, for every total type, a
-- NULL total, a composite key, the target's CHECK constraint, its AFTER row
-- triggers, a skipping BEFORE trigger, a statement that writes the target row
-- itself and a target trigger that writes the source.  Each case runs on twin
-- tables: 'direct' takes the direct path, 'spi' has a statement-level UPDATE
-- trigger, which the direct path would not fire, so its totals take the SPI
-- UPDATE.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE FUNCTION make_twin(suffix text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE format('CREATE TABLE %I (region text, id integer, n8 bigint DEFAULT 0, n4 integer DEFAULT 0,'
                   ' n2 smallint DEFAULT 0, total numeric(12,2) DEFAULT 0, maybe bigint, note text,'
                   ' PRIMARY KEY (region, id),'
                   ' CONSTRAINT n8_below_1000 CHECK (n8 < 1000))', 'stock_' || suffix);
    EXECUTE format('CREATE TABLE %I (id serial PRIMARY KEY, region text, stock_id integer, k smallint,'
                   ' amount numeric(12,2))', 'piece_' || suffix);
    PERFORM integrity.maintain_total(('stock_' || suffix)::regclass, 'n8', ('piece_' || suffix)::regclass,
                                     ARRAY['region', 'stock_id'], 'k');
    PERFORM integrity.maintain_total(('stock_' || suffix)::regclass, 'n4', ('piece_' || suffix)::regclass,
                                     ARRAY['region', 'stock_id'], 'k');
    PERFORM integrity.maintain_total(('stock_' || suffix)::regclass, 'n2', ('piece_' || suffix)::regclass,
                                     ARRAY['region', 'stock_id']);
    PERFORM integrity.maintain_total(('stock_' || suffix)::regclass, 'total', ('piece_' || suffix)::regclass,
                                     ARRAY['region', 'stock_id'], 'amount');
    PERFORM integrity.maintain_total(('stock_' || suffix)::regclass, 'maybe', ('piece_' || suffix)::regclass,
                                     ARRAY['region', 'stock_id'], 'k');
    EXECUTE format('INSERT INTO %I (region, id) VALUES (''north'', 1), (''north'', 2), (''south'', 1)', 'stock_' || suffix);
    -- A NULL total stays NULL (NULL + delta), as the UPDATE leaves it.
    SET session_replication_role = replica;
    EXECUTE format('UPDATE %I SET maybe = NULL', 'stock_' || suffix);
    RESET session_replication_role;
END $f$;
SELECT make_twin('direct'), make_twin('spi');
CREATE FUNCTION statement_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER sql_path AFTER UPDATE ON stock_spi FOR EACH STATEMENT EXECUTE FUNCTION statement_noop();

-- An AFTER row trigger on the direct twin reports the changes of n8 it sees.
CREATE FUNCTION count_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.n8 IS DISTINCT FROM NEW.n8 THEN
        RAISE NOTICE '% %/%: n8 % -> %', TG_TABLE_NAME, NEW.region, NEW.id, OLD.n8, NEW.n8;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER touch AFTER UPDATE ON stock_direct FOR EACH ROW EXECUTE FUNCTION count_touch();

-- The statement on the 'direct' twin, then on the 'spi' twin ($t is the
-- pieces, $s the stock): 'ok' or the error's SQLSTATE, message and constraint.
CREATE FUNCTION run_both(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE
    e record;
    state text;
    message text;
    constraint_name text;
BEGIN
    FOR e IN SELECT * FROM (VALUES ('direct'), ('spi')) v(suffix) LOOP
        BEGIN
            EXECUTE replace(replace(statement, '$t', 'piece_' || e.suffix), '$s', 'stock_' || e.suffix);
            RETURN NEXT e.suffix || ': ok';
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                                    constraint_name = CONSTRAINT_NAME;
            RETURN NEXT e.suffix || ': ' || state || ' ' || replace(message, e.suffix, '*')
                        || coalesce(' [' || nullif(constraint_name, '') || ']', '');
        END;
    END LOOP;
END $f$;

\set QUIET on
SELECT run_both($$INSERT INTO $t (region, stock_id, k, amount) VALUES ('north', 1, 5, 1.25), ('north', 2, 7, 0.10), ('south', 1, 1, 2.00), ('north', 1, 2, 0.01)$$);
SELECT run_both($$UPDATE $t SET stock_id = 3 - stock_id WHERE region = 'north'$$);
SELECT run_both($$UPDATE $t SET amount = amount * 3, k = k + 1$$);
SELECT run_both($$DELETE FROM $t WHERE region = 'south'$$);
-- The CHECK constraint of the stock refuses with its name; nothing changes.
SELECT run_both($$INSERT INTO $t (region, stock_id, k, amount) VALUES ('north', 1, 995, 0)$$);
-- smallint overflow of the count is the cast's error, as in the UPDATE.
SELECT run_both($$INSERT INTO $t (region, stock_id, k, amount) SELECT 'north', 2, 0, 0 FROM generate_series(1, 32768)$$);
\set QUIET off

SELECT 'direct' AS path, * FROM stock_direct UNION ALL SELECT 'spi', * FROM stock_spi ORDER BY region, id, path;
SELECT count(*) AS differences FROM stock_direct s FULL JOIN stock_spi t USING (region, id)
 WHERE (s.n8, s.n4, s.n2, s.total, s.maybe) IS DISTINCT FROM (t.n8, t.n4, t.n2, t.total, t.maybe);
-- violations() lists the NULL totals set behind the guard's back, on both.
SELECT count(*) AS violations FROM integrity.violations();

-- A BEFORE UPDATE trigger that skips the stock's update: 27000 on both paths.
CREATE FUNCTION skip_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER skip BEFORE UPDATE ON stock_direct FOR EACH ROW EXECUTE FUNCTION skip_update();
CREATE TRIGGER skip BEFORE UPDATE ON stock_spi FOR EACH ROW EXECUTE FUNCTION skip_update();
SELECT left(r, strpos(r, ' a trigger')) FROM run_both($$INSERT INTO $t (region, stock_id, k, amount) VALUES ('north', 1, 1, 0)$$) r;
DROP TRIGGER skip ON stock_direct;
DROP TRIGGER skip ON stock_spi;

-- One statement that writes the stock row (another column) and inserts a
-- piece of it: the total's update finds the row the statement wrote.
SELECT run_both($$WITH s AS (UPDATE $s SET note = 'counted' WHERE region = 'north' AND id = 2 RETURNING region, id)
                  INSERT INTO $t (region, stock_id, k, amount) SELECT region, id, 4, 0.50 FROM s$$);
-- An AFTER trigger of the stock that writes its pieces (one piece taken
-- back once n8 passes 20): the nested total's update of the same row.
CREATE FUNCTION give_back() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF OLD.n8 <= 20 AND NEW.n8 > 20 THEN
        EXECUTE format('INSERT INTO %I (region, stock_id, k, amount) VALUES ($1, $2, -5, 0)',
                       replace(TG_TABLE_NAME, 'stock_', 'piece_'))
          USING NEW.region, NEW.id;
    END IF;
    RETURN NULL;
END $f$;
CREATE TRIGGER give_back AFTER UPDATE ON stock_direct FOR EACH ROW EXECUTE FUNCTION give_back();
CREATE TRIGGER give_back AFTER UPDATE ON stock_spi FOR EACH ROW EXECUTE FUNCTION give_back();
SELECT run_both($$INSERT INTO $t (region, stock_id, k, amount) VALUES ('north', 1, 30, 0), ('north', 2, 1, 0)$$);
DROP TRIGGER give_back ON stock_direct;
DROP TRIGGER give_back ON stock_spi;
-- The same as a BEFORE trigger: the nested update writes the row the outer
-- update is writing, which the UPDATE refuses (27000) on both paths (a
-- user's BEFORE trigger sends the direct path's targets to the SPI UPDATE).
CREATE OR REPLACE FUNCTION give_back() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF OLD.n8 <= 60 AND NEW.n8 > 60 THEN
        EXECUTE format('INSERT INTO %I (region, stock_id, k, amount) VALUES ($1, $2, -5, 0)',
                       replace(TG_TABLE_NAME, 'stock_', 'piece_'))
          USING NEW.region, NEW.id;
    END IF;
    RETURN NEW;
END $f$;
CREATE TRIGGER give_back BEFORE UPDATE ON stock_direct FOR EACH ROW EXECUTE FUNCTION give_back();
CREATE TRIGGER give_back BEFORE UPDATE ON stock_spi FOR EACH ROW EXECUTE FUNCTION give_back();
SELECT run_both($$INSERT INTO $t (region, stock_id, k, amount) VALUES ('north', 1, 40, 0)$$);
DROP TRIGGER give_back ON stock_direct;
DROP TRIGGER give_back ON stock_spi;
SELECT count(*) AS differences FROM stock_direct s FULL JOIN stock_spi t USING (region, id)
 WHERE (s.n8, s.n4, s.n2, s.total, s.maybe, s.note) IS DISTINCT FROM (t.n8, t.n4, t.n2, t.total, t.maybe, t.note);
SELECT region, id, n8, n4, n2, total FROM stock_direct ORDER BY region, id;

-- Row-level security on the stock: the direct path leaves it to SPI (the
-- superuser running this bypasses the policies either way).
ALTER TABLE stock_direct ENABLE ROW LEVEL SECURITY;
SELECT run_both($$INSERT INTO $t (region, stock_id, k, amount) VALUES ('north', 1, 1, 0)$$);
SELECT count(*) AS differences FROM stock_direct s FULL JOIN stock_spi t USING (region, id)
 WHERE (s.n8, s.n4, s.n2, s.total, s.maybe) IS DISTINCT FROM (t.n8, t.n4, t.n2, t.total, t.maybe);

\ir common/teardown.sql
