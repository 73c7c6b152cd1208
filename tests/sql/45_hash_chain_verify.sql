-- 45_hash_chain_verify: the encoding a row is hashed with, written by the
-- compiled integrity._chain_encoding(), is byte for byte the jsonb expression
-- it replaced (existing chains, dumps and upgraded clusters hold hashes made
-- with it); and verify_chain(), which reads the table in the order it holds
-- the rows, finds the same problems when the rows of a chain are out of
-- order, also when they are too many to wait and it reads in chain order.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Every kind of column a chain may hash, with the values that are written in
-- a form of their own: NULL, NaN and infinities, escapes and control
-- characters, non-ASCII text, BC dates, nested and empty arrays, json
-- (normalized as jsonb does), domains, enums, ranges.
CREATE TYPE hv_kind AS ENUM ('DEBIT', 'CREDIT');
CREATE DOMAIN hv_amount AS numeric(10, 3);
CREATE DOMAIN hv_note AS text;
CREATE TABLE hv_types (
    i2 int2, i4 int4, i8 int8, n numeric, dn hv_amount, b bool, t text, dt hv_note, vc varchar(20), bp char(6),
    d date, ts timestamp, tz timestamptz, j json, jb jsonb, k hv_kind, arr text[], iarr int[], narr numeric[],
    u uuid, r int4range, dr daterange, ip inet, o oid, nm name, c "char", x xml, p point,
    ba bytea, f8 float8, f4 float4, iv interval, m money
);
INSERT INTO hv_types VALUES
    (1, -2147483648, 9223372036854775807, 1.50, 2.5, true, E'a"b\\c\n\t\r\b\f' || chr(1) || chr(31) || chr(127) || 'zürich ✓',
     'x', 'v', 'ab', '2026-11-26', '2026-11-26 12:00:00.123456', '2026-11-26 12:00+01', '{"b": 1,  "a": [1.50, "x"]}',
     '{"b": 1, "a": [1.50, "x"]}', 'CREDIT', '{a,"b c",NULL}', '{{1,2},{3,4}}', '{1.0,NaN,Infinity}',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '[1,5)', '[2024-01-01,2024-02-01)', '10.0.0.1/8', 42, 'nm', 'c',
     '<a>x</a>', '(1,2)', '\x00ff', 0.1, 1.1, '1 year 2 mons 3 days 04:05:06.789', 12.34),
    (NULL, 0, -1, 'NaN', NULL, false, '', NULL, NULL, NULL, 'infinity', '-infinity', '-infinity', 'null', 'null', NULL,
     '{}', '{}', NULL, NULL, 'empty', NULL, NULL, NULL, NULL, NULL, NULL, NULL, '\x', 'NaN', '-Infinity', NULL, NULL),
    (-32768, 7, 0, 'Infinity', 0.000, NULL, 'ünï' || chr(27) || '"', 'y', '', '      ', '0044-03-15 BC',
     '1999-12-31 23:59:59', 'infinity', '[1, 2.000, 1e3]', '{"z": [], "a": {}}', 'DEBIT', '{"\""}', NULL, '{-0.00}',
     NULL, NULL, NULL, '::1', 0, '', NULL, NULL, NULL, NULL, '-Infinity', 'Infinity', '-1 day', -1),
    (5, NULL, NULL, '-Infinity', -1.5, NULL, NULL, NULL, NULL, NULL, '2000-01-01', '294276-12-31 23:59:59.999999',
     NULL, '"s"', '3.14', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0,
     NULL, NULL),
    (0, 0, 0, 0.000000000000000000001, 1234567.123, NULL, repeat('long ', 100000), NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, '1e-5', NULL, NULL, NULL, '{1e5}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, -0.0, -0.0,
     NULL, NULL);
-- The statement _chain_encoding_sql() writes, against the jsonb expression,
-- on every row and under other session settings.
CREATE FUNCTION hv_compare() RETURNS TABLE (rows bigint, equal bigint) LANGUAGE plpgsql AS $$
DECLARE
    columns text[] := ARRAY(SELECT attname::text FROM pg_attribute
                             WHERE attrelid = 'hv_types'::regclass AND attnum > 0 ORDER BY attnum);
