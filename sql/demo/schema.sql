-- The demo database of `make run`: the B2B trade platform's ledger and the
-- inventory system's spare pieces, from the migration guides, guarded by
-- pg_integrity instead of hand-written PL/pgSQL triggers.

CREATE EXTENSION pg_integrity;

CREATE TABLE retailers   (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE wholesalers (id bigint PRIMARY KEY, name text NOT NULL);

-- Every DEBIT and CREDIT between a retailer and a wholesaler, partitioned by
-- month. Corrections are new, reversing entries.
CREATE TABLE ledger_entries (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    retailer_id   bigint NOT NULL REFERENCES retailers,
    wholesaler_id bigint NOT NULL REFERENCES wholesalers,
    entry_type    text NOT NULL CHECK (entry_type IN ('DEBIT', 'CREDIT')),
    amount        numeric(14, 2) NOT NULL CHECK (amount > 0),
    description   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    chain_seq     bigint,   -- filled in by the hash chain
    row_hash      bytea,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE ledger_entries_2026_10 PARTITION OF ledger_entries
    FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE ledger_entries_2026_11 PARTITION OF ledger_entries
    FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');

-- A stock row's quantity is what its pieces in stock add up to (guide 003).
CREATE TABLE inventory_stock (
    id         uuid PRIMARY KEY,
    stock_type text NOT NULL,
    quantity   integer NOT NULL DEFAULT 0
);

-- Spare pieces keep the transaction that created them and the stock they
-- came from, whatever later operations (COMBINE_SPARES, dispatch) do to them.
CREATE TABLE sprinkler_spare_pieces (
    id                        uuid PRIMARY KEY,
    stock_id                  uuid NOT NULL REFERENCES inventory_stock,
    piece_count               integer NOT NULL CHECK (piece_count > 0),
    status                    text NOT NULL DEFAULT 'IN_STOCK',
    created_by_transaction_id uuid NOT NULL,
    original_stock_id         uuid NOT NULL,
    version                   integer NOT NULL DEFAULT 1,
    deleted_at                timestamptz,
    deleted_by_transaction_id uuid
);

-- Users sign in with their WhatsApp number, which a deleted user frees for
-- someone else (guide 000): unique among live users only.
CREATE TABLE users (
    id          bigint PRIMARY KEY,
    retailer_id bigint REFERENCES retailers ON DELETE CASCADE,
    whatsapp    text NOT NULL,
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX users_whatsapp_live ON users (whatsapp) WHERE deleted_at IS NULL;

INSERT INTO retailers   VALUES (1, 'Kathmandu Hardware'), (2, 'Pokhara Agro');
INSERT INTO users VALUES (1, 1, '+977 980 000 0001'), (2, 2, '+977 980 000 0002');
INSERT INTO wholesalers VALUES (10, 'Himalayan Pipes');
INSERT INTO ledger_entries (retailer_id, wholesaler_id, entry_type, amount, description, created_at) VALUES
    (1, 10, 'DEBIT',  25000.00, 'order 1001', '2026-10-14 10:00+00'),
    (1, 10, 'CREDIT', 10000.00, 'payment',    '2026-10-30 09:30+00'),
    (2, 10, 'DEBIT',   8000.00, 'order 1002', '2026-11-02 16:45+00');
INSERT INTO inventory_stock VALUES ('aaaaaaaa-0000-4000-8000-000000000001', 'SPARE');
-- The quantity is kept equal to the pieces in stock from the start.
SELECT integrity.maintain_total('inventory_stock', 'quantity', 'sprinkler_spare_pieces', ARRAY['stock_id'],
                                'piece_count', $$status = 'IN_STOCK' AND deleted_at IS NULL$$);
INSERT INTO sprinkler_spare_pieces (id, stock_id, piece_count, created_by_transaction_id, original_stock_id)
SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid,
       'aaaaaaaa-0000-4000-8000-000000000001', 1,
       'cccccccc-0000-4000-8000-000000000001', 'aaaaaaaa-0000-4000-8000-000000000001'
  FROM generate_series(1, 10) g;

-- The rules: one call each.  The ledger is hash-chained per account (which
-- also makes it append-only).
SELECT integrity.enable_hash_chain('ledger_entries', ARRAY['retailer_id', 'wholesaler_id']);
SELECT integrity.protect_immutable('sprinkler_spare_pieces',
                                   ARRAY['created_by_transaction_id', 'original_stock_id']);
SELECT integrity.protect_write_once('sprinkler_spare_pieces', ARRAY['deleted_by_transaction_id']);
SELECT integrity.enable_versioning('sprinkler_spare_pieces');
SELECT integrity.enable_soft_delete('users');
-- Every change of a piece is an event in its audit trail (guide 003).
SELECT integrity.track_lifecycle('sprinkler_spare_pieces');
