#!/usr/bin/env bash
# integrity.schema_manifest() survives pg_dump -Fc -> pg_restore: the manifest
# of the restored database is byte-identical to the source's, schema_diff()
# against it is empty and assert_schema() passes.  The same migration run in
# another fresh database (other OIDs: "another environment") gives the same
# manifest too.  A change made after the restore is reported, so the
# comparisons are not vacuous.
#
# Reliability matrix row: "pg_dump -> pg_restore into a fresh database"; the
# issue's proof "a manifest survives pg_dump/pg_restore with an empty diff".
set -euo pipefail
. "$(dirname "$0")/lib.bash"

new_db SRC src
new_db DST dst
new_db DSTJ dst_parallel
new_db ENV other_env
log "== source $SRC, restored into $DST and $DSTJ (-j 4); the same migration run in $ENV"

# The migration: the multi-schema layout of the migration guides (financial,
# trading, tagging, public) with guards, partitions, views, sequences, enum
# and domain types, functions, row security and names that need quoting.
MIGRATION="$TMP_DIR/migration.sql"
cat >"$MIGRATION" <<'SQL'
CREATE EXTENSION pg_integrity;
CREATE SCHEMA financial;
CREATE SCHEMA trading;
CREATE SCHEMA tagging;
CREATE SCHEMA "Sales Dept";

-- financial: credit per retailer-wholesaler pair, a ledger that moves it, and
-- the same ledger partitioned by month for reporting.
CREATE DOMAIN financial.money_amount AS numeric(14, 2) CONSTRAINT money_amount_positive CHECK (VALUE > 0);
CREATE TABLE financial.credit_accounts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id   bigint NOT NULL,
    wholesaler_id bigint NOT NULL,
    credit_limit  numeric(14, 2) NOT NULL DEFAULT 0,
    used_credit   numeric(14, 2) NOT NULL DEFAULT 0,
    CONSTRAINT check_credit_limit_positive CHECK (credit_limit >= 0),
    CONSTRAINT check_used_credit_valid CHECK (used_credit >= 0 AND used_credit <= credit_limit),
    UNIQUE (retailer_id, wholesaler_id)
);
CREATE TABLE financial.credit_ledger (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id   bigint NOT NULL,
    wholesaler_id bigint NOT NULL,
    entry_type    text NOT NULL CHECK (entry_type IN ('DEBIT', 'CREDIT')),
    amount        numeric(14, 2) NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (retailer_id, wholesaler_id) REFERENCES financial.credit_accounts (retailer_id, wholesaler_id)
);
CREATE INDEX idx_credit_ledger_account_created ON financial.credit_ledger (retailer_id, wholesaler_id, created_at DESC);
SELECT integrity.guard_credit('financial.credit_accounts');
SELECT integrity.guard_ledger_credit('financial.credit_ledger', 'financial.credit_accounts',
                                     ARRAY['retailer_id', 'wholesaler_id']);
SELECT integrity.protect_append_only('financial.credit_ledger');
INSERT INTO financial.credit_accounts (retailer_id, wholesaler_id, credit_limit)
SELECT r, w, 100000 FROM generate_series(1, 5) r, generate_series(1, 3) w;
INSERT INTO financial.credit_ledger (retailer_id, wholesaler_id, entry_type, amount, created_at)
SELECT 1 + i % 5, 1 + i % 3, CASE WHEN i > 150 THEN 'CREDIT' ELSE 'DEBIT' END,
       CASE WHEN i > 150 THEN 1 ELSE 10 + i % 7 END,
       timestamptz '2026-10-01 00:00+00' + i * interval '6 hours'
  FROM generate_series(1, 200) i
 ORDER BY i;

CREATE TABLE financial.ledger_entries (
    id            bigint NOT NULL,
    retailer_id   bigint NOT NULL,
    wholesaler_id bigint NOT NULL,
    entry_type    text NOT NULL CHECK (entry_type IN ('DEBIT', 'CREDIT')),
    amount        financial.money_amount NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (id, created_at),
    FOREIGN KEY (retailer_id, wholesaler_id) REFERENCES financial.credit_accounts (retailer_id, wholesaler_id)
) PARTITION BY RANGE (created_at);
CREATE TABLE financial.ledger_entries_2026_10 PARTITION OF financial.ledger_entries
    FOR VALUES FROM ('2026-10-01 00:00+00') TO ('2026-11-01 00:00+00');
