-- 45_hash_chain: integrity.enable_hash_chain, verify_chain and chain_digest
-- (issue 11, items 2 and 3).  Every INSERT is numbered within its chain and
-- hashed with the chain's previous row; verify_chain() finds every change a
-- superuser can make with all triggers and event triggers disabled, and, with
-- a digest kept outside, a removed or re-forged end of a chain.
\ir common/setup.sql
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Guide 000's ledger: one chain per retailer-wholesaler account.
CREATE TABLE hc_ledger (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id   int NOT NULL,
    wholesaler_id int NOT NULL,
    entry_type    text NOT NULL,
    amount        numeric(12, 2) NOT NULL,
    booked_at     timestamptz NOT NULL,
    chain_seq     bigint,
    row_hash      bytea
);
-- Rows that are there before the chain is registered are chained in key order.
INSERT INTO hc_ledger (retailer_id, wholesaler_id, entry_type, amount, booked_at)
VALUES (1, 1, 'DEBIT', 100.00, '2026-11-01 09:00+00'), (1, 2, 'DEBIT', 50.00, '2026-11-01 10:00+00'),
       (1, 1, 'CREDIT', 30.00, '2026-11-02 09:00+00');
SELECT integrity.enable_hash_chain('hc_ledger', ARRAY['retailer_id', 'wholesaler_id']);
SELECT id, retailer_id, wholesaler_id, chain_seq, octet_length(row_hash) AS hash_bytes FROM hc_ledger ORDER BY id;
SELECT guard, columns, options - 'hashed_columns' AS options, options -> 'hashed_columns' AS hashed
  FROM integrity.guards WHERE table_name = 'hc_ledger'::regclass ORDER BY guard;
-- Registering again changes nothing.
SELECT integrity.enable_hash_chain('hc_ledger', ARRAY['retailer_id', 'wholesaler_id']);
SELECT count(*) AS chained_rows FROM hc_ledger WHERE chain_seq IS NOT NULL;

-- New rows: what a client sends for the sequence and the hash is replaced;
-- several rows of one chain in one statement follow each other.
INSERT INTO hc_ledger (retailer_id, wholesaler_id, entry_type, amount, booked_at, chain_seq, row_hash)
VALUES (1, 1, 'DEBIT', 20.00, '2026-11-03 09:00+00', 42, '\xdeadbeef'),
       (1, 1, 'DEBIT', 5.00, '2026-11-03 10:00+00', NULL, NULL),
       (2, 1, 'DEBIT', 7.50, '2026-11-03 11:00+00', NULL, NULL);
SELECT id, retailer_id, wholesaler_id, chain_seq, row_hash <> '\xdeadbeef' AS replaced
  FROM hc_ledger ORDER BY id;
-- Each hash is SHA-256 of the previous row's hash and the row's encoding.
SELECT b.row_hash = sha256(a.row_hash || convert_to(jsonb_build_array(b.id, b.retailer_id, b.wholesaler_id,
                                                      b.entry_type, b.amount, b.booked_at AT TIME ZONE 'UTC')::text,
                                                      'UTF8')) AS linked
  FROM hc_ledger a JOIN hc_ledger b USING (retailer_id, wholesaler_id)
 WHERE b.chain_seq = a.chain_seq + 1 AND a.retailer_id = 1 AND a.wholesaler_id = 1 AND a.chain_seq = 2;
COPY hc_ledger (retailer_id, wholesaler_id, entry_type, amount, booked_at) FROM stdin;
1	2	DEBIT	12.00	2026-11-04 09:00+00
1	2	CREDIT	2.00	2026-11-04 10:00+00
\.
SELECT retailer_id, wholesaler_id, array_agg(chain_seq ORDER BY id) AS seqs FROM hc_ledger GROUP BY 1, 2 ORDER BY 1, 2;
SELECT * FROM integrity.verify_chain('hc_ledger');
SELECT d -> 'table' AS digest_table, jsonb_array_length(d -> 'chains') AS chains,
       d -> 'chains' -> 0 -> 'chain' AS first_chain, d -> 'chains' -> 0 -> 'seq' AS first_seq
  FROM integrity.chain_digest('hc_ledger') AS d;
SELECT integrity.chain_digest('hc_ledger') AS digest \gset

