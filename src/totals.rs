//! `integrity.maintain_total`: a column of a target table kept equal to the
//! sum (or count) of the source rows that reference each target row.
//!
//! Row triggers on the source do not write the target: `AFTER … FOR EACH ROW`
//! only adds the row's contribution (when the row satisfies the filter) to a
//! backend-local list of pending deltas, one entry per target row and total
//! (consecutive rows of the same parent share one).  The filter is compiled
//! once per backend and trigger, not per statement as a `WHEN` clause would
//! be.  The statement trigger `AFTER … FOR EACH STATEMENT`, which fires after
//! every row trigger of its statement, sorts the entries by key and applies
//! each with one
//!
//! ```sql
//! UPDATE target t SET total = t.total + $1 WHERE t.key1 = $2 AND …
//! ```
//!
//! so a statement that moves a thousand pieces of one parent writes the parent
//! once, and every writer locks parents in key order: two statements moving
//! pieces between the same parents in opposite directions queue instead of
//! deadlocking.  The UPDATE adds to the row version it locked, so concurrent
//! writers never lose each other's deltas (READ COMMITTED re-reads the row;
//! REPEATABLE READ and SERIALIZABLE raise 40001, as for any concurrent update).
//!
//! Where the target allows it, `direct_update` applies the same update without
//! SPI (found by the primary key, locked, written by the executor's
//! `ExecSimpleRelationUpdate`): the same locks, triggers, constraints and
//! errors, without a planned statement's executor start and end; the SPI
//! statement does it for the targets and rows it leaves (see there).
//!
//! The total belongs to the database: `total_guard`, `BEFORE UPDATE` on the
//! target, refuses a change of the column (or of the row's key) unless it is
//! exactly the write the extension is making (`sanctioned`): the statement
//! trigger's amount added to the row it updates through SPI, let through once,
//! or `recompute_totals` setting the row's actual total.  The direct update
//! does not fire the guard: no other BEFORE UPDATE trigger can change its row.
//! While a BEFORE UPDATE trigger sorts after the guard's, the same function
//! runs as `integrity_total_recheck`, `AFTER UPDATE … WHEN (total or key
//! changed)`, on the final row.
//!
//! Entries carry the subtransaction that made them, so a statement that fails
//! inside a savepoint takes its deltas with it; none may survive to COMMIT.

use core::cmp::Ordering;
use core::ffi::{c_char, c_void, CStr};
use std::cell::{Cell, RefCell};
use std::ffi::CString;

use pgrx::pg_sys;

use crate::backend_map::Map;
use crate::chain_encoding::push_value;
use pgrx::{pg_guard, PgSqlErrorCode};

use crate::direct_update::{self, MAX_KEYS};
use crate::error::{message_of_error, Error, Refusal};
use crate::fmgr::{
    execute_plan, free_plan, guarded_function, keep_plan, result_text, result_value, spi_connect, spi_finish,
};
use crate::sanctioned;
use crate::trigger::{datum_image_eq, qualified_name, trigger_entry, ColumnChange, Firing, Row, Verdict};

trigger_entry!(
    /// `AFTER INSERT OR UPDATE OR DELETE … FOR EACH ROW` on the source.
    /// Arguments `(target, target_column, value_column, filter, key_column…)`:
    /// `value_column` is empty for a count, `filter` (PostgreSQL's deparsed
    /// form of it) empty for none.
    integrity_total_source,
    pg_finfo_integrity_total_source,
    collect
);

trigger_entry!(
    /// `AFTER INSERT OR UPDATE OR DELETE … FOR EACH STATEMENT` on the source.
    /// Arguments `(target, target_column, target_key_column…)`.
    integrity_total_apply,
    pg_finfo_integrity_total_apply,
    apply
);

trigger_entry!(
    /// `BEFORE UPDATE … FOR EACH ROW` on the target.  Arguments
    /// `(total_column…, '', key_column…)`.
    integrity_total_guard,
    pg_finfo_integrity_total_guard,
    refuse_direct_write
);

trigger_entry!(
    /// `BEFORE INSERT … FOR EACH ROW` on the target: a new row starts at the
    /// total of the source rows that already reference it.  As `AFTER
    /// INSERT` (`integrity_total_start_recheck`, placed while a BEFORE INSERT
    /// trigger of the target fires after the guard's), it refuses a new row
    /// whose total is not that any more.
    integrity_total_start,
    pg_finfo_integrity_total_start,
    start_totals
);

/// A contribution to a total: exact for the integer types, numeric otherwise.
#[derive(Clone, Copy)]
enum Delta {
    Int(i128),
    /// A numeric datum in `TopTransactionContext`.
    Numeric(pg_sys::Datum),
}

/// One target row's pending change.  Plain data: key datums that are not
/// passed by value live in `TopTransactionContext`.
#[derive(Clone, Copy)]
struct Pending {
    target: pg_sys::Oid,
    column: i16,
    subxact: pg_sys::SubTransactionId,
    key: [pg_sys::Datum; MAX_KEYS],
    delta: Delta,
}

/// A new target row's starting total, by target, column and image of the
/// row's key (`start_key`); its value: the subtransaction that set it and the
/// total (a numeric in `TopTransactionContext`, or NULL).
type StartKey = (pg_sys::Oid, i16, Vec<u8>);

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    static CALLBACKS_REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// Prepared UPDATEs by target and column.
    static PLANS: RefCell<Map<(pg_sys::Oid, i16), ApplyPlan>> = RefCell::new(Map::default());
    /// The target and column a source trigger names, by trigger OID, with the
    /// invalidation generation they were looked up at.
    static TARGETS: RefCell<Map<pg_sys::Oid, (u64, pg_sys::Oid, i16)>> = RefCell::new(Map::default());
    /// Compiled filters by trigger OID.
    static FILTERS: RefCell<Map<pg_sys::Oid, Filter>> = RefCell::new(Map::default());
    /// Memory of filters compiled again: a statement still running may
    /// evaluate the old one, so it is freed when the transaction ends.
    static STALE_FILTERS: RefCell<Vec<pg_sys::MemoryContext>> = const { RefCell::new(Vec::new()) };
    /// The starting totals of new target rows, for their recheck.
    static STARTS: RefCell<Map<StartKey, (pg_sys::SubTransactionId, Option<pg_sys::Datum>)>> =
        RefCell::new(Map::default());
}

/// A filter compiled for one source trigger: the expression state, and the
/// slot and expression context it is evaluated with, all in `context` (a
/// child of `TopMemoryContext`; compiled again after a catalog change, and the
/// old one freed when its transaction ends).
#[derive(Clone, Copy)]
struct Filter {
    generation: u64,
    context: pg_sys::MemoryContext,
    state: *mut pg_sys::ExprState,
    econtext: *mut pg_sys::ExprContext,
    slot: *mut pg_sys::TupleTableSlot,
}

/// Per statement (in `fn_extra`) for the source's row trigger.
#[repr(C)]
struct SourcePlan {
    /// `InvalidOid` once the target is gone: there is nothing to maintain.
    target: pg_sys::Oid,
    column: i16,
    filter: Option<Filter>,
    /// 0 for a count.
    value_att: i16,
    numeric: bool,
    nkeys: usize,
    key_atts: [i16; MAX_KEYS],
    key_len: [i16; MAX_KEYS],
    key_byval: [bool; MAX_KEYS],
}

