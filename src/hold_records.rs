//! `integrity.hold_records` written without SPI: the record of a hold placed
//! on one row (without an idempotency key) and the settling of a pending
//! hold, with `direct_update`'s writer (`ExecSimpleRelationInsert`/`Update`,
//! as logical replication's apply worker writes a row).  Each is the SQL
//! statement of `holds` made directly: the same values, the same row locks
//! and snapshots, the same checks.  What the direct write would not do as
//! the statement does is left to the statement (`None`, `Settled::Statement`):
//! a table that is not as the extension made it (another column, a trigger,
//! a rule, a policy of someone else's), a caller without the privileges the
//! statement needs, a row lock that ends in what only the executor handles.
//!
//! Row-level security: the policies of `sql/holds.sql` let a role write the
//! holds of a table it may update, with the values the functions write.  A
//! placement's record has those values, and follows a reservation that
//! needed the table's UPDATE privilege; a settlement checks the held
//! table's privileges itself (SELECT and UPDATE, what the policies read),
//! and leaves a caller without them to the statement, which refuses.

use std::cell::Cell;

use pgrx::pg_sys;

use crate::direct_update::{self, call1, call2, raw, Locked, Outcome, Writer};
use crate::invalidation;

/// The columns, in order, as `sql/holds.sql` makes them: a table with any
/// other layout is left to the statements.
const COLUMNS: [(&core::ffi::CStr, pg_sys::Oid); 14] = [
    (c"hold_id", pg_sys::INT8OID),
    (c"table_name", pg_sys::REGCLASSOID),
    (c"kind", pg_sys::TEXTOID),
    (c"row_id", pg_sys::JSONBOID),
    (c"line", pg_sys::INT4OID),
    (c"quantity", pg_sys::NUMERICOID),
    (c"status", pg_sys::TEXTOID),
    (c"committed_quantity", pg_sys::NUMERICOID),
    (c"idempotency_key", pg_sys::TEXTOID),
    (c"created_at", pg_sys::TIMESTAMPTZOID),
    (c"expires_at", pg_sys::TIMESTAMPTZOID),
    (c"settled_at", pg_sys::TIMESTAMPTZOID),
    (c"txid", pg_sys::XID8OID),
    (c"actor", pg_sys::NAMEOID),
];
const HOLD_ID: usize = 0;
const TABLE_NAME: usize = 1;
const KIND: usize = 2;
const ROW_ID: usize = 3;
const LINE: usize = 4;
const QUANTITY: usize = 5;
const STATUS: usize = 6;
const COMMITTED_QUANTITY: usize = 7;
const IDEMPOTENCY_KEY: usize = 8;
const CREATED_AT: usize = 9;
const EXPIRES_AT: usize = 10;
const SETTLED_AT: usize = 11;
const TXID: usize = 12;
const ACTOR: usize = 13;

/// The policies of `sql/holds.sql`, all permissive: a table with other
/// policies is left to the statements, which apply them.
const POLICIES: [&core::ffi::CStr; 4] =
    [c"hold_records_read", c"hold_records_place", c"hold_records_settle", c"hold_records_forget"];

/// The extension's hold records as a catalog lookup found them.
#[derive(Clone, Copy)]
pub(crate) struct Catalog {
    pub table: pg_sys::Oid,
    pub pending: pg_sys::Oid,
    primary_key: pg_sys::Oid,
    sequence: pg_sys::Oid,
    /// The table is as the extension made it: the direct writes may
    /// stand in for the statements.
    direct: bool,
}

thread_local! {
    /// With the invalidation generation it was looked up at.
    static CATALOG: Cell<Option<(u64, Option<Catalog>)>> = const { Cell::new(None) };
}

