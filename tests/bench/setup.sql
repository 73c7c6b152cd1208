-- Schema of the benchmark database (run once per `tests/bench/run`).
--
-- psql variables: rows (source size), pgbench_rows, copy_file (a path the
-- server can write and read).
--
-- Every variant of a workload gets its own table, built identically from the
-- same source rows by bench_reset(), so that variants can be measured
-- round-robin.  Only the triggers differ.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE EXTENSION pg_integrity;
CREATE EXTENSION moddatetime;

------------------------------------------------------------------------------
-- The hand-written triggers of the migration guides.

-- 000 (B2B trade platform), "Ledger Immutability", verbatim.
CREATE FUNCTION prevent_ledger_modification()
RETURNS TRIGGER AS $$
BEGIN
    RAISE EXCEPTION 'Ledger entries are immutable. Use new entries to reverse transactions.';
END;
$$ LANGUAGE plpgsql;

-- 003 (inventory): "Trigger prevents mutation" of created_by_transaction_id /
-- original_stock_id (error "created_by_transaction_id is immutable"), and the
-- row version that every UPDATE bumps (the guide's optimistic-locking test
-- relies on a plain `SET status = ...` moving the version on).
CREATE FUNCTION prevent_immutable_field_changes()
RETURNS TRIGGER AS $$
BEGIN
    IF NEW.created_by_transaction_id IS DISTINCT FROM OLD.created_by_transaction_id THEN
        RAISE EXCEPTION 'created_by_transaction_id is immutable';
    END IF;
    IF NEW.original_stock_id IS DISTINCT FROM OLD.original_stock_id THEN
        RAISE EXCEPTION 'original_stock_id is immutable';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION increment_version()
RETURNS TRIGGER AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- The JSONB audit trigger a team writes (issue 10, item 3): the whole OLD and
-- NEW rows as jsonb, the keys whose values changed, one INSERT per row.  Its
-- events table has the columns and indexes of integrity.lifecycle_events, so
-- that the two variants differ in how events are made, not in what is stored.
CREATE TABLE audit_events (
    id         bigserial PRIMARY KEY,
    table_name text NOT NULL,
    row_key    jsonb NOT NULL,
    operation  text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    changes    jsonb NOT NULL,
    txid       bigint NOT NULL DEFAULT txid_current(),
    actor      name NOT NULL DEFAULT current_user,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON audit_events USING hash (row_key);
CREATE INDEX ON audit_events USING brin (at);

CREATE FUNCTION audit_row_changes()
RETURNS TRIGGER AS $$
DECLARE
    o jsonb := to_jsonb(OLD);
    n jsonb := to_jsonb(NEW);
    changes jsonb;
BEGIN
    SELECT jsonb_object_agg(e.key, jsonb_build_object('old', o -> e.key, 'new', e.value)) INTO changes
      FROM jsonb_each(n) AS e
     WHERE o -> e.key IS DISTINCT FROM e.value;
    IF changes IS NOT NULL THEN
        INSERT INTO audit_events (table_name, row_key, operation, changes)
        VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, jsonb_build_object('id', NEW.id), TG_OP, changes);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- The simplest BEFORE DELETE row trigger: what any such trigger costs a
-- DELETE, whatever it does (the reference for purge_deleted).
CREATE FUNCTION keep_row()
RETURNS TRIGGER AS $$
BEGIN
    RETURN OLD;
END;
$$ LANGUAGE plpgsql;

------------------------------------------------------------------------------
-- Source rows, built once.

-- Spare pieces (003): pseudo-random uuids (as gen_random_uuid() would give,
-- but the same in every run), ten pieces per stock, a hundred per transaction.
CREATE TABLE pieces_src AS
SELECT g AS n,
       md5('piece' || g)::uuid               AS id,
       md5('stock' || g / 10)::uuid          AS stock_id,
       1 + g % 20                            AS piece_count,
       'IN_STOCK'::text                      AS status,
       md5('txn' || g / 100)::uuid           AS created_by_transaction_id,
       md5('stock' || g / 10)::uuid          AS original_stock_id,
       1                                     AS version,
       NULL::timestamptz                     AS deleted_at,
       NULL::uuid                            AS deleted_by_transaction_id,
       timestamptz '2026-11-01 00:00+00' + g * interval '1 second' AS updated_at
  FROM generate_series(1, greatest(:rows, :pgbench_rows)) AS g;

