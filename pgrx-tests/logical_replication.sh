#!/usr/bin/env bash
# Real logical replication (publication -> subscription) between two databases
# of a throwaway cluster started with wal_level = logical (the shared test
# cluster runs with wal_level = replica).  Apply workers run with
# session_replication_role = replica, so:
#   * versioning (origin-only triggers) never bumps an applied row: the
#     subscriber's version equals the publisher's after every update;
#   * lifecycle tracking (origin-only triggers) records an event once, on the
#     origin: the subscriber records only its own writes;
#   * append-only and immutable guards (ENABLE ALWAYS) refuse an applied
#     UPDATE/DELETE from a publisher that is not guarded: the apply worker
#     fails with 23001 and the subscriber's rows stay as they were;
#   * soft delete (an origin-only trigger) applies a replicated DELETE, which
#     only a purge on the origin sends, for good.
set -euo pipefail
. "$(dirname "$0")/lib.bash"

LR_DIR="$DATA/pgrx-tests-logrep-$$"
LR_CLUSTER="$LR_DIR/cluster"
LR_PORT=$((PORT + 1))
LR_LOG="$LR_DIR/server.log"
LR_PSQL=("$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$LR_DIR" -p "$LR_PORT" -U postgres)

stop_cluster() {
    if [ -f "$LR_CLUSTER/postmaster.pid" ]; then
        $AS_PG "$PG_BIN/pg_ctl" -D "$LR_CLUSTER" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$LR_DIR"
}
trap 'stop_cluster; cleanup' EXIT

# Four subscriptions: four apply workers, and their initial table syncs need
# workers of their own (the default of 4 logical replication workers can leave
# a sync waiting for a slot longer than the checks wait).
t0=$(date +%s%N)
$AS_PG mkdir -p "$LR_DIR"
$AS_PG "$PG_BIN/initdb" -D "$LR_CLUSTER" -U postgres -A trust --no-instructions >/dev/null
$AS_PG "$PG_BIN/pg_ctl" -D "$LR_CLUSTER" -l "$LR_LOG" -w start \
    -o "-p $LR_PORT -c listen_addresses='' -c unix_socket_directories=$LR_DIR -c fsync=off -c wal_level=logical -c log_error_verbosity=verbose -c wal_retrieve_retry_interval=200ms -c max_worker_processes=16 -c max_logical_replication_workers=12" >/dev/null
log "== throwaway cluster with wal_level = logical up in $(( ($(date +%s%N) - t0) / 1000000 )) ms ($LR_CLUSTER)"

lr() { local db=$1; shift; printf '%s;\n' "$@" | "${LR_PSQL[@]}" -d "$db" -f -; }

# wait_for DESCRIPTION DB QUERY EXPECTED: polls (up to 30 s) until the query gives EXPECTED.
wait_for() {
    local desc=$1 db=$2 query=$3 expected=$4 actual="" i
    for i in $(seq 1 300); do
        actual=$(lr "$db" "$query" 2>&1) || true
        [ "$actual" == "$expected" ] && break
        sleep 0.1
    done
    check_eq "$desc" "$expected" "$actual"
}

SCHEMA="
CREATE TABLE sprinkler_spare_pieces (
    id                        integer PRIMARY KEY,
    status                    text    NOT NULL DEFAULT 'IN_STOCK',
    created_by_transaction_id integer NOT NULL,
    original_stock_id         integer NOT NULL,
    version                   integer NOT NULL DEFAULT 1
);
CREATE TABLE ledger_entries (
    id            integer PRIMARY KEY,
    retailer_id   integer NOT NULL,
    entry_type    text    NOT NULL,
    amount        numeric(12, 2) NOT NULL
);
CREATE TABLE chained_entries (
    id            integer PRIMARY KEY,
    retailer_id   integer NOT NULL,
    amount        numeric(12, 2) NOT NULL,
    booked_at     timestamptz NOT NULL,
    chain_seq     bigint,
    row_hash      bytea
);
SELECT integrity.enable_hash_chain('chained_entries', ARRAY['retailer_id']);
CREATE TABLE users (id bigint PRIMARY KEY, whatsapp text NOT NULL, deleted_at timestamptz);
SELECT integrity.enable_soft_delete('users');"
lr postgres "CREATE DATABASE origin" "CREATE DATABASE replica"
lr origin >/dev/null "CREATE EXTENSION pg_integrity; $SCHEMA
    INSERT INTO sprinkler_spare_pieces (id, created_by_transaction_id, original_stock_id)
    SELECT i, 1000 + i, 1 + i % 5 FROM generate_series(1, 20) AS i;
    INSERT INTO ledger_entries SELECT i, 1 + i % 3, 'DEBIT', i FROM generate_series(1, 10) AS i;
    -- The origin versions the pieces; its ledger is NOT guarded (a legacy publisher).
    SELECT integrity.enable_versioning('sprinkler_spare_pieces');
    SELECT integrity.track_lifecycle('sprinkler_spare_pieces');
    UPDATE sprinkler_spare_pieces SET status = 'RESERVED' WHERE id <= 5;       -- version 2
    CREATE PUBLICATION pub_pieces FOR TABLE sprinkler_spare_pieces;
    CREATE PUBLICATION pub_ledger FOR TABLE ledger_entries;
    INSERT INTO chained_entries (id, retailer_id, amount, booked_at)
    SELECT i, 1 + i % 3, i, timestamptz '2026-11-01 00:00+00' + i * interval '1 hour' FROM generate_series(1, 30) AS i;
    CREATE PUBLICATION pub_chain FOR TABLE chained_entries;
    INSERT INTO users SELECT i, '+23480000000' || i FROM generate_series(10, 19) AS i;
    CREATE PUBLICATION pub_users FOR TABLE users;
    SELECT pg_create_logical_replication_slot('sub_pieces', 'pgoutput');
    SELECT pg_create_logical_replication_slot('sub_ledger', 'pgoutput');
    SELECT pg_create_logical_replication_slot('sub_chain', 'pgoutput');
    SELECT pg_create_logical_replication_slot('sub_users', 'pgoutput');"
