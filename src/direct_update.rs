//! "Add a signed amount to one column of the row found by its key",
//! without SPI: the update that maintained totals (`totals`), the ledger
//! credit guard (`ledger_credit`) and the stock operations
//! (`stock_operations`, also of several rows at once: `add_to_all`) make of a
//! target row, done the way logical
//! replication's apply worker updates a row: found through a unique index on
//! the key, locked, and written by `ExecSimpleRelationUpdate`, which fires the
//! target's row triggers, checks its constraints and updates its indexes.  It
//! saves the parse-analysis, planning and executor start and end of an SPI
//! statement per row.
//!
//! It behaves as the SPI statement
//! `UPDATE target SET col = col + s1 * a1 + s2 * a2 … WHERE key = $k
//! [AND col + … >= 0 AND col + … <= bound]`:
//! a new snapshot and command id per row (as SPI takes for a statement that
//! may write); the row visible to it is locked (no-key exclusive, or exclusive
//! when the column is in a key index), READ COMMITTED following the update
//! chain to the latest version and re-checking its key and bounds there
//! (EvalPlanQual's re-check), REPEATABLE READ and SERIALIZABLE raising 40001 on
//! a concurrent update or delete.  The arithmetic is the statement's: integer
//! when the column and the amounts are integers (with its overflow errors),
//! numeric otherwise, and the result is assigned back to the column's type
//! (and typmod).
//!
//! Targets with what the direct path would not reproduce exactly are left to
//! the caller's SPI statement (`open` returns `None`): not a plain table,
//! rules, row-level security, missing table privileges, statement-level
//! UPDATE triggers or transition tables, column-specific UPDATE triggers,
//! BEFORE UPDATE row triggers other than the extension's own (a user's could
//! skip the row or write it again, which only the executor's UPDATE handles
//! as SQL does), stored generated columns, a column that is not
//! smallint/integer/bigint/numeric, or no unique index made of the key
//! columns.  A row whose lock ends in anything the direct path does not
//! handle as the UPDATE would (the row changed by this very command, an
//! invisible version) is left to the SPI statement too (`Outcome::Fallback`).
//!
//! The writer underneath (`Writer`: `begin`, `in_statement`, `find`,
//! `lock_found`, `rewrite`, `insert`, `end`) also writes the extension's own
//! hold records (`hold_records`).

use std::cell::RefCell;

use pgrx::pg_sys;

use crate::backend_map::Map;

use crate::error::Error;

unsafe extern "C-unwind" {
    // Without pgrx's error trap, so that a CHECK violation or a trigger's
    // error reaches the client with every field (see `fmgr::execute_plan`).
    fn ExecSimpleRelationUpdate(
        result_rel_info: *mut pg_sys::ResultRelInfo,
        estate: *mut pg_sys::EState,
        epqstate: *mut pg_sys::EPQState,
        searchslot: *mut pg_sys::TupleTableSlot,
        slot: *mut pg_sys::TupleTableSlot,
    );
    fn ExecSimpleRelationInsert(
        result_rel_info: *mut pg_sys::ResultRelInfo,
        estate: *mut pg_sys::EState,
        slot: *mut pg_sys::TupleTableSlot,
    );
    fn AfterTriggerEndQuery(estate: *mut pg_sys::EState);
}

/// The functions of the direct path, declared without pgrx's error trap:
/// a trapped call costs a `sigsetjmp` and a thread check (some hundred
/// instructions, a tenth of the path with forty calls per row).  Their errors
/// longjmp over the callers' frames, which hold nothing that needs dropping
/// (the contracts of `open`, `add` and `close`).
pub(crate) mod raw {
    use pgrx::pg_sys::*;
    unsafe extern "C-unwind" {
        pub fn table_open(relationId: Oid, lockmode: LOCKMODE) -> Relation;
        pub fn table_close(relation: Relation, lockmode: LOCKMODE);
        pub fn GetUserId() -> Oid;
        pub fn pg_class_aclcheck(table_oid: Oid, roleid: Oid, mode: AclMode) -> AclResult::Type;
        pub fn RelationGetIndexAttrBitmap(relation: Relation, attrKind: IndexAttrBitmapKind::Type) -> *mut Bitmapset;
        pub fn bms_is_member(x: core::ffi::c_int, a: *const Bitmapset) -> bool;
        pub fn CreateExecutorState() -> *mut EState;
        pub fn FreeExecutorState(estate: *mut EState);
        pub fn GetCurrentCommandId(used: bool) -> CommandId;
        pub fn palloc0(size: Size) -> *mut core::ffi::c_void;
        pub fn InitResultRelInfo(
            resultRelInfo: *mut ResultRelInfo,
            resultRelationDesc: Relation,
            resultRelationIndex: Index,
            partition_root_rri: *mut ResultRelInfo,
            instrument_options: core::ffi::c_int,
        );
        pub fn ExecOpenIndices(resultRelInfo: *mut ResultRelInfo, speculative: bool);
        pub fn ExecCloseResultRelations(estate: *mut EState);
        pub fn lappend(list: *mut List, datum: *mut core::ffi::c_void) -> *mut List;
        pub fn get_opfamily_member(opfamily: Oid, lefttype: Oid, righttype: Oid, strategy: int16) -> Oid;
        pub fn get_opcode(opno: Oid) -> RegProcedure;
        pub fn GetDefaultOpClass(type_id: Oid, am_id: Oid) -> Oid;
        pub fn MemoryContextReset(context: MemoryContext);
        pub fn get_opclass_family(opclass: Oid) -> Oid;
        #[cfg(any(feature = "pg14", feature = "pg15"))]
        pub fn EvalPlanQualInit(
            epqstate: *mut EPQState,
            parentestate: *mut EState,
            subplan: *mut Plan,
            auxrowmarks: *mut List,
            epqParam: core::ffi::c_int,
        );
        #[cfg(not(any(feature = "pg14", feature = "pg15")))]
        pub fn EvalPlanQualInit(
            epqstate: *mut EPQState,
            parentestate: *mut EState,
            subplan: *mut Plan,
            auxrowmarks: *mut List,
            epqParam: core::ffi::c_int,
            resultRelations: *mut List,
        );
        pub fn EvalPlanQualEnd(epqstate: *mut EPQState);
        pub fn table_slot_create(rel: Relation, reglist: *mut *mut List) -> *mut TupleTableSlot;
        pub fn ExecInitExtraTupleSlot(
            estate: *mut EState,
            tupledesc: TupleDesc,
            tts_ops: *const TupleTableSlotOps,
        ) -> *mut TupleTableSlot;
        pub fn ExecResetTupleTable(tupleTable: *mut List, shouldFree: bool);
        pub fn AfterTriggerBeginQuery();
        pub fn CommandCounterIncrement();
        pub fn GetTransactionSnapshot() -> Snapshot;
        pub fn PushActiveSnapshot(snapshot: Snapshot);
        pub fn UpdateActiveSnapshotCommandId();
        pub fn GetActiveSnapshot() -> Snapshot;
        pub fn PopActiveSnapshot();
        pub fn ScanKeyEntryInitialize(
            entry: ScanKey,
            flags: core::ffi::c_int,
            attributeNumber: AttrNumber,
            strategy: StrategyNumber,
            subtype: Oid,
            collation: Oid,
            procedure: RegProcedure,
            argument: Datum,
        );
        #[cfg(not(feature = "pg18"))]
        pub fn index_beginscan(
            heapRelation: Relation,
            indexRelation: Relation,
            snapshot: Snapshot,
            nkeys: core::ffi::c_int,
            norderbys: core::ffi::c_int,
        ) -> IndexScanDesc;
        #[cfg(feature = "pg18")]
        pub fn index_beginscan(
            heapRelation: Relation,
            indexRelation: Relation,
            snapshot: Snapshot,
            instrument: *mut IndexScanInstrumentation,
            nkeys: core::ffi::c_int,
            norderbys: core::ffi::c_int,
        ) -> IndexScanDesc;
        pub fn index_rescan(
            scan: IndexScanDesc,
            keys: ScanKey,
            nkeys: core::ffi::c_int,
            orderbys: ScanKey,
            norderbys: core::ffi::c_int,
        );
        pub fn index_getnext_slot(
            scan: IndexScanDesc,
            direction: ScanDirection::Type,
            slot: *mut TupleTableSlot,
        ) -> bool;
        pub fn index_endscan(scan: IndexScanDesc);
        pub fn slot_getsomeattrs_int(slot: *mut TupleTableSlot, attnum: core::ffi::c_int);
        pub fn OidFunctionCall2Coll(functionId: Oid, collation: Oid, arg1: Datum, arg2: Datum) -> Datum;
        pub fn DirectFunctionCall1Coll(func: PGFunction, collation: Oid, arg1: Datum) -> Datum;
        pub fn DirectFunctionCall2Coll(func: PGFunction, collation: Oid, arg1: Datum, arg2: Datum) -> Datum;
        pub fn ExecStoreVirtualTuple(slot: *mut TupleTableSlot) -> *mut TupleTableSlot;
        pub fn int2_numeric(fcinfo: FunctionCallInfo) -> Datum;
        pub fn int4_numeric(fcinfo: FunctionCallInfo) -> Datum;
        pub fn int8_numeric(fcinfo: FunctionCallInfo) -> Datum;
        pub fn numeric_int2(fcinfo: FunctionCallInfo) -> Datum;
        pub fn numeric_int4(fcinfo: FunctionCallInfo) -> Datum;
        pub fn numeric_int8(fcinfo: FunctionCallInfo) -> Datum;
        pub fn numeric_add(fcinfo: FunctionCallInfo) -> Datum;
        pub fn numeric(fcinfo: FunctionCallInfo) -> Datum;
        pub fn numeric_uminus(fcinfo: FunctionCallInfo) -> Datum;
        pub fn numeric_cmp(fcinfo: FunctionCallInfo) -> Datum;
        pub fn numeric_out(fcinfo: FunctionCallInfo) -> Datum;
        pub fn numeric_sub(fcinfo: FunctionCallInfo) -> Datum;
        pub fn nextval_oid(fcinfo: FunctionCallInfo) -> Datum;
        pub fn timestamptz_pl_interval(fcinfo: FunctionCallInfo) -> Datum;
        pub fn current_user(fcinfo: FunctionCallInfo) -> Datum;
        pub fn jsonb_extract_path_text(fcinfo: FunctionCallInfo) -> Datum;
        pub fn jsonb_hash_extended(fcinfo: FunctionCallInfo) -> Datum;
        pub fn datumCopy(value: Datum, typByVal: bool, typLen: core::ffi::c_int) -> Datum;
        pub fn get_func_namespace(funcid: Oid) -> Oid;
        pub fn get_func_name(funcid: Oid) -> *mut core::ffi::c_char;
        pub fn get_namespace_oid(nspname: *const core::ffi::c_char, missing_ok: bool) -> Oid;
        pub fn heap_attisnull(tup: HeapTuple, attnum: core::ffi::c_int, tupleDesc: TupleDesc) -> bool;
        pub fn index_getprocinfo(irel: Relation, attnum: AttrNumber, procnum: uint16) -> *mut FmgrInfo;
        pub fn FunctionCall2Coll(flinfo: *mut FmgrInfo, collation: Oid, arg1: Datum, arg2: Datum) -> Datum;
        pub fn get_collation_isdeterministic(colloid: Oid) -> bool;
    }
}

