-- Schema parity and lint: a canonical, deterministic description of a
-- database's schema (schema_manifest), its comparison with the live database
-- (schema_diff, assert_schema), and lint() for layouts that let bad data in.
--
-- The manifest names objects, never OIDs; it holds no relfilenodes,
-- timestamps or data, so the manifest of a database, of its pg_dump/pg_restore
-- copy and of another environment built by the same migrations are
-- byte-identical.  Every collection is a jsonb object keyed by name, which
-- jsonb keeps in one canonical order.  Expressions are deparsed by PostgreSQL
-- (pg_get_expr, pg_get_constraintdef, pg_get_indexdef, pg_get_triggerdef,
-- pg_get_viewdef) under fixed settings: search_path = pg_catalog, pg_temp (so
-- every name outside pg_catalog comes out schema-qualified), TimeZone UTC,
-- DateStyle ISO and IntervalStyle postgres (so literals in partition bounds,
-- defaults and CHECK constraints read the same whatever the caller's session).

-- The manifest of one schema's objects, or NULL when the schema does not exist.
CREATE FUNCTION integrity._schema_manifest_of(nsp name)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
AS $$
WITH n AS (
    SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = nsp
),
rel AS (
    SELECT c.oid, c.relname, c.relkind, c.relpersistence, c.relispartition,
           c.relrowsecurity, c.relforcerowsecurity
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = (SELECT oid FROM n)
       AND c.relpersistence <> 't'
)
SELECT pg_catalog.jsonb_build_object(
    'tables', coalesce((
        SELECT pg_catalog.jsonb_object_agg(r.relname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'kind', CASE r.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                                   ELSE 'foreign table' END,
            'persistence', CASE r.relpersistence WHEN 'u' THEN 'unlogged' ELSE 'permanent' END,
            'row_security', r.relrowsecurity,
            'force_row_security', r.relforcerowsecurity,
            'partition_key', CASE WHEN r.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(r.oid) END,
            'partition_of', (SELECT pg_catalog.format('%I.%I', pn.nspname, pc.relname)
                               FROM pg_catalog.pg_inherits i
                               JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent
                               JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
                              WHERE i.inhrelid = r.oid AND r.relispartition),
            'partition_bound', (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid)
                                  FROM pg_catalog.pg_class c WHERE c.oid = r.oid AND r.relispartition),
            'inherits', (SELECT pg_catalog.jsonb_agg(pg_catalog.format('%I.%I', pn.nspname, pc.relname)
                                                     ORDER BY i.inhseqno)
                           FROM pg_catalog.pg_inherits i
                           JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent
                           JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
                          WHERE i.inhrelid = r.oid AND NOT r.relispartition)))
          || pg_catalog.jsonb_build_object(
            'columns', coalesce((
                SELECT pg_catalog.jsonb_object_agg(a.attname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'position', a.position,
                    'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
                    'not_null', a.attnotnull,
                    'default', CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
                    'generated', CASE WHEN a.attgenerated = 's' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
                    'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
                    'collation', CASE WHEN a.attcollation <> t.typcollation
                                      THEN a.attcollation::pg_catalog.regcollation::text END)))
                  FROM (SELECT a.*, pg_catalog.row_number() OVER (ORDER BY a.attnum) AS position
                          FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped) a
                  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum), '{}'),
            'constraints', coalesce((
                SELECT pg_catalog.jsonb_object_agg(c.conname, pg_catalog.jsonb_build_object(
                    'type', CASE c.contype WHEN 'c' THEN 'check' WHEN 'f' THEN 'foreign key'
                                           WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique'
                                           WHEN 'x' THEN 'exclusion' WHEN 't' THEN 'trigger' END,
                    'definition', pg_catalog.pg_get_constraintdef(c.oid),
                    'validated', c.convalidated,
                    'inherited', c.coninhcount > 0))
                  FROM pg_catalog.pg_constraint c
                 -- NOT NULL constraints, catalogued from PostgreSQL 18 on, are the
                 -- columns' not_null: one manifest on every version.
                 WHERE c.conrelid = r.oid AND c.contype <> 'n'), '{}'),
            'indexes', coalesce((
                SELECT pg_catalog.jsonb_object_agg(ic.relname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'definition', pg_catalog.pg_get_indexdef(i.indexrelid),
                    'unique', i.indisunique,
                    'primary', i.indisprimary,
                    'predicate', pg_catalog.pg_get_expr(i.indpred, i.indrelid),
                    'valid', i.indisvalid)))
                  FROM pg_catalog.pg_index i
                  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                 WHERE i.indrelid = r.oid), '{}'),
            'triggers', coalesce((
                SELECT pg_catalog.jsonb_object_agg(tg.tgname, pg_catalog.jsonb_build_object(
                    'timing', CASE WHEN tg.tgtype & 2 <> 0 THEN 'BEFORE'
                                   WHEN tg.tgtype & 64 <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END,
                    'level', CASE WHEN tg.tgtype & 1 <> 0 THEN 'ROW' ELSE 'STATEMENT' END,
                    'events', pg_catalog.to_jsonb(pg_catalog.array_remove(ARRAY[
                                  CASE WHEN tg.tgtype & 4 <> 0 THEN 'INSERT' END,
                                  CASE WHEN tg.tgtype & 16 <> 0 THEN 'UPDATE' END,
                                  CASE WHEN tg.tgtype & 8 <> 0 THEN 'DELETE' END,
                                  CASE WHEN tg.tgtype & 32 <> 0 THEN 'TRUNCATE' END], NULL)),
                    'function', (SELECT pg_catalog.format('%I.%I', pn.nspname, p.proname)
                                   FROM pg_catalog.pg_proc p
                                   JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
                                  WHERE p.oid = tg.tgfoid),
                    'enabled', CASE tg.tgenabled WHEN 'O' THEN 'origin' WHEN 'A' THEN 'always'
                                                 WHEN 'R' THEN 'replica' ELSE 'disabled' END,
                    'definition', pg_catalog.pg_get_triggerdef(tg.oid),
                    'inherited', tg.tgparentid <> 0))
                  FROM pg_catalog.pg_trigger tg
                 -- Before PostgreSQL 15, partitions' clones of their parent's triggers
                 -- are internal, like the triggers that implement foreign keys and
                 -- deferrable unique constraints: the clones are listed on every version.
                 WHERE tg.tgrelid = r.oid
                   AND (NOT tg.tgisinternal
                        OR (tg.tgparentid <> 0
                            AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint c
                                             WHERE c.oid = tg.tgconstraint AND c.contype <> 't')))), '{}'),
            'policies', coalesce((
                SELECT pg_catalog.jsonb_object_agg(po.polname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'command', CASE po.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                              WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                    'permissive', po.polpermissive,
                    'roles', (SELECT pg_catalog.jsonb_agg(CASE WHEN ro = 0 THEN 'public'
                                                               ELSE pg_catalog.quote_ident(ro::pg_catalog.regrole::text) END
                                                          ORDER BY 1)
                                FROM pg_catalog.unnest(po.polroles) ro),
                    'using', pg_catalog.pg_get_expr(po.polqual, po.polrelid),
                    'with_check', pg_catalog.pg_get_expr(po.polwithcheck, po.polrelid))))
                  FROM pg_catalog.pg_policy po
                 WHERE po.polrelid = r.oid), '{}'),
            'guards', coalesce((
                SELECT pg_catalog.jsonb_object_agg(g.guard, pg_catalog.jsonb_build_object(
                    'columns', pg_catalog.to_jsonb(g.columns),
                    'options', g.options))
                  FROM integrity.guard_registry g
                 WHERE g.table_name::oid = r.oid), '{}')))
          FROM rel r
         WHERE r.relkind IN ('r', 'p', 'f')), '{}'),
    'views', coalesce((
        SELECT pg_catalog.jsonb_object_agg(r.relname, pg_catalog.jsonb_build_object(
            'kind', CASE r.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END,
            'definition', pg_catalog.pg_get_viewdef(r.oid)))
          FROM rel r
         WHERE r.relkind IN ('v', 'm')), '{}'),
    'sequences', coalesce((
        SELECT pg_catalog.jsonb_object_agg(r.relname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'type', pg_catalog.format_type(s.seqtypid, NULL),
            'start', s.seqstart,
            'increment', s.seqincrement,
            'min', s.seqmin,
            'max', s.seqmax,
            'cache', s.seqcache,
            'cycle', s.seqcycle,
            'owned_by', (SELECT pg_catalog.format('%I.%I.%I', tn.nspname, tc.relname, ta.attname)
                           FROM pg_catalog.pg_depend d
                           JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid
                           JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
                           JOIN pg_catalog.pg_attribute ta ON ta.attrelid = d.refobjid AND ta.attnum = d.refobjsubid
                          WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = r.oid
                            AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                            AND d.refobjsubid > 0 AND d.deptype = 'a'
                          LIMIT 1))))
          FROM rel r
          JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.oid
         WHERE r.relkind = 'S'
           -- identity sequences belong to their column ("identity")
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                            WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = r.oid
                              AND d.deptype = 'i')), '{}'),
    'types', coalesce((
        SELECT pg_catalog.jsonb_object_agg(t.typname, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'kind', CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range'
                                   ELSE 'composite' END,
            'labels', CASE WHEN t.typtype = 'e' THEN
                          (SELECT pg_catalog.jsonb_agg(e.enumlabel ORDER BY e.enumsortorder)
                             FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) END,
            'type', CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod)
                         WHEN t.typtype = 'r' THEN
                             (SELECT pg_catalog.format_type(rg.rngsubtype, NULL)
                                FROM pg_catalog.pg_range rg WHERE rg.rngtypid = t.oid) END,
            'not_null', CASE WHEN t.typtype = 'd' THEN t.typnotnull END,
            'default', CASE WHEN t.typtype = 'd' THEN pg_catalog.pg_get_expr(t.typdefaultbin, 0) END,
            'constraints', CASE WHEN t.typtype = 'd' THEN coalesce(
                (SELECT pg_catalog.jsonb_object_agg(c.conname, pg_catalog.pg_get_constraintdef(c.oid))
                   FROM pg_catalog.pg_constraint c WHERE c.contypid = t.oid), '{}') END,
            'attributes', CASE WHEN t.typtype = 'c' THEN
                (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(
                            a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END)))
          FROM pg_catalog.pg_type t
         WHERE t.typnamespace = (SELECT oid FROM n)
           AND (t.typtype IN ('e', 'd', 'r')
                OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c'))),
        '{}'),
    'functions', coalesce((
        SELECT pg_catalog.jsonb_object_agg(
            pg_catalog.format('%I(%s)', p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)),
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'kind', CASE p.prokind WHEN 'f' THEN 'function' WHEN 'p' THEN 'procedure'
                                       WHEN 'a' THEN 'aggregate' ELSE 'window' END,
                'returns', pg_catalog.pg_get_function_result(p.oid),
                'language', (SELECT l.lanname FROM pg_catalog.pg_language l WHERE l.oid = p.prolang),
                'volatility', CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END,
                'strict', p.proisstrict,
                'security_definer', p.prosecdef,
                'definition_md5', CASE WHEN p.prokind IN ('f', 'p')
                                       THEN pg_catalog.md5(pg_catalog.pg_get_functiondef(p.oid)) END)))
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = (SELECT oid FROM n)), '{}'),
    'extensions', coalesce((
        SELECT pg_catalog.jsonb_object_agg(e.extname, pg_catalog.jsonb_build_object('version', e.extversion))
          FROM pg_catalog.pg_extension e
         WHERE e.extnamespace = (SELECT oid FROM n)), '{}'))
 WHERE EXISTS (SELECT FROM n)
