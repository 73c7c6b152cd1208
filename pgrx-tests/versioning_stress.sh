#!/usr/bin/env bash
# integrity.enable_versioning under pgbench load: no lost and no double bump.
#
# Every run uses its own table of counters (hits integer, version integer,
# strict versioning) and checks afterwards, for every row, that
# version = 1 + hits: each committed update bumped the version exactly once.
# Where every committed transaction adds exactly one hit, sum(hits) must also
# equal the number of transactions pgbench reports as processed.
#
#   blind       UPDATE ... SET hits = hits + 1                (never refused)
#   plus_one    read version (\gset), then SET version = :v + 1 without
#               WHERE version: refused with 40001 ("stale version") when the
#               row moved two or more versions since the read (one behind is
#               accepted, see DESIGN.md); no retries
#   plus_one_retry  the same with --max-tries: pgbench retries the 40001s
#   as_read     "what you read": SET version = :v, refused when one behind
#   orm         ... WHERE id = :id AND version = :v: never refused, may update 0 rows
set -euo pipefail
. "$(dirname "$0")/lib.bash"

new_db DB main
CLIENTS=${STRESS_CLIENTS:-8}
BLIND_TX=${STRESS_BLIND_TX:-2000}     # per client
HOT_TX=${STRESS_HOT_TX:-1000}         # per client, on 3 hot rows
log "== database $DB, $CLIENTS clients"

sql "$DB" >/dev/null <<'SQL'
CREATE EXTENSION pg_integrity;
CREATE FUNCTION make_counters(name text, n integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE %I (id integer PRIMARY KEY, hits integer NOT NULL DEFAULT 0,
                                     version integer NOT NULL DEFAULT 1)', name);
    EXECUTE format('INSERT INTO %I (id) SELECT generate_series(1, %s)', name, n);
    PERFORM integrity.enable_versioning(name);
END $$;
SELECT make_counters('counters_blind', 10);
SELECT make_counters('counters_plus_one', 3);
SELECT make_counters('counters_plus_one_retry', 3);
SELECT make_counters('counters_as_read', 3);
SELECT make_counters('counters_orm', 3);
SQL

cat >"$TMP_DIR/blind.sql" <<'EOF'
\set id random(1, 10)
UPDATE counters_blind SET hits = hits + 1 WHERE id = :id;
EOF
for kind in plus_one plus_one_retry as_read orm; do
    case $kind in
        plus_one | plus_one_retry) update="SET hits = hits + 1, version = :v + 1 WHERE id = :id" ;;
        as_read) update="SET hits = hits + 1, version = :v WHERE id = :id" ;;
        orm) update="SET hits = hits + 1, version = :v + 1 WHERE id = :id AND version = :v" ;;
    esac
    cat >"$TMP_DIR/$kind.sql" <<EOF
\\set id random(1, 3)
BEGIN;
SELECT version AS v FROM counters_$kind WHERE id = :id \\gset
UPDATE counters_$kind $update;
END;
EOF
done

# A number from pgbench's report; empty when the line is missing.
report_value() { sed -n "s/^$2: \([0-9]*\).*/\1/p" "$1" | head -1; }

# run_pgbench KIND TX_PER_CLIENT [pgbench options]: runs the script, checks that
# pgbench exited cleanly and that every error it saw was the guard's 40001.
run_pgbench() {
    local kind=$1 tx=$2 rc=0 t0 errors stale
    shift 2
    t0=$(date +%s%N)
    "$PG_BIN/pgbench" -h "$SOCKET" -p "$PORT" -U postgres -n -c "$CLIENTS" -j "$CLIENTS" -t "$tx" \
        --failures-detailed --verbose-errors "$@" -f "$TMP_DIR/$kind.sql" "$DB" \
        >"$TMP_DIR/$kind.out" 2>"$TMP_DIR/$kind.err" || rc=$?
    log "== $kind: pgbench $* -c $CLIENTS -t $tx took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    sed -n '/^number of transactions actually processed/,/^total number of retries/p' "$TMP_DIR/$kind.out" \
        | sed 's/^/       /'
    if [ "$rc" -ne 0 ] || grep -q 'aborted' "$TMP_DIR/$kind.err"; then
        fail "[$kind] pgbench ran to the end (exit $rc)" "$(grep -v 'got an error\|^DETAIL\|^HINT\|repeats the' "$TMP_DIR/$kind.err" | head -20)"
        return 0
    fi
    pass "[$kind] pgbench ran to the end"
    errors=$(grep -c 'got an error' "$TMP_DIR/$kind.err" || true)
    stale=$(grep -c 'got an error.*ERROR:  could not update row of table "counters_[a-z_]*": stale version' "$TMP_DIR/$kind.err" || true)
    check_eq "[$kind] every error pgbench saw is the guard's stale-version refusal ($errors errors)" "$errors" "$stale"
}

