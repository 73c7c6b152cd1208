//! `integrity.enable_hash_chain`: rows that carry the proof of what came
//! before them.
//!
//! `BEFORE INSERT … FOR EACH ROW` fills in the row's sequence number within its
//! chain and its hash, SHA-256 of the previous row's hash and of the row's
//! canonical encoding:
//!
//! 1. the trigger takes the chain's lock, a heavyweight lock held until the
//!    transaction ends (`LockAcquire`, see `lock_chain`): inserts into one
//!    chain queue on it, inserts into different chains never wait for each
//!    other, and a chain without rows (new, or emptied by a retention purge)
//!    is locked like any other;
//! 2. it reads the chain's last row through the chain index
//!    (`<table>_chain`, on the chain columns and the sequence column) and
//!    hashes the last row's hash with the row's encoding (an expression
//!    compiled from the SQL that `integrity._chain_statements()` writes, as
//!    it writes the encoding `verify_chain()` checks).  Without a row to
//!    link to (a new chain, one a retention purge emptied: the anchor in
//!    `integrity.chain_anchors`), without the index (a partition, whose chain
//!    spans the partitioned table) or after a row inserted out of band, the
//!    statement `link` does all of it in SQL.  Either way it works as the
//!    table's owner, as PostgreSQL's foreign-key checks do (a role that may
//!    only INSERT still chains its rows), on a snapshot taken after the lock:
//!    under READ COMMITTED that one sees the row of the previous holder of
//!    the lock, which committed (and became visible) before it let the lock
//!    go.
//!
//! A REPEATABLE READ or SERIALIZABLE snapshot may be older than the chain's
//! last row: `link` runs on the latest snapshot as well, and when the two
//! disagree the insert fails with 40001, which clients retry.
//!
//! Rows applied by logical replication keep the hashes their origin gave them:
//! the trigger fires on origin writes only.

use core::ffi::{c_char, c_int, c_void, CStr};
use std::cell::{Cell, RefCell};

use pgrx::pg_sys;

use crate::backend_map::Map;
use pgrx::{FromDatum, IntoDatum, PgSqlErrorCode};

use crate::chain_encoding::{self, link_hash};
use crate::error::{Error, Refusal, Registration};
use crate::fmgr::{
    begin_index_scan, execute_plan, pin_search_path, pinned_if, prepare, prepare_kept, result_text, result_value,
    select, set_locally, spi_connect, spi_finish, KeptPlans,
};
use crate::invalidation;
use crate::trigger::{relation_owner, trigger_entry, tuple_desc_attr, Firing, Verdict};

trigger_entry!(
    /// `BEFORE INSERT FOR EACH ROW`, arguments `(seq_column, hash_column, chain_column…)`.
    integrity_hash_chain_guard,
    pg_finfo_integrity_hash_chain_guard,
    chain_row
);

/// Chain columns a table can have.
const MAX_CHAIN_COLUMNS: usize = 8;
/// `locktag_field4` (`objsubid` in `pg_locks`) of the lock of one chain, and of
/// the lock of all chains of a partitioned table: the advisory locks of
/// `pg_advisory_lock()` and its kin have 1 or 2 there, so these never meet a
/// lock that a user takes.
const CHAIN_LOCK_CLASS: u16 = 0x4843;
const TABLE_CHAINS_LOCK_CLASS: u16 = 0x4844;
/// Chains of one table a transaction locks one by one; past this many it
/// locks all of the table's chains at once, so that a bulk load takes a
/// bounded number of entries in the shared lock table.
const CHAIN_LOCKS_PER_TABLE: u32 = 250;
/// Chain tails a backend remembers (`HINTS`).
const TAIL_HINTS: usize = 4096;

/// Resolved once per trigger (and catalog generation) and kept in `PLANS_BY_TRIGGER`;
/// each statement (per partition) copies it into `fn_extra`, with its hash
/// functions looked up in the statement's memory.
#[repr(C)]
#[derive(Clone, Copy)]
struct ChainPlan {
    link: pg_sys::SPIPlanPtr,
    /// The registered table the chain lives in (the root of a partitioned one).
    chained: pg_sys::Oid,
    owner: pg_sys::Oid,
    seq_att: i16,
    hash_att: i16,
    nchain: usize,
    chain_atts: [i16; MAX_CHAIN_COLUMNS],
    /// The chain columns' hash functions, and the statement's lookups of
    /// them (zeroed in the kept plan: they live in the statement's memory).
    chain_hash_oids: [pg_sys::Oid; MAX_CHAIN_COLUMNS],
    chain_hash_procs: [pg_sys::FmgrInfo; MAX_CHAIN_COLUMNS],
    chain_collations: [pg_sys::Oid; MAX_CHAIN_COLUMNS],
    /// The index the trigger reads a chain's last row by itself: on (chain
    /// columns…, seq_column) of the table it fires on, when that is the
    /// chained table (not a partition of it).  `InvalidOid` when there is
    /// none: the link statement reads the row then.
    tail_index: pg_sys::Oid,
    /// The index's equality functions and collations for the chain columns.
    tail_procs: [pg_sys::RegProcedure; MAX_CHAIN_COLUMNS],
    tail_collations: [pg_sys::Oid; MAX_CHAIN_COLUMNS],
    /// The index's `>=` function for the sequence column.
    tail_seq_ge: pg_sys::RegProcedure,
    /// The row's encoding, evaluated without a statement when the tail index
    /// is there.
    encoding: Option<Encoding>,
    /// Reading the last row and encoding this one without a statement runs
    /// code that reads the search path (a `regclass` written) or that a user
    /// wrote (an output function, an operator class's function): it runs with
    /// the search path pinned then, as the link statement always does.
    direct_pins_path: bool,
    row_type: pg_sys::Oid,
    /// The trigger fires on a partition of the chained table (or of one of its
    /// partitions), whose inserts need not lock the chained table itself.
    on_partition: bool,
}

