//! Bulk export of one index snapshot as CSV or NDJSON: contacts, orphans, agents, accounts.
//!
//! An [`Export`] holds an `Arc` of the index it started from, so a reindex or a webhook meanwhile
//! does not change what it returns; it yields the rows in chunks, so memory stays flat however
//! many there are. The orphan columns are the audit CSV's (`idgraph audit --format csv`).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::index::{AgentStatus, ContactView, Index, OrphanKey, OrphanReason};

/// What is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Contacts,
    Orphans,
    Agents,
    Accounts,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Contacts => "contacts",
            Table::Orphans => "orphans",
            Table::Agents => "agents",
            Table::Accounts => "accounts",
        }
    }
}

impl std::str::FromStr for Table {
    type Err = String;
    fn from_str(s: &str) -> Result<Table, String> {
        match s {
            "contacts" => Ok(Table::Contacts),
            "orphans" => Ok(Table::Orphans),
            "agents" => Ok(Table::Agents),
            "accounts" => Ok(Table::Accounts),
            other => Err(format!("no export named {other:?}: contacts, orphans, agents or accounts")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "csv" => Ok(Format::Csv),
            "ndjson" | "jsonl" => Ok(Format::Ndjson),
            other => Err(format!("no export format {other:?}: csv or ndjson")),
        }
    }
}

/// The audit CSV's columns, shared by the orphans export.
pub const ORPHAN_COLUMNS: &[&str] = &[
    "contact_id",
    "contact_email",
    "contact_name",
    "owner_id",
    "owner_email",
    "owner_name",
    "owner_status",
    "reason",
    "owner_gone_at",
    "contact_verified_at",
];
/// The contacts export's columns: a lookup's without its key.
const CONTACT_COLUMNS: &[&str] = LOOKUP_COLUMNS.split_at(1).1;
const AGENT_COLUMNS: &[&str] = &[
    "agent_id",
    "email",
    "name",
    "status",
    "role",
    "first_seen_at",
    "deactivated_at",
    "departed_at",
    "in_rest",
    "in_scim",
    "contacts",
    "accounts",
    "verified_at",
];
const ACCOUNT_COLUMNS: &[&str] = &["account_id", "name", "domain", "owner_id", "owner_email", "owner_status"];

/// A batch lookup's columns: the key as given, then the contacts export's.
pub const LOOKUP_COLUMNS: &[&str] = &[
    "key",
    "contact_id",
    "contact_email",
    "contact_name",
    "external_id",
    "owner_id",
    "owner_email",
    "owner_status",
    "updated_at",
    "verified_at",
];

/// The contact each key names (by email: the lowest id of that email; by id), in the order given.
pub fn lookup_contacts<'a>(
    ix: &'a Index,
    by_email: bool,
    keys: &'a [String],
) -> impl Iterator<Item = (&'a str, Option<(&'a ContactView, Option<&'a crate::index::AgentView>)>)> + 'a {
    keys.iter().map(move |k| {
        let found = if by_email {
            ix.contact_by_email_ref(k).and_then(|c| ix.contact_and_owner(c.id))
        } else {
            k.trim().parse::<u64>().ok().and_then(|id| ix.contact_and_owner(id))
        };
        (k.as_str(), found)
    })
}

/// A batch lookup's rows as NDJSON or CSV (with the CSV header), of the columns `keep` (a mask
/// over [`LOOKUP_COLUMNS`]); a key no contact has is a row with the key alone.
pub fn lookup_text(ix: &Index, by_email: bool, keys: &[String], format: Format, keep: &[bool]) -> String {
    let cols = LOOKUP_COLUMNS;
    let prefixes = prefixes_of(cols, format, keep);
    let mut out = String::with_capacity(keys.len() * 200);
    if format == Format::Csv {
        let names: Vec<&str> = cols.iter().zip(keep).filter(|(_, k)| **k).map(|(c, _)| *c).collect();
        out.push_str(&names.join(","));
        out.push('\n');
    }
    for (key, found) in lookup_contacts(ix, by_email, keys) {
        let mut r = Row { out: &mut out, format, prefixes: &prefixes, keep, i: 0, drop_from: None };
        r.str(Some(key));
        match found {
            Some((c, owner)) => r.contact(c, owner),
            None => {
                for _ in 1..cols.len() {
                    r.str(None);
                }
            }
        }
        r.end();
    }
    out
}

pub fn columns(t: Table) -> &'static [&'static str] {
    match t {
        Table::Contacts => CONTACT_COLUMNS,
        Table::Orphans => ORPHAN_COLUMNS,
        Table::Agents => AGENT_COLUMNS,
        Table::Accounts => ACCOUNT_COLUMNS,
    }
}

