"""SQLAlchemy 2, Core and ORM, on both of its PostgreSQL drivers: guard errors
arrive as IntegrityError wrapping the driver's exception, version_id_col
optimistic locking works with strict versioning, and reserve_stock is callable
from a session."""

import uuid

import pytest
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.orm.exc import StaleDataError

from guard_cases import PIECE_1, PIECE_2


class Base(DeclarativeBase):
    pass


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    retailer_id: Mapped[int]
    wholesaler_id: Mapped[int]
    entry_type: Mapped[str]
    amount: Mapped[float]


class Product(Base):
    __tablename__ = "wholesaler_products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    stock: Mapped[int]
    reserved_stock: Mapped[int]


class Piece(Base):
    __tablename__ = "sprinkler_spare_pieces"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    status: Mapped[str]
    created_by_transaction_id: Mapped[uuid.UUID]
    version: Mapped[int] = mapped_column()
    # SQLAlchemy sends "SET version = read + 1 ... WHERE version = read": strict
    # versioning accepts OLD.version + 1 and bumps nothing more.
    __mapper_args__ = {"version_id_col": version}


@pytest.fixture(params=["psycopg2", "psycopg"])
def engine(request, database, schema):
    # Host, port and user come from the environment (libpq), like the drivers'.
    engine = create_engine(f"postgresql+{request.param}:///{database}",
                           connect_args={"options": f"-c search_path={schema}"})
    yield engine
    engine.dispose()


def sqlstate(error):
    """The SQLSTATE of the driver exception SQLAlchemy wraps (psycopg2: pgcode, psycopg 3: sqlstate)."""
    return getattr(error.orig, "pgcode", None) or error.orig.sqlstate


def test_core_append_only_update_is_integrity_error(engine):
    with engine.connect() as conn, pytest.raises(IntegrityError) as raised:
        conn.execute(update(LedgerEntry.__table__).where(LedgerEntry.id == 1).values(amount=20000))
    assert sqlstate(raised.value) == "23001"
    assert raised.value.orig.diag.constraint_name == "integrity_append_only"


def test_core_ledger_over_limit_is_integrity_error(engine):
    with engine.connect() as conn, pytest.raises(IntegrityError) as raised:
        conn.execute(text("INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount)"
                          " VALUES (1, 20, 'DEBIT', :amount)"), {"amount": 400.01})
    assert sqlstate(raised.value) == "23514"
    assert raised.value.orig.diag.constraint_name == "integrity_ledger_credit"


def test_core_stale_version_is_operational_error(engine):
    """40001 is not an integrity error: SQLAlchemy wraps it as OperationalError."""
    with engine.connect() as conn, pytest.raises(OperationalError) as raised:
        conn.execute(text("UPDATE sprinkler_spare_pieces SET version = 2 WHERE id = CAST(:id AS uuid)"),
                     {"id": PIECE_2})
    assert sqlstate(raised.value) == "40001"
    assert type(raised.value.orig).__name__ == "SerializationFailure"


def test_orm_delete_of_ledger_entry_is_integrity_error(engine):
    with Session(engine) as session:
        session.delete(session.get(LedgerEntry, 1))
        with pytest.raises(IntegrityError) as raised:
            session.commit()
    assert sqlstate(raised.value) == "23001"


def test_orm_overselling_is_integrity_error(engine):
    with Session(engine) as session:
        session.get(Product, 1).reserved_stock = 11
        with pytest.raises(IntegrityError) as raised:
            session.commit()
    assert sqlstate(raised.value) == "23514"
    assert raised.value.orig.diag.column_name == "reserved_stock"


def test_orm_immutable_column_is_integrity_error(engine):
    with Session(engine) as session:
        session.get(Piece, uuid.UUID(PIECE_1)).created_by_transaction_id = uuid.uuid4()
        with pytest.raises(IntegrityError) as raised:
            session.commit()
    assert sqlstate(raised.value) == "23001"
    assert raised.value.orig.diag.column_name == "created_by_transaction_id"


def test_version_id_col_bumps_once_per_flush(engine):
    with Session(engine) as session:
        piece = session.get(Piece, uuid.UUID(PIECE_1))
        for status, version in [("RESERVED", 2), ("SOLD_OUT", 3)]:
            piece.status = status
            session.commit()
            assert session.scalar(select(Piece.version).where(Piece.id == piece.id)) == version
            assert piece.version == version


def test_stale_orm_object_raises_stale_data_error(engine):
    with Session(engine) as fresh, Session(engine) as stale:
        stale_piece = stale.get(Piece, uuid.UUID(PIECE_1))
        fresh.get(Piece, uuid.UUID(PIECE_1)).status = "DISPATCHED"
        fresh.commit()

        stale_piece.status = "SOLD_OUT"
        with pytest.raises(StaleDataError):
            stale.commit()
    with Session(engine) as session:
        piece = session.get(Piece, uuid.UUID(PIECE_1))
        assert (piece.status, piece.version) == ("DISPATCHED", 2)


def test_reserve_stock_from_the_orm_session(engine):
    """integrity.reserve_stock takes part in the session's transaction."""
    products = text("'wholesaler_products'")  # the regclass argument, as a literal
    reserve = func.integrity.reserve_stock
    with Session(engine) as session:
        product = session.get(Product, 1)
        assert session.scalar(select(reserve(products, product.id, 3))) is True
        assert session.scalar(select(reserve(products, product.id, 8))) is False
        session.refresh(product)
        assert product.reserved_stock == 3
        session.rollback()
        session.refresh(product)
        assert product.reserved_stock == 0

        assert session.scalar(select(reserve(products, product.id, 10))) is True
        session.commit()
    with Session(engine) as session:
        assert session.get(Product, 1).reserved_stock == 10
