"""Alembic: a revision registers a guard with op.execute and its downgrade lifts
it; `alembic upgrade` / `downgrade` run as a deployment runs them."""

import os
import subprocess
import sys

import psycopg
import pytest

from conftest import HERE, admin_connect

PROJECT = HERE / "alembic_project"


def alembic(database, *args):
    run = subprocess.run([sys.executable, "-m", "alembic", "-c", "alembic.ini", *args], cwd=PROJECT,
                         env={**os.environ, "CLIENTS_DB": database}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def guards(conn):
    return conn.execute("SELECT guard FROM integrity.guards WHERE table_name::text = 'payments'").fetchall()


def test_revision_registers_and_lifts_the_guard(database):
    alembic(database, "upgrade", "head")
    with admin_connect(database) as conn:
        assert guards(conn) == [("append_only",)]
        conn.execute("INSERT INTO payments (amount) VALUES (250.00)")
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("UPDATE payments SET amount = 0")

    # Without the unprotect in downgrade(), its DROP TABLE would be refused.
    alembic(database, "downgrade", "base")
    with admin_connect(database) as conn:
        assert guards(conn) == []
        assert conn.execute("SELECT to_regclass('public.payments')").fetchone() == (None,)