/// What the UPDATE of one target's total needs, kept for the backend.
struct ApplyPlan {
    generation: u64,
    plan: pg_sys::SPIPlanPtr,
    /// `SELECT 1 FROM target WHERE key = …`: whether a row the UPDATE did not
    /// change is there (then a BEFORE UPDATE trigger skipped it).
    exists: pg_sys::SPIPlanPtr,
    keys: Vec<KeyType>,
}

#[derive(Clone, Copy)]
struct KeyType {
    attnum: i16,
    typid: pg_sys::Oid,
    collation: pg_sys::Oid,
    /// The type's btree comparison function, in the type cache (which lives
    /// as long as the backend).
    cmp: *mut pg_sys::FmgrInfo,
}

/// The OID of the relation named `name` (as `regclass::text` writes it), or
/// `InvalidOid` when there is none: the target was dropped with its guard.
fn relation_named(name: &CStr) -> pg_sys::Oid {
    // SAFETY: textToQualifiedNameList parses a quoted, dotted name (raising
    // for a malformed one); the lookup takes no lock and returns InvalidOid
    // for a missing relation.
    unsafe {
        let names = pg_sys::textToQualifiedNameList(pg_sys::cstring_to_text(name.as_ptr()));
        let rv = pg_sys::makeRangeVarFromNameList(names);
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as i32,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            core::ptr::null_mut(),
        )
    }
}

/// The target relation and column named by arguments `name` and `column` of
/// the firing trigger: `InvalidOid` when the target is gone.  Looked up once
/// per backend and trigger (again after any catalog change), not per statement.
fn target_of(firing: &Firing, name: &CStr, column: &CStr) -> (pg_sys::Oid, i16) {
    let generation = crate::invalidation::generation();
    let tgoid = firing.trigger().tgoid;
    if let Some((target, attnum)) = TARGETS.with_borrow(|targets| {
        targets.get(&tgoid).filter(|(g, _, _)| *g == generation).map(|&(_, target, attnum)| (target, attnum))
    }) {
        return (target, attnum);
    }
    let target = relation_named(name);
    let attnum = if target == pg_sys::InvalidOid { 0 } else { attnum_in(target, column) };
    if target != pg_sys::InvalidOid && attnum <= 0 {
        missing_target_column(target, column);
    }
    TARGETS.with_borrow_mut(|targets| targets.insert(tgoid, (generation, target, attnum)));
    (target, attnum)
}

fn attnum_in(relid: pg_sys::Oid, name: &CStr) -> i16 {
    // SAFETY: a syscache lookup by name; InvalidAttrNumber when missing.
    unsafe { pg_sys::get_attnum(relid, name.as_ptr()) }
}

fn missing_target_column(target: pg_sys::Oid, column: &CStr) -> ! {
    Error::MissingTotalColumn { column: column.to_string_lossy().into_owned(), table: qualified_name(target) }.raise()
}

fn collect(firing: &Firing) -> Verdict {
    if !firing.is_row() || firing.is_before() {
        firing.misuse();
    }
    let plan = source_plan(firing);
    if plan.target == pg_sys::InvalidOid {
        return Verdict::Allow(pg_sys::Datum::from(0));
    }
    // The row inserted or deleted, or the old row of an UPDATE.
    let row = firing.trigtuple();
    match firing.event() {
        pg_sys::TRIGGER_EVENT_INSERT => add(firing, plan, row, false),
        pg_sys::TRIGGER_EVENT_DELETE => add(firing, plan, row, true),
        pg_sys::TRIGGER_EVENT_UPDATE => {
            let (old, new) = (row, firing.newtuple());
            // Unchanged key, value and filter columns: the row's contribution
            // stays where it is.  Otherwise the old row's goes, the new row's comes.
            let unchanged = plan.key_atts[..plan.nkeys].iter().all(|&att| firing.same_value(old, new, att))
                && (plan.value_att == 0 || firing.same_value(old, new, plan.value_att))
                && plan.filter.is_none();
            if !unchanged {
                add(firing, plan, old, true);
                add(firing, plan, new, false);
            }
        }
        _ => firing.misuse(),
    }
    Verdict::Allow(pg_sys::Datum::from(0))
}

fn source_plan<'f>(firing: &'f Firing) -> &'f SourcePlan {
    firing.statement_plan(|| {
        let args: Vec<&CStr> = firing.args().collect();
        if args.len() < 5 || args.len() > 4 + MAX_KEYS {
            firing.misuse();
        }
        let (target, column) = target_of(firing, args[0], args[1]);
        let attnum = |name: &CStr| firing.attnum(name).unwrap_or_else(|| firing.missing_column(name));
        let (value_att, numeric) = if args[2].is_empty() {
            (0, false)
        } else {
            let att = attnum(args[2]);
            match firing.attribute(att).atttypid {
                pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID => (att, false),
                pg_sys::NUMERICOID => (att, true),
                _ => firing.wrong_column_type(att, "smallint, integer, bigint or numeric"),
            }
        };
        let filter = (!args[3].is_empty()).then(|| compiled_filter(firing, args[3]));
        let mut plan = SourcePlan {
            target,
            column,
            filter,
            value_att,
            numeric,
            nkeys: args.len() - 4,
            key_atts: [0; MAX_KEYS],
            key_len: [0; MAX_KEYS],
            key_byval: [false; MAX_KEYS],
        };
        for (i, key) in args[4..].iter().enumerate() {
            let att = attnum(key);
            let attribute = firing.attribute(att);
            plan.key_atts[i] = att;
            plan.key_len[i] = attribute.attlen;
            plan.key_byval[i] = attribute.attbyval;
        }
        plan
    })
}

/// The trigger's filter, compiled once per backend (again after a catalog
/// change): parsed and analyzed against the source with `search_path =
/// pg_catalog`, as registration did, so that nothing on the session's path
/// can take the place of an operator or function it names.
fn compiled_filter(firing: &Firing, text: &CStr) -> Filter {
    let generation = crate::invalidation::generation();
    let tgoid = firing.trigger().tgoid;
    if let Some(filter) =
        FILTERS.with_borrow(|filters| filters.get(&tgoid).filter(|f| f.generation == generation).copied())
    {
        return filter;
    }
    // SAFETY: the context is a child of TopMemoryContext that only this cache
    // entry points into; the expression, slot and expression context are made
    // in it, the slot over a copy of the trigger's tuple descriptor (not
    // reference-counted, so it outlives transactions).  The setting is
    // restored before returning (an error restores it by abort, and the
    // context, not yet in the cache, is then leaked once).
    let filter = unsafe {
        let context = pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"pg_integrity total filter".as_ptr(),
            0,
            1024,
            8 * 1024 * 1024,
        );
        let previous = pg_sys::MemoryContextSwitchTo(context);
        let expr = match crate::fmgr::pinned_if(true, || analyze((*firing.relation()).rd_id, text)) {
            Ok(expr) => expr,
            Err(problem) => invalid_filter(text, &problem),
        };
        let state = pg_sys::ExecInitExpr(expr.cast(), core::ptr::null_mut());
        let econtext = pg_sys::CreateStandaloneExprContext();
        let slot = pg_sys::MakeSingleTupleTableSlot(
            pg_sys::CreateTupleDescCopy(firing.tupdesc()),
            &raw const pg_sys::TTSOpsHeapTuple,
        );
        pg_sys::MemoryContextSwitchTo(previous);
        Filter { generation, context, state, econtext, slot }
    };
    register_callbacks();
    if let Some(stale) = FILTERS.with_borrow_mut(|filters| filters.insert(tgoid, filter)) {
        STALE_FILTERS.with_borrow_mut(|stale_filters| stale_filters.push(stale.context));
    }
    filter
}

