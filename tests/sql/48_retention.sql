-- 48_retention: set_retention() and purge_expired() on append-only and
-- hash-chained ledgers (guide 000: entries older than two years are
-- archived); DETACH PARTITION of a month past the retention.
\ir common/setup.sql
\set VERBOSITY default
CREATE SCHEMA rt;
SET search_path = rt, public;

-- An append-only ledger, entries from 2023 to 2026.
CREATE TABLE ledger_entries (
    id          integer PRIMARY KEY,
    retailer_id integer NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    created_at  timestamptz NOT NULL
);
INSERT INTO ledger_entries
SELECT i, 1 + i % 3, i, timestamptz '2023-01-01 00:00+00' + (i - 1) * interval '30 days'
  FROM generate_series(1, 48) AS i;
CREATE TABLE ledger_archive (LIKE ledger_entries);
SELECT integrity.protect_append_only('ledger_entries');
SELECT integrity.set_retention('ledger_entries', '2 years');
SELECT options FROM integrity.guards WHERE table_name = 'ledger_entries'::regclass;
-- Registering the guard again keeps the retention; so does a second call.
SELECT integrity.protect_append_only('ledger_entries');
SELECT integrity.set_retention('ledger_entries', '2 years');
SELECT options FROM integrity.guards WHERE table_name = 'ledger_entries'::regclass;

-- A purge that fails (the archive refuses the rows) purges nothing and, even
-- when the caller catches the error, leaves the guard in force.
CREATE TABLE strict_archive (LIKE ledger_entries, CHECK (amount < 0));
SELECT sqlstate, constraint_name FROM expect_error($$SELECT integrity.purge_expired('rt.ledger_entries', 'rt.strict_archive')$$);
SELECT sqlstate FROM expect_error($$DELETE FROM rt.ledger_entries WHERE id = 1$$);
SELECT count(*) AS total FROM ledger_entries;

-- Rows past the retention move into the archive, in one statement.
SELECT count(*) FILTER (WHERE created_at < now() - interval '2 years') AS expired, count(*) AS total
  FROM ledger_entries \gset
SELECT integrity.purge_expired('ledger_entries', 'ledger_archive') = :expired AS all_expired_moved;
SELECT count(*) = :total - :expired AS rest_kept, min(created_at) >= now() - interval '2 years' AS only_young
  FROM ledger_entries;
SELECT count(*) = :expired AS archived FROM ledger_archive;
-- Nothing more to purge; the younger rows still cannot be deleted.
SELECT integrity.purge_expired('ledger_entries');
SELECT sqlstate, message FROM expect_error($$DELETE FROM rt.ledger_entries WHERE id = 48$$);
-- The retention's time column cannot be renamed or dropped.
SELECT sqlstate FROM expect_error($$ALTER TABLE rt.ledger_entries RENAME COLUMN created_at TO booked_at$$);
-- An archive without the table's columns is refused.
CREATE TABLE narrow_archive (id integer);
SELECT sqlstate, message, detail FROM expect_error($$SELECT integrity.purge_expired('rt.ledger_entries', 'rt.narrow_archive')$$);

-- Errors, each with its SQLSTATE.
CREATE TABLE plain (id integer PRIMARY KEY, created_at timestamptz, note text);
CREATE ROLE rt_stranger;
GRANT USAGE ON SCHEMA rt TO rt_stranger;
SELECT n, sqlstate, message FROM (VALUES
    (1, $$SELECT integrity.set_retention('rt.plain', '1 year')$$),
    (2, $$SELECT integrity.set_retention('rt.ledger_entries', '0')$$),
    (3, $$SELECT integrity.set_retention('rt.ledger_entries', '1 year', 'amount')$$),
    (4, $$SELECT integrity.set_retention('rt.ledger_entries', '1 year', 'no_such_column')$$),
    (5, $$SELECT integrity.set_retention('rt.ledger_entries', '1 year', NULL)$$),
    (6, $$SELECT integrity.purge_expired('rt.plain')$$),
    (7, $$SELECT integrity.purge_expired('rt.ledger_entries', 'rt.ledger_entries')$$),
    (8, $$SELECT integrity.purge_expired(NULL)$$)
  ) AS c(n, call), expect_error(c.call) e
 ORDER BY n;
