//! `integrity.guard_ledger_credit`: a ledger of DEBIT and CREDIT entries that
//! moves an account's cached used credit, and may never take it above the
//! account's limit or below zero.
//!
//! `AFTER INSERT OR UPDATE OR DELETE … FOR EACH ROW` on the ledger applies each
//! entry to its account with one statement,
//!
//! ```sql
//! UPDATE accounts SET used = used + $sign * $amount WHERE key1 = $k1 AND …
//!     RETURNING used::text, limit::text, used >= 0 AND used <= limit
//! ```
//!
//! so the check and the write happen on the row version the UPDATE locked:
//! two sessions debiting one account queue on its row lock and the second
//! sees the first's total (READ COMMITTED re-evaluates on the new version;
//! higher isolation levels raise 40001 instead).  No write skew, no lost
//! update, whatever the number of sessions.  A DELETE takes its entry back, an
//! UPDATE takes the old entry back and applies the new one.
//!
//! Where the accounts table allows it, `direct_update` makes that update
//! without SPI (the account found through its unique key, locked, checked and
//! written by the executor's `ExecSimpleRelationUpdate`): the same locks,
//! re-check, triggers, constraints and errors, without a planned statement's
//! executor start and end.  The SPI statement does it for the tables and rows
//! `direct_update` leaves; it is prepared once per backend and trigger
//! (`SPI_keepplan`), when first needed, and found again once per statement
//! through `fn_extra`.  Rows applied by logical
//! replication (`session_replication_role = replica`) are not applied again:
//! the trigger fires on origin writes only, as the account rows replicate too.

use core::cell::Cell;
use core::cmp::Ordering;
use core::ffi::{c_char, CStr};
use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::direct_update;
use crate::error::{Error, Refusal};
use crate::fmgr::{execute_plan, getvalue, prepare_kept, result_text, spi_connect, spi_finish, KeptPlans};
use crate::quantities::{is_nan, quantity_type, sign};
use crate::trigger::{trigger_entry, Firing, Row, Verdict};

trigger_entry!(
    /// Arguments `(accounts, amount_column, entry_type_column, debit_value,
    /// credit_value, limit_column, used_column, key_column…)`.
    integrity_ledger_credit_guard,
    pg_finfo_integrity_ledger_credit_guard,
    apply_entries
);

/// Key columns an account can have (registration refuses more).
const MAX_KEYS: usize = 8;
const FIXED_ARGS: usize = 7;

/// The arguments of the trigger, in order.
struct Args<'a> {
    accounts: &'a CStr,
    amount: &'a CStr,
    entry_type: &'a CStr,
    debit: &'a CStr,
    credit: &'a CStr,
    limit: &'a CStr,
    used: &'a CStr,
    keys: Vec<&'a CStr>,
}

/// Per statement (in `fn_extra`): the prepared plan (null until the SPI
/// statement is first needed), the ledger's attributes and the accounts'.
#[repr(C)]
struct EntryPlan {
    plan: Cell<pg_sys::SPIPlanPtr>,
    amount_att: i16,
    amount_type: pg_sys::Oid,
    entry_type_att: i16,
    nkeys: usize,
    key_atts: [i16; MAX_KEYS],
    account: AccountTable,
}

/// The accounts table and its columns, for `direct_update`; `table` is
/// invalid when a column is missing (the SPI statement then reports it).
#[repr(C)]
#[derive(Clone, Copy)]
struct AccountTable {
    table: pg_sys::Oid,
    used_att: i16,
    limit_att: i16,
    key_atts: [i16; MAX_KEYS],
}

/// What a prepared statement was prepared from: a re-registration with other
/// columns keeps the trigger's OID but changes the SQL, and a column type
/// change keeps the SQL but changes the parameter types.
#[derive(PartialEq)]
struct PlanSource {
    sql: String,
    arg_types: Vec<pg_sys::Oid>,
}

thread_local! {
    /// Prepared statements by trigger OID.
    static PLANS: KeptPlans<pg_sys::Oid, PlanSource> = KeptPlans::default();
}