BEGIN
    RETURN QUERY EXECUTE format('SELECT count(*), count(*) FILTER (WHERE %s = pg_catalog.convert_to(%s::text, ''UTF8''))'
                                ' FROM hv_types t',
                                integrity._chain_encoding_sql('hv_types', columns, 't'),
                                integrity._chain_values_sql('hv_types', columns, 't'));
END $$;
SELECT * FROM hv_compare();
SET TimeZone = 'Asia/Kolkata';
SET DateStyle = 'SQL, DMY';
SET IntervalStyle = 'sql_standard';
SET extra_float_digits = -3;
SET bytea_output = 'escape';
SELECT * FROM hv_compare();
RESET TimeZone;
RESET DateStyle;
RESET IntervalStyle;
RESET extra_float_digits;
RESET bytea_output;
-- Every character (the control characters are escaped), in text and as a
-- number.
SELECT count(*) AS characters,
       count(*) FILTER (WHERE integrity._chain_encoding(g, chr(g), g::numeric / 7)
                              = convert_to(jsonb_build_array(g, chr(g), g::numeric / 7)::text, 'UTF8')) AS equal
  FROM generate_series(1, 4000) AS g;
SELECT convert_from(integrity._chain_encoding(1::int2, 'a"b', NULL::text, 2.50, '2026-11-26'::date, '{"b":1}'::jsonb), 'UTF8');

-- The rows of a chain out of the order of their sequence numbers: rows
-- rewritten in place by a superuser with every trigger disabled (the same
-- values, so that the chains still hold) move to the end of the table.
CREATE TABLE hv_ledger (id int PRIMARY KEY, account int NOT NULL, amount numeric(12, 2) NOT NULL, note text,
                        chain_seq bigint, row_hash bytea);
SELECT integrity.enable_hash_chain('hv_ledger', ARRAY['account']);
INSERT INTO hv_ledger (id, account, amount, note)
SELECT g, g % 7, g / 100.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'entry ' || g END FROM generate_series(1, 2000) AS g;
SELECT integrity.chain_digest('hv_ledger') AS digest \gset
CREATE FUNCTION hv_unguard() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    ALTER EVENT TRIGGER integrity_ddl_command_start DISABLE;
    ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
    ALTER EVENT TRIGGER integrity_sql_drop DISABLE;
    ALTER TABLE hv_ledger DISABLE TRIGGER ALL;
END $$;
-- What verify_chain() finds, read as the table holds the rows and, with
-- too little work_mem for the rows that wait, again in chain order: the
-- scans of the table and of its chain index it took.
CREATE FUNCTION hv_scans() RETURNS bigint LANGUAGE sql AS $$
    SELECT pg_stat_get_xact_numscans('hv_ledger'::regclass) + pg_stat_get_xact_numscans('hv_ledger_chain'::regclass)
$$;
CREATE FUNCTION hv_verify(digest jsonb DEFAULT NULL)
RETURNS TABLE (work_mem text, scans bigint, chain jsonb, row_key jsonb, problem text)
LANGUAGE plpgsql AS $$
DECLARE
    before bigint;
    found jsonb;
BEGIN
    FOREACH work_mem IN ARRAY ARRAY['4MB', '64kB'] LOOP
        PERFORM set_config('work_mem', work_mem, true);
        before := hv_scans();
        found := (SELECT jsonb_agg(to_jsonb(v)) FROM integrity.verify_chain('hv_ledger', digest) v);
        scans := hv_scans() - before;
        RETURN QUERY SELECT work_mem, scans, (f ->> 'chain')::jsonb, (f ->> 'row_key')::jsonb, f ->> 'problem'
                       FROM jsonb_array_elements(coalesce(found, '[{}]')) AS f;
    END LOOP;
    RESET work_mem;
