//! `integrity.place_hold` of one row, `commit_hold` and `release_hold`: the
//! hot paths of holds (sql/holds.sql has the rest, and the rules they share).
//!
//! Placing a hold expires the row's overdue holds first
//! (`integrity._expire_overdue`, which locks hold records before rows, as
//! everything does), reserves as `reserve_stock` does (`stock_operations`,
//! directly when it can), and records the hold in `integrity.hold_records`,
//! with statements prepared once per backend and table and kept.
//! Settling updates the hold record first, then the row, with the single-row
//! operations of `stock_operations`.

use core::ffi::c_char;
use std::cell::Cell;

use pgrx::pg_sys;

use crate::error::Error;
use crate::fmgr::{
    begin_index_scan, execute_plan, guarded_function, keep_generic_plan, result_text, result_value, spi_connect,
    spi_finish, to_jsonb_of, KeptPlans, Verdict,
};
use crate::invalidation;
use crate::stock_operations::{keep_all, on_row, on_row_keyed_by_text, open, plans, Cache, Operation, Target};

guarded_function!(
    /// `integrity.place_hold(tbl regclass, id anyelement, qty numeric, ttl
    /// interval, idempotency_key text) RETURNS bigint`
    integrity_place_hold,
    pg_finfo_integrity_place_hold,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { place(fcinfo) }
    }
);

guarded_function!(
    /// `integrity.commit_hold(hold_id bigint, qty numeric) RETURNS text`
    integrity_commit_hold,
    pg_finfo_integrity_commit_hold,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { settle(fcinfo, Settlement::Commit) }
    }
);

guarded_function!(
    /// `integrity.release_hold(hold_id bigint) RETURNS text`
    integrity_release_hold,
    pg_finfo_integrity_release_hold,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { settle(fcinfo, Settlement::Release) }
    }
);

/// A table's hold statements, with $1 the id (of the key type they were
/// prepared for), $2 the quantity, $3 the table, $4 the idempotency key and
/// $5 the ttl: the record of a hold without a key and with one (each the
/// hold's id; none with a key a concurrent placement recorded first), the
/// expiry of the row's overdue holds, and the hold of the idempotency key
/// (no row if it is unused).
const RECORD: usize = 0;
const RECORD_KEYED: usize = 1;
const EXPIRE: usize = 2;
const KEYED: usize = 3;

thread_local! {
    /// By table and by the type of the id argument.
    static HOLD_PLANS: Cache<4> = Default::default();
    /// `integrity.hold_records_pending` and its table, with the invalidation
    /// generation they were looked up at.
    static PENDING_INDEX: Cell<(u64, pg_sys::Oid, pg_sys::Oid)> =
        const { Cell::new((u64::MAX, pg_sys::InvalidOid, pg_sys::InvalidOid)) };
    /// The statements of no table in particular, by what they do.
    static PLANS: KeptPlans<Statement, ()> = KeptPlans::default();
}

fn prepare_hold(_target: &Target, id_type: pg_sys::Oid) -> [pg_sys::SPIPlanPtr; 4] {
    let held_row = "pg_catalog.to_jsonb($1)";
    let overdue = format!(
        "EXISTS (SELECT FROM integrity.hold_records h \
                  WHERE h.table_name = $3 AND h.status = 'pending' AND h.row_id = {held_row} \
                    AND h.expires_at <= pg_catalog.now())"
    );
    let insert = format!(
        "INSERT INTO integrity.hold_records AS h (table_name, kind, row_id, quantity, idempotency_key, expires_at) \
         VALUES ($3, 'stock', {held_row}, $2, $4, pg_catalog.now() + $5)"
    );
    keep_all(
        [
            // Without a key there is nothing to conflict with, and no ON
            // CONFLICT: its speculative insertion costs more WAL and locking.
            format!("{insert} RETURNING h.hold_id"),
            format!(
                "{insert} ON CONFLICT (table_name, idempotency_key, line) WHERE idempotency_key IS NOT NULL \
                 DO NOTHING RETURNING h.hold_id"
            ),
            format!("SELECT integrity._expire_overdue($3, ARRAY[{held_row}]) WHERE {overdue}"),
            // A new key (the usual case) is found unused by an index probe,
            // without calling the PL/pgSQL function that checks a used one.
            format!(
                "SELECT (integrity._holds_of_key($3, $4, ARRAY[{held_row}], ARRAY[$2]))[1] \
                  WHERE EXISTS (SELECT FROM integrity.hold_records h WHERE h.table_name = $3 AND h.idempotency_key = $4)"
            ),
        ],
        [id_type, pg_sys::NUMERICOID, pg_sys::REGCLASSOID, pg_sys::TEXTOID, pg_sys::INTERVALOID],
    )
}