-- The table is append-only too.
SELECT sqlstate, message FROM expect_error($$UPDATE hc_ledger SET amount = 1 WHERE id = 1$$);
SELECT sqlstate, message FROM expect_error($$DELETE FROM hc_ledger WHERE id = 1$$);

-- The encoding does not depend on the session: rows written under one set of
-- settings verify under another.
CREATE TYPE hc_kind AS ENUM ('DEBIT', 'CREDIT');
CREATE TABLE hc_settings (
    id       int PRIMARY KEY,
    at       timestamptz, day date, local_at timestamp, span interval, ratio float8, small float4,
    raw      bytea, doc jsonb, kind hc_kind, tags text[], note text, price numeric,
    chain_seq bigint, row_hash bytea
);
SELECT integrity.enable_hash_chain('hc_settings');
SET TimeZone = 'America/New_York';
SET DateStyle = 'SQL, DMY';
SET IntervalStyle = 'sql_standard';
SET extra_float_digits = -3;
SET bytea_output = 'escape';
INSERT INTO hc_settings (id, at, day, local_at, span, ratio, small, raw, doc, kind, tags, note, price)
VALUES (1, '2026-11-26 12:00:00.123456+01', '2026-11-26', '2026-11-26 12:00', '1 year 2 mons 3 days 04:05:06.789',
        0.1 + 0.2, 1.1, '\x00ff', '{"b": 1, "a": [1.50, "x"]}', 'CREDIT', '{a,"b c"}', 'zürich ✓', 1.50),
       (2, NULL, NULL, NULL, NULL, 'NaN', '-Infinity', NULL, 'null', NULL, '{}', '', 'NaN');
RESET TimeZone;
RESET DateStyle;
RESET IntervalStyle;
RESET extra_float_digits;
RESET bytea_output;
SELECT * FROM integrity.verify_chain('hc_settings');
SET TimeZone = 'Asia/Kolkata';
SET extra_float_digits = 3;
SELECT * FROM integrity.verify_chain('hc_settings');
RESET TimeZone;
RESET extra_float_digits;

-- Tampering, each time by a superuser with every trigger and event trigger
-- disabled, and rolled back afterwards.
CREATE FUNCTION hc_unguard() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    ALTER EVENT TRIGGER integrity_ddl_command_start DISABLE;
    ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
    ALTER EVENT TRIGGER integrity_sql_drop DISABLE;
    ALTER TABLE hc_ledger DISABLE TRIGGER ALL;
END $$;
-- A value rewritten.
BEGIN;
SELECT hc_unguard();
UPDATE hc_ledger SET amount = 200.00 WHERE id = 3;
SELECT * FROM integrity.verify_chain('hc_ledger');
ROLLBACK;
-- A hash rewritten to match the new value: the next row no longer links.
BEGIN;
SELECT hc_unguard();
UPDATE hc_ledger t SET amount = 200.00,
       row_hash = sha256(p.row_hash || convert_to(jsonb_build_array(t.id, t.retailer_id, t.wholesaler_id,
                                                  t.entry_type, 200.00::numeric(12,2),
                                                  t.booked_at AT TIME ZONE 'UTC')::text, 'UTF8'))
  FROM hc_ledger p WHERE t.id = 3 AND p.id = 1;
SELECT * FROM integrity.verify_chain('hc_ledger');
ROLLBACK;
-- A middle row deleted.
BEGIN;
SELECT hc_unguard();
DELETE FROM hc_ledger WHERE id = 3;
SELECT * FROM integrity.verify_chain('hc_ledger');
ROLLBACK;
-- The first row deleted.
BEGIN;
SELECT hc_unguard();
DELETE FROM hc_ledger WHERE id = 2;
SELECT * FROM integrity.verify_chain('hc_ledger');
ROLLBACK;
-- Two rows swapped (their sequence numbers exchanged).
BEGIN;
SELECT hc_unguard();
UPDATE hc_ledger SET chain_seq = CASE chain_seq WHEN 3 THEN 4 ELSE 3 END
 WHERE retailer_id = 1 AND wholesaler_id = 1 AND chain_seq IN (3, 4);
