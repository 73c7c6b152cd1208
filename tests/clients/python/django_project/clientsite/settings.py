"""Settings for the client tests: the database is the suite's (CLIENTS_DB); host,
port and user come from libpq's environment (PGHOST, PGPORT, PGUSER)."""
import os

SECRET_KEY = "pg_integrity client tests, not a secret"
INSTALLED_APPS = ["ledger"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["CLIENTS_DB"],
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