/// # Safety
/// `fcinfo` is the running call's, declared (regclass, anyelement, numeric,
/// interval, text) returning bigint.
unsafe fn place(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    // SAFETY: the running call's fcinfo, with five arguments (the contract).
    let args = unsafe { (*fcinfo).args.as_slice(5) };
    let (tbl, id, qty, ttl, key) = (args[0], args[1], args[2], args[3], args[4]);
    // SAFETY: a non-NULL ttl is an interval (the contract).
    if tbl.isnull || (!ttl.isnull && unsafe { !positive(ttl.value) }) {
        // The checks' own errors, only when they fail.
        let mut values = [tbl.value, ttl.value];
        let nulls = [flag(tbl.isnull), flag(ttl.isnull)];
        // SAFETY: the statement's parameters (regclass, interval); it raises,
        // and nothing on this frame needs dropping.
        unsafe {
            spi_connect();
            execute_plan(plan(Statement::CheckArguments), &mut values, &nulls, true);
            spi_finish();
        }
    }
    // The stock operation's checks and errors are reserve_stock's.
    let caller = Operation::Reserve.name();
    if id.isnull {
        Error::NullArgument { caller: caller.into(), argument: "id" }.raise();
    }
    // SAFETY: the call's FmgrInfo, whose expression gives the actual type of
    // the anyelement argument.
    let id_type = unsafe { pg_sys::get_fn_expr_argtype((*fcinfo).flinfo, 1) };
    let rel = open(tbl.value, caller);
    // SAFETY: the relation is open.
    let statements = unsafe { plans(&HOLD_PLANS, rel, id_type, caller, prepare_hold) };
    let mut values = [id.value, qty.value, tbl.value, key.value, ttl.value];
    let nulls = [b' ' as c_char, flag(qty.isnull), b' ' as c_char, flag(key.isnull), flag(ttl.isnull)];
    let quantity = (qty.value, qty.isnull);

    // The hold an earlier placement with the key recorded; else the row's
    // overdue holds are expired, so that what they held is available.
    // SAFETY: the statements run inside the SPI connection made here, with
    // the parameters they were prepared with; nothing on this frame needs
    // dropping if one raises (plain arrays and datums).
    let earlier = unsafe {
        spi_connect();
        let earlier = if key.isnull { None } else { hold_of_key(statements[KEYED], &mut values, &nulls) };
        if earlier.is_none() && has_overdue(tbl.value, id.value, id_type) {
            execute_plan(statements[EXPIRE], &mut values, &nulls, false);
        }
        spi_finish();
        earlier
    };
    if let Some(hold) = earlier {
        // SAFETY: the relation opened above, not used after this; the lock
        // is kept until the end of the transaction.
        unsafe { pg_sys::relation_close(rel, pg_sys::NoLock as i32) };
        return Verdict::Allow(hold);
    }
    // SAFETY: the relation is open (on_row closes it), the id of id_type, the
    // quantity a numeric and its flag.
    match unsafe { on_row(rel, id_type, id.value, quantity, Operation::Reserve) } {
        Verdict::Allow(reserved) if reserved.value() != 0 => {}
        // Not enough available.
        // SAFETY: the running call's fcinfo (the contract).
        Verdict::Allow(_) => return unsafe { null_result(fcinfo) },
        refused => return refused,
    }
    // SAFETY: as for the statements above.
    let hold = unsafe {
        spi_connect();
        let recorded =
            execute_plan(statements[if key.isnull { RECORD } else { RECORD_KEYED }], &mut values, &nulls, false);
        let hold = if recorded == 1 { result_value(0, 1) } else { None };
        spi_finish();
        hold
    };
    if let Some(hold) = hold {
        return Verdict::Allow(hold);
    }
    // A concurrent placement with this key committed first: it holds the
    // stock, this one gives back what it reserved and returns that hold.
    let rel = open(tbl.value, caller);
    // SAFETY: the relation is open (on_row closes it), the id of id_type,
    // the quantity a numeric that the reservation took.
    if let refused @ Verdict::Refuse(_) = unsafe { on_row(rel, id_type, id.value, quantity, Operation::Release) } {
        return refused;
    }
    // SAFETY: as for the statements above.
    let hold = unsafe {
        spi_connect();
        let hold = hold_of_key(statements[KEYED], &mut values, &nulls);
        spi_finish();
        hold
    };
    // SAFETY: the running call's fcinfo (the contract).
    hold.map_or_else(|| unsafe { null_result(fcinfo) }, Verdict::Allow)
}