/// A btree operator class's comparison support function (`access/nbtree.h`,
/// which pgrx does not bind).
const BTORDER_PROC: u16 = 1;

/// Key columns a target can have (registration refuses more).
pub const MAX_KEYS: usize = 8;

/// What `open` finds out about a target from its catalog entries, cached per
/// backend until the next invalidation (`invalidation::generation`): `None`
/// when the direct path would not do what the SQL statement does.
#[derive(Clone, Copy)]
struct Shape {
    /// The unique index on the key columns.
    index: pg_sys::Oid,
    /// Per index column: the position of its value among the caller's keys,
    /// the equality procedure, collation and input type of its operator class.
    position: [usize; MAX_KEYS],
    eq: [pg_sys::RegProcedure; MAX_KEYS],
    collation: [pg_sys::Oid; MAX_KEYS],
    subtype: [pg_sys::Oid; MAX_KEYS],
    /// Every key collation is deterministic: keys equal under it are the
    /// same value (as `GROUP BY` compares them, whatever its collation).
    deterministic: bool,
    column_type: pg_sys::Oid,
    column_typmod: i32,
    lock_mode: pg_sys::LockTupleMode::Type,
    /// The target's `integrity_total` trigger (or invalid): a no-op for the
    /// writes of maintained totals, which are sanctioned, so not fired for
    /// them.
    total_guard: pg_sys::Oid,
    /// Its recheck, `integrity_total_recheck` (AFTER UPDATE, or invalid):
    /// there for a BEFORE UPDATE trigger of the user's, which this path does
    /// not fire, or for a BEFORE INSERT one, which an UPDATE does not fire.
    total_recheck: pg_sys::Oid,
    /// The target's `integrity_stock` BEFORE trigger (or invalid), whose
    /// rule a reservation's checks prove (`Sanctioned::Stock`).
    stock_guard: pg_sys::Oid,
}

/// A guard of the target whose rule the caller's write keeps, so that its
/// BEFORE UPDATE trigger is not fired for it (no other BEFORE UPDATE trigger
/// can change the row on this path: `triggers_allow`).
#[derive(Clone, Copy, PartialEq)]
pub enum Sanctioned {
    Nothing,
    /// The caller writes a maintained total by the amount it applies, which
    /// is what the total guard lets through.
    Total,
    /// The column and the bound are the reserved and stock columns of the
    /// table's stock guard, and no second column is written: the bounds
    /// checked here, `0 <= reserved + amount <= stock` on the locked row,
    /// are its rule, but for a NaN stock (which numeric orders above every
    /// number), left to the statement.
    Stock,
}

/// Target table, column, key columns (and their number), bound column,
/// second column (`open_with_second`, or 0).
type ShapeKey = (pg_sys::Oid, i16, [i16; MAX_KEYS], [pg_sys::Oid; MAX_KEYS], usize, i16, i16);

thread_local! {
    static SHAPES: RefCell<Map<ShapeKey, (u64, Option<Shape>)>> = RefCell::new(Map::default());
}

/// An open target: plain pointers into executor memory of the current
/// context, released by `close` or, when an update fails, by the abort.
#[derive(Clone, Copy)]
pub struct Target {
    w: Writer,
    index: pg_sys::Relation,
    nkeys: usize,
    /// The key columns, in the caller's order.
    key_atts: [i16; MAX_KEYS],
    column: i16,
    /// The column holding the upper bound (of the column's type), or 0.
    bound: i16,
    /// A second column that the same amounts are added to, or 0.
    second: i16,
    shape: Shape,
    /// The stock guard is not fired (`Sanctioned::Stock`).
    stock_sanctioned: bool,
}

/// A table written without SPI, as logical replication's apply worker
/// writes one: its executor state and result relation (with its indexes
/// open), the slot of the row found and the slot of the row to write.  Plain
/// pointers into executor memory of the current context, released by `end`
/// or, when a write fails, by the abort.
#[derive(Clone, Copy)]
pub struct Writer {
    pub rel: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    result: *mut pg_sys::ResultRelInfo,
    epq: *mut pg_sys::EPQState,
    pub found: *mut pg_sys::TupleTableSlot,
    pub new: *mut pg_sys::TupleTableSlot,
}

