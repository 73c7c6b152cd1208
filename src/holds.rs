//! `integrity.place_hold` of one row, `commit_hold` and `release_hold`: the
//! hot paths of holds (sql/holds.sql has the rest, and the rules they share).
//!
//! Placing a hold expires the row's overdue holds first
//! (`integrity._expire_overdue`, which locks hold records before rows, as
//! everything does), reserves as `reserve_stock` does (`stock_operations`,
//! directly when it can), and records the hold in `integrity.hold_records`.
//! Settling updates the hold record first, then the row, with the single-row
//! operations of `stock_operations`.  The record is written without SPI
//! where `hold_records` can (a placement without an idempotency key, a
//! settlement), else by statements prepared once per backend and kept, run
//! with search_path pinned; the functions take no `SET` clause, which would
//! cost the direct path a GUC level per call.

use core::ffi::c_char;

use pgrx::pg_sys;

use crate::chain_encoding::written_here;
use crate::direct_update::{call2, raw};
use crate::error::Error;
use crate::fmgr::{
    begin_index_scan, execute_plan, guarded_function, keep_generic_plan, pin_search_path, pinned_if, result_text,
    result_value, spi_connect, spi_finish, to_jsonb_of, KeptPlans, Verdict,
};
use crate::hold_records::{self, Settled, Settlement};
use crate::stock_operations::{on_row, on_row_keyed_by_text, open, Operation};

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