SELECT * FROM integrity.verify_chain('hc_ledger');
ROLLBACK;
-- A row inserted while the trigger was disabled.
BEGIN;
SELECT hc_unguard();
INSERT INTO hc_ledger (retailer_id, wholesaler_id, entry_type, amount, booked_at)
VALUES (2, 1, 'CREDIT', 7.50, '2026-11-05 09:00+00');
SELECT * FROM integrity.verify_chain('hc_ledger');
ROLLBACK;
-- The end of a chain removed: only the digest tells.
BEGIN;
SELECT hc_unguard();
DELETE FROM hc_ledger WHERE retailer_id = 1 AND wholesaler_id = 2 AND chain_seq = 3;
SELECT * FROM integrity.verify_chain('hc_ledger');
SELECT * FROM integrity.verify_chain('hc_ledger', :'digest');
ROLLBACK;
-- A whole chain removed.
BEGIN;
SELECT hc_unguard();
DELETE FROM hc_ledger WHERE retailer_id = 2;
SELECT * FROM integrity.verify_chain('hc_ledger', :'digest');
ROLLBACK;
-- A re-forged suffix: the last two rows deleted and other rows inserted
-- through the trigger.  The chain holds together; the digest does not match.
BEGIN;
SELECT hc_unguard();
DELETE FROM hc_ledger WHERE retailer_id = 1 AND wholesaler_id = 1 AND chain_seq >= 4;
ALTER TABLE hc_ledger ENABLE ALWAYS TRIGGER integrity_hash_chain;
INSERT INTO hc_ledger (retailer_id, wholesaler_id, entry_type, amount, booked_at)
VALUES (1, 1, 'DEBIT', 1.00, '2026-11-03 09:00+00'), (1, 1, 'DEBIT', 1.00, '2026-11-03 10:00+00');
SELECT * FROM integrity.verify_chain('hc_ledger');
SELECT * FROM integrity.verify_chain('hc_ledger', :'digest');
ROLLBACK;
SELECT * FROM integrity.verify_chain('hc_ledger', :'digest');

-- Columns: added ones are not hashed (the rows before them verify as they
-- were); hashed ones cannot be renamed or dropped; the chain's own columns
-- neither.
ALTER TABLE hc_ledger ADD COLUMN memo text;
INSERT INTO hc_ledger (retailer_id, wholesaler_id, entry_type, amount, booked_at, memo)
VALUES (1, 1, 'DEBIT', 3.00, '2026-11-06 09:00+00', 'added later');
SELECT * FROM integrity.verify_chain('hc_ledger');
-- Registering again keeps the hashed columns; other chain columns are refused.
SELECT integrity.enable_hash_chain('hc_ledger', ARRAY['retailer_id', 'wholesaler_id']);
SELECT options -> 'hashed_columns' AS hashed FROM integrity.guards
 WHERE table_name = 'hc_ledger'::regclass AND guard = 'hash_chain';
SELECT * FROM integrity.verify_chain('hc_ledger');
SELECT sqlstate, message, hint FROM expect_error($$SELECT integrity.enable_hash_chain('hc_ledger', ARRAY['retailer_id'])$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hc_ledger RENAME COLUMN entry_type TO kind$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hc_ledger RENAME COLUMN row_hash TO h$$);
SELECT sqlstate, message FROM expect_error($$DROP TRIGGER integrity_hash_chain ON hc_ledger$$);
SELECT sqlstate, message FROM expect_error($$ALTER TABLE hc_ledger DISABLE TRIGGER integrity_hash_chain$$);

-- A role that may only INSERT still chains its rows.
CREATE ROLE regress_integrity_clerk;
GRANT INSERT ON hc_ledger TO regress_integrity_clerk;
SET ROLE regress_integrity_clerk;
INSERT INTO hc_ledger (retailer_id, wholesaler_id, entry_type, amount, booked_at)
VALUES (1, 2, 'DEBIT', 1.00, '2026-11-07 09:00+00');
RESET ROLE;
SELECT retailer_id, wholesaler_id, max(chain_seq) FROM hc_ledger WHERE retailer_id = 1 AND wholesaler_id = 2 GROUP BY 1, 2;
SELECT * FROM integrity.verify_chain('hc_ledger');

-- A partitioned ledger: one chain across the partitions, whichever a row is
-- inserted through.
CREATE TABLE hc_monthly (id int NOT NULL, booked date NOT NULL, amount numeric NOT NULL,
                         chain_seq bigint, row_hash bytea, PRIMARY KEY (id, booked)) PARTITION BY RANGE (booked);
