"""One refused write per guard kind, with what docs/reference.md ("Errors")
promises the client receives: SQLSTATE, the driver's exception class and its
DB-API base class, and the diagnostic fields (column None where the guard is
about rows, not a column). The cases live in ../guard_cases.json, which the
Node and Rust client suites read too; the statements run against
../schema.sql's rows."""

import json
import pathlib
from dataclasses import dataclass

SHARED = pathlib.Path(__file__).parent.parent
SCHEMA_SQL = SHARED / "schema.sql"


@dataclass(frozen=True)
class Case:
    id: str
    sql: str
    sqlstate: str
    error_class: str  # the same name in psycopg2.errors and psycopg.errors
    base_class: str  # the DB-API class an application catches
    table: str
    column: str | None
    constraint: str
    detail: str  # DETAIL starts with this; {schema} is the tables' schema
    hint: str  # HINT is exactly this; {schema} as in detail


_DATA = json.loads((SHARED / "guard_cases.json").read_text())
PIECE_1 = _DATA["pieces"]["PIECE_1"]
PIECE_2 = _DATA["pieces"]["PIECE_2"]  # deleted_by_transaction_id set, version 3
CASES = [Case(**{k: v for k, v in c.items() if k != "comment"}) for c in _DATA["cases"]]
