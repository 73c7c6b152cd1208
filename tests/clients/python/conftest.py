"""Fixtures shared by the client tests.

The suite runs against a real cluster (make test-clients passes PGHOST = the
socket directory, PGPORT and PGUSER). It creates its own database, with the
extension, and drops it at the end. Every test gets a schema of its own holding
the guide tables of ../schema.sql (shared with the Node and Rust suites), so
tests never see each other's rows or guards.
"""

import itertools
import os
import pathlib
import re
import threading
import time

import psycopg
import psycopg2
import pytest

from guard_cases import SCHEMA_SQL

HERE = pathlib.Path(__file__).parent
DB = os.environ.get("CLIENTS_DB", "integrity_clients")
SCHEMA_NUMBERS = itertools.count(1)


def admin_connect(dbname):
    return psycopg.connect(dbname=dbname, autocommit=True)


@pytest.fixture(scope="session")
def database():
    with admin_connect("postgres") as conn:
        # FORCE: a failed run may have left a connection behind.
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    with admin_connect(DB) as conn:
        conn.execute("CREATE EXTENSION pg_integrity")
    yield DB
    with admin_connect("postgres") as conn:
        conn.execute(f'DROP DATABASE "{DB}" WITH (FORCE)')


def make_schema(database, label):
    """A fresh schema with the guide tables, their guards and a few rows."""
    # Numbered: labels can be longer than an identifier.
    name = f"t{next(SCHEMA_NUMBERS)}_" + re.sub(r"\W", "_", label).lower()[:50]
    with admin_connect(database) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(f"SET search_path = {name}")
        conn.execute(SCHEMA_SQL.read_text())
    return name


@pytest.fixture
def schema(database, request):
    """A schema of the test's own. A module whose statements are all refused and
    rolled back overrides this with one schema for the module."""
    return make_schema(database, request.node.name)


@pytest.fixture
def dsn(database, schema):
    """libpq connection string: host, port and user come from the environment."""
    return f"dbname={database} options='-c search_path={schema}'"


@pytest.fixture(params=[psycopg2, psycopg], ids=["psycopg2", "psycopg3"])
def driver(request):
    """Both drivers speak DB-API 2 with %s placeholders: the same test runs on each."""
    return request.param


@pytest.fixture
def connect(driver, dsn):
    """connect() opens a connection of the driver under test; all are closed afterwards."""
    opened = []

    def open_connection():
        conn = driver.connect(dsn)
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        conn.close()


def backend_pid(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    conn.commit()
    return pid


def wait_until_blocked(observer, pid, timeout=30):
    """Return once backend `pid` waits for a lock another session holds.

    This is how the race tests order two sessions: the holder keeps its
    transaction open until the other one is seen waiting on it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with observer.cursor() as cur:
            cur.execute("SELECT cardinality(pg_blocking_pids(%s)) > 0", (pid,))
            blocked = cur.fetchone()[0]
        observer.commit()
        if blocked:
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never blocked")


class InThread:
    """Run fn(*args) in a thread; result() returns its value or raises its exception."""

    def __init__(self, fn, *args):
        self._outcome = None
        self._thread = threading.Thread(target=self._run, args=(fn, args))
        self._thread.start()

    def _run(self, fn, args):
        try:
            self._outcome = (True, fn(*args))
        except BaseException as e:  # handed to the test thread by result()
            self._outcome = (False, e)

    def result(self, timeout=30):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "thread did not finish"
        ok, value = self._outcome
        if not ok:
            raise value
        return value
