-- 21_schema_diff: integrity.schema_diff() and integrity.assert_schema()
-- against the manifest of the financial / trading / tagging layout of
-- common/schema_layout.sql, on the clean database and after deliberate
-- breakage.  Each broken state is built in a transaction that is rolled back.
\ir common/setup.sql
\set VERBOSITY default

\ir common/schema_layout.sql

-- Clean: no difference, assert_schema returns silently.
SELECT count(*) AS differences
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d WHERE m.name = 'clean';
SELECT integrity.assert_schema(manifest) FROM public.sp_manifests WHERE name = 'clean';
-- A manifest compared with itself through jsonb text (as read from schema.json).
SELECT count(*) AS differences
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest::text::jsonb) d WHERE m.name = 'clean';

-- Six deliberate changes: a dropped index, a changed column type, an added
-- column, a disabled trigger, a constraint added NOT VALID, an unregistered guard.
BEGIN;
DROP INDEX trading.idx_orders_status_created;
ALTER TABLE financial.credit_accounts ALTER COLUMN credit_limit TYPE numeric(16, 2);
ALTER TABLE tagging.tags ADD COLUMN color text;
ALTER TABLE trading.orders DISABLE TRIGGER orders_touch_updated_at;
ALTER TABLE trading.wholesaler_products ADD CONSTRAINT check_sku_not_blank CHECK (sku <> '') NOT VALID;
SELECT integrity.unprotect('trading.sprinkler_spare_pieces', 'write_once');
-- One row per difference, in a fixed order (schema, table, kind, name); a
-- changed object shows only the attributes that differ.
SELECT d.object_kind, d.object_name, d.change, d.expected, d.actual
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d WHERE m.name = 'clean';
-- The whole object is shown when it is missing or unexpected.
SELECT d.object_kind, d.object_name, d.change, jsonb_pretty(coalesce(d.expected, d.actual)) AS object
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d
 WHERE m.name = 'clean' AND d.change <> 'changed' AND d.object_kind IN ('index', 'constraint', 'guard');
-- assert_schema raises 55000 with every difference, one per DETAIL line.
SELECT sqlstate, message, detail, hint
  FROM public.sp_manifests m,
       expect_error(format('SELECT integrity.assert_schema(%L)', m.manifest)) e
 WHERE m.name = 'clean';
-- Narrowed to one schema, only that schema's differences are listed.
SELECT d.object_kind, d.object_name, d.change
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest, '{tagging}') d WHERE m.name = 'clean';
ROLLBACK;

SELECT count(*) AS differences_after_rollback
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d WHERE m.name = 'clean';

-- Trigger firing modes, guard options, defaults, nullability, partitions.
BEGIN;
ALTER TABLE trading.orders ENABLE ALWAYS TRIGGER orders_touch_updated_at;
SELECT integrity.protect_append_only('financial.ledger_entries', allow_truncate => true);
ALTER TABLE trading.wholesaler_products ALTER COLUMN stock SET DEFAULT 10;
ALTER TABLE tagging.tags ALTER COLUMN deleted_at SET NOT NULL;
SELECT d.object_kind, d.object_name, d.change, d.expected, d.actual
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d WHERE m.name = 'clean';
ROLLBACK;
-- A detached partition: no parent, no bound, its constraints no longer
-- inherited, the cloned row trigger gone (its TRUNCATE trigger stays).  The
-- append-only guard refuses the DETACH: its event trigger is disabled for it.
BEGIN;
ALTER EVENT TRIGGER integrity_ddl_command_start DISABLE;
ALTER TABLE financial.ledger_entries DETACH PARTITION financial.ledger_entries_2026_10;
SELECT d.object_kind, d.object_name, d.change, d.expected, d.actual
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d WHERE m.name = 'clean';
ROLLBACK;

-- Index definitions and predicates: a soft-delete index that lost its
-- WHERE clause, and a unique index that became non-unique.
BEGIN;
DROP INDEX trading.idx_wholesaler_products_sku_active;
CREATE UNIQUE INDEX idx_wholesaler_products_sku_active ON trading.wholesaler_products (wholesaler_id, sku);
DROP INDEX trading.idx_order_final_wholesaler_unique;
CREATE INDEX idx_order_final_wholesaler_unique ON trading.orders (id) WHERE final_wholesaler_id IS NOT NULL;
SELECT d.object_kind, d.object_name, d.change, d.expected, d.actual
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d WHERE m.name = 'clean';
ROLLBACK;

