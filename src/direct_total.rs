//! A maintained total's target row updated without SPI, the way logical
//! replication's apply worker updates a row: found by the primary key
//! index, locked, and written by
//! `ExecSimpleRelationUpdate`, which fires the target's row triggers, checks
//! its constraints and updates its indexes.  It saves the executor start and
//! end of a planned UPDATE per target row.
//!
//! It behaves as the SPI `UPDATE target SET total = total + $1 WHERE key = $2`:
//! a new snapshot and command id per row (as SPI takes for a non-read-only
//! statement); the row visible to it is locked (no-key exclusive, or exclusive
//! when the total is in a key index), READ COMMITTED following the update
//! chain to the latest version and re-checking its key (EvalPlanQual's
//! re-check), REPEATABLE READ and SERIALIZABLE raising 40001 on a concurrent
//! update or delete; the total is computed with numeric addition and the
//! assignment cast back to the column's type; a BEFORE UPDATE trigger that
//! returns NULL leaves the row unwritten, which the caller turns into 27000.
//!
//! Targets with what the direct path would not reproduce take the SPI path:
//! not a plain table, rules, row-level security, missing table privileges,
//! statement-level UPDATE triggers or transition tables, column-specific
//! UPDATE triggers, stored generated columns, a total that is not
//! smallint/integer/bigint/numeric, or no primary key made of the key columns.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

use crate::error::Error;

/// `pg_integrity.direct_total_updates` (default on): off sends every update
/// through SPI, so that both paths can be measured side by side in one
/// cluster and the SPI path stays tested.
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn init() {
    GucRegistry::define_bool_guc(
        c"pg_integrity.direct_total_updates",
        c"Updates maintained totals without SPI where the target allows it.",
        c"",
        &ENABLED,
        GucContext::Userset,
        GucFlags::default(),
    );
}

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
    fn AfterTriggerEndQuery(estate: *mut pg_sys::EState);
}

/// The functions of the direct path, declared without pgrx's error trap:
/// a trapped call costs a `sigsetjmp` and a thread check (some hundred
/// instructions, a tenth of the path with forty calls per row).  Their errors
/// longjmp over the callers' frames, which hold nothing that needs dropping
/// (the contracts of `open`, `add` and `close`).
mod raw {
    use pgrx::pg_sys::*;
    unsafe extern "C-unwind" {
        pub fn table_open(relationId: Oid, lockmode: LOCKMODE) -> Relation;
        pub fn table_close(relation: Relation, lockmode: LOCKMODE);
        pub fn GetUserId() -> Oid;
        pub fn pg_class_aclcheck(table_oid: Oid, roleid: Oid, mode: AclMode) -> AclResult::Type;
        #[cfg(not(feature = "pg18"))]
        pub fn RelationGetPrimaryKeyIndex(relation: Relation) -> Oid;
        #[cfg(feature = "pg18")]
        pub fn RelationGetPrimaryKeyIndex(relation: Relation, deferrable_ok: bool) -> Oid;
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
    }
}

/// Key columns a target can have (as `totals::MAX_KEYS`).
const MAX_KEYS: usize = 8;

/// An open target: plain pointers into executor memory of the current
/// context, released by `close` or, when an update fails, by the abort.
#[derive(Clone, Copy)]
pub struct Direct {
    rel: pg_sys::Relation,
    index: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    result: *mut pg_sys::ResultRelInfo,
    epq: *mut pg_sys::EPQState,
    found: *mut pg_sys::TupleTableSlot,
    new: *mut pg_sys::TupleTableSlot,
    nkeys: usize,
    eq: [pg_sys::RegProcedure; MAX_KEYS],
    collation: [pg_sys::Oid; MAX_KEYS],
    subtype: [pg_sys::Oid; MAX_KEYS],
    key_atts: [i16; MAX_KEYS],
    total_att: i16,
    total_type: pg_sys::Oid,
    total_typmod: i32,
    lock_mode: pg_sys::LockTupleMode::Type,
}