/// Whether the row (key `id`, of `id_type`, of table `tbl`) may have a pending
/// hold past its expiry, by a probe of `integrity.hold_records_pending` on
/// (table, `to_jsonb(id)`, `expires_at <= now()`) under the snapshot the
/// expiry statement would take: most placements find none, and skip that
/// statement, whose own test of the same condition decides what it expires.
/// The probe reads past the table's row security (the caller learns nothing
/// from it but whether that statement runs).
///
/// # Safety
/// `id` is a non-NULL datum of `id_type`, `tbl` a table's OID.
unsafe fn has_overdue(tbl: pg_sys::Datum, id: pg_sys::Datum, id_type: pg_sys::Oid) -> bool {
    let generation = invalidation::generation();
    let (mut at, mut index_oid, mut table_oid) = PENDING_INDEX.get();
    if at != generation {
        // SAFETY: catalog lookups by name, which return InvalidOid rather
        // than raise for a relation that is not there.
        unsafe {
            let schema = pg_sys::get_namespace_oid(c"integrity".as_ptr(), true);
            index_oid = pg_sys::get_relname_relid(c"hold_records_pending".as_ptr(), schema);
            table_oid = pg_sys::get_relname_relid(c"hold_records".as_ptr(), schema);
        }
        at = generation;
        PENDING_INDEX.set((at, index_oid, table_oid));
    }
    if index_oid == pg_sys::InvalidOid || table_oid == pg_sys::InvalidOid {
        // Not as the extension made it: let the statement look.
        return true;
    }
    // SAFETY: the table and its index are opened (and locked, as a query
    // reading them would) and closed keeping the locks; the scan keys compare
    // the index's columns (regclass, jsonb, timestamptz: the default operator
    // classes it was made with) by their types' own functions; the snapshot
    // pushed is popped; `to_jsonb()` is called as the hold's record calls it.
    unsafe {
        let mut to_jsonb: pg_sys::FmgrInfo = core::mem::zeroed();
        to_jsonb_of(&mut to_jsonb, id_type, pg_sys::CurrentMemoryContext);
        let row_id = pg_sys::FunctionCall1Coll(&mut to_jsonb, pg_sys::InvalidOid, id);
        let now = pg_sys::Datum::from(pg_sys::GetCurrentTransactionStartTimestamp());
        let mut keys: [pg_sys::ScanKeyData; 3] = core::mem::zeroed();
        let key = |key: &mut pg_sys::ScanKeyData, column: i16, strategy: u32, function: u32, value: pg_sys::Datum| {
            pg_sys::ScanKeyInit(key, column, strategy as u16, pg_sys::Oid::from(function), value)
        };
        key(&mut keys[0], 1, pg_sys::BTEqualStrategyNumber, pg_sys::F_OIDEQ, tbl);
        key(&mut keys[1], 2, pg_sys::BTEqualStrategyNumber, pg_sys::F_JSONB_EQ, row_id);
        key(&mut keys[2], 3, pg_sys::BTLessEqualStrategyNumber, pg_sys::F_TIMESTAMPTZ_LE, now);
        let table = pg_sys::table_open(table_oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let index = pg_sys::index_open(index_oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        // As SPI starts a statement that may write: this command's inserts seen.
        pg_sys::CommandCounterIncrement();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let snapshot = pg_sys::GetActiveSnapshot();
        let scan = begin_index_scan(table, index, snapshot, &mut keys);
        let slot = pg_sys::table_slot_create(table, core::ptr::null_mut());
        let found = pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_endscan(scan);
        pg_sys::PopActiveSnapshot();
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::table_close(table, pg_sys::NoLock as pg_sys::LOCKMODE);
        found
    }
}

/// The hold an earlier placement with the idempotency key recorded for the
/// row, if any (a key used for another row or quantity raises 23505).
///
/// # Safety
/// Inside `SPI_connect`; `values` and `nulls` are the hold statements' parameters.
unsafe fn hold_of_key(
    keyed: pg_sys::SPIPlanPtr,
    values: &mut [pg_sys::Datum; 5],
    nulls: &[c_char; 5],
) -> Option<pg_sys::Datum> {
    // SAFETY: connected to SPI, with the statement's parameters (the contract).
    // Not read-only: after a concurrent placement's commit, a new snapshot sees it.
    let used = unsafe { execute_plan(keyed, values, nulls, false) } == 1;
    used.then(|| result_value(0, 1)).flatten()
}

/// Whether the interval is above zero, as `interval > '0'` compares: by its
/// span with a month of 30 days.
///
/// # Safety
/// `ttl` is a non-NULL interval datum.
unsafe fn positive(ttl: pg_sys::Datum) -> bool {
    // SAFETY: an interval datum points to an Interval (the contract).
    let ttl = unsafe { &*(ttl.cast_mut_ptr::<pg_sys::Interval>()) };
    let day = i128::from(pg_sys::SECS_PER_DAY) * 1_000_000;
    i128::from(ttl.time) + i128::from(ttl.day) * day + i128::from(ttl.month) * i128::from(pg_sys::DAYS_PER_MONTH) * day
        > 0
}

fn flag(isnull: bool) -> c_char {
    if isnull {
        b'n' as c_char
    } else {
        b' ' as c_char
    }
}

/// The function's result is NULL.
///
/// # Safety
/// `fcinfo` is the running call's.
unsafe fn null_result(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    // SAFETY: the running call's fcinfo (the contract).
    unsafe { (*fcinfo).isnull = true };
    Verdict::Allow(pg_sys::Datum::from(0))
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Settlement {
    Commit,
    Release,
}

/// The statements of no table in particular.  All but `CheckArguments` take
/// $1 the hold, $2 a quantity, $3 the caller, $4 a table and $5 a row key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Statement {
    CheckArguments,
    /// Settles the pending hold unless it has expired (or the quantity does
    /// not fit), and returns what it held: whether on stock, the table, the
    /// row key as text, what to consume (NULL for a release) and to give
    /// back (NULL for nothing), the row key and the quantity.  Its status
    /// test is COLLATE "C" so that it does not imply the predicate of the
    /// index of pending holds: a generic plan made while there are few
    /// would scan that index whole for the hold, and keep doing so as they
    /// grow in number, instead of finding it by its primary key.
    Settle(Settlement),
    /// Why the hold could not be settled (raises), or the status it has.
    Status,
    /// Gives back a credit hold.
    GiveBackCredit,
}

impl Statement {
    fn sql(self) -> &'static str {
        match self {
            Statement::CheckArguments => "SELECT integrity._check_hold_arguments($1, $2, 'place_hold')",
            Statement::Settle(Settlement::Commit) => {
                "UPDATE integrity.hold_records r \
                    SET status = 'committed', settled_at = pg_catalog.now(), committed_quantity = coalesce($2, r.quantity) \
                  WHERE r.hold_id = $1 AND r.status = 'pending' COLLATE \"C\" \
                    AND (r.expires_at IS NULL OR r.expires_at > pg_catalog.now()) \
                    AND ($2 IS NULL OR ($2 > 0 AND $2 <= r.quantity)) \
                RETURNING r.kind = 'stock', r.table_name, r.row_id #>> '{}', r.committed_quantity, \
                          NULLIF(r.quantity - r.committed_quantity, 0), r.row_id, r.quantity"
            }
            Statement::Settle(Settlement::Release) => {
                "UPDATE integrity.hold_records r SET status = 'released', settled_at = pg_catalog.now() \
                  WHERE r.hold_id = $1 AND r.status = 'pending' COLLATE \"C\" \
                    AND (r.expires_at IS NULL OR r.expires_at > pg_catalog.now()) \
                RETURNING r.kind = 'stock', r.table_name, r.row_id #>> '{}', NULL::numeric, r.quantity, r.row_id, \
                          r.quantity"
            }
            Statement::Status => "SELECT integrity._settled_status($1, $2, $3)",
            Statement::GiveBackCredit => "SELECT integrity._give_back('credit', $4, $5, $2, $3)",
        }
    }

    fn arg_types(self) -> Vec<pg_sys::Oid> {
        match self {
            Statement::CheckArguments => vec![pg_sys::REGCLASSOID, pg_sys::INTERVALOID],
            _ => vec![pg_sys::INT8OID, pg_sys::NUMERICOID, pg_sys::TEXTOID, pg_sys::REGCLASSOID, pg_sys::JSONBOID],
        }
    }
}

/// The statement's kept plan (generic: each finds its rows by key).
fn plan(statement: Statement) -> pg_sys::SPIPlanPtr {
    PLANS.with(|plans| {
        plans.get(statement, (), || {
            spi_connect();
            let plan = keep_generic_plan(statement.sql(), &mut statement.arg_types(), || statement.sql().into());
            spi_finish();
            plan
        })
    })
}

/// # Safety
/// `fcinfo` is the running call's, declared (bigint, numeric) returning text
/// for a commit, (bigint) for a release.
unsafe fn settle(fcinfo: pg_sys::FunctionCallInfo, settlement: Settlement) -> Verdict {
    let (caller, status) = match settlement {
        Settlement::Commit => (c"commit_hold", c"committed"),
        Settlement::Release => (c"release_hold", c"released"),
    };
    // SAFETY: the running call's fcinfo, with two arguments for a commit and
    // one for a release (the contract).
    let args = unsafe { (*fcinfo).args.as_slice(if settlement == Settlement::Commit { 2 } else { 1 }) };
    if args[0].isnull {
        Error::NullArgument { caller: caller.to_str().expect("ASCII").into(), argument: "hold_id" }.raise();
    }
    let (qty, qty_null) = args.get(1).map_or((pg_sys::Datum::from(0), true), |qty| (qty.value, qty.isnull));
    // SAFETY: a NUL-terminated string, copied into a palloc'd text.
    let caller_text = pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text(caller.as_ptr()) });
    let mut values = [args[0].value, qty, caller_text, pg_sys::Datum::from(0), pg_sys::Datum::from(0)];
    let mut nulls = [b' ' as c_char, flag(qty_null), b' ' as c_char, b'n' as c_char, b'n' as c_char];

    // SAFETY: the statements run inside the SPI connection made here, with
    // the parameters they were prepared with; the values read from a result
    // live in the connection's memory until spi_finish, after their last
    // use; nothing on this frame needs dropping if a statement raises.
    unsafe {
        spi_connect();
        if execute_plan(plan(Statement::Settle(settlement)), &mut values, &nulls, false) == 0 {
            execute_plan(plan(Statement::Status), &mut values, &nulls, false);
            let settled = result_text(0, 1).expect("_settled_status returns a status or raises");
            spi_finish();
            let settled = std::ffi::CString::new(settled).expect("a status has no NUL");
            return Verdict::Allow(pg_sys::Datum::from(pg_sys::cstring_to_text(settled.as_ptr())));
        }
        let on_stock = result_value(0, 1).is_some_and(|stock| stock.value() != 0);
        let table = result_value(0, 2).expect("a hold has a table");
        if on_stock {
            let row = result_value(0, 3).expect("a hold has a row");
            let consumed = result_value(0, 4);
            let given_back = result_value(0, 5);
            // The row key as text, converted to the key's type on the way.
            let moves = [(consumed, Operation::Commit), (given_back, Operation::Release)];
            for (quantity, operation) in moves.into_iter().filter_map(|(q, o)| q.map(|q| (q, o))) {
                let rel = open(table, operation.name());
                if let refused @ Verdict::Refuse(_) = on_row_keyed_by_text(rel, row, (quantity, false), operation) {
                    // Still connected: the refusal's strings live in this
                    // connection's memory, which spi_finish would free
                    // before the caller raises it; the abort disconnects.
                    return refused;
                }
            }
        } else {
            // The DEBIT entry the caller inserts next takes the credit over:
            // it is counted once, by the ledger.
            values[1] = result_value(0, 7).expect("a hold has a quantity");
            values[3] = table;
            values[4] = result_value(0, 6).expect("a hold has a row");
            nulls = [b' ' as c_char; 5];
            execute_plan(plan(Statement::GiveBackCredit), &mut values, &nulls, false);
        }
        spi_finish();
        Verdict::Allow(pg_sys::Datum::from(pg_sys::cstring_to_text(status.as_ptr())))
    }
}