/// Whether `tuple` satisfies the filter (NULL does not).
fn passes(filter: &Filter, tuple: pg_sys::HeapTuple) -> bool {
    // SAFETY: the slot has the source's row type and is evaluated in the
    // expression context's per-tuple memory, reset after each row; the tuple
    // is not freed by the slot (shouldFree false) and is cleared from it
    // before returning.
    unsafe {
        pg_sys::ExecStoreHeapTuple(tuple, filter.slot, false);
        (*filter.econtext).ecxt_scantuple = filter.slot;
        let per_tuple = (*filter.econtext).ecxt_per_tuple_memory;
        let previous = pg_sys::MemoryContextSwitchTo(per_tuple);
        let mut is_null = false;
        let evaluate = (*filter.state).evalfunc.expect("a compiled expression has its evaluation function");
        let result = evaluate(filter.state, filter.econtext, &mut is_null);
        pg_sys::MemoryContextSwitchTo(previous);
        pg_sys::MemoryContextReset(per_tuple);
        let clear = (*(*filter.slot).tts_ops).clear.expect("a slot type clears");
        clear(filter.slot);
        !is_null && result.value() != 0
    }
}

/// Adds the contribution of `tuple` (taken back when `negate`) to the pending
/// entry of its target row.
fn add(firing: &Firing, plan: &SourcePlan, tuple: Row, negate: bool) {
    if plan.filter.as_ref().is_some_and(|filter| !passes(filter, tuple.as_ptr())) {
        return;
    }
    let mut key = [pg_sys::Datum::from(0); MAX_KEYS];
    for (slot, &att) in key.iter_mut().zip(&plan.key_atts[..plan.nkeys]) {
        let (value, is_null) = firing.value(tuple, att);
        if is_null {
            // A NULL key references no target row.
            return;
        }
        *slot = value;
    }
    let delta = if plan.value_att == 0 {
        Delta::Int(1)
    } else {
        let (value, is_null) = firing.value(tuple, plan.value_att);
        if is_null {
            // SUM leaves NULLs out.
            return;
        }
        if plan.numeric {
            Delta::Numeric(value)
        } else {
            Delta::Int(match firing.attribute(plan.value_att).atttypid {
                pg_sys::INT2OID => i128::from(value.value() as i16),
                pg_sys::INT4OID => i128::from(value.value() as i32),
                _ => i128::from(value.value() as i64),
            })
        }
    };
    let delta = if negate { negated(delta) } else { delta };
    register_callbacks();
    // SAFETY: plain function call; the subtransaction id identifies what an
    // abort must take back.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let nkeys = plan.nkeys;
    let merged = PENDING.with_borrow_mut(|pending| match pending.last_mut() {
        Some(last)
            if last.target == plan.target
                && last.column == plan.column
                && last.subxact == subxact
                && (0..nkeys).all(|i| same_key(plan, i, last.key[i], key[i])) =>
        {
            last.delta = sum(last.delta, delta);
            true
        }
        _ => false,
    });
    if !merged {
        for (i, slot) in key.iter_mut().enumerate().take(nkeys) {
            *slot = copy_datum(*slot, plan.key_len[i], plan.key_byval[i]);
        }
        let delta = match delta {
            Delta::Numeric(value) => Delta::Numeric(numeric_in_transaction(value)),
            int => int,
        };
        PENDING.with_borrow_mut(|pending| {
            pending.push(Pending { target: plan.target, column: plan.column, subxact, key, delta })
        });
    }
}

fn same_key(plan: &SourcePlan, i: usize, a: pg_sys::Datum, b: pg_sys::Datum) -> bool {
    if plan.key_byval[i] {
        return a == b;
    }
    // SAFETY: both datums are values of the key column's type, of the length
    // its typlen (or varlena header) gives.
    unsafe { datum_image_eq(a, b, false, i32::from(plan.key_len[i])) }
}

/// A copy of `value` in `TopTransactionContext`.
fn copy_datum(value: pg_sys::Datum, typlen: i16, byval: bool) -> pg_sys::Datum {
    if byval {
        return value;
    }
    // SAFETY: the copy is made in TopTransactionContext, which outlives every
    // pending entry (they end with the transaction); the source is a datum of
    // the given typlen.
    unsafe {
        let previous = pg_sys::MemoryContextSwitchTo(pg_sys::TopTransactionContext);
        let copy = match typlen {
            -1 => pg_sys::Datum::from(pg_sys::pg_detoast_datum_copy(value.cast_mut_ptr())),
            -2 => pg_sys::Datum::from(pg_sys::pstrdup(value.cast_mut_ptr())),
            len => {
                let copy = pg_sys::palloc(len as usize);
                copy.cast::<u8>().copy_from_nonoverlapping(value.cast_mut_ptr::<u8>(), len as usize);
                pg_sys::Datum::from(copy)
            }
        };
        pg_sys::MemoryContextSwitchTo(previous);
        copy
    }
}

fn numeric_in_transaction(value: pg_sys::Datum) -> pg_sys::Datum {
    copy_datum(value, -1, false)
}

fn negated(delta: Delta) -> Delta {
    match delta {
        Delta::Int(n) => Delta::Int(-n),
        // SAFETY: numeric_uminus of a numeric datum; the result is in the
        // current (per-tuple) context until copied.
        Delta::Numeric(value) => Delta::Numeric(unsafe {
            pgrx::fcinfo::direct_function_call_as_datum(pg_sys::numeric_uminus, &[Some(value)])
                .expect("numeric_uminus of a number is not NULL")
        }),
    }
}

/// `a + b`; a numeric sum is made in `TopTransactionContext`.
fn sum(a: Delta, b: Delta) -> Delta {
    match (a, b) {
        (Delta::Int(a), Delta::Int(b)) => Delta::Int(a + b),
        (Delta::Numeric(a), Delta::Numeric(b)) => {
            // SAFETY: numeric_add of two numeric datums, allocated where the
            // pending entries live.
            Delta::Numeric(unsafe {
                let previous = pg_sys::MemoryContextSwitchTo(pg_sys::TopTransactionContext);
                let total = pgrx::fcinfo::direct_function_call_as_datum(pg_sys::numeric_add, &[Some(a), Some(b)])
                    .expect("numeric_add of two numbers is not NULL");
                pg_sys::MemoryContextSwitchTo(previous);
                total
            })
        }
        _ => unreachable!("a total's deltas all have its value column's type"),
    }
}

fn register_callbacks() {
    if !CALLBACKS_REGISTERED.replace(true) {
        // SAFETY: the callbacks only shrink a thread-local list (or raise an
        // error before commit); registered once, they stay for the backend.
        unsafe {
            pg_sys::RegisterSubXactCallback(Some(subxact_event), core::ptr::null_mut());
            pg_sys::RegisterXactCallback(Some(xact_event), core::ptr::null_mut());
        }
    }
}

