"""The plain-SQL migrations that docs/migration-tools.md shows for Flyway and sqitch
(tests/clients/sql_tools), run in order as those tools would run them. Flyway and
sqitch themselves are not installed here (Flyway is a Java download, sqitch a
Perl/CPAN one): what is tested is the SQL they would send."""

import psycopg
import pytest

from conftest import HERE

TOOLS = HERE.parent / "sql_tools"


@pytest.fixture
def conn(database):
    """A session in an empty schema of its own, autocommit like a migration tool's."""
    with psycopg.connect(dbname=database, autocommit=True) as admin:
        schema = f"sql_tools_{admin.info.backend_pid}"
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.execute(f"CREATE SCHEMA {schema}")
    with psycopg.connect(dbname=database, autocommit=True, options=f"-c search_path={schema}") as conn:
        yield conn


def run(conn, path):
    conn.execute((TOOLS / path).read_text())


def guards(conn):
    return conn.execute("SELECT guard FROM integrity.guards WHERE table_name = 'ledger_entries'::regclass").fetchall()


def test_flyway_versioned_migrations(conn):
    run(conn, "flyway/V1__ledger_entries.sql")
    run(conn, "flyway/V2__ledger_entries_append_only.sql")
    assert guards(conn) == [("append_only",)]
    # Registration is idempotent: a re-run (say, after flyway repair) changes nothing.
    run(conn, "flyway/V2__ledger_entries_append_only.sql")
    assert guards(conn) == [("append_only",)]
    conn.execute("INSERT INTO ledger_entries (account_id, amount) VALUES (1, 10)")
    with pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("DELETE FROM ledger_entries")


def test_sqitch_deploy_verify_revert(conn):
    run(conn, "flyway/V1__ledger_entries.sql")  # the change it requires
    run(conn, "sqitch/deploy/ledger_entries_append_only.sql")
    run(conn, "sqitch/verify/ledger_entries_append_only.sql")
    run(conn, "sqitch/revert/ledger_entries_append_only.sql")
    assert guards(conn) == []
    # verify fails once the guard is gone, as sqitch verify should.
    with pytest.raises(psycopg.errors.DivisionByZero):
        run(conn, "sqitch/verify/ledger_entries_append_only.sql")
    conn.execute("ROLLBACK")
    # The table is ordinary again: it can be emptied and dropped.
    conn.execute("DELETE FROM ledger_entries")
    conn.execute("DROP TABLE ledger_entries")