lr replica >/dev/null "CREATE EXTENSION pg_integrity; $SCHEMA
    SELECT integrity.enable_versioning('sprinkler_spare_pieces');
    SELECT integrity.protect_immutable('sprinkler_spare_pieces', ARRAY['created_by_transaction_id', 'original_stock_id']);
    SELECT integrity.track_lifecycle('sprinkler_spare_pieces');
    SELECT integrity.protect_append_only('ledger_entries');"
for name in pieces ledger chain users; do
    lr replica "CREATE SUBSCRIPTION sub_$name
                CONNECTION 'host=$LR_DIR port=$LR_PORT dbname=origin user=postgres'
                PUBLICATION pub_$name WITH (create_slot = false, slot_name = 'sub_$name')"
done

PIECES="SELECT string_agg(format('%s:%s:%s', id, status, version), ',' ORDER BY id) FROM sprinkler_spare_pieces"

# --- Versioning: applied rows keep the origin's version --------------------------
wait_for "initial sync copies the pieces with the origin's versions" replica "$PIECES" "$(lr origin "$PIECES")"
lr origin "UPDATE sprinkler_spare_pieces SET status = 'SOLD' WHERE id <= 10;
           UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT' WHERE id <= 3;
           UPDATE sprinkler_spare_pieces SET status = 'SCRAPPED', version = version + 1 WHERE id = 20"
check_eq "origin versions after three updates" "4|4|4|3|3|2|1|2" \
    "$(lr origin "SELECT string_agg(version::text, '|' ORDER BY id) FROM sprinkler_spare_pieces
                   WHERE id IN (1, 3, 2, 4, 5, 10, 11, 20)")"
wait_for "replicated updates carry the origin's version, no second bump" replica "$PIECES" "$(lr origin "$PIECES")"
EVENTS="SELECT count(*) || ':' || coalesce(string_agg(DISTINCT operation, ','), '') FROM integrity.lifecycle_events"
check_eq "the origin recorded a lifecycle event per updated row" "19:UPDATE" "$(lr origin "$EVENTS")"
check_eq "the subscriber records no lifecycle events for rows it applied (origin-only triggers)" "0:" \
    "$(lr replica "$EVENTS")"
check_eq "the subscriber's own writes still bump (origin role): 4 -> 5" "5" \
    "$(lr replica "UPDATE sprinkler_spare_pieces SET status = 'LOCAL' WHERE id = 1 RETURNING version")"
check_eq "the subscriber records lifecycle events for its own writes" "1:UPDATE" "$(lr replica "$EVENTS")"

# --- Append-only on the subscriber refuses applied UPDATE/DELETE -----------------
LEDGER="SELECT count(*), sum(amount) FROM ledger_entries"
lr origin "INSERT INTO ledger_entries VALUES (11, 1, 'CREDIT', 5.5)"
wait_for "applied INSERTs reach the append-only ledger" replica "$LEDGER" "11|60.50"
ledger_errors_before=$(lr replica "SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subname = 'sub_ledger'")
lr origin "UPDATE ledger_entries SET amount = 0.01 WHERE id = 1"
wait_for "the apply worker hits an error on the applied UPDATE" replica \
    "SELECT apply_error_count > $ledger_errors_before FROM pg_stat_subscription_stats WHERE subname = 'sub_ledger'" "t"
