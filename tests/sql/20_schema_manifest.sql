-- 20_schema_manifest: integrity.schema_manifest() on a multi-schema layout
-- from the migration guides (financial, trading, tagging), built by
-- common/schema_layout.sql (which 21_schema_diff and 22_lint include too).
\ir common/setup.sql
\set VERBOSITY default

\ir common/schema_layout.sql

-- Deterministic: the same database gives the same jsonb, byte for byte.
SELECT m.manifest = integrity.schema_manifest('{financial,trading,tagging}') AS same_jsonb,
       md5(m.manifest::text) = md5(integrity.schema_manifest('{financial,trading,tagging}')::text) AS same_text,
       md5(m.manifest::text) = md5(integrity.schema_manifest('{tagging,trading,financial,trading}')::text)
           AS schema_order_irrelevant
  FROM public.sp_manifests m WHERE m.name = 'clean';

-- ... whatever the caller's search_path, time zone and date style (partition
-- bounds and defaults are deparsed under fixed settings).
BEGIN;
SET LOCAL search_path = trading, financial, tagging, public;
SET LOCAL TimeZone = 'Asia/Kathmandu';
SET LOCAL DateStyle = 'SQL, DMY';
SET LOCAL IntervalStyle = 'sql_standard';
SET LOCAL extra_float_digits = 3;
SELECT md5(m.manifest::text) = md5(integrity.schema_manifest('{financial,trading,tagging}')::text) AS same_text
  FROM public.sp_manifests m WHERE m.name = 'clean';
ROLLBACK;

-- What it contains: one object per schema, each object keyed by name.
SELECT jsonb_object_keys(manifest) AS key FROM public.sp_manifests WHERE name = 'clean' ORDER BY 1;
SELECT manifest -> 'manifest_version' AS version FROM public.sp_manifests WHERE name = 'clean';
SELECT s.key AS schema, c.key AS collection,
       (SELECT string_agg(k, ', ' ORDER BY k COLLATE "C") FROM jsonb_object_keys(c.value) k) AS names
  FROM public.sp_manifests m, jsonb_each(m.manifest -> 'schemas') s, jsonb_each(s.value) c
 WHERE m.name = 'clean'
 ORDER BY 1, 2;

