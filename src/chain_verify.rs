//! `integrity.verify_chain()`'s pass over a chained table.
//!
//! `verify_chain()` (sql/hash_chain.sql) builds the statements that read the
//! rows, with the canonical encoding the trigger hashes, and words the row
//! keys; this pass links each row to the one before it in its chain and finds
//! each chain's first bad row.
//!
//! The rows are read in the order the table holds them, not in chain order:
//! sorting the table or walking the chain index costs several times the scan.
//! Every chain keeps its last linked row; a row that comes before the one it
//! links to (inserted by concurrent transactions into other pages, or moved
//! by an UPDATE) waits until that one comes, or until the end of the table.
//! When the chains and the rows waiting take more than `work_mem`, the pass
//! starts again in chain order (the chain index, or a sort that spills to
//! disk), where no row waits and one chain is held at a time: verification's
//! memory does not grow with the table.

use core::ffi::c_int;
use std::collections::{BTreeMap, HashMap};

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::chain_encoding::{link_hash, push_value, varlena_bytes};
use crate::error::Error;
use crate::fmgr::{prepare, result_text, result_value, select, spi_connect, spi_finish};
use crate::trigger::tuple_desc_attr;

/// Rows fetched from the cursor at a time.
const BATCH: i64 = 1000;
/// What a chain's state takes beyond its key, roughly, for the memory budget.
const CHAIN_OVERHEAD: usize = 192;
/// What a waiting row takes beyond its encoding, likewise.
const WAITING_OVERHEAD: usize = 96;

/// Where a row is: its partition (or table) and its ctid, for its row key.
#[derive(Clone, Copy)]
struct Place {
    part: pg_sys::Oid,
    ctid: pg_sys::ItemPointerData,
}

/// A chain's first bad row: its sequence number (`None`, a row without one,
/// comes first), where it is, and what is wrong.
struct Problem {
    seq: Option<i64>,
    place: Option<Place>,
    what: String,
}

/// A row read, as the pass needs it.
struct Row<'a> {
    seq: Option<i64>,
    hash: Option<&'a [u8]>,
    encoding: &'a [u8],
    place: Place,
}

/// A row that came before the row it links to.
struct Waiting {
    hash: Option<Vec<u8>>,
    encoding: Vec<u8>,
    place: Place,
}

#[derive(Default)]
struct Chain {
    /// The chain as jsonb text (`chain_anchors.chain`, the digest's `chain`).
    text: String,
    /// The last row linked: its sequence number and hash.
    last: Option<(i64, Option<Vec<u8>>)>,
    /// Where a purge left the chain's start.
    anchor: Option<(i64, Vec<u8>)>,
    waiting: BTreeMap<i64, Vec<Waiting>>,
    /// What the waiting rows take, for the memory budget.
    waiting_bytes: usize,
    problem: Option<Problem>,
    /// The chain's entry in the digest.
    digest: Option<usize>,
}

/// A chain of the digest: its last row then, and what the pass found of it.
struct DigestEntry {
    chain: String,
    seq: Option<i64>,
    hash: Option<Vec<u8>>,
    has_rows: bool,
    /// A row at `seq`, and one there whose hash differs from the digest's.
    at_seq: Option<Place>,
    differs: Option<Place>,
}

impl Chain {
    /// Keeps the problem of the lower sequence number.
    fn found(&mut self, seq: Option<i64>, place: Option<Place>, what: String) {
        if self.problem.as_ref().is_none_or(|p| seq < p.seq) {
            self.problem = Some(Problem { seq, place, what });
        }
    }

    /// Whether rows of higher sequence numbers than the last linked can no
    /// longer matter: the chain's problem comes before them.
    fn settled(&self) -> bool {
        self.problem.as_ref().is_some_and(|p| p.seq.is_none_or(|seq| self.last.as_ref().is_some_and(|l| l.0 >= seq)))
    }

    /// Takes a row, in table order (`in_order`: in chain order); how much
    /// more memory the rows waiting take.
    fn offer(&mut self, row: &Row, in_order: bool) -> isize {
        let before = self.waiting_bytes as isize;
        self.take(row, in_order);
        if self.problem.as_ref().is_some_and(|p| p.seq.is_none()) || self.settled() {
            self.waiting.clear();
            self.waiting_bytes = 0;
        }
        self.waiting_bytes as isize - before
    }

