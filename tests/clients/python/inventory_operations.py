"""Guide 003's InventoryOperations helper, reduced to what its test scenarios
call, on guarded tables (../schema.sql). It works on a DB-API cursor of psycopg2 or
psycopg 3 and never commits: the caller's transaction does (the guide's
get_db_cursor(commit=True)). Ids travel as text, which both drivers send alike."""


class ReservationError(Exception):
    """Some of the pieces are no longer in stock (another operation took them)."""


class InventoryOperations:
    def __init__(self, cursor):
        self.cur = cursor

    def create_spare_pieces(self, stock_id, piece_count, transaction_id):
        self.cur.execute(
            """INSERT INTO sprinkler_spare_pieces (stock_id, piece_count, created_by_transaction_id,
                                                   original_stock_id)
               SELECT %s, 1, %s::uuid, %s FROM generate_series(1, %s)
               RETURNING id::text""",
            (stock_id, transaction_id, stock_id, piece_count))
        piece_ids = [row[0] for row in self.cur.fetchall()]
        self._log(piece_ids, "CREATED", transaction_id)
        return piece_ids

    def combine_spares(self, spare_piece_ids, bundle_size, number_of_bundles, transaction_id):
        # Pessimistic locking, as in the guide: a concurrent combine of the same
        # pieces waits here, then finds them SOLD_OUT.
        self.cur.execute(
            """SELECT id FROM sprinkler_spare_pieces
               WHERE id = ANY(%s::uuid[]) AND status = 'IN_STOCK' FOR UPDATE""",
            (spare_piece_ids,))
        if self.cur.rowcount != len(spare_piece_ids):
            raise ReservationError(f"{len(spare_piece_ids) - self.cur.rowcount} pieces are not in stock")
        # created_by_transaction_id is NOT touched: the immutable guard keeps it.
        self.cur.execute("UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT' WHERE id = ANY(%s::uuid[])",
                         (spare_piece_ids,))
        self._log(spare_piece_ids, "COMBINED", transaction_id)
        self.cur.execute(
            """INSERT INTO sprinkler_spare_pieces (stock_id, piece_count, created_by_transaction_id,
                                                   original_stock_id)
               SELECT stock_id, %s, %s::uuid, original_stock_id
               FROM sprinkler_spare_pieces, generate_series(1, %s)
               WHERE id = %s::uuid
               RETURNING id::text""",
            (bundle_size, transaction_id, number_of_bundles, spare_piece_ids[0]))
        bundle_ids = [row[0] for row in self.cur.fetchall()]
        self._log(bundle_ids, "CREATED", transaction_id)
        return bundle_ids

    def revert_combine_spares(self, combine_transaction_id, transaction_id):
        """Pieces the combine consumed go back in stock; its bundles are soft-deleted
        (deleted_by_transaction_id is write-once: a second revert cannot overwrite it)."""
        self.cur.execute(
            """UPDATE sprinkler_spare_pieces SET status = 'IN_STOCK'
               WHERE id IN (SELECT piece_id FROM piece_lifecycle_events
                            WHERE transaction_id = %s::uuid AND event_type = 'COMBINED')
               RETURNING id::text""",
            (combine_transaction_id,))
        restored = [row[0] for row in self.cur.fetchall()]
        self._log(restored, "RESTORED", transaction_id)
        self.cur.execute(
            """UPDATE sprinkler_spare_pieces SET status = 'REVERTED', deleted_by_transaction_id = %s::uuid
               WHERE created_by_transaction_id = %s::uuid""",
            (transaction_id, combine_transaction_id))
        return {"pieces_restored": len(restored), "bundles_deleted": self.cur.rowcount}

    def _log(self, piece_ids, event_type, transaction_id):
        self.cur.execute(
            """INSERT INTO piece_lifecycle_events (piece_id, event_type, transaction_id)
               SELECT unnest(%s::uuid[]), %s, %s::uuid""",
            (piece_ids, event_type, transaction_id))
