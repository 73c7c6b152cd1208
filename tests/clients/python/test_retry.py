"""A 40001 retry loop converges: two sessions race on one strict-versioned row."""

from conftest import InThread, backend_pid, wait_until_blocked
from guard_cases import PIECE_1
from retry import run_with_retry


def test_stale_writer_retries_and_converges(connect, driver):
    holder, racer, observer = connect(), connect(), connect()
    racer_pid = backend_pid(racer)

    def set_status(cur):
        # "Send back what you read": the guard refuses it if the row moved on.
        cur.execute("SELECT version FROM sprinkler_spare_pieces WHERE id = %s", (PIECE_1,))
        (read,) = cur.fetchone()
        cur.execute("UPDATE sprinkler_spare_pieces SET status = 'SOLD_OUT', version = %s WHERE id = %s",
                    (read, PIECE_1))
        return read

    with holder.cursor() as cur:
        # The other writer updates first and holds the row until the racer waits on it.
        cur.execute("UPDATE sprinkler_spare_pieces SET status = 'DISPATCHED' WHERE id = %s", (PIECE_1,))
    race = InThread(run_with_retry, driver, racer, set_status)
    wait_until_blocked(observer, racer_pid)
    holder.commit()

    last_read, attempts = race.result()
    # First attempt read version 1, found 2 after the wait (40001); the second read 2.
    assert (last_read, attempts) == (2, 2)
    with observer.cursor() as cur:
        cur.execute("SELECT status, version FROM sprinkler_spare_pieces WHERE id = %s", (PIECE_1,))
        assert cur.fetchone() == ("SOLD_OUT", 3)
