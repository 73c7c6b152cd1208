-- The lifecycle events table (sql/lifecycle.sql writes and reads it).  It
-- comes before the compiled functions, one of which returns its rows.

CREATE SEQUENCE integrity.lifecycle_events_id_seq;

CREATE TABLE integrity.lifecycle_events (
    id         bigint      NOT NULL DEFAULT pg_catalog.nextval('integrity.lifecycle_events_id_seq') PRIMARY KEY,
    table_name text        NOT NULL,
    row_key    jsonb       NOT NULL,
    operation  text        NOT NULL CONSTRAINT lifecycle_events_operation
                                    CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    changes    jsonb       NOT NULL,
    txid       bigint      NOT NULL DEFAULT pg_catalog.txid_current(),
    actor      name        NOT NULL DEFAULT CURRENT_USER,
    at         timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER SEQUENCE integrity.lifecycle_events_id_seq OWNED BY integrity.lifecycle_events.id;
COMMENT ON TABLE integrity.lifecycle_events IS
    'pg_integrity lifecycle events: one row per INSERT, UPDATE (of a tracked column) and DELETE of a row of a table registered with track_lifecycle(). Append-only; read it with integrity.history(), clean it up with integrity.purge_lifecycle_events().';
-- One row's history (equality on the key; the few events of a row are then
-- filtered by table and sorted), and purges by age (events arrive in time
-- order).  A btree on (table_name, row_key, id) would serve the history as
-- well, but comparing jsonb keys on every insert made writing 1M events
-- 2-3 times slower than these two.
CREATE INDEX lifecycle_events_row ON integrity.lifecycle_events USING hash (row_key);
CREATE INDEX lifecycle_events_at ON integrity.lifecycle_events USING brin (at);
REVOKE ALL ON integrity.lifecycle_events, integrity.lifecycle_events_id_seq FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('integrity.lifecycle_events', '');
SELECT pg_catalog.pg_extension_config_dump('integrity.lifecycle_events_id_seq', '');