pub enum Outcome {
    Updated,
    /// No row with the key (visible, or left after a concurrent change).
    Missing,
    /// A BEFORE UPDATE trigger returned NULL.
    Skipped,
}

/// Opens `target` for direct updates of column `total_att`, keyed by
/// `key_atts` in order; `None` when the SPI path must do it.
///
/// # Safety
/// Inside a transaction, in a memory context that lives until `close`.
pub unsafe fn open(target: pg_sys::Oid, total_att: i16, key_atts: &[i16]) -> Option<Direct> {
    if !ENABLED.get() || key_atts.len() > MAX_KEYS {
        return None;
    }
    // SAFETY: the relation is opened with the lock an UPDATE takes and kept
    // locked until the transaction ends (as the UPDATE would); every catalog
    // structure read belongs to the open relation.
    unsafe {
        let rel = raw::table_open(target, pg_sys::RowExclusiveLock as i32);
        let form = &*(*rel).rd_rel;
        let user = raw::GetUserId();
        let attribute = *crate::trigger::tuple_desc_attr((*rel).rd_att, total_att);
        let constr = (*(*rel).rd_att).constr;
        let plain = form.relkind == pg_sys::RELKIND_RELATION as core::ffi::c_char
            && (*rel).rd_rules.is_null()
            && !form.relrowsecurity
            && raw::pg_class_aclcheck(target, user, pg_sys::ACL_SELECT as pg_sys::AclMode)
                == pg_sys::AclResult::ACLCHECK_OK
            && raw::pg_class_aclcheck(target, user, pg_sys::ACL_UPDATE as pg_sys::AclMode)
                == pg_sys::AclResult::ACLCHECK_OK
            && (constr.is_null() || !(*constr).has_generated_stored)
            && matches!(attribute.atttypid, pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID | pg_sys::NUMERICOID)
            && triggers_allow((*rel).trigdesc);
        if !plain {
            raw::table_close(rel, pg_sys::NoLock as i32);
            return None;
        }
        #[cfg(any(feature = "pg14", feature = "pg15", feature = "pg16", feature = "pg17"))]
        let pk = raw::RelationGetPrimaryKeyIndex(rel);
        #[cfg(feature = "pg18")]
        let pk = raw::RelationGetPrimaryKeyIndex(rel, false);
        if pk == pg_sys::InvalidOid {
            raw::table_close(rel, pg_sys::NoLock as i32);
            return None;
        }
        let keys = raw::RelationGetIndexAttrBitmap(rel, pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_KEY);
        let lock_mode = if raw::bms_is_member(i32::from(total_att) - pg_sys::FirstLowInvalidHeapAttributeNumber, keys) {
            pg_sys::LockTupleMode::LockTupleExclusive
        } else {
            pg_sys::LockTupleMode::LockTupleNoKeyExclusive
        };

        let estate = raw::CreateExecutorState();
        (*estate).es_output_cid = raw::GetCurrentCommandId(true);
        let result = raw::palloc0(size_of::<pg_sys::ResultRelInfo>()) as *mut pg_sys::ResultRelInfo;
        // Range table index 0: no updated-columns set, which only
        // column-specific triggers (refused above) and generated columns
        // (refused above) would read.
        raw::InitResultRelInfo(result, rel, 0, core::ptr::null_mut(), 0);
        // Registered as the statement's result relation, so that the AFTER
        // trigger events it queues find it instead of opening the table again.
        (*estate).es_opened_result_relations = raw::lappend(core::ptr::null_mut(), result.cast());
        raw::ExecOpenIndices(result, false);
        let mut index = core::ptr::null_mut();
        for i in 0..(*result).ri_NumIndices as usize {
            let candidate = *(*result).ri_IndexRelationDescs.add(i);
            if (*candidate).rd_id == pk {
                index = candidate;
            }
        }
        let mut direct = Direct {
            rel,
            index,
            estate,
            result,
            epq: core::ptr::null_mut(),
            found: core::ptr::null_mut(),
            new: core::ptr::null_mut(),
            nkeys: key_atts.len(),
            eq: [pg_sys::InvalidOid; MAX_KEYS],
            collation: [pg_sys::InvalidOid; MAX_KEYS],
            subtype: [pg_sys::InvalidOid; MAX_KEYS],
            key_atts: [0; MAX_KEYS],
            total_att,
            total_type: attribute.atttypid,
            total_typmod: attribute.atttypmod,
            lock_mode,
        };
        direct.key_atts[..key_atts.len()].copy_from_slice(key_atts);
        let matches = !index.is_null() && {
            let form = &*(*index).rd_index;
            let indkey = form.indkey.values.as_slice(form.indnatts as usize);
            form.indnkeyatts as usize == key_atts.len()
                && key_atts.iter().zip(indkey).all(|(a, b)| *a == *b)
                && (0..key_atts.len()).all(|i| {
                    let family = *(*index).rd_opfamily.add(i);
                    let input = *(*index).rd_opcintype.add(i);
                    let op = raw::get_opfamily_member(family, input, input, pg_sys::BTEqualStrategyNumber as i16);
                    direct.eq[i] = if op == pg_sys::InvalidOid { op } else { raw::get_opcode(op) };
                    direct.collation[i] = *(*index).rd_indcollation.add(i);
                    direct.subtype[i] = input;
                    direct.eq[i] != pg_sys::InvalidOid
                })
        };
        if !matches {
            raw::ExecCloseResultRelations(estate);
            raw::FreeExecutorState(estate);
            raw::table_close(rel, pg_sys::NoLock as i32);
            return None;
        }
        direct.epq = raw::palloc0(size_of::<pg_sys::EPQState>()) as *mut pg_sys::EPQState;
        #[cfg(any(feature = "pg14", feature = "pg15"))]
        raw::EvalPlanQualInit(direct.epq, estate, core::ptr::null_mut(), core::ptr::null_mut(), -1);
        #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
        raw::EvalPlanQualInit(
            direct.epq,
            estate,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            -1,
            core::ptr::null_mut(),
        );
        direct.found = raw::table_slot_create(rel, &mut (*estate).es_tupleTable);
        direct.new = raw::ExecInitExtraTupleSlot(estate, (*rel).rd_att, &raw const pg_sys::TTSOpsVirtual);
        raw::AfterTriggerBeginQuery();
        Some(direct)
    }
}