SET ROLE rt_stranger;
SELECT sqlstate, message FROM expect_error($$SELECT integrity.purge_expired('rt.ledger_entries')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.set_retention('rt.ledger_entries', '1 year')$$);
-- Nor can anyone else write the anchors of a table they do not own.
SELECT sqlstate FROM expect_error($$INSERT INTO integrity.chain_anchors VALUES ('rt.ledger_entries', '[]', 1, '\x00')$$);
RESET ROLE;
-- NULL: every row is kept again.
SELECT integrity.set_retention('ledger_entries', NULL);
SELECT options FROM integrity.guards WHERE table_name = 'ledger_entries'::regclass;
SELECT sqlstate FROM expect_error($$SELECT integrity.purge_expired('rt.ledger_entries')$$);

-- A hash-chained ledger, one chain per retailer.  A purge removes a prefix of
-- each chain, all of it when every row is past the retention; the chains
-- verify afterwards, also against a digest taken before, and the next entry
-- continues its chain, from the chain's anchor when no row is left.
CREATE TABLE chained (
    id          integer PRIMARY KEY,
    retailer_id integer NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    booked_on   date NOT NULL,
    chain_seq   bigint,
    row_hash    bytea
);
SELECT integrity.enable_hash_chain('chained', ARRAY['retailer_id']);
-- Retailer 3's entries are all old: they all go.
INSERT INTO chained (id, retailer_id, amount, booked_on)
SELECT i, CASE WHEN i <= 40 THEN 1 + i % 2 ELSE 3 END, i, date '2022-01-01' + (i - 1) * 45
  FROM generate_series(1, 40) AS i
UNION ALL
SELECT 40 + i, 3, i, date '2022-01-01' + i FROM generate_series(1, 5) AS i;
CREATE TABLE chained_archive (LIKE chained);
SELECT integrity.chain_digest('chained') AS digest \gset
SELECT integrity.set_retention('chained', '2 years', 'booked_on');
SELECT retailer_id, count(*) AS entries, max(chain_seq) AS last_seq,
       count(*) FILTER (WHERE booked_on < current_date - interval '2 years') AS expired
  FROM chained GROUP BY 1 ORDER BY 1;
SELECT integrity.purge_expired('chained', 'chained_archive');
SELECT retailer_id, count(*) AS entries, min(chain_seq) AS first_seq, max(chain_seq) AS last_seq
  FROM chained GROUP BY 1 ORDER BY 1;
SELECT chain, seq FROM integrity.chain_anchors WHERE table_name = 'chained'::regclass ORDER BY chain;
SELECT count(*) FROM integrity.verify_chain('chained') AS problems;
SELECT count(*) FROM integrity.verify_chain('chained', :'digest') AS problems_against_the_old_digest;
-- Retailer 3's chain has no row left: its anchor is what the digest checks.
BEGIN;
UPDATE integrity.chain_anchors SET hash = '\x00' WHERE table_name = 'chained'::regclass AND chain = '[3]';
SELECT chain, problem FROM integrity.verify_chain('chained', :'digest');
ROLLBACK;
-- The archive keeps the purged rows with their places and hashes.
SELECT count(*) AS archived, count(DISTINCT row_hash) AS hashes FROM chained_archive;
INSERT INTO chained (id, retailer_id, amount, booked_on) VALUES (100, 3, 1, current_date) RETURNING chain_seq;
SELECT count(*) FROM integrity.verify_chain('chained') AS problems_after_insert;
-- Tampering after the purge is still found: a superuser removes the first
-- remaining row of retailer 1 with every trigger disabled.
BEGIN;
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
ALTER TABLE chained DISABLE TRIGGER ALL;
DELETE FROM chained WHERE id = (SELECT id FROM chained WHERE retailer_id = 1 ORDER BY chain_seq LIMIT 1);
SELECT chain, regexp_replace(problem, '[0-9]+', 'N', 'g') AS problem FROM integrity.verify_chain('chained');
ROLLBACK;