pub enum Outcome {
    Updated,
    /// No row with the key (visible, or left after a concurrent change).
    Missing,
    /// A BEFORE UPDATE trigger returned NULL.
    Skipped,
    /// The new value is not within `0 ..= bound`; the row is unchanged.
    OutOfBounds(Bounds),
    /// The row's lock ended in a state that only the SQL statement handles
    /// as SQL does: the caller runs it for this row.
    Fallback,
}

/// What an out-of-bounds row holds, as `(col + …)::text` and `bound::text`
/// write it (`None` for NULL).
pub struct Bounds {
    pub value: Option<String>,
    pub bound: Option<String>,
    pub below_zero: bool,
}

/// The new value: integer arithmetic when the column and the amounts are
/// integers (as SQL's), numeric otherwise.
#[derive(Clone, Copy)]
enum Value {
    Int(i128),
    Numeric(pg_sys::Datum),
}

/// The type of the amounts, and each amount with its sign.
type Amounts<'a> = (pg_sys::Oid, &'a [(i32, pg_sys::Datum)]);

fn is_integer(typid: pg_sys::Oid) -> bool {
    matches!(typid, pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID)
}

/// Opens `target` to add amounts to column `column` (an integer type or
/// numeric) of the row whose `key_atts` equal the given key, refusing to take
/// it out of `0 ..= bound` when `bound` (a column of the same type) is given;
/// `None` when the SPI statement must do it.
///
/// # Safety
/// Inside a transaction, in a memory context that lives until `close`.
/// `sanctioned` is true of the caller's writes (see `Sanctioned`).
pub unsafe fn open(
    target: pg_sys::Oid,
    column: i16,
    key_atts: &[i16],
    key_types: &[pg_sys::Oid],
    bound: Option<i16>,
    sanctioned: Sanctioned,
) -> Option<Target> {
    // SAFETY: the contract.
    unsafe { open_with_second(target, column, 0, key_atts, key_types, bound, sanctioned) }
}

/// As `open`, with a second column `second` (0 for none, else of the
/// column's type and typmod) that the same amounts are added to, as
/// `SET col = col - $q, second = second - $q` does (`commit_stock`); the
/// bound is checked on the first column only.
///
/// # Safety
/// As for `open`.
pub unsafe fn open_with_second(
    target: pg_sys::Oid,
    column: i16,
    second: i16,
    key_atts: &[i16],
    key_types: &[pg_sys::Oid],
    bound: Option<i16>,
    sanctioned: Sanctioned,
) -> Option<Target> {
    if key_atts.is_empty() || key_atts.len() > MAX_KEYS || key_types.len() != key_atts.len() {
        return None;
    }
    if !possible() {
        return None;
    }
    let mut keys = [0; MAX_KEYS];
    keys[..key_atts.len()].copy_from_slice(key_atts);
    let mut types = [pg_sys::InvalidOid; MAX_KEYS];
    types[..key_types.len()].copy_from_slice(key_types);
    let shape_key = (target, column, keys, types, key_atts.len(), bound.unwrap_or(0), second);
    // SAFETY: the relation is opened with the lock an UPDATE takes and kept
    // locked until the transaction ends (as the UPDATE would), which takes in
    // pending invalidations before the cache is read; every catalog structure
    // read belongs to the open relation.
    unsafe {
        let rel = raw::table_open(target, pg_sys::RowExclusiveLock as i32);
        let generation = crate::invalidation::generation();
        let cached = SHAPES.with_borrow(|shapes| shapes.get(&shape_key).copied());
        let cached = cached.filter(|(at, _)| *at == generation).map(|(_, shape)| shape);
        // Privileges are checked for each statement: the user, and the roles
        // it is a member of, change without an invalidation of the table.
        let user = raw::GetUserId();
        let allowed = !matches!(cached, Some(None))
            && raw::pg_class_aclcheck(target, user, pg_sys::ACL_SELECT as pg_sys::AclMode)
                == pg_sys::AclResult::ACLCHECK_OK
            && raw::pg_class_aclcheck(target, user, pg_sys::ACL_UPDATE as pg_sys::AclMode)
                == pg_sys::AclResult::ACLCHECK_OK;
        if !allowed {
            raw::table_close(rel, pg_sys::NoLock as i32);
            return None;
        }

        let w = begin(rel);
        let indexes =
            core::slice::from_raw_parts((*w.result).ri_IndexRelationDescs, (*w.result).ri_NumIndices as usize);
        let shape = match cached {
            Some(shape) => shape,
            None => {
                let shape = shape_of(rel, column, second, key_atts, key_types, bound, indexes);
                SHAPES.with_borrow_mut(|shapes| shapes.insert(shape_key, (generation, shape)));
                shape
            }
        };
        let index = shape.and_then(|shape| indexes.iter().copied().find(|&i| (*i).rd_id == shape.index));
        let (Some(shape), Some(index)) = (shape, index) else {
            end(w);
            return None;
        };
        let (sanctioned_guard, recheck) = match sanctioned {
            Sanctioned::Total => (shape.total_guard, shape.total_recheck),
            Sanctioned::Stock if second == 0 && bound.is_some() => (shape.stock_guard, pg_sys::InvalidOid),
            _ => (pg_sys::InvalidOid, pg_sys::InvalidOid),
        };
        if sanctioned_guard != pg_sys::InvalidOid || recheck != pg_sys::InvalidOid {
            without_triggers(w.result, [sanctioned_guard, recheck]);
        }
        Some(Target {
            w,
            index,
            nkeys: key_atts.len(),
            key_atts: keys,
            column,
            bound: bound.unwrap_or(0),
            second,
            shape,
            stock_sanctioned: sanctioned_guard != pg_sys::InvalidOid && sanctioned_guard == shape.stock_guard,
        })
    }
}

/// Whether a write without SPI may stand in for a statement here: neither
/// in a read-only transaction nor in parallel mode (the statement's
/// executor start refuses those, 25006, or raises, with its own error), nor
/// under a hook that checks the permissions of every statement (sepgsql,
/// audit extensions), which would not see a write made without one.
pub fn possible() -> bool {
    // SAFETY: reads of backend globals, by value, and a plain function call.
    unsafe {
        let (read_only, permission_hook) = (pg_sys::XactReadOnly, pg_sys::ExecutorCheckPerms_hook);
        !read_only && permission_hook.is_none() && !pg_sys::IsInParallelMode()
    }
}

/// Sets up the writing of `rel`, as a statement's executor start sets up its
/// result relation: its indexes opened, its AFTER trigger events queued for
/// the end of the write (`end`).
///
/// # Safety
/// `rel` is open with `RowExclusiveLock`, inside a transaction, in a memory
/// context that lives until `end`.
pub unsafe fn begin(rel: pg_sys::Relation) -> Writer {
    // SAFETY: executor structures made in the current memory context for
    // the open relation (the contract).
    unsafe {
        let estate = raw::CreateExecutorState();
        (*estate).es_output_cid = raw::GetCurrentCommandId(true);
        let result = raw::palloc0(size_of::<pg_sys::ResultRelInfo>()) as *mut pg_sys::ResultRelInfo;
        // Range table index 0: no updated-columns set, which only
        // column-specific triggers and generated columns (both refused) would
        // read.
        raw::InitResultRelInfo(result, rel, 0, core::ptr::null_mut(), 0);
        // Registered as the statement's result relation, so that the AFTER
        // trigger events it queues find it instead of opening the table again.
        (*estate).es_opened_result_relations = raw::lappend(core::ptr::null_mut(), result.cast());
        raw::ExecOpenIndices(result, false);
        let epq = raw::palloc0(size_of::<pg_sys::EPQState>()) as *mut pg_sys::EPQState;
        #[cfg(any(feature = "pg14", feature = "pg15"))]
        raw::EvalPlanQualInit(epq, estate, core::ptr::null_mut(), core::ptr::null_mut(), -1);
        #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
        raw::EvalPlanQualInit(epq, estate, core::ptr::null_mut(), core::ptr::null_mut(), -1, core::ptr::null_mut());
        let found = raw::table_slot_create(rel, &mut (*estate).es_tupleTable);
        let new = raw::ExecInitExtraTupleSlot(estate, (*rel).rd_att, &raw const pg_sys::TTSOpsVirtual);
        raw::AfterTriggerBeginQuery();
        Writer { rel, estate, result, epq, found, new }
    }
}

