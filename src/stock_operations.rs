//! `integrity.reserve_stock`, `release_stock` and `commit_stock`.
//!
//! For one row, each is one statement on the row whose WHERE clause is the
//! check:
//!
//! ```sql
//! UPDATE t SET reserved = reserved + $2 WHERE key = $1 AND stock - reserved >= $2
//! ```
//!
//! so the check and the write happen on the row version the UPDATE locks:
//! concurrent callers queue on the row lock and each decides on the row the
//! previous one left (READ COMMITTED), or gets 40001 (higher levels).  A
//! reservation of several rows locks all of them in key order (so that two
//! such reservations never deadlock), decides on the locked rows, and then
//! reserves on every row or on none.
//!
//! These are called once per order line, so their statements are prepared
//! once per backend, table and key type, and kept (`SPI_keepplan`).  The
//! columns come from the table's `integrity_stock` trigger, the guard itself:
//! no registry lookup.  Any relcache invalidation (DDL on the table, a
//! re-registration, which replaces the trigger) makes the next call read the
//! table again; the plans are prepared again only if its name, guard columns
//! or key changed.  `integrity._stock_target` gives the same reading to the
//! SQL functions that need it (the holds).
//!
//! The rows are first updated without SPI (`direct_update`, as the ledger
//! credit guard updates its account), which saves the statements' executor
//! start and end; several rows are all locked and checked in key order before
//! any is written.  The statements run where the table has what the direct
//! update does not reproduce, and whenever it did not update (every row), so
//! that they decide and explain every refusal.

use core::ffi::{c_char, c_int, CStr};
use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::CString;
use std::thread::LocalKey;

use pgrx::pg_sys;

use crate::backend_map::Map;
use pgrx::{FromDatum, PgSqlErrorCode};

use crate::direct_update;
use crate::error::{Error, Refusal};
use crate::fmgr::{
    execute_plan, free_plan, guarded_function, keep_generic_plan, pin_search_path, pinned_if, result_text,
    result_value, spi_connect, spi_finish, Verdict,
};
use crate::invalidation;
use crate::quantities;
use crate::trigger::{column_attnum, qualified_name, tuple_desc_attr};

guarded_function!(
    /// `integrity.reserve_stock(tbl regclass, id anyelement, qty numeric) RETURNS boolean`
    integrity_reserve_stock,
    pg_finfo_integrity_reserve_stock,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { operate(fcinfo, Operation::Reserve) }
    }
);

guarded_function!(
    /// `integrity.release_stock(tbl regclass, id anyelement, qty numeric) RETURNS void`
    integrity_release_stock,
    pg_finfo_integrity_release_stock,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { operate(fcinfo, Operation::Release) }
    }
);

guarded_function!(
    /// `integrity.commit_stock(tbl regclass, id anyelement, qty numeric) RETURNS void`
    integrity_commit_stock,
    pg_finfo_integrity_commit_stock,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { operate(fcinfo, Operation::Commit) }
    }
);

guarded_function!(
    /// `integrity.reserve_stock(tbl regclass, ids anyarray, qtys numeric[]) RETURNS boolean`
    integrity_reserve_stock_rows,
    pg_finfo_integrity_reserve_stock_rows,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { reserve_rows(fcinfo) }
    }
);

guarded_function!(
    /// `integrity._stock_target(tbl regclass, caller text, OUT stock_column text,
    /// OUT reserved_column text, OUT key_column text, OUT key_type text,
    /// OUT quantity_scale integer)`
    integrity_stock_target,
    pg_finfo_integrity_stock_target,
    |fcinfo| {
        // SAFETY: fcinfo is the running call's (the body's contract).
        unsafe { stock_target(fcinfo) }
    }
);

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Operation {
    Reserve,
    Release,
    Commit,
}

impl Operation {
    fn verb(self) -> &'static str {
        match self {
            Operation::Reserve => "reserve",
            Operation::Release => "release",
            Operation::Commit => "commit",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Operation::Reserve => "reserved",
            Operation::Release => "released",
            Operation::Commit => "committed",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Operation::Reserve => "reserve_stock",
            Operation::Release => "release_stock",
            Operation::Commit => "commit_stock",
        }
    }
}

/// What the statements of one table are built from.
#[derive(PartialEq, Clone)]
pub(crate) struct Target {
    table: String,
    stock: String,
    reserved: String,
    key: String,
    key_type: String,
    /// Decimal places a quantity may have: 0 for integer columns, None for numeric.
    scale: Option<i32>,
}

/// A table's kept statements for one key type, with what they were built from.
pub(crate) struct Plans<const N: usize> {
    target: Target,
    /// The invalidation generation when `target` was last read from the catalogs.
    generation: u64,
    statements: [pg_sys::SPIPlanPtr; N],
}

/// One row: the three operations, indexed by `Operation as usize`, then
/// `SELECT reserved, <reserve's check>, <release's check> FROM t WHERE key = $1`,
/// to tell "not enough" from "no such row" and from "a trigger skipped it".
const LOOKUP: usize = 3;
/// Several rows: the locking verdict, then the reservation.
const LOCK_ROWS: usize = 0;
const RESERVE_ROWS: usize = 1;

pub(crate) type Cache<const N: usize> = RefCell<Map<(pg_sys::Oid, pg_sys::Oid), Plans<N>>>;

thread_local! {
    /// By table and by the type of the id argument (for several rows, of the ids).
    static ROW_PLANS: Cache<4> = RefCell::new(Map::default());
    static ROWS_PLANS: Cache<2> = RefCell::new(Map::default());
}

/// # Safety
/// `fcinfo` is the running call's, of one of the three functions, declared
/// with three arguments (regclass, the key, numeric).
unsafe fn operate(fcinfo: pg_sys::FunctionCallInfo, operation: Operation) -> Verdict {
    let caller = operation.name();
    // SAFETY: the running call's fcinfo, with three arguments (the contract).
    let args = unsafe { (*fcinfo).args.as_slice(3) };
    if args[0].isnull {
        Error::NullArgument { caller: caller.into(), argument: "tbl" }.raise();
    }
    if args[1].isnull {
        Error::NullArgument { caller: caller.into(), argument: "id" }.raise();
    }
    // SAFETY: the call's FmgrInfo, whose expression gives the actual type of
    // the anyelement argument.
    let id_type = unsafe { pg_sys::get_fn_expr_argtype((*fcinfo).flinfo, 1) };
    let rel = open(args[0].value, caller);
    // SAFETY: the relation is open; the id is of id_type, the quantity a
    // numeric (or NULL, flagged).
    unsafe { on_row(rel, id_type, args[1].value, (args[2].value, args[2].isnull), operation) }
}

