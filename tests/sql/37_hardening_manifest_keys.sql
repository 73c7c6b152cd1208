-- 37_hardening_manifest_keys: schema names are compared as name (63 bytes):
-- a manifest with a longer schema key used to be compared under the
-- truncated name, or dropped from the comparison.  It is refused (22023).
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT integrity.schema_manifest('{public}') AS m \gset
SELECT sqlstate, message, detail FROM expect_error(format(
    'SELECT * FROM integrity.schema_diff(%L::jsonb)',
    jsonb_set(:'m'::jsonb, ARRAY['schemas', repeat('s', 64)], '{}'::jsonb)));
SELECT sqlstate, message FROM expect_error(format(
    'SELECT integrity.assert_schema(%L::jsonb)',
    jsonb_set(:'m'::jsonb, ARRAY['schemas', repeat('s', 64)], '{}'::jsonb)));
-- 63 bytes is a name: compared, and reported missing.
SELECT object_kind, object_name, change FROM integrity.schema_diff(
    jsonb_set(:'m'::jsonb, ARRAY['schemas', repeat('s', 63)], '{}'::jsonb))
 WHERE object_name = repeat('s', 63);

-- A manifest whose levels are not objects used to fail deep inside the
-- comparison with raw jsonb errors ("cannot call jsonb_each on a
-- non-object").  Every level is checked first, and the path to the first
-- bad one is named (22023).
CREATE TABLE mk_t (id int PRIMARY KEY, note text);
SELECT integrity.schema_manifest('{public}') AS m \gset
SELECT bad.path, e.sqlstate, e.message, e.detail
  FROM (VALUES ('{schemas,public}', '5'),
               ('{schemas,public,tables}', '[]'),
               ('{schemas,public,tables,mk_t}', '"mk_t"'),
               ('{schemas,public,tables,mk_t,columns}', 'null'),
               ('{schemas,public,tables,mk_t,columns,id}', '1'),
               ('{schemas,public,tables,mk_t,indexes}', '[1]'),
               ('{schemas,public,views}', 'true')) AS bad(path, value)
 CROSS JOIN LATERAL expect_error(format('SELECT * FROM integrity.schema_diff(%L::jsonb)',
                                        jsonb_set(:'m'::jsonb, bad.path::text[], bad.value::jsonb))) e;
SELECT sqlstate, message, detail FROM expect_error(format(
    'SELECT integrity.assert_schema(%L::jsonb)',
    jsonb_set(:'m'::jsonb, '{schemas,public,tables,mk_t,guards}', '"none"')));
-- The manifest as made still compares clean.
SELECT count(*) AS differences FROM integrity.schema_diff(:'m'::jsonb, '{public}');
DROP TABLE mk_t;

\ir common/teardown.sql