thread_local! {
    static PLANS: KeptPlans<Statement, ()> = KeptPlans::default();
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
        // SAFETY: the statement's parameters (regclass, interval); it raises.
        unsafe { in_spi(|| execute_plan(plan(Statement::CheckArguments), &mut values, &nulls, true)) };
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
    // The row as the hold records it: `to_jsonb(id)`, with search_path
    // pinned when the type's output reads it or is the user's.
    // SAFETY: `to_jsonb()` of the id's type, called on the id.
    let row_id = unsafe {
        pinned_if(!written_here(id_type), || {
            let mut to_jsonb: pg_sys::FmgrInfo = core::mem::zeroed();
            to_jsonb_of(&mut to_jsonb, id_type, pg_sys::CurrentMemoryContext);
            pg_sys::FunctionCall1Coll(&mut to_jsonb, pg_sys::InvalidOid, id.value)
        })
    };
    let mut values = [row_id, qty.value, tbl.value, key.value, ttl.value];
    let nulls = [b' ' as c_char, flag(qty.isnull), b' ' as c_char, flag(key.isnull), flag(ttl.isnull)];
    let quantity = (qty.value, qty.isnull);

    // The hold an earlier placement with the key recorded; else the row's
    // overdue holds are expired, so that what they held is available.
    // SAFETY: the statements' parameters (`Statement::Record`), the table's
    // OID and the row's jsonb; nothing on this frame needs dropping if a
    // statement raises (plain arrays and datums).
    let earlier = unsafe {
        let earlier = if key.isnull { None } else { in_spi(|| hold_of_key(&mut values, &nulls)) };
        if earlier.is_none() && has_overdue(tbl.value, row_id) {
            in_spi(|| execute_plan(plan(Statement::Expire), &mut values, &nulls, false));
        }
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
    if key.isnull {
        let ttl = (!ttl.isnull).then_some(ttl.value);
        // SAFETY: the table's OID, the row's key as a jsonb, a numeric
        // quantity that this caller just reserved, an interval.
        if let Some(hold) = unsafe { hold_records::record(tbl.value, row_id, qty.value, ttl) } {
            return Verdict::Allow(hold);
        }
    }
    let record = if key.isnull { Statement::Record } else { Statement::RecordKeyed };
    // SAFETY: as for the statements above; the hold's id is a bigint, by
    // value, which outlives the connection.
    let hold = unsafe {
        in_spi(|| (execute_plan(plan(record), &mut values, &nulls, false) == 1).then(|| result_value(0, 1)).flatten())
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
    let hold = unsafe { in_spi(|| hold_of_key(&mut values, &nulls)) };
    // SAFETY: the running call's fcinfo (the contract).
    hold.map_or_else(|| unsafe { null_result(fcinfo) }, Verdict::Allow)
}

/// `f` inside an SPI connection (`connect`).
///
/// # Safety
/// `f` runs statements (and reads their results into values that outlive
/// the connection only if passed by value); nothing on the callers' frames
/// needs dropping if one raises (the abort disconnects and restores the
/// setting).
unsafe fn in_spi<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the connection is closed here, or by the abort (the contract).
    unsafe {
        let level = connect();
        let result = f();
        disconnect(level);
        result
    }
}

/// Connects to SPI with search_path pinned, so that the statements resolve
/// names in `pg_catalog` only, whatever the caller's setting: the level to
/// give `disconnect`.
///
/// # Safety
/// `disconnect` closes the connection, or the abort does.
unsafe fn connect() -> core::ffi::c_int {
    // SAFETY: the contract.
    unsafe {
        let level = pin_search_path();
        spi_connect();
        level
    }
}

/// # Safety
/// `level` is from `connect`, whose connection is the current one.
unsafe fn disconnect(level: core::ffi::c_int) {
    spi_finish();
    // SAFETY: the contract.
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
}

/// Whether the row (`row_id`, its key as a jsonb, of table `tbl`) may have a
/// pending hold past its expiry, by a probe of `integrity.hold_records_pending`
/// on (table, the row's hash, `expires_at <= now()`) under the snapshot the
/// expiry statement would take: most placements find none, and skip that
/// statement, whose own test of the same condition (and of the row, whose
/// hash another may share) decides what it expires.
/// The probe reads past the table's row security (the caller learns nothing
/// from it but whether that statement runs).
///
/// # Safety
/// `tbl` is a table's OID, `row_id` a jsonb.
unsafe fn has_overdue(tbl: pg_sys::Datum, row_id: pg_sys::Datum) -> bool {
    let Some(catalog) = hold_records::catalog() else {
        // Not as the extension made it: let the statement look.
        return true;
    };
    // SAFETY: the table and its index are opened (and locked, as a query
    // reading them would) and closed keeping the locks; the scan keys compare
    // the index's columns (regclass, bigint, timestamptz: the default operator
    // classes it was made with) by their types' own functions; the snapshot
    // pushed is popped.
    unsafe {
        let now = pg_sys::Datum::from(pg_sys::GetCurrentTransactionStartTimestamp());
        let mut keys: [pg_sys::ScanKeyData; 3] = core::mem::zeroed();
        let key = |key: &mut pg_sys::ScanKeyData, column: i16, strategy: u32, function: u32, value: pg_sys::Datum| {
            pg_sys::ScanKeyInit(key, column, strategy as u16, pg_sys::Oid::from(function), value)
        };
        key(&mut keys[0], 1, pg_sys::BTEqualStrategyNumber, pg_sys::F_OIDEQ, tbl);
        let hash = call2(raw::jsonb_hash_extended, row_id, pg_sys::Datum::from(0i64));
        key(&mut keys[1], 2, pg_sys::BTEqualStrategyNumber, pg_sys::F_INT8EQ, hash);
        key(&mut keys[2], 3, pg_sys::BTLessEqualStrategyNumber, pg_sys::F_TIMESTAMPTZ_LE, now);
        let table = pg_sys::table_open(catalog.table, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let index = pg_sys::index_open(catalog.pending, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
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
/// Inside `SPI_connect`; `values` and `nulls` are the placement statements'
/// parameters.
unsafe fn hold_of_key(values: &mut [pg_sys::Datum; 5], nulls: &[c_char; 5]) -> Option<pg_sys::Datum> {
    // SAFETY: connected to SPI, with the statement's parameters (the contract).
    // Not read-only: after a concurrent placement's commit, a new snapshot sees it.
    let used = unsafe { execute_plan(plan(Statement::Keyed), values, nulls, false) } == 1;
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

/// The statements of holds, of no table in particular.  A placement's take
/// $1 the row (its key as a jsonb), $2 the quantity, $3 the table, $4 the
/// idempotency key and $5 the ttl; a settlement's $1 the hold, $2 a
/// quantity, $3 the caller, $4 a table and $5 a row key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Statement {
    /// Raises for a NULL table or a ttl that is not positive.
    CheckArguments,
    /// Records the hold without an idempotency key: its id
    /// (`hold_records::record` without SPI, when it can).  Without a key
    /// there is nothing to conflict with, and no ON CONFLICT: its
    /// speculative insertion costs more WAL and locking.
    Record,
    /// Records the hold with its key: its id, or no row when a concurrent
    /// placement recorded the key first.
    RecordKeyed,
    /// Expires the row's overdue holds.
    Expire,
    /// The hold of the idempotency key (no row if it is unused).  A new key
    /// (the usual case) is found unused by an index probe, without calling
    /// the PL/pgSQL function that checks a used one.
    Keyed,
    /// Settles the pending hold unless it has expired (or the quantity does
    /// not fit), and returns what it held: whether on stock, the table, the
    /// row key, the quantity, what to consume (NULL for a release) and to
    /// give back (NULL for nothing); `hold_records::settle` without SPI,
    /// when it can.  Its status
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
            Statement::Record => {
                "INSERT INTO integrity.hold_records AS h (table_name, kind, row_id, quantity, expires_at) \
                 VALUES ($3, 'stock', $1, $2, pg_catalog.now() + $5) RETURNING h.hold_id"
            }
            Statement::RecordKeyed => {
                "INSERT INTO integrity.hold_records AS h (table_name, kind, row_id, quantity, idempotency_key, expires_at) \
                 VALUES ($3, 'stock', $1, $2, $4, pg_catalog.now() + $5) \
                 ON CONFLICT (table_name, idempotency_key, line) WHERE idempotency_key IS NOT NULL \
                 DO NOTHING RETURNING h.hold_id"
            }
            Statement::Expire => {
                "SELECT integrity._expire_overdue($3, ARRAY[$1]) \
                  WHERE EXISTS (SELECT FROM integrity.hold_records h \
                                 WHERE h.table_name = $3 AND h.status = 'pending' \
                                   AND pg_catalog.jsonb_hash_extended(h.row_id, 0) = pg_catalog.jsonb_hash_extended($1, 0) \
                                   AND h.row_id = $1 AND h.expires_at <= pg_catalog.now())"
            }
            Statement::Keyed => {
                "SELECT (integrity._holds_of_key($3, $4, ARRAY[$1], ARRAY[$2]))[1] \
                  WHERE EXISTS (SELECT FROM integrity.hold_records h WHERE h.table_name = $3 AND h.idempotency_key = $4)"
            }
            Statement::Settle(Settlement::Commit) => {
                "UPDATE integrity.hold_records r \
                    SET status = 'committed', settled_at = pg_catalog.now(), committed_quantity = coalesce($2, r.quantity) \
                  WHERE r.hold_id = $1 AND r.status = 'pending' COLLATE \"C\" \
                    AND (r.expires_at IS NULL OR r.expires_at > pg_catalog.now()) \
                    AND ($2 IS NULL OR ($2 > 0 AND $2 <= r.quantity)) \
                RETURNING r.kind = 'stock', r.table_name, r.row_id, r.quantity, r.committed_quantity, \
                          NULLIF(r.quantity - r.committed_quantity, 0)"
            }
            Statement::Settle(Settlement::Release) => {
                "UPDATE integrity.hold_records r SET status = 'released', settled_at = pg_catalog.now() \
                  WHERE r.hold_id = $1 AND r.status = 'pending' COLLATE \"C\" \
                    AND (r.expires_at IS NULL OR r.expires_at > pg_catalog.now()) \
                RETURNING r.kind = 'stock', r.table_name, r.row_id, r.quantity, NULL::numeric, r.quantity"
            }
            Statement::Status => "SELECT integrity._settled_status($1, $2, $3)",
            Statement::GiveBackCredit => "SELECT integrity._give_back('credit', $4, $5, $2, $3)",
        }
    }

    fn arg_types(self) -> Vec<pg_sys::Oid> {
        match self {
            Statement::CheckArguments => vec![pg_sys::REGCLASSOID, pg_sys::INTERVALOID],
            Statement::Record | Statement::RecordKeyed | Statement::Expire | Statement::Keyed => {
                vec![pg_sys::JSONBOID, pg_sys::NUMERICOID, pg_sys::REGCLASSOID, pg_sys::TEXTOID, pg_sys::INTERVALOID]
            }
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
        let qty = (!qty_null).then_some(qty);
        // The SPI connection, once made, and its search_path level.
        let mut connection = None;
        let mut settled = hold_records::settle(args[0].value, settlement, qty);
        if let Settled::Statement = settled {
            connection = Some(connect());
            settled = if execute_plan(plan(Statement::Settle(settlement)), &mut values, &nulls, false) == 0 {
                Settled::NotPending
            } else {
                Settled::Done {
                    on_stock: result_value(0, 1).is_some_and(|stock| stock.value() != 0),
                    table: result_value(0, 2).expect("a hold has a table"),
                    row_id: result_value(0, 3).expect("a hold has a row"),
                    quantity: result_value(0, 4).expect("a hold has a quantity"),
                    consumed: result_value(0, 5),
                    given_back: result_value(0, 6),
                }
            };
        }
        match settled {
            Settled::Done { on_stock: true, table, row_id, consumed, given_back, .. } => {
                // The row key as text (`row_id #>> '{}'`), converted to the
                // key's type on the way.
                let empty = pg_sys::construct_empty_array(pg_sys::TEXTOID);
                let row = call2(raw::jsonb_extract_path_text, row_id, pg_sys::Datum::from(empty));
                let moves = [(consumed, Operation::Commit), (given_back, Operation::Release)];
                for (quantity, operation) in moves.into_iter().filter_map(|(q, o)| q.map(|q| (q, o))) {
                    let rel = open(table, operation.name());
                    if let refused @ Verdict::Refuse(_) = on_row_keyed_by_text(rel, row, (quantity, false), operation) {
                        // Still connected, if at all: the refusal's strings
                        // may live in this connection's memory, which
                        // spi_finish would free before the caller raises
                        // it; the abort disconnects.
                        return refused;
                    }
                }
            }
            Settled::Done { table, row_id, quantity, .. } => {
                // The DEBIT entry the caller inserts next takes the credit
                // over: it is counted once, by the ledger.
                if connection.is_none() {
                    connection = Some(connect());
                }
                values[1] = quantity;
                values[3] = table;
                values[4] = row_id;
                nulls = [b' ' as c_char; 5];
                execute_plan(plan(Statement::GiveBackCredit), &mut values, &nulls, false);
            }
            Settled::NotPending | Settled::Statement => {
                let level = connection.unwrap_or_else(|| connect());
                execute_plan(plan(Statement::Status), &mut values, &nulls, false);
                let settled = result_text(0, 1).expect("_settled_status returns a status or raises");
                disconnect(level);
                let settled = std::ffi::CString::new(settled).expect("a status has no NUL");
                return Verdict::Allow(pg_sys::Datum::from(pg_sys::cstring_to_text(settled.as_ptr())));
            }
        }
        if let Some(level) = connection {
            disconnect(level);
        }
        Verdict::Allow(pg_sys::Datum::from(pg_sys::cstring_to_text(status.as_ptr())))
    }
}