unsafe extern "C-unwind" fn subxact_event(
    event: pg_sys::SubXactEvent::Type,
    subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        PENDING.with_borrow_mut(|pending| pending.retain(|entry| entry.subxact < subid));
        STARTS.with_borrow_mut(|starts| starts.retain(|_, (subxact, _)| *subxact < subid));
    }
}

/// Raises at PRE_COMMIT if deltas were left: under `#[pg_guard]`, so that
/// the error reaches PostgreSQL as an ERROR instead of unwinding into the
/// C code that calls the callbacks.
#[pg_guard]
unsafe extern "C-unwind" fn xact_event(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_PRE_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE => {
            let left = PENDING.with_borrow(Vec::len);
            if left > 0 {
                PENDING.with_borrow_mut(Vec::clear);
                Error::TotalsNotApplied { left }.raise();
            }
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            PENDING.with_borrow_mut(Vec::clear);
            STARTS.with_borrow_mut(Map::clear);
            free_stale_filters();
        }
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT => {
            STARTS.with_borrow_mut(Map::clear);
            free_stale_filters();
        }
        _ => {}
    }
}

/// Between transactions no statement evaluates a filter.
fn free_stale_filters() {
    for context in STALE_FILTERS.with_borrow_mut(core::mem::take) {
        // SAFETY: the cache no longer points into the context, and no
        // statement is running.
        unsafe { pg_sys::MemoryContextDelete(context) };
    }
}

/// Per statement (in `fn_extra`) for the statement trigger.
#[repr(C)]
struct TargetRef {
    target: pg_sys::Oid,
    column: i16,
}

/// # Safety
/// The callers' frames hold nothing that needs dropping: the updates raise
/// their errors as they are (see `execute_plan`).
unsafe fn apply(firing: &Firing) -> Verdict {
    if firing.is_row() || firing.is_before() {
        firing.misuse();
    }
    let target = firing.statement_plan(|| {
        let args: Vec<&CStr> = firing.args().collect();
        if args.len() < 3 || args.len() > 2 + MAX_KEYS {
            firing.misuse();
        }
        let (target, column) = target_of(firing, args[0], args[1]);
        TargetRef { target, column }
    });
    let (target, column) = (target.target, target.column);
    if target == pg_sys::InvalidOid {
        return Verdict::Allow(pg_sys::Datum::from(0));
    }
    let mut mine: Vec<Pending> = PENDING.with_borrow_mut(|pending| {
        let (mine, rest) = pending.drain(..).partition(|e| e.target == target && e.column == column);
        *pending = rest;
        mine
    });
    if mine.is_empty() {
        return Verdict::Allow(pg_sys::Datum::from(0));
    }
    let (plan, exists, keys) = apply_plan(firing, target, column);
    let compare = |a: &Pending, b: &Pending| compare_keys(&keys, &a.key, &b.key);
    mine.sort_by(compare);
    let mut merged: Vec<Pending> = Vec::with_capacity(mine.len());
    for entry in mine {
        match merged.last_mut() {
            Some(last) if compare(last, &entry) == Ordering::Equal => last.delta = sum(last.delta, entry.delta),
            _ => merged.push(entry),
        }
    }
    let nkeys = keys.len();
    // The updates may fail (a CHECK constraint of the target, a lock
    // timeout): their errors reach the client untouched, so nothing that
    // needs dropping may be on this frame while they run.  The entries move to
    // memory of the current context.
    let count = merged.len();
    // SAFETY: Pending is plain data; the array holds count entries, aligned
    // for Pending (palloc aligns to 8 bytes only, an i128 needs 16).
    let entries = unsafe {
        let memory = pg_sys::palloc(count * size_of::<Pending>() + align_of::<Pending>()) as *mut u8;
        let entries = memory.add(memory.align_offset(align_of::<Pending>())) as *mut Pending;
        entries.copy_from_nonoverlapping(merged.as_ptr(), count);
        entries
    };
    drop(merged);
    let mut write = sanctioned::TotalWrite {
        target,
        column,
        nkeys,
        key_atts: [0; MAX_KEYS],
        key: [pg_sys::Datum::from(0); MAX_KEYS],
        cmp: [core::ptr::null_mut(); MAX_KEYS],
        collation: [pg_sys::InvalidOid; MAX_KEYS],
        amount: pg_sys::Datum::from(0),
        passed: [false; 2],
    };
    for (i, key) in keys.iter().enumerate() {
        (write.key_atts[i], write.cmp[i], write.collation[i]) = (key.attnum, key.cmp, key.collation);
    }
    let key_atts = write.key_atts;
    // The entries hold values of the sources' key columns, which
    // registration gave the target's key types.
    let mut key_types = [pg_sys::InvalidOid; MAX_KEYS];
    for (typid, key) in key_types.iter_mut().zip(&keys) {
        *typid = key.typid;
    }
    drop(keys);
    let mut skipped = None;
    // SAFETY: in the statement trigger's transaction and memory context,
    // which outlive the loop; nothing on this frame needs dropping (above).
    let direct = unsafe {
        direct_update::open(
            target,
            column,
            &key_atts[..nkeys],
            &key_types[..nkeys],
            None,
            direct_update::Sanctioned::Total,
        )
    };
    let mut connected = false;
    let mut values = [pg_sys::Datum::from(0); MAX_KEYS + 1];
    let nulls = [b' ' as c_char; MAX_KEYS + 1];
    for i in 0..count {
        // SAFETY: i < count, the array's length.
        let entry = unsafe { *entries.add(i) };
        // An integer delta within integer's range is added as a bigint: the
        // statement's numeric addition and cast give the same (bigint
        // arithmetic cannot overflow before the cast does), integer
        // arithmetic gives it faster.
        let (amount_type, amount) = match entry.delta {
            Delta::Int(0) => continue,
            Delta::Int(n) if i32::try_from(n).is_ok() => (pg_sys::INT8OID, pg_sys::Datum::from(n as i64)),
            delta => match numeric_delta(delta) {
                Some(amount) => (pg_sys::NUMERICOID, amount),
                None => continue,
            },
        };
        if let Some(direct) = &direct {
            // SAFETY: the keys have the key columns' types, the amount the
            // type given; nothing here needs dropping if the update raises.
            match unsafe { direct_update::add(direct, &entry.key[..nkeys], amount_type, &[(1, amount)]) } {
                direct_update::Outcome::Skipped => {
                    skipped = Some(entry);
                    break;
                }
                // No row: the statement decides, as without the direct path
                // (a row deleted and inserted again under the same key while
                // this one waited is found by it).
                direct_update::Outcome::Fallback | direct_update::Outcome::Missing => {}
                _ => continue,
            }
        }
        if !connected {
            spi_connect();
            connected = true;
        }
        let Some(delta) = numeric_delta(entry.delta) else { continue };
        values[0] = delta;
        values[1..=nkeys].copy_from_slice(&entry.key[..nkeys]);
        // The guard (and its recheck) let exactly this change of this row through.
        write.key = entry.key;
        write.amount = delta;
        sanctioned::begin_total_write(write);
        // SAFETY: the plans take a numeric and the key columns' types, and
        // the key columns' types; no Rust value on this frame (see above) or
        // the callers' (this function's contract) needs dropping.  A target
        // row that is not there has nothing to keep (the existence check
        // reads past this statement's own deletes, of a cascade's parent).
        let updated = unsafe { execute_plan(plan, &mut values[..=nkeys], &nulls[..=nkeys], false) };
        sanctioned::end_total_write();
        // SAFETY: as for the update.
        if updated == 0 && unsafe { execute_plan(exists, &mut values[1..=nkeys], &nulls[1..=nkeys], false) } == 1 {
            skipped = Some(entry);
            break;
        }
    }
    if let Some(direct) = direct {
        // SAFETY: opened above, closed once.
        unsafe { direct_update::close(direct) };
    }
    if connected {
        spi_finish();
    }
    match skipped {
        None => Verdict::Allow(pg_sys::Datum::from(0)),
        Some(entry) => firing.refuse(skipped_update(firing, target, &entry)),
    }
}