/// # Safety
/// The callers' frames hold nothing that needs dropping: the account
/// updates raise their errors as they are (see `execute_plan`).
unsafe fn apply_entries(firing: &Firing) -> Verdict {
    if !firing.is_row() || firing.is_before() {
        firing.misuse();
    }
    let plan = entry_plan(firing);
    // The entry inserted or deleted, or the old one of an UPDATE.
    let row = firing.trigtuple();
    // SAFETY: nothing on this frame or the callers' (this function's
    // contract) needs dropping if an update raises.
    let outcome = unsafe {
        match firing.event() {
            pg_sys::TRIGGER_EVENT_INSERT => apply(firing, plan, (row, Direction::Apply), None),
            pg_sys::TRIGGER_EVENT_DELETE => apply(firing, plan, (row, Direction::TakeBack), None),
            pg_sys::TRIGGER_EVENT_UPDATE => {
                let (old, new) = (row, firing.newtuple());
                // An edit within one account is checked on its net effect; a move to
                // another account leaves the old one and joins the new one.
                if same_account(firing, plan, old, new) {
                    apply(firing, plan, (new, Direction::Apply), Some((old, Direction::TakeBack)))
                } else {
                    apply(firing, plan, (old, Direction::TakeBack), None)
                        .and_then(|()| apply(firing, plan, (new, Direction::Apply), None))
                }
            }
            _ => firing.misuse(),
        }
    };
    match outcome {
        Ok(()) => Verdict::Allow(pg_sys::Datum::from(0)),
        Err(refusal) => firing.refuse(refusal),
    }
}

fn same_account(firing: &Firing, plan: &EntryPlan, old: Row, new: Row) -> bool {
    plan.key_atts[..plan.nkeys].iter().all(|&attnum| firing.same_value(old, new, attnum))
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Apply,
    TakeBack,
}

fn args<'a>(firing: &'a Firing) -> Args<'a> {
    let all: Vec<&CStr> = firing.args().collect();
    if all.len() <= FIXED_ARGS || all.len() > FIXED_ARGS + MAX_KEYS {
        firing.misuse();
    }
    Args {
        accounts: all[0],
        amount: all[1],
        entry_type: all[2],
        debit: all[3],
        credit: all[4],
        limit: all[5],
        used: all[6],
        keys: all[FIXED_ARGS..].to_vec(),
    }
}

fn quote(ident: &CStr) -> String {
    // SAFETY: quote_identifier takes a NUL-terminated name and returns it or
    // a palloc'd quoted copy, copied out at once.
    unsafe { CStr::from_ptr(pg_sys::quote_identifier(ident.as_ptr())) }.to_string_lossy().into_owned()
}

/// Parameters: `$1 * $2 + $3 * $4` is the change (a direction of +1, -1 or 0
/// times an amount, twice: an UPDATE within one account nets two entries),
/// `$5…` the account key.
const KEY_PARAM: usize = 5;

/// The account's key, `a.k1 = $5 AND a.k2 = $6 …`.
fn key_match(args: &Args) -> String {
    let keys: Vec<String> =
        args.keys.iter().enumerate().map(|(i, key)| format!("a.{} = ${}", quote(key), i + KEY_PARAM)).collect();
    keys.join(" AND ")
}

/// Applies the change only if the account stays within `0 ..= limit`, so that
/// the account's own credit guard, if any, never has to refuse.
fn apply_statement(args: &Args) -> String {
    let (used, limit) = (quote(args.used), quote(args.limit));
    format!(
        "UPDATE {accounts} a SET {used} = a.{used} + $1 * $2 + $3 * $4 WHERE {keys} \
         AND a.{used} + $1 * $2 + $3 * $4 >= 0 AND a.{used} + $1 * $2 + $3 * $4 <= a.{limit} RETURNING 1",
        accounts = args.accounts.to_string_lossy(),
        keys = key_match(args)
    )
}

