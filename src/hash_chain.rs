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
//! 2. one statement, `link`, built by `integrity._chain_statements()` (which
//!    also writes the encoding `verify_chain()` checks), reads the chain's
//!    last row (in a chain whose rows a retention purged, the chain's anchor
//!    in `integrity.chain_anchors`) and computes the new sequence number and
//!    hash.  It runs as the table's owner, as PostgreSQL's foreign-key checks
//!    do (a role that may only INSERT still chains its rows).  Under READ
//!    COMMITTED it runs on a snapshot taken after the lock, which sees the
//!    row of the previous holder of the lock: that one committed (and became
//!    visible) before it let the lock go.
//!
//! A REPEATABLE READ or SERIALIZABLE snapshot may be older than the chain's
//! last row: `link` runs on the latest snapshot as well, and when the two
//! disagree the insert fails with 40001, which clients retry.
//!
//! Rows applied by logical replication keep the hashes their origin gave them:
//! the trigger fires on origin writes only.

use core::ffi::{c_char, c_int, c_void, CStr};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::error::{Error, Refusal, Registration};
use crate::fmgr::{
    execute_plan, prepare_kept, result_text, result_value, select, set_locally, spi_connect, spi_finish, KeptPlans,
};
use crate::invalidation;
use crate::trigger::{relation_owner, trigger_entry, Firing, Verdict};

trigger_entry!(
    /// `BEFORE INSERT FOR EACH ROW`, arguments `(seq_column, hash_column, chain_column…)`.
    integrity_hash_chain_guard,
    pg_finfo_integrity_hash_chain_guard,
    chain_row
);

/// Chain columns a table can have.
const MAX_CHAIN_COLUMNS: usize = 8;
/// `locktag_field4` (`objsubid` in `pg_locks`) of the lock of one chain, and of
/// the lock of all chains of a table: the advisory locks of
/// `pg_advisory_lock()` and its kin have 1 or 2 there, so these never meet a
/// lock that a user takes.
const CHAIN_LOCK_CLASS: u16 = 0x4843;
const TABLE_CHAINS_LOCK_CLASS: u16 = 0x4844;
/// Chains of one table a transaction locks one by one; past this many it
/// locks all of the table's chains at once, so that a bulk load takes a
/// bounded number of entries in the shared lock table.
const CHAIN_LOCKS_PER_TABLE: u32 = 250;

/// Resolved once per statement (per partition) and kept in `fn_extra`.
#[repr(C)]
struct ChainPlan {
    link: pg_sys::SPIPlanPtr,
    /// The registered table the chain lives in (the root of a partitioned one).
    chained: pg_sys::Oid,
    owner: pg_sys::Oid,
    seq_att: i16,
    hash_att: i16,
    nchain: usize,
    chain_atts: [i16; MAX_CHAIN_COLUMNS],
    chain_hash_procs: [pg_sys::FmgrInfo; MAX_CHAIN_COLUMNS],
    chain_collations: [pg_sys::Oid; MAX_CHAIN_COLUMNS],
}