/// The expression `integrity._chain_statements()` encodes a row with
/// (parameter `$1`, the row), compiled in a memory context of its own.
#[derive(Clone, Copy)]
struct Encoding {
    context: pg_sys::MemoryContext,
    state: *mut pg_sys::ExprState,
    econtext: *mut pg_sys::ExprContext,
    params: pg_sys::ParamListInfo,
    /// Some value is written by a function other than `_chain_encoding()`'s
    /// own code (`chain_encoding::written_here`).
    calls_out: bool,
}

thread_local! {
    /// The link statement prepared by trigger OID, with the SQL it was
    /// prepared from.
    static PLANS: KeptPlans<pg_sys::Oid, String> = KeptPlans::default();
    /// The statements of a table and the table its chain is registered on, by
    /// table, with the invalidation generation they were read at: reading
    /// them is a catalog query, too slow to run for every INSERT statement.
    static STATEMENTS: RefCell<Map<pg_sys::Oid, (u64, Statements)>> = RefCell::new(Map::default());
    /// The chain locks this transaction took, by table; emptied when it ends.
    static CHAIN_LOCKS: RefCell<Map<pg_sys::Oid, u32>> = RefCell::new(Map::default());
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// A row's encoding is being evaluated: an insert into a chained table
    /// from inside it (a type's output function could) runs the link
    /// statement, since the compiled expression is not reentrant.  Cleared
    /// when the transaction ends, should the evaluation have raised.
    static ENCODING: Cell<bool> = const { Cell::new(false) };
    /// Each trigger's plan, by the invalidation generation it was made at:
    /// resolving it is catalog lookups, too slow to run for every INSERT
    /// statement (most insert one row).
    static PLANS_BY_TRIGGER: RefCell<Map<pg_sys::Oid, (u64, ChainPlan)>> = RefCell::new(Map::default());
    /// The encoding of each trigger's rows, with the SQL it was compiled from
    /// and the invalidation generation it was compiled at (a column's type
    /// may have changed since).
    static ENCODINGS: RefCell<Map<pg_sys::Oid, (String, u64, Encoding)>> = RefCell::new(Map::default());
    /// The last sequence number this backend found in a chain, by chained
    /// table and chain lock key, in `TAIL_HINTS` slots (a chain takes the
    /// place of another whose slot it shares): where the next read of the
    /// chain's last row starts (`last_row`).  Only a hint, never trusted.
    static HINTS: RefCell<Vec<(pg_sys::Oid, u32, i64)>> = const { RefCell::new(Vec::new()) };
}

/// # Safety
/// The callers' frames hold nothing that needs dropping: the chain's
/// statements raise their errors as they are (see `execute_plan`).
unsafe fn chain_row(firing: &Firing) -> Verdict {
    if firing.event() != pg_sys::TRIGGER_EVENT_INSERT || !firing.is_row() || !firing.is_before() {
        firing.misuse();
    }
    let plan = chain_plan(firing);
    let row = firing.trigtuple();

    let mut values = [pg_sys::Datum::from(0); MAX_CHAIN_COLUMNS + 1];
    let nulls = [b' ' as c_char; MAX_CHAIN_COLUMNS + 1];
    for (i, slot) in values.iter_mut().enumerate().take(plan.nchain) {
        let (value, is_null) = firing.value(row, plan.chain_atts[i]);
        if is_null {
            return firing.refuse(null_chain_column(firing, plan.chain_atts[i]));
        }
        *slot = value;
    }
    // SAFETY: the new row of a BEFORE INSERT row trigger, a tuple of the
    // firing relation's descriptor, valid for the call; the datum is a
    // palloc'd copy.
    values[plan.nchain] = unsafe { pg_sys::heap_copy_tuple_as_datum(row.as_ptr(), firing.tupdesc()) };
    let nargs = plan.nchain + 1;

    // SAFETY: the chain columns' values, in the plan's order.
    let key = unsafe { lock_chain(plan, &values[..plan.nchain]) };

    // The link to the chain's last row, as the table's owner: read through
    // the chain index and hashed here when the table has the index and the
    // last row is chained, by the link statement otherwise.
    // SAFETY: the user and the settings are put back before the block ends,
    // and by the (sub)transaction's abort if a statement raises; the
    // statement runs inside the SPI connection made here, with the
    // parameters its plan was prepared with (chain columns, then the row),
    // and nothing on these frames needs dropping if it raises (execute_plan's
    // contract: values and nulls are plain arrays); the snapshots pushed are
    // popped.
    let (seq, hash) = unsafe {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context: c_int = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            plan.owner,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as c_int | pg_sys::SECURITY_NOFORCE_RLS as c_int,
        );
        let direct = plan.encoding.and_then(|encoding| {
            pinned_if(plan.direct_pins_path, || direct_link(plan, encoding, firing.relation(), key, &values[..nargs]))
        });
        let repeatable = pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as c_int;
        let mut stale = false;
        let linked = match direct {
            Some(linked) if !repeatable => linked,
            direct => {
                let nest_level = pin_search_path();
                planner_settings();
                spi_connect();
                let linked = direct.unwrap_or_else(|| link(plan.link, &mut values[..nargs], &nulls[..nargs], false));
                stale = repeatable && {
                    pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
                    let latest = link(plan.link, &mut values[..nargs], &nulls[..nargs], true);
                    pg_sys::PopActiveSnapshot();
                    latest.0 != linked.0
                };
                spi_finish();
                pg_sys::AtEOXact_GUC(true, nest_level);
                linked
            }
        };
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        if stale {
            return firing.refuse(concurrent_insert(firing));
        }
        linked
    };

    // The row with its place in the chain.
    let mut columns: [c_int; 2] = [plan.seq_att.into(), plan.hash_att.into()];
    let mut new_values = [pg_sys::Datum::from(seq), hash];
    let mut new_nulls = [false; 2];
    // SAFETY: the firing's new row and its relation's descriptor, and two
    // replacements (the sequence number and the palloc'd hash) for two
    // attribute numbers the plan resolved in that descriptor.
    let chained = unsafe {
        pg_sys::heap_modify_tuple_by_cols(
            row.as_ptr(),
            firing.tupdesc(),
            2,
            columns.as_mut_ptr(),
            new_values.as_mut_ptr(),
            new_nulls.as_mut_ptr(),
        )
    };
    Verdict::Allow(pg_sys::Datum::from(chained))
}