    fn take(&mut self, row: &Row, in_order: bool) {
        let Some(seq) = row.seq else {
            self.found(None, Some(row.place), NOT_CHAINED.into());
            return;
        };
        if self.problem.as_ref().is_some_and(|p| p.seq.is_none_or(|p| p <= seq)) {
            return;
        }
        match &self.last {
            // A second row with a number already linked.
            Some((last, _)) if !in_order && seq <= *last => {
                self.found(Some(seq), Some(row.place), format!("sequence number {seq} appears twice"));
            }
            _ if in_order || seq == self.next() => {
                self.link(seq, row.hash, row.encoding, row.place);
                while !self.settled() {
                    let next = self.next();
                    let Some(rows) = self.waiting.remove(&next) else { break };
                    for waiting in rows {
                        self.waiting_bytes -= waiting.encoding.len() + WAITING_OVERHEAD;
                        self.link(next, waiting.hash.as_deref(), &waiting.encoding, waiting.place);
                    }
                }
            }
            _ => {
                self.waiting_bytes += row.encoding.len() + WAITING_OVERHEAD;
                self.waiting.entry(seq).or_default().push(Waiting {
                    hash: row.hash.map(<[u8]>::to_vec),
                    encoding: row.encoding.to_vec(),
                    place: row.place,
                });
            }
        }
    }

    /// The sequence number the next row must have.
    fn next(&self) -> i64 {
        self.last.as_ref().map(|(seq, _)| *seq).or(self.anchor.as_ref().map(|(seq, _)| *seq)).map_or(1, |seq| seq + 1)
    }

    /// At the end of the table: the rows still waiting, in chain order, link
    /// to the last row before them (a gap is a removed row).
    fn finish(&mut self) {
        let waiting = core::mem::take(&mut self.waiting);
        self.waiting_bytes = 0;
        for (seq, rows) in waiting {
            for row in rows {
                if self.settled() {
                    return;
                }
                self.link(seq, row.hash.as_deref(), &row.encoding, row.place);
            }
        }
    }

    /// Links row seq to the last row linked (or the anchor): the checks of
    /// verify_chain(), in their order.
    fn link(&mut self, seq: i64, hash: Option<&[u8]>, encoding: &[u8], place: Place) {
        let previous = match &self.last {
            Some((seq, _)) => Some(*seq),
            None => self.anchor.as_ref().map(|(seq, _)| *seq),
        };
        let problem = match (hash, previous) {
            (None, _) => Some(NOT_CHAINED.to_string()),
            (Some(_), None) if seq != 1 => Some(format!(
                "the chain starts at {seq}: {} removed",
                if seq == 2 { "row 1 was".to_string() } else { format!("rows 1 to {} were", seq - 1) }
            )),
            (Some(_), Some(previous)) if seq == previous => Some(format!("sequence number {seq} appears twice")),
            (Some(_), Some(previous)) if seq == previous + 2 => Some(format!("row {} was removed", seq - 1)),
            (Some(_), Some(previous)) if seq != previous + 1 => {
                Some(format!("rows {} to {} were removed", previous + 1, seq - 1))
            }
            (Some(hash), _) => {
                // coalesce(lag(hash), anchor hash, '\x'): a last row without a
                // hash is a problem already, before this one.
                let before = match &self.last {
                    Some((_, Some(last))) => last.as_slice(),
                    _ => self.anchor.as_ref().map_or(&[][..], |(_, hash)| hash.as_slice()),
                };
                (link_hash(before, encoding) != hash).then(|| HASH_DIFFERS.to_string())
            }
        };
        if let Some(what) = problem {
            self.found(Some(seq), Some(place), what);
        }
        match &mut self.last {
            Some((last_seq, last_hash)) => {
                *last_seq = seq;
                match (last_hash, hash) {
                    (Some(kept), Some(hash)) => {
                        kept.clear();
                        kept.extend_from_slice(hash);
                    }
                    (kept, hash) => *kept = hash.map(<[u8]>::to_vec),
                }
            }
            None => self.last = Some((seq, hash.map(<[u8]>::to_vec))),
        }
    }
}

const NOT_CHAINED: &str = "the row is not chained: it was inserted while the chain trigger did not run";
const HASH_DIFFERS: &str = "the hash does not match: the row was changed, or the row before it";

/// The state of a pass: the chains met, by the bytes of their chain
/// columns' values and by their jsonb text.
struct Pass {
    chains: HashMap<usize, Chain>,
    by_values: HashMap<Vec<u8>, usize>,
    by_text: HashMap<String, usize>,
    anchors: HashMap<String, (i64, Vec<u8>)>,
    digest: Vec<DigestEntry>,
    digest_index: HashMap<String, usize>,
    problems: Vec<(String, Problem)>,
    /// What the chains and their waiting rows take, roughly.
    memory: isize,
    chains_met: usize,
}