-- A table in full: kind, partitioning, columns (position, type, nullability,
-- default, identity), constraints, indexes, triggers, guards.
SELECT jsonb_pretty(manifest #> '{schemas,financial,tables,ledger_entries}')
  FROM public.sp_manifests WHERE name = 'clean';
-- A partition: its parent and bound (UTC, ISO), its cloned triggers.
SELECT jsonb_pretty((manifest #> '{schemas,financial,tables,ledger_entries_2026_11}') - 'columns')
  FROM public.sp_manifests WHERE name = 'clean';

-- Columns: generated, serial defaults (qualified), enum types (qualified).
SELECT c.key AS column_name, c.value AS description
  FROM public.sp_manifests m, jsonb_each(m.manifest #> '{schemas,trading,tables,orders,columns}') c
 WHERE m.name = 'clean' ORDER BY (c.value ->> 'position')::int;
-- Positions count live columns: a dropped column leaves no gap.
SELECT c.key AS column_name, c.value -> 'position' AS position
  FROM public.sp_manifests m, jsonb_each(m.manifest #> '{schemas,tagging,tables,taggings,columns}') c
 WHERE m.name = 'clean' ORDER BY 2;

-- Indexes: definition, uniqueness, predicate.
SELECT i.key AS index_name, i.value AS description
  FROM public.sp_manifests m, jsonb_each(m.manifest #> '{schemas,trading,tables,orders,indexes}') i
 WHERE m.name = 'clean' ORDER BY 1;
SELECT i.key AS index_name, i.value -> 'unique' AS is_unique, i.value -> 'predicate' AS predicate
  FROM public.sp_manifests m, jsonb_each(m.manifest #> '{schemas,tagging,tables,tags,indexes}') i
 WHERE m.name = 'clean' ORDER BY 1;

-- Triggers: user triggers and the extension's guard triggers, with events and
-- firing mode (always / origin); foreign-key (internal) triggers are left out.
SELECT t.key AS trigger_name, t.value ->> 'timing' AS timing, t.value -> 'events' AS events,
       t.value ->> 'level' AS level, t.value ->> 'function' AS function, t.value ->> 'enabled' AS enabled
  FROM public.sp_manifests m, jsonb_each(m.manifest #> '{schemas,trading,tables}') tb,
       jsonb_each(tb.value -> 'triggers') t
 WHERE m.name = 'clean' AND tb.key IN ('orders', 'sprinkler_spare_pieces', 'order_items')
 ORDER BY tb.key, 1;

-- Guards, with columns and options (never created_at).
SELECT s.key AS schema, tb.key AS table_name, g.key AS guard, g.value AS description
  FROM public.sp_manifests m, jsonb_each(m.manifest -> 'schemas') s, jsonb_each(s.value -> 'tables') tb,
       jsonb_each(tb.value -> 'guards') g
 WHERE m.name = 'clean'
 ORDER BY 1, 2, 3;

-- Hostile identifiers are data, not SQL: keys are the raw names, definitions quote them.
SELECT jsonb_pretty((manifest #> ARRAY['schemas', 'tagging', 'tables', 'Tag "Groups"'])
                    - ARRAY['columns', 'constraints', 'policies', 'indexes'])
  FROM public.sp_manifests WHERE name = 'clean';

-- Views with their definitions; enum labels in sort order; sequences;
-- functions by signature with a digest of their definition.
SELECT o.path, o.description
  FROM public.sp_manifests m
 CROSS JOIN LATERAL (VALUES
       ('tagging.views.active_tags', m.manifest #> '{schemas,tagging,views,active_tags}'),
       ('trading.types.order_status', m.manifest #> '{schemas,trading,types,order_status}'),
       ('tagging.sequences.tags_id_seq', m.manifest #> '{schemas,tagging,sequences,tags_id_seq}'),
       ('trading.functions.touch_updated_at()',
        (m.manifest #> '{schemas,trading,functions,touch_updated_at()}') - 'definition_md5')) o(path, description)
 WHERE m.name = 'clean';

-- No OIDs: no relation, type, function or trigger OID of these schemas appears.
SELECT count(*) AS oids_in_manifest
  FROM public.sp_manifests m,
       (SELECT c.oid FROM pg_class c WHERE c.relnamespace IN ('financial'::regnamespace, 'trading'::regnamespace,
                                                                'tagging'::regnamespace)
        UNION ALL SELECT t.oid FROM pg_type t WHERE t.typnamespace = 'trading'::regnamespace
        UNION ALL SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'trading'::regnamespace
        UNION ALL SELECT tg.oid FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
                   WHERE c.relnamespace = 'trading'::regnamespace) o
 WHERE m.name = 'clean' AND m.manifest::text ~ ('\m' || o.oid || '\M');
SELECT jsonb_path_exists(manifest, '$.schemas.*.tables.*.guards.*') AS has_guards,
       jsonb_path_exists(manifest, '$.schemas.*.tables.*.guards.*.created_at') AS guard_created_at
  FROM public.sp_manifests WHERE name = 'clean';

-- Stable across OID changes: dropping and re-creating a table the same way
-- (new OIDs, no dropped column this time) gives the same manifest.
DROP TABLE tagging.taggings;
CREATE TABLE tagging.taggings (
    tag_id        integer NOT NULL REFERENCES tagging.tags,
    taggable_type text NOT NULL,
    taggable_id   bigint NOT NULL,
    PRIMARY KEY (tag_id, taggable_type, taggable_id)
);
SELECT md5(m.manifest::text) = md5(integrity.schema_manifest('{financial,trading,tagging}')::text) AS same_text
  FROM public.sp_manifests m WHERE m.name = 'clean';
-- Re-registering a guard (new created_at) does not change it either.
SELECT integrity.unprotect('financial.ledger_entries', 'append_only');
SELECT integrity.protect_append_only('financial.ledger_entries');
SELECT md5(m.manifest::text) = md5(integrity.schema_manifest('{financial,trading,tagging}')::text) AS same_text
  FROM public.sp_manifests m WHERE m.name = 'clean';

-- The extension's schema is left out unless asked for; the default is public.
SELECT jsonb_object_keys(integrity.schema_manifest() -> 'schemas') AS default_schemas;
SELECT (integrity.schema_manifest('{integrity}') #> '{schemas,integrity,extensions}') ? 'pg_integrity' AS has_extension,
       integrity.schema_manifest('{integrity}') #> '{schemas,integrity,tables}' ? 'guard_registry' AS has_registry,
       integrity.schema_manifest('{integrity}') #> '{schemas,integrity,views}' ? 'guards' AS has_guards_view;
SELECT integrity.schema_manifest('{}') AS empty;

-- Bad arguments.
SELECT sqlstate, message, hint FROM expect_error($$SELECT integrity.schema_manifest(NULL)$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.schema_manifest('{financial,NULL}')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.schema_manifest('{financial,no_such_schema}')$$);

-- Every function sets its search_path, has a comment, and is executable by PUBLIC.
SELECT p.oid::regprocedure AS function, p.proconfig, obj_description(p.oid, 'pg_proc') IS NOT NULL AS commented,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute, p.provolatile
  FROM pg_proc p
 WHERE p.pronamespace = 'integrity'::regnamespace
   AND p.proname IN ('schema_manifest', 'schema_diff', 'assert_schema', 'lint')
 ORDER BY p.oid::regprocedure::text;

\ir common/teardown.sql