-- a partition created on its own, with its own column order, then attached
CREATE TABLE financial.ledger_entries_2026_11 (
    created_at    timestamptz NOT NULL,
    id            bigint NOT NULL,
    amount        financial.money_amount NOT NULL,
    entry_type    text NOT NULL,
    wholesaler_id bigint NOT NULL,
    retailer_id   bigint NOT NULL,
    CONSTRAINT ledger_entries_entry_type_check CHECK (entry_type IN ('DEBIT', 'CREDIT'))
);
ALTER TABLE financial.ledger_entries ATTACH PARTITION financial.ledger_entries_2026_11
    FOR VALUES FROM ('2026-11-01 00:00+00') TO ('2026-12-01 00:00+00');
CREATE TABLE financial.ledger_entries_default PARTITION OF financial.ledger_entries DEFAULT;
CREATE INDEX idx_ledger_entries_account_type_created
    ON financial.ledger_entries (retailer_id, wholesaler_id, entry_type, created_at DESC);
INSERT INTO financial.ledger_entries SELECT id, retailer_id, wholesaler_id, entry_type, amount, created_at
  FROM financial.credit_ledger;
SELECT integrity.protect_append_only('financial.ledger_entries');
CREATE VIEW financial.account_balances AS
    SELECT a.retailer_id, a.wholesaler_id, a.credit_limit - a.used_credit AS available
      FROM financial.credit_accounts a;
CREATE MATERIALIZED VIEW financial.monthly_totals AS
    SELECT date_trunc('month', created_at, 'UTC') AS month, entry_type, sum(amount) AS total
      FROM financial.ledger_entries GROUP BY 1, 2;

-- trading: products with stock (soft-deleted, partial unique index), orders.
CREATE TYPE trading.order_status AS ENUM ('PENDING', 'CONFIRMED', 'DISPATCHED', 'CANCELLED');
CREATE TYPE trading.price_band AS (low numeric, high numeric);
CREATE TABLE trading.wholesaler_products (
    id             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    wholesaler_id  bigint NOT NULL,
    sku            text NOT NULL COLLATE "C",
    stock          integer NOT NULL DEFAULT 0,
    reserved_stock integer NOT NULL DEFAULT 0,
    band           trading.price_band,
    version        integer NOT NULL DEFAULT 1,
    deleted_at     timestamptz
);
CREATE UNIQUE INDEX idx_wholesaler_products_sku_active
    ON trading.wholesaler_products (wholesaler_id, sku) WHERE deleted_at IS NULL;