/// A problem as chain_problems() returns it.
type Found = (String, Option<String>, Option<i64>, String);

/// Column `column` (text) of what `row_of` says of the row at `place`: its
/// chain (1) or its row key (2).
fn row_of_place(row_of: pg_sys::SPIPlanPtr, place: Place, column: c_int) -> String {
    let mut args = [pg_sys::Datum::from(place.part), pg_sys::Datum::from(&raw const place.ctid)];
    // SAFETY: inside SPI_connect; the plan takes an oid and a tid, which the
    // datums hold (the tid by reference, to a local that outlives the call);
    // the text is copied out of SPI's memory.
    unsafe {
        let rc = pg_sys::SPI_execute_plan(row_of, args.as_mut_ptr(), core::ptr::null(), true, 1);
        if rc != pg_sys::SPI_OK_SELECT as c_int || pg_sys::SPI_processed != 1 {
            Error::Spi { what: "reading a row of the chain".into(), rc }.raise();
        }
    }
    result_text(0, column).unwrap_or_default()
}

/// The problems of tbl's chains, at most one per chain from the links and one
/// per chain of the digest; verify_chain() keeps each chain's first.
/// `scan` and `ordered` read the chain columns, then the sequence number,
/// hash, encoding, tableoid and ctid of every row, `ordered` in chain order;
/// `row_of` gives the chain and the row key (jsonb text) of the row at ($1
/// tableoid, $2 ctid).
#[pg_extern(sql = false)]
#[allow(clippy::too_many_arguments)]
fn chain_problems(
    tbl: pg_sys::Oid,
    scan: &str,
    ordered: &str,
    row_of: &str,
    digest_chains: Option<Vec<Option<String>>>,
    digest_seqs: Option<Vec<Option<i64>>>,
    digest_hashes: Option<pgrx::Array<'_, &[u8]>>,
) -> TableIterator<
    'static,
    (name!(chain, String), name!(row_key, Option<String>), name!(seq, Option<i64>), name!(problem, String)),
> {
    // SAFETY: a GUC variable of the backend, in kilobytes.
    let budget = unsafe { pg_sys::work_mem } as isize * 1024;
    let digest: Vec<DigestEntry> = digest_chains
        .unwrap_or_default()
        .into_iter()
        .zip(digest_seqs.unwrap_or_default())
        .zip(digest_hashes.iter().flat_map(|hashes| hashes.iter()).chain(core::iter::repeat(None)))
        .filter_map(|((chain, seq), hash)| {
            let hash = hash.map(<[u8]>::to_vec);
            Some(DigestEntry { chain: chain?, seq, hash, has_rows: false, at_seq: None, differs: None })
        })
        .collect();
    spi_connect();
    let anchors = read_anchors(tbl);
    let row_of = std::ffi::CString::new(row_of).unwrap_or_else(|_| {
        Error::UnexpectedResult { what: "the verify_chain statement", result: "a NUL byte".into() }.raise()
    });
    let row_of = prepare(&row_of, &mut [pg_sys::OIDOID, pg_sys::TIDOID], 0, || "reading a row of the chain".into());
    let mut pass = Pass::new(anchors, digest);
    if !pass.run(scan, row_of, Some(budget)) {
        let Pass { anchors, digest, .. } = pass;
        pass = Pass::new(anchors, digest.into_iter().map(DigestEntry::reset).collect());
        pass.run(ordered, row_of, None);
    }
    let found = pass.found(row_of);
    spi_finish();
    TableIterator::new(found)
}

impl DigestEntry {
    fn reset(self) -> Self {
        DigestEntry { has_rows: false, at_seq: None, differs: None, ..self }
    }
}

/// The anchors of tbl's chains, by chain key (`chain_key`).
fn read_anchors(tbl: pg_sys::Oid) -> HashMap<String, (i64, Vec<u8>)> {
    let rows = select(
        c"SELECT a.chain::pg_catalog.text, a.seq, a.hash FROM integrity.chain_anchors a WHERE a.table_name = $1",
        &[(pg_sys::REGCLASSOID, pg_sys::Datum::from(tbl))],
        0,
        "reading the chain anchors",
    );
    (0..rows)
        .filter_map(|row| {
            let chain = result_text(row, 1)?;
            let seq = result_value(row, 2)?.value() as i64;
            // SAFETY: a bytea of the SPI result, copied before the next SPI call.
            let hash = result_value(row, 3).map(|hash| unsafe { varlena_bytes(hash) }.to_vec())?;
            Some((chain_key(&chain), (seq, hash)))
        })
        .collect()
}

