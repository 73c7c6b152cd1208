-- What `prisma migrate dev` generates for schema.prisma, followed by the
-- hand-written part (guide 000's "Add Custom Constraints (Manual SQL)"): the
-- pg_integrity guards. CREATE EXTENSION needs a role that may create it (a
-- superuser, or the database owner once the extension is trusted).

-- CreateTable
CREATE TABLE "retailer_wholesaler_credits" (
    "retailer_id" INTEGER NOT NULL,
    "wholesaler_id" INTEGER NOT NULL,
    "credit_limit" DECIMAL(12,2) NOT NULL,
    "used_credit" DECIMAL(12,2) NOT NULL DEFAULT 0,

    CONSTRAINT "retailer_wholesaler_credits_pkey" PRIMARY KEY ("retailer_id","wholesaler_id")
);

-- CreateTable
CREATE TABLE "ledger_entries" (
    "id" BIGSERIAL NOT NULL,
    "retailer_id" INTEGER NOT NULL,
    "wholesaler_id" INTEGER NOT NULL,
    "entry_type" TEXT NOT NULL,
    "amount" DECIMAL(12,2) NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ledger_entries_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "wholesaler_products" (
    "id" SERIAL NOT NULL,
    "name" TEXT NOT NULL,
    "stock" INTEGER NOT NULL DEFAULT 0,
    "reserved_stock" INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT "wholesaler_products_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "sprinkler_spare_pieces" (
    "id" UUID NOT NULL,
    "stock_id" INTEGER NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'IN_STOCK',
    "created_by_transaction_id" UUID NOT NULL,
    "original_stock_id" INTEGER NOT NULL,
    "version" INTEGER NOT NULL DEFAULT 1,

    CONSTRAINT "sprinkler_spare_pieces_pkey" PRIMARY KEY ("id")
);

-- pg_integrity guards: one idempotent call per rule.
CREATE EXTENSION IF NOT EXISTS pg_integrity;
SELECT integrity.protect_append_only('ledger_entries');
SELECT integrity.guard_credit('retailer_wholesaler_credits');
SELECT integrity.guard_ledger_credit('ledger_entries', 'retailer_wholesaler_credits',
                                     ARRAY['retailer_id', 'wholesaler_id']);
SELECT integrity.guard_stock('wholesaler_products');
SELECT integrity.protect_immutable('sprinkler_spare_pieces',
                                   ARRAY['created_by_transaction_id', 'original_stock_id']);
SELECT integrity.enable_versioning('sprinkler_spare_pieces');
