//! Refusal counters: every refused write, counted in shared memory by
//! (database, table, guard, SQLSTATE), so that the count survives the
//! rollback of the refused transaction.
//!
//! Only with `pg_integrity` in `shared_preload_libraries`: `_PG_init` then
//! requests a fixed-size table (`pg_integrity.max_refusal_entries` entries,
//! an open-addressing hash table that is never resized) and one LWLock.
//! `error::raise` calls [`count`] before it raises: the names are copied into
//! the entry under the lock, the lock is released, and only then is the error
//! raised.  Nothing is allocated in shared memory per refusal; a refusal that
//! finds the table full is counted in `dropped` (and `health()` says so).  The
//! allowed path never comes here.
//!
//! The table is written to `pg_stat/pg_integrity_refusals.stat` when the
//! postmaster shuts down cleanly and read back (then removed) when it starts,
//! as pg_stat_statements does; a crash loses the counts.

use core::ffi::{c_int, CStr};
use core::mem::size_of;
use std::io::{Read, Write};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::iter::TableIterator;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::Violation;

/// `pg_integrity.max_refusal_entries`: distinct (table, guard, SQLSTATE)
/// triples counted; fixed at server start.
pub static MAX_ENTRIES: GucSetting<i32> = GucSetting::<i32>::new(1000);

const GUARD_LEN: usize = 32;
const TABLE_LEN: usize = 2 * pg_sys::NAMEDATALEN as usize + 8;
const ROLE_LEN: usize = pg_sys::NAMEDATALEN as usize;
const DETAIL_LEN: usize = 256;

const DUMP_FILE: &CStr = c"pg_stat/pg_integrity_refusals.stat";
const DUMP_MAGIC: u32 = 0x5049_5246; // "PIRF"
const DUMP_VERSION: u32 = 1;
const TRANCHE: &CStr = c"pg_integrity";

/// One counter.  Plain data: it is copied to and from the dump file as bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Entry {
    pub used: u32,
    pub dbid: u32,
    pub relid: u32,
    pub sqlstate: i32,
    pub refusals: i64,
    pub first_at: i64,
    pub last_at: i64,
    /// `refusals` when the notifier last reported this entry.
    pub notified: i64,
    pub guard: [u8; GUARD_LEN],
    /// The qualified table name at the last refusal (notifications name it
    /// without a catalog lookup in the table's database).
    pub table: [u8; TABLE_LEN],
    pub role: [u8; ROLE_LEN],
    pub detail: [u8; DETAIL_LEN],
}

/// The header of the shared table; `capacity` entries follow it.
#[repr(C)]
pub struct Shared {
    pub lock: *mut pg_sys::LWLock,
    pub capacity: u32,
    pub in_use: u32,
    /// Refusals not counted because the table was full.
    pub dropped: i64,
    /// The notifier's latch (NULL while no notifier runs).
    pub notifier_latch: *mut pg_sys::Latch,
    /// Set by the refusal that woke the notifier, cleared when the notifier
    /// takes its next round: one wake-up a round, not one a refusal.
    pub wakeup_pending: u32,
}

static mut SHARED: *mut Shared = core::ptr::null_mut();
static mut CAPACITY: u32 = 0;
static mut PREV_SHMEM_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;
#[cfg(not(feature = "pg14"))]
static mut PREV_SHMEM_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;

fn shared_size(capacity: u32) -> usize {
    size_of::<Shared>() + capacity as usize * size_of::<Entry>()
}