END $$;
BEGIN;
SELECT hv_unguard();
UPDATE hv_ledger SET amount = amount WHERE chain_seq % 3 <> 1;
UPDATE hv_ledger SET note = note WHERE chain_seq % 2 = 0;
UPDATE hv_ledger SET note = note WHERE chain_seq % 5 = 0;
SELECT count(*) AS rows_out_of_order
  FROM (SELECT chain_seq < lag(chain_seq) OVER (PARTITION BY account ORDER BY ctid) AS back FROM hv_ledger) s
 WHERE back;
SELECT * FROM hv_verify(:'digest');
-- Each tampering, on the rows out of order: a value rewritten, a middle
-- row deleted, two sequence numbers swapped, a sequence number twice, a row
-- without one, the first rows and the end of a chain removed.
SAVEPOINT s;
UPDATE hv_ledger SET amount = 1 WHERE account = 1 AND chain_seq = 200;
SELECT * FROM hv_verify();
ROLLBACK TO s;
DELETE FROM hv_ledger WHERE account = 2 AND chain_seq = 150;
SELECT * FROM hv_verify();
ROLLBACK TO s;
UPDATE hv_ledger SET chain_seq = CASE chain_seq WHEN 40 THEN 41 ELSE 40 END WHERE account = 3 AND chain_seq IN (40, 41);
SELECT * FROM hv_verify();
ROLLBACK TO s;
UPDATE hv_ledger SET chain_seq = 99 WHERE account = 4 AND chain_seq = 100;
SELECT * FROM hv_verify();
ROLLBACK TO s;
UPDATE hv_ledger SET chain_seq = NULL WHERE account = 5 AND chain_seq = 280;
SELECT * FROM hv_verify();
ROLLBACK TO s;
DELETE FROM hv_ledger WHERE account = 6 AND chain_seq <= 3;
DELETE FROM hv_ledger WHERE account = 0 AND chain_seq >= 280;
SELECT * FROM hv_verify(:'digest');
ROLLBACK;

-- A numeric chain column: 1.0, 1.00 and 1 are one chain (the trigger finds
-- a chain by the columns' equality), whose rows print differently in jsonb;
-- so are 2.5 and 2.50, which a purge anchors and a digest names as one of them.
CREATE TABLE hv_numeric (id int PRIMARY KEY, account numeric NOT NULL, amount int NOT NULL,
                         created_at timestamptz NOT NULL DEFAULT now(), chain_seq bigint, row_hash bytea);
SELECT integrity.enable_hash_chain('hv_numeric', ARRAY['account']);
INSERT INTO hv_numeric (id, account, amount, created_at) VALUES
    (1, 1.0, 10, now()), (2, 1.00, 20, now()), (3, 1, 30, now()),
    (4, 2.50, 40, now() - interval '3 years'), (5, 2.5, 50, now()), (6, 2.500, 60, now());
SELECT id, account, chain_seq FROM hv_numeric ORDER BY id;
SELECT count(*) AS problems FROM integrity.verify_chain('hv_numeric');
SELECT integrity.set_retention('hv_numeric', interval '2 years');
SELECT integrity.purge_expired('hv_numeric');
SELECT chain, seq FROM integrity.chain_anchors WHERE table_name = 'hv_numeric'::regclass;
SELECT integrity.chain_digest('hv_numeric') AS numeric_digest \gset
SELECT count(*) AS problems FROM integrity.verify_chain('hv_numeric', :'numeric_digest');
-- A rewritten amount is still found, in its one chain.
BEGIN;
ALTER EVENT TRIGGER integrity_ddl_command_start DISABLE;
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
ALTER TABLE hv_numeric DISABLE TRIGGER ALL;
UPDATE hv_numeric SET amount = 21 WHERE id = 2;
SELECT chain, row_key, problem FROM integrity.verify_chain('hv_numeric', :'numeric_digest');
ROLLBACK;

SELECT integrity.unprotect(t) FROM unnest(ARRAY['hv_ledger', 'hv_numeric']::regclass[]) AS t;
DROP TABLE hv_types, hv_ledger, hv_numeric;
DROP FUNCTION hv_compare(), hv_unguard(), hv_verify(jsonb), hv_scans();
DROP TYPE hv_kind;
DROP DOMAIN hv_amount, hv_note;

\ir common/teardown.sql