/// The planner settings the link statement runs with, in a level that the
/// caller's `pin_search_path()` level closes: the chain's last row must be found
/// through the chain index whatever the table's statistics say, or a table
/// analyzed while empty would get a plan that scans the whole table for
/// every row inserted.
///
/// # Safety
/// As for `set_locally`, inside a level of `pin_search_path()`.
unsafe fn planner_settings() {
    // SAFETY: a level closed with the caller's (the contract).
    unsafe { set_locally(&[(c"enable_seqscan", c"off"), (c"enable_bitmapscan", c"off")]) };
}

/// Takes the lock of the chain the row belongs to, until the transaction
/// ends: an advisory-class lock on (database, the chained table, a 32-bit
/// hash of the chain columns' values, `CHAIN_LOCK_CLASS`).  Two chains whose
/// values hash alike share a lock: their inserts wait for each other, and
/// nothing else changes (each still links to its own last row).
///
/// Each lock takes an entry of the shared lock table until the transaction
/// ends.  So a transaction that has locked `CHAIN_LOCKS_PER_TABLE` chains of
/// the table locks all of them at once instead of locking more: from then on
/// it waits for, and holds off, every other insert into the table's chains.
/// On a table that is not partitioned, that lock is the table's own SHARE ROW
/// EXCLUSIVE lock, which conflicts with the ROW EXCLUSIVE lock every insert
/// into the table holds (so an insert pays for no lock beyond its chain's);
/// inserts into a partition hold that lock on the partition only, so there
/// every insert also holds the lock of all the table's chains
/// (`TABLE_CHAINS_LOCK_CLASS`) in ROW EXCLUSIVE mode, and the bulk load takes
/// it in EXCLUSIVE mode.  (A row lock on the chain's last row would take no
/// entry, but costs a WAL record and a page write per insert, and a chain
/// without rows has nothing to lock.)
///
/// Returns the chain's key (the lock's `objid`).
///
/// # Safety
/// `values` are the chain columns' values, in the plan's order.
unsafe fn lock_chain(plan: &ChainPlan, values: &[pg_sys::Datum]) -> u32 {
    let tag = |key: u32, class: u16| pg_sys::LOCKTAG {
        // SAFETY: set once at backend start, before any trigger fires.
        locktag_field1: unsafe { u32::from(pg_sys::MyDatabaseId) },
        locktag_field2: u32::from(plan.chained),
        locktag_field3: key,
        locktag_field4: class,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    };
    // SAFETY: complete tags of the user lock method, taken as
    // pg_advisory_xact_lock() takes its locks (until the transaction ends,
    // waiting); the lock manager raises rather than return without the lock
    // (a deadlock, a full lock table).
    let lock =
        |tag: pg_sys::LOCKTAG, mode: u32| unsafe { pg_sys::LockAcquire(&tag, mode as pg_sys::LOCKMODE, false, false) };
    if !CALLBACK_REGISTERED.replace(true) {
        // SAFETY: the callback only resets thread-local state; registered
        // once, it stays for the backend.
        unsafe { pg_sys::RegisterXactCallback(Some(xact_event), core::ptr::null_mut()) };
    }
    let key = values.iter().enumerate().fold(0u32, |key, (i, &value)| {
        // SAFETY: the hash functions were looked up for these columns' types.
        let hash = unsafe {
            pg_sys::FunctionCall1Coll((&raw const plan.chain_hash_procs[i]).cast_mut(), plan.chain_collations[i], value)
        };
        key.rotate_left(5) ^ (hash.value() as u32)
    });
    let all_chains = tag(0, TABLE_CHAINS_LOCK_CLASS);
    if CHAIN_LOCKS.with_borrow(|locks| locks.get(&plan.chained).copied().unwrap_or(0)) >= CHAIN_LOCKS_PER_TABLE {
        if plan.on_partition {
            lock(all_chains, pg_sys::ExclusiveLock);
        } else {
            // SAFETY: the firing relation, open (and locked) by the insert;
            // the lock manager raises rather than return without the lock.
            unsafe { pg_sys::LockRelationOid(plan.chained, pg_sys::ShareRowExclusiveLock as pg_sys::LOCKMODE) };
        }
        return key;
    }
    if plan.on_partition {
        lock(all_chains, pg_sys::RowExclusiveLock);
    }
    if lock(tag(key, CHAIN_LOCK_CLASS), pg_sys::ExclusiveLock) == pg_sys::LockAcquireResult::LOCKACQUIRE_OK {
        CHAIN_LOCKS.with_borrow_mut(|locks| *locks.entry(plan.chained).or_default() += 1);
    }
    key
}