/// Called by `_PG_init` while `shared_preload_libraries` is being processed.
pub fn init_preloaded() {
    GucRegistry::define_int_guc(
        c"pg_integrity.max_refusal_entries",
        c"Distinct (table, guard, SQLSTATE) refusal counters kept in shared memory.",
        c"Refusals of further triples are counted as dropped; health() reports them.",
        &MAX_ENTRIES,
        16,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    // SAFETY: _PG_init runs once in the postmaster, single-threaded, before
    // any hook can be called; the previous hooks are chained.
    unsafe {
        CAPACITY = MAX_ENTRIES.get() as u32;
        #[cfg(feature = "pg14")]
        request_shmem();
        #[cfg(not(feature = "pg14"))]
        {
            PREV_SHMEM_REQUEST_HOOK = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(shmem_request);
        }
        PREV_SHMEM_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
}

/// # Safety
/// Only while shared memory is being requested (the request hook, or
/// `_PG_init` of a preloaded library on PostgreSQL 14).
unsafe fn request_shmem() {
    // SAFETY: called only while shared memory may be requested (the
    // contract); the tranche name is a static string, as PostgreSQL keeps it.
    unsafe {
        pg_sys::RequestAddinShmemSpace(shared_size(CAPACITY));
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
    }
}

#[cfg(not(feature = "pg14"))]
#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: called by the postmaster in its shmem_request phase; the
    // previous hook is called first, as every hook does.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST_HOOK {
            prev();
        }
        request_shmem();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: the postmaster (or, with EXEC_BACKEND, each backend) creates or
    // attaches the shared structures here, under AddinShmemInitLock as the
    // server's own modules do; the space was requested above.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP_HOOK {
            prev();
        }
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let shared = pg_sys::ShmemInitStruct(c"pg_integrity refusals".as_ptr(), shared_size(CAPACITY), &mut found)
            .cast::<Shared>();
        if !found {
            core::ptr::write_bytes(shared.cast::<u8>(), 0, shared_size(CAPACITY));
            (*shared).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock;
            (*shared).capacity = CAPACITY;
        }
        pg_sys::LWLockRelease(init_lock);
        SHARED = shared;
        if !pg_sys::IsUnderPostmaster {
            // The postmaster: read what the last clean shutdown wrote, and
            // write the table at the next one.
            load();
            pg_sys::on_shmem_exit(Some(shmem_exit), pg_sys::Datum::from(0));
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_exit(code: c_int, _arg: pg_sys::Datum) {
    // After a crash the counts may be half-written: keep none (as
    // pg_stat_statements does).
    if code == 0 {
        save();
    }
}

/// The shared table, when the library was preloaded.
fn shared() -> Option<*mut Shared> {
    // SAFETY: SHARED is set once by the startup hook, before any backend
    // runs SQL, and points into shared memory that lives as long as the server.
    let shared = unsafe { SHARED };
    (!shared.is_null()).then_some(shared)
}

/// The first entry, right after the header.
fn first_entry(shared: *mut Shared) -> *mut Entry {
    shared.cast::<u8>().wrapping_add(size_of::<Shared>()).cast::<Entry>()
}

/// Runs `f` on the entries and the header under the lock, shared: the
/// references it gets cannot outlive the lock.  `f` must not raise.
fn with_shared<R>(f: impl FnOnce(&[Entry], &Shared) -> R) -> Option<R> {
    let shared = shared()?;
    // SAFETY: the shared lock keeps every writer out until it is released,
    // and `f`'s references end before that; the header and the `capacity`
    // entries after it were laid out by shmem_startup, and do not overlap.
    // LWLocks are released at abort, and `f` does not raise.
    unsafe {
        pg_sys::LWLockAcquire((*shared).lock, pg_sys::LWLockMode::LW_SHARED);
        let entries = core::slice::from_raw_parts(first_entry(shared), (*shared).capacity as usize);
        let r = f(entries, &*shared);
        pg_sys::LWLockRelease((*shared).lock);
        Some(r)
    }
}

fn copy_str(dst: &mut [u8], src: &[u8]) {
    // Keep a NUL at the end, and cut at a character boundary (UTF-8
    // continuation bytes are 10xxxxxx).
    let mut n = src.len().min(dst.len() - 1);
    while n > 0 && n < src.len() && src[n] & 0xC0 == 0x80 {
        n -= 1;
    }
    dst[..n].copy_from_slice(&src[..n]);
    dst[n..].fill(0);
}

pub fn str_of(buf: &[u8]) -> &str {
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    core::str::from_utf8(&buf[..n]).unwrap_or("")
}

/// The guard kind a guard trigger enforces, from its name.
fn guard_of(trigger: &[u8]) -> &[u8] {
    let name = trigger.strip_prefix(b"integrity_").unwrap_or(trigger);
    if name.starts_with(b"version_") {
        return b"versioning";
    }
    if name.starts_with(b"lifecycle") {
        return b"lifecycle";
    }
    for suffix in [&b"_recheck"[..], b"_truncate", b"_row_movement", b"_guard"] {
        if let Some(kind) = name.strip_suffix(suffix) {
            return kind;
        }
    }
    name
}

fn slot_of(dbid: u32, relid: u32, sqlstate: i32, guard: &[u8], capacity: u32) -> usize {
    // FNV-1a over the key.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dbid.to_le_bytes().iter().chain(&relid.to_le_bytes()).chain(&sqlstate.to_le_bytes()).chain(guard) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(capacity)) as usize
}

/// Finds the entry of a key, or claims a free one; None when the table is full.
fn find_or_claim<'a>(entries: &'a mut [Entry], in_use: &mut u32, key: (u32, u32, i32, &[u8])) -> Option<&'a mut Entry> {
    let capacity = entries.len() as u32;
    let start = slot_of(key.0, key.1, key.2, key.3, capacity);
    for i in 0..entries.len() {
        let slot = (start + i) % entries.len();
        let e = &entries[slot];
        if e.used == 0 {
            *in_use += 1;
            let e = &mut entries[slot];
            e.used = 1;
            e.dbid = key.0;
            e.relid = key.1;
            e.sqlstate = key.2;
            copy_str(&mut e.guard, key.3);
            e.refusals = 0;
            e.notified = 0;
            return Some(e);
        }
        if e.dbid == key.0 && e.relid == key.1 && e.sqlstate == key.2 && str_of(&e.guard).as_bytes() == key.3 {
            return Some(&mut entries[slot]);
        }
    }
    None
}

