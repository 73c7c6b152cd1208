-- 15_row_key: a guard error names a row by the key its trigger reads from the
-- relcache and index catalog (src/trigger.rs row_key), a report by the key
-- integrity._key_columns() reads from the catalogs (violations(), lifecycle
-- events).  Both must name the same columns (in their own order: the error in
-- column order, the report as jsonb) for every kind of key.
\ir common/setup.sql
\set VERBOSITY default

CREATE TABLE rk_single (id int PRIMARY KEY, v int);
CREATE TABLE rk_composite (a int, b int, v int, PRIMARY KEY (b, a));
CREATE TABLE rk_identity (a int NOT NULL, b int NOT NULL, v int);
CREATE UNIQUE INDEX rk_identity_ba ON rk_identity (b, a);
ALTER TABLE rk_identity REPLICA IDENTITY USING INDEX rk_identity_ba;
CREATE TABLE rk_unique_only (a int NOT NULL UNIQUE, v int);
CREATE TABLE rk_pk_and_identity (id int PRIMARY KEY, a int NOT NULL UNIQUE, v int);
ALTER TABLE rk_pk_and_identity REPLICA IDENTITY USING INDEX rk_pk_and_identity_a_key;
CREATE TABLE rk_full (a int, v int);
ALTER TABLE rk_full REPLICA IDENTITY FULL;
CREATE TABLE rk_deferrable (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v int);
CREATE TABLE rk_parted (id int, part int, v int, PRIMARY KEY (part, id)) PARTITION BY LIST (part);
CREATE TABLE rk_parted_1 PARTITION OF rk_parted FOR VALUES IN (1);
CREATE TABLE rk_parted_nokey (id int, part int) PARTITION BY LIST (part);
CREATE TABLE rk_parted_nokey_1 PARTITION OF rk_parted_nokey FOR VALUES IN (1);
INSERT INTO rk_single VALUES (1, 1);
INSERT INTO rk_composite VALUES (1, 2, 3);
INSERT INTO rk_identity VALUES (1, 2, 3);
INSERT INTO rk_unique_only VALUES (1, 1);
INSERT INTO rk_pk_and_identity VALUES (1, 2, 3);
INSERT INTO rk_full VALUES (1, 1);
INSERT INTO rk_deferrable VALUES (1, 1);
INSERT INTO rk_parted VALUES (1, 1, 1);
INSERT INTO rk_parted_nokey VALUES (1, 1);

-- The columns the DETAIL of a refused DELETE names (ctid: the row's
-- location), and those a report names.
CREATE FUNCTION rk_compare(tbl regclass, OUT table_name regclass, OUT error_key text, OUT report_key text,
                           OUT same_columns boolean)
LANGUAGE plpgsql AS $$
BEGIN
    table_name := tbl;
    PERFORM integrity.protect_append_only(tbl);
    error_key := substring((SELECT e.detail FROM expect_error(format('DELETE FROM %s', tbl)) e)
                           FROM '^(?:Key|Row) \(([^)]*)\)=');
    report_key := array_to_string(coalesce(integrity._key_columns(tbl), '{ctid}'), ', ');
    same_columns := ARRAY(SELECT k FROM unnest(string_to_array(error_key, ', ')) k ORDER BY 1)
                  = ARRAY(SELECT k FROM unnest(string_to_array(report_key, ', ')) k ORDER BY 1);
END;
$$;
SELECT r.*
  FROM unnest(ARRAY['rk_single', 'rk_composite', 'rk_identity', 'rk_unique_only', 'rk_pk_and_identity',
                    'rk_full', 'rk_deferrable', 'rk_parted', 'rk_parted_nokey']::regclass[]) WITH ORDINALITY AS t(tbl, n)
 CROSS JOIN LATERAL rk_compare(t.tbl) r
 ORDER BY t.n;

\ir common/teardown.sql
