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
#
# A PostgreSQL TAP test (PostgreSQL::Test::Cluster), run by pgrx-tests/run with
# prove as the postgres user, the PostgreSQL binaries first on PATH.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Four subscriptions: four apply workers, and their initial table syncs need
# workers of their own (the default of 4 logical replication workers can leave
# a sync waiting for a slot longer than the checks wait).
my $node = PostgreSQL::Test::Cluster->new('logrep');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq(
log_error_verbosity = verbose
wal_retrieve_retry_interval = 200ms
max_worker_processes = 16
max_logical_replication_workers = 12
max_wal_senders = 20
max_replication_slots = 20));
$node->start;

sub origin  { $node->safe_psql('origin',  $_[0]) }
sub replica { $node->safe_psql('replica', $_[0]) }
# The apply worker of SUBSCRIPTION failed at least once more than BEFORE times.
sub apply_failed {
    my ($sub, $before, $desc) = @_;
    ok($node->poll_query_until('replica', "SELECT apply_error_count > $before
        FROM pg_stat_subscription_stats WHERE subname = '$sub'"), $desc);
}
sub apply_errors {
    replica("SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subname = '$_[0]'");
}
sub log_shows {
    my ($message, $desc) = @_;
    return if ok($node->log_contains(qr/ERROR:  \Q$message\E/), $desc);
    my @errors = grep { /ERROR/ } split /^/, slurp_file($node->logfile);
    splice(@errors, 0, -5);    # the last five
    diag(@errors);
}

my $schema = q{
CREATE EXTENSION pg_integrity;
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
SELECT integrity.enable_soft_delete('users');
};
$node->safe_psql('postgres', 'CREATE DATABASE origin; CREATE DATABASE replica;');
origin($schema . q{
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
    SELECT pg_create_logical_replication_slot('sub_users', 'pgoutput');
});
replica($schema . q{
    SELECT integrity.enable_versioning('sprinkler_spare_pieces');
    SELECT integrity.protect_immutable('sprinkler_spare_pieces', ARRAY['created_by_transaction_id', 'original_stock_id']);
    SELECT integrity.track_lifecycle('sprinkler_spare_pieces');
    SELECT integrity.protect_append_only('ledger_entries');
});
my $connstr = $node->connstr . ' dbname=origin';
for my $name (qw(pieces ledger chain users)) {
    replica("CREATE SUBSCRIPTION sub_$name CONNECTION '$connstr'
             PUBLICATION pub_$name WITH (create_slot = false, slot_name = 'sub_$name')");
}
$node->wait_for_subscription_sync($node, 'sub_pieces', 'replica');

# --- Versioning: applied rows keep the origin's version --------------------------
my $pieces = q{SELECT string_agg(format('%s:%s:%s', id, status, version), ',' ORDER BY id) FROM sprinkler_spare_pieces};
is(replica($pieces), origin($pieces), "initial sync copies the pieces with the origin's versions");
origin(q{UPDATE sprinkler_spare_pieces SET status = 'SOLD' WHERE id <= 10;
         UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT' WHERE id <= 3;
         UPDATE sprinkler_spare_pieces SET status = 'SCRAPPED', version = version + 1 WHERE id = 20});
is(origin(q{SELECT string_agg(version::text, '|' ORDER BY id) FROM sprinkler_spare_pieces
            WHERE id IN (1, 3, 2, 4, 5, 10, 11, 20)}),
   '4|4|4|3|3|2|1|2', 'origin versions after three updates');
$node->wait_for_catchup('sub_pieces');
is(replica($pieces), origin($pieces), "replicated updates carry the origin's version, no second bump");
my $events = q{SELECT count(*) || ':' || coalesce(string_agg(DISTINCT operation, ','), '') FROM integrity.lifecycle_events};
is(origin($events), '19:UPDATE', 'the origin recorded a lifecycle event per updated row');
is(replica($events), '0:',
   'the subscriber records no lifecycle events for rows it applied (origin-only triggers)');
is(replica(q{UPDATE sprinkler_spare_pieces SET status = 'LOCAL' WHERE id = 1 RETURNING version}), '5',
   "the subscriber's own writes still bump (origin role): 4 -> 5");
is(replica($events), '1:UPDATE', 'the subscriber records lifecycle events for its own writes');

# --- Append-only on the subscriber refuses applied UPDATE/DELETE -----------------
my $ledger = 'SELECT count(*), sum(amount) FROM ledger_entries';
origin(q{INSERT INTO ledger_entries VALUES (11, 1, 'CREDIT', 5.5)});
$node->wait_for_catchup('sub_ledger');
is(replica($ledger), '11|60.50', 'applied INSERTs reach the append-only ledger');
my $errors = apply_errors('sub_ledger');
origin('UPDATE ledger_entries SET amount = 0.01 WHERE id = 1');
apply_failed('sub_ledger', $errors, 'the apply worker hits an error on the applied UPDATE');
log_shows(q{23001: cannot update rows of append-only table "ledger_entries"},
          "the subscriber's log shows the 23001 refusal of the applied UPDATE");
is(replica($ledger), '11|60.50', "the subscriber's ledger is unchanged");
is(replica('SELECT amount FROM ledger_entries WHERE id = 1'), '1.00', "the subscriber's entry 1 keeps its amount");
replica('ALTER SUBSCRIPTION sub_ledger DISABLE');

# --- Immutable columns on the subscriber refuse applied changes ------------------
$errors = apply_errors('sub_pieces');
origin('UPDATE sprinkler_spare_pieces SET original_stock_id = 99 WHERE id = 2');
apply_failed('sub_pieces', $errors, 'the apply worker hits an error on the applied immutable change');
log_shows(q{23001: column "original_stock_id" of table "sprinkler_spare_pieces" is immutable},
          "the subscriber's log shows the 23001 refusal of the immutable change");
is(replica('SELECT original_stock_id FROM sprinkler_spare_pieces WHERE id = 2'), '3',
   "the subscriber's original_stock_id is unchanged");
replica('ALTER SUBSCRIPTION sub_pieces DISABLE');

# --- Hash chains: the subscriber keeps the origin's hashes ----------------------
my $chain = q{SELECT count(*), md5(string_agg(format('%s:%s:%s', id, chain_seq, encode(row_hash, 'hex')), ',' ORDER BY id))
                FROM chained_entries};
origin(q{INSERT INTO chained_entries (id, retailer_id, amount, booked_at)
         SELECT i, 1 + i % 3, i, timestamptz '2026-11-02 00:00+00' + i * interval '1 hour' FROM generate_series(31, 40) AS i});
$node->wait_for_catchup('sub_chain');
is(replica($chain), origin($chain),
   "the subscriber has the origin's rows with the origin's sequence numbers and hashes");
my $digest = origin(q{SELECT integrity.chain_digest('chained_entries')});
is(replica(qq{SELECT format('%s %s: %s', chain, row_key, problem)
                FROM integrity.verify_chain('chained_entries', '$digest')}),
   '', "the subscriber's chains verify, also against the origin's digest");
replica('ALTER SUBSCRIPTION sub_chain DISABLE');

# --- Soft delete: a soft delete replicates as the UPDATE it is; a purge as ------
# --- the DELETE it is, which the subscriber applies for good --------------------
my $users = q{SELECT string_agg(format('%s:%s', id, deleted_at IS NOT NULL), ',' ORDER BY id) FROM users};
is(replica('SELECT count(*) FROM users'), '10', 'initial sync copies the users');
origin('DELETE FROM users WHERE id IN (10, 11, 12)');
is(origin('SELECT count(*) FROM users'), '10', 'the origin keeps its deleted users');
$node->wait_for_catchup('sub_users');
is(replica($users), origin($users), 'the subscriber has the same users, the same three deleted');
origin(q{UPDATE users SET deleted_at = now() - interval '40 days' WHERE id IN (10, 11);
         SELECT integrity.purge_deleted('users', '30 days')});
is(origin('SELECT count(*) FROM users'), '8', 'the origin purged two users');
$node->wait_for_catchup('sub_users');
is(replica($users), origin($users),
   "the purge's DELETEs remove them on the subscriber too (its trigger fires on origin writes only)");
is(replica('DELETE FROM users WHERE id = 13; SELECT count(*), bool_or(id = 13 AND deleted_at IS NOT NULL) FROM users'),
   '8|t', "the subscriber's own DELETE is still a soft delete");

# The END block of PostgreSQL::Test::Cluster stops the cluster and removes it.
done_testing();