SELECT integrity.guard_stock('trading.wholesaler_products');
SELECT integrity.enable_versioning('trading.wholesaler_products');
INSERT INTO trading.wholesaler_products (wholesaler_id, sku, stock, reserved_stock)
SELECT 1 + i % 3, 'SKU-' || i, 100, i % 10 FROM generate_series(1, 50) i;
CREATE SEQUENCE trading.order_number_seq AS integer START 1000 INCREMENT 7 CACHE 5;
CREATE TABLE trading.orders (
    id                  bigserial PRIMARY KEY,
    order_number        integer NOT NULL DEFAULT nextval('trading.order_number_seq') UNIQUE,
    retailer_id         bigint NOT NULL,
    status              trading.order_status NOT NULL DEFAULT 'PENDING',
    final_wholesaler_id bigint,
    total               numeric(14, 2) GENERATED ALWAYS AS (0) STORED,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE trading.orders ADD CONSTRAINT orders_retailer_positive CHECK (retailer_id > 0) NOT VALID;
CREATE UNIQUE INDEX idx_order_final_wholesaler_unique ON trading.orders (id) WHERE final_wholesaler_id IS NOT NULL;
CREATE INDEX idx_orders_status_created ON trading.orders (status, created_at DESC);
CREATE FUNCTION trading.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER orders_touch_updated_at BEFORE UPDATE ON trading.orders
    FOR EACH ROW EXECUTE FUNCTION trading.touch_updated_at();
CREATE FUNCTION trading.order_total(order_id bigint) RETURNS numeric
LANGUAGE sql STABLE AS $$ SELECT 0::numeric $$;
ALTER TABLE trading.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY orders_visible ON trading.orders FOR SELECT TO PUBLIC USING (status <> 'CANCELLED');
CREATE TABLE trading.order_items (
    order_id   bigint NOT NULL REFERENCES trading.orders ON DELETE CASCADE,
    product_id bigint NOT NULL REFERENCES trading.wholesaler_products,
    quantity   integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);
CREATE UNLOGGED TABLE trading.quote_cache (key text PRIMARY KEY, body jsonb);
-- Inventory: spare pieces keep the transaction that created them.
CREATE TABLE trading.sprinkler_spare_pieces (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    stock_id                  integer NOT NULL,
    created_by_transaction_id uuid NOT NULL,
    original_stock_id         integer NOT NULL,
    version                   integer NOT NULL DEFAULT 1,
    deleted_at                timestamptz,
    deleted_by_transaction_id uuid
);
SELECT integrity.protect_immutable('trading.sprinkler_spare_pieces',
                                   ARRAY['created_by_transaction_id', 'original_stock_id']);
SELECT integrity.protect_write_once('trading.sprinkler_spare_pieces', ARRAY['deleted_by_transaction_id']);
SELECT integrity.enable_versioning('trading.sprinkler_spare_pieces');

-- tagging: tags (soft-deleted) and taggings, a view.
CREATE TABLE tagging.tags (
    id         serial PRIMARY KEY,
    name       text NOT NULL,
    deleted_at timestamptz
);
CREATE UNIQUE INDEX idx_tags_name_active ON tagging.tags (lower(name)) WHERE deleted_at IS NULL;
CREATE TABLE tagging.taggings (
    tag_id        integer NOT NULL REFERENCES tagging.tags,
    taggable_type text NOT NULL,
    taggable_id   bigint NOT NULL,
    obsolete      text,
    PRIMARY KEY (tag_id, taggable_type, taggable_id)
);
ALTER TABLE tagging.taggings DROP COLUMN obsolete;
CREATE VIEW tagging.active_tags AS SELECT id, name FROM tagging.tags WHERE deleted_at IS NULL;

-- public: users, and names that need quoting.
CREATE TABLE public.users (id uuid PRIMARY KEY, whatsapp_number text NOT NULL, deleted_at timestamptz);
CREATE UNIQUE INDEX idx_users_whatsapp_unique ON public.users (whatsapp_number) WHERE deleted_at IS NULL;
CREATE TABLE "Sales Dept"."Pieces ""2024""" (
    id                      integer PRIMARY KEY,
    "created by"            integer NOT NULL,
    "x""; DROP TABLE t; --" integer NOT NULL,
    "Row Version"           bigint NOT NULL DEFAULT 1
);
SELECT integrity.protect_immutable('"Sales Dept"."Pieces ""2024"""', ARRAY['created by', 'x"; DROP TABLE t; --']);
SELECT integrity.enable_versioning('"Sales Dept"."Pieces ""2024"""', 'Row Version', strict => false);
SQL

SCHEMAS="'{financial,trading,tagging,public,\"Sales Dept\"}'"
MANIFEST_SQL="SELECT integrity.schema_manifest($SCHEMAS)"

if out=$(sql "$SRC" <"$MIGRATION" 2>&1); then
    pass "migration runs in the source database"
else
    fail "migration runs in the source database" "$out"
    finish
fi
check_ok "migration runs in a second fresh database (another environment)" "$ENV" "$(cat "$MIGRATION")"

MANIFEST="$TMP_DIR/schema.json"
sql "$SRC" "$MANIFEST_SQL" >"$MANIFEST"
count_in() { printf '(SELECT count(*) FROM jsonb_path_query(j, %s))' "'\$.schemas.*.$1'"; }
check_eq "source manifest: 5 schemas, 15 tables (3 partitions), 3 views, 11 guards, 20 triggers" "5|15|3|11|20" \
    "$(sql "$SRC" "WITH m(j) AS ($MANIFEST_SQL)
                   SELECT (SELECT count(*) FROM jsonb_object_keys(j -> 'schemas')), $(count_in 'tables.*'), $(count_in 'views.*'),
                          $(count_in 'tables.*.guards.*'), $(count_in 'tables.*.triggers.*') FROM m")"
check_eq "source manifest is deterministic (taken twice, same bytes)" "$(cat "$MANIFEST")" \
    "$(sql "$SRC" "$MANIFEST_SQL")"

DUMP="$TMP_DIR/source.dump"
if ! out=$("$PG_BIN/pg_dump" -Fc -h "$SOCKET" -p "$PORT" -U postgres -f "$DUMP" "$SRC" 2>&1); then
    fail "pg_dump -Fc succeeds" "$out"
    finish
fi
pass "pg_dump -Fc succeeds ($(stat -c %s "$DUMP") bytes)"
for args in "$DST" "$DSTJ -j 4"; do
    # shellcheck disable=SC2086
    if out=$("$PG_BIN/pg_restore" -h "$SOCKET" -p "$PORT" -U postgres -d $args "$DUMP" 2>&1) && [ -z "$out" ]; then
        pass "pg_restore -d $args succeeds without errors or warnings"
    else
        fail "pg_restore -d $args succeeds without errors or warnings" "$(printf '%s\n' "$out" | head -40)"
    fi
done
check_ok "REFRESH MATERIALIZED VIEW works after the restore" "$DST" \
    "REFRESH MATERIALIZED VIEW financial.monthly_totals"

# --- The restored database -----------------------------------------------------
RESTORED=$(sql "$DST" "$MANIFEST_SQL")
check_eq "restored manifest is byte-identical to the source's" \
    "$(md5sum <"$MANIFEST" | cut -d' ' -f1) $(wc -c <"$MANIFEST")" \
    "$(printf '%s\n' "$RESTORED" | md5sum | cut -d' ' -f1) $(printf '%s\n' "$RESTORED" | wc -c)"
if [ "$RESTORED" != "$(cat "$MANIFEST")" ]; then
    log "       first difference (jsonb_pretty):"
    diff <(sql "$SRC" "SELECT jsonb_pretty(($MANIFEST_SQL))") \
         <(sql "$DST" "SELECT jsonb_pretty(($MANIFEST_SQL))") | head -30 | sed 's/^/       /'
fi

# schema.json as it would be kept in a repository: read back as text by psql.
diff_rows() { # DB: schema_diff of the source manifest in DB, one line per row
    sql "$1" <<SQL
\\set manifest \`cat '$MANIFEST'\`
SELECT d.change, d.object_kind, d.object_name FROM integrity.schema_diff(:'manifest'::jsonb) d;
SQL
}
chmod 644 "$MANIFEST"
check_eq "schema_diff(source manifest) in the restored database is empty" "" "$(diff_rows "$DST" 2>&1)"
check_ok "assert_schema(source manifest) passes in the restored database" "$DST" "
\\set manifest \`cat '$MANIFEST'\`
SELECT integrity.assert_schema(:'manifest'::jsonb);"
check_same "guards came back (table, guard, columns, options)" "$SRC" "$DST" \
    "SELECT table_name::text, guard, columns, options FROM integrity.guards ORDER BY 1, 2"
check_eq "parallel restore (-j 4): manifest byte-identical too" \
    "$(md5sum <"$MANIFEST" | cut -d' ' -f1)" "$(sql "$DSTJ" "$MANIFEST_SQL" | md5sum | cut -d' ' -f1)"
check_eq "parallel restore (-j 4): schema_diff(source manifest) is empty" "" "$(diff_rows "$DSTJ" 2>&1)"

# --- Another environment: same migration, other OIDs ------------------------------
check_eq "the source and the other environment have different relation OIDs" "t" \
    "$(sql "$ENV" "SELECT 'financial.credit_ledger'::regclass::oid <> $(sql "$SRC" "SELECT 'financial.credit_ledger'::regclass::oid")
                     OR 'trading.orders'::regclass::oid <> $(sql "$SRC" "SELECT 'trading.orders'::regclass::oid")")"
check_eq "the other environment's manifest is byte-identical to the source's" \
    "$(md5sum <"$MANIFEST" | cut -d' ' -f1)" "$(sql "$ENV" "$MANIFEST_SQL" | md5sum | cut -d' ' -f1)"
check_eq "schema_diff(source manifest) in the other environment is empty" "" "$(diff_rows "$ENV" 2>&1)"

# --- The comparison is not vacuous ------------------------------------------------
check_ok "five changes in the restored database" "$DST" '
DROP INDEX trading.idx_orders_status_created;
ALTER TABLE tagging.tags ADD COLUMN color text;
ALTER TABLE trading.orders DISABLE TRIGGER orders_touch_updated_at;
SELECT integrity.unprotect($$trading.wholesaler_products$$, $$stock$$);
ALTER TABLE "Sales Dept"."Pieces ""2024""" ALTER COLUMN "created by" SET DEFAULT 0;'
check_eq "after changes in the restored database, schema_diff lists exactly them" \
    "changed|column|\"Sales Dept\".\"Pieces \"\"2024\"\"\".\"created by\"
unexpected|column|tagging.tags.color
missing|index|trading.orders.idx_orders_status_created
changed|trigger|trading.orders.orders_touch_updated_at
missing|trigger|trading.wholesaler_products.integrity_stock
missing|guard|trading.wholesaler_products.stock" \
    "$(diff_rows "$DST" 2>&1)"
check_error "assert_schema(source manifest) now raises" 55000 "$DST" "
\\set manifest \`cat '$MANIFEST'\`
SELECT integrity.assert_schema(:'manifest'::jsonb);"

finish
