-- verify_chain() against a plain scan of the same table (`make bench` aim:
-- within 2x of `SELECT sum(length(t::text)) FROM t`), and what building a
-- chained ledger with INSERT … SELECT costs.
--
--   psql -X -q -v ON_ERROR_STOP=1 -v rows=10000000 -v reps=5 -d <db> -f tests/bench/chain_bench.sql
--
-- psql variables: rows (default 10000000), reps (default 5).  Needs the
-- extension and tests/bench/setup.sql's bench_drop() in the database.
--
-- The table is guide 000's ledger, hash-chained per retailer-wholesaler
-- account (1,000 chains), filled through the chain trigger.  Timings are the
-- median of reps runs, round-robin, with a warm cache.  The last lines are
-- machine-readable:
--   chain_verify_ratio <verify_chain median / scan median>
--   chain_verify_rows_per_s <rows / verify_chain median>
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
SELECT bench_drop('cbench_ledger');
CREATE TABLE cbench_ledger (
    id            bigint PRIMARY KEY,
    retailer_id   bigint NOT NULL,
    wholesaler_id bigint NOT NULL,
    entry_type    text NOT NULL,
    amount        numeric(14, 2) NOT NULL,
    description   text,
    created_at    timestamptz NOT NULL,
    chain_seq     bigint,
    row_hash      bytea
);
SELECT integrity.enable_hash_chain('cbench_ledger', ARRAY['retailer_id', 'wholesaler_id']);
CREATE TEMP TABLE cbench_build AS
SELECT bench_timed(format($$
    INSERT INTO cbench_ledger (id, retailer_id, wholesaler_id, entry_type, amount, description, created_at)
    SELECT g, 1 + g %% 40, 1 + (g / 40) %% 25, CASE WHEN g %% 3 = 0 THEN 'CREDIT' ELSE 'DEBIT' END,
           (100 + g %% 99900) / 100.0, 'order ' || g, timestamptz '2024-01-01 00:00+00' + g * interval '1 second'
      FROM generate_series(1, %s) g$$, :rows)) AS seconds;
VACUUM (ANALYZE) cbench_ledger;

CREATE TEMP TABLE cbench_queries (ord int, variant text, sql text);
INSERT INTO cbench_queries VALUES
    (1, 'verify_chain', 'SELECT count(*) FROM integrity.verify_chain(''cbench_ledger'')'),
    (2, 'scan',         'SELECT sum(length(t::text)) FROM cbench_ledger t');
CREATE TEMP TABLE cbench_results (variant text, rep int, seconds double precision);
CREATE TEMP TABLE cbench_found (problems bigint);
CREATE FUNCTION pg_temp.cbench_run(reps int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q record;
    started timestamptz;
BEGIN
    INSERT INTO cbench_found SELECT count(*) FROM integrity.verify_chain('cbench_ledger');
    FOR rep IN 1 .. reps LOOP
        FOR q IN SELECT * FROM cbench_queries ORDER BY (ord + rep) % 2 LOOP
            started := clock_timestamp();
            EXECUTE q.sql;
            INSERT INTO cbench_results VALUES (q.variant, rep, extract(epoch FROM clock_timestamp() - started));
        END LOOP;
    END LOOP;
END;
$$;
SELECT pg_temp.cbench_run(:reps);
\o

\echo
\echo == chained ledger of :rows rows, 1000 chains; verify_chain() vs a plain scan, :reps rounds
SELECT 'INSERT … SELECT through the chain trigger' AS what, round(seconds::numeric, 3) AS seconds,
       round((seconds * 1e6 / :rows)::numeric, 3) AS us_per_row
  FROM cbench_build;
SELECT variant, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)::numeric, 3) AS median_s,
       round(min(seconds)::numeric, 3) AS min_s, round(max(seconds)::numeric, 3) AS max_s,
       round(:rows / percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)) AS rows_per_s,
       (SELECT problems FROM cbench_found) AS problems_found
  FROM cbench_results r JOIN cbench_queries q USING (variant)
 GROUP BY variant, q.ord ORDER BY q.ord;
\pset tuples_only on
\pset format unaligned
SELECT 'chain_verify_ratio ' || round((
         (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FROM cbench_results WHERE variant = 'verify_chain')
       / (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FROM cbench_results WHERE variant = 'scan')
       )::numeric, 3);
SELECT 'chain_verify_rows_per_s ' || round(:rows / (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)
                                                      FROM cbench_results WHERE variant = 'verify_chain'));
\pset tuples_only off
\pset format aligned
\o /dev/null
SELECT bench_drop('cbench_ledger');
\o
