from django.db import models


class LedgerEntry(models.Model):
    retailer_id = models.IntegerField()
    wholesaler_id = models.IntegerField()
    entry_type = models.CharField(max_length=6)
    amount = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        db_table = "ledger_entries"
