"""psycopg2 and psycopg 3: what an application catches when it hits each guard."""

import psycopg2
import pytest

from conftest import make_schema
from guard_cases import CASES


@pytest.fixture(scope="module")
def schema(database):
    """Every statement here is refused and rolled back: the tests share one schema."""
    return make_schema(database, __name__)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_guard_error_reaches_the_driver(connect, driver, schema, case):
    conn = connect()
    with conn.cursor() as cur, pytest.raises(driver.Error) as raised:
        cur.execute(case.sql)
    e = raised.value

    assert type(e) is getattr(driver.errors, case.error_class)
    assert isinstance(e, getattr(driver, case.base_class))
    # psycopg2 names the SQLSTATE pgcode, psycopg 3 sqlstate.
    assert (e.pgcode if driver is psycopg2 else e.sqlstate) == case.sqlstate
    assert e.diag.sqlstate == case.sqlstate
    assert e.diag.schema_name == schema
    assert e.diag.table_name == case.table
    assert e.diag.column_name == case.column
    assert e.diag.constraint_name == case.constraint
    # DETAIL names the row by its key (TRUNCATE, a statement event, names the
    # table); HINT says what to do instead.
    assert e.diag.message_detail.startswith(case.detail.format(schema=schema))
    assert e.diag.message_hint == case.hint.format(schema=schema)
    conn.rollback()


def test_refused_statement_changes_nothing(connect, driver):
    """The transaction is aborted, and after ROLLBACK the rows are as they were."""
    conn = connect()
    with conn.cursor() as cur:
        with pytest.raises(driver.errors.CheckViolation):
            cur.execute("INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount)"
                        " VALUES (1, 20, 'DEBIT', 400.01)")
        with pytest.raises(driver.errors.InFailedSqlTransaction):
            cur.execute("SELECT 1")
        conn.rollback()
        cur.execute("SELECT count(*), (SELECT used_credit FROM retailer_wholesaler_credits) FROM ledger_entries")
        assert cur.fetchone() == (1, 600)
