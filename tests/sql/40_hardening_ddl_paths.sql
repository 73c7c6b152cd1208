-- 40_hardening_ddl_paths: the event trigger used to look only at CREATE TABLE
-- and ALTER TABLE.  A partition created inside CREATE SCHEMA got no TRUNCATE
-- guard, and ALTER TYPE … RENAME ATTRIBUTE … CASCADE renamed a guarded column
-- of a typed table unopposed.  Both are covered now.  (CREATE TABLE … AS,
-- SELECT INTO and IMPORT FOREIGN SCHEMA create tables that can be neither
-- partitions nor inheritance children: nothing to guard.)
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE ddlp_ledger (id int NOT NULL, booked date NOT NULL, amount numeric NOT NULL) PARTITION BY RANGE (booked);
SELECT integrity.protect_append_only('ddlp_ledger');
CREATE SCHEMA ddl_archive
    CREATE TABLE ddlp_ledger_2026_10 PARTITION OF public.ddlp_ledger FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
INSERT INTO ddlp_ledger VALUES (1, '2026-10-15', 5);
SELECT tgname, tgenabled FROM pg_trigger
 WHERE tgrelid = 'ddl_archive.ddlp_ledger_2026_10'::regclass AND tgname LIKE 'integrity%' ORDER BY 1;
SELECT sqlstate, message FROM expect_error($$TRUNCATE ddl_archive.ddlp_ledger_2026_10$$);
-- (no primary key: a warning, and the only problem)
SELECT severity, problem FROM integrity.health() WHERE table_name = 'ddlp_ledger'::regclass;

-- A foreign partition: a foreign table cannot have the TRUNCATE guard, so it
-- cannot be a partition of an append-only table.
CREATE EXTENSION IF NOT EXISTS file_fdw;
CREATE SERVER ddlp_files FOREIGN DATA WRAPPER file_fdw;
SELECT sqlstate, message FROM expect_error($$
    CREATE FOREIGN TABLE ddlp_ledger_2026_09 PARTITION OF ddlp_ledger FOR VALUES FROM ('2026-09-01') TO ('2026-10-01')
        SERVER ddlp_files OPTIONS (filename '/dev/null')$$);
SELECT count(*) AS partitions FROM pg_inherits WHERE inhparent = 'ddlp_ledger'::regclass;
DROP SERVER ddlp_files;
DROP EXTENSION file_fdw;

-- Typed tables: renaming the type's attribute renames the table's column.
CREATE TYPE ddl_piece AS (id int, created_by int);
CREATE TABLE ddl_pieces OF ddl_piece (PRIMARY KEY (id));
INSERT INTO ddl_pieces VALUES (1, 7);
SELECT integrity.protect_immutable('ddl_pieces', ARRAY['created_by']);
SELECT sqlstate, message FROM expect_error($$ALTER TYPE ddl_piece RENAME ATTRIBUTE created_by TO made_by CASCADE$$);
SELECT sqlstate, message FROM expect_error($$ALTER TYPE ddl_piece DROP ATTRIBUTE created_by CASCADE$$);
SELECT attname FROM pg_attribute WHERE attrelid = 'ddl_pieces'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum;
-- Other attributes stay free to change.
ALTER TYPE ddl_piece ADD ATTRIBUTE note text CASCADE;
ALTER TYPE ddl_piece RENAME ATTRIBUTE note TO remark CASCADE;

SELECT integrity.unprotect('ddlp_ledger', 'append_only');
DROP SCHEMA ddl_archive CASCADE;
DROP TABLE ddlp_ledger, ddl_pieces;
DROP TYPE ddl_piece;

\ir common/teardown.sql