/// Whether the target's UPDATE triggers are all row triggers that the direct
/// path fires as the UPDATE would.
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
        (0..t.numtriggers as usize).all(|i| (*t.triggers.add(i)).tgnattr == 0)
    }
}

/// Adds the numeric `delta` to the total of the row with `key`.
///
/// # Safety
/// `direct` is open; `key` holds a value of each key column's type.  Errors
/// (a constraint, a trigger, a lock timeout) longjmp over the callers'
/// frames, which must hold nothing that needs dropping.
pub unsafe fn add(direct: &Direct, key: &[pg_sys::Datum], delta: pg_sys::Datum) -> Outcome {
    // SAFETY: the open target's executor state, slots and index; the snapshot
    // pushed here is popped before returning (or by the abort).
    unsafe {
        // As SPI does for each statement that may write: see the writes made
        // so far (the source statement's, the previous rows'), with a new
        // snapshot under READ COMMITTED.
        raw::CommandCounterIncrement();
        raw::PushActiveSnapshot(raw::GetTransactionSnapshot());
        raw::UpdateActiveSnapshotCommandId();
        let snapshot = raw::GetActiveSnapshot();
        (*direct.estate).es_snapshot = snapshot;
        (*direct.estate).es_output_cid = raw::GetCurrentCommandId(true);
        let outcome = locate_and_lock(direct, key, snapshot);
        let outcome = match outcome {
            Outcome::Updated => write(direct, delta),
            other => other,
        };
        raw::PopActiveSnapshot();
        raw::CommandCounterIncrement();
        outcome
    }
}