-- A dropped table is one row (its columns, indexes and triggers are not
-- listed separately); so is a new one; a renamed column is missing + unexpected.
BEGIN;
DROP TABLE trading.order_items;
CREATE TABLE tagging.tag_aliases (alias text PRIMARY KEY, tag_id integer NOT NULL REFERENCES tagging.tags);
ALTER TABLE trading.orders RENAME COLUMN final_wholesaler_id TO winning_wholesaler_id;
SELECT d.object_kind, d.object_name, d.change,
       d.expected - ARRAY['columns', 'constraints', 'indexes', 'triggers', 'policies', 'guards'] AS expected,
       d.actual - ARRAY['columns', 'constraints', 'indexes', 'triggers', 'policies', 'guards'] AS actual
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d WHERE m.name = 'clean';
ROLLBACK;

-- A dropped schema is one row; schemas beyond the manifest's are unexpected
-- when asked for.
BEGIN;
SET LOCAL client_min_messages = warning;
DROP SCHEMA tagging CASCADE;
SELECT d.object_kind, d.object_name, d.change
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d WHERE m.name = 'clean';
SELECT sqlstate, message, detail
  FROM public.sp_manifests m,
       expect_error(format('SELECT integrity.assert_schema(%L)', m.manifest)) e
 WHERE m.name = 'clean';
ROLLBACK;
CREATE SCHEMA sp_extra;
CREATE TABLE sp_extra.t (id integer PRIMARY KEY);
SELECT d.object_kind, d.object_name, d.change
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest, '{financial,trading,tagging,sp_extra}') d
 WHERE m.name = 'clean';
DROP TABLE sp_extra.t;
DROP SCHEMA sp_extra;

-- Views, types, sequences and functions are compared too.
BEGIN;
CREATE OR REPLACE VIEW tagging.active_tags AS
    SELECT id, name, slug FROM tagging.tags WHERE deleted_at IS NULL AND slug <> '';
ALTER TYPE trading.order_status ADD VALUE 'REFUNDED';
ALTER SEQUENCE tagging.tags_id_seq INCREMENT BY 10;
CREATE OR REPLACE FUNCTION trading.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
SELECT d.object_kind, d.object_name, d.change,
       d.expected - 'definition_md5' AS expected, d.actual - 'definition_md5' AS actual,
       d.expected ? 'definition_md5' AS md5_differs
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d WHERE m.name = 'clean';
ROLLBACK;

-- Hostile identifiers: names are quoted in object_name and in the DETAIL.
BEGIN;
SELECT integrity.unprotect('tagging."Tag ""Groups"""', 'immutable');
ALTER TABLE tagging."Tag ""Groups""" ALTER COLUMN "x""; DROP TABLE t; --" DROP NOT NULL;
SELECT d.object_kind, d.object_name, d.change, d.expected, d.actual
  FROM public.sp_manifests m, integrity.schema_diff(m.manifest) d WHERE m.name = 'clean';
SELECT detail
  FROM public.sp_manifests m,
       expect_error(format('SELECT integrity.assert_schema(%L)', m.manifest)) e
 WHERE m.name = 'clean';
ROLLBACK;

-- The diff is deterministic: same rows, same order, run twice.
BEGIN;
DROP INDEX trading.idx_orders_status_created;
ALTER TABLE tagging.tags ADD COLUMN color text;
CREATE TEMP TABLE diff_1 AS
SELECT d.* FROM public.sp_manifests m, integrity.schema_diff(m.manifest) WITH ORDINALITY d WHERE m.name = 'clean';
CREATE TEMP TABLE diff_2 AS
SELECT d.* FROM public.sp_manifests m, integrity.schema_diff(m.manifest) WITH ORDINALITY d WHERE m.name = 'clean';
SELECT (SELECT count(*) FROM diff_1) AS rows_1,
       (SELECT array_agg(t::text ORDER BY t.ordinality) FROM diff_1 t)
     = (SELECT array_agg(t::text ORDER BY t.ordinality) FROM diff_2 t) AS same_rows_same_order;
ROLLBACK;

-- Bad arguments.
SELECT sqlstate, message FROM expect_error($$SELECT * FROM integrity.schema_diff(NULL)$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.assert_schema(NULL)$$);
SELECT sqlstate, message, hint FROM expect_error($$SELECT * FROM integrity.schema_diff('{"tables": {}}')$$);
SELECT sqlstate, message FROM expect_error($$SELECT * FROM integrity.schema_diff('[]')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.assert_schema('{"schemas": {}, "manifest_version": 2}')$$);
SELECT sqlstate, message
  FROM public.sp_manifests m,
       expect_error(format('SELECT * FROM integrity.schema_diff(%L, ''{tagging,NULL}'')', m.manifest)) e
 WHERE m.name = 'clean';
-- An empty manifest is equal to nothing.
SELECT count(*) AS differences FROM integrity.schema_diff('{"schemas": {}, "manifest_version": 1}');

\ir common/teardown.sql