/// The operation on the row of `rel` whose key is `id` (of `id_type`, not
/// NULL), with `quantity` (a numeric datum and its null flag): the
/// operation's result, or its refusal.  Closes the relation unless refused.
///
/// # Safety
/// `rel` is open; `id` is a datum of type `id_type`, `quantity` a numeric.
pub(crate) unsafe fn on_row(
    rel: pg_sys::Relation,
    id_type: pg_sys::Oid,
    id: pg_sys::Datum,
    quantity: (pg_sys::Datum, bool),
    operation: Operation,
) -> Verdict {
    // SAFETY: the relation is open, the id and quantity as the contract says.
    if let Some(done) = unsafe { directly(rel, id_type, id, quantity, operation) } {
        return done;
    }
    // The statements' SQL resolves names: the function's own SET clause
    // would cost the direct path (which resolves none) a GUC level per call.
    // SAFETY: closed below, and by the abort if a statement raises.
    let level = unsafe { pin_search_path() };
    // SAFETY: the relation is open (the contract).
    let statements = unsafe { plans(&ROW_PLANS, rel, id_type, operation.name(), prepare_row) };
    let statement = statements[operation as usize];
    // The statement checks the quantity too (positive, not more decimals than
    // the columns keep), so the path that succeeds does no other work.
    let mut values = [id, quantity.0];
    let nulls = [b' ' as c_char, if quantity.1 { b'n' as c_char } else { b' ' as c_char }];
    // SAFETY: the statements run inside the SPI connection made here, with
    // the parameters they were prepared with (the key, of the id type they
    // were prepared for, and the quantity); nothing on this frame needs
    // dropping if one raises (execute_plan's contract: plain arrays).
    let outcome = unsafe {
        spi_connect();
        let outcome = attempt(statements[LOOKUP], id, quantity, operation, || {
            execute_plan(statement, &mut values, &nulls, false) == 1
        });
        spi_finish();
        outcome
    };
    // SAFETY: as this function's contract says; the level opened above.
    unsafe {
        let verdict = conclude(rel, id_type, id, quantity, operation, outcome);
        pg_sys::AtEOXact_GUC(true, level);
        verdict
    }
}

/// `on_row` with the row's key in its text form, as a hold records it.
/// Where the statements' cast `$1::key_type` of a text runs the key type's
/// input function, the key is converted here, so that the direct update can
/// take the row; otherwise the statements get the text.
///
/// # Safety
/// As for `on_row`, with `key` a non-NULL text datum.
pub(crate) unsafe fn on_row_keyed_by_text(
    rel: pg_sys::Relation,
    key: pg_sys::Datum,
    quantity: (pg_sys::Datum, bool),
    operation: Operation,
) -> Verdict {
    // SAFETY: the relation is open (the contract).
    match unsafe { key_input(rel, operation.name()) } {
        // SAFETY: a text datum (the contract) turned into a C string, read by
        // the input function of the key's type, which raises on bad input
        // as the cast would (with search_path pinned, as the statements'
        // cast runs, when the type's input may read it or is the user's);
        // the relation is open.
        Some(input) => unsafe {
            let text = pg_sys::text_to_cstring(key.cast_mut_ptr());
            let id = pinned_if(input.pin, || pg_sys::OidInputFunctionCall(input.function, text, input.ioparam, -1));
            on_row(rel, input.key_type, id, quantity, operation)
        },
        // SAFETY: as for this function.
        None => unsafe { on_row(rel, pg_sys::TEXTOID, key, quantity, operation) },
    }
}

/// The key type's input function, when it is what a cast from text runs.
#[derive(Clone, Copy)]
struct KeyInput {
    key_type: pg_sys::Oid,
    function: pg_sys::Oid,
    ioparam: pg_sys::Oid,
    /// The input may read search_path (a `regclass`) or run the user's
    /// code: it runs with search_path pinned.
    pin: bool,
}

thread_local! {
    /// By table, with the invalidation generation it was read at: `None`
    /// for a text key (nothing to convert) and for a key type whose cast
    /// from text is not its input function.
    static KEY_INPUTS: RefCell<Map<pg_sys::Oid, (u64, Option<KeyInput>)>> = RefCell::new(Map::default());
}

/// # Safety
/// `rel` is open.
unsafe fn key_input(rel: pg_sys::Relation, caller: &str) -> Option<KeyInput> {
    // SAFETY: the relation is open (the contract).
    let relid = unsafe { (*rel).rd_id };
    let generation = invalidation::generation();
    if let Some((_, input)) = KEY_INPUTS.with_borrow(|all| all.get(&relid).copied()).filter(|(at, _)| *at == generation)
    {
        return input;
    }
    // SAFETY: the relation is open (the contract), and so is its descriptor;
    // catalog lookups of the key's type, which exists while its column does.
    let input = unsafe {
        let key_type = attnum_named(rel, &target(rel, caller).key)
            .map_or(pg_sys::InvalidOid, |attnum| tuple_desc_attr((*rel).rd_att, attnum).atttypid);
        let mut cast = pg_sys::InvalidOid;
        let by_input = key_type != pg_sys::InvalidOid
            && key_type != pg_sys::TEXTOID
            && pg_sys::get_typtype(key_type) == pg_sys::TYPTYPE_BASE as c_char
            && pg_sys::find_coercion_pathway(
                key_type,
                pg_sys::TEXTOID,
                pg_sys::CoercionContext::COERCION_EXPLICIT,
                &mut cast,
            ) == pg_sys::CoercionPathType::COERCION_PATH_COERCEVIAIO;
        by_input.then(|| {
            let mut input = KeyInput {
                key_type,
                function: pg_sys::InvalidOid,
                ioparam: pg_sys::InvalidOid,
                pin: !crate::chain_encoding::written_here(key_type),
            };
            pg_sys::getTypeInputInfo(key_type, &mut input.function, &mut input.ioparam);
            input
        })
    };
    KEY_INPUTS.with_borrow_mut(|all| all.insert(relid, (generation, input)));
    input
}