/// Finds the row visible to `snapshot` by the primary key and locks it into
/// `direct.found` (its latest version under READ COMMITTED).
///
/// # Safety
/// As for `add`.
unsafe fn locate_and_lock(direct: &Direct, key: &[pg_sys::Datum], snapshot: pg_sys::Snapshot) -> Outcome {
    // SAFETY: scan keys over the index's own equality procedures and
    // collations; the scan is ended before returning.
    unsafe {
        let mut scankeys: [pg_sys::ScanKeyData; MAX_KEYS] = core::mem::zeroed();
        for i in 0..direct.nkeys {
            raw::ScanKeyEntryInitialize(
                &mut scankeys[i],
                0,
                (i + 1) as i16,
                pg_sys::BTEqualStrategyNumber as u16,
                direct.subtype[i],
                direct.collation[i],
                direct.eq[i],
                key[i],
            );
        }
        #[cfg(not(feature = "pg18"))]
        let scan = raw::index_beginscan(direct.rel, direct.index, snapshot, direct.nkeys as i32, 0);
        #[cfg(feature = "pg18")]
        let scan =
            raw::index_beginscan(direct.rel, direct.index, snapshot, core::ptr::null_mut(), direct.nkeys as i32, 0);
        raw::index_rescan(scan, scankeys.as_mut_ptr(), direct.nkeys as i32, core::ptr::null_mut(), 0);
        let found = raw::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, direct.found);
        raw::index_endscan(scan);
        if !found {
            return Outcome::Missing;
        }
        let repeatable = pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32;
        let flags = if repeatable { 0 } else { pg_sys::TUPLE_LOCK_FLAG_FIND_LAST_VERSION as u8 };
        let mut tid = (*direct.found).tts_tid;
        let mut tmfd: pg_sys::TM_FailureData = core::mem::zeroed();
        let lock = (*(*direct.rel).rd_tableam).tuple_lock.expect("a table access method locks tuples");
        let result = lock(
            direct.rel,
            &mut tid,
            snapshot,
            direct.found,
            (*direct.estate).es_output_cid,
            direct.lock_mode,
            pg_sys::LockWaitPolicy::LockWaitBlock,
            flags,
            &mut tmfd,
        );
        match result {
            pg_sys::TM_Result::TM_Ok if tmfd.traversed && !same_key(direct, key) => Outcome::Missing,
            pg_sys::TM_Result::TM_Ok => Outcome::Updated,
            pg_sys::TM_Result::TM_Deleted if !repeatable => Outcome::Missing,
            pg_sys::TM_Result::TM_Updated | pg_sys::TM_Result::TM_Deleted if repeatable => {
                Error::ConcurrentUpdate { deleted: result == pg_sys::TM_Result::TM_Deleted }.raise()
            }
            other => Error::UnexpectedResult { what: "locking a total's row", result: format!("{other}") }.raise(),
        }
    }
}

/// Whether the locked version (a later one than the scan found) still has
/// `key`, as EvalPlanQual re-checks the UPDATE's condition.
///
/// # Safety
/// As for `add`, with `direct.found` holding the locked row.
unsafe fn same_key(direct: &Direct, key: &[pg_sys::Datum]) -> bool {
    // SAFETY: the key columns of the locked row, compared with the index's
    // equality procedures.
    unsafe {
        (0..direct.nkeys).all(|i| {
            let mut is_null = false;
            let value = pg_sys::slot_getattr(direct.found, i32::from(direct.key_atts[i]), &mut is_null);
            !is_null && raw::OidFunctionCall2Coll(direct.eq[i], direct.collation[i], value, key[i]).value() != 0
        })
    }
}

