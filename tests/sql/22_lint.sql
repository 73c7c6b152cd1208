-- 22_lint: integrity.lint() on the financial / trading / tagging layout of
-- common/schema_layout.sql: nothing to report on the clean layout, each planted
-- problem reported once with a remedy, and the remedies fix them.
\ir common/setup.sql
\set VERBOSITY default

\ir common/schema_layout.sql

-- Clean: soft-delete tables have partial unique indexes, every foreign key
-- has an index, no constraint is NOT VALID, guarded tables have primary keys.
SELECT * FROM integrity.lint('{financial,trading,tagging}');

BEGIN;
-- 1. Unique indexes / constraints on soft-delete tables, not partial on deleted_at IS NULL.
CREATE UNIQUE INDEX idx_wholesaler_products_sku ON trading.wholesaler_products (sku);
ALTER TABLE tagging.tags ADD CONSTRAINT tags_name_key UNIQUE (name);
-- an OR in the predicate does not exclude deleted rows
CREATE UNIQUE INDEX idx_tags_slug_or_blank ON tagging.tags (slug, id) WHERE deleted_at IS NULL OR slug = '';
-- still fine: partial on deleted_at IS NULL (alone, or AND-ed), or the deleted column in the key
CREATE UNIQUE INDEX idx_tags_id_active ON tagging.tags (id, name) WHERE slug <> '' AND deleted_at IS NULL;
-- the AND-ed terms come from the stored predicate's tree: parentheses, quotes
-- and AND inside literals neither hide nor forge a deleted_at IS NULL term
CREATE UNIQUE INDEX idx_tags_name_quoted ON tagging.tags (name, id)
    WHERE slug <> 'a) AND (b' AND (slug = 'x''y' OR slug IS NULL) AND deleted_at IS NULL;
CREATE UNIQUE INDEX idx_tags_slug_quoted ON tagging.tags (slug, id)
    WHERE slug <> 'x'' AND deleted_at IS NULL AND (''' AND (name = ')(' OR name = '"');
SELECT indexrelid::regclass AS index_name, integrity._conjuncts(indpred, indrelid) AS terms
  FROM pg_index
 WHERE indexrelid IN ('tagging.idx_tags_name_quoted'::regclass, 'tagging.idx_tags_slug_quoted'::regclass)
 ORDER BY indexrelid::regclass::text;
-- (NULLS NOT DISTINCT, which makes that a rule for live rows, is new in PostgreSQL 15)
DO $$
BEGIN
    EXECUTE 'CREATE UNIQUE INDEX idx_tags_slug_deleted ON tagging.tags (slug, deleted_at)'
         || CASE WHEN current_setting('server_version_num')::int >= 150000 THEN ' NULLS NOT DISTINCT' ELSE '' END;
END
$$;
-- a Prisma-style soft-delete column ("deletedAt")
CREATE TABLE trading."Product" (id text PRIMARY KEY, sku text NOT NULL, "deletedAt" timestamp(3));
CREATE UNIQUE INDEX "Product_sku_key" ON trading."Product" (sku);
-- a partitioned soft-delete table: reported once, on the partitioned index
CREATE TABLE trading.product_prices (
    product_id bigint NOT NULL REFERENCES trading.wholesaler_products,
    valid_from date NOT NULL,
    price      numeric(12, 2) NOT NULL,
    deleted_at timestamptz
) PARTITION BY RANGE (valid_from);
CREATE TABLE trading.product_prices_2026 PARTITION OF trading.product_prices
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE trading.product_prices_2027 PARTITION OF trading.product_prices
    FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
CREATE UNIQUE INDEX idx_product_prices_from_product ON trading.product_prices (valid_from, product_id);
-- hostile identifiers
ALTER TABLE tagging."Tag ""Groups""" ADD COLUMN deleted_at timestamptz;
CREATE UNIQUE INDEX "Tag ""Groups"" key" ON tagging."Tag ""Groups""" ("x""; DROP TABLE t; --");

-- 2. Foreign keys without a supporting index (the partitioned product_prices
--    above is one: reported once, not once per partition).
CREATE TABLE trading.wholesalers (id bigint PRIMARY KEY, name text NOT NULL);
ALTER TABLE trading.orders ADD CONSTRAINT orders_final_wholesaler_fkey
    FOREIGN KEY (final_wholesaler_id) REFERENCES trading.wholesalers;