/// The transaction's locks are gone with it (and any evaluation).
unsafe extern "C-unwind" fn xact_event(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PREPARE
    ) {
        CHAIN_LOCKS.with_borrow_mut(Map::clear);
        ENCODING.set(false);
    }
}

/// The new row's sequence number and hash, from the chain's last row read
/// through the tail index on the snapshot the link statement would run on
/// (after a command counter increment, as SPI does, so that rows this
/// statement inserted are seen); `None` when the chain has no row or its last
/// row is not chained as the trigger chains, or a row's encoding is being
/// evaluated already (the link statement decides then).
///
/// # Safety
/// `values` are the chain columns' values and the row, `key` the chain's
/// key; `relation` is the firing relation, which `plan` was resolved for.
unsafe fn direct_link(
    plan: &ChainPlan,
    encoding: Encoding,
    relation: pg_sys::Relation,
    key: u32,
    values: &[pg_sys::Datum],
) -> Option<(i64, pg_sys::Datum)> {
    if ENCODING.get() {
        return None;
    }
    // SAFETY: the snapshot pushed is popped before returning (or by the
    // abort); the row and the chain values are the caller's (the contract).
    unsafe {
        pg_sys::CommandCounterIncrement();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        pg_sys::UpdateActiveSnapshotCommandId();
        let linked =
            last_row(plan, relation, key, &values[..plan.nchain], pg_sys::GetActiveSnapshot()).map(|(seq, hash)| {
                ENCODING.set(true);
                let encoded = encode(encoding, values[plan.nchain], plan.row_type);
                ENCODING.set(false);
                let digest = link_hash(&hash, encoded);
                (seq + 1, digest.as_slice().into_datum().unwrap_or_else(|| unreachable!("a byte slice is not NULL")))
            });
        pg_sys::PopActiveSnapshot();
        linked
    }
}