$$;

-- The manifest of the given schemas; a schema that does not exist is an error
-- when strict, left out otherwise (schema_diff reports it missing).
CREATE FUNCTION integrity._schema_manifest(schemas name[], strict boolean)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown name;
BEGIN
    IF strict THEN
        SELECT s INTO unknown
          FROM pg_catalog.unnest(schemas) s
         WHERE s IS NULL OR NOT EXISTS (SELECT FROM pg_catalog.pg_namespace n WHERE n.nspname = s)
         ORDER BY s NULLS FIRST
         LIMIT 1;
        IF FOUND THEN
            IF unknown IS NULL THEN
                RAISE EXCEPTION 'schema_manifest: argument "schemas" must not contain NULL'
                    USING ERRCODE = 'null_value_not_allowed';
            END IF;
            RAISE EXCEPTION 'schema "%" does not exist', unknown
                USING ERRCODE = 'invalid_schema_name';
        END IF;
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'manifest_version', 1,
        'schemas', coalesce((SELECT pg_catalog.jsonb_object_agg(s, m)
                               FROM (SELECT DISTINCT s, integrity._schema_manifest_of(s) AS m
                                       FROM pg_catalog.unnest(schemas) s
                                      WHERE s IS NOT NULL) x
                              WHERE m IS NOT NULL), '{}'));
