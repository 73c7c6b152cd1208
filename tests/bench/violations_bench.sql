-- violations() against the equivalent hand-written query (`make bench`
-- target: within 1.2x on 10M rows).
--
--   psql -X -q -v ON_ERROR_STOP=1 -v rows=10000000 -v reps=5 -d <db> -f tests/bench/violations_bench.sql
--
-- psql variables: rows (default 10000000), reps (default 5).  Needs the
-- extension installed in the database (CREATE EXTENSION pg_integrity).
--
-- The table is the inventory guide's spare pieces with stock columns: two
-- immutable columns, a version and a stock/reserved pair, seven rules in all
-- (immutable x2, versioning, stock x3 - the write-once column has no row
-- rule).  One row in 100,000 breaks one rule.  Both sides return the same
-- rows: one per broken rule, with the row's key and a detail; the
-- hand-written query is the lean single-scan form a DBA would write, and a
-- per-rule UNION ALL (one scan per rule, as validation scripts usually are)
-- is timed for reference.  Timings are the median of reps runs, taken
-- round-robin, with a warm cache.  The last line is machine-readable:
--   violations_ratio <violations median / hand-written median>
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
\if :{?rows}
\else
\set rows 10000000
\endif
\if :{?reps}
\else
\set reps 5
\endif

\o /dev/null
DROP TABLE IF EXISTS vbench_pieces;
CREATE TABLE vbench_pieces (
    id                        bigint PRIMARY KEY,
    created_by_transaction_id uuid,
    original_stock_id         bigint,
    deleted_by_transaction_id uuid,
    status                    text NOT NULL,
    stock                     int,
    reserved_stock            int,
    version                   int
);
INSERT INTO vbench_pieces
SELECT i,
       CASE WHEN i % 100000 = 1 THEN NULL ELSE md5(i::text)::uuid END,
       CASE WHEN i % 100000 = 2 THEN NULL ELSE i / 10 END,
       NULL,
       'AVAILABLE',
       CASE WHEN i % 100000 = 3 THEN -1 ELSE 100 END,
       CASE WHEN i % 100000 = 4 THEN 101 ELSE i % 50 END,
       CASE WHEN i % 100000 = 5 THEN 0 WHEN i % 100000 = 6 THEN NULL ELSE 1 + i % 7 END
  FROM generate_series(1, :rows) AS i;
VACUUM (ANALYZE) vbench_pieces;
SELECT integrity.protect_immutable('vbench_pieces', ARRAY['created_by_transaction_id', 'original_stock_id']);
SELECT integrity.protect_write_once('vbench_pieces', ARRAY['deleted_by_transaction_id']);
SELECT integrity.enable_versioning('vbench_pieces');
SELECT integrity.guard_stock('vbench_pieces');

-- The statements timed: each returns one row per broken rule (guard, key,
-- detail), which the timer discards, as bench_timed() in setup.sql does.
CREATE TEMP TABLE vbench_queries (variant text PRIMARY KEY, ord int, sql text);
INSERT INTO vbench_queries VALUES
  ('violations', 1, $q$SELECT * FROM integrity.violations('vbench_pieces')$q$),
  ('hand_written', 2, $q$
SELECT v.guard, jsonb_build_object('id', t.id) AS row_key, v.detail
  FROM vbench_pieces t
 CROSS JOIN LATERAL (VALUES
        ('immutable',  t.created_by_transaction_id IS NULL, 'created_by_transaction_id is NULL'),
        ('immutable',  t.original_stock_id IS NULL,         'original_stock_id is NULL'),
        ('versioning', t.version IS NULL OR t.version < 1,  'version is ' || coalesce(t.version::text, 'NULL')),
        ('stock',      t.stock < 0,                         'stock is ' || t.stock),
        ('stock',      t.reserved_stock < 0,                'reserved_stock is ' || t.reserved_stock),
        ('stock',      t.reserved_stock > t.stock,          'reserved_stock exceeds stock')) AS v(guard, broken, detail)
 WHERE (t.created_by_transaction_id IS NULL OR t.original_stock_id IS NULL
        OR t.version IS NULL OR t.version < 1
        OR t.stock < 0 OR t.reserved_stock < 0 OR t.reserved_stock > t.stock)
   AND v.broken$q$),
  ('hand_written_per_rule', 3, $q$
SELECT 'immutable', jsonb_build_object('id', id), 'created_by_transaction_id is NULL' FROM vbench_pieces WHERE created_by_transaction_id IS NULL
UNION ALL SELECT 'immutable', jsonb_build_object('id', id), 'original_stock_id is NULL' FROM vbench_pieces WHERE original_stock_id IS NULL
UNION ALL SELECT 'versioning', jsonb_build_object('id', id), 'version is ' || coalesce(version::text, 'NULL') FROM vbench_pieces WHERE version IS NULL OR version < 1
UNION ALL SELECT 'stock', jsonb_build_object('id', id), 'stock is ' || stock FROM vbench_pieces WHERE stock < 0
UNION ALL SELECT 'stock', jsonb_build_object('id', id), 'reserved_stock is ' || reserved_stock FROM vbench_pieces WHERE reserved_stock < 0
UNION ALL SELECT 'stock', jsonb_build_object('id', id), 'reserved_stock exceeds stock' FROM vbench_pieces WHERE reserved_stock > stock$q$);
CREATE TEMP TABLE vbench_results (variant text, rep int, seconds float8);
CREATE TEMP TABLE vbench_found (variant text, found bigint);

CREATE FUNCTION pg_temp.vbench_run(reps int)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q record;
    started timestamptz;
    n bigint;
BEGIN
    -- untimed: what each variant finds (and a warm cache)
    FOR q IN SELECT * FROM vbench_queries ORDER BY ord LOOP
        EXECUTE format('SELECT count(*) FROM (%s) s', q.sql) INTO n;
        INSERT INTO vbench_found VALUES (q.variant, n);
    END LOOP;
    -- timed: round-robin, the order rotating from round to round
    FOR rep IN 1 .. reps LOOP
        FOR q IN SELECT * FROM vbench_queries ORDER BY (ord + rep) % 3 LOOP
            started := clock_timestamp();
            EXECUTE q.sql;
            INSERT INTO vbench_results VALUES (q.variant, rep, extract(epoch FROM clock_timestamp() - started));
        END LOOP;
    END LOOP;
END;
$$;
SELECT pg_temp.vbench_run(:reps);
\o

\echo
\echo == violations() vs hand-written, :rows rows, :reps rounds (median seconds)
SELECT variant, min(f.found) AS rows_found,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)::numeric, 3) AS median_s,
       round(min(seconds)::numeric, 3) AS min_s, round(max(seconds)::numeric, 3) AS max_s
  FROM vbench_results r JOIN vbench_queries q USING (variant) JOIN vbench_found f USING (variant)
 GROUP BY variant, q.ord ORDER BY q.ord;
\pset tuples_only on
\pset format unaligned
SELECT 'violations_ratio ' || round((
         (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FROM vbench_results WHERE variant = 'violations')
       / (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FROM vbench_results WHERE variant = 'hand_written')
       )::numeric, 3);
\pset tuples_only off
\pset format aligned
\if :{?keep}
\else
DROP TABLE vbench_pieces;
\endif