/// On refusal only: what the account holds and what the entry would make of it.
fn explain_statement(args: &Args) -> String {
    let (used, limit) = (quote(args.used), quote(args.limit));
    format!(
        "SELECT (a.{used} + $1 * $2 + $3 * $4)::pg_catalog.text, a.{limit}::pg_catalog.text, \
                a.{used} + $1 * $2 + $3 * $4 < 0, \
                a.{used} + $1 * $2 + $3 * $4 >= 0 AND a.{used} + $1 * $2 + $3 * $4 <= a.{limit} \
                AND integrity._may_skip_updates(a.tableoid) \
           FROM {accounts} a WHERE {keys}",
        accounts = args.accounts.to_string_lossy(),
        keys = key_match(args)
    )
}

/// The entry plan for this statement (and partition).
fn entry_plan<'f>(firing: &'f Firing) -> &'f EntryPlan {
    firing.statement_plan(|| {
        let args = args(firing);
        let attnum = |name: &CStr| firing.attnum(name).unwrap_or_else(|| firing.missing_column(name));
        let amount_att = attnum(args.amount);
        let amount_type = quantity_type(firing, amount_att);
        let mut key_atts = [0i16; MAX_KEYS];
        for (i, key) in args.keys.iter().enumerate() {
            key_atts[i] = attnum(key);
        }
        EntryPlan {
            plan: Cell::new(core::ptr::null_mut()),
            amount_att,
            amount_type,
            entry_type_att: attnum(args.entry_type),
            nkeys: args.keys.len(),
            key_atts,
            account: account(&args),
        }
    })
}