/// The sequence number and hash of the chain's last row as `snapshot` sees
/// it, by the tail index, passing over rows without a sequence number (as the
/// link statement does); `None` when there is no row, or the last one has a
/// hash that is not 32 bytes.
///
/// A btree scan reads every entry of the chain on the index page it starts
/// on: so the scan starts at the last sequence number this backend found in
/// the chain (`HINTS`), which the chain's last row has reached or passed,
/// and reads only the chain's entries from there.  When no row is there (the
/// chain was emptied, or the hint was another chain's) it reads the chain
/// from its end again.
///
/// # Safety
/// `values` are the chain columns' values and `key` the chain's key;
/// `relation` is the firing relation.
unsafe fn last_row(
    plan: &ChainPlan,
    relation: pg_sys::Relation,
    key: u32,
    values: &[pg_sys::Datum],
    snapshot: pg_sys::Snapshot,
) -> Option<(i64, [u8; 32])> {
    let slot_of = ((key ^ u32::from(plan.chained)) as usize) % TAIL_HINTS;
    let hint = HINTS.with_borrow(|hints| {
        hints.get(slot_of).filter(|(table, k, _)| *table == plan.chained && *k == key).map(|(_, _, seq)| *seq)
    });
    // SAFETY: the index was found on this relation for this statement; the
    // scan keys compare its leading columns with the chain values by the
    // index's own equality functions and collations; scan, slot and index
    // are released before returning; the slot's values are read after
    // slot_getsomeattrs filled them, and the hash is copied out before the
    // slot lets its buffer go.
    unsafe {
        let index = pg_sys::index_open(plan.tail_index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let mut keys: [pg_sys::ScanKeyData; MAX_CHAIN_COLUMNS + 1] = core::mem::zeroed();
        for (i, key) in keys.iter_mut().enumerate().take(plan.nchain) {
            pg_sys::ScanKeyEntryInitialize(
                key,
                0,
                (i + 1) as pg_sys::AttrNumber,
                pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                pg_sys::InvalidOid,
                plan.tail_collations[i],
                plan.tail_procs[i],
                values[i],
            );
        }
        // The sequence column: from the hint on, or not NULL.
        let seq_key = |key: &mut pg_sys::ScanKeyData, from: Option<i64>| match from {
            Some(seq) => pg_sys::ScanKeyEntryInitialize(
                key,
                0,
                (plan.nchain + 1) as pg_sys::AttrNumber,
                pg_sys::BTGreaterEqualStrategyNumber as pg_sys::StrategyNumber,
                pg_sys::InvalidOid,
                pg_sys::InvalidOid,
                plan.tail_seq_ge,
                pg_sys::Datum::from(seq),
            ),
            None => pg_sys::ScanKeyEntryInitialize(
                key,
                (pg_sys::SK_ISNULL | pg_sys::SK_SEARCHNOTNULL) as c_int,
                (plan.nchain + 1) as pg_sys::AttrNumber,
                0, // no strategy: a NULL test
                pg_sys::InvalidOid,
                pg_sys::InvalidOid,
                pg_sys::InvalidOid,
                pg_sys::Datum::from(0),
            ),
        };
        let nkeys = plan.nchain + 1;
        seq_key(&mut keys[plan.nchain], hint);
        let scan = begin_index_scan(relation, index, snapshot, &mut keys[..nkeys]);
        let slot = pg_sys::MakeSingleTupleTableSlot((*relation).rd_att, pg_sys::table_slot_callbacks(relation));
        let mut found = pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::BackwardScanDirection, slot);
        if !found && hint.is_some() {
            seq_key(&mut keys[plan.nchain], None);
            pg_sys::index_rescan(scan, keys.as_mut_ptr(), nkeys as c_int, core::ptr::null_mut(), 0);
            found = pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::BackwardScanDirection, slot);
        }
        let mut last = None;
        if found {
            pg_sys::slot_getsomeattrs(slot, c_int::from(plan.seq_att.max(plan.hash_att)));
            let column = |att: i16| {
                let i = (att - 1) as usize;
                (!*(*slot).tts_isnull.add(i)).then(|| *(*slot).tts_values.add(i))
            };
            if let (Some(seq), Some(hash)) = (column(plan.seq_att), column(plan.hash_att)) {
                last = <&[u8]>::from_datum(hash, false)
                    .and_then(|hash| <[u8; 32]>::try_from(hash).ok())
                    .map(|hash| (seq.value() as i64, hash));
            }
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_endscan(scan);
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        if let Some((seq, _)) = last {
            HINTS.with_borrow_mut(|hints| {
                if hints.is_empty() {
                    hints.resize(TAIL_HINTS, (pg_sys::InvalidOid, 0, 0));
                }
                hints[slot_of] = (plan.chained, key, seq);
            });
        }
        last
    }
}

/// The row's encoding: a bytea in the expression context's per-tuple memory,
/// valid until the next call.
///
/// # Safety
/// `row` is a datum of the composite type `row_type`, the type the encoding
/// was compiled for.
unsafe fn encode<'a>(encoding: Encoding, row: pg_sys::Datum, row_type: pg_sys::Oid) -> &'a [u8] {
    // SAFETY: the expression was compiled with one parameter of type
    // row_type, which the parameter list holds; it is evaluated in the
    // context's per-tuple memory, reset before (not after) so that the
    // result outlives the evaluation.
    unsafe {
        let per_tuple = (*encoding.econtext).ecxt_per_tuple_memory;
        pg_sys::MemoryContextReset(per_tuple);
        let param = (*encoding.params).params.as_mut_ptr();
        (*param).value = row;
        (*param).isnull = false;
        (*param).pflags = pg_sys::PARAM_FLAG_CONST as u16;
        (*param).ptype = row_type;
        (*encoding.econtext).ecxt_param_list_info = encoding.params;
        let previous = pg_sys::MemoryContextSwitchTo(per_tuple);
        let mut is_null = false;
        let evaluate = (*encoding.state).evalfunc.expect("a compiled expression has its evaluation function");
        let encoded = evaluate(encoding.state, encoding.econtext, &mut is_null);
        let bytes = <&[u8]>::from_datum(encoded, is_null);
        pg_sys::MemoryContextSwitchTo(previous);
        bytes.unwrap_or_else(|| {
            Error::UnexpectedResult { what: "the hash chain encoding", result: "NULL".into() }.raise()
        })
    }
}

/// Runs the link statement: the new row's sequence number and hash (in a
/// chain without rows, linked to its anchor if a purge left one).
///
/// # Safety
/// Inside `SPI_connect`; `values` are the chain columns' values and the row.
unsafe fn link(
    plan: pg_sys::SPIPlanPtr,
    values: &mut [pg_sys::Datum],
    nulls: &[c_char],
    read_only: bool,
) -> (i64, pg_sys::Datum) {
    // SAFETY: connected to SPI, with the plan's parameters (the contract);
    // the hash is copied out of SPI's memory while it is still there.
    unsafe {
        if execute_plan(plan, values, nulls, read_only) != 1 {
            Error::UnexpectedResult { what: "the hash chain statement", result: "no row".into() }.raise();
        }
        let (Some(seq), Some(hash)) = (result_value(0, 1), result_value(0, 2)) else {
            Error::UnexpectedResult { what: "the hash chain statement", result: "NULL".into() }.raise();
        };
        // The hash lives in SPI's memory, which SPI_finish frees: copy it out.
        (seq.value() as i64, pg_sys::SPI_datumTransfer(hash, false, -1))
    }
}

