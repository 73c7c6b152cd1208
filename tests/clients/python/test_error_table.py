"""The error contract as documented: every row of docs/reference.md's "Errors"
table is provoked through psycopg 3, and the client must receive the row's
SQLSTATE with exactly the diagnostic fields the row says are filled. A row added
to the table without a provocation here fails too."""

import re

import psycopg
import pytest

from conftest import HERE, admin_connect, make_schema
from guard_cases import PIECE_1

REFERENCE = HERE.parents[2] / "docs" / "reference.md"
INTRUDER = "integrity_clients_intruder"  # a role that owns nothing
FIELDS = {"schema": "schema_name", "table": "table_name", "column": "column_name",
          "constraint": "constraint_name"}


def error_table():
    section = REFERENCE.read_text().split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| `(\w{5})`[^|]*\| ?([^|]*?) ?\|$", section, re.M)
    assert len(rows) > 20, "the Errors table was not found"
    return [(violation, sqlstate, {f.strip() for f in fields.split(",") if f.strip()})
            for violation, sqlstate, fields in rows]


ROWS = error_table()

# Row (by the start of its first cell) -> statements; the last one must fail.
# They are format strings: {schema} is the test's schema (schema.sql's tables are in it).
PROVOCATIONS = {
    "UPDATE / DELETE / TRUNCATE": ["UPDATE ledger_entries SET amount = 1 WHERE id = 1"],
    "change of an immutable column": [
        f"UPDATE sprinkler_spare_pieces SET original_stock_id = 8 WHERE id = '{PIECE_1}'"],
    "stale version": [f"UPDATE sprinkler_spare_pieces SET version = 7 WHERE id = '{PIECE_1}'"],
    "version column moved off": [
        """CREATE FUNCTION push_version() RETURNS trigger LANGUAGE plpgsql
           AS $$BEGIN NEW.version := NEW.version + 10; RETURN NEW; END$$""",
        # Fires after integrity_version_bump: triggers fire in name order.
        """CREATE TRIGGER zz_push_version BEFORE UPDATE ON sprinkler_spare_pieces
           FOR EACH ROW EXECUTE FUNCTION push_version()""",
        f"UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT' WHERE id = '{PIECE_1}'"],
    "stock or credit rule": ["UPDATE wholesaler_products SET stock = -1 WHERE id = 1"],
    "ledger entry over the limit": [
        "INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount) VALUES (1, 20, 'DEBIT', 500)"],
    "ledger entry for an account": [
        "INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount) VALUES (9, 9, 'DEBIT', 1)"],
    "change of a maintained total": [
        "CREATE TABLE stock_rows (id integer PRIMARY KEY, quantity integer NOT NULL DEFAULT 0)",
        "CREATE TABLE stock_parts (id integer PRIMARY KEY, stock_id integer REFERENCES stock_rows, n integer)",
        "SELECT integrity.maintain_total('stock_rows', 'quantity', 'stock_parts', ARRAY['stock_id'], 'n')",
        "INSERT INTO stock_rows VALUES (1)",
        "INSERT INTO stock_parts VALUES (1, 1, 4)",
        "UPDATE stock_rows SET quantity = 5 WHERE id = 1"],
    "release or commit of more stock": ["SELECT integrity.release_stock('wholesaler_products', 1, 1)"],
    "bad quantity or unknown id": ["SELECT integrity.reserve_stock('wholesaler_products', 1, 0)"],
    "stock operation on a table without a stock guard": [
        "SELECT integrity.reserve_stock('credit_accounts', 2, 1)"],
    "stock operation on a table without a single-column": [
        "CREATE TABLE bins (a int, b int, stock int, reserved_stock int, PRIMARY KEY (a, b))",
        "SELECT integrity.guard_stock('bins')",
        "SELECT integrity.reserve_stock('bins', 1, 1)"],
    "registration: quantity column": [
        "CREATE TABLE bins (stock text, reserved_stock text)",
        "SELECT integrity.guard_stock('bins')"],
    "registration: ledger and accounts": [
        """SELECT integrity.guard_ledger_credit('ledger_entries', 'retailer_wholesaler_credits',
               ARRAY['retailer_id', 'wholesaler_id'], debit_value => 'X', credit_value => 'X')"""],
    "disabling, re-moding": ["ALTER TABLE wholesaler_products DISABLE TRIGGER integrity_stock"],
    "DDL that rewrites": ["ALTER TABLE piece_lifecycle_events ALTER COLUMN event_type TYPE varchar(20)"],
    "`DROP EXTENSION pg_integrity`": ["DROP EXTENSION pg_integrity"],
    "creating or replacing a guard trigger": [
        f"GRANT USAGE ON SCHEMA {{schema}} TO {INTRUDER}",
        f"GRANT TRIGGER ON ledger_entries TO {INTRUDER}",
        f"SET ROLE {INTRUDER}",
        """CREATE OR REPLACE TRIGGER integrity_append_only BEFORE UPDATE OR DELETE ON ledger_entries
           FOR EACH ROW WHEN (false) EXECUTE FUNCTION integrity.append_only_guard()"""],
    "a BEFORE UPDATE trigger skipped": [
        "CREATE FUNCTION skip_row() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$",
        "CREATE TRIGGER skip_row BEFORE UPDATE ON wholesaler_products FOR EACH ROW EXECUTE FUNCTION skip_row()",
        "SELECT integrity.reserve_stock('wholesaler_products', 1, 1)"],
    "a manifest argument": ["""SELECT integrity.schema_diff('{{"not": "a manifest"}}')"""],
    "`assert_schema`": [
        "CREATE TEMP TABLE manifest AS SELECT integrity.schema_manifest(ARRAY['{schema}']) AS m",
        "ALTER TABLE credit_accounts ADD COLUMN note text",
        "SELECT integrity.assert_schema(m) FROM manifest"],
    "settling a hold that has expired": [
        "SELECT integrity.place_hold('wholesaler_products', 1, 1, idempotency_key => 'provoke-expired')",
        "UPDATE integrity.hold_records SET expires_at = now() - interval '1 second'"
        " WHERE idempotency_key = 'provoke-expired'",
        "SELECT integrity.commit_hold(hold_id) FROM integrity.hold_records WHERE idempotency_key = 'provoke-expired'"],
    "settling an unknown hold": ["SELECT integrity.commit_hold(-1)"],
    "an idempotency key used again": [
        "SELECT integrity.place_hold('wholesaler_products', 1, 1, idempotency_key => 'provoke-key')",
        "SELECT integrity.place_hold('wholesaler_products', 1, 2, idempotency_key => 'provoke-key')"],
    "registration: a total's filter": [
        "CREATE TABLE stock_rows (id integer PRIMARY KEY, quantity integer NOT NULL DEFAULT 0)",
        "CREATE TABLE stock_parts (id integer PRIMARY KEY, stock_id integer, n integer)",
        "SELECT integrity.maintain_total('stock_rows', 'quantity', 'stock_parts', ARRAY['stock_id'], 'n', 'n > (SELECT 1)')"],
    "registration: NULL argument": ["SELECT integrity.protect_append_only(NULL)"],
    "registration: unknown column": ["SELECT integrity.protect_immutable('credit_accounts', ARRAY['nope'])"],
    "registration: version column": ["SELECT integrity.enable_versioning('wholesaler_products', 'name')"],
    "registration: view": [
        "CREATE VIEW products_view AS SELECT * FROM wholesaler_products",
        "SELECT integrity.protect_append_only('products_view')"],
    "registration: caller does not own": [
        f"GRANT USAGE ON SCHEMA {{schema}} TO {INTRUDER}",
        f"SET ROLE {INTRUDER}",
        "SELECT integrity.protect_append_only('credit_accounts')"],
    "registration: empty column list": [
        "SELECT integrity.protect_immutable('credit_accounts', ARRAY[]::text[])"],
}