CREATE TABLE hc_monthly_11 PARTITION OF hc_monthly FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE hc_monthly_12 PARTITION OF hc_monthly FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
SELECT integrity.enable_hash_chain('hc_monthly');
INSERT INTO hc_monthly (id, booked, amount) VALUES (1, '2026-11-30', 1), (2, '2026-12-01', 2);
INSERT INTO hc_monthly_11 (id, booked, amount) VALUES (3, '2026-11-15', 3);
SELECT tableoid::regclass AS partition, id, chain_seq FROM hc_monthly ORDER BY chain_seq;
SELECT * FROM integrity.verify_chain('hc_monthly');

-- A ledger that is append-only already, with rows: they are chained too (the
-- append-only guard is lifted for it and put back, allow_truncate included).
CREATE TABLE hc_old (id int PRIMARY KEY, amount numeric NOT NULL, chain_seq bigint, row_hash bytea);
INSERT INTO hc_old VALUES (1, 10), (2, 20);
SELECT integrity.protect_append_only('hc_old', allow_truncate => true);
SELECT integrity.enable_hash_chain('hc_old');
SELECT id, chain_seq, row_hash IS NOT NULL AS hashed FROM hc_old ORDER BY id;
SELECT guard, options - 'hashed_columns' AS options FROM integrity.guards WHERE table_name = 'hc_old'::regclass ORDER BY 1;
SELECT * FROM integrity.verify_chain('hc_old');

-- One statement that starts 20,000 chains: the lock table does not fill up
-- (a lock per chain held to the end of the transaction used to run it out of
-- shared memory).  The table was analyzed while empty: the chain's last row
-- is still found through the chain index, never by scanning the table (which
-- made a bulk insert take time quadratic in its rows).
CREATE TABLE hc_many (id int PRIMARY KEY, account int NOT NULL, amount numeric NOT NULL,
                      chain_seq bigint, row_hash bytea);
SELECT integrity.enable_hash_chain('hc_many', ARRAY['account']);
VACUUM (ANALYZE) hc_many;
BEGIN;
SELECT pg_stat_get_xact_numscans('hc_many'::regclass) AS scans_before \gset
INSERT INTO hc_many SELECT g, g, 1 FROM generate_series(1, 20000) AS g;
INSERT INTO hc_many SELECT 20000 + g, g, 2 FROM generate_series(1, 20000) AS g;
SELECT count(*) FILTER (WHERE locktype = 'advisory') <= 256 AS few_advisory_locks
  FROM pg_locks WHERE pid = pg_backend_pid();
-- Past 250 chains it holds the table in SHARE ROW EXCLUSIVE mode (every
-- insert's ROW EXCLUSIVE lock conflicts with it), with no all-chains lock.
SELECT bool_or(mode = 'ShareRowExclusiveLock') FILTER (WHERE relation = 'hc_many'::regclass) AS table_locked,
       count(*) FILTER (WHERE locktype = 'advisory' AND objsubid = 18500) AS all_chains_locks
  FROM pg_locks WHERE pid = pg_backend_pid();
SELECT pg_stat_get_xact_numscans('hc_many'::regclass) - :scans_before AS sequential_scans;
COMMIT;
SELECT chain_seq, count(*) FROM hc_many GROUP BY 1 ORDER BY 1;
SELECT count(*) AS problems FROM integrity.verify_chain('hc_many');

-- Registration errors.
CREATE TABLE hc_bad (id int PRIMARY KEY, account int, at timestamptz[], chain_seq int, row_hash text,
                     seq2 bigint, hash2 bytea, pair hc_settings);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.enable_hash_chain('hc_bad', seq_column => 'nope')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.enable_hash_chain('hc_bad')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.enable_hash_chain('hc_bad', seq_column => 'seq2')$$);
SELECT sqlstate, message, hint FROM expect_error($$SELECT integrity.enable_hash_chain('hc_bad', ARRAY['account'], seq_column => 'seq2', hash_column => 'hash2')$$);
ALTER TABLE hc_bad ALTER COLUMN account SET NOT NULL;
SELECT sqlstate, message FROM expect_error($$SELECT integrity.enable_hash_chain('hc_bad', ARRAY['account'], seq_column => 'seq2', hash_column => 'hash2')$$);
ALTER TABLE hc_bad DROP COLUMN at;
SELECT sqlstate, message FROM expect_error($$SELECT integrity.enable_hash_chain('hc_bad', ARRAY['account'], seq_column => 'seq2', hash_column => 'hash2')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.enable_hash_chain('hc_bad', ARRAY['nope'], seq_column => 'seq2', hash_column => 'hash2')$$);
SELECT count(*) AS hc_bad_guards FROM integrity.guards WHERE table_name = 'hc_bad'::regclass;
SELECT sqlstate, message FROM expect_error($$SELECT * FROM integrity.verify_chain('hc_bad')$$);
SELECT sqlstate, message FROM expect_error($$SELECT * FROM integrity.verify_chain('hc_ledger', '{"chains": 1}')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.chain_digest('hc_bad')$$);

