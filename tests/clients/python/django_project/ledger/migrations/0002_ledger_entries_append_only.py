from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]

    operations = [
        # Rows are inserted, never updated or deleted. Migrating back lifts the
        # guard (and only this one), so that 0001's reverse can drop the table.
        migrations.RunSQL(
            sql="SELECT integrity.protect_append_only('ledger_entries')",
            reverse_sql="SELECT integrity.unprotect('ledger_entries', 'append_only')",
        ),
    ]
