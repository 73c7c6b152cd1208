#!/usr/bin/env bash
# integrity.enable_hash_chain under pgbench load: chains never fork.
#
# 8 clients insert single rows into 20 chains of one ledger (many inserts
# meet on one chain), at READ COMMITTED and at REPEATABLE READ (where pgbench
# retries the 40001 a stale snapshot gets).  Afterwards, for every chain, the
# sequence numbers are exactly 1 … n, the number of rows is what pgbench
# committed, and verify_chain() finds nothing.
set -euo pipefail
. "$(dirname "$0")/lib.bash"

new_db DB main
CLIENTS=${STRESS_CLIENTS:-8}
TX=${STRESS_CHAIN_TX:-1000}   # per client and run
log "== database $DB, $CLIENTS clients"

sql "$DB" >/dev/null <<'SQL'
CREATE EXTENSION pg_integrity;
CREATE TABLE ledger_entries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id   int NOT NULL,
    wholesaler_id int NOT NULL,
    entry_type    text NOT NULL,
    amount        numeric(12, 2) NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    chain_seq     bigint,
    row_hash      bytea
);
SELECT integrity.enable_hash_chain('ledger_entries', ARRAY['retailer_id', 'wholesaler_id']);
SQL

for level in 'READ COMMITTED' 'REPEATABLE READ'; do
    cat >"$TMP_DIR/${level// /_}.sql" <<EOF2
\\set retailer random(1, 4)
\\set wholesaler random(1, 5)
\\set cents random(1, 10000)
BEGIN ISOLATION LEVEL $level;
INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount)
VALUES (:retailer, :wholesaler, 'DEBIT', :cents / 100.0);
END;
EOF2
done

report_value() { sed -n "s/^$2: \([0-9]*\).*/\1/p" "$1" | head -1; }

total=0
for level in READ_COMMITTED REPEATABLE_READ; do
    rc=0
    "$PG_BIN/pgbench" -h "$SOCKET" -p "$PORT" -U postgres -n -c "$CLIENTS" -j "$CLIENTS" -t "$TX" \
        --max-tries=100 --failures-detailed -f "$TMP_DIR/$level.sql" "$DB" \
        >"$TMP_DIR/$level.out" 2>"$TMP_DIR/$level.err" || rc=$?
    [ "$rc" -eq 0 ] || log "$(head -5 "$TMP_DIR/$level.err")"
    processed=$(report_value "$TMP_DIR/$level.out" 'number of transactions actually processed')
    failed=$(report_value "$TMP_DIR/$level.out" 'number of failed transactions')
    retried=$(report_value "$TMP_DIR/$level.out" 'number of transactions retried')
    log "== $level: $processed processed, $failed failed, ${retried:-0} retried"
    check_eq "[$level] pgbench ran to the end" "0" "$rc"
    check_eq "[$level] every transaction committed" "$((CLIENTS * TX))" "$processed"
    total=$((total + processed))
done

check_eq "rows = committed inserts" "$total" "$(sql "$DB" "SELECT count(*) FROM ledger_entries")"
check_eq "every chain is numbered 1 … n without gaps or repeats" "" \
    "$(sql "$DB" "SELECT format('chain (%s, %s): %s rows, seq %s to %s, %s distinct', retailer_id, wholesaler_id,
                                count(*), min(chain_seq), max(chain_seq), count(DISTINCT chain_seq))
                    FROM ledger_entries GROUP BY retailer_id, wholesaler_id
                  HAVING min(chain_seq) <> 1 OR max(chain_seq) <> count(*) OR count(DISTINCT chain_seq) <> count(*)")"
check_eq "verify_chain() finds nothing" "" \
    "$(sql "$DB" "SELECT format('%s %s: %s', chain, row_key, problem) FROM integrity.verify_chain('ledger_entries')")"
check_eq "20 chains" "20" "$(sql "$DB" "SELECT jsonb_array_length(integrity.chain_digest('ledger_entries') -> 'chains')")"

finish