/// The attribute numbers and quantity scale a direct update of one row
/// needs (`Target` names them for the statements).
#[derive(Clone, Copy)]
struct Columns {
    key: i16,
    stock: i16,
    reserved: i16,
    scale: Option<i32>,
}

/// By table and id type, with the invalidation generation they were read
/// at: `None` when an id of that type is not the key's own type.
type ColumnsCache = RefCell<Map<(pg_sys::Oid, pg_sys::Oid), (u64, Option<Columns>)>>;

thread_local! {
    static COLUMNS: ColumnsCache = RefCell::new(Map::default());
}

/// The operation on one row without SPI (`direct_update`): `Some` with its
/// result when the row was updated, `None` when the statements must run,
/// because the table or the arguments are not ones the direct update does
/// exactly as the statement (see `direct_update::open`), or because it did
/// not update the row: the statements then decide again, and say why (not
/// enough, no such row, a trigger skipped it).
///
/// # Safety
/// As for `on_row`.
unsafe fn directly(
    rel: pg_sys::Relation,
    id_type: pg_sys::Oid,
    id: pg_sys::Datum,
    quantity: (pg_sys::Datum, bool),
    operation: Operation,
) -> Option<Verdict> {
    // SAFETY: the relation is open (the contract).
    let columns = unsafe { columns(rel, id_type, operation.name()) }?;
    // SAFETY: a numeric datum and its null flag (the contract).
    if !unsafe { valid_quantity(quantity, columns.scale) } {
        return None;
    }
    // SAFETY: inside the call's transaction and memory context, which
    // outlive the target, closed once; the id is of the key's type.  An
    // update that changed nothing has no event for `close` to fire.
    let outcome = unsafe {
        // The reserved quantity moves within 0 ..= stock (the statements'
        // condition where the guard holds; out of it, they decide); a
        // commit takes it off the stock too.
        let second = if operation == Operation::Commit { columns.stock } else { 0 };
        let target = direct_update::open_with_second(
            (*rel).rd_id,
            columns.reserved,
            second,
            &[columns.key],
            &[id_type],
            Some(columns.stock),
            direct_update::Sanctioned::Stock,
        )?;
        let sign = if operation == Operation::Reserve { 1 } else { -1 };
        let outcome = direct_update::add(&target, &[id], pg_sys::NUMERICOID, &[(sign, quantity.0)]);
        direct_update::close(target);
        outcome
    };
    matches!(outcome, direct_update::Outcome::Updated).then(|| {
        // The lock is kept until the end of the transaction, like the UPDATE's.
        // SAFETY: the relation opened by the caller, not used after this.
        unsafe { pg_sys::relation_close(rel, pg_sys::NoLock as i32) };
        Verdict::Allow(pg_sys::Datum::from(operation == Operation::Reserve))
    })
}

/// The table's columns for the direct update, cached until the next
/// invalidation; `None` unless the id's type is the key's own (the
/// statements cast the id to the key's type, which may change it).  Raises
/// as `target` does for a table the statements cannot be made for.
///
/// # Safety
/// `rel` is open.
unsafe fn columns(rel: pg_sys::Relation, id_type: pg_sys::Oid, caller: &str) -> Option<Columns> {
    // SAFETY: the relation is open (the contract).
    let key = (unsafe { (*rel).rd_id }, id_type);
    let generation = invalidation::generation();
    let cached = COLUMNS.with_borrow(|all| all.get(&key).copied());
    if let Some((_, columns)) = cached.filter(|(at, _)| *at == generation) {
        return columns;
    }
    // SAFETY: the relation is open (the contract), and so is its descriptor.
    let columns = unsafe {
        let target = target(rel, caller);
        let attnum = |name: &str| attnum_named(rel, name);
        match (attnum(&target.key), attnum(&target.stock), attnum(&target.reserved)) {
            (Some(key), Some(stock), Some(reserved)) => {
                let key_attribute = tuple_desc_attr((*rel).rd_att, key);
                (key_attribute.atttypid == id_type && key_attribute.atttypmod < 0).then_some(Columns {
                    key,
                    stock,
                    reserved,
                    scale: target.scale,
                })
            }
            _ => None,
        }
    };
    COLUMNS.with_borrow_mut(|all| all.insert(key, (generation, columns)));
    columns
}