-- Ledger entries (000): DEBITs and CREDITs between 500 retailers and 37
-- wholesalers.
CREATE TABLE ledger_src AS
SELECT 1 + g % 500                                          AS retailer_id,
       1 + g % 37                                           AS wholesaler_id,
       CASE WHEN g % 3 = 0 THEN 'CREDIT' ELSE 'DEBIT' END   AS entry_type,
       ((1 + g::bigint * 7919 % 1000000) / 100.0)::numeric(14, 2) AS amount,
       'order ' || g                                        AS description
  FROM generate_series(1, :rows) AS g;

-- Guide 003's pieces over 1,000 stock rows, for the maintained totals.
CREATE TABLE total_pieces_src AS
SELECT g AS n, 1 + g % 1000 AS stock_id, 1 + g % 9 AS piece_count FROM generate_series(1, :rows) g;

VACUUM (ANALYZE) pieces_src, ledger_src, total_pieces_src;
COPY ledger_src TO :'copy_file';

------------------------------------------------------------------------------
-- Variant tables.

-- (Re)creates table tbl of the given kind (the branches of bench_reset) with
-- nrows rows (a ledger starts empty) and the triggers of the variant.
-- A table is dropped after its guards are lifted: an append-only table cannot
-- be dropped while its guard stands.
CREATE FUNCTION bench_drop(tbl text)
RETURNS void
LANGUAGE plpgsql
SET client_min_messages = warning
AS $$
DECLARE
    child name;
BEGIN
    IF to_regclass(quote_ident(tbl)) IS NOT NULL THEN
        -- The maintained totals it feeds go first: a source cannot be dropped
        -- while they stand.
        PERFORM integrity.unprotect(g.table_name, 'total')
           FROM integrity.guards g, jsonb_array_elements(g.options -> 'totals') t
          WHERE g.guard = 'total' AND integrity._relation(t ->> 'source') = quote_ident(tbl)::regclass;
        -- Tables whose foreign keys reference it go first: DROP TABLE would
        -- refuse to leave their keys dangling.
        FOR child IN
            SELECT DISTINCT c.relname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
             WHERE k.contype = 'f' AND k.confrelid = quote_ident(tbl)::regclass AND k.conrelid <> k.confrelid
        LOOP
            PERFORM bench_drop(child);
        END LOOP;
        PERFORM integrity.unprotect(quote_ident(tbl)::regclass);
        EXECUTE format('DROP TABLE %I', tbl);
    END IF;
END;
$$;

