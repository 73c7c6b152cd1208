"""Migration guide 003's three Python scenarios, on the guarded tables, through
its InventoryOperations helper: the guards must let the correct code through and
refuse the wrong code with errors the application can handle."""

import uuid

import pytest

from conftest import InThread, backend_pid, wait_until_blocked
from inventory_operations import InventoryOperations, ReservationError

SPARE_STOCK_ID = 7


def new_txn():
    return str(uuid.uuid4())


def pieces(cur, ids):
    cur.execute("""SELECT created_by_transaction_id::text, status, version FROM sprinkler_spare_pieces
                   WHERE id = ANY(%s::uuid[]) ORDER BY id""", (ids,))
    return cur.fetchall()


def test_1_combine_spares_keeps_created_by_transaction_id(connect, driver):
    conn = connect()
    cur = conn.cursor()
    ops = InventoryOperations(cur)
    prod_txn = new_txn()
    piece_ids = ops.create_spare_pieces(SPARE_STOCK_ID, 10, prod_txn)
    conn.commit()

    combine_txn = new_txn()
    (bundle_id,) = ops.combine_spares(piece_ids[:8], bundle_size=8, number_of_bundles=1,
                                      transaction_id=combine_txn)
    conn.commit()
    assert pieces(cur, piece_ids[:8]) == [(prod_txn, "SOLD_OUT", 2)] * 8
    assert pieces(cur, [bundle_id]) == [(combine_txn, "IN_STOCK", 1)]

    # The guide's OLD code overwrote the creator: the immutable guard refuses it
    # and the whole statement changes nothing.
    with pytest.raises(driver.errors.RestrictViolation) as raised:
        cur.execute("""UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT', created_by_transaction_id = %s::uuid
                       WHERE id = ANY(%s::uuid[])""", (new_txn(), piece_ids[8:]))
    assert raised.value.diag.column_name == "created_by_transaction_id"
    conn.rollback()
    assert pieces(cur, piece_ids[8:]) == [(prod_txn, "IN_STOCK", 1)] * 2

    revert_txn = new_txn()
    result = ops.revert_combine_spares(combine_txn, revert_txn)
    conn.commit()
    assert result == {"pieces_restored": 8, "bundles_deleted": 1}
    assert pieces(cur, piece_ids[:8]) == [(prod_txn, "IN_STOCK", 3)] * 8

    # A second revert would re-stamp the bundle's deleter: write-once refuses it.
    with pytest.raises(driver.errors.RestrictViolation) as raised:
        ops.revert_combine_spares(combine_txn, new_txn())
    assert raised.value.diag.column_name == "deleted_by_transaction_id"
    conn.rollback()
    # The lifecycle events are append-only: history cannot be rewritten either.
    with pytest.raises(driver.errors.RestrictViolation):
        cur.execute("DELETE FROM piece_lifecycle_events WHERE transaction_id = %s::uuid", (combine_txn,))
    conn.rollback()


def test_2_concurrent_combines_one_succeeds_one_fails_cleanly(connect):
    first, second, observer = connect(), connect(), connect()
    setup = observer.cursor()
    prod_txn = new_txn()
    piece_ids = InventoryOperations(setup).create_spare_pieces(SPARE_STOCK_ID, 5, prod_txn)
    observer.commit()
    second_pid = backend_pid(second)

    def combine(conn, txn):
        with conn.cursor() as cur:
            return InventoryOperations(cur).combine_spares(piece_ids, 5, 1, txn)

    first_txn, second_txn = new_txn(), new_txn()
    combine(first, first_txn)  # holds the pieces' row locks until it commits
    race = InThread(combine, second, second_txn)
    wait_until_blocked(observer, second_pid)
    first.commit()
    with pytest.raises(ReservationError):
        race.result()
    second.rollback()

    # Every piece combined once (one version bump), one bundle, nothing from the loser.
    assert pieces(setup, piece_ids) == [(prod_txn, "SOLD_OUT", 2)] * 5
    setup.execute("""SELECT count(*) FILTER (WHERE created_by_transaction_id = %s::uuid),
                            count(*) FILTER (WHERE created_by_transaction_id = %s::uuid)
                     FROM sprinkler_spare_pieces""", (first_txn, second_txn))
    assert setup.fetchone() == (1, 0)
    setup.execute("SELECT count(*) FROM piece_lifecycle_events WHERE transaction_id = %s::uuid", (second_txn,))
    assert setup.fetchone() == (0,)


def test_2_without_row_locks_strict_versioning_refuses_the_second_combine(connect, driver):
    """Had combine_spares forgotten FOR UPDATE, the version guard still stops the
    second of two combines: it sends back the versions it read, stale by then,
    and gets 40001 (retryable) instead of combining the pieces twice."""
    first, second, observer = connect(), connect(), connect()
    setup = observer.cursor()
    prod_txn = new_txn()
    piece_ids = InventoryOperations(setup).create_spare_pieces(SPARE_STOCK_ID, 5, prod_txn)
    observer.commit()
    second_pid = backend_pid(second)

    def read_versions(conn):
        with conn.cursor() as cur:
            cur.execute("SELECT array_agg(version ORDER BY id) FROM sprinkler_spare_pieces"
                        " WHERE id = ANY(%s::uuid[])", (piece_ids,))
            return cur.fetchone()[0]

    def mark_sold_out(conn, versions):
        with conn.cursor() as cur:
            cur.execute("""UPDATE sprinkler_spare_pieces p SET status = 'SOLD_OUT', version = r.version
                           FROM unnest(%s::uuid[], %s::int[]) AS r(id, version) WHERE p.id = r.id""",
                        (sorted(piece_ids), versions))

    first_read, second_read = read_versions(first), read_versions(second)
    mark_sold_out(first, first_read)  # holds the row locks until it commits
    race = InThread(mark_sold_out, second, second_read)
    wait_until_blocked(observer, second_pid)
    first.commit()
    with pytest.raises(driver.errors.SerializationFailure):
        race.result()
    second.rollback()
    assert pieces(setup, piece_ids) == [(prod_txn, "SOLD_OUT", 2)] * 5


def test_3_stale_version_update_touches_no_row(connect):
    app, other = connect(), connect()
    cur = app.cursor()
    (piece_id,) = InventoryOperations(cur).create_spare_pieces(SPARE_STOCK_ID, 1, new_txn())
    app.commit()
    cur.execute("SELECT version FROM sprinkler_spare_pieces WHERE id = %s::uuid", (piece_id,))
    (read_version,) = cur.fetchone()
    app.commit()

    # Another session changes the piece; the database bumps its version.
    with other.cursor() as other_cur:
        other_cur.execute("UPDATE sprinkler_spare_pieces SET status = 'DISPATCHED' WHERE id = %s::uuid",
                          (piece_id,))
    other.commit()

    update = """UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT'
                WHERE id = %s::uuid AND version = %s RETURNING id"""
    cur.execute(update, (piece_id, read_version))
    assert cur.rowcount == 0
    cur.execute("SELECT version FROM sprinkler_spare_pieces WHERE id = %s::uuid", (piece_id,))
    (fresh_version,) = cur.fetchone()
    assert fresh_version == read_version + 1

    cur.execute(update, (piece_id, fresh_version))
    assert cur.rowcount == 1
    app.commit()
    assert pieces(cur, [piece_id])[0][1:] == ("SOLD_OUT", fresh_version + 1)
