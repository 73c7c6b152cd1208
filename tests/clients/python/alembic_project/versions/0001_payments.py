"""payments: an append-only table"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    )
    op.execute("SELECT integrity.protect_append_only('payments')")


def downgrade():
    # The guard refuses DROP TABLE of an append-only table: lift it first.
    op.execute("SELECT integrity.unprotect('payments', 'append_only')")
    op.drop_table("payments")