CREATE FUNCTION bench_reset(tbl text, kind text, variant text, nrows bigint)
RETURNS void
LANGUAGE plpgsql
SET client_min_messages = warning
AS $$
BEGIN
    PERFORM bench_drop(tbl);
    -- Every run of the lifecycle workload starts with no events.
    IF variant IN ('audit_plpgsql', 'lifecycle') THEN
        TRUNCATE audit_events;
        PERFORM integrity.purge_lifecycle_events('0 s');
    END IF;
    IF kind = 'pieces' THEN
        EXECUTE format($ddl$
            CREATE TABLE %I (
                id                        uuid NOT NULL,
                stock_id                  uuid NOT NULL,
                piece_count               integer NOT NULL,
                status                    text NOT NULL DEFAULT 'IN_STOCK',
                created_by_transaction_id uuid NOT NULL,
                original_stock_id         uuid NOT NULL,
                version                   integer NOT NULL DEFAULT 1,
                deleted_at                timestamptz,
                deleted_by_transaction_id uuid,
                updated_at                timestamptz NOT NULL DEFAULT now()
            ) WITH (fillfactor = 50)$ddl$, tbl);
        EXECUTE format('INSERT INTO %I SELECT id, stock_id, piece_count, status, created_by_transaction_id,'
                       ' original_stock_id, version, deleted_at, deleted_by_transaction_id, updated_at'
                       ' FROM pieces_src WHERE n <= %s ORDER BY n', tbl, nrows);
        EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id)', tbl);
    ELSIF kind = 'ledger' THEN
        EXECUTE format($ddl$
            CREATE TABLE %I (
                id            bigserial PRIMARY KEY,
                retailer_id   bigint NOT NULL,
                wholesaler_id bigint NOT NULL,
                entry_type    text NOT NULL,
                amount        numeric(14, 2) NOT NULL,
                description   text,
                created_at    timestamptz NOT NULL DEFAULT now()
            )$ddl$, tbl);
        -- 000, "Additional Composite Indexes for Analytics".
        EXECUTE format('CREATE INDEX ON %I (retailer_id, wholesaler_id, entry_type, created_at DESC)', tbl);
    ELSIF kind = 'products' THEN
        -- 000: wholesaler_products with stock / reserved_stock; stock large
        -- enough that every reservation of the run succeeds.
        EXECUTE format('CREATE TABLE %I (id bigint PRIMARY KEY, sku text NOT NULL, stock bigint NOT NULL,'
                       ' reserved_stock bigint NOT NULL DEFAULT 0)', tbl);
        EXECUTE format('INSERT INTO %I SELECT g, %L || g, 1000000000, 0 FROM generate_series(1, %s) g',
                       tbl, 'SKU-', nrows);
    ELSIF kind = 'credit_ledger' THEN
        -- 000: ledger_entries and per retailer-wholesaler credit accounts, with
        -- limits high enough that every entry of the run is booked.
        PERFORM bench_drop(tbl || '_accounts');
        EXECUTE format('CREATE TABLE %I (retailer_id bigint, wholesaler_id bigint,'
                       ' credit_limit numeric(14, 2) NOT NULL, used_credit numeric(14, 2) NOT NULL DEFAULT 0,'
                       ' PRIMARY KEY (retailer_id, wholesaler_id))', tbl || '_accounts');
        EXECUTE format('INSERT INTO %I SELECT r, w, 1e11, 0 FROM generate_series(1, 500) r, generate_series(1, 37) w',
                       tbl || '_accounts');
        EXECUTE format($ddl$
            CREATE TABLE %I (
                id            bigserial PRIMARY KEY,
                retailer_id   bigint NOT NULL,
                wholesaler_id bigint NOT NULL,
                entry_type    text NOT NULL,
                amount        numeric(14, 2) NOT NULL,
                description   text,
                created_at    timestamptz NOT NULL DEFAULT now()
            )$ddl$, tbl);
    ELSIF kind IN ('catalog', 'catalog_purgeable', 'catalog_assets') THEN
        -- 002: Prisma's "Product" with the soft-delete columns its migration
        -- adds, and the partial unique index the guide's troubleshooting
        -- section ends up with (what lint() asks for).  'catalog_purgeable':
        -- every row deleted 40 days ago, for the nightly purge.
        EXECUTE format($ddl$
            CREATE TABLE %I (
                id          integer PRIMARY KEY,
                name        text NOT NULL,
                sku         text NOT NULL,
                "userId"    integer NOT NULL,
                "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
                "updatedAt" timestamp(3) NOT NULL,
                "deletedAt" timestamp(3),
                "isDeleted" boolean NOT NULL DEFAULT false
            )$ddl$, tbl);
        EXECUTE format($fill$
            INSERT INTO %I
            SELECT g, 'Product ' || g, 'SKU-' || g, 1 + g %% 100,
                   timestamp '2026-01-01' + g * interval '1 second', timestamp '2026-06-01' + g * interval '1 second',
                   CASE WHEN %L THEN pg_catalog.now() - interval '40 days' END, %L
              FROM generate_series(1, %s) g$fill$, tbl, kind = 'catalog_purgeable', kind = 'catalog_purgeable', nrows);
        EXECUTE format('CREATE UNIQUE INDEX ON %I (sku, "userId") WHERE "deletedAt" IS NULL', tbl);
        IF kind = 'catalog_assets' THEN
            -- 002's "ProductAsset": three per product, removed with it.
            EXECUTE format($ddl$
                CREATE TABLE %I (
                    id          integer PRIMARY KEY,
                    "productId" integer NOT NULL REFERENCES %I (id) ON DELETE CASCADE,
                    "assetId"   integer NOT NULL,
                    "deletedAt" timestamp(3),
                    "isDeleted" boolean NOT NULL DEFAULT false
                )$ddl$, tbl || '_assets', tbl);
            EXECUTE format('INSERT INTO %I SELECT g, 1 + (g - 1) / 3, g FROM generate_series(1, 3 * %s) g',
                           tbl || '_assets', nrows);
            EXECUTE format('CREATE INDEX ON %I ("productId")', tbl || '_assets');
        END IF;
    ELSIF kind IN ('stock_pieces', 'stock_pieces_empty') THEN
        -- 003: inventory_stock (1,000 rows) and its pieces, nrows of them
        -- spread over the stock rows ('stock_pieces_empty': none yet).
        PERFORM bench_drop(tbl || '_stock');
        EXECUTE format('CREATE TABLE %I (id integer PRIMARY KEY, quantity bigint NOT NULL DEFAULT 0)', tbl || '_stock');
        EXECUTE format('CREATE TABLE %I (id bigserial PRIMARY KEY, stock_id integer NOT NULL REFERENCES %I,'
                       ' piece_count integer NOT NULL, status text NOT NULL DEFAULT %L) WITH (fillfactor = 50)',
                       tbl, tbl || '_stock', 'IN_STOCK');
        EXECUTE format('CREATE INDEX ON %I (stock_id)', tbl);
        -- The quantities start right: each stock row's pieces, all in stock.
        EXECUTE format('INSERT INTO %I SELECT g, coalesce((SELECT sum(piece_count) FROM total_pieces_src s'
                       ' WHERE s.stock_id = g AND s.n <= %s), 0) FROM generate_series(1, 1000) g',
                       tbl || '_stock', CASE WHEN kind = 'stock_pieces' THEN nrows ELSE 0 END);
        IF kind = 'stock_pieces' THEN
            EXECUTE format('INSERT INTO %I (stock_id, piece_count) SELECT stock_id, piece_count FROM total_pieces_src'
                           ' WHERE n <= %s ORDER BY n', tbl, nrows);
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown table kind %', kind;
    END IF;

    CASE kind || '/' || variant
    WHEN 'pieces/none', 'ledger/none', 'catalog/none', 'catalog_purgeable/none', 'catalog_assets/none',
         'stock_pieces/none', 'stock_pieces_empty/none', 'stock_pieces/one_statement' THEN
        NULL;
    WHEN 'stock_pieces/pg_integrity', 'stock_pieces_empty/pg_integrity' THEN
        PERFORM integrity.maintain_total((tbl || '_stock')::regclass, 'quantity', tbl::regclass, ARRAY['stock_id'],
                                         'piece_count', 'status = ''IN_STOCK''');
    WHEN 'stock_pieces/plpgsql', 'stock_pieces_empty/plpgsql' THEN
        -- What a team writes: the stock row updated for every piece, with
        -- branches for the piece's old and new row.
        EXECUTE format($fn$
            CREATE OR REPLACE FUNCTION %1$I() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'IN_STOCK' THEN
                    UPDATE %2$I SET quantity = quantity - OLD.piece_count WHERE id = OLD.stock_id;
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'IN_STOCK' THEN
                    UPDATE %2$I SET quantity = quantity + NEW.piece_count WHERE id = NEW.stock_id;
                END IF;
                RETURN NULL;
            END $body$ $fn$, tbl || '_quantity', tbl || '_stock');
        EXECUTE format('CREATE TRIGGER update_stock_quantity AFTER INSERT OR UPDATE OR DELETE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION %I()', tbl, tbl || '_quantity');
    -- Floors: the same writes with no rule at all (the ledger: the entry and
    -- its account's UPDATE in one transaction; the reservation: the one
    -- conditional UPDATE, correct under READ COMMITTED thanks to its re-check).
    WHEN 'credit_ledger/floor', 'products/conditional_update' THEN
        NULL;
    -- The floor of any function API: a PL/pgSQL function that runs only the
    -- conditional UPDATE (no error for a missing row, no quantity checks).
    WHEN 'products/function_floor' THEN
        EXECUTE format($fn$
            CREATE OR REPLACE FUNCTION %1$I(p_id bigint, p_qty numeric) RETURNS boolean LANGUAGE plpgsql AS $body$
            BEGIN
                UPDATE %2$I SET reserved_stock = reserved_stock + p_qty WHERE id = p_id AND stock - reserved_stock >= p_qty;
                RETURN FOUND;
            END $body$ $fn$, tbl || '_reserve', tbl);
    WHEN 'catalog_purgeable/before_trigger' THEN
        EXECUTE format('CREATE TRIGGER keep_row BEFORE DELETE ON %I FOR EACH ROW EXECUTE FUNCTION keep_row()', tbl);
    WHEN 'catalog/pg_integrity', 'catalog_purgeable/pg_integrity' THEN
        PERFORM integrity.enable_soft_delete(tbl::regclass, 'deletedAt', 'isDeleted');
    WHEN 'catalog_assets/pg_integrity' THEN
        PERFORM integrity.enable_soft_delete(tbl::regclass, 'deletedAt', 'isDeleted');
        PERFORM integrity.enable_soft_delete((tbl || '_assets')::regclass, 'deletedAt', 'isDeleted');
    WHEN 'pieces/pg_integrity' THEN
        PERFORM integrity.protect_immutable(tbl::regclass, ARRAY['created_by_transaction_id', 'original_stock_id']);
        PERFORM integrity.enable_versioning(tbl::regclass);
    WHEN 'pieces/pgi_immutable' THEN
        PERFORM integrity.protect_immutable(tbl::regclass, ARRAY['created_by_transaction_id', 'original_stock_id']);
    WHEN 'pieces/pgi_versioning' THEN
        PERFORM integrity.enable_versioning(tbl::regclass);
    WHEN 'pieces/plpgsql' THEN
        EXECUTE format('CREATE TRIGGER prevent_immutable_changes BEFORE UPDATE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION prevent_immutable_field_changes()', tbl);
        EXECUTE format('CREATE TRIGGER increment_version BEFORE UPDATE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION increment_version()', tbl);
    WHEN 'pieces/moddatetime' THEN
        EXECUTE format('CREATE TRIGGER set_updated_at BEFORE UPDATE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION moddatetime(updated_at)', tbl);
    WHEN 'pieces/c_builtin' THEN
        -- The cheapest C BEFORE UPDATE row trigger PostgreSQL ships: compares
        -- the old and new tuple bytes and lets a changed row through.
        EXECUTE format('CREATE TRIGGER suppress_redundant BEFORE UPDATE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()', tbl);
    WHEN 'pieces/audit_plpgsql' THEN
        EXECUTE format('CREATE TRIGGER audit_row_changes AFTER UPDATE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION audit_row_changes()', tbl);
    WHEN 'pieces/lifecycle' THEN
        PERFORM integrity.track_lifecycle(tbl::regclass);
    WHEN 'ledger/append_only' THEN
        PERFORM integrity.protect_append_only(tbl::regclass);
    WHEN 'ledger/hash_chain' THEN
        -- 000's ledger chained per retailer-wholesaler account (append-only too).
        EXECUTE format('ALTER TABLE %I ADD COLUMN chain_seq bigint, ADD COLUMN row_hash bytea', tbl);
        PERFORM integrity.enable_hash_chain(tbl::regclass, ARRAY['retailer_id', 'wholesaler_id']);
    WHEN 'ledger/chain_columns' THEN
        -- What a chained row writes beyond the unchained one, without
        -- chaining: the two columns (the client sends their values) and the
        -- chain index that enable_hash_chain creates.
        EXECUTE format('ALTER TABLE %I ADD COLUMN chain_seq bigint, ADD COLUMN row_hash bytea', tbl);
        EXECUTE format('CREATE INDEX %I ON %I (retailer_id, wholesaler_id, chain_seq)', left(tbl || '_chain', 63), tbl);
        PERFORM integrity.protect_append_only(tbl::regclass);
    WHEN 'ledger/plpgsql' THEN
        EXECUTE format('CREATE TRIGGER prevent_ledger_update BEFORE UPDATE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION prevent_ledger_modification()', tbl);
        EXECUTE format('CREATE TRIGGER prevent_ledger_delete BEFORE DELETE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION prevent_ledger_modification()', tbl);
    WHEN 'products/pg_integrity', 'products/counter', 'products/holds', 'products/holds_keyed' THEN
        PERFORM integrity.guard_stock(tbl::regclass);
    WHEN 'products/plpgsql' THEN
        -- 000's CHECK constraints, and the SELECT … FOR UPDATE the guide's
        -- application code does, as a PL/pgSQL function on this table.
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT check_stock_non_negative CHECK (stock >= 0),'
                       ' ADD CONSTRAINT check_reserved_stock_valid CHECK (reserved_stock <= stock)', tbl);
        EXECUTE format($fn$
            CREATE OR REPLACE FUNCTION %1$I(p_id bigint, p_qty numeric) RETURNS boolean LANGUAGE plpgsql AS $body$
            DECLARE
                r record;
            BEGIN
                SELECT stock, reserved_stock INTO r FROM %2$I WHERE id = p_id FOR UPDATE;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'product %% not found', p_id;
                END IF;
                IF r.stock - r.reserved_stock < p_qty THEN
                    RETURN false;
                END IF;
                UPDATE %2$I SET reserved_stock = reserved_stock + p_qty WHERE id = p_id;
                RETURN true;
            END $body$ $fn$, tbl || '_reserve', tbl);
        -- An order of several lines, all or nothing: the rows locked in key
        -- order (two orders never deadlock), checked, then reserved.
        EXECUTE format($fn$
            CREATE OR REPLACE FUNCTION %1$I(p_ids bigint[], p_qtys numeric[]) RETURNS boolean LANGUAGE plpgsql AS $body$
            DECLARE
                short boolean;
            BEGIN
                WITH wanted AS (SELECT w.id, sum(w.qty) AS qty FROM unnest(p_ids, p_qtys) AS w(id, qty) GROUP BY w.id),
                     locked AS (SELECT p.id, p.stock - p.reserved_stock AS available
                                  FROM %2$I p WHERE p.id IN (SELECT id FROM wanted) ORDER BY p.id FOR UPDATE)
                SELECT bool_or(l.id IS NULL OR l.available < w.qty) INTO short
                  FROM wanted w LEFT JOIN locked l ON l.id = w.id;
                IF short THEN
                    RETURN false;
                END IF;
                UPDATE %2$I p SET reserved_stock = p.reserved_stock + w.qty
                  FROM (SELECT w.id, sum(w.qty) AS qty FROM unnest(p_ids, p_qtys) AS w(id, qty) GROUP BY w.id) w
                 WHERE p.id = w.id;
                RETURN true;
            END $body$ $fn$, tbl || '_reserve_rows', tbl);
    WHEN 'credit_ledger/pg_integrity' THEN
        PERFORM integrity.guard_credit((tbl || '_accounts')::regclass);
        PERFORM integrity.guard_ledger_credit(tbl::regclass, (tbl || '_accounts')::regclass,
                                              ARRAY['retailer_id', 'wholesaler_id']);
    WHEN 'credit_ledger/plpgsql' THEN
        -- 000's CHECK constraints on the accounts, and a lock-and-check
        -- trigger that moves used credit as each entry is inserted.
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT check_credit_limit_positive CHECK (credit_limit >= 0),'
                       ' ADD CONSTRAINT check_used_credit_valid CHECK (used_credit >= 0 AND used_credit <= credit_limit)',
                       tbl || '_accounts');
        EXECUTE format($fn$
            CREATE OR REPLACE FUNCTION %1$I() RETURNS trigger LANGUAGE plpgsql AS $body$
            DECLARE
                account record;
                delta numeric := CASE NEW.entry_type WHEN 'DEBIT' THEN NEW.amount ELSE -NEW.amount END;
            BEGIN
                SELECT credit_limit, used_credit INTO account FROM %2$I
                 WHERE retailer_id = NEW.retailer_id AND wholesaler_id = NEW.wholesaler_id FOR UPDATE;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'no credit account for retailer %% and wholesaler %%', NEW.retailer_id, NEW.wholesaler_id;
                END IF;
                IF account.used_credit + delta > account.credit_limit THEN
                    RAISE EXCEPTION 'credit limit exceeded';
                END IF;
                UPDATE %2$I SET used_credit = used_credit + delta
                 WHERE retailer_id = NEW.retailer_id AND wholesaler_id = NEW.wholesaler_id;
                RETURN NEW;
            END $body$ $fn$, tbl || '_book', tbl || '_accounts');
        EXECUTE format('CREATE TRIGGER book_credit BEFORE INSERT ON %I FOR EACH ROW EXECUTE FUNCTION %I()',
                       tbl, tbl || '_book');
    ELSE
        RAISE EXCEPTION 'unknown variant % of %', variant, kind;
    END CASE;