/// The chain's plan for this statement (and partition): the trigger's kept
/// plan, with the chain columns' hash functions looked up for the statement.
fn chain_plan<'f>(firing: &'f Firing) -> &'f ChainPlan {
    firing.statement_plan(|| {
        let tgoid = firing.trigger().tgoid;
        let generation = invalidation::generation();
        let kept =
            PLANS_BY_TRIGGER.with_borrow(|all| all.get(&tgoid).filter(|(at, _)| *at == generation).map(|(_, p)| *p));
        let mut plan = kept.unwrap_or_else(|| {
            let plan = resolve_plan(firing);
            PLANS_BY_TRIGGER.with_borrow_mut(|all| all.insert(tgoid, (generation, plan)));
            plan
        });
        for i in 0..plan.nchain {
            // SAFETY: a hash function found for the column's type; its lookup
            // lives in the statement's memory, as long as the plan it fills.
            unsafe {
                pg_sys::fmgr_info_cxt(
                    plan.chain_hash_oids[i],
                    &mut plan.chain_hash_procs[i],
                    firing.plan_memory_context(),
                )
            };
        }
        plan
    })
}

/// The trigger's plan, resolved from the catalogs (without the lookups of
/// its hash functions).
fn resolve_plan(firing: &Firing) -> ChainPlan {
    let args: Vec<&CStr> = firing.args().collect();
    if args.len() < 2 || args.len() > 2 + MAX_CHAIN_COLUMNS {
        firing.misuse();
    }
    let attnum = |name: &CStr| firing.attnum(name).unwrap_or_else(|| firing.missing_column(name));
    let seq_att = attnum(args[0]);
    let hash_att = attnum(args[1]);
    if firing.attribute(seq_att).atttypid != pg_sys::INT8OID {
        firing.wrong_column_type(seq_att, "bigint");
    }
    if firing.attribute(hash_att).atttypid != pg_sys::BYTEAOID {
        firing.wrong_column_type(hash_att, "bytea");
    }
    // SAFETY: the firing relation is open for the whole call.
    let relid = unsafe { (*firing.relation()).rd_id };
    let (link_sql, encoding_sql, chained) =
        statements(relid).unwrap_or_else(|| firing.not_registered(Registration::HashChain));
    let mut plan = ChainPlan {
        link: core::ptr::null_mut(),
        chained,
        owner: relation_owner(chained),
        seq_att,
        hash_att,
        nchain: args.len() - 2,
        chain_atts: [0; MAX_CHAIN_COLUMNS],
        chain_hash_oids: [pg_sys::InvalidOid; MAX_CHAIN_COLUMNS],
        // SAFETY: FmgrInfo is plain data; each statement fills the ones used.
        chain_hash_procs: unsafe { core::mem::zeroed() },
        chain_collations: [pg_sys::InvalidOid; MAX_CHAIN_COLUMNS],
        tail_index: pg_sys::InvalidOid,
        tail_procs: [pg_sys::InvalidOid; MAX_CHAIN_COLUMNS],
        tail_collations: [pg_sys::InvalidOid; MAX_CHAIN_COLUMNS],
        tail_seq_ge: pg_sys::InvalidOid,
        encoding: None,
        direct_pins_path: true,
        // SAFETY: the firing relation is open, and its rd_rel with it.
        row_type: unsafe { (*(*firing.relation()).rd_rel).reltype },
        on_partition: relid != chained,
    };
    let mut arg_types = Vec::with_capacity(plan.nchain + 1);
    for (i, name) in args[2..].iter().enumerate() {
        let att = attnum(name);
        let attribute = firing.attribute(att);
        // SAFETY: a type cache lookup, which raises rather than return NULL.
        let hash_proc =
            unsafe { (*pg_sys::lookup_type_cache(attribute.atttypid, pg_sys::TYPECACHE_HASH_PROC as c_int)).hash_proc };
        if hash_proc == pg_sys::InvalidOid {
            firing.wrong_column_type(att, "a type with a hash function");
        }
        plan.chain_hash_oids[i] = hash_proc;
        plan.chain_atts[i] = att;
        plan.chain_collations[i] = attribute.attcollation;
        arg_types.push(attribute.atttypid);
    }
    arg_types.push(plan.row_type);
    plan.link = prepared(firing, &link_sql, &mut arg_types);
    if relid == chained {
        // SAFETY: the firing relation, for which the plan's columns were
        // resolved.
        unsafe { find_tail_index(firing.relation(), &mut plan) };
    }
    if plan.tail_index != pg_sys::InvalidOid {
        let encoding = compiled_encoding(firing.trigger().tgoid, &encoding_sql, plan.row_type);
        let user_written = |proc: &pg_sys::RegProcedure| u32::from(*proc) >= pg_sys::FirstNormalObjectId;
        plan.direct_pins_path = encoding.calls_out
            || plan.tail_procs[..plan.nchain].iter().any(user_written)
            || user_written(&plan.tail_seq_ge);
        plan.encoding = Some(encoding);
    }
    plan
}

