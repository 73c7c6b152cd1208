"""One refused write per guard kind, with what docs/reference.md ("Errors")
promises the client receives: SQLSTATE, the driver's exception class and its
DB-API base class, and the diagnostic fields (column None where the guard is
about rows, not a column). The statements run against schema.sql's rows."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str
    sql: str
    sqlstate: str
    error_class: str  # the same name in psycopg2.errors and psycopg.errors
    base_class: str  # the DB-API class an application catches
    table: str
    column: str | None
    constraint: str


PIECE_1 = "00000000-0000-0000-0000-000000000001"
PIECE_2 = "00000000-0000-0000-0000-000000000002"  # deleted_by_transaction_id set, version 3

CASES = [
    Case("append_only_update", "UPDATE ledger_entries SET amount = 20000 WHERE id = 1",
         "23001", "RestrictViolation", "IntegrityError", "ledger_entries", None, "integrity_append_only"),
    Case("append_only_delete", "DELETE FROM ledger_entries WHERE id = 1",
         "23001", "RestrictViolation", "IntegrityError", "ledger_entries", None, "integrity_append_only"),
    # TRUNCATE is refused by a statement trigger of its own.
    Case("append_only_truncate", "TRUNCATE ledger_entries",
         "23001", "RestrictViolation", "IntegrityError", "ledger_entries", None,
         "integrity_append_only_truncate"),
    Case("immutable",
         f"UPDATE sprinkler_spare_pieces SET created_by_transaction_id = gen_random_uuid() WHERE id = '{PIECE_1}'",
         "23001", "RestrictViolation", "IntegrityError", "sprinkler_spare_pieces",
         "created_by_transaction_id", "integrity_immutable"),
    Case("write_once",
         f"UPDATE sprinkler_spare_pieces SET deleted_by_transaction_id = gen_random_uuid() WHERE id = '{PIECE_2}'",
         "23001", "RestrictViolation", "IntegrityError", "sprinkler_spare_pieces",
         "deleted_by_transaction_id", "integrity_write_once"),
    # A writer that read version 2 sends it back, but the row is at version 3: the
    # BEFORE trigger that bumps the version refuses it.
    Case("versioning_stale_write",
         f"UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT', version = 2 WHERE id = '{PIECE_2}'",
         "40001", "SerializationFailure", "OperationalError", "sprinkler_spare_pieces",
         "version", "integrity_version_bump"),
    Case("stock", "UPDATE wholesaler_products SET reserved_stock = reserved_stock + 11 WHERE id = 1",
         "23514", "CheckViolation", "IntegrityError", "wholesaler_products", "reserved_stock", "integrity_stock"),
    Case("credit", "UPDATE credit_accounts SET used_credit = used_credit + 5000.01 WHERE id = 2",
         "23514", "CheckViolation", "IntegrityError", "credit_accounts", "used_credit", "integrity_credit"),
    # 600.00 of the 1000.00 limit is used.
    Case("ledger_credit_over_limit",
         "INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount) VALUES (1, 20, 'DEBIT', 400.01)",
         "23514", "CheckViolation", "IntegrityError", "ledger_entries", None, "integrity_ledger_credit"),
]
