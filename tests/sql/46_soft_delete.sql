-- 46_soft_delete: DELETE keeps the row and marks it deleted; restore(),
-- purge_deleted() and hard_delete(); cascades; what it refuses and how it
-- can be walked around.  Tables from migration guides 002 (Prisma's
-- "Product"/"Asset" with "deletedAt" timestamp(3) and "isDeleted") and 000
-- (users whose WhatsApp number must be reusable).
\ir common/setup.sql
\set VERBOSITY default
CREATE SCHEMA sd;
SET search_path = sd, public;
-- The reports' rows about this file's tables.
\set in_sd '(SELECT c.relnamespace = ''sd''::regnamespace FROM pg_class c WHERE c.oid = table_name)'

CREATE TABLE "Product" (
    id          integer PRIMARY KEY,
    sku         text NOT NULL,
    "userId"    integer NOT NULL,
    "deletedAt" timestamp(3),
    "isDeleted" boolean NOT NULL DEFAULT false,
    version     integer NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX "Product_sku_userId_live" ON "Product" (sku, "userId") WHERE "deletedAt" IS NULL;
CREATE TABLE "ProductAsset" (
    id          integer PRIMARY KEY,
    "productId" integer NOT NULL REFERENCES "Product" ON DELETE CASCADE,
    "deletedAt" timestamp(3),
    "isDeleted" boolean NOT NULL DEFAULT false
);
-- A child without soft delete: left alone by a soft delete of its product.
CREATE TABLE "ProductAttribute" (
    id          integer PRIMARY KEY,
    "productId" integer NOT NULL REFERENCES "Product" ON DELETE CASCADE,
    name        text NOT NULL
);

SELECT integrity.enable_soft_delete('"Product"', 'deletedAt', 'isDeleted');
SELECT integrity.enable_soft_delete('"ProductAsset"', 'deletedAt', 'isDeleted');
SELECT integrity.enable_versioning('"Product"');
-- Idempotent: a second call changes nothing.
SELECT integrity.enable_soft_delete('"Product"', 'deletedAt', 'isDeleted');
SELECT table_name, guard, columns, options FROM integrity.guards WHERE :in_sd ORDER BY 1, 2;
SELECT * FROM guard_triggers('"Product"');

INSERT INTO "Product" (id, sku, "userId") VALUES (1, 'chair', 7), (2, 'table', 7), (3, 'lamp', 7), (4, 'desk', 7);
INSERT INTO "ProductAsset" (id, "productId") VALUES (10, 1), (11, 1), (12, 2), (13, 3);
INSERT INTO "ProductAttribute" VALUES (20, 1, 'colour'), (21, 2, 'size');

-- A DELETE keeps the row: it is marked deleted at now() (DELETE reports 0
-- rows, as a DO INSTEAD rule would), the version is bumped like any UPDATE's.
BEGIN;
DELETE FROM "Product" WHERE id = 4;
SELECT id, "deletedAt" = now()::timestamp(3) AS deleted_now, "isDeleted", version FROM "Product" ORDER BY id;
COMMIT;
-- Deleting it again changes nothing (not the time, not the version).
UPDATE "Product" SET "deletedAt" = '2026-01-01 00:00:00.123' WHERE id = 4;
SELECT id, "deletedAt", "isDeleted", version FROM "Product" WHERE id = 4;
DELETE FROM "Product" WHERE id = 4;
SELECT id, "deletedAt", "isDeleted", version FROM "Product" WHERE id = 4;

-- An asset deleted on its own first; then its product: the product's live
-- assets are soft-deleted with it, at the same time; its attributes (no soft
-- delete) stay, and so does their foreign key.
DELETE FROM "ProductAsset" WHERE id = 11;
DELETE FROM "Product" WHERE id = 1;
SELECT a.id, a."productId", a."isDeleted", a."deletedAt" = p."deletedAt" AS with_product
  FROM "ProductAsset" a JOIN "Product" p ON p.id = a."productId" ORDER BY a.id;
SELECT * FROM "ProductAttribute" ORDER BY id;
-- violations(): a live row whose parent is soft-deleted.
SELECT guard, table_name, row_key, regexp_replace(detail, 'deleted at .*', 'deleted at <time>') AS detail
  FROM integrity.violations() WHERE :in_sd;

-- Every path that deletes a row: a view, a writable CTE, MERGE (PostgreSQL
-- 15 and later; 14 deletes the row directly instead).
CREATE VIEW live_products AS SELECT * FROM "Product" WHERE "deletedAt" IS NULL;
DELETE FROM live_products WHERE id = 2;
WITH gone AS (DELETE FROM "Product" WHERE id = 3 RETURNING id) SELECT count(*) AS reported FROM gone;
INSERT INTO "Product" (id, sku, "userId") VALUES (6, 'sofa', 7);
SELECT current_setting('server_version_num')::int >= 150000 AS has_merge \gset
\if :has_merge
MERGE INTO "Product" p USING (VALUES (6)) AS v(id) ON p.id = v.id WHEN MATCHED THEN DELETE;
\else
DELETE FROM "Product" WHERE id = 6;
\endif
SELECT id, "isDeleted" FROM "Product" ORDER BY id;
SELECT id, "isDeleted" FROM "ProductAsset" ORDER BY id;

-- restore(): the product and the assets deleted with it come back; the
-- asset deleted on its own earlier stays deleted.
SELECT integrity.restore('"Product"', 1);
SELECT id, "isDeleted", "deletedAt" IS NULL AS live FROM "ProductAsset" WHERE "productId" = 1 ORDER BY id;
SELECT id, "isDeleted", version FROM "Product" WHERE id = 1;
-- A row that is not deleted: false.  An unknown id: P0002.
SELECT integrity.restore('"Product"', 1);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.restore('sd."Product"', 99)$$);
-- The SKU was reused by a new live product: restoring the old one would
-- break the partial unique index: 23505 naming the index and the key, and
-- nothing changes.
INSERT INTO "Product" (id, sku, "userId") VALUES (5, 'table', 7);
SELECT sqlstate, message, detail, constraint_name, table_name
  FROM expect_error($$SELECT integrity.restore('sd."Product"', 2)$$);