/// A BEFORE UPDATE trigger of the target returned NULL for a total's update.
fn skipped_update(firing: &Firing, target: pg_sys::Oid, entry: &Pending) -> Refusal {
    let (_, _, keys) = apply_plan(firing, target, entry.column);
    let args: Vec<String> = firing.args().map(|a| a.to_string_lossy().into_owned()).collect();
    let values: Vec<String> = keys
        .iter()
        .zip(entry.key)
        .map(|(key, value)| {
            let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
            // SAFETY: the datum is a value of the key's type.
            unsafe {
                pg_sys::getTypeOutputInfo(key.typid, &mut output, &mut varlena);
                CStr::from_ptr(pg_sys::OidOutputFunctionCall(output, value)).to_string_lossy().into_owned()
            }
        })
        .collect();
    let table = qualified_name(target);
    Refusal {
        code: PgSqlErrorCode::ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION,
        message: format!("a trigger on table {table} skipped the update of maintained total \"{}\"", args[1]),
        detail: format!(
            "Key ({})=({}) in table {table}: the change made by this statement on {} was not applied.",
            args[2..].join(", "),
            values.join(", "),
            firing.qualified_table_name()
        ),
        hint: format!("Check the BEFORE UPDATE triggers of {table} that can return NULL."),
        column: None,
    }
}

/// The delta as a numeric datum, `None` when it is zero.
fn numeric_delta(delta: Delta) -> Option<pg_sys::Datum> {
    match delta {
        Delta::Int(0) => None,
        Delta::Int(n) => match i64::try_from(n) {
            // SAFETY: int64_to_numeric makes a numeric of any int8.
            Ok(n) => Some(pg_sys::Datum::from(unsafe { pg_sys::int64_to_numeric(n) })),
            // Beyond int8 only when a statement adds up more than 9.2e18: as text.
            Err(_) => {
                let text = CString::new(n.to_string()).expect("digits");
                // SAFETY: numeric_in parses the decimal digits of an integer.
                Some(unsafe {
                    pgrx::fcinfo::direct_function_call_as_datum(
                        pg_sys::numeric_in,
                        &[
                            Some(pg_sys::Datum::from(text.as_ptr())),
                            Some(pg_sys::Datum::from(pg_sys::InvalidOid)),
                            Some(pg_sys::Datum::from(-1i32)),
                        ],
                    )
                    .expect("numeric_in of digits is not NULL")
                })
            }
        },
        Delta::Numeric(value) => {
            (crate::quantities::sign(pg_sys::NUMERICOID, value) != Ordering::Equal).then_some(value)
        }
    }
}

fn compare_keys(keys: &[KeyType], a: &[pg_sys::Datum; MAX_KEYS], b: &[pg_sys::Datum; MAX_KEYS]) -> Ordering {
    for (i, key) in keys.iter().enumerate() {
        // SAFETY: the comparison function of the key's type, on two values of
        // that type.
        let c = unsafe { pg_sys::FunctionCall2Coll(key.cmp, key.collation, a[i], b[i]) }.value() as i32;
        if c != 0 {
            return c.cmp(&0);
        }
    }
    Ordering::Equal
}

