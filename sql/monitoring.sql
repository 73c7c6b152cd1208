-- Monitoring: refused writes counted across rollbacks (src/refusals.rs, with
-- pg_integrity in shared_preload_libraries; LISTEN integrity_refusals is fed
-- by src/notifier.rs), and the nightly check recorded (record_check(), made to
-- be scheduled with pg_cron; read by the postgres_exporter queries in
-- docs/monitoring/).  The counters are compiled: _refusal_counters() and
-- reset_refusals() are declared in sql/compiled_functions.sql.

CREATE VIEW integrity.refusals AS
SELECT c.table_oid::pg_catalog.regclass AS table_name, c.guard, c.sqlstate, c.refusals, c.first_at, c.last_at,
       c.last_role::name AS last_role, c.last_detail
  FROM integrity._refusal_counters() c;
COMMENT ON VIEW integrity.refusals IS
    'Refused writes of this database since the last reset, counted in shared memory across sessions and rollbacks: one row per table, guard and SQLSTATE, with the first and last time, the role and the DETAIL of the last refusal. Empty unless pg_integrity is in shared_preload_libraries (health() says so).';
GRANT SELECT ON integrity.refusals TO PUBLIC;

REVOKE EXECUTE ON FUNCTION integrity.reset_refusals() FROM PUBLIC;

-- The recorded checks: one row per record_check() run, and its violations per
-- table and guard.  Table names are text: a run outlives the tables it saw.
CREATE SEQUENCE integrity.check_runs_run_id_seq;

CREATE TABLE integrity.check_runs (
    run_id          bigint      NOT NULL DEFAULT pg_catalog.nextval('integrity.check_runs_run_id_seq') PRIMARY KEY,
    run_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    violations      bigint      NOT NULL,
    health_errors   integer     NOT NULL,
    health_warnings integer     NOT NULL,
    health_info     integer     NOT NULL,
    -- health() as it was: [{"severity", "table", "guard", "problem"}, ...]
    health_problems jsonb       NOT NULL
);
ALTER SEQUENCE integrity.check_runs_run_id_seq OWNED BY integrity.check_runs.run_id;
CREATE INDEX check_runs_run_at ON integrity.check_runs (run_at);
COMMENT ON TABLE integrity.check_runs IS
    'pg_integrity: one row per integrity.record_check() run: violations() and health() summed up.';

CREATE TABLE integrity.check_violations (
    run_id     bigint NOT NULL REFERENCES integrity.check_runs ON DELETE CASCADE,
    table_name text   NOT NULL,
    guard      text   NOT NULL,
    violations bigint NOT NULL,
    PRIMARY KEY (run_id, table_name, guard)
);
COMMENT ON TABLE integrity.check_violations IS
    'pg_integrity: the violations() rows of an integrity.record_check() run, counted per table and guard.';

REVOKE ALL ON integrity.check_runs, integrity.check_violations, integrity.check_runs_run_id_seq FROM PUBLIC;
GRANT SELECT ON integrity.check_runs, integrity.check_violations TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('integrity.check_runs', '');
SELECT pg_catalog.pg_extension_config_dump('integrity.check_violations', '');
SELECT pg_catalog.pg_extension_config_dump('integrity.check_runs_run_id_seq', '');

-- PL/pgSQL: violations() and health() are created after this file.
CREATE FUNCTION integrity.record_check(keep interval DEFAULT interval '90 days')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    run bigint;
BEGIN
    IF keep IS NULL OR keep < interval '0' THEN
        RAISE EXCEPTION 'record_check: argument "keep" must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO integrity.check_runs (violations, health_errors, health_warnings, health_info, health_problems)
    SELECT 0, count(*) FILTER (WHERE h.severity = 'error'), count(*) FILTER (WHERE h.severity = 'warning'),
           count(*) FILTER (WHERE h.severity = 'info'),
           coalesce(jsonb_agg(jsonb_build_object('severity', h.severity, 'table', h.table_name::text,
                                                 'guard', h.guard, 'problem', h.problem)), '[]')
      FROM integrity.health() h
    RETURNING run_id INTO run;
    INSERT INTO integrity.check_violations (run_id, table_name, guard, violations)
    SELECT run, v.table_name::text, v.guard, count(*)
      FROM integrity.violations() v
     GROUP BY v.table_name::text, v.guard;
    UPDATE integrity.check_runs
       SET violations = (SELECT coalesce(sum(cv.violations), 0) FROM integrity.check_violations cv WHERE cv.run_id = run)
     WHERE run_id = run;
    DELETE FROM integrity.check_runs WHERE run_at < now() - keep AND run_id <> run;
    RETURN run;
END
$$;
COMMENT ON FUNCTION integrity.record_check(interval) IS
    'Runs violations() and health() and records one summary (integrity.check_runs, integrity.check_violations); deletes the runs older than "keep". Returns the run id. Schedule it with pg_cron: SELECT cron.schedule(''0 2 * * *'', ''SELECT integrity.record_check()'').';
REVOKE EXECUTE ON FUNCTION integrity.record_check(interval) FROM PUBLIC;

-- The latest run, per table and guard and per severity: what the
-- postgres_exporter queries read.
CREATE VIEW integrity.latest_check AS
SELECT r.run_id, r.run_at, r.violations, r.health_errors, r.health_warnings, r.health_info
  FROM integrity.check_runs r
 ORDER BY r.run_id DESC
 LIMIT 1;
COMMENT ON VIEW integrity.latest_check IS 'The latest integrity.record_check() run.';
GRANT SELECT ON integrity.latest_check TO PUBLIC;