END;
$$;

CREATE FUNCTION integrity.schema_manifest(schemas name[] DEFAULT '{public}')
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF schemas IS NULL THEN
        RAISE EXCEPTION 'schema_manifest: argument "schemas" must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name the schemas to describe, e.g. ARRAY[''public''].';
    END IF;
    RETURN integrity._schema_manifest(schemas, true);
END;
$$;
COMMENT ON FUNCTION integrity.schema_manifest(name[]) IS
    'Canonical, deterministic jsonb description of the schemas (tables, columns, constraints, indexes, triggers, '
    'policies, pg_integrity guards, views, sequences, types, functions, extensions): byte-identical for the same '
    'schema, across pg_dump/pg_restore and across environments. Compare with integrity.schema_diff().';

-- One level of a manifest as _manifest_objects walks it: an object (an
-- absent collection is empty).  Anything else is refused with the path to it.
CREATE FUNCTION integrity._manifest_level(level jsonb, path text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF level IS NULL THEN
        RETURN '{}';
    ELSIF pg_catalog.jsonb_typeof(level) <> 'object' THEN
        RAISE EXCEPTION 'not a pg_integrity schema manifest'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('%s is a JSON %s, not an object.', path, pg_catalog.jsonb_typeof(level));
    END IF;
    RETURN level;
END;
$$;

-- The manifest flattened: one row per object, with the attributes it is
-- compared on (props: without its child objects) and the whole object (full).
-- Names are quoted with quote_ident and joined with dots.
CREATE FUNCTION integrity._manifest_objects(manifest jsonb)
RETURNS TABLE (object_kind text, object_name text, schema_name text, parent_rank int, parent_name text,
               child_rank int, child_name text, props jsonb, full_object jsonb)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- schemas
    SELECT 'schema', pg_catalog.quote_ident(s.key), s.key, 0, NULL::text, 0, NULL::text,
           '{}'::jsonb, integrity._manifest_level(s.value, format('$.schemas.%s', to_json(s.key)))
      FROM pg_catalog.jsonb_each(manifest -> 'schemas') s
    UNION ALL
    -- objects of a schema
    SELECT k.kind, pg_catalog.quote_ident(s.key) || '.' ||
                   CASE WHEN k.kind IN ('function', 'extension') THEN o.key ELSE pg_catalog.quote_ident(o.key) END,
           s.key, k.rank, o.key, 0, NULL,
           integrity._manifest_level(o.value, format('$.schemas.%s.%s.%s', to_json(s.key), k.collection, to_json(o.key)))
             - ARRAY['columns', 'constraints', 'indexes', 'triggers', 'policies', 'guards'],
           o.value
      FROM pg_catalog.jsonb_each(manifest -> 'schemas') s
     CROSS JOIN (VALUES ('extensions', 'extension', 1), ('types', 'type', 2), ('tables', 'table', 3),
                        ('views', 'view', 4), ('sequences', 'sequence', 5), ('functions', 'function', 6))
                AS k(collection, kind, rank)
     CROSS JOIN LATERAL pg_catalog.jsonb_each(integrity._manifest_level(
                    s.value -> k.collection, format('$.schemas.%s.%s', to_json(s.key), k.collection))) o
    UNION ALL
    -- objects of a table
    SELECT k.kind, pg_catalog.quote_ident(s.key) || '.' || pg_catalog.quote_ident(t.key) || '.' ||
                   pg_catalog.quote_ident(o.key),
           s.key, 3, t.key, k.rank, o.key, o.value,
           integrity._manifest_level(o.value, format('$.schemas.%s.tables.%s.%s.%s', to_json(s.key), to_json(t.key),
                                                     k.collection, to_json(o.key)))
      FROM pg_catalog.jsonb_each(manifest -> 'schemas') s
     CROSS JOIN LATERAL pg_catalog.jsonb_each(integrity._manifest_level(
                    s.value -> 'tables', format('$.schemas.%s.tables', to_json(s.key)))) t
     CROSS JOIN (VALUES ('columns', 'column', 1), ('constraints', 'constraint', 2), ('indexes', 'index', 3),
                        ('triggers', 'trigger', 4), ('policies', 'policy', 5), ('guards', 'guard', 6))
                AS k(collection, kind, rank)
     CROSS JOIN LATERAL pg_catalog.jsonb_each(integrity._manifest_level(
                    t.value -> k.collection, format('$.schemas.%s.tables.%s.%s', to_json(s.key), to_json(t.key),
                                                    k.collection))) o
$$;

-- A manifest argument must be one that schema_manifest() made.
CREATE FUNCTION integrity._check_manifest(manifest jsonb, caller text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text;
BEGIN
    IF manifest IS NULL THEN
        RAISE EXCEPTION '%: argument "manifest" must not be NULL', caller
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF pg_catalog.jsonb_typeof(manifest) IS DISTINCT FROM 'object'
       OR pg_catalog.jsonb_typeof(manifest -> 'schemas') IS DISTINCT FROM 'object'
       OR manifest -> 'manifest_version' IS DISTINCT FROM '1'::jsonb THEN
        RAISE EXCEPTION '%: argument "manifest" is not a pg_integrity schema manifest', caller
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the jsonb that integrity.schema_manifest() returned (manifest_version 1).';
    END IF;
    -- Schema names are compared as name, which keeps 63 bytes: a longer key
    -- would silently match a truncated schema, or none.
    IF EXISTS (SELECT FROM pg_catalog.jsonb_object_keys(manifest -> 'schemas') k
                WHERE pg_catalog.octet_length(k) > 63) THEN
        RAISE EXCEPTION '%: argument "manifest" is not a pg_integrity schema manifest', caller
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A schema name in it is longer than 63 bytes, which no PostgreSQL schema name can be.';
    END IF;
    -- Every level the comparison walks is an object.
    BEGIN
        PERFORM count(e.props) + count(e.full_object) FROM integrity._manifest_objects(manifest) e;
    EXCEPTION WHEN invalid_parameter_value THEN
        GET STACKED DIAGNOSTICS problem = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION '%: argument "manifest" is not a pg_integrity schema manifest', caller
            USING ERRCODE = 'invalid_parameter_value', DETAIL = problem;
    END;
END;
$$;

CREATE FUNCTION integrity.schema_diff(manifest jsonb, schemas name[] DEFAULT NULL)
RETURNS TABLE (object_kind text, object_name text, change text, expected jsonb, actual jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    scope name[];
BEGIN
    PERFORM integrity._check_manifest(manifest, 'schema_diff');
    IF schemas IS NOT NULL AND array_position(schemas, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'schema_diff: argument "schemas" must not contain NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    scope := coalesce(schemas, ARRAY(SELECT pg_catalog.jsonb_object_keys(manifest -> 'schemas')::name));
    RETURN QUERY
    WITH expected AS (
        SELECT * FROM integrity._manifest_objects(manifest) e WHERE e.schema_name = ANY (scope)
    ),
    actual AS (
        SELECT * FROM integrity._manifest_objects(integrity._schema_manifest(scope, false))
    ),
    diff AS (
        SELECT coalesce(e.object_kind, a.object_kind) AS object_kind,
               coalesce(e.object_name, a.object_name) AS object_name,
               coalesce(e.schema_name, a.schema_name) AS schema_name,
               coalesce(e.parent_rank, a.parent_rank) AS parent_rank,
               coalesce(e.parent_name, a.parent_name) AS parent_name,
               coalesce(e.child_rank, a.child_rank) AS child_rank,
               coalesce(e.child_name, a.child_name) AS child_name,
               CASE WHEN a.object_name IS NULL THEN 'missing'
                    WHEN e.object_name IS NULL THEN 'unexpected'
                    ELSE 'changed' END AS change,
               CASE WHEN a.object_name IS NULL THEN e.full_object
                    WHEN e.object_name IS NULL THEN NULL
                    ELSE (SELECT pg_catalog.jsonb_object_agg(k, coalesce(e.props -> k, 'null'))
                            FROM (SELECT pg_catalog.jsonb_object_keys(e.props)
                                  UNION SELECT pg_catalog.jsonb_object_keys(a.props)) keys(k)
                           WHERE (e.props -> k) IS DISTINCT FROM (a.props -> k)) END AS expected,
               CASE WHEN e.object_name IS NULL THEN a.full_object
                    WHEN a.object_name IS NULL THEN NULL
                    ELSE (SELECT pg_catalog.jsonb_object_agg(k, coalesce(a.props -> k, 'null'))
                            FROM (SELECT pg_catalog.jsonb_object_keys(e.props)
                                  UNION SELECT pg_catalog.jsonb_object_keys(a.props)) keys(k)
                           WHERE (e.props -> k) IS DISTINCT FROM (a.props -> k)) END AS actual
          FROM expected e
          FULL JOIN actual a ON a.object_kind = e.object_kind AND a.object_name = e.object_name
         WHERE e.props IS DISTINCT FROM a.props
    )
    SELECT d.object_kind, d.object_name, d.change, d.expected, d.actual
      FROM diff d
     -- a missing or unexpected schema or table stands for everything in it
     WHERE NOT EXISTS (SELECT FROM diff p
                        WHERE p.change <> 'changed' AND p.schema_name = d.schema_name
                          AND ((p.object_kind = 'schema' AND d.object_kind <> 'schema')
                               OR (p.object_kind = 'table' AND d.child_rank > 0
                                   AND p.parent_name = d.parent_name)))
     ORDER BY d.schema_name COLLATE "C", d.parent_rank, d.parent_name COLLATE "C" NULLS FIRST,
              d.child_rank, d.child_name COLLATE "C" NULLS FIRST;
END;
$$;
COMMENT ON FUNCTION integrity.schema_diff(jsonb, name[]) IS
    'The differences between a manifest from integrity.schema_manifest() and the current database, one row per '
    'missing, unexpected or changed object (schema, extension, type, table, column, constraint, index, trigger, '
    'policy, guard, view, sequence, function); changed rows show only the attributes that differ. schemas defaults '
    'to the schemas of the manifest.';

CREATE FUNCTION integrity.assert_schema(manifest jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lines text[];
BEGIN
    PERFORM integrity._check_manifest(manifest, 'assert_schema');
    SELECT array_agg(d.change || ' ' || d.object_kind || ' ' || d.object_name ||
                     CASE WHEN d.change = 'changed' THEN
                         ': ' || (SELECT string_agg(format('%s %s -> %s', k, d.expected -> k, d.actual -> k),
                                                    '; ' ORDER BY k COLLATE "C")
                                    FROM pg_catalog.jsonb_object_keys(d.expected) k)
                     ELSE '' END)
      INTO lines
      FROM integrity.schema_diff(manifest) d;
    IF lines IS NOT NULL THEN
        RAISE EXCEPTION 'schema does not match the manifest: % difference%', cardinality(lines),
                        CASE WHEN cardinality(lines) = 1 THEN '' ELSE 's' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = array_to_string(lines, E'\n'),
                  HINT = 'SELECT * FROM integrity.schema_diff(manifest) shows each difference; run the missing '
                         'migrations, or take a new manifest with integrity.schema_manifest() if the change is intended.';
    END IF;
END;
$$;
COMMENT ON FUNCTION integrity.assert_schema(jsonb) IS
    'Raises 55000 (object_not_in_prerequisite_state) listing every difference between the manifest and the '
    'current database, one per DETAIL line; returns nothing when they match. For CI after migrations.';

-- The column a soft-delete table marks deleted rows with: its registered
-- soft_delete guard's column, else a column named deleted_at (or deletedAt).
CREATE FUNCTION integrity._soft_delete_column(tbl oid)
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT coalesce(g.columns[1], g.options ->> 'deleted_column', 'deleted_at')::name
           FROM integrity.guard_registry g
          WHERE g.table_name::oid = tbl AND g.guard = 'soft_delete'),
        (SELECT a.attname
           FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = tbl AND a.attname IN ('deleted_at', 'deletedAt') AND a.attnum > 0
            AND NOT a.attisdropped
          ORDER BY a.attname = 'deleted_at' DESC
          LIMIT 1))
$$;

CREATE FUNCTION integrity.lint(schemas name[] DEFAULT '{public}')
RETURNS TABLE (severity text, rule text, object_name text, problem text, remedy text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF schemas IS NULL THEN
        RAISE EXCEPTION 'lint: argument "schemas" must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name the schemas to check, e.g. ARRAY[''public''].';
    END IF;
    RETURN QUERY
    WITH tbl AS (
        SELECT c.oid, c.relkind, format('%I.%I', n.nspname, c.relname) AS qname
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY (schemas) AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
    ),
    soft AS (
        SELECT t.*, integrity._soft_delete_column(t.oid) AS deleted_column
          FROM tbl t
    ),
    problems AS (
        -- 1. unique indexes (and unique constraints) of soft-delete tables that
        --    are not partial on "deleted IS NULL": a deleted row keeps its value
        --    and blocks a new row with the same one.
        SELECT 'error' AS severity, 'soft_delete_unique' AS rule,
               format('%s.%I', s.qname, ic.relname) AS object_name,
               format('unique %s %I on soft-delete table %s is not partial on %I IS NULL: a deleted row '
                      'still blocks a new row with the same %s',
                      CASE WHEN con.oid IS NULL THEN 'index' ELSE 'constraint' END,
                      coalesce(con.conname, ic.relname), s.qname, s.deleted_column,
                      CASE WHEN i.indnkeyatts = 1 THEN 'value' ELSE 'values' END) AS problem,
               CASE WHEN con.oid IS NULL
                    THEN format('DROP INDEX %I.%I; ', n.nspname, ic.relname)
                    ELSE format('ALTER TABLE %s DROP CONSTRAINT %I; ', s.qname, con.conname) END ||
               -- a partitioned index is deparsed "ON ONLY": the new one must cover the partitions
               pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid),
                                         '^(CREATE UNIQUE INDEX (\S+|"(""|[^"])*")) ON ONLY ', '\1 ON ') ||
               CASE WHEN i.indpred IS NULL THEN ' WHERE ' ELSE ' AND ' END ||
               format('(%I IS NULL);', s.deleted_column) AS remedy
          FROM soft s
          JOIN pg_catalog.pg_index i ON i.indrelid = s.oid
          JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
          LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = s.oid
                                                 AND con.contype IN ('u', 'x')
         WHERE s.deleted_column IS NOT NULL
           AND i.indisunique AND NOT i.indisprimary
           -- the deleted column itself in the key makes the index unique per deletion
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = s.oid AND a.attname = s.deleted_column
                              AND a.attnum = ANY (i.indkey::int2[]))
           -- indexes of partitions that belong to an index of the parent are reported once, there
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_inherits ih WHERE ih.inhrelid = i.indexrelid)
           -- partial on "deleted IS NULL": that test is one of the predicate's AND-ed terms
           AND NOT coalesce(format('%I IS NULL', s.deleted_column)
                            = ANY (integrity._conjuncts(i.indpred, i.indrelid)), false)
        UNION ALL
        -- 2. foreign keys whose columns lead no index of the referencing table:
        --    every DELETE or key UPDATE on the referenced table scans it.
        SELECT 'warning', 'foreign_key_without_index',
               format('%s.%I', t.qname, con.conname),
               format('foreign key %I of %s (%s) has no index with these leading columns: every DELETE or key '
                      'UPDATE on %s scans %s',
                      con.conname, t.qname, cols.list, con.confrelid::regclass, t.qname),
               format('CREATE INDEX ON %s (%s);', t.qname, cols.list)
          FROM tbl t
          JOIN pg_catalog.pg_constraint con ON con.conrelid = t.oid AND con.contype = 'f' AND con.conparentid = 0
         CROSS JOIN LATERAL (
               SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) AS list
                 FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) cols
         WHERE NOT EXISTS (
               SELECT FROM pg_catalog.pg_index i
                WHERE i.indrelid = t.oid AND i.indpred IS NULL
                  AND i.indnkeyatts >= cardinality(con.conkey)
                  AND (SELECT array_agg(x ORDER BY x)
                         FROM unnest((string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(con.conkey)]) x)
                      = (SELECT array_agg(x ORDER BY x) FROM unnest(con.conkey) x))
        UNION ALL
        -- 3. constraints added NOT VALID and never validated: existing rows may break them.
        SELECT 'warning', 'not_valid_constraint',
               format('%s.%I', t.qname, con.conname),
               format('%s constraint %I of %s is NOT VALID: rows inserted before it was added are not checked',
                      CASE con.contype WHEN 'f' THEN 'foreign key' WHEN 'n' THEN 'not-null' ELSE 'check' END,
                      con.conname, t.qname),
               format('ALTER TABLE %s VALIDATE CONSTRAINT %I;', t.qname, con.conname)
          FROM tbl t
          JOIN pg_catalog.pg_constraint con ON con.conrelid = t.oid
         WHERE NOT con.convalidated AND con.conparentid = 0 AND con.coninhcount = 0
        UNION ALL
        -- 4. guarded tables without a primary key: guard errors and violations()
        --    can only name rows by ctid.
        SELECT 'warning', 'guarded_table_without_primary_key', t.qname,
               format('%s has pg_integrity guards (%s) but no primary key: errors and reports cannot name its rows '
                      'by a stable key', t.qname,
                      (SELECT string_agg(g.guard, ', ' ORDER BY g.guard) FROM integrity.guard_registry g
                        WHERE g.table_name::oid = t.oid)),
               coalesce(
                   -- a unique index over NOT NULL columns can become the primary key
                   (SELECT CASE WHEN t.relkind = 'r'
                                THEN format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I;',
                                            t.qname, ic.relname, ic.relname)
                                ELSE format('ALTER TABLE %s ADD PRIMARY KEY (%s);', t.qname,
                                            (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord)
                                               FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                                               JOIN pg_catalog.pg_attribute a
                                                 ON a.attrelid = t.oid AND a.attnum = k.attnum)) END
                      FROM pg_catalog.pg_index i
                      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                     WHERE i.indrelid = t.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                       AND i.indexprs IS NULL AND i.indnatts = i.indnkeyatts
                       AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                        WHERE a.attrelid = t.oid AND a.attnum = ANY (i.indkey::int2[])
                                          AND NOT a.attnotnull)
                     ORDER BY i.indnatts, ic.relname
                     LIMIT 1),
                   -- else an identity column, else a column named id (with the
                   -- partition key, which the primary key of a partitioned table includes)
                   (SELECT format('ALTER TABLE %s ADD PRIMARY KEY (%s);', t.qname,
                                  (SELECT string_agg(quote_ident(pa.attname), ', ' ORDER BY pa.attnum <> a.attnum, k.ord)
                                     FROM pg_catalog.pg_attribute pa
                                     LEFT JOIN (SELECT pk.attnum, pk.ord
                                                  FROM pg_catalog.pg_partitioned_table pt,
                                                       unnest(pt.partattrs::int2[]) WITH ORDINALITY pk(attnum, ord)
                                                 WHERE pt.partrelid = t.oid) k ON k.attnum = pa.attnum
                                    WHERE pa.attrelid = t.oid AND (pa.attnum = a.attnum OR k.attnum IS NOT NULL)))
                      FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
                       AND (a.attidentity <> '' OR a.attname = 'id')
                     ORDER BY a.attidentity = '', a.attnum
                     LIMIT 1),
                   format('ALTER TABLE %s ADD PRIMARY KEY (<key columns>);', t.qname))
          FROM tbl t
         WHERE EXISTS (SELECT FROM integrity.guard_registry g WHERE g.table_name::oid = t.oid)
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint con
                            WHERE con.conrelid = t.oid AND con.contype = 'p')
    )
    SELECT p.severity, p.rule, p.object_name, p.problem, p.remedy
      FROM problems p
     ORDER BY p.object_name COLLATE "C", p.rule COLLATE "C";
END;
$$;
COMMENT ON FUNCTION integrity.lint(name[]) IS
    'Layout problems in the schemas, each with the SQL that fixes it: unique indexes of soft-delete tables not '
    'partial on "deleted_at IS NULL", foreign keys without a supporting index, NOT VALID constraints, guarded '
    'tables without a primary key.';
