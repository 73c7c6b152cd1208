-- 00_setup: install the extension.  Every file of this suite starts from
-- common/setup.sql and ends with common/teardown.sql, so that it can run
-- alone (make test-regress TESTS=NAME) or in the whole suite, in file-name
-- order, with the same output.
\set VERBOSITY default
CREATE EXTENSION pg_integrity;

-- The extension lives in its fixed schema and registers its event triggers.
SELECT extname, extnamespace::regnamespace AS schema, extrelocatable
  FROM pg_extension WHERE extname = 'pg_integrity';
SELECT evtname, evtevent, evtenabled, evttags
  FROM pg_event_trigger WHERE evtname LIKE 'integrity%' ORDER BY evtname;

-- The registry starts empty.
SELECT count(*) AS guards FROM integrity.guards;

-- The helper functions every file uses (expect_error, guard_triggers,
-- all_guard_triggers, pt_triggers) are made by common/setup.sql.
\ir common/setup.sql

-- Helper round trips: a failing statement is reported, a succeeding one raises.
SELECT sqlstate, message FROM expect_error('SELECT 1/0');
SELECT * FROM expect_error('SELECT 1');

\ir common/teardown.sql