/// What a spreadsheet reads as the start of a formula: such a cell is defused with a `'`.
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];
/// What makes a cell quoted.
const QUOTED: [char; 4] = [',', '"', '\n', '\r'];

/// Whether a CSV cell must be written through [`csv_cell`] (quoted or defused).
fn csv_special(s: &str) -> bool {
    s.starts_with(FORMULA_START) || s.bytes().any(|b| QUOTED.contains(&char::from(b)))
}

/// One CSV cell: quoted when needed, and defused when a spreadsheet would read it as a formula.
pub fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(FORMULA_START) { format!("'{s}") } else { s.to_string() };
    if s.contains(QUOTED) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub fn status_name(s: AgentStatus) -> &'static str {
    match s {
        AgentStatus::Active => "ACTIVE",
        AgentStatus::Deactivated => "DEACTIVATED",
        AgentStatus::Departed => "DEPARTED",
        AgentStatus::Unknown => "UNKNOWN",
        AgentStatus::Bot => "BOT",
    }
}

pub fn reason_name(r: OrphanReason) -> &'static str {
    match r {
        OrphanReason::OwnerDeactivated => "OWNER_DEACTIVATED",
        OrphanReason::OwnerDeparted => "OWNER_DEPARTED",
        OrphanReason::OwnerUnknown => "OWNER_UNKNOWN",
    }
}