/// Fires the AFTER row triggers the writes queued and releases the writer
/// and the relation (keeping its lock).
///
/// # Safety
/// `w` is from `begin`, ended once; errors of the AFTER triggers longjmp
/// over the callers' frames, which must hold nothing that needs dropping.
pub unsafe fn end(w: Writer) {
    // SAFETY: the executor state made by `begin`, released once.
    unsafe {
        AfterTriggerEndQuery(w.estate);
        raw::EvalPlanQualEnd(w.epq);
        raw::ExecCloseResultRelations(w.estate);
        raw::ExecResetTupleTable((*w.estate).es_tupleTable, false);
        raw::FreeExecutorState(w.estate);
        raw::table_close(w.rel, pg_sys::NoLock as i32);
    }
}

/// The shape of an open target, from its catalog entries and open indexes.
///
/// # Safety
/// `rel` is open, `indexes` are its open indexes.
unsafe fn shape_of(
    rel: pg_sys::Relation,
    column: i16,
    second: i16,
    key_atts: &[i16],
    key_types: &[pg_sys::Oid],
    bound: Option<i16>,
    indexes: &[pg_sys::Relation],
) -> Option<Shape> {
    // SAFETY: catalog structures of the open relation and its indexes.
    unsafe {
        let form = &*(*rel).rd_rel;
        let attribute = *crate::trigger::tuple_desc_attr((*rel).rd_att, column);
        let constr = (*(*rel).rd_att).constr;
        let bound_type = bound.map(|b| crate::trigger::tuple_desc_attr((*rel).rd_att, b).atttypid);
        // Inheritance children: the statement (no ONLY) updates their rows
        // too, which the parent's unique index does not find.
        let plain = form.relkind == pg_sys::RELKIND_RELATION as core::ffi::c_char
            && !form.relhassubclass
            && (*rel).rd_rules.is_null()
            && !form.relrowsecurity
            && (constr.is_null() || !(*constr).has_generated_stored)
            && (is_integer(attribute.atttypid) || attribute.atttypid == pg_sys::NUMERICOID)
            && bound_type.is_none_or(|typid| typid == attribute.atttypid)
            && (second == 0 || {
                let second = crate::trigger::tuple_desc_attr((*rel).rd_att, second);
                (second.atttypid, second.atttypmod) == (attribute.atttypid, attribute.atttypmod)
            })
            && triggers_allow((*rel).trigdesc);
        if !plain {
            return None;
        }
        let keys = raw::RelationGetIndexAttrBitmap(rel, pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_KEY);
        let in_key =
            |attnum: i16| raw::bms_is_member(i32::from(attnum) - pg_sys::FirstLowInvalidHeapAttributeNumber, keys);
        let lock_mode = if in_key(column) || (second != 0 && in_key(second)) {
            pg_sys::LockTupleMode::LockTupleExclusive
        } else {
            pg_sys::LockTupleMode::LockTupleNoKeyExclusive
        };
        let mut shape = Shape {
            index: pg_sys::InvalidOid,
            position: [0; MAX_KEYS],
            eq: [pg_sys::InvalidOid; MAX_KEYS],
            collation: [pg_sys::InvalidOid; MAX_KEYS],
            subtype: [pg_sys::InvalidOid; MAX_KEYS],
            deterministic: true,
            column_type: attribute.atttypid,
            column_typmod: attribute.atttypmod,
            lock_mode,
            total_guard: update_guard((*rel).trigdesc, c"total_guard", c"integrity_total", true),
            total_recheck: update_guard((*rel).trigdesc, c"total_guard", c"integrity_total_recheck", false),
            stock_guard: update_guard((*rel).trigdesc, c"stock_guard", c"integrity_stock", true),
        };
        indexes.iter().any(|&index| key_index(&mut shape, rel, key_atts, key_types, index)).then_some(shape)
    }
}

/// The OID of the target's BEFORE (or AFTER) UPDATE row trigger `name`
/// when it is the only one of that timing that runs the extension's trigger
/// function `function` (the guard the extension placed, whose columns the
/// caller read), or invalid.
///
/// # Safety
/// `trigdesc` is an open relation's (or NULL).
unsafe fn update_guard(
    trigdesc: *mut pg_sys::TriggerDesc,
    function: &core::ffi::CStr,
    name: &core::ffi::CStr,
    before: bool,
) -> pg_sys::Oid {
    if trigdesc.is_null() {
        return pg_sys::InvalidOid;
    }
    // SAFETY: the relation's trigger descriptor, `numtriggers` entries; the
    // function of each trigger exists while the relation is open.
    unsafe {
        let t = &*trigdesc;
        let integrity = raw::get_namespace_oid(c"integrity".as_ptr(), true);
        let row_update = (pg_sys::TRIGGER_TYPE_ROW | pg_sys::TRIGGER_TYPE_UPDATE) as i16;
        let mut guards = (0..t.numtriggers as usize).map(|i| &*t.triggers.add(i)).filter(|trigger| {
            let function_name = raw::get_func_name(trigger.tgfoid);
            trigger.tgtype & row_update == row_update
                && (trigger.tgtype & pg_sys::TRIGGER_TYPE_BEFORE as i16 != 0) == before
                && raw::get_func_namespace(trigger.tgfoid) == integrity
                && !function_name.is_null()
                && core::ffi::CStr::from_ptr(function_name) == function
        });
        match (guards.next(), guards.next()) {
            (Some(guard), None) if core::ffi::CStr::from_ptr(guard.tgname) == name => guard.tgoid,
            _ => pg_sys::InvalidOid,
        }
    }
}

/// Leaves triggers `tgoids` (invalid ones are none) out of the result
/// relation's copy of the trigger descriptor (the executor fires what that
/// copy lists).
///
/// # Safety
/// `result` was set up by `InitResultRelInfo`, whose trigger descriptor
/// holds the valid ones of `tgoids`, UPDATE row triggers.
unsafe fn without_triggers(result: *mut pg_sys::ResultRelInfo, tgoids: [pg_sys::Oid; 2]) {
    // SAFETY: the descriptor is the result relation's own palloc'd copy; the
    // new one is a shallow copy of it in the same memory, without those
    // triggers and with the UPDATE row flags recomputed (the per-trigger
    // arrays of the result relation have room for the original number).
    unsafe {
        let old = (*result).ri_TrigDesc;
        let new = raw::palloc0(size_of::<pg_sys::TriggerDesc>()) as *mut pg_sys::TriggerDesc;
        new.write(*old);
        let triggers = raw::palloc0(size_of::<pg_sys::Trigger>() * (*old).numtriggers as usize) as *mut pg_sys::Trigger;
        let mut n = 0;
        let row_update = (pg_sys::TRIGGER_TYPE_ROW | pg_sys::TRIGGER_TYPE_UPDATE) as i16;
        (*new).trig_update_before_row = false;
        (*new).trig_update_after_row = false;
        for i in 0..(*old).numtriggers as usize {
            let trigger = *(*old).triggers.add(i);
            if !tgoids.contains(&trigger.tgoid) {
                if trigger.tgtype & row_update == row_update {
                    if trigger.tgtype & pg_sys::TRIGGER_TYPE_BEFORE as i16 != 0 {
                        (*new).trig_update_before_row = true;
                    } else if trigger.tgtype & pg_sys::TRIGGER_TYPE_INSTEAD as i16 == 0 {
                        (*new).trig_update_after_row = true;
                    }
                }
                triggers.add(n).write(trigger);
                n += 1;
            }
        }
        (*new).triggers = triggers;
        (*new).numtriggers = n as i32;
        (*result).ri_TrigDesc = new;
    }
}