def provocation(violation):
    found = [key for key in PROVOCATIONS if violation.startswith(key)]
    assert len(found) == 1, f"no provocation (or several) for the documented row {violation!r}"
    return PROVOCATIONS[found[0]]


@pytest.fixture(scope="module")
def schema(database):
    """Every provocation is rolled back with its setup: the tests share one schema."""
    return make_schema(database, __name__)


@pytest.fixture(scope="module")
def intruder(database):
    with admin_connect("postgres") as conn:
        conn.execute(f"DROP ROLE IF EXISTS {INTRUDER}")
        conn.execute(f"CREATE ROLE {INTRUDER}")
    yield
    with admin_connect(database) as conn:
        conn.execute(f"DROP OWNED BY {INTRUDER}")  # its grants
    with admin_connect("postgres") as conn:
        conn.execute(f"DROP ROLE {INTRUDER}")


def test_every_provocation_has_its_row():
    documented = [violation for violation, _, _ in ROWS]
    for key in PROVOCATIONS:
        assert any(v.startswith(key) for v in documented), f"no documented row starts with {key!r}"


@pytest.mark.parametrize("violation, sqlstate, fields", ROWS, ids=[row[0][:40] for row in ROWS])
def test_documented_error(violation, sqlstate, fields, dsn, schema, intruder):
    *setup, statement = [s.format(schema=schema) for s in provocation(violation)]
    with psycopg.connect(dsn) as conn:
        for s in setup:
            conn.execute(s)
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(statement)
        conn.rollback()
    diag = raised.value.diag
    assert diag.sqlstate == sqlstate, diag.message_primary
    filled = {name for name, attr in FIELDS.items() if getattr(diag, attr) is not None}
    assert filled == fields, diag.message_primary
