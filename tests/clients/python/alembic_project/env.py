import os

from alembic import context
from sqlalchemy import create_engine

engine = create_engine(f"postgresql+psycopg:///{os.environ['CLIENTS_DB']}")
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