unsafe extern "C-unwind" {
    // The fmgr entry point itself, for DirectFunctionCall1Coll.
    fn regclassin(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// The accounts table (named as the SPI statement names it, so found the same
/// way) and the attribute numbers of its columns.
fn account(args: &Args) -> AccountTable {
    // SAFETY: regclassin takes a NUL-terminated name and returns an OID (or
    // raises, as the SPI statement would); get_attnum reads the syscache.
    unsafe {
        let table = pg_sys::Oid::from(
            pg_sys::DirectFunctionCall1Coll(
                Some(regclassin),
                pg_sys::InvalidOid,
                pg_sys::Datum::from(args.accounts.as_ptr()),
            )
            .value() as u32,
        );
        let attnum = |name: &CStr| pg_sys::get_attnum(table, name.as_ptr());
        let mut account =
            AccountTable { table, used_att: attnum(args.used), limit_att: attnum(args.limit), key_atts: [0; MAX_KEYS] };
        for (i, key) in args.keys.iter().enumerate() {
            account.key_atts[i] = attnum(key);
        }
        if account.used_att <= 0
            || account.limit_att <= 0
            || account.key_atts[..args.keys.len()].iter().any(|&a| a <= 0)
        {
            account.table = pg_sys::InvalidOid;
        }
        account
    }
}

/// The SPI statement's plan, prepared the first time a statement needs it.
fn spi_plan(firing: &Firing, plan: &EntryPlan) -> pg_sys::SPIPlanPtr {
    if plan.plan.get().is_null() {
        let args = args(firing);
        let mut arg_types = argument_types(firing, plan.amount_type, &plan.key_atts[..plan.nkeys]);
        plan.plan.set(prepared(firing, &apply_statement(&args), &mut arg_types));
    }
    plan.plan.get()
}

fn argument_types(firing: &Firing, amount_type: pg_sys::Oid, key_atts: &[i16]) -> Vec<pg_sys::Oid> {
    let keys = key_atts.iter().map(|&attnum| firing.attribute(attnum).atttypid);
    [pg_sys::INT4OID, amount_type, pg_sys::INT4OID, amount_type].into_iter().chain(keys).collect()
}

fn prepared(firing: &Firing, sql: &str, arg_types: &mut [pg_sys::Oid]) -> pg_sys::SPIPlanPtr {
    let source = PlanSource { sql: sql.to_string(), arg_types: arg_types.to_vec() };
    PLANS.with(|plans| {
        plans.get(firing.trigger().tgoid, source, || {
            prepare_kept(sql, arg_types, || format!("the ledger credit statement: {sql}"))
        })
    })
}

/// Applies `entry` (and `netted`, an entry of the same account) to the account.
/// The refusals read the trigger's arguments again; the path that lets an
/// entry through allocates nothing but what PostgreSQL pallocs per tuple.
///
/// # Safety
/// Nothing that needs dropping may be pending in the callers' frames (the update's
/// errors reach PostgreSQL as they are, see `execute_plan`).
unsafe fn apply(
    firing: &Firing,
    plan: &EntryPlan,
    entry: (Row, Direction),
    netted: Option<(Row, Direction)>,
) -> Result<(), Refusal> {
    let (direction, amount) = signed_amount(firing, plan, entry)?;
    let (netted_direction, netted_amount) = match netted {
        Some(netted) => signed_amount(firing, plan, netted)?,
        None => (0, amount),
    };
    let terms = [(direction, amount), (netted_direction, netted_amount)];
    // SAFETY: the account's key values have its key columns' types (checked at
    // registration), the amounts the amount type; nothing here needs dropping
    // if the update raises (this function's contract).
    if let Some(outcome) = unsafe { apply_directly(firing, plan, entry.0, terms) } {
        let args = args(firing);
        return match outcome {
            direct_update::Outcome::Updated => Ok(()),
            direct_update::Outcome::Missing => Err(no_account(firing, entry.0, &args)),
            direct_update::Outcome::Skipped => Err(skipped(firing, entry.0, &args)),
            direct_update::Outcome::OutOfBounds(bounds) => Err(over_limit(
                firing,
                entry.0,
                &args,
                bounds.below_zero,
                bounds.value.unwrap_or_else(|| "NULL".to_string()),
                bounds.bound.unwrap_or_else(|| "NULL".to_string()),
            )),
            direct_update::Outcome::Fallback => unreachable!("apply_directly leaves a fallback to the SPI statement"),
        };
    }
    let mut values = [pg_sys::Datum::from(0); MAX_KEYS + KEY_PARAM - 1];
    let mut nulls = [b' ' as c_char; MAX_KEYS + KEY_PARAM - 1];
    values[..4].copy_from_slice(&[
        pg_sys::Datum::from(direction),
        amount,
        pg_sys::Datum::from(netted_direction),
        netted_amount,
    ]);
    for i in 0..plan.nkeys {
        let (value, is_null) = firing.value(entry.0, plan.key_atts[i]);
        values[i + KEY_PARAM - 1] = value;
        nulls[i + KEY_PARAM - 1] = if is_null { b'n' as c_char } else { b' ' as c_char };
    }

    // A BEFORE UPDATE trigger on the accounts that returns NULL leaves the
    // account alone just as a failed check does; the account is then there
    // and within bounds, and has such a trigger (without one, within bounds
    // means concurrent entries moved it meanwhile).  A concurrent entry can bring it within bounds
    // between the two statements, so the update runs once more before a skip
    // is reported.
    spi_connect();
    let mut attempts = 0;
    let account = loop {
        // SAFETY: connected just above; the plan's parameters, in plain
        // arrays; the callers hold nothing to drop (this function's contract).
        if unsafe { execute_plan(spi_plan(firing, plan), &mut values, &nulls, false) } == 1 {
            spi_finish();
            return Ok(());
        }
        // Refused: find out whether the account is missing or out of bounds,
        // on a fresh snapshot that sees this statement's earlier entries.
        // SAFETY: still connected; the refused update's parameters.
        let account = unsafe { explain(firing, plan, &mut values, &nulls) };
        attempts += 1;
        if attempts == 2 || !matches!(account, Some(Account { within_bounds: true, .. })) {
            break account;
        }
    };
    spi_finish();
    let args = args(firing);
    Err(match account {
        None => no_account(firing, entry.0, &args),
        Some(Account { within_bounds: true, .. }) => skipped(firing, entry.0, &args),
        Some(Account { used, limit, below_zero, .. }) => over_limit(firing, entry.0, &args, below_zero, used, limit),
    })
}

/// Applies the entry's signed amounts (a sign of 0 adds nothing) to its
/// account without SPI; `None` when the SPI statement must do it (see
/// `direct_update`; a NULL key, which no account has, is left to it too).
///
/// # Safety
/// As for `apply`.
unsafe fn apply_directly(
    firing: &Firing,
    plan: &EntryPlan,
    entry: Row,
    terms: [(i32, pg_sys::Datum); 2],
) -> Option<direct_update::Outcome> {
    let account = &plan.account;
    if account.table == pg_sys::InvalidOid {
        return None;
    }
    let mut key = [pg_sys::Datum::from(0); MAX_KEYS];
    let mut key_types = [pg_sys::InvalidOid; MAX_KEYS];
    for (i, &attnum) in plan.key_atts[..plan.nkeys].iter().enumerate() {
        let (datum, is_null) = firing.value(entry, attnum);
        if is_null {
            return None;
        }
        key[i] = datum;
        key_types[i] = firing.attribute(attnum).atttypid;
    }
    let nterms = if terms[1].0 == 0 { 1 } else { 2 };
    // SAFETY: in the trigger's transaction and memory context, which outlive
    // the update; the target is closed once.  An entry refused out of bounds
    // changed nothing, so `close` has no event of it to fire (and nothing to
    // raise) while the refusal's strings are held.
    unsafe {
        let target = direct_update::open(
            account.table,
            account.used_att,
            &account.key_atts[..plan.nkeys],
            &key_types[..plan.nkeys],
            Some(account.limit_att),
            direct_update::Sanctioned::Nothing,
        )?;
        let outcome = direct_update::add(&target, &key[..plan.nkeys], plan.amount_type, &terms[..nterms]);
        direct_update::close(target);
        match outcome {
            direct_update::Outcome::Fallback => None,
            outcome => Some(outcome),
        }
    }
}

/// The account an entry was refused for, as `explain_statement` reads it.
struct Account {
    used: String,
    limit: String,
    below_zero: bool,
    within_bounds: bool,
}

/// Runs `explain_statement` with the arguments of the refused update.
///
/// # Safety
/// Inside `SPI_connect`; `values` and `nulls` are the update's arguments.
unsafe fn explain(
    firing: &Firing,
    plan: &EntryPlan,
    values: &mut [pg_sys::Datum],
    nulls: &[c_char],
) -> Option<Account> {
    let args = args(firing);
    let mut arg_types = argument_types(firing, plan.amount_type, &plan.key_atts[..plan.nkeys]);
    let explain = CString::new(explain_statement(&args)).expect("identifiers are quoted");
    // SAFETY: connected to SPI (the contract); a NUL-terminated statement
    // whose parameters are the update's, one type, value and null flag each;
    // SPI_processed is read right after the call that set it.
    unsafe {
        let rc = pg_sys::SPI_execute_with_args(
            explain.as_ptr(),
            (plan.nkeys + KEY_PARAM - 1) as i32,
            arg_types.as_mut_ptr(),
            values.as_mut_ptr(),
            nulls.as_ptr(),
            false,
            1,
        );
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            Error::Spi { what: "looking up the account".into(), rc }.raise();
        }
        (pg_sys::SPI_processed == 1).then(|| {
            let text = |column| result_text(0, column).unwrap_or_else(|| "NULL".to_string());
            Account { used: text(1), limit: text(2), below_zero: text(3) == "t", within_bounds: text(4) == "t" }
        })
    }
}

/// The entry's amount and the direction it moves used credit: +1 for a debit
/// applied or a credit taken back, -1 for the opposite.
fn signed_amount(
    firing: &Firing,
    plan: &EntryPlan,
    (entry, direction): (Row, Direction),
) -> Result<(i32, pg_sys::Datum), Refusal> {
    let (amount, amount_null) = firing.value(entry, plan.amount_att);
    if amount_null || is_nan(plan.amount_type, amount) || sign(plan.amount_type, amount) != Ordering::Greater {
        let args = args(firing);
        let why = format!("{} is {}.", args.amount.to_string_lossy(), firing.value_text(entry, plan.amount_att));
        return Err(entry_refusal(firing, entry, &args, "amounts must be positive", why));
    }
    let entry_type = entry_type_text(firing, entry, plan.entry_type_att);
    let (debit_value, credit_value) = (firing.args().nth(3), firing.args().nth(4));
    let debit = if Some(entry_type) == debit_value {
        true
    } else if Some(entry_type) == credit_value {
        false
    } else {
        let args = args(firing);
        let why = format!(
            "{} is {}; a credit ledger has {} and {} entries.",
            args.entry_type.to_string_lossy(),
            entry_type.to_string_lossy(),
            args.debit.to_string_lossy(),
            args.credit.to_string_lossy()
        );
        return Err(entry_refusal(firing, entry, &args, "unknown entry type", why));
    };
    Ok((if debit == (direction == Direction::Apply) { 1 } else { -1 }, amount))
}

/// The entry type as its output function writes it, palloc'd in the
/// trigger call's per-tuple memory context: outside SPI, which would put it in
/// SPI's memory, freed at `SPI_finish`.
fn entry_type_text<'f>(firing: &Firing<'f>, entry: Row, attnum: i16) -> &'f CStr {
    // SAFETY: `entry` is a row of the firing relation, whose descriptor this
    // is; called outside SPI, so the text lives in the per-tuple memory
    // context the trigger manager runs the call in, until the call is over.
    unsafe { getvalue(entry.as_ptr(), firing.tupdesc(), attnum.into()) }.unwrap_or(c"")
}