/// Counts the refusal `v` is about to raise.  A no-op without the preload.
///
/// Everything that may allocate or look anything up (names of the role and
/// the table) happens before the lock is taken; under the lock only bytes are
/// copied, and the lock is released before the caller raises.
///
/// # Safety
/// `v`'s relation and strings are valid (as `error::raise` requires).
pub unsafe fn count(v: &Violation) {
    if shared().is_none() {
        return;
    }
    // "schema.table" on the stack: no heap allocation per refusal.
    let mut table = [0u8; TABLE_LEN];
    // SAFETY: the relation and the trigger name come from the firing
    // trigger's TriggerData and are valid until the error is raised (the
    // function's contract); the lookups return palloc'd strings (or NULL) in
    // the current context, which the error's cleanup frees.
    let (key, table, role, detail, now) = unsafe {
        let rel = v.relation;
        let relid = (*rel).rd_id.to_u32();
        let relname = CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_bytes();
        let nsp = pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace);
        let mut len = 0;
        let nsp: &[u8] = if nsp.is_null() { b"" } else { CStr::from_ptr(nsp).to_bytes() };
        let dot: &[u8] = if nsp.is_empty() { b"" } else { b"." };
        for part in [nsp, dot, relname] {
            let n = part.len().min(TABLE_LEN - 1 - len);
            table[len..len + n].copy_from_slice(&part[..n]);
            len += n;
        }
        let table = &table[..len];
        let role = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true);
        let role: &[u8] = if role.is_null() { b"" } else { CStr::from_ptr(role).to_bytes() };
        let guard = guard_of(CStr::from_ptr(v.constraint).to_bytes());
        let detail = CStr::from_ptr(v.detail).to_bytes();
        let now = pg_sys::GetCurrentTimestamp();
        ((pg_sys::MyDatabaseId.to_u32(), relid, v.sqlstate, guard), table, role, detail, now)
    };

    let wake = with_exclusive(|entries, header| {
        let latch = header.notifier_latch;
        let wake = !latch.is_null() && header.wakeup_pending == 0;
        if wake {
            header.wakeup_pending = 1;
        }
        match find_or_claim(entries, &mut header.in_use, key) {
            Some(e) => {
                if e.refusals == 0 {
                    e.first_at = now;
                }
                e.refusals += 1;
                e.last_at = now;
                copy_str(&mut e.table, table);
                copy_str(&mut e.role, role);
                copy_str(&mut e.detail, detail);
            }
            None => header.dropped += 1,
        }
        wake.then_some(latch)
    });
    if let Some(latch) = wake.flatten() {
        // SAFETY: a process latch lives in shared memory for the server's
        // life: setting it is safe whoever owns it now, after the lock is
        // released.
        unsafe { pg_sys::SetLatch(latch) };
    }
}

/// Copies the entries out under a shared lock.
pub fn snapshot() -> (Vec<Entry>, i64) {
    with_shared(|entries, header| (entries.iter().filter(|e| e.used != 0).copied().collect(), header.dropped))
        .unwrap_or_default()
}