/// The key of a chain given as jsonb text, by which rows, anchors and digest
/// entries are matched: the text with every number's trailing fractional
/// zeros removed.  jsonb compares numbers by value, as the trigger finds a
/// chain (by the chain columns' equality), so `[1.0]` and `[1.00]` are one
/// chain whose rows print differently; strings compare by their bytes.
fn chain_key(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // A string, with its escapes, as it is.
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
                key.extend_from_slice(&bytes[start..i]);
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let mut number = &bytes[start..i];
                if number.contains(&b'.') && !number.iter().any(|b| matches!(b, b'e' | b'E')) {
                    while let [rest @ .., b'0'] = number {
                        number = rest;
                    }
                    if let [rest @ .., b'.'] = number {
                        number = rest;
                    }
                }
                key.extend_from_slice(number);
            }
            other => {
                key.push(other);
                i += 1;
            }
        }
    }
    // Only ASCII digits and points were left out of valid UTF-8.
    String::from_utf8(key).unwrap_or_else(|_| text.to_string())
}

impl Pass {
    fn new(anchors: HashMap<String, (i64, Vec<u8>)>, digest: Vec<DigestEntry>) -> Self {
        let digest_index = digest.iter().enumerate().map(|(i, d)| (chain_key(&d.chain), i)).collect();
        Pass {
            chains: HashMap::new(),
            by_values: HashMap::new(),
            by_text: HashMap::new(),
            anchors,
            digest,
            digest_index,
            problems: Vec::new(),
            memory: 0,
            chains_met: 0,
        }
    }

    /// Reads every row of `query` (`in_order`: without `budget`, in chain
    /// order); false when the chains and waiting rows outgrew `budget` (the
    /// pass is then incomplete).
    fn run(&mut self, query: &str, row_of: pg_sys::SPIPlanPtr, budget: Option<isize>) -> bool {
        let in_order = budget.is_none();
        let query = std::ffi::CString::new(query).unwrap_or_else(|_| {
            Error::UnexpectedResult { what: "the verify_chain statement", result: "a NUL byte".into() }.raise()
        });
        // SAFETY: inside SPI_connect; a read-only cursor over a statement
        // without parameters, on the active snapshot; each batch's rows are
        // read before the batch is freed, and the cursor is closed.
        unsafe {
            let portal = pg_sys::SPI_cursor_open_with_args(
                core::ptr::null(),
                query.as_ptr(),
                0,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                core::ptr::null(),
                true,
                0,
            );
            if portal.is_null() {
                Error::Spi { what: "SPI_cursor_open_with_args".into(), rc: pg_sys::SPI_result }.raise();
            }
            // Detoasted values of a batch go into a context reset after it.
            let mut batch_memory = pgrx::PgMemoryContexts::new("verify_chain batch");
            let mut key = Vec::new();
            let mut current = None;
            let mut complete = true;
            loop {
                pg_sys::SPI_cursor_fetch(portal, true, BATCH as _);
                let table = pg_sys::SPI_tuptable;
                let count = pg_sys::SPI_processed;
                if table.is_null() || count == 0 {
                    break;
                }
                let tupdesc = (*table).tupdesc;
                // The chain columns come first, then five more.
                let natts = (*tupdesc).natts as usize;
                let nchain = natts - 5;
                let mut values = vec![pg_sys::Datum::from(0); natts];
                let mut nulls = vec![false; natts];
                let over = batch_memory.switch_to(|_| {
                    for i in 0..count as usize {
                        pg_sys::heap_deform_tuple(
                            *(*table).vals.add(i),
                            tupdesc,
                            values.as_mut_ptr(),
                            nulls.as_mut_ptr(),
                        );
                        let value = |column: usize| (!nulls[nchain + column - 1]).then(|| values[nchain + column - 1]);
                        key.clear();
                        for column in 0..nchain {
                            push_value(
                                &mut key,
                                (!nulls[column]).then(|| values[column]),
                                tuple_desc_attr(tupdesc, column as i16 + 1),
                            );
                        }
                        let place = Place {
                            part: value(4).map_or(pg_sys::InvalidOid, |oid| pg_sys::Oid::from(oid.value() as u32)),
                            ctid: value(5).map_or_else(pg_sys::ItemPointerData::default, |tid| {
                                *tid.cast_mut_ptr::<pg_sys::ItemPointerData>()
                            }),
                        };
                        let row = Row {
                            seq: value(1).map(|seq| seq.value() as i64),
                            hash: value(2).map(|h| varlena_bytes(h)),
                            encoding: value(3).map_or(&[][..], |e| varlena_bytes(e)),
                            place,
                        };
                        let id = match self.by_values.get(&key) {
                            Some(&id) => id,
                            None => self.open(&key, place, row_of),
                        };
                        // In chain order, a chain is done when the next begins.
                        if in_order && current != Some(id) {
                            if let Some(done) = current.replace(id) {
                                self.close(done);
                                self.by_values.retain(|_, chain| *chain == id);
                                self.by_text.retain(|_, chain| *chain == id);
                            }
                        }
                        let Some(chain) = self.chains.get_mut(&id) else { continue };
                        if let Some(d) = chain.digest {
                            let entry = &mut self.digest[d];
                            entry.has_rows = true;
                            if row.seq.is_some() && row.seq == entry.seq {
                                entry.at_seq.get_or_insert(place);
                                if row.hash != entry.hash.as_deref() {
                                    entry.differs.get_or_insert(place);
                                }
                            }
                        }
                        self.memory += chain.offer(&row, in_order);
                        if budget.is_some_and(|budget| self.memory > budget) {
                            return true;
                        }
                    }
                    false
                });
                pg_sys::SPI_freetuptable(table);
                batch_memory.reset();
                if over {
                    complete = false;
                    break;
                }
            }
            pg_sys::SPI_cursor_close(portal);
            if complete {
                let ids: Vec<usize> = self.chains.keys().copied().collect();
                for id in ids {
                    self.close(id);
                }
            }
            complete
        }
    }