fn account_key(firing: &Firing, entry: Row, args: &Args) -> String {
    let names: Vec<String> = args.keys.iter().map(|k| k.to_string_lossy().into_owned()).collect();
    let values: Vec<String> = args
        .keys
        .iter()
        .map(|k| firing.attnum(k).map_or_else(|| "?".to_string(), |a| firing.value_text(entry, a)))
        .collect();
    format!("({})=({})", names.join(", "), values.join(", "))
}

fn entry_refusal(firing: &Firing, entry: Row, args: &Args, what: &str, why: String) -> Refusal {
    Refusal {
        code: PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
        message: format!("{what} in credit ledger \"{}\"", firing.table_name()),
        detail: format!("{} in table {}: {why}", firing.row_key(entry), firing.qualified_table_name()),
        hint: format!(
            "Each entry of a credit ledger has a positive {} and {} {} or {}.",
            args.amount.to_string_lossy(),
            args.entry_type.to_string_lossy(),
            args.debit.to_string_lossy(),
            args.credit.to_string_lossy()
        ),
        column: None,
    }
}

fn no_account(firing: &Firing, entry: Row, args: &Args) -> Refusal {
    Refusal {
        code: PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
        message: format!("no credit account for entry of ledger \"{}\"", firing.table_name()),
        detail: format!(
            "{} in table {}: {} has no account {}.",
            firing.row_key(entry),
            firing.qualified_table_name(),
            args.accounts.to_string_lossy(),
            account_key(firing, entry, args)
        ),
        hint: format!("Create the account in {} before recording entries for it.", args.accounts.to_string_lossy()),
        column: None,
    }
}