/// Runs `f` on the entries and the header under the exclusive lock: the
/// references it gets cannot outlive the lock.  `f` must not raise.
pub fn with_exclusive<R>(f: impl FnOnce(&mut [Entry], &mut Shared) -> R) -> Option<R> {
    let shared = shared()?;
    // SAFETY: the exclusive lock makes this process the only one touching the
    // table until it is released, and `f`'s references end before that; the
    // header and the `capacity` entries after it do not overlap.  LWLocks
    // are released at abort, and `f` does not raise (it only copies bytes).
    unsafe {
        pg_sys::LWLockAcquire((*shared).lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let entries = core::slice::from_raw_parts_mut(first_entry(shared), (*shared).capacity as usize);
        let r = f(entries, &mut *shared);
        pg_sys::LWLockRelease((*shared).lock);
        Some(r)
    }
}

pub fn sqlstate_text(code: i32) -> String {
    // The inverse of MAKE_SQLSTATE: five 6-bit characters, '0'-based.
    (0..5).map(|i| char::from((((code >> (6 * i)) & 0x3F) as u8) + b'0')).collect()
}

/// The counters of the current database (integrity.refusals).
#[pg_extern(sql = false)]
#[allow(clippy::type_complexity)]
fn refusal_counters() -> TableIterator<
    'static,
    (
        name!(table_oid, pg_sys::Oid),
        name!(guard, String),
        name!(sqlstate, String),
        name!(refusals, i64),
        name!(first_at, Option<TimestampWithTimeZone>),
        name!(last_at, Option<TimestampWithTimeZone>),
        name!(last_role, String),
        name!(last_detail, String),
    ),
> {
    // SAFETY: reading a backend-local global.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let (list, _) = snapshot();
    let rows: Vec<_> = list
        .into_iter()
        .filter(|e| e.dbid == db)
        .map(|e| {
            (
                pg_sys::Oid::from(e.relid),
                str_of(&e.guard).to_owned(),
                sqlstate_text(e.sqlstate),
                e.refusals,
                TimestampWithTimeZone::try_from(e.first_at).ok(),
                TimestampWithTimeZone::try_from(e.last_at).ok(),
                str_of(&e.role).to_owned(),
                str_of(&e.detail).to_owned(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// NULL without the preload; else the refusals that found the table full.
#[pg_extern(sql = false)]
fn refusals_dropped() -> Option<i64> {
    shared()?;
    Some(snapshot().1)
}

/// Forgets every counter (of every database), and the dropped count.
#[pg_extern(sql = false)]
fn reset_refusal_counters() {
    with_exclusive(|entries, header| {
        entries.iter_mut().for_each(|e| e.used = 0);
        header.in_use = 0;
        header.dropped = 0;
    });
}

fn dump_path() -> std::path::PathBuf {
    // SAFETY: DataDir is set before shared memory is created, and the
    // postmaster runs in it; the path is relative to it.
    let dir = unsafe { CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned();
    std::path::Path::new(&dir).join(DUMP_FILE.to_str().expect("ASCII"))
}

fn as_bytes(e: &Entry) -> &[u8] {
    // SAFETY: Entry is repr(C) plain data without padding-sensitive invariants;
    // reading its bytes is reading initialized memory (entries are zeroed first).
    unsafe { core::slice::from_raw_parts(core::ptr::from_ref(e).cast::<u8>(), size_of::<Entry>()) }
}

fn save() {
    let Some((list, dropped)) = with_exclusive(|entries, header| {
        (entries.iter().filter(|e| e.used != 0).copied().collect::<Vec<_>>(), header.dropped)
    }) else {
        return;
    };
    let path = dump_path();
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(&DUMP_MAGIC.to_le_bytes())?;
        f.write_all(&DUMP_VERSION.to_le_bytes())?;
        f.write_all(&(size_of::<Entry>() as u32).to_le_bytes())?;
        f.write_all(&(list.len() as u32).to_le_bytes())?;
        f.write_all(&dropped.to_le_bytes())?;
        for e in &list {
            f.write_all(as_bytes(e))?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        pgrx::log!("pg_integrity: could not write refusal counters to \"{}\": {e}", path.display());
        let _ = std::fs::remove_file(&tmp);
    }
}

fn load() {
    let path = dump_path();
    let mut bytes = Vec::new();
    match std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            pgrx::log!("pg_integrity: could not read refusal counters from \"{}\": {e}", path.display());
            return;
        }
    }
    let _ = std::fs::remove_file(&path);
    let u32_at = |i: usize| bytes.get(i..i + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let header_ok = u32_at(0) == Some(DUMP_MAGIC)
        && u32_at(4) == Some(DUMP_VERSION)
        && u32_at(8) == Some(size_of::<Entry>() as u32)
        && bytes.len() >= 24;
    let n = u32_at(12).unwrap_or(0) as usize;
    if !header_ok || bytes.len() != 24 + n * size_of::<Entry>() {
        pgrx::log!("pg_integrity: ignoring refusal counters file \"{}\": not written by this version", path.display());
        return;
    }
    let dropped = i64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    with_exclusive(|entries, header| {
        header.dropped = dropped;
        for chunk in bytes[24..].chunks_exact(size_of::<Entry>()) {
            // SAFETY: the chunk has exactly the size of an Entry, which is
            // plain data valid for any bytes; read_unaligned copes with the
            // Vec's alignment.
            let saved: Entry = unsafe { core::ptr::read_unaligned(chunk.as_ptr().cast::<Entry>()) };
            let key = (saved.dbid, saved.relid, saved.sqlstate, str_of(&saved.guard).as_bytes());
            match find_or_claim(entries, &mut header.in_use, key) {
                Some(e) => {
                    *e = saved;
                    e.used = 1;
                    // What was counted before the restart is not news.
                    e.notified = e.refusals;
                }
                None => header.dropped += saved.refusals,
            }
        }
    });
}

/// Registers the notifier's latch (or clears it with NULL).
pub fn set_notifier_latch(latch: *mut pg_sys::Latch) {
    with_exclusive(|_, header| {
        header.notifier_latch = latch;
        header.wakeup_pending = 0;
    });
}
