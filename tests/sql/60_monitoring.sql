-- 60_monitoring: refused writes are counted in shared memory (the suite's
-- cluster preloads pg_integrity), across rollbacks and savepoints; the
-- counters are reset by superusers and granted roles only; record_check()
-- keeps a history of violations() and health().
\ir common/setup.sql
\set VERBOSITY terse
SELECT integrity.reset_refusals();
SELECT count(*) AS counters FROM integrity.refusals;
-- With the preload, health() has nothing to say about counting.
SELECT count(*) AS counting_problems FROM integrity.health() WHERE problem LIKE '%refused writes%';

CREATE TABLE mon_ledger (id int PRIMARY KEY, amount int NOT NULL);
INSERT INTO mon_ledger VALUES (1, 10), (2, 20);
SELECT integrity.protect_append_only('mon_ledger');
CREATE TABLE mon_stock (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL DEFAULT 0,
                        version int NOT NULL DEFAULT 1, created_by int NOT NULL);
INSERT INTO mon_stock (id, stock, created_by) VALUES (1, 5, 7);
SELECT integrity.guard_stock('mon_stock');
SELECT integrity.enable_versioning('mon_stock');
SELECT integrity.protect_immutable('mon_stock', ARRAY['created_by']);

-- Refused writes in a transaction that rolls back, in a savepoint, and in
-- autocommit: every one is counted.
BEGIN;
UPDATE mon_ledger SET amount = 0 WHERE id = 1;
ROLLBACK;
BEGIN;
SAVEPOINT s;
DELETE FROM mon_ledger WHERE id = 2;
ROLLBACK TO SAVEPOINT s;
DELETE FROM mon_ledger WHERE id = 2;
ROLLBACK;
UPDATE mon_ledger SET amount = 0;
TRUNCATE mon_ledger;
UPDATE mon_stock SET stock = -1;
UPDATE mon_stock SET reserved_stock = 9;
UPDATE mon_stock SET version = 7;
UPDATE mon_stock SET created_by = 8;
SELECT integrity.reserve_stock('mon_stock', 1, 0);
-- Allowed writes are not counted.
INSERT INTO mon_ledger VALUES (3, 30);
UPDATE mon_stock SET stock = 6;

SELECT table_name, guard, sqlstate, refusals, first_at <= last_at AS ordered, last_role, last_detail
  FROM integrity.refusals ORDER BY table_name::text, guard, sqlstate;

-- The last role and DETAIL are the last refusal's.
CREATE ROLE mon_clerk;
GRANT SELECT, UPDATE ON mon_ledger TO mon_clerk;
SET ROLE mon_clerk;
UPDATE mon_ledger SET amount = 1 WHERE id = 2;
-- Anyone may read the counters; only superusers and granted roles reset them.
SELECT table_name, refusals, last_role, last_detail FROM integrity.refusals WHERE guard = 'append_only' AND sqlstate = '23001';
SELECT integrity.reset_refusals();
RESET ROLE;
GRANT EXECUTE ON FUNCTION integrity.reset_refusals() TO mon_clerk;
SET ROLE mon_clerk;
SELECT integrity.reset_refusals();
RESET ROLE;
SELECT count(*) AS counters_after_reset FROM integrity.refusals;

-- record_check(): one run per call, its violations per table and guard, and
-- health() by severity.  Legacy rows that break a rule registered later are
-- violations.
CREATE TABLE mon_legacy (id int PRIMARY KEY, stock int NOT NULL, reserved_stock int NOT NULL);
INSERT INTO mon_legacy VALUES (1, -3, 0), (2, 4, 9), (3, 1, 0);
SELECT integrity.guard_stock('mon_legacy');
SELECT integrity.record_check() > 0 AS first_run;
-- (The run is compared with violations() and health(), not with fixed
-- counts, so that it holds in a database with other tables too.)
SELECT r.violations = (SELECT count(*) FROM integrity.violations()) AS violations_counted,
       r.violations = (SELECT sum(v.violations) FROM integrity.check_violations v WHERE v.run_id = r.run_id) AS per_table_adds_up,
       r.health_errors = (SELECT count(*) FROM integrity.health() WHERE severity = 'error') AS errors_counted,
       r.health_warnings = (SELECT count(*) FROM integrity.health() WHERE severity = 'warning') AS warnings_counted,
       r.health_info = (SELECT count(*) FROM integrity.health() WHERE severity = 'info') AS info_counted,
       jsonb_array_length(r.health_problems) = r.health_errors + r.health_warnings + r.health_info AS problems_listed
  FROM integrity.latest_check l JOIN integrity.check_runs r USING (run_id);
SELECT v.table_name, v.guard, v.violations
  FROM integrity.check_violations v JOIN integrity.latest_check l USING (run_id)
 WHERE v.table_name LIKE 'public.mon\_%' ORDER BY 1, 2;
CREATE TEMP TABLE first_run AS SELECT violations FROM integrity.latest_check;
UPDATE mon_legacy SET stock = 9 WHERE id IN (1, 2);
SELECT integrity.record_check() > 0 AS second_run;
SELECT l.violations = f.violations - 3 AS three_fewer,
       NOT EXISTS (SELECT FROM integrity.check_violations v
                    WHERE v.run_id = l.run_id AND v.table_name = 'public.mon_legacy') AS mon_legacy_clean
  FROM integrity.latest_check l, first_run f;
SELECT count(*) AS runs FROM integrity.check_runs;
-- Retention: runs older than "keep" go, with their violations; the new one stays.
UPDATE integrity.check_runs SET run_at = run_at - interval '100 days';
SELECT integrity.record_check() > 0 AS third_run;
SELECT count(*) AS runs, count(*) FILTER (WHERE run_at > now() - interval '1 day') AS recent FROM integrity.check_runs;
SELECT count(*) AS orphans FROM integrity.check_violations v
 WHERE NOT EXISTS (SELECT FROM integrity.check_runs r WHERE r.run_id = v.run_id);
SELECT integrity.record_check(NULL);
-- The history is only written through record_check(), which only
-- superusers and granted roles may run; anyone may read it.
SET ROLE mon_clerk;
SELECT integrity.record_check();
INSERT INTO integrity.check_runs (violations, health_errors, health_warnings, health_info, health_problems)
VALUES (0, 0, 0, 0, '[]');
SELECT count(*) > 0 AS readable FROM integrity.latest_check;
RESET ROLE;

-- The history survives pg_dump (pgrx-tests/monitoring.sh restores it).
SELECT c.relname, c.oid = ANY (e.extconfig) AS dumped
  FROM pg_extension e, pg_class c
 WHERE e.extname = 'pg_integrity' AND c.relname IN ('check_runs', 'check_violations', 'check_runs_run_id_seq')
 ORDER BY 1;

SELECT integrity.reset_refusals();
DROP TABLE mon_legacy;
REVOKE ALL ON mon_ledger FROM mon_clerk;
REVOKE EXECUTE ON FUNCTION integrity.reset_refusals() FROM mon_clerk;
DROP ROLE mon_clerk;

\ir common/teardown.sql
