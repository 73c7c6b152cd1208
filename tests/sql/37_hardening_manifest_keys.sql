-- 37_hardening_manifest_keys: schema names are compared as name (63 bytes):
-- a manifest with a longer schema key used to be compared under the
-- truncated name, or dropped from the comparison.  It is refused (22023).
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