    /// The chain of a row whose chain columns' values were not met yet:
    /// one met already with other binary values of the same jsonb (say,
    /// text that is toasted in one row and not in another, or a numeric of
    /// another scale), or a new one.
    fn open(&mut self, key: &[u8], place: Place, row_of: pg_sys::SPIPlanPtr) -> usize {
        let text = row_of_place(row_of, place, 1);
        self.memory += (key.len() + CHAIN_OVERHEAD) as isize;
        let canonical = chain_key(&text);
        let id = match self.by_text.get(&canonical) {
            Some(&id) => id,
            None => {
                let id = self.chains_met;
                self.chains_met += 1;
                self.memory += (text.len() + canonical.len()) as isize;
                let state = Chain {
                    anchor: self.anchors.get(&canonical).cloned(),
                    digest: self.digest_index.get(&canonical).copied(),
                    text,
                    ..Chain::default()
                };
                self.chains.insert(id, state);
                self.by_text.insert(canonical, id);
                id
            }
        };
        self.by_values.insert(key.to_vec(), id);
        id
    }

    /// A chain read to its end: its problem, if any, is kept and its state
    /// dropped.
    fn close(&mut self, id: usize) {
        if let Some(mut chain) = self.chains.remove(&id) {
            chain.finish();
            self.memory -= (chain.text.len() + CHAIN_OVERHEAD + chain.waiting_bytes) as isize;
            if let Some(problem) = chain.problem {
                self.problems.push((chain.text, problem));
            }
        }
    }

    /// The problems found, and those of the digest (the checks of
    /// verify_chain(), in their order), with the row keys of their rows.
    fn found(self, row_of: pg_sys::SPIPlanPtr) -> Vec<Found> {
        let anchors = self.anchors;
        let digest = self.digest.into_iter().filter_map(|d| {
            let rows = match d.seq {
                Some(1) => "1 row".to_string(),
                Some(seq) => format!("{seq} rows"),
                None => String::new(),
            };
            let seq = d.seq?;
            let anchor = anchors.get(&chain_key(&d.chain));
            let written_again = format!("row {seq} differs from the digest: the chain was written again");
            let (place, what) = match anchor {
                Some((a, hash)) if *a > seq || (*a == seq && Some(hash) == d.hash.as_ref()) => return None,
                Some((a, _)) if *a == seq => (d.at_seq, written_again),
                _ if !d.has_rows => (None, format!("the chain is gone: the digest has {rows}")),
                _ if d.at_seq.is_none() => (None, format!("the end of the chain was removed: the digest has {rows}")),
                _ if d.differs.is_some() => (d.differs, written_again),
                _ => return None,
            };
            Some((d.chain, Problem { seq: Some(seq), place, what }))
        });
        self.problems
            .into_iter()
            .chain(digest.collect::<Vec<_>>())
            .map(|(chain, p)| (chain, p.place.map(|place| row_of_place(row_of, place, 2)), p.seq, p.what))
            .collect()
    }
}
