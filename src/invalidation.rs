//! When the backend-local caches of SQL built from the catalogs must be built
//! again: a counter that every relcache invalidation and every change of a
//! schema or a function bumps.  The callbacks only bump it, so that they never touch a plan
//! that may be executing; a cache keeps the value it was built at.

use core::ffi::c_int;
use std::cell::Cell;

use pgrx::pg_sys;

thread_local! {
    static GENERATION: Cell<u64> = const { Cell::new(1) };
    static CALLBACKS_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    GENERATION.set(GENERATION.get() + 1);
}

/// A schema was renamed (or dropped): cached statements name their tables by
/// schema, and PostgreSQL re-parses a kept plan from its text when a schema
/// changes, so they must be rebuilt from the table's OID first.
unsafe extern "C-unwind" fn namespace_invalidated(_arg: pg_sys::Datum, _cacheid: c_int, _hashvalue: u32) {
    GENERATION.set(GENERATION.get() + 1);
}

/// A function was replaced (`CREATE OR REPLACE` keeps its OID): what it runs
/// must be looked up again (`trigger::function_address`).
unsafe extern "C-unwind" fn function_invalidated(_arg: pg_sys::Datum, _cacheid: c_int, _hashvalue: u32) {
    GENERATION.set(GENERATION.get() + 1);
}

/// The current generation.  Read it after the relation the cache is about
/// was opened or locked (which takes in pending invalidations).
pub fn generation() -> u64 {
    if !CALLBACKS_REGISTERED.replace(true) {
        // SAFETY: the callbacks only bump a thread-local counter; registered
        // once, they stay for the backend's life, as PostgreSQL expects.
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(Some(relcache_invalidated), pg_sys::Datum::from(0));
            pg_sys::CacheRegisterSyscacheCallback(
                pg_sys::SysCacheIdentifier::NAMESPACEOID as c_int,
                Some(namespace_invalidated),
                pg_sys::Datum::from(0),
            );
            pg_sys::CacheRegisterSyscacheCallback(
                pg_sys::SysCacheIdentifier::PROCOID as c_int,
                Some(function_invalidated),
                pg_sys::Datum::from(0),
            );
        }
    }
    GENERATION.get()
}
