# Helpers shared by the pgrx-tests/*.sh scripts (sourced, not run).
#
# Environment (set by `make test-cluster`; defaults match the Makefile's
# throwaway cluster): PG_BIN, SOCKET, PORT, DATA, AS_PG.
#
# Every script creates its own databases through new_db (unique names) and
# drops them on exit, whatever the outcome.  Checks never stop the script:
# each one prints "ok" or "FAIL" with expected and actual values, and `finish`
# exits non-zero when any check failed.

: "${PG_BIN:=/usr/lib/postgresql/15/bin}"
: "${DATA:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.pgdata}"
: "${SOCKET:=$DATA/socket}"
: "${PORT:=5499}"
if [ -z "${AS_PG+set}" ]; then
    if [ "$(id -u)" -eq 0 ]; then AS_PG="runuser -u postgres --"; else AS_PG=""; fi
fi

TEST_NAME=$(basename "$0" .sh)
PSQL=("$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SOCKET" -p "$PORT" -U postgres)
CHECKS=0
FAILURES=0
CREATED_DBS=()
TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pgi-$TEST_NAME.XXXXXX")
chmod 755 "$TMP_DIR"

cleanup() {
    local db
    for db in "${CREATED_DBS[@]}"; do
        "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 \
            || echo "warning: could not drop database $db" >&2
    done
    rm -rf "$TMP_DIR"
}
trap cleanup EXIT

log() { printf '%s\n' "$*"; }

# new_db VAR SUFFIX: creates an empty database with a name no other run uses
# and stores that name in VAR (no command substitution: the name must be
# recorded in this shell for cleanup).
new_db() {
    local name="pgi_${TEST_NAME}_${2}_$$_${RANDOM}"
    CREATED_DBS+=("$name")
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE \"$name\"" >/dev/null
    printf -v "$1" '%s' "$name"
}