/// A time as RFC 3339 (UTC, seconds), empty when unknown.
pub fn when(ms: Option<i64>) -> String {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Rows a chunk holds.
const CHUNK_ROWS: usize = 2000;

/// One export in progress: an iterator of encoded chunks of [`CHUNK_ROWS`] rows (for CSV, the
/// header leads the first). [`Export::split`] deals its chunks out to several iterators, so that
/// they can be encoded on several threads and sent in turn.
pub struct Export {
    index: Arc<Index>,
    table: Table,
    format: Format,
    /// What goes before each cell, by column: `{"name":` or `,"name":` (NDJSON), `` or `,` (CSV).
    prefixes: Arc<Vec<String>>,
    /// The columns written (`columns=`), by the table's column order.
    keep: Arc<Vec<bool>>,
    /// The keys of the rows, sorted (contacts and agents by id, accounts by id).
    ids: Arc<Vec<u64>>,
    account_ids: Arc<Vec<String>>,
    /// The last orphan key of each chunk but the last (orphans).
    marks: Arc<Vec<OrphanKey>>,
    /// How many chunks the export has (at least one: the CSV header), the next this iterator
    /// encodes, and how far it steps (1, or the number of parts it was split into).
    chunks: usize,
    next_chunk: usize,
    stride: usize,
    /// The orphans' owner cells of the last row, as written, and whose they are (reason and
    /// owner): consecutive orphans mostly share them, as orphans are kept by owner.
    owner_cells: Option<((OrphanReason, u64), String)>,
}

/// The text before each cell of a table's rows (of the columns kept: the first kept one opens
/// the row).
fn prefixes(table: Table, format: Format, keep: &[bool]) -> Vec<String> {
    prefixes_of(columns(table), format, keep)
}

/// [`prefixes`] for any list of columns.
fn prefixes_of(cols: &[&str], format: Format, keep: &[bool]) -> Vec<String> {
    let first = keep.iter().position(|k| *k).unwrap_or(0);
    cols.iter()
        .enumerate()
        .map(|(i, c)| match (format, i == first) {
            (Format::Ndjson, true) => format!("{{\"{c}\":"),
            (Format::Ndjson, false) => format!(",\"{c}\":"),
            (Format::Csv, true) => String::new(),
            (Format::Csv, false) => ",".to_string(),
        })
        .collect()
}

/// The columns of `table` that `asked` names (all when `None`), as a mask in the table's order;
/// an unknown name is refused with the table's columns.
pub fn column_mask(table: Table, asked: Option<&[String]>) -> Result<Vec<bool>, String> {
    mask_of(columns(table), asked)
}

/// The columns of `all` that `asked` names (all when `None`), as a mask.
pub fn mask_of(all: &[&str], asked: Option<&[String]>) -> Result<Vec<bool>, String> {
    let Some(asked) = asked else { return Ok(vec![true; all.len()]) };
    if asked.is_empty() {
        return Err("columns= names no column".into());
    }
    let mut keep = vec![false; all.len()];
    for c in asked {
        let i = all.iter().position(|x| x == c).ok_or_else(|| format!("no column named {c:?}: {}", all.join(", ")))?;
        keep[i] = true;
    }
    Ok(keep)
}

impl Export {
    pub fn new(index: Arc<Index>, table: Table, format: Format) -> Export {
        let ids = match table {
            Table::Contacts => index.contact_ids_sorted(),
            Table::Agents => index.agents().into_iter().map(|a| a.id).collect(),
            _ => Vec::new(),
        };
        let account_ids = if table == Table::Accounts { index.account_ids_sorted() } else { Vec::new() };
        let (marks, rows) = match table {
            Table::Orphans => (index.orphan_key_marks(CHUNK_ROWS), index.orphan_total()),
            Table::Accounts => (Vec::new(), account_ids.len()),
            _ => (Vec::new(), ids.len()),
        };
        let keep = vec![true; columns(table).len()];
        Export {
            prefixes: Arc::new(prefixes(table, format, &keep)),
            keep: Arc::new(keep),
            ids: Arc::new(ids),
            account_ids: Arc::new(account_ids),
            marks: Arc::new(marks),
            chunks: rows.div_ceil(CHUNK_ROWS).max(1),
            next_chunk: 0,
            stride: 1,
            owner_cells: None,
            index,
            table,
            format,
        }
    }

    /// Only the columns of `keep` (from [`column_mask`]), in the table's order.
    pub fn with_columns(mut self, keep: Vec<bool>) -> Export {
        self.prefixes = Arc::new(prefixes(self.table, self.format, &keep));
        self.keep = Arc::new(keep);
        self
    }

    /// `parts` iterators over this export's chunks, dealt in turn (the first gets chunks 0,
    /// `parts`, 2 x `parts`, ...): one chunk from each in turn gives this export's bytes.
    pub fn split(self, parts: usize) -> Vec<Export> {
        let parts = parts.max(1);
        (0..parts)
            .map(|i| Export {
                index: self.index.clone(),
                prefixes: self.prefixes.clone(),
                keep: self.keep.clone(),
                ids: self.ids.clone(),
                account_ids: self.account_ids.clone(),
                marks: self.marks.clone(),
                next_chunk: self.next_chunk + i * self.stride,
                stride: self.stride * parts,
                owner_cells: None,
                ..self
            })
            .collect()
    }

    /// Encodes chunk `k` (the header first, for CSV's first).
    fn chunk(&mut self, k: usize) -> String {
        let ix = self.index.clone();
        let mut out = String::with_capacity(CHUNK_ROWS * 320);
        if k == 0 && self.format == Format::Csv {
            let names: Vec<&str> =
                columns(self.table).iter().zip(self.keep.iter()).filter(|(_, k)| **k).map(|(c, _)| *c).collect();
            out.push_str(&names.join(","));
            out.push('\n');
        }
        let (from, to) = (k * CHUNK_ROWS, (k + 1) * CHUNK_ROWS);
        match self.table {
            Table::Orphans => self.orphans(&ix, k, &mut out),
            Table::Contacts => self.contacts(&ix, from, to.min(self.ids.len()), &mut out),
            Table::Agents => self.agents(&ix, from, to.min(self.ids.len()), &mut out),
            Table::Accounts => self.accounts(&ix, from, to.min(self.account_ids.len()), &mut out),
        }
        out
    }

    /// Orphans of chunk `k`, in key order.
    fn orphans(&mut self, ix: &Index, k: usize, out: &mut String) {
        let (format, prefixes, keep) = (self.format, self.prefixes.clone(), self.keep.clone());
        let after = k.checked_sub(1).and_then(|p| self.marks.get(p)).copied();
        let upto = self.marks.get(k).copied();
        // The rows are looked up first, then written: the lookups (memory bound, the contacts
        // are all over the heap) overlap when their loop is this short.
        let rows: Vec<_> = ix.orphan_refs_between(after, upto).collect();
        warm(rows.iter().map(|r| r.1));
        for (k, c, o) in rows {
            let mut r = Row { out: &mut *out, format, prefixes: &prefixes, keep: &keep, i: 0, drop_from: None };
            r.num(Some(c.id));
            r.str(c.email.as_deref());
            r.str(c.name.as_deref());
            // The six owner cells, as the last row wrote them when it had the same owner.
            match &self.owner_cells {
                Some((whose, cells)) if *whose == (k.0, o.id) => r.cells(cells, 6),
                _ => {
                    r.settle();
                    let from = r.out.len();
                    r.num(Some(o.id));
                    r.str(o.email.as_deref());
                    r.str(o.name.as_deref());
                    r.str(Some(status_name(o.status)));
                    r.str(Some(reason_name(k.0)));
                    r.time(o.departed_at_ms.or(o.deactivated_at_ms));
                    r.settle();
                    self.owner_cells = Some(((k.0, o.id), r.out[from..].to_string()));
                }
            }
            r.time(Some(c.verified_at_ms).filter(|t| *t > 0));
            r.end();
        }
    }

    /// Contacts by id.
    fn contacts(&self, ix: &Index, from: usize, to: usize, out: &mut String) {
        let (format, prefixes, keep) = (self.format, &self.prefixes, &self.keep);
        let rows: Vec<_> = self.ids[from..to].iter().filter_map(|id| ix.contact_and_owner(*id)).collect();
        warm(rows.iter().map(|r| r.0));
        for (c, owner) in rows {
            let mut r = Row { out: &mut *out, format, prefixes, keep, i: 0, drop_from: None };
            r.contact(c, owner);
            r.end();
        }
    }

    /// Agents by id, with what they own.
    fn agents(&self, ix: &Index, from: usize, to: usize, out: &mut String) {
        let (format, prefixes, keep) = (self.format, &self.prefixes, &self.keep);
        for id in &self.ids[from..to] {
            let Some(a) = ix.agent_ref(*id) else { continue };
            let mut r = Row { out: &mut *out, format, prefixes, keep, i: 0, drop_from: None };
            r.num(Some(a.id));
            r.str(a.email.as_deref());
            r.str(a.name.as_deref());
            r.str(Some(status_name(a.status)));
            r.str(a.role.as_deref());
            for t in [a.first_seen_ms, a.deactivated_at_ms, a.departed_at_ms] {
                r.time(t);
            }
            r.boolean(a.in_rest);
            r.boolean(a.in_scim);
            r.num(Some(ix.contact_count_of(a.id) as u64));
            r.num(Some(ix.account_count_of(a.id) as u64));
            r.time(a.verified_at_ms);
            r.end();
        }
    }

    /// Accounts by id.
    fn accounts(&self, ix: &Index, from: usize, to: usize, out: &mut String) {
        let (format, prefixes, keep) = (self.format, &self.prefixes, &self.keep);
        for id in &self.account_ids[from..to] {
            let Some(a) = ix.account(id) else { continue };
            let owner = a.owner_id.and_then(|o| ix.agent_ref(o));
            let mut r = Row { out: &mut *out, format, prefixes, keep, i: 0, drop_from: None };
            r.str(Some(&a.id));
            r.str(a.name.as_deref());
            r.str(a.domain.as_deref());
            r.num(a.owner_id);
            r.str(owner.and_then(|o| o.email.as_deref()));
            r.str(owner.map(|o| status_name(o.status)));
            r.end();
        }
    }
}

/// Reads the first byte of each contact's strings, so that their memory is on its way to the
/// cache before its row is written (this loop is short enough for the reads to overlap; the one
/// that writes rows is not).
fn warm<'a>(contacts: impl Iterator<Item = &'a ContactView>) {
    let first = |s: &Option<String>| s.as_deref().and_then(|s| s.as_bytes().first().copied()).unwrap_or(0);
    std::hint::black_box(contacts.fold(0u8, |acc, c| acc ^ first(&c.email) ^ first(&c.name)));
}