unsafe extern "C-unwind" {
    // The fmgr entry point itself, for DirectFunctionCall1Coll.
    fn numeric_min_scale(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// Whether the statements' own check of the quantity passes: not NULL,
/// finite, positive and with at most `scale` decimals (`$2 > 0 AND $2 =
/// round($2, scale)`; NaN and infinity, which pass that, leave the row
/// unchanged through the availability check, so they go to the statements).
///
/// # Safety
/// `quantity` is a numeric datum and its null flag.
unsafe fn valid_quantity(quantity: (pg_sys::Datum, bool), scale: Option<i32>) -> bool {
    let (value, isnull) = quantity;
    if isnull || quantities::is_nan(pg_sys::NUMERICOID, value) {
        return false;
    }
    // SAFETY: a numeric, detoasted (a copy in the current memory context if
    // it was toasted or packed) before its header is read.
    if unsafe { pg_sys::numeric_is_inf(pg_sys::pg_detoast_datum(value.cast_mut_ptr()) as pg_sys::Numeric) } {
        return false;
    }
    quantities::sign(pg_sys::NUMERICOID, value) == core::cmp::Ordering::Greater
        && scale.is_none_or(|scale| {
            // SAFETY: numeric_min_scale of a finite numeric, which raises nothing.
            let needed = unsafe { pg_sys::DirectFunctionCall1Coll(Some(numeric_min_scale), pg_sys::InvalidOid, value) };
            needed.value() as i32 <= scale
        })
}

/// Runs `apply` (which says whether it changed the row) on the row, and
/// when it did not, asks the lookup statement why.  A BEFORE UPDATE trigger
/// that returns NULL leaves the row alone just as a failed check does; the
/// lookup tells them apart, as the row is there and passes the check.  A
/// concurrent writer can make the check pass between the two statements, so
/// `apply` runs once more before a skip is reported.
///
/// # Safety
/// Inside `SPI_connect`; `lookup` is the row's lookup statement, for `id`
/// and `quantity` as `on_row` takes them; whatever `apply` runs may raise, so
/// nothing that needs dropping may be live in it.
unsafe fn attempt(
    lookup: pg_sys::SPIPlanPtr,
    id: pg_sys::Datum,
    quantity: (pg_sys::Datum, bool),
    operation: Operation,
    mut apply: impl FnMut() -> bool,
) -> Outcome {
    let mut values = [id, quantity.0];
    let nulls = [b' ' as c_char, if quantity.1 { b'n' as c_char } else { b' ' as c_char }];
    let mut outcome = Outcome::Skipped;
    for _ in 0..2 {
        if apply() {
            return Outcome::Done;
        }
        // SAFETY: connected to SPI, with the lookup's parameters (the contract).
        outcome = unsafe { look_up(lookup, &mut values, &nulls, operation) };
        if outcome != Outcome::Skipped {
            break;
        }
    }
    outcome
}

/// What `on_row` returns for the outcome of `attempt`: the operation's
/// result (the relation closed), or why it was refused.
///
/// # Safety
/// As for `on_row`.
unsafe fn conclude(
    rel: pg_sys::Relation,
    id_type: pg_sys::Oid,
    id: pg_sys::Datum,
    quantity: (pg_sys::Datum, bool),
    operation: Operation,
    outcome: Outcome,
) -> Verdict {
    let caller = operation.name();
    if outcome == Outcome::Done {
        // The lock is kept until the end of the transaction, like the UPDATE's.
        // SAFETY: the relation opened by the caller, not used after this.
        unsafe { pg_sys::relation_close(rel, pg_sys::NoLock as i32) };
        return Verdict::Allow(pg_sys::Datum::from(operation == Operation::Reserve));
    }

    // Refused: say why.
    // SAFETY: the relation is open.
    let target = unsafe { target(rel, caller) };
    // SAFETY: a numeric datum and its null flag (the contract).
    let quantity = unsafe { pgrx::AnyNumeric::from_datum(quantity.0, quantity.1) };
    check_quantity(quantity.clone(), caller, || target.scale);
    let quantity = quantity.expect("a NULL quantity is refused above");
    match outcome {
        Outcome::Skipped => {
            // SAFETY: the id, of the type id_type (the contract).
            let id = unsafe { id_text(id_type, id) };
            let verb = operation.verb();
            let refusal = Refusal {
                code: PgSqlErrorCode::ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION,
                message: format!("{caller}: a trigger on table \"{}\" skipped the row to {verb}", target.table),
                detail: format!("Key ({})=({id}): nothing was {}.", target.key, operation.done()),
                hint: format!("Check the BEFORE UPDATE triggers of {} that can return NULL.", target.table),
                column: None,
            };
            // SAFETY: the relation stays open until the error is raised
            // (the abort closes it); the constraint name is static.
            Verdict::Refuse(unsafe { refusal.violation(rel, c"integrity_stock".as_ptr()) })
        }
        Outcome::NoRow => {
            // SAFETY: the id, of the type id_type (the contract).
            let id = unsafe { id_text(id_type, id) };
            Error::NoSuchRow { caller, table: target.table, key: target.key, id }.raise()
        }
        Outcome::NotEnough(_) if operation == Operation::Reserve => {
            // SAFETY: the relation opened by the caller, not used after this.
            unsafe { pg_sys::relation_close(rel, pg_sys::NoLock as i32) };
            Verdict::Allow(pg_sys::Datum::from(false))
        }
        Outcome::NotEnough(reserved) => {
            // SAFETY: the id, of the type id_type (the contract).
            let id = unsafe { id_text(id_type, id) };
            // SAFETY: the relation is open, and its rd_rel with it.
            let relname = unsafe { pgrx::name_data_to_str(&(*(*rel).rd_rel).relname) }.to_string();
            let refusal = Refusal {
                code: PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
                message: format!(
                    "{caller}: cannot {} {quantity} of \"{relname}\" row {} = {id}: only {reserved} is reserved",
                    operation.verb(),
                    target.key
                ),
                detail: format!(
                    "Key ({})=({id}) in table {} has {} {reserved}.",
                    target.key, target.table, target.reserved
                ),
                hint: "Release or commit at most what the row has reserved.".into(),
                // SAFETY: the relation is open.
                column: unsafe { attnum_named(rel, &target.reserved) },
            };
            // The relation stays open: the error refers to it, and aborting
            // the transaction releases it.
            // SAFETY: so the relation is valid until the error is raised;
            // the constraint name is static.
            Verdict::Refuse(unsafe { refusal.violation(rel, c"integrity_stock".as_ptr()) })
        }
        Outcome::Done => unreachable!("handled above"),
    }
}

#[derive(PartialEq)]
enum Outcome {
    Done,
    /// The row exists; the text is its reserved quantity.
    NotEnough(String),
    NoRow,
    /// The row exists and passes the check, yet the statement changed nothing.
    Skipped,
}

/// Runs the lookup statement for the row the operation missed.
///
/// # Safety
/// Inside `SPI_connect`; `values` and `nulls` are the operation's arguments.
unsafe fn look_up(
    lookup: pg_sys::SPIPlanPtr,
    values: &mut [pg_sys::Datum; 2],
    nulls: &[c_char; 2],
    operation: Operation,
) -> Outcome {
    // SAFETY: connected to SPI, with the lookup's parameters (the contract);
    // SPI_processed is read right after the call that set it.
    unsafe {
        let rc = pg_sys::SPI_execute_plan(lookup, values.as_mut_ptr(), nulls.as_ptr(), false, 1);
        if rc != pg_sys::SPI_OK_SELECT as c_int {
            Error::Spi { what: "looking up the row".into(), rc }.raise();
        }
        if pg_sys::SPI_processed != 1 {
            return Outcome::NoRow;
        }
        let passes = result_value(0, if operation == Operation::Reserve { 2 } else { 3 });
        if passes.is_some_and(|passes| passes.value() != 0) {
            return Outcome::Skipped;
        }
        Outcome::NotEnough(result_text(0, 1).unwrap_or_else(|| "NULL".to_string()))
    }
}

/// The id as its type's output function writes it.
///
/// # Safety
/// `id` is a datum of type `id_type`.
unsafe fn id_text(id_type: pg_sys::Oid, id: pg_sys::Datum) -> String {
    // SAFETY: the output function of the datum's own type (the contract),
    // which returns a palloc'd NUL-terminated string, copied out at once.
    unsafe {
        let mut output = pg_sys::InvalidOid;
        let mut varlena = false;
        pg_sys::getTypeOutputInfo(id_type, &mut output, &mut varlena);
        CStr::from_ptr(pg_sys::OidOutputFunctionCall(output, id)).to_string_lossy().into_owned()
    }
}

/// The attribute number of `column` in `rel`, if it is a live column.
///
/// # Safety
/// `rel` is open.
unsafe fn attnum_named(rel: pg_sys::Relation, column: &str) -> Option<i16> {
    let name = CString::new(column).ok()?;
    // SAFETY: the open relation's descriptor (the contract).
    unsafe { column_attnum((*rel).rd_att, &name) }
}

/// The table's stock guard, read from its `integrity_stock` trigger.
///
/// # Safety
/// `rel` is open, and stays open while the result is used.
unsafe fn target(rel: pg_sys::Relation, caller: &str) -> Target {
    // SAFETY: the relation is open for the whole function (the contract).
    let table = qualified_name(unsafe { (*rel).rd_id });
    // SAFETY: as above; its trigger descriptor (NULL without triggers) is
    // the relcache's, unchanged while the relation is open and locked.
    let trigdesc = unsafe { (*rel).trigdesc };
    let triggers = if trigdesc.is_null() {
        &[][..]
    } else {
        // SAFETY: a trigger descriptor holds numtriggers triggers.
        unsafe { std::slice::from_raw_parts((*trigdesc).triggers, (*trigdesc).numtriggers as usize) }
    };
    let guard = triggers
        .iter()
        .find(|t| {
            // SAFETY: a trigger's name is NUL-terminated.
            unsafe { CStr::from_ptr(t.tgname) == c"integrity_stock" && t.tgnargs == 2 }
        })
        .unwrap_or_else(|| Error::NoStockGuard { caller: caller.to_string().into(), table: table.clone() }.raise());
    // SAFETY: the trigger has two arguments (found so), NUL-terminated.
    let arg = |i: usize| unsafe { CStr::from_ptr(*guard.tgargs.add(i)) }.to_string_lossy().into_owned();
    let (stock, reserved) = (arg(0), arg(1));

    #[cfg(not(feature = "pg18"))]
    // SAFETY: the relation is open; the relcache's answer (InvalidOid if none).
    let index_oid = unsafe { pg_sys::RelationGetPrimaryKeyIndex(rel) };
    // Only an immediate primary key, as on every version before 18.
    #[cfg(feature = "pg18")]
    // SAFETY: the relation is open; the relcache's answer (InvalidOid if none).
    let index_oid = unsafe { pg_sys::RelationGetPrimaryKeyIndex(rel, false) };
    let index = (index_oid != pg_sys::InvalidOid).then(|| {
        // SAFETY: a syscache lookup by OID (NULL if the index is gone,
        // checked below); the tuple is released below.
        unsafe { pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::INDEXRELID as i32, index_oid.into()) }
    });
    // SAFETY: a pg_index tuple's fixed part is a FormData_pg_index, whose
    // indkey holds at least one attribute, read before the tuple is released.
    let key_attnum = index.filter(|tuple| !tuple.is_null()).and_then(|tuple| unsafe {
        let form = pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_index;
        let attnum = ((*form).indnkeyatts == 1).then(|| *(*form).indkey.values.as_ptr());
        pg_sys::ReleaseSysCache(tuple);
        attnum
    });
    let Some(key_attnum) = key_attnum else {
        Error::NeedsSingleColumnKey { caller: caller.to_string().into(), table }.raise()
    };
    // SAFETY: the relation is open and locked for the rest of this function.
    let attribute = |attnum: i16| unsafe { tuple_desc_attr((*rel).rd_att, attnum) };
    let key_attribute = attribute(key_attnum);
    let key = pgrx::name_data_to_str(&key_attribute.attname).to_string();
    // Qualified: the functions run with search_path = pg_catalog, pg_temp.
    // SAFETY: format_type_extended returns a palloc'd NUL-terminated name,
    // copied out at once.
    let key_type = unsafe {
        CStr::from_ptr(pg_sys::format_type_extended(
            key_attribute.atttypid,
            key_attribute.atttypmod,
            (pg_sys::FORMAT_TYPE_TYPEMOD_GIVEN | pg_sys::FORMAT_TYPE_FORCE_QUALIFY) as u16,
        ))
    }
    .to_string_lossy()
    .into_owned();
    // SAFETY: the relation is open (the contract).
    let scale = unsafe { attnum_named(rel, &reserved) }.and_then(|attnum| {
        let column = attribute(attnum);
        match column.atttypid {
            pg_sys::NUMERICOID if column.atttypmod >= 4 => Some((column.atttypmod - 4) & 0xffff),
            pg_sys::NUMERICOID => None,
            _ => Some(0),
        }
    });
    Target { table, stock, reserved, key, key_type, scale }
}

pub(crate) fn quote(ident: &str) -> String {
    let c = CString::new(ident).expect("catalog names have no NUL");
    // SAFETY: quote_identifier returns `c` itself or a palloc'd quoted copy,
    // copied out before `c` is dropped.
    unsafe { CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr())) }.to_string_lossy().into_owned()
}