/// Sets the plan's tail index: a valid btree index of `relation` on exactly
/// (chain columns…, seq_column), ascending, without expressions or predicate,
/// whose operator classes take the chain columns' types as they are.
///
/// # Safety
/// `relation` is open, and the plan's columns were resolved in it.
unsafe fn find_tail_index(relation: pg_sys::Relation, plan: &mut ChainPlan) {
    // SAFETY: the index list is the relcache's copy; each index is opened
    // (and locked, as the executor locks the indexes it reads) while its
    // descriptor is read, and closed keeping the lock.
    unsafe {
        let indexes = pg_sys::RelationGetIndexList(relation);
        let count = if indexes.is_null() { 0 } else { (*indexes).length as usize };
        for i in 0..count {
            let index = pg_sys::index_open(
                (*(*indexes).elements.add(i)).oid_value,
                pg_sys::AccessShareLock as pg_sys::LOCKMODE,
            );
            let form = &*(*index).rd_index;
            let keys = form.indkey.values.as_slice(plan.nchain + 1);
            // The `>=` of the sequence column's operator family, which reads
            // a chain from a sequence number on.
            let seq_ge = || {
                pg_sys::get_opcode(pg_sys::get_opfamily_member(
                    *(*index).rd_opfamily.add(plan.nchain),
                    pg_sys::INT8OID,
                    pg_sys::INT8OID,
                    pg_sys::BTGreaterEqualStrategyNumber as i16,
                ))
            };
            let suits = (*(*index).rd_rel).relam == pg_sys::BTREE_AM_OID
                && form.indisvalid
                && form.indnkeyatts as usize == plan.nchain + 1
                && keys[..plan.nchain] == plan.chain_atts[..plan.nchain]
                && keys[plan.nchain] == plan.seq_att
                && *(*index).rd_opcintype.add(plan.nchain) == pg_sys::INT8OID
                && (0..=plan.nchain).all(|k| *(*index).rd_indoption.add(k) == 0)
                && pg_sys::heap_attisnull(
                    (*index).rd_indextuple,
                    pg_sys::Anum_pg_index_indpred as c_int,
                    core::ptr::null_mut(),
                )
                && (0..plan.nchain).all(|k| {
                    let column = tuple_desc_attr((*relation).rd_att, plan.chain_atts[k]);
                    pg_sys::IsBinaryCoercible(column.atttypid, *(*index).rd_opcintype.add(k))
                })
                && seq_ge() != pg_sys::InvalidOid;
            if suits {
                for k in 0..plan.nchain {
                    let input = *(*index).rd_opcintype.add(k);
                    let operator = pg_sys::get_opfamily_member(
                        *(*index).rd_opfamily.add(k),
                        input,
                        input,
                        pg_sys::BTEqualStrategyNumber as i16,
                    );
                    plan.tail_procs[k] = pg_sys::get_opcode(operator);
                    plan.tail_collations[k] = *(*index).rd_indcollation.add(k);
                }
                plan.tail_seq_ge = seq_ge();
                plan.tail_index = (*index).rd_id;
            }
            pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
            if suits {
                break;
            }
        }
    }
}

/// The encoding statement of a trigger's rows (`SELECT <encoding of $1>`),
/// compiled once per backend (again after a catalog change) into an
/// expression of its own: its plan's target, parsed and planned under the
/// settings the link statement runs with, so that nothing on the session's
/// path takes the place of a type, operator or function it names.
fn compiled_encoding(tgoid: pg_sys::Oid, sql: &str, row_type: pg_sys::Oid) -> Encoding {
    let generation = invalidation::generation();
    if let Some(encoding) = ENCODINGS.with_borrow(|all| {
        all.get(&tgoid).filter(|(source, at, _)| *at == generation && source == sql).map(|(_, _, e)| *e)
    }) {
        return encoding;
    }
    let text = std::ffi::CString::new(sql).expect("identifiers are quoted");
    // SAFETY: closed below (and by the abort if the statement raises).
    let level = unsafe { pin_search_path() };
    spi_connect();
    let plan = prepare(&text, &mut [row_type], 0, || format!("statement: {sql}"));
    // SAFETY: a one-statement plan of this connection: its cached plan is
    // the generic plan, a Result whose one target is the encoding; it is
    // copied into a context made under the current transaction's context
    // (freed by an abort) and moved under TopMemoryContext once compiled,
    // then the cached plan is released (not saved: no resource owner) before
    // SPI_finish frees the statement.
    let encoding = unsafe {
        let cached = pg_sys::SPI_plan_get_cached_plan(plan);
        if cached.is_null() {
            Error::Prepare { what: format!("statement: {sql}") }.raise();
        }
        let statement = (*(*(*cached).stmt_list).elements).ptr_value as *mut pg_sys::PlannedStmt;
        let target = (*(*(*(*statement).planTree).targetlist).elements).ptr_value as *mut pg_sys::TargetEntry;
        let context = pg_sys::AllocSetContextCreateInternal(
            pg_sys::CurTransactionContext,
            c"pg_integrity hash chain encoding".as_ptr(),
            0,
            1024,
            8 * 1024 * 1024,
        );
        let previous = pg_sys::MemoryContextSwitchTo(context);
        let expr = pg_sys::copyObjectImpl((*target).expr.cast()) as *mut pg_sys::Expr;
        let encoding = Encoding {
            context,
            state: pg_sys::ExecInitExpr(expr, core::ptr::null_mut()),
            econtext: pg_sys::CreateStandaloneExprContext(),
            params: pg_sys::makeParamList(1),
            calls_out: calls_out(expr),
        };
        pg_sys::MemoryContextSwitchTo(previous);
        pg_sys::ReleaseCachedPlan(cached, core::ptr::null_mut());
        pg_sys::MemoryContextSetParent(context, pg_sys::TopMemoryContext);
        encoding
    };
    spi_finish();
    // SAFETY: the level opened above.
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    if let Some((_, _, stale)) =
        ENCODINGS.with_borrow_mut(|all| all.insert(tgoid, (sql.to_string(), generation, encoding)))
    {
        // SAFETY: a statement that compiled it may still be running: the
        // context goes when the transaction does.
        unsafe { pg_sys::MemoryContextSetParent(stale.context, pg_sys::TopTransactionContext) };
    }
    encoding
}