/// `integrity.hold_records`, its indexes and sequence: `None` when the
/// extension's schema does not have them.
pub(crate) fn catalog() -> Option<Catalog> {
    let generation = invalidation::generation();
    if let Some((at, catalog)) = CATALOG.get() {
        if at == generation {
            return catalog;
        }
    }
    // SAFETY: catalog lookups by name, which return InvalidOid rather than
    // raise for a relation that is not there; the table is opened (and
    // locked, as a query reading its catalog entries would) to read its
    // descriptor, triggers, rules and policies, and closed keeping the lock.
    let catalog = unsafe {
        let schema = pg_sys::get_namespace_oid(c"integrity".as_ptr(), true);
        let relid = |name: &core::ffi::CStr| pg_sys::get_relname_relid(name.as_ptr(), schema);
        let mut catalog = Catalog {
            table: relid(c"hold_records"),
            pending: relid(c"hold_records_pending"),
            primary_key: relid(c"hold_records_pkey"),
            sequence: relid(c"hold_records_hold_id_seq"),
            direct: false,
        };
        let found = [catalog.table, catalog.pending, catalog.primary_key, catalog.sequence];
        if found.contains(&pg_sys::InvalidOid) {
            None
        } else {
            let rel = pg_sys::table_open(catalog.table, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            catalog.direct = as_made(rel);
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            Some(catalog)
        }
    };
    CATALOG.set(Some((generation, catalog)));
    catalog
}

/// Whether the open hold records table is as `sql/holds.sql` made it.
///
/// # Safety
/// `rel` is open.
unsafe fn as_made(rel: pg_sys::Relation) -> bool {
    // SAFETY: the open relation's descriptor, catalog row and row security
    // descriptor (a list of its policies), read while it is open.
    unsafe {
        let form = &*(*rel).rd_rel;
        let desc = (*rel).rd_att;
        let layout = (*desc).natts as usize == COLUMNS.len()
            && COLUMNS.iter().enumerate().all(|(i, (name, typid))| {
                let attribute = crate::trigger::tuple_desc_attr(desc, i as i16 + 1);
                !attribute.attisdropped
                    && attribute.atttypid == *typid
                    && core::ffi::CStr::from_ptr(attribute.attname.data.as_ptr()) == *name
            });
        let rsdesc = (*rel).rd_rsdesc;
        let policies = !rsdesc.is_null() && {
            let list = (*rsdesc).policies;
            pg_sys::list_length(list) as usize == POLICIES.len()
                && (0..pg_sys::list_length(list)).all(|i| {
                    let policy = &*pg_sys::list_nth(list, i).cast::<pg_sys::RowSecurityPolicy>();
                    policy.permissive && POLICIES.contains(&core::ffi::CStr::from_ptr(policy.policy_name))
                })
        };
        form.relkind == pg_sys::RELKIND_RELATION as core::ffi::c_char
            && form.relrowsecurity
            && !form.relforcerowsecurity
            && !form.relhassubclass
            && (*rel).trigdesc.is_null()
            && (*rel).rd_rules.is_null()
            && layout
            && policies
    }
}

/// Opens the hold records for a direct write, if one may stand in for the
/// statement: the caller has `privileges` on the table (each of them, on
/// the table as a whole or on every column in `columns`).
///
/// # Safety
/// Inside a transaction; the writer lives in the current memory context
/// until `direct_update::end`.
unsafe fn open(catalog: &Catalog, privileges: &[(pg_sys::AclMode, &[usize])]) -> Option<Writer> {
    if !catalog.direct || !direct_update::possible() {
        return None;
    }
    // SAFETY: privilege checks of an existing table and its columns; the
    // table is opened with the lock its INSERT or UPDATE takes, kept until
    // the transaction ends.
    unsafe {
        let user = pg_sys::GetUserId();
        let allowed = privileges.iter().all(|&(mode, columns)| {
            pg_sys::pg_class_aclcheck(catalog.table, user, mode) == pg_sys::AclResult::ACLCHECK_OK
                || (!columns.is_empty()
                    && columns.iter().all(|&c| {
                        pg_sys::pg_attribute_aclcheck(catalog.table, c as i16 + 1, user, mode)
                            == pg_sys::AclResult::ACLCHECK_OK
                    }))
        });
        if !allowed {
            return None;
        }
        let rel = pg_sys::table_open(catalog.table, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        Some(direct_update::begin(rel))
    }
}

/// Records a pending hold of `quantity` on the row `row_id` (a jsonb) of
/// `table`, expiring after `ttl` (if any), as the statement
/// `INSERT INTO integrity.hold_records (table_name, kind, row_id, quantity,
/// expires_at) VALUES (…, 'stock', …) RETURNING hold_id` does with the
/// table's defaults: its id, or `None` when the statement must do it.  The
/// caller has just reserved `quantity` of the row, which took the privileges
/// on `table` that the policies of the record ask for.
///
/// # Safety
/// `table` is a table's OID, `row_id` a jsonb, `quantity` a numeric, `ttl`
/// an interval; inside a transaction.
pub(crate) unsafe fn record(
    table: pg_sys::Datum,
    row_id: pg_sys::Datum,
    quantity: pg_sys::Datum,
    ttl: Option<pg_sys::Datum>,
) -> Option<pg_sys::Datum> {
    let catalog = catalog()?;
    // INSERT … RETURNING hold_id: INSERT, and SELECT of the id.
    let privileges: [(pg_sys::AclMode, &[usize]); 2] =
        [(pg_sys::ACL_INSERT as pg_sys::AclMode, &[]), (pg_sys::ACL_SELECT as pg_sys::AclMode, &[HOLD_ID])];
    // SAFETY: the writer's new slot has the table's descriptor, filled with
    // values of its columns' types (`COLUMNS`, checked by `as_made`); the
    // sequence's nextval checks its privileges as the column default does.
    unsafe {
        let w = open(&catalog, &privileges)?;
        let now = pg_sys::GetCurrentTransactionStartTimestamp();
        let hold = call1(raw::nextval_oid, pg_sys::Datum::from(catalog.sequence));
        let clear = (*(*w.new).tts_ops).clear.expect("a slot type clears");
        clear(w.new);
        let values = core::slice::from_raw_parts_mut((*w.new).tts_values, COLUMNS.len());
        let nulls = core::slice::from_raw_parts_mut((*w.new).tts_isnull, COLUMNS.len());
        nulls.fill(false);
        values[HOLD_ID] = hold;
        values[TABLE_NAME] = table;
        values[KIND] = text(c"stock");
        values[ROW_ID] = row_id;
        values[LINE] = pg_sys::Datum::from(1);
        values[QUANTITY] = quantity;
        values[STATUS] = text(c"pending");
        nulls[COMMITTED_QUANTITY] = true;
        nulls[IDEMPOTENCY_KEY] = true;
        values[CREATED_AT] = pg_sys::Datum::from(now);
        match ttl {
            Some(ttl) => values[EXPIRES_AT] = call2(raw::timestamptz_pl_interval, pg_sys::Datum::from(now), ttl),
            None => nulls[EXPIRES_AT] = true,
        }
        nulls[SETTLED_AT] = true;
        values[TXID] = pg_sys::Datum::from(pg_sys::GetTopFullTransactionId().value);
        values[ACTOR] = call1(raw::current_user, pg_sys::Datum::from(0));
        direct_update::in_statement(&w, |_| direct_update::insert(&w));
        direct_update::end(w);
        Some(hold)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Settlement {
    Commit,
    Release,
}

/// What settling a hold did.
pub(crate) enum Settled {
    /// The hold was pending and is settled now; what it held.
    Done {
        on_stock: bool,
        table: pg_sys::Datum,
        /// The held row's key (a jsonb).
        row_id: pg_sys::Datum,
        quantity: pg_sys::Datum,
        /// What the commit consumes (none for a release).
        consumed: Option<pg_sys::Datum>,
        /// What goes back (none when the commit consumes it all).
        given_back: Option<pg_sys::Datum>,
    },
    /// No pending hold of the id that the caller may settle with the
    /// quantity: the status statement says why.
    NotPending,
    /// The statement must settle it.
    Statement,
}

/// Settles pending hold `hold` (a bigint) unless it has expired or the
/// quantity `qty` (a numeric, for a partial commit) does not fit, as the
/// statement `UPDATE integrity.hold_records SET status = …, settled_at =
/// now() [, committed_quantity = coalesce($2, quantity)] WHERE hold_id = $1
/// AND status = 'pending' AND (expires_at IS NULL OR expires_at > now()) [AND
/// …]` does.
///
/// # Safety
/// Inside a transaction; `hold` a bigint, `qty` a numeric.
pub(crate) unsafe fn settle(hold: pg_sys::Datum, settlement: Settlement, qty: Option<pg_sys::Datum>) -> Settled {
    let Some(catalog) = catalog() else { return Settled::Statement };
    // The UPDATE reads every column (its WHERE and what the caller is
    // returned) and writes three.
    let written: &[usize] = &[STATUS, COMMITTED_QUANTITY, SETTLED_AT];
    let read: &[usize] = &[];
    let privileges: [(pg_sys::AclMode, &[usize]); 2] =
        [(pg_sys::ACL_SELECT as pg_sys::AclMode, read), (pg_sys::ACL_UPDATE as pg_sys::AclMode, written)];
    // SAFETY: the writer's slots have the table's descriptor (`COLUMNS`);
    // the primary key index is opened and closed here (keeping its lock);
    // the values copied out of the row before the writer ends are palloc'd
    // in the caller's memory context.
    unsafe {
        let Some(w) = open(&catalog, &privileges) else { return Settled::Statement };
        let index = pg_sys::index_open(catalog.primary_key, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let settled = direct_update::in_statement(&w, |snapshot| {
            let mut key: [pg_sys::ScanKeyData; 1] = core::mem::zeroed();
            pg_sys::ScanKeyInit(
                &mut key[0],
                1,
                pg_sys::BTEqualStrategyNumber as u16,
                pg_sys::Oid::from(pg_sys::F_INT8EQ),
                hold,
            );
            if !direct_update::find(&w, index, &mut key, snapshot) {
                return Settled::NotPending;
            }
            if !may_settle(&w) {
                return Settled::Statement;
            }
            if !settleable(&w, hold, qty) {
                return Settled::NotPending;
            }
            // An UPDATE of no key column locks the row so.
            match direct_update::lock_found(&w, snapshot, pg_sys::LockTupleMode::LockTupleNoKeyExclusive) {
                Locked::Same => {}
                // EvalPlanQual's re-check of the WHERE clause on the version
                // the lock found.
                Locked::Later if settleable(&w, hold, qty) => {}
                Locked::Later | Locked::Not(Outcome::Missing) => return Settled::NotPending,
                Locked::Not(_) => return Settled::Statement,
            }
            write(&w, settlement, qty)
        });
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        direct_update::end(w);
        settled
    }
}

/// Whether the caller may settle the hold in the writer's `found` slot as
/// the statement lets it: under row-level security only with the SELECT and
/// UPDATE privileges on the held table that the policies ask for (table-wide
/// here; a caller with them on some columns only is left to the statement).
///
/// # Safety
/// The slot holds a hold record.
unsafe fn may_settle(w: &Writer) -> bool {
    // SAFETY: the row's regclass column; privilege checks of the caller.
    unsafe {
        let user = pg_sys::GetUserId();
        let records = (*w.rel).rd_id;
        if pg_sys::check_enable_rls(records, pg_sys::InvalidOid, true)
            != pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
        {
            return true;
        }
        let held = pg_sys::Oid::from(column(w, TABLE_NAME).expect("a hold has a table").value() as u32);
        let mut missing = false;
        [pg_sys::ACL_SELECT, pg_sys::ACL_UPDATE].iter().all(|&mode| {
            pg_sys::pg_class_aclcheck_ext(held, user, mode as pg_sys::AclMode, &mut missing)
                == pg_sys::AclResult::ACLCHECK_OK
                && !missing
        })
    }
}

/// The statement's WHERE clause on the row in the writer's `found` slot.
///
/// # Safety
/// The slot holds a hold record; `hold` a bigint, `qty` a numeric.
unsafe fn settleable(w: &Writer, hold: pg_sys::Datum, qty: Option<pg_sys::Datum>) -> bool {
    // SAFETY: the row's columns, of the types `COLUMNS` gives them.
    unsafe {
        let now = pg_sys::GetCurrentTransactionStartTimestamp();
        let pending = column(w, STATUS).is_some_and(|status| text_is(status, c"pending"));
        let unexpired = column(w, EXPIRES_AT).is_none_or(|expires| (expires.value() as i64) > now);
        let fits = qty.is_none_or(|qty| {
            let quantity = column(w, QUANTITY).expect("a hold has a quantity");
            numeric_cmp(qty, numeric_zero()) > 0 && numeric_cmp(qty, quantity) <= 0
        });
        column(w, HOLD_ID).is_some_and(|id| id.value() as i64 == hold.value() as i64) && pending && unexpired && fits
    }
}

/// Writes the locked hold in the writer's `found` slot settled.
///
/// # Safety
/// The slot holds the locked hold record; `qty` a numeric that fits it.
unsafe fn write(w: &Writer, settlement: Settlement, qty: Option<pg_sys::Datum>) -> Settled {
    // SAFETY: the new slot has the table's descriptor; its values are the
    // locked row's (every column deformed into the slot) with the settled
    // columns replaced; what is returned is copied out of the row.
    unsafe {
        pg_sys::slot_getallattrs(w.found);
        let clear = (*(*w.new).tts_ops).clear.expect("a slot type clears");
        clear(w.new);
        let values = core::slice::from_raw_parts_mut((*w.new).tts_values, COLUMNS.len());
        let nulls = core::slice::from_raw_parts_mut((*w.new).tts_isnull, COLUMNS.len());
        values.copy_from_slice(core::slice::from_raw_parts((*w.found).tts_values, COLUMNS.len()));
        nulls.copy_from_slice(core::slice::from_raw_parts((*w.found).tts_isnull, COLUMNS.len()));
        let quantity = copied(values[QUANTITY]);
        let (status, consumed) = match settlement {
            Settlement::Commit => (c"committed", Some(qty.map_or(quantity, |qty| copied(qty)))),
            Settlement::Release => (c"released", None),
        };
        values[STATUS] = text(status);
        values[SETTLED_AT] = pg_sys::Datum::from(pg_sys::GetCurrentTransactionStartTimestamp());
        nulls[SETTLED_AT] = false;
        if let Some(consumed) = consumed {
            values[COMMITTED_QUANTITY] = consumed;
            nulls[COMMITTED_QUANTITY] = false;
        }
        let settled = Settled::Done {
            on_stock: text_is(values[KIND], c"stock"),
            table: values[TABLE_NAME],
            row_id: copied(values[ROW_ID]),
            quantity,
            consumed,
            given_back: match consumed {
                None => Some(quantity),
                Some(consumed) => {
                    let rest = call2(raw::numeric_sub, quantity, consumed);
                    (numeric_cmp(rest, numeric_zero()) != 0).then_some(rest)
                }
            },
        };
        if direct_update::rewrite(w) {
            settled
        } else {
            // Only a BEFORE trigger skips a row, and the table has none
            // (`as_made`): nothing was written, as the statement would not.
            Settled::Statement
        }
    }
}

/// Column `i` (0-based) of the row in the writer's `found` slot.
///
/// # Safety
/// The slot holds a hold record.
unsafe fn column(w: &Writer, i: usize) -> Option<pg_sys::Datum> {
    let mut is_null = false;
    // SAFETY: a column of the slot's descriptor (the contract).
    let value = unsafe { pg_sys::slot_getattr(w.found, i as i32 + 1, &mut is_null) };
    (!is_null).then_some(value)
}

/// # Safety
/// `value` is a varlena datum.
unsafe fn copied(value: pg_sys::Datum) -> pg_sys::Datum {
    // SAFETY: a varlena (typlen -1, by reference), copied into the current
    // memory context.
    unsafe { raw::datumCopy(value, false, -1) }
}

/// # Safety
/// A NUL-terminated ASCII string.
unsafe fn text(value: &core::ffi::CStr) -> pg_sys::Datum {
    // SAFETY: copied into a palloc'd text.
    pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text(value.as_ptr()) })
}

/// Whether the text datum `value` is `expected`, as `=` under the "C"
/// collation (byte for byte) compares them.
///
/// # Safety
/// `value` is a text datum.
unsafe fn text_is(value: pg_sys::Datum, expected: &core::ffi::CStr) -> bool {
    // SAFETY: a text is a varlena (the contract).
    unsafe { crate::chain_encoding::varlena_bytes(value) == expected.to_bytes() }
}

/// # Safety
/// Both are numerics.
unsafe fn numeric_cmp(a: pg_sys::Datum, b: pg_sys::Datum) -> i32 {
    // SAFETY: the built-in comparison of two numerics.
    unsafe { call2(raw::numeric_cmp, a, b).value() as i32 }
}

fn numeric_zero() -> pg_sys::Datum {
    // SAFETY: the built-in cast of an integer.
    unsafe { call1(raw::int4_numeric, pg_sys::Datum::from(0)) }
}