/// Whether `index` is a valid, immediately enforced unique index on exactly
/// the key columns (no expression, no predicate), which finds at most one
/// row per key; fills the per-column scan data of `shape` if so.
///
/// # Safety
/// `index` is an open index.
unsafe fn key_index(
    shape: &mut Shape,
    rel: pg_sys::Relation,
    key_atts: &[i16],
    key_types: &[pg_sys::Oid],
    index: pg_sys::Relation,
) -> bool {
    // SAFETY: the open index's catalog row and operator class data,
    // `indnkeyatts` entries each.
    unsafe {
        let form = &*(*index).rd_index;
        let nkeys = form.indnkeyatts as usize;
        if !form.indisunique || !form.indimmediate || !form.indisvalid || !form.indislive || nkeys != key_atts.len() {
            return false;
        }
        if !raw::heap_attisnull((*index).rd_indextuple, pg_sys::Anum_pg_index_indpred as i32, core::ptr::null_mut()) {
            return false;
        }
        let indkey = form.indkey.values.as_slice(form.indnatts as usize);
        for (i, attnum) in indkey[..nkeys].iter().enumerate() {
            let Some(position) = key_atts.iter().position(|a| a == attnum) else {
                return false;
            };
            // The statement's `key = $k` compares a value of the caller's
            // type by the column type's default equality and the column's
            // collation: the index must compare the same way, and the value
            // must be of the column's type (its equality function reads it
            // as such; a column whose type changed since registration is
            // left to the statement, which raises).
            let attribute = crate::trigger::tuple_desc_attr((*rel).rd_att, *attnum);
            let family = *(*index).rd_opfamily.add(i);
            let input = *(*index).rd_opcintype.add(i);
            let default_class = raw::GetDefaultOpClass(attribute.atttypid, pg_sys::BTREE_AM_OID);
            if key_types[position] != attribute.atttypid
                || *(*index).rd_indcollation.add(i) != attribute.attcollation
                || default_class == pg_sys::InvalidOid
                || raw::get_opclass_family(default_class) != family
            {
                return false;
            }
            let op = raw::get_opfamily_member(family, input, input, pg_sys::BTEqualStrategyNumber as i16);
            if op == pg_sys::InvalidOid {
                return false;
            }
            shape.position[i] = position;
            shape.eq[i] = raw::get_opcode(op);
            shape.collation[i] = *(*index).rd_indcollation.add(i);
            shape.subtype[i] = input;
            shape.deterministic &=
                shape.collation[i] == pg_sys::InvalidOid || raw::get_collation_isdeterministic(shape.collation[i]);
        }
        shape.index = (*index).rd_id;
        true
    }
}

/// Whether the target's UPDATE triggers are all row triggers that the direct
/// path fires as the UPDATE would: AFTER ones, and BEFORE ones of the
/// extension's own, which neither skip the row nor write the table.
///
/// # Safety
/// `trigdesc` is an open relation's (or NULL).
unsafe fn triggers_allow(trigdesc: *mut pg_sys::TriggerDesc) -> bool {
    if trigdesc.is_null() {
        return true;
    }
    // SAFETY: the relation's trigger descriptor, `numtriggers` entries.
    unsafe {
        let t = &*trigdesc;
        if t.trig_update_before_statement
            || t.trig_update_after_statement
            || t.trig_update_instead_row
            || t.trig_update_old_table
            || t.trig_update_new_table
        {
            return false;
        }
        let before_row_update =
            (pg_sys::TRIGGER_TYPE_ROW | pg_sys::TRIGGER_TYPE_BEFORE | pg_sys::TRIGGER_TYPE_UPDATE) as i16;
        let mut extension = None;
        (0..t.numtriggers as usize).all(|i| {
            let trigger = &*t.triggers.add(i);
            trigger.tgnattr == 0
                && (trigger.tgtype & before_row_update != before_row_update
                    || raw::get_func_namespace(trigger.tgfoid)
                        == *extension.get_or_insert_with(|| raw::get_namespace_oid(c"integrity".as_ptr(), true)))
        })
    }
}

/// Adds `terms` (each a sign, +1 or -1, and an amount of type `amount_type`,
/// an integer type or numeric)
/// type), in order, to the column of the row with `key` (values of the key
/// columns' types, in the order `open` was given them).
///
/// # Safety
/// `target` is open.  Errors (a constraint, a trigger, a lock timeout, an
/// overflow) longjmp over the callers' frames, which must hold nothing that
/// needs dropping.
pub unsafe fn add(
    target: &Target,
    key: &[pg_sys::Datum],
    amount_type: pg_sys::Oid,
    terms: &[(i32, pg_sys::Datum)],
) -> Outcome {
    // SAFETY: the open target's executor state, slots and index; the snapshot
    // pushed here is popped before returning (or by the abort).
    unsafe {
        // What the previous row's constraints, triggers and index entries
        // allocated per tuple goes, as the executor frees it for each row
        // (a statement's totals may write many rows through one target).
        reset_per_tuple(target);
        in_statement(&target.w, |snapshot| update(target, key, (amount_type, terms), snapshot))
    }
}

/// Runs `f` as SPI runs each statement that may write: seeing the writes
/// made so far (the source statement's, the previous rows'), with a new
/// snapshot under READ COMMITTED, and a command id of its own.
///
/// # Safety
/// `w` is from `begin`; the snapshot pushed here is popped before returning
/// (or by the abort).
pub unsafe fn in_statement<R>(w: &Writer, f: impl FnOnce(pg_sys::Snapshot) -> R) -> R {
    // SAFETY: the writer's executor state.
    unsafe {
        raw::CommandCounterIncrement();
        raw::PushActiveSnapshot(raw::GetTransactionSnapshot());
        raw::UpdateActiveSnapshotCommandId();
        let snapshot = raw::GetActiveSnapshot();
        (*w.estate).es_snapshot = snapshot;
        (*w.estate).es_output_cid = raw::GetCurrentCommandId(true);
        let result = f(snapshot);
        raw::PopActiveSnapshot();
        (*w.estate).es_snapshot = core::ptr::null_mut();
        raw::CommandCounterIncrement();
        result
    }
}

/// Frees what the previous row's constraints, triggers and index entries
/// allocated per tuple, as the executor does before each row.
///
/// # Safety
/// `target` is open.
unsafe fn reset_per_tuple(target: &Target) {
    // SAFETY: the open target's executor state.
    unsafe {
        let per_tuple = (*target.w.estate).es_per_tuple_exprcontext;
        if !per_tuple.is_null() {
            raw::MemoryContextReset((*per_tuple).ecxt_per_tuple_memory);
        }
    }
}