thread_local! {
    /// The link statement prepared by trigger OID, with the SQL it was
    /// prepared from.
    static PLANS: KeptPlans<pg_sys::Oid, String> = KeptPlans::default();
    /// The statements of a table and the table its chain is registered on, by
    /// table, with the invalidation generation they were read at: reading
    /// them is a catalog query, too slow to run for every INSERT statement.
    static STATEMENTS: RefCell<HashMap<pg_sys::Oid, (u64, Statements)>> = RefCell::new(HashMap::new());
    /// The chain locks this transaction took, by table; emptied when it ends.
    static CHAIN_LOCKS: RefCell<HashMap<pg_sys::Oid, u32>> = RefCell::new(HashMap::new());
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
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
    unsafe { lock_chain(plan, &values[..plan.nchain]) };

    // The link to the chain's last row, as the table's owner.
    // SAFETY: the user and the settings are put back before the block ends,
    // and by the (sub)transaction's abort if a statement raises; the
    // statement runs inside the SPI connection made here, with the
    // parameters its plan was prepared with (chain columns, then the row),
    // and nothing on these frames needs dropping if it raises (execute_plan's
    // contract: values and nulls are plain arrays); the snapshot pushed is
    // popped.
    let (seq, hash) = unsafe {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context: c_int = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            plan.owner,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as c_int | pg_sys::SECURITY_NOFORCE_RLS as c_int,
        );
        let nest_level = statement_settings();
        spi_connect();
        let linked = link(plan.link, &mut values[..nargs], &nulls[..nargs], false);
        let stale = pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as c_int && {
            pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
            let latest = link(plan.link, &mut values[..nargs], &nulls[..nargs], true);
            pg_sys::PopActiveSnapshot();
            latest.0 != linked.0
        };
        spi_finish();
        pg_sys::AtEOXact_GUC(true, nest_level);
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

/// The settings the chain's statements run with, until `AtEOXact_GUC(true,
/// level)` with the level returned.  They run as the table's owner, so they
/// resolve operators and functions in `pg_catalog` only, whatever the
/// caller's `search_path`: an operator the caller created could otherwise
/// run with the owner's rights.  And the chain's last row must be found
/// through the chain index whatever the table's statistics say: a table
/// analyzed while empty would otherwise get a plan that scans the whole table
/// for every row inserted.
///
/// # Safety
/// As for `set_locally`.
unsafe fn statement_settings() -> c_int {
    // SAFETY: the caller closes the level (this function's contract).
    unsafe {
        set_locally(&[
            (c"search_path", c"pg_catalog, pg_temp"),
            (c"enable_seqscan", c"off"),
            (c"enable_bitmapscan", c"off"),
        ])
    }
}

/// Takes the lock of the chain the row belongs to, until the transaction
/// ends: an advisory-class lock on (database, the chained table, a 32-bit
/// hash of the chain columns' values, `CHAIN_LOCK_CLASS`).  Two chains whose
/// values hash alike share a lock: their inserts wait for each other, and
/// nothing else changes (each still links to its own last row).
///
/// Each lock takes an entry of the shared lock table until the transaction
/// ends.  So every insert also holds the lock of all the table's chains
/// (`TABLE_CHAINS_LOCK_CLASS`) in ROW EXCLUSIVE mode, which inserts share, and
/// a transaction that has locked `CHAIN_LOCKS_PER_TABLE` chains of the table
/// takes that one in EXCLUSIVE mode instead of locking more chains: from
/// then on it waits for, and holds off, every other insert into the table's
/// chains.  (A row lock on the chain's last row would take no entry, but
/// costs a WAL record and a page write per insert, and a chain without rows
/// has nothing to lock.)
///
/// # Safety
/// `values` are the chain columns' values, in the plan's order.
unsafe fn lock_chain(plan: &ChainPlan, values: &[pg_sys::Datum]) {
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
    let all_chains = tag(0, TABLE_CHAINS_LOCK_CLASS);
    if CHAIN_LOCKS.with_borrow(|locks| locks.get(&plan.chained).copied().unwrap_or(0)) >= CHAIN_LOCKS_PER_TABLE {
        lock(all_chains, pg_sys::ExclusiveLock);
        return;
    }
    let key = values.iter().enumerate().fold(0u32, |key, (i, &value)| {
        // SAFETY: the hash functions were looked up for these columns' types.
        let hash = unsafe {
            pg_sys::FunctionCall1Coll((&raw const plan.chain_hash_procs[i]).cast_mut(), plan.chain_collations[i], value)
        };
        key.rotate_left(5) ^ (hash.value() as u32)
    });
    lock(all_chains, pg_sys::RowExclusiveLock);
    if lock(tag(key, CHAIN_LOCK_CLASS), pg_sys::ExclusiveLock) == pg_sys::LockAcquireResult::LOCKACQUIRE_OK {
        if !CALLBACK_REGISTERED.replace(true) {
            // SAFETY: the callback only empties a thread-local map;
            // registered once, it stays for the backend.
            unsafe { pg_sys::RegisterXactCallback(Some(xact_event), core::ptr::null_mut()) };
        }
        CHAIN_LOCKS.with_borrow_mut(|locks| *locks.entry(plan.chained).or_default() += 1);
    }
}

/// The transaction's locks are gone with it.
unsafe extern "C-unwind" fn xact_event(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PREPARE
    ) {
        CHAIN_LOCKS.with_borrow_mut(HashMap::clear);
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

/// The chain's plan for this statement (and partition).
fn chain_plan<'f>(firing: &'f Firing) -> &'f ChainPlan {
    firing.statement_plan(|| {
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
        let (link_sql, chained) = statements(relid).unwrap_or_else(|| firing.not_registered(Registration::HashChain));
        let mut plan = ChainPlan {
            link: core::ptr::null_mut(),
            chained,
            owner: relation_owner(chained),
            seq_att,
            hash_att,
            nchain: args.len() - 2,
            chain_atts: [0; MAX_CHAIN_COLUMNS],
            // SAFETY: FmgrInfo is plain data; fmgr_info_cxt fills the ones used.
            chain_hash_procs: unsafe { core::mem::zeroed() },
            chain_collations: [pg_sys::InvalidOid; MAX_CHAIN_COLUMNS],
        };
        let mut arg_types = Vec::with_capacity(plan.nchain + 1);
        for (i, name) in args[2..].iter().enumerate() {
            let att = attnum(name);
            let attribute = firing.attribute(att);
            // SAFETY: the type cache entry outlives the statement; the hash
            // function is copied into the plan's memory context.
            unsafe {
                let entry = pg_sys::lookup_type_cache(attribute.atttypid, pg_sys::TYPECACHE_HASH_PROC as c_int);
                if (*entry).hash_proc == pg_sys::InvalidOid {
                    firing.wrong_column_type(att, "a type with a hash function");
                }
                pg_sys::fmgr_info_cxt((*entry).hash_proc, &mut plan.chain_hash_procs[i], firing.plan_memory_context());
            }
            plan.chain_atts[i] = att;
            plan.chain_collations[i] = attribute.attcollation;
            arg_types.push(attribute.atttypid);
        }
        // SAFETY: the firing relation is open, and its rd_rel with it.
        arg_types.push(unsafe { (*(*firing.relation()).rd_rel).reltype });
        plan.link = prepared(firing, &link_sql, &mut arg_types);
        plan
    })
}

type Statements = (String, pg_sys::Oid);

/// The link statement for a table, and the table its chain is registered on, from
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
    let query = c"SELECT link, chained::oid FROM integrity._chain_statements($1)";
    let rows = select(query, &[(pg_sys::REGCLASSOID, pg_sys::Datum::from(relid))], 1, "looking up the hash chain");
    let result = (rows == 1).then(|| {
        let text = |column| {
            result_text(0, column).unwrap_or_else(|| {
                Error::UnexpectedResult { what: "looking up the hash chain", result: "NULL".into() }.raise()
            })
        };
        let chained = result_value(0, 2).map_or(pg_sys::InvalidOid, |oid| pg_sys::Oid::from(oid.value() as u32));
        (text(1), chained)
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