END;
$$;

-- Runs one statement and returns its duration in seconds, measured in the
-- server (no client round trip, no parse; the statement's own commit is not
-- included, the AFTER triggers it queues are).
CREATE FUNCTION bench_timed(stmt text)
RETURNS double precision
LANGUAGE plpgsql
AS $$
DECLARE
    started timestamptz;
BEGIN
    started := clock_timestamp();
    EXECUTE stmt;
    RETURN extract(epoch FROM clock_timestamp() - started);
END;
$$;

------------------------------------------------------------------------------
-- Results.

CREATE TABLE bench_workloads (
    workload text PRIMARY KEY,
    title    text NOT NULL,
    unit     text NOT NULL CHECK (unit IN ('s', 'tps')),   -- seconds per statement, or pgbench TPS
    rows     bigint NOT NULL,                              -- rows per statement (s) / table size (tps)
    ord      int NOT NULL
);

CREATE TABLE bench_variants (
    workload   text NOT NULL REFERENCES bench_workloads,
    variant    text NOT NULL,
    label      text NOT NULL,
    ord        int  NOT NULL,
    baseline   boolean NOT NULL DEFAULT false,
    diagnostic boolean NOT NULL DEFAULT false,
    PRIMARY KEY (workload, variant)
);

CREATE TABLE bench_results (
    workload text NOT NULL,
    variant  text NOT NULL,
    rep      int  NOT NULL,
    position int  NOT NULL,              -- place of the variant in its round
    value    double precision NOT NULL,  -- seconds, or TPS for pgbench workloads
    PRIMARY KEY (workload, variant, rep),
    FOREIGN KEY (workload, variant) REFERENCES bench_variants
);