# check_invariant KIND: version = 1 + hits on every row; prints sum(hits).
check_invariant() {
    local kind=$1
    check_eq "[$kind] version = 1 + hits on every row" "" \
        "$(sql "$DB" "SELECT format('id %s: hits %s, version %s', id, hits, version)
                        FROM counters_$kind WHERE version <> 1 + hits ORDER BY id")"
}
hits_of() { sql "$DB" "SELECT sum(hits) FROM counters_$1"; }

# --- blind increments: 8 x 2000 on 10 rows --------------------------------------
run_pgbench blind "$BLIND_TX"
out=$TMP_DIR/blind.out
check_eq "[blind] all transactions processed" "$((CLIENTS * BLIND_TX))" "$(report_value "$out" 'number of transactions actually processed')"
check_eq "[blind] no failed transaction" "0" "$(report_value "$out" 'number of failed transactions')"
check_eq "[blind] sum(hits) = transactions processed" "$((CLIENTS * BLIND_TX))" "$(hits_of blind)"
check_invariant blind

# --- read + 1 without WHERE version, no retries -----------------------------------
run_pgbench plus_one "$HOT_TX"
out=$TMP_DIR/plus_one.out
processed=$(report_value "$out" 'number of transactions actually processed')
failed=$(report_value "$out" 'number of failed transactions')
serialization=$(report_value "$out" 'number of serialization failures')
check_eq "[plus_one] processed + failed = transactions run" "$((CLIENTS * HOT_TX))" "$((processed + failed))"
check_eq "[plus_one] every failure is a serialization failure (40001)" "$failed" "$serialization"
check_eq "[plus_one] no deadlock failure" "0" "$(report_value "$out" 'number of deadlock failures')"
if [ "$failed" -gt 0 ]; then
    pass "[plus_one] stale writes were refused ($failed of $((CLIENTS * HOT_TX)))"
else
    fail "[plus_one] expected some stale writes two versions behind to be refused, none were"
fi
check_eq "[plus_one] sum(hits) = transactions processed" "$processed" "$(hits_of plus_one)"
check_invariant plus_one

# --- read + 1 without WHERE version, pgbench retries the 40001s ------------------
run_pgbench plus_one_retry "$HOT_TX" --max-tries=50
out=$TMP_DIR/plus_one_retry.out
processed=$(report_value "$out" 'number of transactions actually processed')
failed=$(report_value "$out" 'number of failed transactions')
retried=$(report_value "$out" 'number of transactions retried')
check_eq "[plus_one_retry] processed + failed = transactions run" "$((CLIENTS * HOT_TX))" "$((processed + failed))"
check_eq "[plus_one_retry] no transaction failed after retries" "0" "$failed"
if [ "${retried:-0}" -gt 0 ]; then
    pass "[plus_one_retry] 40001 refusals were retried by pgbench ($retried transactions)"
else
    fail "[plus_one_retry] expected pgbench to retry some transactions, retried: '${retried}'"
fi
check_eq "[plus_one_retry] sum(hits) = transactions processed" "$processed" "$(hits_of plus_one_retry)"
check_invariant plus_one_retry

# --- "what you read" without WHERE version, no retries --------------------------
run_pgbench as_read "$HOT_TX"
out=$TMP_DIR/as_read.out
processed=$(report_value "$out" 'number of transactions actually processed')
failed=$(report_value "$out" 'number of failed transactions')
check_eq "[as_read] processed + failed = transactions run" "$((CLIENTS * HOT_TX))" "$((processed + failed))"
check_eq "[as_read] every failure is a serialization failure (40001)" "$failed" \
    "$(report_value "$out" 'number of serialization failures')"
if [ "$failed" -gt 0 ]; then
    pass "[as_read] stale writes were refused ($failed of $((CLIENTS * HOT_TX)))"
else
    fail "[as_read] expected some stale writes one version behind to be refused, none were"
fi
check_eq "[as_read] sum(hits) = transactions processed" "$processed" "$(hits_of as_read)"
check_invariant as_read

# --- ORM convention: WHERE version = :v catches every stale write ----------------
run_pgbench orm "$HOT_TX"
out=$TMP_DIR/orm.out
check_eq "[orm] all transactions processed" "$((CLIENTS * HOT_TX))" "$(report_value "$out" 'number of transactions actually processed')"
check_eq "[orm] no failed transaction" "0" "$(report_value "$out" 'number of failed transactions')"
orm_hits=$(hits_of orm)
if [ "$orm_hits" -gt 0 ] && [ "$orm_hits" -le "$((CLIENTS * HOT_TX))" ]; then
    pass "[orm] 0 < sum(hits) = $orm_hits <= transactions (stale ones updated 0 rows)"
else
    fail "[orm] sum(hits) out of range" "sum(hits) = $orm_hits, transactions = $((CLIENTS * HOT_TX))"
fi
check_invariant orm

finish