/// The kept UPDATE of `target`'s `column` and the key types, built again when
/// the catalogs changed.
fn apply_plan(
    firing: &Firing,
    target: pg_sys::Oid,
    column: i16,
) -> (pg_sys::SPIPlanPtr, pg_sys::SPIPlanPtr, Vec<KeyType>) {
    let generation = crate::invalidation::generation();
    if let Some(found) = PLANS.with_borrow(|plans| {
        plans.get(&(target, column)).filter(|p| p.generation == generation).map(|p| (p.plan, p.exists, p.keys.clone()))
    }) {
        return found;
    }
    let args: Vec<&CStr> = firing.args().collect();
    let key_names = &args[2..];
    let mut keys = Vec::with_capacity(key_names.len());
    for name in key_names {
        let att = attnum_in(target, name);
        if att <= 0 {
            missing_target_column(target, name);
        }
        let (mut typid, mut typmod, mut collation) = (pg_sys::InvalidOid, 0, pg_sys::InvalidOid);
        // SAFETY: syscache lookups of an existing column; the type cache entry
        // (and its comparison function) lives as long as the backend.
        let cmp = unsafe {
            pg_sys::get_atttypetypmodcoll(target, att, &mut typid, &mut typmod, &mut collation);
            let entry = pg_sys::lookup_type_cache(typid, pg_sys::TYPECACHE_CMP_PROC_FINFO as i32);
            if (*entry).cmp_proc_finfo.fn_oid == pg_sys::InvalidOid {
                Error::NoBtreeOrdering { typid, table: qualified_name(target) }.raise();
            }
            &mut (*entry).cmp_proc_finfo as *mut pg_sys::FmgrInfo
        };
        keys.push(KeyType { attnum: att, typid, collation, cmp });
    }
    let quote = |name: &CStr| {
        // SAFETY: quote_identifier returns its argument or a palloc'd copy.
        unsafe { CStr::from_ptr(pg_sys::quote_identifier(name.as_ptr())) }.to_string_lossy().into_owned()
    };
    let total = quote(args[1]);
    let matches: Vec<String> =
        key_names.iter().enumerate().map(|(i, k)| format!("t.{} = ${}", quote(k), i + 2)).collect();
    let sql =
        format!("UPDATE {} t SET {total} = t.{total} + $1 WHERE {}", qualified_name(target), matches.join(" AND "));
    let mut arg_types: Vec<pg_sys::Oid> =
        core::iter::once(pg_sys::NUMERICOID).chain(keys.iter().map(|k| k.typid)).collect();
    let exists_sql = format!(
        "SELECT 1 FROM {} t WHERE {}",
        qualified_name(target),
        key_names
            .iter()
            .enumerate()
            .map(|(i, k)| format!("t.{} = ${}", quote(k), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    );
    spi_connect();
    let plan = keep_plan(&sql, &mut arg_types, || format!("statement: {sql}"));
    let exists = keep_plan(&exists_sql, &mut arg_types[1..], || format!("statement: {exists_sql}"));
    spi_finish();
    PLANS.with_borrow_mut(|plans| {
        if let Some(stale) = plans.insert((target, column), ApplyPlan { generation, plan, exists, keys: keys.clone() })
        {
            free_plan(stale.plan);
            free_plan(stale.exists);
        }
    });
    (plan, exists, keys)
}

/// The guard, `BEFORE UPDATE`, and its recheck, `AFTER UPDATE` (when a
/// trigger that fires after the guard's could change the row it saw): a
/// changed total must be the extension's own write, the other columns of the
/// row's key must not change.
fn refuse_direct_write(firing: &Firing) -> Verdict {
    if firing.event() != pg_sys::TRIGGER_EVENT_UPDATE || !firing.is_row() {
        firing.misuse();
    }
    let (old, new) = (firing.trigtuple(), firing.newtuple());
    let mut is_key = false;
    for name in firing.args() {
        if name.is_empty() {
            is_key = true;
            continue;
        }
        let att = firing.attnum(name).unwrap_or_else(|| firing.missing_column(name));
        if !firing.same_value(old, new, att) && (is_key || !sanctioned_change(firing, att, old, new)) {
            return firing.refuse(refusal(firing, att, is_key));
        }
    }
    if firing.is_before() {
        Verdict::Allow(new.datum())
    } else {
        Verdict::Allow(pg_sys::Datum::from(0))
    }
}

/// Whether the change of total `att` from `old` to `new` is exactly a write
/// the extension is making: the statement trigger's amount added to this row
/// (let through once by the guard, once by the recheck), or
/// `recompute_totals` setting it to the row's actual total.
fn sanctioned_change(firing: &Firing, att: i16, old: Row, new: Row) -> bool {
    // SAFETY: values of the total's column, whose type is an integer type or
    // numeric (checked at registration).
    let as_numeric = |typid, value| unsafe { direct_update::to_numeric(typid, value) };
    // SAFETY: the firing relation's descriptor outlives the firing.
    let relid = unsafe { (*firing.relation()).rd_id };
    let ((old_value, old_null), (new_value, new_null)) = (firing.value(old, att), firing.value(new, att));
    if new_null {
        return false;
    }
    let typid = firing.attribute(att).atttypid;
    let new_total = as_numeric(typid, new_value);
    let pass = usize::from(!firing.is_before());
    let written = !old_null
        && sanctioned::take_total_write(relid, att, pass, |write| {
            write.key_atts[..write.nkeys].iter().enumerate().all(|(i, &key_att)| {
                let (value, is_null) = firing.value(old, key_att);
                // SAFETY: the comparison function of the key's type, on two
                // values of that type.
                !is_null
                    && unsafe { pg_sys::FunctionCall2Coll(write.cmp[i], write.collation[i], value, write.key[i]) }
                        .value() as i32
                        == 0
            }) && numeric_equal(numeric_add(as_numeric(typid, old_value), write.amount), new_total)
        });
    written
        || (sanctioned::recomputes(relid)
            && start_plan(firing).columns().iter().any(|column| {
                column.attnum == att && {
                    let (actual, is_null) = actual_total(firing, column, old);
                    !is_null && numeric_equal(as_numeric(typid, actual), new_total)
                }
            }))
}

fn numeric_add(a: pg_sys::Datum, b: pg_sys::Datum) -> pg_sys::Datum {
    // SAFETY: numeric_add of two numeric datums.
    unsafe {
        pgrx::fcinfo::direct_function_call_as_datum(pg_sys::numeric_add, &[Some(a), Some(b)])
            .expect("numeric_add of two numbers is not NULL")
    }
}

/// Whether two numerics are equal, as numeric's `=` says (1.0 = 1.00).
fn numeric_equal(a: pg_sys::Datum, b: pg_sys::Datum) -> bool {
    crate::quantities::compare(pg_sys::NUMERICOID, a, b) == Ordering::Equal
}

fn refusal(firing: &Firing, attnum: i16, is_key: bool) -> Refusal {
    let ColumnChange { column, table, key, qualified, old, new } = firing.column_change(attnum);
    let (message, detail, hint) = if is_key {
        (
            format!("key column \"{column}\" of table \"{table}\" holds maintained totals"),
            format!("{key} in table {qualified}: {column} cannot change from {old} to {new}."),
            "The source rows reference the row by its key; insert a new row and move the source rows to it."
                .to_string(),
        )
    } else {
        (
            format!("column \"{column}\" of table \"{table}\" is a maintained total"),
            format!(
                "{key} in table {qualified}: {column} is {old}, kept equal to its source rows, and cannot be set to {new}."
            ),
            format!(
                "Change the source rows instead; integrity.recompute_totals('{}') corrects a total that drifted.",
                qualified.replace('\'', "''")
            ),
        )
    };
    Refusal { code: PgSqlErrorCode::ERRCODE_RESTRICT_VIOLATION, message, detail, hint, column: Some(attnum) }
}

/// One maintained column of a new target row: the query that computes its
/// total from the row's key (`integrity._total_start_sql`), in `fn_mcxt`.
#[derive(Clone, Copy)]
struct StartColumn {
    attnum: i16,
    sql: *const c_char,
    nkeys: usize,
    key_atts: [i16; MAX_KEYS],
}

/// Per statement (in `fn_extra`): the maintained columns of the target.
#[repr(C)]
struct StartPlan {
    columns: *const StartColumn,
    ncolumns: usize,
    /// The target has `integrity_total_start_recheck`, which reads the
    /// starting totals `start_totals` keeps for it.
    rechecked: bool,
}

fn start_totals(firing: &Firing) -> Verdict {
    if firing.event() != pg_sys::TRIGGER_EVENT_INSERT || !firing.is_row() {
        firing.misuse();
    }
    let plan = start_plan(firing);
    let columns = plan.columns();
    let row = firing.trigtuple();
    if !firing.is_before() {
        return recheck_start(firing, columns, row);
    }
    let mut attnums = Vec::with_capacity(columns.len());
    let mut values = Vec::with_capacity(columns.len());
    let mut nulls = Vec::with_capacity(columns.len());
    for column in columns {
        let (value, is_null) = actual_total(firing, column, row);
        if plan.rechecked {
            stash_start(firing, column, row, (value, is_null));
        }
        attnums.push(i32::from(column.attnum));
        values.push(value);
        nulls.push(is_null);
    }
    // SAFETY: the firing's new row and its relation's descriptor; one value
    // per listed attribute, of its column's type.
    let started = unsafe {
        pg_sys::heap_modify_tuple_by_cols(
            row.as_ptr(),
            firing.tupdesc(),
            attnums.len() as i32,
            attnums.as_mut_ptr(),
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
        )
    };
    Verdict::Allow(pg_sys::Datum::from(started))
}

/// The recheck of a new row, as inserted: each maintained column holds the
/// total `start_totals` set for the row's key.  Where a later trigger changed
/// the key too, the total must be the actual total of the new key, as it is
/// now (the writes that the statement made to its sources since included).
fn recheck_start(firing: &Firing, columns: &[StartColumn], row: Row) -> Verdict {
    for column in columns {
        let typid = firing.attribute(column.attnum).atttypid;
        let stored = firing.value(row, column.attnum);
        // SAFETY: a value of the column's type, an integer type or numeric.
        let stored_numeric = (!stored.1).then(|| unsafe { direct_update::to_numeric(typid, stored.0) });
        let start = match STARTS.with_borrow_mut(|starts| starts.remove(&start_key(firing, column, row))) {
            Some((_, start)) => start,
            None => {
                let (actual, is_null) = actual_total(firing, column, row);
                // SAFETY: as above.
                (!is_null).then(|| unsafe { direct_update::to_numeric(typid, actual) })
            }
        };
        let same = match (start, stored_numeric) {
            (Some(a), Some(b)) => numeric_equal(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        if !same {
            // SAFETY: a numeric.
            let start_text =
                start.map_or_else(|| "NULL".to_string(), |start| unsafe { direct_update::numeric_text(start) });
            return firing.refuse(start_refusal(firing, column.attnum, row, &start_text));
        }
    }
    Verdict::Allow(pg_sys::Datum::from(0))
}

/// Keeps the starting total of `column` of the new row for its recheck.
fn stash_start(firing: &Firing, column: &StartColumn, row: Row, (value, is_null): (pg_sys::Datum, bool)) {
    register_callbacks();
    let typid = firing.attribute(column.attnum).atttypid;
    // SAFETY: a value of the column's type, an integer type or numeric,
    // copied (as a numeric) into the transaction's memory, which outlives
    // the entry (cleared when the transaction ends).
    let start = (!is_null).then(|| unsafe {
        let previous = pg_sys::MemoryContextSwitchTo(pg_sys::TopTransactionContext);
        let numeric = direct_update::to_numeric(typid, value).cast_mut_ptr();
        let start = pg_sys::Datum::from(pg_sys::pg_detoast_datum_copy(numeric));
        pg_sys::MemoryContextSwitchTo(previous);
        start
    });
    // SAFETY: a plain read of the backend's transaction state.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    STARTS.with_borrow_mut(|starts| starts.insert(start_key(firing, column, row), (subxact, start)));
}

/// The stash key of `column` of `row`: the target, the column, and the
/// binary form of the row's key values (`push_value`).
fn start_key(firing: &Firing, column: &StartColumn, row: Row) -> StartKey {
    let mut image = Vec::new();
    for &att in &column.key_atts[..column.nkeys] {
        let (value, is_null) = firing.value(row, att);
        // SAFETY: a value of the attribute's type.
        unsafe { push_value(&mut image, (!is_null).then_some(value), firing.attribute(att)) };
    }
    // SAFETY: the firing relation's descriptor outlives the firing.
    (unsafe { (*firing.relation()).rd_id }, column.attnum, image)
}

/// Whether the firing relation has a trigger named `name`.
fn has_trigger(firing: &Firing, name: &CStr) -> bool {
    // SAFETY: the firing relation's trigger descriptor (it has one: a
    // trigger is firing), `numtriggers` entries.
    unsafe {
        let triggers = &*(*firing.relation()).trigdesc;
        (0..triggers.numtriggers as usize).any(|i| CStr::from_ptr((*triggers.triggers.add(i)).tgname) == name)
    }
}

/// Why a new row's total set by a trigger after the guard's is refused.
fn start_refusal(firing: &Firing, attnum: i16, row: Row, start: &str) -> Refusal {
    let column = pgrx::name_data_to_str(&firing.attribute(attnum).attname);
    Refusal {
        code: PgSqlErrorCode::ERRCODE_RESTRICT_VIOLATION,
        message: format!("column \"{column}\" of table \"{}\" is a maintained total", firing.table_name()),
        detail: format!(
            "{} in table {}: a new row starts {column} at the total of its source rows, {start}, not {}.",
            firing.row_key(row),
            firing.qualified_table_name(),
            firing.value_text(row, attnum)
        ),
        hint: "A BEFORE INSERT trigger that fires after integrity_total_start (triggers fire in name order) \
               changed it; leave the column to the guard."
            .into(),
        column: Some(attnum),
    }
}

/// The actual total of `column` for the row with the key of `row`, of the
/// column's type (copied out of SPI's memory).
fn actual_total(firing: &Firing, column: &StartColumn, row: Row) -> (pg_sys::Datum, bool) {
    let mut types = [pg_sys::InvalidOid; MAX_KEYS];
    let mut keys = [pg_sys::Datum::from(0); MAX_KEYS];
    let mut key_nulls = [b' ' as c_char; MAX_KEYS];
    for i in 0..column.nkeys {
        let (value, is_null) = firing.value(row, column.key_atts[i]);
        types[i] = firing.attribute(column.key_atts[i]).atttypid;
        keys[i] = value;
        key_nulls[i] = if is_null { b'n' as c_char } else { b' ' as c_char };
    }
    let attribute = firing.attribute(column.attnum);
    spi_connect();
    // SAFETY: the query is the extension's own (NUL-terminated, in fn_mcxt),
    // with one parameter per key column of the types given; SPI_processed is
    // read right after the call that set it.
    let (rc, processed) = unsafe {
        let rc = pg_sys::SPI_execute_with_args(
            column.sql,
            column.nkeys as i32,
            types.as_mut_ptr(),
            keys.as_mut_ptr(),
            key_nulls.as_ptr(),
            true,
            1,
        );
        (rc, pg_sys::SPI_processed)
    };
    if rc != pg_sys::SPI_OK_SELECT as i32 || processed != 1 {
        Error::Spi { what: "computing the starting total".into(), rc }.raise();
    }
    let total = match result_value(0, 1) {
        Some(value) => {
            // SAFETY: a value of the column's type, copied out of SPI's
            // memory before SPI_finish.
            let value = unsafe { pg_sys::SPI_datumTransfer(value, attribute.attbyval, attribute.attlen.into()) };
            (value, false)
        }
        None => (pg_sys::Datum::from(0), true),
    };
    spi_finish();
    total
}

impl StartPlan {
    fn columns(&self) -> &[StartColumn] {
        // SAFETY: the array holds ncolumns entries, in fn_mcxt for the statement.
        unsafe { core::slice::from_raw_parts(self.columns, self.ncolumns) }
    }
}

fn start_plan<'f>(firing: &'f Firing) -> &'f StartPlan {
    firing.statement_plan(|| {
        // SAFETY: the firing relation's descriptor outlives the firing.
        let relid = pg_sys::Datum::from(unsafe { (*firing.relation()).rd_id });
        spi_connect();
        let rows = crate::fmgr::select(
            c"SELECT s.attnum, s.sql, s.key_attnums FROM integrity._total_start_sql($1) s",
            &[(pg_sys::REGCLASSOID, relid)],
            0,
            "looking up the totals",
        ) as usize;
        let mut columns = Vec::with_capacity(rows);
        for i in 0..rows {
            let text = |n| {
                result_text(i as u64, n).unwrap_or_else(|| {
                    Error::UnexpectedResult { what: "looking up the totals", result: "NULL".into() }.raise()
                })
            };
            let attnum = text(1).parse::<i16>().expect("an attribute number");
            let sql = CString::new(text(2)).expect("no NUL in a statement");
            // SAFETY: copies the NUL-terminated statement into fn_mcxt, where
            // it lives as long as the plan.
            let sql = unsafe { pg_sys::MemoryContextStrdup(firing.plan_memory_context(), sql.as_ptr()) };
            let keys = text(3);
            let mut start = StartColumn { attnum, sql, nkeys: 0, key_atts: [0; MAX_KEYS] };
            for key in keys.split(' ').take(MAX_KEYS) {
                start.key_atts[start.nkeys] = key.parse().expect("an attribute number");
                start.nkeys += 1;
            }
            columns.push(start);
        }
        spi_finish();
        // SAFETY: the copy lives in fn_mcxt, as long as the plan that points to it.
        unsafe {
            let copy = pg_sys::MemoryContextAlloc(firing.plan_memory_context(), size_of_val(columns.as_slice()))
                as *mut StartColumn;
            copy.copy_from_nonoverlapping(columns.as_ptr(), columns.len());
            StartPlan {
                columns: copy,
                ncolumns: columns.len(),
                rechecked: has_trigger(firing, c"integrity_total_start_recheck"),
            }
        }
    })
}

guarded_function!(
    /// `integrity._total_filter(source regclass, filter text) RETURNS text`:
    /// the filter, analyzed as a boolean, immutable expression over the
    /// source's columns (like a partial index predicate), written back by
    /// PostgreSQL's deparser.
    integrity_total_filter,
    pg_finfo_integrity_total_filter,
    filter_sql
);

guarded_function!(
    /// `integrity._total_filter_columns(source regclass, filter text)
    /// RETURNS text[]`: the source columns the filter reads.
    integrity_total_filter_columns,
    pg_finfo_integrity_total_filter_columns,
    filter_columns
);

/// The arguments `(source, filter)` and the analyzed filter.
///
/// # Safety
/// `fcinfo` is the call of a STRICT function with `(regclass, text, …)`.
unsafe fn analyzed(fcinfo: pg_sys::FunctionCallInfo) -> (pg_sys::Oid, *mut pg_sys::Node) {
    // SAFETY: the function is STRICT: both arguments are there and not NULL.
    let (source, filter) = unsafe {
        let args = (*fcinfo).args.as_slice(2);
        (
            pg_sys::Oid::from(args[0].value.value() as u32),
            CStr::from_ptr(pg_sys::text_to_cstring(args[1].value.cast_mut_ptr())),
        )
    };
    let outcome = message_of_error(
        // SAFETY: the regclass argument names an existing relation.
        || unsafe { analyze(source, filter) },
        &[PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN, PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH],
    )
    .and_then(|analyzed| analyzed);
    let expr = match outcome {
        Ok(expr) => expr,
        Err(problem) => invalid_filter(filter, &problem),
    };
    // SAFETY: a transformed expression tree.
    if unsafe { pg_sys::contain_mutable_functions(expr) } {
        invalid_filter(filter, "functions in a filter must be marked IMMUTABLE");
    }
    (source, expr)
}

fn invalid_filter(filter: &CStr, problem: &str) -> ! {
    Error::InvalidFilter { filter: filter.to_string_lossy().into_owned(), problem: problem.to_string() }.raise()
}

/// Parses `filter` as one expression and analyzes it against `source`.
///
/// # Safety
/// `source` is an existing relation.
unsafe fn analyze(source: pg_sys::Oid, filter: &CStr) -> Result<*mut pg_sys::Node, String> {
    // SAFETY: parser entry points on a NUL-terminated string, and on the
    // relation the caller's regclass names; errors unwind through PgTryBuilder.
    unsafe {
        let parsed = pg_sys::raw_parser(filter.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_PLPGSQL_EXPR);
        if parsed.is_null() || (*parsed).length != 1 {
            return Err("the filter must be one expression".into());
        }
        let raw = (*(*parsed).elements).ptr_value as *mut pg_sys::RawStmt;
        let select = (*raw).stmt as *mut pg_sys::SelectStmt;
        if (*select).type_ != pg_sys::NodeTag::T_SelectStmt {
            return Err("the filter must be one expression".into());
        }
        let s = &*select;
        let targets = s.targetList;
        if targets.is_null()
            || (*targets).length != 1
            || !s.fromClause.is_null()
            || !s.whereClause.is_null()
            || !s.groupClause.is_null()
            || !s.havingClause.is_null()
            || !s.windowClause.is_null()
            || !s.sortClause.is_null()
            || !s.limitCount.is_null()
            || !s.limitOffset.is_null()
            || !s.lockingClause.is_null()
            || !s.distinctClause.is_null()
        {
            return Err("the filter must be one expression, without FROM, WHERE or other clauses".into());
        }
        let target = (*(*targets).elements).ptr_value as *mut pg_sys::ResTarget;
        if !(*target).name.is_null() {
            return Err("the filter must be one expression, without an alias".into());
        }
        let pstate = pg_sys::make_parsestate(core::ptr::null_mut());
        (*pstate).p_sourcetext = filter.as_ptr();
        let rel = pg_sys::table_open(source, pg_sys::AccessShareLock as i32);
        let nsitem = pg_sys::addRangeTableEntryForRelation(
            pstate,
            rel,
            pg_sys::AccessShareLock as i32,
            core::ptr::null_mut(),
            false,
            true,
        );
        pg_sys::addNSItemToQuery(pstate, nsitem, false, true, true);
        let expr = pg_sys::transformExpr(pstate, (*target).val, pg_sys::ParseExprKind::EXPR_KIND_INDEX_PREDICATE);
        let expr = pg_sys::coerce_to_boolean(pstate, expr, c"filter".as_ptr());
        pg_sys::assign_expr_collations(pstate, expr);
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
        Ok(expr)
    }
}

/// # Safety
/// `fcinfo` is the running call's (see `guarded_function!`).
unsafe fn filter_sql(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    // SAFETY: declared STRICT (regclass, text).
    let (source, expr) = unsafe { analyzed(fcinfo) };
    // SAFETY: the deparser reads the catalogs for the tree's objects; with
    // search_path at pg_catalog it qualifies every name outside it.  The
    // setting is restored before returning (an error restores it by abort).
    unsafe {
        let text = crate::fmgr::pinned_if(true, || {
            let context = pg_sys::deparse_context_for(pg_sys::get_rel_name(source), source);
            pg_sys::deparse_expression(expr, context, false, false)
        });
        Verdict::Allow(pg_sys::Datum::from(pg_sys::cstring_to_text(text)))
    }
}

/// # Safety
/// `fcinfo` is the running call's (see `guarded_function!`).
unsafe fn filter_columns(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    // SAFETY: declared STRICT (regclass, text).
    let (source, expr) = unsafe { analyzed(fcinfo) };
    let mut attnos: *mut pg_sys::Bitmapset = core::ptr::null_mut();
    let mut names = Vec::new();
    // SAFETY: the expression's Vars all have varno 1 (the only range table
    // entry); the bitmap offsets attribute numbers as pull_varattnos does.
    unsafe {
        pg_sys::pull_varattnos(expr, 1, &mut attnos);
        let mut member = -1;
        loop {
            member = pg_sys::bms_next_member(attnos, member);
            if member < 0 {
                break;
            }
            let attnum = (member + pg_sys::FirstLowInvalidHeapAttributeNumber) as i16;
            let name = pg_sys::get_attname(source, attnum, false);
            names.push(CStr::from_ptr(name).to_string_lossy().into_owned());
        }
    }
    let array = pgrx::IntoDatum::into_datum(names).expect("an array");
    Verdict::Allow(array)
}
