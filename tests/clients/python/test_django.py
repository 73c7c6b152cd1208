"""Django 5: a migration registers a guard with RunSQL and migrating back lifts
it (manage.py migrate, as a deployment runs it), and a model save the guard
refuses raises django.db.IntegrityError. The project is django_project/; its
tables live in the suite database's public schema."""

import os
import subprocess
import sys

import psycopg
import pytest

from conftest import HERE, admin_connect

PROJECT = HERE / "django_project"


@pytest.fixture
def django_env(database, monkeypatch):
    """The environment of manage.py, and Django set up in this process with it."""
    monkeypatch.setenv("CLIENTS_DB", database)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "clientsite.settings")
    monkeypatch.syspath_prepend(PROJECT)
    import django

    django.setup()
    yield dict(os.environ)
    from django.db import connections

    connections.close_all()


def migrate(env, *target):
    run = subprocess.run([sys.executable, "manage.py", "migrate", *target], cwd=PROJECT, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def guards(database):
    with admin_connect(database) as conn:
        rows = conn.execute("SELECT guard FROM integrity.guards WHERE table_name::text = 'ledger_entries'")
        return [guard for (guard,) in rows]


def test_migration_registers_and_lifts_the_guard(database, django_env):
    from django.db import IntegrityError, connections
    from ledger.models import LedgerEntry

    migrate(django_env, "ledger", "0001")
    assert guards(database) == []
    migrate(django_env, "ledger", "0002")
    assert guards(database) == ["append_only"]

    entry = LedgerEntry.objects.create(retailer_id=1, wholesaler_id=20, entry_type="DEBIT", amount=600)
    entry.amount = 20000
    with pytest.raises(IntegrityError) as raised:
        entry.save()
    # Django keeps the driver's exception (psycopg 3, Django's default) as the cause.
    assert isinstance(raised.value.__cause__, psycopg.errors.RestrictViolation)
    assert raised.value.__cause__.diag.constraint_name == "integrity_append_only"
    with pytest.raises(IntegrityError):
        entry.delete()
    connections.close_all()

    migrate(django_env, "ledger", "0001")
    assert guards(database) == []
    entry.save()  # allowed again
    assert LedgerEntry.objects.get().amount == 20000
    connections.close_all()

    # With the guard lifted first, 0001's reverse can drop the table.
    migrate(django_env, "ledger", "zero")
    with admin_connect(database) as conn:
        assert conn.execute("SELECT to_regclass('public.ledger_entries')").fetchone() == (None,)