/// Opens (and locks) the relation of the `tbl` argument; opening takes in
/// pending invalidations, so the guard read from it is current.
pub(crate) fn open(tbl: pg_sys::Datum, caller: &str) -> pg_sys::Relation {
    let relid = pg_sys::Oid::from(tbl.value() as u32);
    // SAFETY: opens the relation by OID (NULL if there is none, checked); it
    // stays open, and locked, until closed by the caller or the transaction ends.
    let rel = unsafe { pg_sys::try_relation_open(relid, pg_sys::AccessShareLock as i32) };
    if rel.is_null() {
        Error::NoSuchRelation { caller: caller.to_string().into(), relid }.raise();
    }
    rel
}

/// The table's prepared statements for the key type: cached, checked again
/// after a relcache invalidation, prepared again when what they were built
/// from changed.
///
/// # Safety
/// `rel` is open.
pub(crate) unsafe fn plans<const N: usize>(
    cache: &'static LocalKey<Cache<N>>,
    rel: pg_sys::Relation,
    id_type: pg_sys::Oid,
    caller: &'static str,
    prepare: fn(&Target, pg_sys::Oid) -> [pg_sys::SPIPlanPtr; N],
) -> [pg_sys::SPIPlanPtr; N] {
    // SAFETY: the relation is open (the contract).
    let key = (unsafe { (*rel).rd_id }, id_type);
    let generation = invalidation::generation();
    let current =
        cache.with_borrow(|plans| plans.get(&key).filter(|p| p.generation == generation).map(|p| p.statements));
    if let Some(current) = current {
        return current;
    }
    // SAFETY: the relation is open (the contract).
    let target = unsafe { target(rel, caller) };
    let still_valid = cache.with_borrow_mut(|plans| {
        plans.get_mut(&key).filter(|p| p.target == target).map(|p| {
            p.generation = generation;
            p.statements
        })
    });
    if let Some(still_valid) = still_valid {
        return still_valid;
    }
    let statements = prepare(&target, id_type);
    cache.with_borrow_mut(|all| {
        if let Some(stale) = all.insert(key, Plans { target, generation, statements }) {
            stale.statements.into_iter().for_each(free_plan);
        }
    });
    statements
}