/// Adds a numeric amount to the column of several rows, all or none, as a
/// reservation of several rows does (`stock_operations`): every row is
/// locked first, as `FOR UPDATE` locks it, in the order of the key's unique
/// index (the order of `ORDER BY key FOR UPDATE`, which the SQL path locks
/// with, so that two such calls never deadlock whichever path each takes),
/// and checked on its locked
/// version; the rows are written only once every one is there and stays in
/// bounds.  `rows` pairs a value of the (single) key column's type with a
/// numeric amount; a key may come more than once, and its amounts add up.
/// `Ok` with the number of distinct rows and of those a BEFORE trigger
/// skipped, once every row was written; `Err` with why not when none was
/// (the rows found stay locked).
///
/// # Safety
/// As for `add`; `rows` is the caller's, reordered and overwritten here.
pub unsafe fn add_to_all(
    target: &Target,
    rows: &mut [(pg_sys::Datum, pg_sys::Datum)],
) -> Result<(usize, usize), Outcome> {
    if target.nkeys != 1 || !target.shape.deterministic {
        return Err(Outcome::Fallback);
    }
    // SAFETY: the open target's executor state, index and slots; the
    // snapshot pushed here is popped before returning (or by the abort).
    unsafe {
        let rows = distinct(target, rows);
        // One snapshot and command id for every row, as the one statement
        // that would lock them.
        in_statement(&target.w, |snapshot| {
            let held = lock_all(target, rows, snapshot)?;
            let skipped = held
                .iter()
                .filter(|&&(found, value)| {
                    reset_per_tuple(target);
                    matches!(
                        write(&Target { w: Writer { found, ..target.w }, ..*target }, value, None),
                        Outcome::Skipped
                    )
                })
                .count();
            Ok((held.len(), skipped))
        })
    }
}

/// Sorts `rows` in the key index's order and merges the rows of equal keys
/// (adding their amounts) into the returned prefix.
///
/// # Safety
/// As for `add_to_all`.  The comparison is the support function of a
/// default btree operator class: it raises nothing that a sort of plain
/// pairs could leave half done.
unsafe fn distinct<'a>(
    target: &Target,
    rows: &'a mut [(pg_sys::Datum, pg_sys::Datum)],
) -> &'a mut [(pg_sys::Datum, pg_sys::Datum)] {
    // SAFETY: the open index's cached support function, on key values of
    // its input type (`key_index`); numeric amounts (the contract).
    unsafe {
        let compare = raw::index_getprocinfo(target.index, 1, BTORDER_PROC);
        let collation = target.shape.collation[0];
        let order = |a: pg_sys::Datum, b: pg_sys::Datum| {
            (raw::FunctionCall2Coll(compare, collation, a, b).value() as i32).cmp(&0)
        };
        rows.sort_unstable_by(|a, b| order(a.0, b.0));
        let mut n = 0;
        for i in 0..rows.len() {
            if n > 0 && order(rows[n - 1].0, rows[i].0).is_eq() {
                rows[n - 1].1 = call2(raw::numeric_add, rows[n - 1].1, rows[i].1);
            } else {
                rows[n] = rows[i];
                n += 1;
            }
        }
        &mut rows[..n]
    }
}

/// Locks each row of `rows` (distinct keys, in order), each into a slot of
/// its own, and checks its new value: the slots and values, or why a row
/// cannot be updated.
///
/// # Safety
/// As for `add_to_all`, with `snapshot` pushed.
unsafe fn lock_all<'a>(
    target: &Target,
    rows: &[(pg_sys::Datum, pg_sys::Datum)],
    snapshot: pg_sys::Snapshot,
) -> Result<&'a [(*mut pg_sys::TupleTableSlot, Option<Value>)], Outcome> {
    // SAFETY: slots of the target's relation, made in its executor state
    // (released by `close`); the array lives in the caller's memory context.
    unsafe {
        let held = raw::palloc0(size_of::<(*mut pg_sys::TupleTableSlot, Option<Value>)>() * rows.len())
            as *mut (*mut pg_sys::TupleTableSlot, Option<Value>);
        // Locked as the statements' `FOR UPDATE` locks them, so that a call
        // that falls back to them holds nothing they must upgrade (waiting,
        // say, for a foreign key's KEY SHARE that waits for this lock).
        let shape = Shape { lock_mode: pg_sys::LockTupleMode::LockTupleExclusive, ..target.shape };
        for (i, &(key, amount)) in rows.iter().enumerate() {
            let found = raw::table_slot_create(target.w.rel, &mut (*target.w.estate).es_tupleTable);
            let row = Target { w: Writer { found, ..target.w }, shape, ..*target };
            if !locate(&row, &[key], snapshot) {
                return Err(Outcome::Missing);
            }
            match lock(&row, snapshot) {
                Locked::Same => {}
                Locked::Later if !same_key(&row, &[key]) => return Err(Outcome::Missing),
                Locked::Later => {}
                Locked::Not(outcome) => return Err(outcome),
            }
            let value = computed(&row, (pg_sys::NUMERICOID, &[(1, amount)]));
            admissible(&row, value)?;
            // A copy of the row, which lets its buffer go: the rows of one
            // call may lie on more pages than there are shared buffers.
            let materialize = (*(*found).tts_ops).materialize.expect("a slot type materializes");
            materialize(found);
            held.add(i).write((found, value));
        }
        Ok(core::slice::from_raw_parts(held, rows.len()))
    }
}

/// The update of the row with `key` as the SQL statement makes it: the row
/// visible to `snapshot` is found and, when bounded, checked first (a row
/// whose visible version fails the check is refused without waiting for its
/// lock, as the statement's WHERE clause does), then locked and, when the
/// lock found a later version, checked again on it (EvalPlanQual's re-check).
///
/// # Safety
/// As for `add`.
unsafe fn update(target: &Target, key: &[pg_sys::Datum], amounts: Amounts, snapshot: pg_sys::Snapshot) -> Outcome {
    // SAFETY: the contract; the slot holds the row found, then the locked one.
    unsafe {
        if !locate(target, key, snapshot) {
            return Outcome::Missing;
        }
        let mut value = computed(target, amounts);
        if let Err(outcome) = admissible(target, value) {
            return outcome;
        }
        match lock(target, snapshot) {
            Locked::Same => {}
            Locked::Later if !same_key(target, key) => return Outcome::Missing,
            Locked::Later => {
                value = computed(target, amounts);
                if let Err(outcome) = admissible(target, value) {
                    return outcome;
                }
            }
            Locked::Not(outcome) => return outcome,
        }
        let second = if target.second == 0 { None } else { computed_of(target, target.second, amounts) };
        write(target, value, second)
    }
}

/// Finds the row visible to `snapshot` by the key, into `target.w.found`.
///
/// # Safety
/// As for `add`.
unsafe fn locate(target: &Target, key: &[pg_sys::Datum], snapshot: pg_sys::Snapshot) -> bool {
    // SAFETY: scan keys over the index's own equality procedures and
    // collations.
    unsafe {
        let mut scankeys: [pg_sys::ScanKeyData; MAX_KEYS] = core::mem::zeroed();
        for i in 0..target.nkeys {
            raw::ScanKeyEntryInitialize(
                &mut scankeys[i],
                0,
                (i + 1) as i16,
                pg_sys::BTEqualStrategyNumber as u16,
                target.shape.subtype[i],
                target.shape.collation[i],
                target.shape.eq[i],
                key[target.shape.position[i]],
            );
        }
        find(&target.w, target.index, &mut scankeys[..target.nkeys], snapshot)
    }
}

/// Finds the row visible to `snapshot` whose entry in `index` (a unique
/// index of the writer's table) matches `keys`, into `w.found`.
///
/// # Safety
/// `w` is from `begin`, `index` open; `keys` compare its columns.
pub unsafe fn find(
    w: &Writer,
    index: pg_sys::Relation,
    keys: &mut [pg_sys::ScanKeyData],
    snapshot: pg_sys::Snapshot,
) -> bool {
    // SAFETY: the contract; the scan is ended before returning.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        let scan = raw::index_beginscan(w.rel, index, snapshot, keys.len() as i32, 0);
        #[cfg(feature = "pg18")]
        let scan = raw::index_beginscan(w.rel, index, snapshot, core::ptr::null_mut(), keys.len() as i32, 0);
        raw::index_rescan(scan, keys.as_mut_ptr(), keys.len() as i32, core::ptr::null_mut(), 0);
        let found = raw::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, w.found);
        raw::index_endscan(scan);
        found
    }
}

