//! `LISTEN integrity_refusals`: a background worker (with the preload) that
//! turns new refusal counts into notifications, outside the refused
//! transactions, which roll back and could not notify anyone themselves.
//!
//! A refusing backend sets the worker's latch after it has counted (see
//! `refusals::count`).  The worker then sends, at most once per
//! `pg_integrity.notify_interval`, one notification per counter that grew
//! since the last round (with how many refusals it stands for), and at most
//! `MAX_PER_ROUND` of them: a flood of refusals makes one notification per
//! table, guard and SQLSTATE a second, not one per refusal.  NOTIFY is per
//! database: the worker connects to `pg_integrity.notify_database` and
//! notifies the listeners there about every database's refusals.

use std::ffi::CString;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::datum::DatumWithOid;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::refusals;

/// `pg_integrity.notify_database`: the database whose listeners get the
/// notifications (fixed at server start).
pub static NOTIFY_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// `pg_integrity.notify_interval` (ms): the shortest time between two rounds
/// of notifications; 0 turns them off.
pub static NOTIFY_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(1000);

const MAX_PER_ROUND: usize = 100;

pub fn init_preloaded() {
    GucRegistry::define_string_guc(
        c"pg_integrity.notify_database",
        c"Database in which LISTEN integrity_refusals receives refusal notifications.",
        c"The notifier background worker connects to it; refusals in every database are notified there.",
        &NOTIFY_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_integrity.notify_interval",
        c"Shortest time between two rounds of refusal notifications; 0 sends none.",
        c"Refusals in between are coalesced: one notification per table, guard and SQLSTATE a round.",
        &NOTIFY_INTERVAL,
        0,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    BackgroundWorkerBuilder::new("pg_integrity refusal notifier")
        .set_type("pg_integrity notifier")
        .set_library("pg_integrity")
        .set_function("integrity_refusal_notifier_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// One notification to send.
struct Pending {
    dbid: u32,
    table: String,
    guard: String,
    sqlstate: String,
    role: String,
    last_at: i64,
    refusals: i64,
}

/// Takes up to MAX_PER_ROUND counters that grew since they were last
/// notified, marking them notified; and whether more are waiting.
fn take_round() -> (Vec<Pending>, bool) {
    refusals::with_exclusive(|entries, header| {
        // Refusals from now on wake the notifier again.
        header.wakeup_pending = 0;
        let mut round = Vec::new();
        let mut more = false;
        for e in entries.iter_mut().filter(|e| e.used != 0 && e.refusals > e.notified) {
            if round.len() == MAX_PER_ROUND {
                more = true;
                break;
            }
            round.push(Pending {
                dbid: e.dbid,
                table: refusals::str_of(&e.table).to_owned(),
                guard: refusals::str_of(&e.guard).to_owned(),
                sqlstate: refusals::sqlstate_text(e.sqlstate),
                role: refusals::str_of(&e.role).to_owned(),
                last_at: e.last_at,
                refusals: e.refusals - e.notified,
            });
            e.notified = e.refusals;
        }
        (round, more)
    })
    .unwrap_or_default()
}

const NOTIFY_SQL: &str = "SELECT pg_catalog.pg_notify('integrity_refusals', pg_catalog.json_build_object(
    'database', (SELECT datname FROM pg_catalog.pg_database WHERE oid = $1),
    'table', $2, 'guard', $3, 'sqlstate', $4, 'role', $5,
    'time', $6, 'refusals', $7)::text)";

/// The worker's entry point (named in `init_preloaded`).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn integrity_refusal_notifier_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = NOTIFY_DATABASE.get().map_or_else(|| "postgres".to_owned(), |c| c.to_string_lossy().into_owned());
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    // SAFETY: MyProc is this process's PGPROC, in shared memory for the
    // server's life; its latch is what SetLatch from other processes wakes.
    refusals::set_notifier_latch(unsafe { &raw mut (*pg_sys::MyProc).procLatch });
    let mut last_round: Option<Instant> = None;
    'run: loop {
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(60))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to reload
            // its configuration, outside any transaction.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let interval = NOTIFY_INTERVAL.get();
        if interval == 0 {
            continue;
        }
        // Coalesce: wait out the rest of the interval since the last round.
        if let Some(t) = last_round {
            let interval = Duration::from_millis(interval as u64);
            while let Some(rest) = interval.checked_sub(t.elapsed()).filter(|d| !d.is_zero()) {
                if !BackgroundWorker::wait_latch(Some(rest)) {
                    break 'run;
                }
            }
        }
        let (round, more) = take_round();
        if round.is_empty() {
            continue;
        }
        BackgroundWorker::transaction(|| {
            for p in &round {
                let args: [DatumWithOid; 7] = [
                    pg_sys::Oid::from(p.dbid).into(),
                    p.table.as_str().into(),
                    p.guard.as_str().into(),
                    p.sqlstate.as_str().into(),
                    p.role.as_str().into(),
                    TimestampWithTimeZone::try_from(p.last_at).ok().into(),
                    p.refusals.into(),
                ];
                Spi::run_with_args(NOTIFY_SQL, &args).expect("pg_notify");
            }
        });
        last_round = Some(Instant::now());
        if more {
            // SAFETY: this process's own latch: go round again.
            unsafe { pg_sys::SetLatch(pg_sys::MyLatch) };
        }
    }
    refusals::set_notifier_latch(core::ptr::null_mut());
}