/// Prepares and keeps `statements`, whose parameters are of `arg_types`.
/// Each finds its rows by key, the best plan for any parameters: generic.
pub(crate) fn keep_all<const N: usize, const M: usize>(
    statements: [String; N],
    arg_types: [pg_sys::Oid; M],
) -> [pg_sys::SPIPlanPtr; N] {
    let mut arg_types = arg_types;
    spi_connect();
    let prepared = statements.map(|sql| keep_generic_plan(&sql, &mut arg_types, || sql.clone()));
    spi_finish();
    prepared
}

/// The key of the row ($1) and a valid quantity ($2), as a WHERE condition.
fn row_and_quantity(target: &Target) -> String {
    let key_match = format!("{} = $1::{}", quote(&target.key), target.key_type);
    match target.scale {
        Some(scale) => format!("{key_match} AND $2 > 0 AND $2 = round($2, {scale})"),
        None => format!("{key_match} AND $2 > 0"),
    }
}

/// The statements of one row, with the key (of `id_type`) and the quantity.
fn prepare_row(target: &Target, id_type: pg_sys::Oid) -> [pg_sys::SPIPlanPtr; 4] {
    let (t, s, r, k) = (&target.table, quote(&target.stock), quote(&target.reserved), quote(&target.key));
    let key_match = format!("{k} = $1::{}", target.key_type);
    let row = row_and_quantity(target);
    keep_all(
        [
            format!("UPDATE {t} SET {r} = {r} + $2 WHERE {row} AND {s} - {r} >= $2 RETURNING 1"),
            format!("UPDATE {t} SET {r} = {r} - $2 WHERE {row} AND {r} >= $2 RETURNING 1"),
            format!("UPDATE {t} SET {r} = {r} - $2, {s} = {s} - $2 WHERE {row} AND {r} >= $2 RETURNING 1"),
            format!(
                "SELECT {r}, {s} - {r} >= $2 AND {skippable}, {r} >= $2 AND {skippable} FROM {t} WHERE {key_match}",
                skippable = format!("integrity._may_skip_updates({t}.tableoid)")
            ),
        ],
        [id_type, pg_sys::NUMERICOID],
    )
}

/// The statements of several rows, with the keys (an array of `ids_type`)
/// and the quantities (numeric[]), which may name a row more than once.
fn prepare_rows(target: &Target, ids_type: pg_sys::Oid) -> [pg_sys::SPIPlanPtr; 2] {
    let (t, s, r, k, key_type) =
        (&target.table, quote(&target.stock), quote(&target.reserved), quote(&target.key), &target.key_type);
    // unnest of two arrays is FROM-clause syntax, not a function of pg_catalog.
    let wanted = format!("SELECT w.k::{key_type} AS k, sum(w.q) AS q FROM unnest($1, $2) AS w(k, q) GROUP BY 1");
    keep_all(
        [
            // The rows locked in key order, then: the first key (as text)
            // with no row, whether every row has enough, how many rows.
            // `key = ANY (the ids)` finds the rows by index scan, whatever a
            // generic plan guesses of the unnest (a join on it can scan the
            // whole table).
            format!(
                "WITH wanted AS ({wanted}), \
                      locked AS (SELECT r.{k} AS k, r.{s} - r.{r} AS available \
                                   FROM {t} r WHERE r.{k} = ANY ($1::{key_type}[]) ORDER BY r.{k} FOR UPDATE) \
                 SELECT min(w.k::text) FILTER (WHERE l.k IS NULL), coalesce(bool_and(l.available >= w.q), false), count(*) \
                   FROM wanted w LEFT JOIN locked l ON l.k = w.k"
            ),
            format!("UPDATE {t} r SET {r} = r.{r} + w.q FROM ({wanted}) w WHERE r.{k} = ANY ($1::{key_type}[]) AND r.{k} = w.k"),
        ],
        [ids_type, pg_sys::NUMERICARRAYOID],
    )
}