-- health() knows the chain's trigger; unprotect lifts the chain, and the
-- table stays append-only.
SELECT count(*) AS problems FROM integrity.health() WHERE table_name::text LIKE 'hc\_%';
SELECT integrity.unprotect('hc_ledger', 'hash_chain');
SELECT guard FROM integrity.guards WHERE table_name = 'hc_ledger'::regclass;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'hc_ledger'::regclass AND tgname LIKE 'integrity%' ORDER BY 1;

-- The trigger reads a chain's last row by the chain index and hashes the row
-- itself, or, without a row or without the index, runs the link statement:
-- both chain alike, whatever the session's search_path and TimeZone (a
-- regclass is written as pg_catalog's path would write it).
CREATE SCHEMA hc_path;
CREATE TABLE hc_path.hc_direct (id int PRIMARY KEY, account int NOT NULL, ref regclass NOT NULL,
                                at timestamptz NOT NULL, chain_seq bigint, row_hash bytea);
SELECT integrity.enable_hash_chain('hc_path.hc_direct', ARRAY['account']);
SET search_path = hc_path, public;
SET TimeZone = 'Asia/Tokyo';
INSERT INTO hc_direct VALUES (1, 1, 'hc_direct', '2026-01-01 10:00+00'), (2, 1, 'hc_direct', '2026-01-02 10:00+00'),
                             (3, 2, 'hc_direct', '2026-01-03 10:00+00');
INSERT INTO hc_direct VALUES (4, 1, 'hc_direct', '2026-01-04 10:00+00');
RESET search_path;
RESET TimeZone;
DROP INDEX hc_path.hc_direct_chain;
INSERT INTO hc_path.hc_direct VALUES (5, 1, 'hc_path.hc_direct', '2026-01-05 10:00+00');
SELECT id, account, chain_seq FROM hc_path.hc_direct ORDER BY id;
SELECT count(*) AS problems FROM integrity.verify_chain('hc_path.hc_direct');
SET client_min_messages = warning;
SELECT integrity.unprotect('hc_path.hc_direct');
RESET client_min_messages;
DROP SCHEMA hc_path CASCADE;

-- A row inserted out of band (no trigger fires for a replica session) has no
-- sequence number: the chain goes on from its last chained row, read through
-- the chain index under READ COMMITTED and by the link statement as well
-- under REPEATABLE READ (which must agree, or the insert would get 40001);
-- verify_chain() reports the row.
CREATE TABLE hc_band (id int PRIMARY KEY, account int NOT NULL, chain_seq bigint, row_hash bytea);
SELECT integrity.enable_hash_chain('hc_band', ARRAY['account']);
INSERT INTO hc_band (id, account) VALUES (1, 1);
INSERT INTO hc_band (id, account) VALUES (2, 1);
SET session_replication_role = replica;
INSERT INTO hc_band (id, account) VALUES (3, 1);
RESET session_replication_role;
INSERT INTO hc_band (id, account) VALUES (4, 1);
BEGIN ISOLATION LEVEL REPEATABLE READ;
INSERT INTO hc_band (id, account) VALUES (5, 1);
COMMIT;
INSERT INTO hc_band (id, account) VALUES (6, 1), (7, 2);
SELECT id, account, chain_seq, length(row_hash) AS hash_length FROM hc_band ORDER BY id;
SELECT * FROM integrity.verify_chain('hc_band');

SELECT integrity.unprotect(t) FROM unnest(ARRAY['hc_ledger', 'hc_settings', 'hc_monthly', 'hc_old', 'hc_many', 'hc_band']::regclass[]) AS t;
DROP TABLE hc_ledger, hc_settings, hc_monthly, hc_bad, hc_old, hc_many, hc_band;
DROP TYPE hc_kind;
DROP FUNCTION hc_unguard();
DROP ROLE regress_integrity_clerk;

\ir common/teardown.sql