-- A monthly-partitioned ledger: a month past the retention can be detached
-- (then archived or dropped as an ordinary table) or dropped; a younger one
-- cannot, neither alone nor with an old one.
CREATE TABLE by_month (
    id         integer NOT NULL,
    amount     numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE by_month_2023_01 PARTITION OF by_month FOR VALUES FROM ('2023-01-01 00:00+00') TO ('2023-02-01 00:00+00');
CREATE TABLE by_month_now PARTITION OF by_month
    FOR VALUES FROM ('2023-02-01 00:00+00') TO (MAXVALUE);
INSERT INTO by_month VALUES (1, 10, '2023-01-15 00:00+00'), (2, 20, now());
SELECT integrity.protect_append_only('by_month');
SELECT sqlstate FROM expect_error($$ALTER TABLE rt.by_month DETACH PARTITION rt.by_month_2023_01$$);
SELECT integrity.set_retention('by_month', '2 years');
SELECT sqlstate, message FROM expect_error($$ALTER TABLE rt.by_month DETACH PARTITION rt.by_month_now$$);
SELECT sqlstate, message FROM expect_error($$DROP TABLE rt.by_month_now$$);
SELECT sqlstate, message FROM expect_error($$DROP TABLE rt.by_month_2023_01, rt.by_month_now$$);
ALTER TABLE by_month DETACH PARTITION by_month_2023_01;
DROP TABLE by_month_2023_01;
SELECT id FROM by_month ORDER BY id;
-- Dropped directly, also a month partitioned by day; before the retention
-- was set, the same DROP was refused.
CREATE TABLE by_month_2022_12 PARTITION OF by_month FOR VALUES FROM ('2022-12-01 00:00+00') TO ('2023-01-01 00:00+00')
    PARTITION BY RANGE (created_at);
CREATE TABLE by_month_2022_12_d1 PARTITION OF by_month_2022_12 FOR VALUES FROM ('2022-12-01 00:00+00') TO ('2022-12-02 00:00+00');
INSERT INTO by_month VALUES (3, 30, '2022-12-01 12:00+00');
SELECT integrity.set_retention('by_month', '10 years');
SELECT sqlstate, message FROM expect_error($$DROP TABLE rt.by_month_2022_12$$);
SELECT integrity.set_retention('by_month', '2 years');
DROP TABLE by_month_2022_12;
SELECT id FROM by_month ORDER BY id;

-- A hash-chained ledger partitioned by month, one chain per retailer: a
-- month past the retention that holds the first rows of every chain it has
-- rows of can be detached (it keeps its rows with their hashes: the archive)
-- or dropped; the anchors of its chains move past it first, so the chains
-- verify afterwards, also against a digest taken before.  A younger month, a
-- month that is not the start of a chain and a concurrent detach are refused.
CREATE TABLE chained_months (
    id          integer NOT NULL,
    retailer_id integer NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    booked_on   date NOT NULL,
    chain_seq   bigint,
    row_hash    bytea,
    PRIMARY KEY (id, booked_on)
) PARTITION BY RANGE (booked_on);
CREATE TABLE chained_2020_01 PARTITION OF chained_months FOR VALUES FROM ('2020-01-01') TO ('2020-02-01');
CREATE TABLE chained_2020_02 PARTITION OF chained_months FOR VALUES FROM ('2020-02-01') TO ('2020-03-01');
CREATE TABLE chained_2020_03 PARTITION OF chained_months FOR VALUES FROM ('2020-03-01') TO ('2020-04-01');
CREATE TABLE chained_later PARTITION OF chained_months FOR VALUES FROM ('2020-04-01') TO (MAXVALUE);
SELECT integrity.enable_hash_chain('chained_months', ARRAY['retailer_id']);
SELECT integrity.set_retention('chained_months', '2 years', 'booked_on');
-- Retailer 2's chain is all in January; retailer 3's second entry is booked
-- back into March, after its first one of today.
INSERT INTO chained_months (id, retailer_id, amount, booked_on) VALUES
    (1, 1, 10, '2020-01-05'), (2, 1, 11, '2020-01-06'), (3, 2, 12, '2020-01-07'), (4, 2, 13, '2020-01-08'),
    (5, 1, 14, '2020-02-05'), (6, 1, 15, '2020-02-06'), (7, 3, 16, current_date),
    (8, 1, 17, '2020-03-05'), (9, 1, 18, '2020-03-06'), (10, 3, 19, '2020-03-07'), (11, 1, 20, current_date);
SELECT tableoid::regclass AS month, retailer_id, array_agg(chain_seq ORDER BY chain_seq) AS seqs
  FROM chained_months GROUP BY 1, 2 ORDER BY 1, 2;
SELECT integrity.chain_digest('chained_months') AS months_digest \gset
SELECT sqlstate, message FROM expect_error($$ALTER TABLE rt.chained_months DETACH PARTITION rt.chained_later$$);
SELECT sqlstate, message FROM expect_error($$DROP TABLE rt.chained_later$$);
SELECT sqlstate, message, detail, hint FROM expect_error($$ALTER TABLE rt.chained_months DETACH PARTITION rt.chained_2020_02$$);
SELECT sqlstate, message, detail, schema_name, table_name FROM expect_error($$DROP TABLE rt.chained_2020_03$$);
-- Newest first in one command: February is refused while January is there.
SELECT sqlstate, message, detail FROM expect_error($$DROP TABLE rt.chained_2020_02, rt.chained_2020_01$$);
-- Only the owner of the chained table moves its anchors.
SET ROLE rt_stranger;
SELECT sqlstate, message FROM expect_error($$ALTER TABLE rt.chained_months DETACH PARTITION rt.chained_2020_01$$);
RESET ROLE;
-- A concurrent detach is refused (outside a transaction block, where it runs).
ALTER TABLE chained_months DETACH PARTITION chained_2020_01 CONCURRENTLY;
SELECT count(*) AS anchors FROM integrity.chain_anchors WHERE table_name = 'chained_months'::regclass;
-- January goes: retailer 1's chain now starts at row 3, retailer 2's has no
-- row left; the detached month keeps its rows and their hashes.
ALTER TABLE chained_months DETACH PARTITION chained_2020_01;
SELECT chain, seq FROM integrity.chain_anchors WHERE table_name = 'chained_months'::regclass ORDER BY chain;
SELECT count(*) FROM integrity.verify_chain('chained_months') AS problems;
SELECT count(*) FROM integrity.verify_chain('chained_months', :'months_digest') AS problems_against_the_old_digest;
SELECT count(*) AS kept, count(DISTINCT row_hash) AS hashes, array_agg(chain_seq ORDER BY id) AS seqs
  FROM chained_2020_01;
-- The anchors are what the chains start from: a forged one is found.
BEGIN;
UPDATE integrity.chain_anchors SET hash = '\x00' WHERE table_name = 'chained_months'::regclass AND chain = '[1]';
SELECT chain, row_key, problem FROM integrity.verify_chain('chained_months');
ROLLBACK;
-- A month holding a row inserted with every trigger disabled is refused.
BEGIN;
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
ALTER TABLE chained_months DISABLE TRIGGER ALL;
INSERT INTO chained_months (id, retailer_id, amount, booked_on) VALUES (12, 1, 21, '2020-02-07');
ALTER TABLE chained_months ENABLE TRIGGER ALL;
ALTER EVENT TRIGGER integrity_ddl_command_end ENABLE;
SELECT sqlstate, message, detail FROM expect_error($$DROP TABLE rt.chained_2020_02$$);
ROLLBACK;
-- February is dropped: retailer 1's chain starts at row 5.  March still
-- cannot go: retailer 3's chain starts today.
DROP TABLE chained_2020_02;
SELECT chain, seq FROM integrity.chain_anchors WHERE table_name = 'chained_months'::regclass ORDER BY chain;
SELECT count(*) FROM integrity.verify_chain('chained_months') AS problems;
SELECT count(*) FROM integrity.verify_chain('chained_months', :'months_digest') AS problems_against_the_old_digest;
SELECT sqlstate, message, detail FROM expect_error($$ALTER TABLE rt.chained_months DETACH PARTITION rt.chained_2020_03$$);
-- The next entry of retailer 2 continues its chain from the anchor.
INSERT INTO chained_months (id, retailer_id, amount, booked_on) VALUES (13, 2, 22, current_date) RETURNING chain_seq;
SELECT count(*) FROM integrity.verify_chain('chained_months') AS problems_after_insert;

-- One chain for the whole table (no chain columns): the same.
CREATE TABLE one_chain (
    id        integer NOT NULL,
    booked_on date NOT NULL,
    chain_seq bigint,
    row_hash  bytea,
    PRIMARY KEY (id, booked_on)
) PARTITION BY RANGE (booked_on);
CREATE TABLE one_chain_2020 PARTITION OF one_chain FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
CREATE TABLE one_chain_later PARTITION OF one_chain FOR VALUES FROM ('2021-01-01') TO (MAXVALUE);
SELECT integrity.enable_hash_chain('one_chain');
SELECT integrity.set_retention('one_chain', '2 years', 'booked_on');
INSERT INTO one_chain (id, booked_on) VALUES (1, '2020-03-01'), (2, '2020-04-01'), (3, current_date);
BEGIN;
INSERT INTO one_chain (id, booked_on) VALUES (4, '2020-05-01');
SELECT sqlstate, detail FROM expect_error($$DROP TABLE rt.one_chain_2020$$);
ROLLBACK;
DROP TABLE one_chain_2020;
SELECT chain, seq FROM integrity.chain_anchors WHERE table_name = 'one_chain'::regclass;
SELECT count(*) FROM integrity.verify_chain('one_chain') AS problems;

SELECT integrity.unprotect(t)
  FROM (VALUES ('ledger_entries'), ('chained'), ('by_month'), ('chained_months'), ('one_chain')) AS v(t);
SELECT count(*) AS anchors_left FROM integrity.chain_anchors WHERE table_name::text LIKE 'chained%' OR table_name::text = 'one_chain';
RESET search_path;
DROP SCHEMA rt CASCADE;
DROP ROLE rt_stranger;

\ir common/teardown.sql