-- One row per workload and variant.  "cost" is time per row or per
-- transaction relative to the workload's baseline (no trigger): seconds /
-- baseline seconds, or baseline TPS / TPS.  cost_lo/cost_hi are the smallest
-- and largest cost within one round (variant and baseline measured back to
-- back), which shows how much of a difference is noise.
CREATE VIEW bench_summary AS
WITH stats AS (
    SELECT workload, variant, count(*) AS runs,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS median,
           min(value) AS lo, max(value) AS hi
      FROM bench_results
     GROUP BY workload, variant
), base AS (
    SELECT v.workload, s.median
      FROM bench_variants v JOIN stats s USING (workload, variant)
     WHERE v.baseline
), paired AS (
    SELECT r.workload, r.variant,
           min(CASE w.unit WHEN 's' THEN r.value / b.value ELSE b.value / r.value END) AS cost_lo,
           max(CASE w.unit WHEN 's' THEN r.value / b.value ELSE b.value / r.value END) AS cost_hi
      FROM bench_results r
      JOIN bench_workloads w USING (workload)
      JOIN bench_variants bv ON bv.workload = r.workload AND bv.baseline
      JOIN bench_results b ON b.workload = r.workload AND b.variant = bv.variant AND b.rep = r.rep
     GROUP BY r.workload, r.variant
)
SELECT w.ord AS workload_ord, v.ord, w.workload, w.title, w.unit, w.rows, v.variant, v.label,
       v.baseline, v.diagnostic, s.runs, s.median, s.lo, s.hi,
       CASE w.unit WHEN 's' THEN s.median / b.median ELSE b.median / s.median END AS cost,
       p.cost_lo, p.cost_hi,
       -- microseconds per row (s) or per transaction and client (tps)
       CASE w.unit WHEN 's' THEN s.median * 1e6 / w.rows ELSE 1e6 / s.median END AS us_each,
       CASE w.unit WHEN 's' THEN (s.median - b.median) * 1e6 / w.rows
                   ELSE 1e6 / s.median - 1e6 / b.median END AS us_extra
  FROM stats s
  JOIN bench_variants v USING (workload, variant)
  JOIN bench_workloads w USING (workload)
  LEFT JOIN base b USING (workload)
  LEFT JOIN paired p USING (workload, variant);