fn skipped(firing: &Firing, entry: Row, args: &Args) -> Refusal {
    let accounts = args.accounts.to_string_lossy();
    Refusal {
        code: PgSqlErrorCode::ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION,
        message: format!(
            "a trigger on table {accounts} skipped the update of account {}",
            account_key(firing, entry, args)
        ),
        detail: format!(
            "{} in table {}: the entry was not applied to {} of {accounts}.",
            firing.row_key(entry),
            firing.qualified_table_name(),
            args.used.to_string_lossy()
        ),
        hint: format!("Check the BEFORE UPDATE triggers of {accounts} that can return NULL."),
        column: None,
    }
}

fn over_limit(firing: &Firing, entry: Row, args: &Args, below_zero: bool, used: String, limit: String) -> Refusal {
    let used_column = args.used.to_string_lossy();
    let (message, hint) = if below_zero {
        (
            format!("{used_column} cannot go below zero for account {}", account_key(firing, entry, args)),
            format!("The account has less {used_column} than this entry gives back; check the entry's amount."),
        )
    } else {
        (
            format!("credit limit exceeded for account {}", account_key(firing, entry, args)),
            "Record a payment first, or raise the account's credit limit.".to_string(),
        )
    };
    Refusal {
        code: PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
        message,
        detail: format!(
            "{} in table {}: {used_column} of {} would become {used}, with {} {limit}.",
            firing.row_key(entry),
            firing.qualified_table_name(),
            args.accounts.to_string_lossy(),
            args.limit.to_string_lossy()
        ),
        hint,
        column: None,
    }
}