/// Whether the compiled encoding `expr` writes a value by a function other
/// than `_chain_encoding()`'s own code: its arguments are the columns, and
/// the session-independent forms of some (`pg_catalog` functions, settled in
/// sql/hash_chain.sql); a row without columns is a constant.
///
/// # Safety
/// `expr` is the planned encoding expression.
unsafe fn calls_out(expr: *mut pg_sys::Expr) -> bool {
    // SAFETY: a planned expression tree: a node tag first, a FuncExpr's
    // arguments a list of expressions.
    unsafe {
        match (*expr).type_ {
            pg_sys::NodeTag::T_Const => false,
            pg_sys::NodeTag::T_FuncExpr => {
                let args = (*expr.cast::<pg_sys::FuncExpr>()).args;
                let count = if args.is_null() { 0 } else { (*args).length as usize };
                (0..count).any(|i| {
                    !chain_encoding::written_here(pg_sys::exprType((*(*args).elements.add(i)).ptr_value.cast()))
                })
            }
            _ => true,
        }
    }
}

type Statements = (String, String, pg_sys::Oid);

/// The link statement and the encoding for a table, and the table its chain
/// is registered on, from
/// `integrity._chain_statements()` (cached); `None` when no chain is
/// registered.
fn statements(relid: pg_sys::Oid) -> Option<Statements> {
    let generation = invalidation::generation();
    let cached =
        STATEMENTS.with_borrow(|all| all.get(&relid).filter(|(g, _)| *g == generation).map(|(_, s)| s.clone()));
    if cached.is_some() {
        return cached;
    }
    let read = read_statements(relid);
    if let Some(statements) = &read {
        STATEMENTS.with_borrow_mut(|all| all.insert(relid, (generation, statements.clone())));
    }
    read
}

fn read_statements(relid: pg_sys::Oid) -> Option<Statements> {
    spi_connect();
    let query = c"SELECT link, encoding, chained::oid FROM integrity._chain_statements($1)";
    let rows = select(query, &[(pg_sys::REGCLASSOID, pg_sys::Datum::from(relid))], 1, "looking up the hash chain");
    let result = (rows == 1).then(|| {
        let text = |column| {
            result_text(0, column).unwrap_or_else(|| {
                Error::UnexpectedResult { what: "looking up the hash chain", result: "NULL".into() }.raise()
            })
        };
        let chained = result_value(0, 3).map_or(pg_sys::InvalidOid, |oid| pg_sys::Oid::from(oid.value() as u32));
        (text(1), text(2), chained)
    });
    spi_finish();
    result
}

fn prepared(firing: &Firing, sql: &str, arg_types: &mut [pg_sys::Oid]) -> pg_sys::SPIPlanPtr {
    PLANS.with(|plans| {
        plans.get(firing.trigger().tgoid, sql.to_string(), || {
            prepare_kept(sql, arg_types, || format!("statement: {sql}"))
        })
    })
}

fn null_chain_column(firing: &Firing, attnum: i16) -> Refusal {
    let column = pgrx::name_data_to_str(&firing.attribute(attnum).attname).to_string();
    Refusal {
        code: PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION,
        message: format!("chain column \"{column}\" of table \"{}\" cannot be NULL", firing.table_name()),
        detail: format!(
            "{} in table {}: the row belongs to no chain.",
            firing.row_key(firing.trigtuple()),
            firing.qualified_table_name()
        ),
        hint: "Give every row a value in each chain column.".into(),
        column: Some(attnum),
    }
}

fn concurrent_insert(firing: &Firing) -> Refusal {
    Refusal {
        code: PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
        message: format!(
            "could not chain a row of table \"{}\": a concurrent transaction extended its chain",
            firing.table_name()
        ),
        detail: format!(
            "{} in table {}: this transaction's snapshot does not see the last row of the chain.",
            firing.row_key(firing.trigtuple()),
            firing.qualified_table_name()
        ),
        hint: "Retry the transaction.".into(),
        column: None,
    }
}