if grep -q 'ERROR:  23001: cannot update rows of append-only table "ledger_entries"' "$LR_LOG"; then
    pass "the subscriber's log shows the 23001 refusal of the applied UPDATE"
else
    fail "the subscriber's log shows the 23001 refusal of the applied UPDATE" \
        "$(grep 'ERROR' "$LR_LOG" | tail -5)"
fi
check_eq "the subscriber's ledger is unchanged" "11|60.50" "$(lr replica "$LEDGER")"
check_eq "the subscriber's entry 1 keeps its amount" "1.00" "$(lr replica "SELECT amount FROM ledger_entries WHERE id = 1")"
lr replica "ALTER SUBSCRIPTION sub_ledger DISABLE"

# --- Immutable columns on the subscriber refuse applied changes ------------------
pieces_errors_before=$(lr replica "SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subname = 'sub_pieces'")
lr origin "UPDATE sprinkler_spare_pieces SET original_stock_id = 99 WHERE id = 2"
wait_for "the apply worker hits an error on the applied immutable change" replica \
    "SELECT apply_error_count > $pieces_errors_before FROM pg_stat_subscription_stats WHERE subname = 'sub_pieces'" "t"
if grep -q 'ERROR:  23001: column "original_stock_id" of table "sprinkler_spare_pieces" is immutable' "$LR_LOG"; then
    pass "the subscriber's log shows the 23001 refusal of the immutable change"
else
    fail "the subscriber's log shows the 23001 refusal of the immutable change" "$(grep 'ERROR' "$LR_LOG" | tail -5)"
fi
check_eq "the subscriber's original_stock_id is unchanged" "3" \
    "$(lr replica "SELECT original_stock_id FROM sprinkler_spare_pieces WHERE id = 2")"
lr replica "ALTER SUBSCRIPTION sub_pieces DISABLE"

# --- Hash chains: the subscriber keeps the origin's hashes ----------------------
CHAIN="SELECT count(*), md5(string_agg(format('%s:%s:%s', id, chain_seq, encode(row_hash, 'hex')), ',' ORDER BY id))
         FROM chained_entries"
lr origin "INSERT INTO chained_entries (id, retailer_id, amount, booked_at)
           SELECT i, 1 + i % 3, i, timestamptz '2026-11-02 00:00+00' + i * interval '1 hour' FROM generate_series(31, 40) AS i"
wait_for "the subscriber has the origin's rows with the origin's sequence numbers and hashes" replica "$CHAIN" \
    "$(lr origin "$CHAIN")"
DIGEST=$(lr origin "SELECT integrity.chain_digest('chained_entries')")
check_eq "the subscriber's chains verify, also against the origin's digest" "" \
    "$(lr replica "SELECT format('%s %s: %s', chain, row_key, problem)
                    FROM integrity.verify_chain('chained_entries', '$DIGEST')")"
lr replica "ALTER SUBSCRIPTION sub_chain DISABLE"

# --- Soft delete: a soft delete replicates as the UPDATE it is; a purge as ------
# --- the DELETE it is, which the subscriber applies for good --------------------
USERS="SELECT string_agg(format('%s:%s', id, deleted_at IS NOT NULL), ',' ORDER BY id) FROM users"
wait_for "initial sync copies the users" replica "SELECT count(*) FROM users" "10"
lr origin "DELETE FROM users WHERE id IN (10, 11, 12)"
check_eq "the origin keeps its deleted users" "10" "$(lr origin "SELECT count(*) FROM users")"
wait_for "the subscriber has the same users, the same three deleted" replica "$USERS" "$(lr origin "$USERS")"
lr origin "UPDATE users SET deleted_at = now() - interval '40 days' WHERE id IN (10, 11)" \
          "SELECT integrity.purge_deleted('users', '30 days')" >/dev/null
check_eq "the origin purged two users" "8" "$(lr origin "SELECT count(*) FROM users")"
wait_for "the purge's DELETEs remove them on the subscriber too (its trigger fires on origin writes only)" \
    replica "$USERS" "$(lr origin "$USERS")"
check_eq "the subscriber's own DELETE is still a soft delete" "8|t" \
    "$(lr replica "DELETE FROM users WHERE id = 13" "SELECT count(*), bool_or(id = 13 AND deleted_at IS NOT NULL) FROM users")"
lr replica "ALTER SUBSCRIPTION sub_users DISABLE"

for name in pieces ledger chain users; do
    lr replica "ALTER SUBSCRIPTION sub_$name SET (slot_name = NONE)" "DROP SUBSCRIPTION sub_$name"
    lr origin "SELECT pg_drop_replication_slot('sub_$name')" >/dev/null
done
finish