/// One row being written, cell by cell in column order. A cell of a column not kept is written,
/// then cut off before the next one starts (`settle`).
struct Row<'a> {
    out: &'a mut String,
    format: Format,
    prefixes: &'a [String],
    keep: &'a [bool],
    i: usize,
    /// Where the last cell began, when its column is not kept.
    drop_from: Option<usize>,
}

impl Row<'_> {
    /// A contact's cells (the contacts export's columns).
    fn contact(&mut self, c: &ContactView, owner: Option<&crate::index::AgentView>) {
        self.num(Some(c.id));
        self.str(c.email.as_deref());
        self.str(c.name.as_deref());
        self.str(c.external_id.as_deref());
        self.num(c.owner_id);
        self.str(owner.and_then(|o| o.email.as_deref()));
        self.str(owner.map(|o| status_name(o.status)));
        self.time(Some(c.updated_at_ms).filter(|t| *t > 0));
        self.time(Some(c.verified_at_ms).filter(|t| *t > 0));
    }

    /// Cuts off the last cell if its column is not kept.
    fn settle(&mut self) {
        if let Some(at) = self.drop_from.take() {
            self.out.truncate(at);
        }
    }

    fn start_cell(&mut self) {
        debug_assert!(self.i < self.prefixes.len(), "a row has more cells than the table has columns");
        self.settle();
        if !self.keep.get(self.i).copied().unwrap_or(true) {
            self.drop_from = Some(self.out.len());
        }
        if let Some(p) = self.prefixes.get(self.i) {
            self.out.push_str(p);
        }
        self.i += 1;
    }

    /// `n` cells written before, as they were written (of the kept columns).
    fn cells(&mut self, written: &str, n: usize) {
        self.settle();
        self.out.push_str(written);
        self.i += n;
    }

    fn str(&mut self, v: Option<&str>) {
        self.start_cell();
        match (self.format, v) {
            // No byte to escape (checked without an early exit, which the compiler vectorizes).
            (Format::Ndjson, Some(s)) if !s.bytes().fold(false, |e, b| e | (b < 0x20) | (b == b'"') | (b == b'\\')) => {
                self.out.push('"');
                self.out.push_str(s);
                self.out.push('"');
            }
            (Format::Ndjson, Some(s)) => {
                if let Ok(q) = serde_json::to_string(s) {
                    self.out.push_str(&q);
                }
            }
            (Format::Ndjson, None) => self.out.push_str("null"),
            (Format::Csv, Some(s)) if !csv_special(s) => self.out.push_str(s),
            (Format::Csv, Some(s)) => self.out.push_str(&csv_cell(s)),
            (Format::Csv, None) => {}
        }
    }

    fn num(&mut self, v: Option<u64>) {
        self.start_cell();
        match (self.format, v) {
            (_, Some(n)) => self.out.push_str(itoa::Buffer::new().format(n)),
            (Format::Ndjson, None) => self.out.push_str("null"),
            (Format::Csv, None) => {}
        }
    }

    /// A time as RFC 3339, empty (null) when unknown; written as [`when`] writes it, without
    /// its allocation (an export writes two a row).
    fn time(&mut self, ms: Option<i64>) {
        let mut text = [0u8; 20];
        let Some(text) = ms.and_then(|ms| rfc3339_secs(ms, &mut text)) else {
            let t = when(ms);
            return self.str(Some(t.as_str()).filter(|s| !s.is_empty()));
        };
        self.start_cell();
        let quote = self.format == Format::Ndjson;
        if quote {
            self.out.push('"');
        }
        self.out.push_str(text);
        if quote {
            self.out.push('"');
        }
    }

    fn boolean(&mut self, b: bool) {
        self.start_cell();
        self.out.push_str(if b { "true" } else { "false" });
    }

    fn end(mut self) {
        self.settle();
        if self.format == Format::Ndjson {
            self.out.push('}');
        }
        self.out.push('\n');
    }
}