SELECT id, "isDeleted" FROM "Product" WHERE id = 2;
SELECT id, "isDeleted" FROM "ProductAsset" WHERE id = 12;

-- A role that may DELETE but not UPDATE still soft-deletes (the trigger's
-- statement runs as the table's owner); restoring is an UPDATE and needs it.
CREATE ROLE sd_deleter;
GRANT USAGE ON SCHEMA sd TO sd_deleter;
GRANT SELECT, DELETE ON "Product", "ProductAsset" TO sd_deleter;
SET ROLE sd_deleter;
DELETE FROM sd."Product" WHERE id = 5;
SELECT sqlstate, message FROM expect_error($$SELECT integrity.restore('sd."Product"', 5)$$);
SELECT sqlstate, message, detail FROM expect_error($$SELECT integrity.purge_deleted('sd."Product"', '0')$$);
SELECT sqlstate, message FROM expect_error($$SELECT integrity.hard_delete('sd."Product"', 5)$$);
RESET ROLE;
SELECT id, "isDeleted" FROM "Product" WHERE id = 5;

-- The soft delete runs as the table's owner, so it must not resolve an
-- operator the deleting role created, whatever that role's search_path: the
-- plain UPDATE (trap_items: no cascading foreign key) and the cascading
-- statements ("Product", "ProductAsset") all find tid = tid in pg_catalog.
CREATE TABLE trap_items (id integer PRIMARY KEY, deleted_at timestamptz);
SELECT integrity.enable_soft_delete('trap_items');
GRANT SELECT, DELETE ON trap_items TO sd_deleter;
INSERT INTO trap_items VALUES (1), (2);
INSERT INTO "Product" VALUES (60, 'trap', 1);
INSERT INTO "ProductAsset" VALUES (61, 60), (62, 60);
CREATE SCHEMA sd_trap AUTHORIZATION sd_deleter;
SET ROLE sd_deleter;
CREATE TABLE sd_trap.calls (run_as name);
CREATE FUNCTION sd_trap.tid_eq(tid, tid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sd_trap.calls VALUES (current_user);
    RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR sd_trap.= (LEFTARG = tid, RIGHTARG = tid, FUNCTION = sd_trap.tid_eq);
GRANT INSERT ON sd_trap.calls TO PUBLIC;
SET search_path = sd_trap, pg_catalog, sd;
-- The role's own comparison finds its operator (one call recorded) ...
SELECT '(0,1)'::tid = '(0,1)'::tid AS trap_resolves;
-- ... the soft deletes do not.
DELETE FROM trap_items WHERE id = 1;
DELETE FROM "ProductAsset" WHERE id = 61;
DELETE FROM "Product" WHERE id = 60;
RESET ROLE;
SET search_path = sd, public;
SELECT count(*) AS trap_calls FROM sd_trap.calls;
SELECT id, "isDeleted" FROM "Product" WHERE id = 60
UNION ALL SELECT id, "isDeleted" FROM "ProductAsset" WHERE id IN (61, 62)
UNION ALL SELECT id, deleted_at IS NOT NULL FROM trap_items ORDER BY 1;
DROP SCHEMA sd_trap CASCADE;
SELECT integrity.unprotect('trap_items');
DROP TABLE trap_items;
SELECT integrity.hard_delete('"Product"', 60);

-- A parent without soft delete deleted for good: its soft-delete children go
-- with it (keeping them would leave them without a parent).
CREATE TABLE orders (id integer PRIMARY KEY);
CREATE TABLE order_lines (id integer PRIMARY KEY, order_id integer REFERENCES orders ON DELETE CASCADE,
                          deleted_at timestamptz);
SELECT integrity.enable_soft_delete('order_lines');
INSERT INTO orders VALUES (1), (2);
INSERT INTO order_lines VALUES (1, 1), (2, 1), (3, 2), (4, NULL);
DELETE FROM orders WHERE id = 1;
DELETE FROM order_lines WHERE id IN (3, 4);
SELECT id, order_id, deleted_at IS NOT NULL AS deleted FROM order_lines ORDER BY id;

-- A self-referencing tree: deleting a category soft-deletes its subtree;
-- restoring it brings the subtree back.
CREATE TABLE categories (id integer PRIMARY KEY, parent_id integer REFERENCES categories ON DELETE CASCADE,
                         deleted_at timestamptz);
SELECT integrity.enable_soft_delete('categories');
INSERT INTO categories VALUES (1, NULL), (2, 1), (3, 2), (4, 1), (5, NULL);
DELETE FROM categories WHERE id = 1;
SELECT id, deleted_at IS NOT NULL AS deleted FROM categories ORDER BY id;
SELECT integrity.restore('categories', 1);
SELECT id, deleted_at IS NOT NULL AS deleted FROM categories ORDER BY id;

-- purge_deleted(): rows deleted longer ago than older_than go for good,
-- with the rows that cascade from them (soft-delete children included), in
-- one call; younger deletions and live rows stay.
UPDATE "Product" SET "deletedAt" = now() - interval '40 days' WHERE id = 2;
UPDATE "ProductAsset" SET "deletedAt" = now() - interval '40 days' WHERE id = 12;
SELECT integrity.purge_deleted('"Product"', '30 days');
SELECT id, "isDeleted" FROM "Product" ORDER BY id;
SELECT id, "productId" FROM "ProductAsset" ORDER BY id;
SELECT * FROM "ProductAttribute" ORDER BY id;
SELECT integrity.purge_deleted('"Product"', '30 days');
-- The trigger still soft-deletes after a purge (nothing stays switched on).
DELETE FROM "Product" WHERE id = 1;
SELECT id, "isDeleted" FROM "Product" WHERE id = 1;

-- hard_delete(): an erasure request removes one row, deleted or not.
SELECT integrity.hard_delete('"Product"', 1);
SELECT integrity.hard_delete('"Product"', 3);
SELECT id FROM "Product" ORDER BY id;
SELECT sqlstate, message FROM expect_error($$SELECT integrity.hard_delete('sd."Product"', 1)$$);

-- Guide 000: users whose WhatsApp number may be registered again once the
-- old user is deleted; a timestamptz deleted_at.
CREATE TABLE users (id bigint PRIMARY KEY, whatsapp text NOT NULL, deleted_at timestamptz);
CREATE UNIQUE INDEX users_whatsapp_live ON users (whatsapp) WHERE deleted_at IS NULL;
SELECT integrity.enable_soft_delete('users');
INSERT INTO users VALUES (1, '+2348000000001');
DELETE FROM users WHERE id = 1;
INSERT INTO users VALUES (2, '+2348000000001');
SELECT sqlstate, detail, constraint_name FROM expect_error($$SELECT integrity.restore('sd.users', 1::bigint)$$);
DELETE FROM users WHERE id = 2;
SELECT integrity.restore('users', 1::bigint);
SELECT id, deleted_at IS NULL AS live FROM users ORDER BY id;
-- A purge that fails (a foreign key that does not cascade) purges nothing, and leaves
-- nothing switched on even when the caller catches the error: the next
-- DELETE is a soft delete again.
CREATE TABLE sessions (id integer PRIMARY KEY, user_id bigint REFERENCES users);
INSERT INTO sessions VALUES (1, 2);
SELECT sqlstate, constraint_name FROM expect_error($$SELECT integrity.purge_deleted('sd.users', '0')$$);
DELETE FROM users WHERE id = 1;
SELECT id, deleted_at IS NULL AS live FROM users ORDER BY id;
SELECT integrity.restore('users', 1::bigint);

-- A partitioned table: rows deleted through the parent and through a
-- partition are kept; restore() through the parent.
CREATE TABLE events (id integer, at date, deleted_at timestamptz, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT integrity.enable_soft_delete('events');
CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
INSERT INTO events VALUES (1, '2026-05-01'), (2, '2027-05-01'), (3, '2027-06-01');
DELETE FROM events WHERE id = 1;
DELETE FROM events_2027 WHERE id = 2;
SELECT tableoid::regclass AS part, id, deleted_at IS NOT NULL AS deleted FROM events ORDER BY id;
-- A key of several columns is given as a jsonb object, as history() takes it.
SELECT sqlstate, message, hint FROM expect_error($$SELECT integrity.restore('sd.events', 1)$$);
SELECT integrity.restore('events', '{"id": 2, "at": "2027-05-01"}'::jsonb) AS restored;
SELECT integrity.restore('events', '{"at": "2027-05-01", "id": 2}'::jsonb) AS restored_again;
SELECT e.sqlstate, e.message, e.hint FROM (VALUES
    ($$SELECT integrity.restore('sd.events', '{"id": 2}'::jsonb)$$),
    ($$SELECT integrity.restore('sd.events', '{"id": 2, "at": null}'::jsonb)$$),
    ($$SELECT integrity.restore('sd.events', '{"id": 2, "at": "2027-05-01", "x": 1}'::jsonb)$$),
    ($$SELECT integrity.restore('sd.events', '[2, "2027-05-01"]'::jsonb)$$),
    ($$SELECT integrity.restore('sd.events', '{"id": 9, "at": "2027-05-01"}'::jsonb)$$),
    ($$SELECT integrity.hard_delete('sd.events', '{"id": 9, "at": "2027-05-01"}'::jsonb)$$)) AS v(c),
    expect_error(v.c) e;
SELECT integrity.hard_delete('events', '{"id": 1, "at": "2026-05-01"}'::jsonb);
DELETE FROM events WHERE id = 2;
SELECT tableoid::regclass AS part, id, deleted_at IS NOT NULL AS deleted FROM events ORDER BY id;
SELECT integrity.purge_deleted('events', '0');
SELECT id FROM events ORDER BY id;

-- Registration errors, each with its SQLSTATE; nothing is left behind.
CREATE TABLE ledger (id integer PRIMARY KEY, deleted_at timestamptz, flag text, d date);
SELECT integrity.protect_append_only('ledger');
SELECT n, sqlstate, message, hint FROM (VALUES
    (1, $$SELECT integrity.enable_soft_delete('sd.ledger')$$),
    (2, $$SELECT integrity.enable_soft_delete('sd.users', 'no_such_column')$$),
    (3, $$SELECT integrity.enable_soft_delete('sd.users', 'whatsapp')$$),
    (4, $$SELECT integrity.enable_soft_delete('sd.users', 'deleted_at', 'whatsapp')$$),
    (5, $$SELECT integrity.enable_soft_delete('sd.users', 'deleted_at', 'deleted_at')$$),
    (6, $$SELECT integrity.enable_soft_delete('sd.live_products', '"deletedAt"')$$),
    (7, $$SELECT integrity.enable_soft_delete(NULL)$$),
    (8, $$SELECT integrity.enable_soft_delete('sd.users', NULL)$$),
    (9, $$SELECT integrity.protect_append_only('sd.users')$$),
    (10, $$SELECT integrity.restore('sd.ledger', 1)$$),
    (11, $$SELECT integrity.restore('sd.users', NULL::bigint)$$),
    (12, $$SELECT integrity.purge_deleted('sd.users', NULL)$$),
    (13, $$SELECT integrity.purge_deleted('sd.users', '-1 day')$$),
    (14, $$SELECT integrity.restore('sd.events_2026', 1)$$)
  ) AS c(n, call), expect_error(c.call) e
 ORDER BY n;
SELECT table_name, guard FROM integrity.guards WHERE :in_sd AND table_name::text IN ('ledger', 'users') ORDER BY 1, 2;
-- Only the owner registers.
SET ROLE sd_deleter;
SELECT sqlstate, message FROM expect_error($$SELECT integrity.enable_soft_delete('sd."Product"', 'deletedAt')$$);
RESET ROLE;

-- Ways around it.  DDL: the guarded columns cannot be renamed or dropped,
-- the trigger cannot be dropped; disabling it is reported by health().
SELECT sqlstate FROM expect_error($$ALTER TABLE sd.users RENAME COLUMN deleted_at TO removed_at$$);
SELECT sqlstate FROM expect_error($$ALTER TABLE sd.users DROP COLUMN deleted_at$$);
SELECT sqlstate FROM expect_error($$DROP TRIGGER integrity_soft_delete ON sd.users$$);
SELECT sqlstate FROM expect_error($$ALTER TABLE sd.users DISABLE TRIGGER integrity_soft_delete$$);
-- A superuser who disables the event trigger first can disable the guard:
-- health() reports it, and registering again repairs it.
ALTER EVENT TRIGGER integrity_ddl_command_end DISABLE;
ALTER TABLE users DISABLE TRIGGER integrity_soft_delete;
ALTER EVENT TRIGGER integrity_ddl_command_end ENABLE ALWAYS;
SELECT severity, table_name, guard, problem FROM integrity.health() WHERE :in_sd;
SELECT integrity.enable_soft_delete('users');
SELECT count(*) AS problems FROM integrity.health() WHERE :in_sd;
-- A superuser under session_replication_role = replica deletes for good:
-- the trigger fires on origin writes only, so that a purge replicated to a
-- subscriber removes the rows there too.
INSERT INTO users VALUES (3, '+2348000000003');
SET session_replication_role = replica;
DELETE FROM users WHERE id = 3;
RESET session_replication_role;
SELECT count(*) AS user_3 FROM users WHERE id = 3;
-- TRUNCATE removes every row; it needs the TRUNCATE privilege (the owner's).
CREATE TABLE scratch (id integer PRIMARY KEY, deleted_at timestamptz);
SELECT integrity.enable_soft_delete('scratch');
INSERT INTO scratch VALUES (1);
TRUNCATE scratch;
SELECT count(*) AS scratch_rows FROM scratch;

-- unprotect(): DELETE deletes again.
SELECT integrity.unprotect('scratch', 'soft_delete');
INSERT INTO scratch VALUES (1);
DELETE FROM scratch;
SELECT count(*) AS scratch_rows FROM scratch;

SELECT integrity.unprotect('ledger');
SELECT integrity.unprotect(t) FROM (VALUES ('"Product"'), ('"ProductAsset"'), ('order_lines'), ('categories'),
                                           ('users'), ('events')) AS v(t);
RESET search_path;
DROP SCHEMA sd CASCADE;
DROP ROLE sd_deleter;

\ir common/teardown.sql