pub enum Locked {
    /// The version found.
    Same,
    /// A later version (READ COMMITTED), now in the writer's `found` slot.
    Later,
    Not(Outcome),
}

/// Locks the row in `target.w.found` (its latest version under READ
/// COMMITTED, into the slot).
///
/// # Safety
/// As for `add`, with `target.w.found` holding the row found.
unsafe fn lock(target: &Target, snapshot: pg_sys::Snapshot) -> Locked {
    // SAFETY: the contract.
    unsafe { lock_found(&target.w, snapshot, target.shape.lock_mode) }
}

/// Locks the row in `w.found` in `mode`, as an UPDATE (or `FOR UPDATE`)
/// locks the row it found: under READ COMMITTED its latest version, into the
/// slot; under REPEATABLE READ and SERIALIZABLE raising 40001 when a
/// concurrent transaction changed or deleted it.
///
/// # Safety
/// `w` is from `begin`, with `w.found` holding a row visible to `snapshot`;
/// errors (a lock timeout, 40001) longjmp over the callers' frames.
pub unsafe fn lock_found(w: &Writer, snapshot: pg_sys::Snapshot, mode: pg_sys::LockTupleMode::Type) -> Locked {
    // SAFETY: the open relation's table access method, on the row found.
    unsafe {
        let repeatable = pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32;
        let flags = if repeatable { 0 } else { pg_sys::TUPLE_LOCK_FLAG_FIND_LAST_VERSION as u8 };
        let mut tid = (*w.found).tts_tid;
        let mut tmfd: pg_sys::TM_FailureData = core::mem::zeroed();
        let lock = (*(*w.rel).rd_tableam).tuple_lock.expect("a table access method locks tuples");
        let result = lock(
            w.rel,
            &mut tid,
            snapshot,
            w.found,
            (*w.estate).es_output_cid,
            mode,
            pg_sys::LockWaitPolicy::LockWaitBlock,
            flags,
            &mut tmfd,
        );
        match result {
            pg_sys::TM_Result::TM_Ok if tmfd.traversed => Locked::Later,
            pg_sys::TM_Result::TM_Ok => Locked::Same,
            pg_sys::TM_Result::TM_Deleted if !repeatable => Locked::Not(Outcome::Missing),
            pg_sys::TM_Result::TM_Updated | pg_sys::TM_Result::TM_Deleted if repeatable => {
                Error::ConcurrentUpdate { deleted: result == pg_sys::TM_Result::TM_Deleted }.raise()
            }
            // TM_SelfModified (the row changed by this very command, by a
            // trigger of the statement that queued the change, say) or
            // TM_Invisible: the UPDATE decides with its own rules.
            _ => Locked::Not(Outcome::Fallback),
        }
    }
}

/// Whether the locked version (a later one than the scan found) still has
/// `key`, as EvalPlanQual re-checks the UPDATE's condition.
///
/// # Safety
/// As for `add`, with `target.w.found` holding the locked row.
unsafe fn same_key(target: &Target, key: &[pg_sys::Datum]) -> bool {
    // SAFETY: the key columns of the locked row, compared with the index's
    // equality procedures.
    unsafe {
        (0..target.nkeys).all(|i| {
            let position = target.shape.position[i];
            let mut is_null = false;
            let value = pg_sys::slot_getattr(target.w.found, i32::from(target.key_atts[position]), &mut is_null);
            !is_null
                && raw::OidFunctionCall2Coll(target.shape.eq[i], target.shape.collation[i], value, key[position])
                    .value()
                    != 0
        })
    }
}

/// The row's new value in `target.w.found` with the amounts added (`None` for
/// NULL: NULL + amount is NULL, the UPDATE leaves a NULL column NULL).
///
/// # Safety
/// As for `add`, with `target.w.found` holding a row.
unsafe fn computed(target: &Target, amounts: Amounts) -> Option<Value> {
    // SAFETY: the contract.
    unsafe { computed_of(target, target.column, amounts) }
}

/// As `computed`, for `column` (the column or the second column, of the
/// same type).
///
/// # Safety
/// As for `computed`.
unsafe fn computed_of(target: &Target, column: i16, amounts: Amounts) -> Option<Value> {
    // SAFETY: the slot's column, of the column's type.
    unsafe {
        let mut is_null = false;
        let old = pg_sys::slot_getattr(target.w.found, i32::from(column), &mut is_null);
        (!is_null).then(|| new_value(target, old, amounts))
    }
}

/// Writes the locked row in `target.w.found` with `value` as its column (and
/// `second` as its second column, if any).
///
/// # Safety
/// As for `add`, with the row locked.
unsafe fn write(target: &Target, value: Option<Value>, second: Option<Value>) -> Outcome {
    // SAFETY: the new slot has the relation's descriptor; its values are the
    // locked row's (materialized in the slot) with the columns replaced.
    unsafe {
        let natts = (*(*target.w.rel).rd_att).natts as usize;
        if ((*target.w.found).tts_nvalid as usize) < natts {
            raw::slot_getsomeattrs_int(target.w.found, natts as i32);
        }
        let (old_values, old_nulls) = ((*target.w.found).tts_values, (*target.w.found).tts_isnull);
        let c = target.column as usize - 1;
        let clear = (*(*target.w.new).tts_ops).clear.expect("a slot type clears");
        clear(target.w.new);
        let (values, nulls) = ((*target.w.new).tts_values, (*target.w.new).tts_isnull);
        values.copy_from_nonoverlapping(old_values, natts);
        nulls.copy_from_nonoverlapping(old_nulls, natts);
        if let Some(value) = value {
            *values.add(c) = assigned(target, value);
        }
        if let Some(second) = second {
            *values.add(target.second as usize - 1) = assigned(target, second);
        }
        if rewrite(&target.w) {
            Outcome::Updated
        } else {
            Outcome::Skipped
        }
    }
}

/// Writes the values in `w.new` (filled by the caller, of the table's
/// descriptor) as the new version of the locked row in `w.found`: whether
/// it was written (not skipped by a BEFORE trigger).
///
/// # Safety
/// `w` is from `begin`, inside `in_statement`, with `w.found` holding the
/// row locked by `lock_found` and `w.new` cleared and filled; errors (a
/// constraint, a trigger) longjmp over the callers' frames.
pub unsafe fn rewrite(w: &Writer) -> bool {
    // SAFETY: the contract.
    unsafe {
        raw::ExecStoreVirtualTuple(w.new);
        ExecSimpleRelationUpdate(w.result, w.estate, w.epq, w.found, w.new);
        // The table access method sets the new version's TID; a skipping
        // BEFORE trigger leaves the cleared slot's invalid one.
        (*w.new).tts_tid.ip_posid != 0
    }
}

/// Inserts the values in `w.new` (filled by the caller, of the table's
/// descriptor) as a new row, with its index entries.
///
/// # Safety
/// `w` is from `begin`, inside `in_statement`, with `w.new` cleared and
/// filled; errors (a constraint, a unique violation) longjmp over the
/// callers' frames.
pub unsafe fn insert(w: &Writer) {
    // SAFETY: the contract.
    unsafe {
        raw::ExecStoreVirtualTuple(w.new);
        ExecSimpleRelationInsert(w.result, w.estate, w.new);
    }
}