/// Reserves on every row or on none: directly when it can (`rows_directly`),
/// by the statements otherwise.
///
/// # Safety
/// `fcinfo` is the running call's, declared (regclass, anyarray, numeric[]).
unsafe fn reserve_rows(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    let caller = "reserve_stock";
    // SAFETY: the running call's fcinfo, with three arguments (the contract).
    let args = unsafe { (*fcinfo).args.as_slice(3) };
    if args[0].isnull {
        Error::NullArgument { caller: caller.into(), argument: "tbl" }.raise();
    }
    // SAFETY: the call's FmgrInfo, whose expression gives the actual type of
    // the anyarray argument.
    let ids_type = unsafe { pg_sys::get_fn_expr_argtype((*fcinfo).flinfo, 1) };
    // SAFETY: an array type's catalog entry.
    let key_type = unsafe { pg_sys::get_element_type(ids_type) };
    let rel = open(args[0].value, caller);
    // Raises for a table that is not guarded, before the arguments are read.
    // SAFETY: the relation is open.
    let columns = unsafe { columns(rel, key_type, caller) };
    if columns.is_none() {
        // Only the statements can serve these ids: prepared (or found kept)
        // now, so that their errors (ids of a type with no cast to the key's,
        // a guard column renamed away) come before those of the arguments.
        // SAFETY: the relation is open; the level is closed at once.
        unsafe { pinned_if(true, || plans(&ROWS_PLANS, rel, ids_type, caller, prepare_rows)) };
    }

    if args[1].isnull {
        Error::NullArgument { caller: caller.into(), argument: "ids" }.raise();
    }
    // SAFETY: a non-NULL anyarray argument, detoasted here (a copy in the
    // call's memory context if it was toasted).
    let ids = unsafe { pg_sys::pg_detoast_datum(args[1].value.cast_mut_ptr()) as *mut pg_sys::ArrayType };
    // SAFETY: a detoasted array, whose dimensions follow its header (ARR_DIMS).
    let count = unsafe {
        let dims = (ids as *mut u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *mut c_int;
        pg_sys::ArrayGetNItems((*ids).ndim, dims)
    };
    // SAFETY: the third argument is declared numeric[]; when not NULL, it is
    // detoasted and deconstructed into palloc'd datums and null flags.
    let qtys = (!args[2].isnull).then(|| unsafe {
        let qtys = pg_sys::pg_detoast_datum(args[2].value.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let (mut values, mut nulls, mut n) = (core::ptr::null_mut(), core::ptr::null_mut(), 0);
        pg_sys::deconstruct_array(qtys, pg_sys::NUMERICOID, -1, false, b'i' as c_char, &mut values, &mut nulls, &mut n);
        (values, nulls, n)
    });
    let Some((qtys, qty_nulls, _)) = qtys.filter(|&(_, _, n)| n == count) else {
        Error::LengthMismatch { caller }.raise()
    };
    // SAFETY: a detoasted array.
    if unsafe { pg_sys::array_contains_nulls(ids) } {
        Error::NullElement { caller, argument: "ids" }.raise();
    }
    if count == 0 {
        Error::NoRows { caller }.raise();
    }
    // SAFETY: the relation is open.
    let scale = columns.map_or_else(|| unsafe { target(rel, caller) }.scale, |columns| columns.scale);
    for i in 0..count as usize {
        // SAFETY: `count` datums and null flags of numeric[] elements.
        let quantity = unsafe { (*qtys.add(i), *qty_nulls.add(i)) };
        // SAFETY: as above.  The check that passes is the cheap one; the
        // other says why a quantity is refused (infinity passes it).
        if !unsafe { valid_quantity(quantity, scale) } {
            // SAFETY: as above.
            check_quantity(unsafe { pgrx::AnyNumeric::from_datum(quantity.0, quantity.1) }, caller, || scale);
        }
    }

    // SAFETY: the relation is open; the ids are a detoasted array of the
    // key's type when `columns` is, without NULLs, the quantities `count`
    // numerics, none NULL.
    let direct = columns.and_then(|columns| unsafe { rows_directly(rel, columns, ids, key_type, qtys, count) });
    // SAFETY: the relation is open; the arguments as declared.
    let (enough, wanted, updated) = direct.unwrap_or_else(|| unsafe { rows_by_statements(rel, ids_type, args) });
    if enough && updated != wanted {
        // A BEFORE UPDATE trigger of the table's own skipped a row (RETURN
        // NULL): the error takes back what the others reserved.
        // SAFETY: the relation is open.
        let table = unsafe { target(rel, caller) }.table;
        let refusal = Refusal {
            code: PgSqlErrorCode::ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION,
            message: format!(
                "{caller}: a trigger on table \"{table}\" skipped {} of the {wanted} rows to reserve",
                wanted - updated
            ),
            detail: "Nothing was reserved: a reservation of several rows is all or nothing.".into(),
            hint: format!("Check the BEFORE UPDATE triggers of {table} that can return NULL."),
            column: None,
        };
        // SAFETY: the relation stays open until the error is raised (the
        // abort closes it); the constraint name is static.
        return Verdict::Refuse(unsafe { refusal.violation(rel, c"integrity_stock".as_ptr()) });
    }
    // The lock is kept until the end of the transaction, like the UPDATE's.
    // SAFETY: the relation opened above, not used after this.
    unsafe { pg_sys::relation_close(rel, pg_sys::NoLock as i32) };
    Verdict::Allow(pg_sys::Datum::from(enough))
}

/// The reservation of every row without SPI (`direct_update::add_to_all`),
/// when the table allows it and every row is there with enough available:
/// whether it reserved (always), how many distinct rows it wanted and how
/// many it updated.  `None`, with nothing written, leaves the decision (and
/// its explanation) to the statements.
///
/// # Safety
/// `rel` is open; `ids` a detoasted array of `key_type` without NULLs, the
/// key column's type; `qtys` as many numerics, none NULL.
unsafe fn rows_directly(
    rel: pg_sys::Relation,
    columns: Columns,
    ids: *mut pg_sys::ArrayType,
    key_type: pg_sys::Oid,
    qtys: *mut pg_sys::Datum,
    count: c_int,
) -> Option<(bool, u64, u64)> {
    // SAFETY: the arrays as the contract says, deconstructed into palloc'd
    // datums; the target is opened and closed here, in the call's
    // transaction and memory context.
    unsafe {
        // The key column is of the elements' type, whose storage its
        // attribute copies: no catalog lookup per call.
        let key = tuple_desc_attr((*rel).rd_att, columns.key);
        let (mut keys, mut n) = (core::ptr::null_mut(), 0);
        pg_sys::deconstruct_array(
            ids,
            key_type,
            key.attlen.into(),
            key.attbyval,
            key.attalign,
            &mut keys,
            core::ptr::null_mut(),
            &mut n,
        );
        if n != count {
            return None;
        }
        let rows = pg_sys::palloc(size_of::<(pg_sys::Datum, pg_sys::Datum)>() * count as usize)
            as *mut (pg_sys::Datum, pg_sys::Datum);
        for i in 0..count as usize {
            rows.add(i).write((*keys.add(i), *qtys.add(i)));
        }
        let rows = core::slice::from_raw_parts_mut(rows, count as usize);
        let target = direct_update::open(
            (*rel).rd_id,
            columns.reserved,
            &[columns.key],
            &[key_type],
            Some(columns.stock),
            direct_update::Sanctioned::Stock,
        )?;
        let outcome = direct_update::add_to_all(&target, rows);
        direct_update::close(target);
        let (wanted, skipped) = outcome.ok()?;
        Some((true, wanted as u64, (wanted - skipped) as u64))
    }
}

/// The reservation of every row by the statements: whether every row has
/// enough, how many distinct rows they wanted and how many they updated.
/// Raises for a key with no row.
///
/// # Safety
/// `rel` is open; `ids_type` is the type of `args[1]`, as `reserve_rows`
/// takes its arguments (checked there).
unsafe fn rows_by_statements(
    rel: pg_sys::Relation,
    ids_type: pg_sys::Oid,
    args: &[pg_sys::NullableDatum],
) -> (bool, u64, u64) {
    let caller = "reserve_stock";
    // The statements' SQL resolves names (see on_row).
    // SAFETY: closed below, and by the abort if a statement raises.
    let level = unsafe { pin_search_path() };
    // SAFETY: the relation is open.
    let statements = unsafe { plans(&ROWS_PLANS, rel, ids_type, caller, prepare_rows) };
    let mut values = [args[1].value, args[2].value];
    let nulls = [b' ' as c_char; 2];
    // SAFETY: the statements run inside the SPI connection made here, with
    // the parameters they were prepared with (the ids, of the array type
    // they were prepared for, and the quantities); nothing on this frame
    // needs dropping if one raises (plain arrays and datums).
    let (missing, enough, wanted, updated) = unsafe {
        spi_connect();
        execute_plan(statements[LOCK_ROWS], &mut values, &nulls, false);
        let missing = result_text(0, 1);
        let enough = result_value(0, 2).is_some_and(|enough| enough.value() != 0);
        let wanted = result_value(0, 3).map_or(0, |count| count.value() as u64);
        let updated = if missing.is_none() && enough {
            execute_plan(statements[RESERVE_ROWS], &mut values, &nulls, false)
        } else {
            0
        };
        spi_finish();
        pg_sys::AtEOXact_GUC(true, level);
        (missing, enough, wanted, updated)
    };
    if let Some(id) = missing {
        // SAFETY: the relation is open.
        let target = unsafe { target(rel, caller) };
        Error::NoSuchRow { caller, table: target.table, key: target.key, id }.raise();
    }
    (enough, wanted, updated)
}

/// Raises unless `quantity` is positive and has at most the decimals that
/// `scale` (asked for only when it matters) allows.
fn check_quantity(quantity: Option<pgrx::AnyNumeric>, caller: &'static str, scale: impl FnOnce() -> Option<i32>) {
    match quantity {
        None => Error::QuantityNotPositive { caller, quantity: "NULL".into() }.raise(),
        Some(q) if q.is_nan() || q <= pgrx::AnyNumeric::from(0) => {
            Error::QuantityNotPositive { caller, quantity: q.to_string() }.raise()
        }
        Some(q) => {
            let text = q.to_string();
            let decimals = text.split_once('.').map_or(0, |(_, fraction)| fraction.trim_end_matches('0').len());
            if decimals > 0 {
                if let Some(scale) = scale().filter(|&scale| decimals as i32 > scale) {
                    Error::QuantityTooPrecise { caller, quantity: text, scale }.raise()
                }
            }
        }
    }
}

/// `integrity._stock_target`: the table's stock guard, as `target` reads it.
///
/// # Safety
/// `fcinfo` is the running call's, declared (regclass, text) with the OUT
/// columns of `_stock_target`.
unsafe fn stock_target(fcinfo: pg_sys::FunctionCallInfo) -> Verdict {
    // SAFETY: the running call's fcinfo, with two arguments (the contract).
    let args = unsafe { (*fcinfo).args.as_slice(2) };
    // SAFETY: the second argument is declared text; its null flag is passed.
    let caller = unsafe { String::from_datum(args[1].value, args[1].isnull) }.unwrap_or_default();
    if args[0].isnull {
        Error::NullArgument { caller: Cow::Owned(caller), argument: "tbl" }.raise();
    }
    let rel = open(args[0].value, &caller);
    // SAFETY: the relation is open.
    let target = unsafe { target(rel, &caller) };
    // SAFETY: the relation opened above, not used after this.
    unsafe { pg_sys::relation_close(rel, pg_sys::NoLock as i32) };
    let text = |value: &str| {
        let value = CString::new(value).expect("catalog names have no NUL");
        // SAFETY: a NUL-terminated string, copied into a palloc'd text.
        pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text(value.as_ptr()) })
    };
    let mut values = [
        text(&target.stock),
        text(&target.reserved),
        text(&target.key),
        text(&target.key_type),
        pg_sys::Datum::from(target.scale.unwrap_or_default()),
    ];
    let mut nulls = [false, false, false, false, target.scale.is_none()];
    // SAFETY: the call's own result type, which the declaration makes a
    // record of five columns (the contract), filled from the arrays above.
    unsafe {
        let mut tupdesc: pg_sys::TupleDesc = std::ptr::null_mut();
        if pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut tupdesc)
            != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE
        {
            Error::NotDeclaredAsRecord { function: "integrity._stock_target" }.raise();
        }
        let tupdesc = pg_sys::BlessTupleDesc(tupdesc);
        let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        Verdict::Allow(pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data))
    }
}
