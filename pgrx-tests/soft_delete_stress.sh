#!/usr/bin/env bash
# integrity.enable_soft_delete under pgbench load: deletes, restores and new
# registrations of the same WhatsApp numbers, and products deleted and restored
# with their assets, from 8 clients at READ COMMITTED and REPEATABLE READ.
# Afterwards: no number is held by two live users, every asset is deleted
# exactly when (and at the same time as) its product, and nothing but the
# expected refusals (23505 on a restore whose number was taken, 40001 retried)
# happened.
set -euo pipefail
. "$(dirname "$0")/lib.bash"

new_db DB main
CLIENTS=${STRESS_CLIENTS:-8}
TX=${STRESS_SOFT_DELETE_TX:-1000}   # per client and run
log "== database $DB, $CLIENTS clients"

sql "$DB" >/dev/null <<'SQL'
CREATE EXTENSION pg_integrity;
CREATE TABLE users (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    whatsapp   text NOT NULL,
    deleted_at timestamptz
);
CREATE UNIQUE INDEX users_whatsapp_live ON users (whatsapp) WHERE deleted_at IS NULL;
SELECT integrity.enable_soft_delete('users');
INSERT INTO users (whatsapp) SELECT '+977' || i FROM generate_series(1, 20) AS i;

CREATE TABLE "Product" (id integer PRIMARY KEY, "deletedAt" timestamp(3), "isDeleted" boolean NOT NULL DEFAULT false);
CREATE TABLE "ProductAsset" (id integer PRIMARY KEY, "productId" integer NOT NULL REFERENCES "Product" ON DELETE CASCADE,
                             "deletedAt" timestamp(3), "isDeleted" boolean NOT NULL DEFAULT false);
CREATE INDEX ON "ProductAsset" ("productId");
SELECT integrity.enable_soft_delete('"Product"', 'deletedAt', 'isDeleted');
SELECT integrity.enable_soft_delete('"ProductAsset"', 'deletedAt', 'isDeleted');
INSERT INTO "Product" (id) SELECT i FROM generate_series(1, 10) AS i;
INSERT INTO "ProductAsset" (id, "productId") SELECT i, 1 + i % 10 FROM generate_series(1, 50) AS i;

-- The application's restore endpoint: a refused restore (the number was
-- registered again) is an answer, not a failure.
CREATE FUNCTION restore_user(number text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    target bigint := (SELECT id FROM users WHERE whatsapp = number AND deleted_at IS NOT NULL ORDER BY id DESC LIMIT 1);
BEGIN
    IF target IS NULL THEN
        RETURN 'nothing to restore';
    END IF;
    RETURN integrity.restore('users', target)::text;
EXCEPTION WHEN unique_violation THEN
    RETURN 'taken';
END $$;
CREATE TABLE restore_outcomes (outcome text NOT NULL);
SQL

for level in 'READ COMMITTED' 'REPEATABLE READ'; do
    tag=${level// /_}
    cat >"$TMP_DIR/$tag.register.sql" <<EOF2
\\set n random(1, 20)
BEGIN ISOLATION LEVEL $level;
INSERT INTO users (whatsapp) VALUES ('+977' || :n) ON CONFLICT (whatsapp) WHERE deleted_at IS NULL DO NOTHING;
END;
EOF2
    cat >"$TMP_DIR/$tag.delete.sql" <<EOF2
\\set n random(1, 20)
BEGIN ISOLATION LEVEL $level;
DELETE FROM users WHERE whatsapp = '+977' || :n;
END;
EOF2
    cat >"$TMP_DIR/$tag.restore.sql" <<EOF2
\\set n random(1, 20)
BEGIN ISOLATION LEVEL $level;
INSERT INTO restore_outcomes SELECT restore_user('+977' || :n);
END;
EOF2
    cat >"$TMP_DIR/$tag.product.sql" <<EOF2
\\set p random(1, 10)
\\set restore random(0, 1)
BEGIN ISOLATION LEVEL $level;
DELETE FROM "Product" WHERE id = :p AND :restore = 0;
SELECT integrity.restore('"Product"', :p) WHERE :restore = 1;
END;
EOF2
done

report_value() { sed -n "s/^$2: \([0-9]*\).*/\1/p" "$1" | head -1; }

for level in READ_COMMITTED REPEATABLE_READ; do
    rc=0
    "$PG_BIN/pgbench" -h "$SOCKET" -p "$PORT" -U postgres -n -c "$CLIENTS" -j "$CLIENTS" -t "$TX" \
        --max-tries=100 --failures-detailed \
        -f "$TMP_DIR/$level.register.sql@3" -f "$TMP_DIR/$level.delete.sql@3" -f "$TMP_DIR/$level.restore.sql@2" \
        -f "$TMP_DIR/$level.product.sql@4" "$DB" \
        >"$TMP_DIR/$level.out" 2>"$TMP_DIR/$level.err" || rc=$?
    [ "$rc" -eq 0 ] || log "$(head -5 "$TMP_DIR/$level.err")"
    processed=$(report_value "$TMP_DIR/$level.out" 'number of transactions actually processed')
    retried=$(report_value "$TMP_DIR/$level.out" 'number of transactions retried')
    log "== $level: $processed processed, ${retried:-0} retried"
    check_eq "[$level] pgbench ran to the end" "0" "$rc"
    check_eq "[$level] every transaction committed" "$((CLIENTS * TX))" "$processed"
done

log "== $(sql "$DB" "SELECT format('%s users (%s live), %s refused restores, %s of 10 products deleted',
                                  count(*), count(*) FILTER (WHERE deleted_at IS NULL), (SELECT count(*) FROM restore_outcomes WHERE outcome = 'taken'),
                                  (SELECT count(*) FROM \"Product\" WHERE \"isDeleted\"))
                    FROM users")"
check_eq "no WhatsApp number is held by two live users" "" \
    "$(sql "$DB" "SELECT whatsapp FROM users WHERE deleted_at IS NULL GROUP BY 1 HAVING count(*) > 1")"
check_eq "some restores were refused because the number was taken (the race was exercised)" "t" \
    "$(sql "$DB" "SELECT count(*) > 0 FROM restore_outcomes WHERE outcome = 'taken'")"
check_eq "every asset is deleted exactly when its product is, at the same time" "" \
    "$(sql "$DB" "SELECT format('asset %s: %s / %s, product %s: %s / %s', a.id, a.\"deletedAt\", a.\"isDeleted\",
                                p.id, p.\"deletedAt\", p.\"isDeleted\")
                    FROM \"ProductAsset\" a JOIN \"Product\" p ON p.id = a.\"productId\"
                   WHERE (a.\"deletedAt\", a.\"isDeleted\") IS DISTINCT FROM (p.\"deletedAt\", p.\"isDeleted\")")"
check_eq "no row was deleted for good" "50|10" \
    "$(sql "$DB" "SELECT (SELECT count(*) FROM \"ProductAsset\"), (SELECT count(*) FROM \"Product\")")"
check_eq "violations() finds nothing" "" "$(sql "$DB" "SELECT * FROM integrity.violations()")"

finish
