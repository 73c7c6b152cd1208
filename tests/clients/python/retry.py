"""The 40001 retry idiom: run a transaction again from its first read until it
commits. SerializationFailure is what psycopg2 and psycopg 3 both raise for
SQLSTATE 40001 (strict versioning's stale write, or a REPEATABLE READ /
SERIALIZABLE conflict)."""


def run_with_retry(driver, conn, transaction, attempts=5):
    """Call transaction(cursor) and commit; on 40001 roll back and call it again.
    Returns (its result, the number of attempts it took)."""
    for attempt in range(1, attempts + 1):
        try:
            with conn.cursor() as cur:
                result = transaction(cur)
            conn.commit()
            return result, attempt
        except driver.errors.SerializationFailure:
            conn.rollback()
    raise RuntimeError(f"still 40001 after {attempts} attempts")