/// `old + s1 * a1 + s2 * a2 …` as SQL computes it: in the widest integer type
/// of the operands (at least integer, as `int4 * amount` makes it), raising
/// its overflow error at each step, or in numeric when either is numeric.
///
/// # Safety
/// `old` is a value of the column's type, the amounts of the amount type.
unsafe fn new_value(target: &Target, old: pg_sys::Datum, (amount_type, terms): Amounts) -> Value {
    // SAFETY: values of the types the contract gives them.
    unsafe {
        if is_integer(target.shape.column_type) && is_integer(amount_type) {
            let wide = target.shape.column_type == pg_sys::INT8OID || amount_type == pg_sys::INT8OID;
            let mut value = integer(target.shape.column_type, old);
            for &(sign, amount) in terms {
                value += i128::from(sign) * integer(amount_type, amount);
                let fits = if wide { i64::try_from(value).is_ok() } else { i32::try_from(value).is_ok() };
                if !fits {
                    Error::IntegerOutOfRange { type_name: if wide { "bigint" } else { "integer" } }.raise();
                }
            }
            return Value::Int(value);
        }
        let mut value = to_numeric(target.shape.column_type, old);
        for &(sign, amount) in terms {
            let amount = to_numeric(amount_type, amount);
            // -1 * a keeps a's scale, as numeric_uminus does.
            let amount = if sign < 0 { call1(raw::numeric_uminus, amount) } else { amount };
            value = call2(raw::numeric_add, value, amount);
        }
        Value::Numeric(value)
    }
}

/// `value` assigned to the column: cast to its type (and typmod).
///
/// # Safety
/// A value `new_value` made for `target`.
unsafe fn assigned(target: &Target, value: Value) -> pg_sys::Datum {
    // SAFETY: built-in numeric functions on numerics.
    unsafe {
        match value {
            Value::Int(value) => {
                let (fits, name) = match target.shape.column_type {
                    pg_sys::INT2OID => (i16::try_from(value).is_ok(), "smallint"),
                    pg_sys::INT4OID => (i32::try_from(value).is_ok(), "integer"),
                    _ => (i64::try_from(value).is_ok(), "bigint"),
                };
                if !fits {
                    Error::IntegerOutOfRange { type_name: name }.raise();
                }
                pg_sys::Datum::from(value as i64)
            }
            Value::Numeric(sum) => match target.shape.column_type {
                pg_sys::INT2OID => call1(raw::numeric_int2, sum),
                pg_sys::INT4OID => call1(raw::numeric_int4, sum),
                pg_sys::INT8OID => call1(raw::numeric_int8, sum),
                _ if target.shape.column_typmod >= 0 => raw::DirectFunctionCall2Coll(
                    Some(raw::numeric),
                    pg_sys::InvalidOid,
                    sum,
                    pg_sys::Datum::from(target.shape.column_typmod),
                ),
                _ => sum,
            },
        }
    }
}

/// Whether the row in `target.w.found` may take `value`: within its bounds,
/// and, where the stock guard is not fired, with a stock its rule allows.
///
/// # Safety
/// As for `out_of_bounds`.
unsafe fn admissible(target: &Target, value: Option<Value>) -> Result<(), Outcome> {
    // SAFETY: the contract.
    if let Some(bounds) = unsafe { out_of_bounds(target, value) } {
        return Err(Outcome::OutOfBounds(bounds));
    }
    if target.stock_sanctioned && target.shape.column_type == pg_sys::NUMERICOID {
        let mut is_null = false;
        // SAFETY: the slot's bound column, a numeric (in bounds: not NULL).
        let stock = unsafe { pg_sys::slot_getattr(target.w.found, i32::from(target.bound), &mut is_null) };
        if crate::quantities::is_nan(pg_sys::NUMERICOID, stock) {
            return Err(Outcome::Fallback);
        }
    }
    Ok(())
}

/// `Some` when the target is bounded and `value >= 0 AND value <= bound`
/// does not hold on the row in `target.w.found` (NULL does not).
///
/// # Safety
/// `value` made by `computed` from the row in `target.w.found`.
unsafe fn out_of_bounds(target: &Target, value: Option<Value>) -> Option<Bounds> {
    if target.bound == 0 {
        return None;
    }
    // SAFETY: the slot's bound column, of the column's type; values of the
    // types the contract gives them.
    unsafe {
        let mut is_null = false;
        let bound = pg_sys::slot_getattr(target.w.found, i32::from(target.bound), &mut is_null);
        let bound = (!is_null).then_some(bound);
        let (below_zero, above_bound) = match value {
            None => (None, None),
            Some(Value::Int(v)) => (Some(v < 0), bound.map(|b| v > integer(target.shape.column_type, b))),
            Some(Value::Numeric(v)) => {
                let zero = call1(raw::int4_numeric, pg_sys::Datum::from(0));
                let cmp = |a, b| call2(raw::numeric_cmp, a, b).value() as i32;
                (Some(cmp(v, zero) < 0), bound.map(|b| cmp(v, to_numeric(target.shape.column_type, b)) > 0))
            }
        };
        if below_zero == Some(false) && above_bound == Some(false) {
            return None;
        }
        let text = |value: Value| match value {
            Value::Int(v) => v.to_string(),
            Value::Numeric(v) => numeric_text(v),
        };
        let bound_text = bound.map(|b| match target.shape.column_type {
            pg_sys::NUMERICOID => numeric_text(b),
            typid => integer(typid, b).to_string(),
        });
        Some(Bounds { value: value.map(text), bound: bound_text, below_zero: below_zero == Some(true) })
    }
}

/// # Safety
/// `value` is a numeric.
pub unsafe fn numeric_text(value: pg_sys::Datum) -> String {
    // SAFETY: numeric_out returns a palloc'd C string.
    unsafe {
        let text = call1(raw::numeric_out, value);
        core::ffi::CStr::from_ptr(text.cast_mut_ptr()).to_string_lossy().into_owned()
    }
}

/// # Safety
/// `value` is a datum of integer type `typid`.
unsafe fn integer(typid: pg_sys::Oid, value: pg_sys::Datum) -> i128 {
    match typid {
        pg_sys::INT2OID => i128::from(value.value() as i16),
        pg_sys::INT4OID => i128::from(value.value() as i32),
        _ => i128::from(value.value() as i64),
    }
}

/// # Safety
/// `value` is a datum of type `typid`, an integer type or numeric.
pub unsafe fn to_numeric(typid: pg_sys::Oid, value: pg_sys::Datum) -> pg_sys::Datum {
    // SAFETY: the cast functions of the value's type.
    unsafe {
        match typid {
            pg_sys::INT2OID => call1(raw::int2_numeric, value),
            pg_sys::INT4OID => call1(raw::int4_numeric, value),
            pg_sys::INT8OID => call1(raw::int8_numeric, value),
            _ => value,
        }
    }
}

pub(crate) type Builtin = unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum;

/// # Safety
/// `f` is a strict built-in function of one argument, which `arg` is.
pub(crate) unsafe fn call1(f: Builtin, arg: pg_sys::Datum) -> pg_sys::Datum {
    // SAFETY: the contract; the built-ins used here return no NULL.
    unsafe { raw::DirectFunctionCall1Coll(Some(f), pg_sys::InvalidOid, arg) }
}

/// # Safety
/// `f` is a strict built-in function of two arguments, which `a` and `b` are.
pub(crate) unsafe fn call2(f: Builtin, a: pg_sys::Datum, b: pg_sys::Datum) -> pg_sys::Datum {
    // SAFETY: the contract; the built-ins used here return no NULL.
    unsafe { raw::DirectFunctionCall2Coll(Some(f), pg_sys::InvalidOid, a, b) }
}

/// Fires the AFTER row triggers the updates queued and releases the target.
///
/// # Safety
/// `target` is open; errors of the AFTER triggers longjmp as for `add`.
pub unsafe fn close(target: Target) {
    // SAFETY: the contract.
    unsafe { end(target.w) }
}