-- the key column is in the primary key, but not leading; a partial index does not count
CREATE TABLE tagging.tag_votes (
    user_id bigint NOT NULL,
    tag_id  integer NOT NULL,
    PRIMARY KEY (user_id, tag_id)
);
CREATE INDEX idx_tag_votes_tag_recent ON tagging.tag_votes (tag_id) WHERE user_id > 0;
ALTER TABLE tagging.tag_votes ADD CONSTRAINT tag_votes_tag_fkey
    FOREIGN KEY (tag_id) REFERENCES tagging.tags NOT VALID;
-- fine: a two-column key led by the same columns in another order
CREATE TABLE financial.credit_payments (
    id            bigint PRIMARY KEY,
    retailer_id   bigint NOT NULL,
    wholesaler_id bigint NOT NULL,
    FOREIGN KEY (retailer_id, wholesaler_id) REFERENCES financial.credit_accounts (retailer_id, wholesaler_id)
);
CREATE INDEX idx_credit_payments_account ON financial.credit_payments (wholesaler_id, retailer_id, id);

-- 3. NOT VALID constraints (the tag_votes foreign key above is one).
ALTER TABLE trading.wholesaler_products ADD CONSTRAINT check_sku_not_blank CHECK (sku <> '') NOT VALID;
ALTER TABLE trading.order_items ADD CONSTRAINT order_items_quantity_max CHECK (quantity <= 1000) NOT VALID;

-- 4. Guarded tables without a primary key.
CREATE TABLE trading.stock_movements (
    id         bigint GENERATED ALWAYS AS IDENTITY,
    product_id bigint NOT NULL,
    quantity   integer NOT NULL
);
SELECT integrity.protect_append_only('trading.stock_movements');
CREATE TABLE financial.audit_log (event_id uuid NOT NULL, body text NOT NULL);
CREATE UNIQUE INDEX audit_log_event_key ON financial.audit_log (event_id);
SELECT integrity.protect_append_only('financial.audit_log');
CREATE TABLE financial.ledger_archive (
    id         bigint NOT NULL,
    amount     numeric(14, 2) NOT NULL,
    created_at timestamptz NOT NULL
) PARTITION BY RANGE (created_at);
CREATE TABLE financial.ledger_archive_2025 PARTITION OF financial.ledger_archive
    FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2026-01-01 00:00+00');
SELECT integrity.protect_append_only('financial.ledger_archive');
CREATE TABLE tagging.notes (body text NOT NULL);
SELECT integrity.protect_append_only('tagging.notes');

-- Every planted problem, once, in object-name order.
SELECT severity, rule, object_name, problem FROM integrity.lint('{financial,trading,tagging}');
SELECT object_name, remedy FROM integrity.lint('{financial,trading,tagging}');
-- Narrowed to one schema.
SELECT rule, object_name FROM integrity.lint('{financial}');

-- The remedies are SQL that fixes the problem (all but the one that needs a
-- human to choose the key columns).
DO $$
DECLARE
    fix text;
BEGIN
    FOR fix IN SELECT remedy FROM integrity.lint('{financial,trading,tagging}')
                WHERE remedy NOT LIKE '%<key columns>%'
    LOOP
        EXECUTE fix;
    END LOOP;
END;
$$;
SELECT severity, rule, object_name, remedy FROM integrity.lint('{financial,trading,tagging}');
-- The soft-delete indexes are now partial, the primary keys in place.
SELECT indexrelid::regclass AS index_name, pg_get_expr(indpred, indrelid) AS predicate, indisvalid AS valid
  FROM pg_index
 WHERE indexrelid IN ('trading.idx_wholesaler_products_sku'::regclass, 'tagging.tags_name_key'::regclass,
                      'tagging.idx_tags_slug_or_blank'::regclass, 'tagging.idx_tags_slug_quoted'::regclass,
                      'trading."Product_sku_key"'::regclass,
                      'trading.idx_product_prices_from_product'::regclass, 'tagging."Tag ""Groups"" key"'::regclass)
 ORDER BY indexrelid::regclass::text;
SELECT conrelid::regclass AS table_name, conname, pg_get_constraintdef(oid) AS definition
  FROM pg_constraint
 WHERE contype = 'p' AND conrelid IN ('trading.stock_movements'::regclass, 'financial.audit_log'::regclass,
                                      'financial.ledger_archive'::regclass)
 ORDER BY conrelid::regclass::text, conname;
ROLLBACK;

SELECT count(*) AS problems FROM integrity.lint('{financial,trading,tagging}');

-- The default is public; NULL is refused.
SELECT count(*) >= 0 AS runs FROM integrity.lint();
SELECT sqlstate, message, hint FROM expect_error($$SELECT * FROM integrity.lint(NULL)$$);

\ir common/teardown.sql