# sql DB: runs the SQL read from stdin (or from the remaining arguments), -At
# output on stdout; any error stops psql and fails the calling command.
sql() {
    local db=$1
    shift
    if [ $# -gt 0 ]; then
        printf '%s\n' "$*" | "${PSQL[@]}" -d "$db" -f -
    else
        "${PSQL[@]}" -d "$db" -f -
    fi
}

pass() { CHECKS=$((CHECKS + 1)); log "ok   - $1"; }
fail() {
    CHECKS=$((CHECKS + 1))
    FAILURES=$((FAILURES + 1))
    log "FAIL - $1"
    shift
    local line
    for line in "$@"; do log "       $line"; done
}

# check_eq DESCRIPTION EXPECTED ACTUAL
check_eq() {
    if [ "$2" == "$3" ]; then
        pass "$1"
    else
        fail "$1" "expected: $(printf '%s' "$2" | head -c 2000 | tr '\n' '|')" \
                  "actual:   $(printf '%s' "$3" | head -c 2000 | tr '\n' '|')"
    fi
}

# check_same DESCRIPTION DB_A DB_B QUERY: the query gives the same output in both databases.
check_same() {
    local desc=$1 a=$2 b=$3 query=$4 out_a out_b
    out_a=$(sql "$a" "$query" 2>&1) || { fail "$desc" "query failed in $a: $out_a"; return 0; }
    out_b=$(sql "$b" "$query" 2>&1) || { fail "$desc" "query failed in $b: $out_b"; return 0; }
    if [ -z "$out_a" ]; then
        fail "$desc" "query returned nothing in $a (the comparison would be vacuous)"
    elif [ "$out_a" == "$out_b" ]; then
        pass "$desc ($(printf '%s\n' "$out_a" | wc -l) rows identical)"
    else
        fail "$desc" "diff ($a vs $b):" "$(diff <(printf '%s\n' "$out_a") <(printf '%s\n' "$out_b") | head -40)"
    fi
}

# check_error DESCRIPTION SQLSTATE DB SQL: the SQL (possibly several
# statements, e.g. a SET first) must fail, and the first error must carry
# SQLSTATE.  With VERBOSITY verbose psql prints "ERROR:  <sqlstate>: <message>".
check_error() {
    local desc=$1 state=$2 db=$3 query=$4 out rc=0 first
    out=$(printf '%s\n' '\set VERBOSITY verbose' "$query" | "${PSQL[@]}" -d "$db" -f - 2>&1 >/dev/null) || rc=$?
    first=$(printf '%s\n' "$out" | grep -m1 '^\(psql:[^ ]* \)\?ERROR:' || true)
    if [ "$rc" -eq 0 ]; then
        fail "$desc" "expected ERROR $state, but the statement succeeded" "sql: $query"
    elif [[ "$first" == *"ERROR:  $state:"* ]]; then
        pass "$desc ($state)"
    else
        fail "$desc" "expected ERROR $state, got: ${first:-$out}" "sql: $query"
    fi
}

# check_ok DESCRIPTION DB SQL: the SQL must succeed.
check_ok() {
    local desc=$1 db=$2 query=$3 out
    if out=$(sql "$db" "$query" 2>&1); then
        pass "$desc"
    else
        fail "$desc" "unexpected error: $out" "sql: $query"
    fi
}

# A number from pgbench's report; 0 when the line is missing.
report_value() { local v; v=$(sed -n "s/^$2: \([0-9]*\).*/\1/p" "$1" | head -1); echo "${v:-0}"; }

# stress_settings CLIENTS SECONDS: the stress scripts' pgbench settings,
# STRESS_CLIENTS and STRESS_SECONDS (per run) from the environment, with these
# defaults; sets CLIENTS and SECONDS_PER_RUN.
stress_settings() {
    CLIENTS=${STRESS_CLIENTS:-$1}
    SECONDS_PER_RUN=${STRESS_SECONDS:-$2}
    local v
    for v in CLIENTS SECONDS_PER_RUN; do
        if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
            echo "$(basename "$0" .sh): $v must be a positive integer, not '${!v}'" >&2
            exit 2
        fi
    done
}

# run_pgbench NAME ISOLATION SCRIPT@WEIGHT...: runs the scripts (files in
# TMP_DIR) with CLIENTS clients for SECONDS_PER_RUN against DB at that
# isolation level, as the stress scripts do; checks that pgbench ran to the end,
# that no transaction failed at READ COMMITTED, that at REPEATABLE READ every
# failure was a serialization failure (40001), and that none deadlocked.
run_pgbench() {
    local name=$1 isolation=$2 rc=0 t0 out err processed failed serialization deadlocks retried
    shift 2
    local files=() s
    for s in "$@"; do files+=(-f "$TMP_DIR/$s"); done
    out=$TMP_DIR/$name.out
    err=$TMP_DIR/$name.err
    t0=$(date +%s%N)
    PGOPTIONS="-c default_transaction_isolation=${isolation// /\\ }" \
        "$PG_BIN/pgbench" -h "$SOCKET" -p "$PORT" -U postgres -n -M prepared -c "$CLIENTS" -j "$CLIENTS" \
        -T "$SECONDS_PER_RUN" --max-tries=1000 --failures-detailed "${files[@]}" "$DB" \
        >"$out" 2>"$err" || rc=$?
    log "== $name ($isolation): pgbench -M prepared -c $CLIENTS -T $SECONDS_PER_RUN --max-tries=1000 $*" \
        "took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    sed -n '/^number of transactions actually processed/,/^latency average/p' "$out" | grep -v '^latency' \
        | sed 's/^/       /'
    if [ "$rc" -ne 0 ] || grep -q 'aborted' "$err"; then
        fail "[$name] pgbench ran to the end (exit $rc)" "$(grep -v '^DETAIL\|^HINT' "$err" | head -20)"
        return 0
    fi
    pass "[$name] pgbench ran to the end"
    processed=$(report_value "$out" 'number of transactions actually processed')
    failed=$(report_value "$out" 'number of failed transactions')
    serialization=$(report_value "$out" 'number of serialization failures')
    deadlocks=$(report_value "$out" 'number of deadlock failures')
    retried=$(report_value "$out" 'number of transactions retried')
    if [ "$processed" -gt 0 ]; then
        pass "[$name] $processed transactions processed"
    else
        fail "[$name] no transaction was processed"
    fi
    check_eq "[$name] no transaction failed after retries" "0" "$failed"
    check_eq "[$name] no deadlock" "0" "$deadlocks"
    if [ "$isolation" = "read committed" ]; then
        check_eq "[$name] nothing retried at read committed" "0" "$retried"
    else
        log "       transactions retried after 40001: $retried (serialization failures left: $serialization)"
    fi
}

finish() {
    if [ "$FAILURES" -gt 0 ]; then
        log "== $TEST_NAME: $FAILURES of $CHECKS checks FAILED"
        exit 1
    fi
    log "== $TEST_NAME: all $CHECKS checks passed"
    exit 0
}