/// Writes the locked row in `direct.found` with `delta` added to its total.
///
/// # Safety
/// As for `add`, with the row locked.
unsafe fn write(direct: &Direct, delta: pg_sys::Datum) -> Outcome {
    // SAFETY: the new slot has the relation's descriptor; its values are the
    // locked row's (materialized in the slot) with the total replaced.
    unsafe {
        let natts = (*(*direct.rel).rd_att).natts as usize;
        if ((*direct.found).tts_nvalid as usize) < natts {
            raw::slot_getsomeattrs_int(direct.found, natts as i32);
        }
        let clear = (*(*direct.new).tts_ops).clear.expect("a slot type clears");
        clear(direct.new);
        let (values, nulls) = ((*direct.new).tts_values, (*direct.new).tts_isnull);
        values.copy_from_nonoverlapping((*direct.found).tts_values, natts);
        nulls.copy_from_nonoverlapping((*direct.found).tts_isnull, natts);
        let t = direct.total_att as usize - 1;
        // NULL + delta is NULL: the UPDATE leaves a NULL total NULL.
        if !*nulls.add(t) {
            *values.add(t) = new_total(direct, *values.add(t), delta);
        }
        raw::ExecStoreVirtualTuple(direct.new);
        ExecSimpleRelationUpdate(direct.result, direct.estate, direct.epq, direct.found, direct.new);
        // The table access method sets the new version's TID; a skipping
        // BEFORE trigger leaves the cleared slot's invalid one.
        if (*direct.new).tts_tid.ip_posid == 0 {
            Outcome::Skipped
        } else {
            Outcome::Updated
        }
    }
}

/// `total + delta` as the UPDATE computes it: both as numeric, and the sum
/// assigned back to the column's type (and typmod).
///
/// # Safety
/// `total` is a value of the total column's type, `delta` a numeric.
unsafe fn new_total(direct: &Direct, total: pg_sys::Datum, delta: pg_sys::Datum) -> pg_sys::Datum {
    let none = pg_sys::InvalidOid;
    // SAFETY: built-in numeric functions on values of their argument types
    // (the contract); none returns NULL.
    unsafe {
        let old = match direct.total_type {
            pg_sys::INT2OID => raw::DirectFunctionCall1Coll(Some(raw::int2_numeric), none, total),
            pg_sys::INT4OID => raw::DirectFunctionCall1Coll(Some(raw::int4_numeric), none, total),
            pg_sys::INT8OID => raw::DirectFunctionCall1Coll(Some(raw::int8_numeric), none, total),
            _ => total,
        };
        let sum = raw::DirectFunctionCall2Coll(Some(raw::numeric_add), none, old, delta);
        match direct.total_type {
            pg_sys::INT2OID => raw::DirectFunctionCall1Coll(Some(raw::numeric_int2), none, sum),
            pg_sys::INT4OID => raw::DirectFunctionCall1Coll(Some(raw::numeric_int4), none, sum),
            pg_sys::INT8OID => raw::DirectFunctionCall1Coll(Some(raw::numeric_int8), none, sum),
            _ if direct.total_typmod >= 0 => {
                raw::DirectFunctionCall2Coll(Some(raw::numeric), none, sum, pg_sys::Datum::from(direct.total_typmod))
            }
            _ => sum,
        }
    }
}

/// Fires the AFTER row triggers the updates queued and releases the target.
///
/// # Safety
/// `direct` is open; errors of the AFTER triggers longjmp as for `add`.
pub unsafe fn close(direct: Direct) {
    // SAFETY: the executor state made by `open`, released once.
    unsafe {
        AfterTriggerEndQuery(direct.estate);
        raw::EvalPlanQualEnd(direct.epq);
        raw::ExecCloseResultRelations(direct.estate);
        raw::ExecResetTupleTable((*direct.estate).es_tupleTable, false);
        raw::FreeExecutorState(direct.estate);
        raw::table_close(direct.rel, pg_sys::NoLock as i32);
    }
}