/// `ms` as `YYYY-MM-DDTHH:MM:SSZ`, as [`when`] writes it, when its year is 0 to 9999 (None
/// otherwise): the days to a date by Howard Hinnant's `civil_from_days`, digits by pairs.
fn rfc3339_secs(ms: i64, buf: &mut [u8; 20]) -> Option<&str> {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869\
        707172737475767778798081828384858687888990919293949596979899";
    let secs = ms.div_euclid(1000);
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days.checked_add(719_468)?;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era.checked_mul(400)? + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let pair = |buf: &mut [u8; 20], at: usize, n: i64| {
        let n = n as usize * 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[n..n + 2]);
    };
    pair(buf, 0, year / 100);
    pair(buf, 2, year % 100);
    pair(buf, 5, month);
    pair(buf, 8, day);
    pair(buf, 11, of_day / 3600);
    pair(buf, 14, of_day / 60 % 60);
    pair(buf, 17, of_day % 60);
    for (at, sep) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'Z')] {
        buf[at] = sep;
    }
    std::str::from_utf8(buf).ok()
}

impl Iterator for Export {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.next_chunk >= self.chunks {
            return None;
        }
        let k = self.next_chunk;
        self.next_chunk += self.stride;
        Some(self.chunk(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A row's time cell is what [`when`] writes, in both formats, for any time.
        #[test]
        fn a_rows_time_is_whens(ms in proptest::option::of(proptest::prop_oneof![
            proptest::prelude::any::<i64>(),
            // Years 0 to 9999, which rows write themselves.
            -62_167_219_200_000i64..253_402_300_800_000i64,
        ])) {
            for format in [Format::Csv, Format::Ndjson] {
                let mut out = String::new();
                let prefixes = [if format == Format::Ndjson { "{\"t\":".to_string() } else { String::new() }];
                let mut r = Row { out: &mut out, format, prefixes: &prefixes, keep: &[true], i: 0, drop_from: None };
                r.time(ms);
                let w = when(ms);
                let want = match (format, w.is_empty()) {
                    (Format::Csv, _) => csv_cell(&w),
                    (Format::Ndjson, true) => "{\"t\":null".to_string(),
                    (Format::Ndjson, false) => format!("{{\"t\":\"{w}\""),
                };
                proptest::prop_assert_eq!(out, want);
            }
        }
    }
}