-- The median of one variant, for the report.
CREATE FUNCTION bench_median(w text, v text) RETURNS double precision
LANGUAGE sql STABLE AS $$ SELECT median FROM bench_summary WHERE workload = w AND variant = v $$;
CREATE FUNCTION bench_cost(w text, v text) RETURNS double precision
LANGUAGE sql STABLE AS $$ SELECT cost FROM bench_summary WHERE workload = w AND variant = v $$;
-- ' (per-round ratios lo–hi, within this run's noise)' when the smallest
-- per-round ratio meets the bound that the median misses.
CREATE FUNCTION bench_noise(w text, v text, bound double precision) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format(' (per-round ratios %s–%s%s)', to_char(cost_lo, 'FM990.00'), to_char(cost_hi, 'FM990.00'),
                  CASE WHEN cost_lo <= bound THEN ': within this run''s noise' ELSE '' END)
      FROM bench_summary WHERE workload = w AND variant = v
$$;
CREATE FUNCTION bench_extra(w text, v text) RETURNS double precision
LANGUAGE sql STABLE AS $$ SELECT us_extra FROM bench_summary WHERE workload = w AND variant = v $$;
-- Microseconds per row or per transaction and client.
CREATE FUNCTION bench_us(w text, v text) RETURNS double precision
LANGUAGE sql STABLE AS $$ SELECT us_each FROM bench_summary WHERE workload = w AND variant = v $$;
-- What variant v adds over floor f, as a share of what variant r adds over it:
-- the overhead ratio of DESIGN.md's targets.  Each overhead is the median of
-- the differences within one run (rep), where the variants ran back to back:
-- a slow stretch of the host then moves both sides of a difference instead of
-- one median.
CREATE FUNCTION bench_overhead(w text, v text, r text, f text) RETURNS double precision
LANGUAGE sql STABLE AS $$
    WITH us AS (
        SELECT b.variant, b.rep,
               CASE wl.unit WHEN 's' THEN b.value * 1e6 / wl.rows ELSE 1e6 / b.value END AS us
          FROM bench_results b JOIN bench_workloads wl USING (workload)
         WHERE b.workload = w
    ), extra AS (
        SELECT x.variant, percentile_cont(0.5) WITHIN GROUP (ORDER BY x.us - fl.us) AS us
          FROM us x JOIN us fl ON fl.variant = f AND fl.rep = x.rep
         WHERE x.variant IN (v, r)
         GROUP BY x.variant
    )
    SELECT (SELECT us FROM extra WHERE variant = v) / nullif((SELECT us FROM extra WHERE variant = r), 0)
$$;
