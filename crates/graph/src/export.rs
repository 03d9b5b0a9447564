//! Bulk export of one index snapshot as CSV or NDJSON: contacts, orphans, agents, accounts.
//!
//! An [`Export`] holds an `Arc` of the index it started from, so a reindex or a webhook meanwhile
//! does not change what it returns; it yields the rows in chunks, so memory stays flat however
//! many there are. The orphan columns are the audit CSV's (`idgraph audit --format csv`).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::index::{AgentStatus, Index, OrphanKey, OrphanReason};

/// What is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Contacts,
    Orphans,
    Agents,
    Accounts,
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
const CONTACT_COLUMNS: &[&str] = &[
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

pub fn columns(t: Table) -> &'static [&'static str] {
    match t {
        Table::Contacts => CONTACT_COLUMNS,
        Table::Orphans => ORPHAN_COLUMNS,
        Table::Agents => AGENT_COLUMNS,
        Table::Accounts => ACCOUNT_COLUMNS,
    }
}

/// One CSV cell: quoted when needed, and defused when a spreadsheet would read it as a formula.
pub fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
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

/// Where an export has got to.
enum Cursor {
    Start,
    /// Position in the sorted keys (contacts, agents, accounts).
    At(usize),
    Orphan(OrphanKey),
    Done,
}

/// One export in progress: an iterator of encoded chunks (the header first, for CSV).
pub struct Export {
    index: Arc<Index>,
    table: Table,
    format: Format,
    ids: Vec<u64>,
    account_ids: Vec<String>,
    cursor: Cursor,
    header_sent: bool,
}

impl Export {
    pub fn new(index: Arc<Index>, table: Table, format: Format) -> Export {
        let ids = match table {
            Table::Contacts => index.contact_ids_sorted(),
            Table::Agents => index.agents().into_iter().map(|a| a.id).collect(),
            _ => Vec::new(),
        };
        let account_ids = if table == Table::Accounts { index.account_ids_sorted() } else { Vec::new() };
        Export { index, table, format, ids, account_ids, cursor: Cursor::Start, header_sent: false }
    }

    /// Encodes the next chunk of rows; empty when none are left.
    fn chunk(&mut self) -> String {
        let ix = self.index.clone();
        let mut out = String::with_capacity(CHUNK_ROWS * 160);
        match self.table {
            Table::Orphans => self.orphans(&ix, &mut out),
            Table::Contacts => self.contacts(&ix, &mut out),
            Table::Agents => self.agents(&ix, &mut out),
            Table::Accounts => self.accounts(&ix, &mut out),
        }
        out
    }

    /// Orphans in key order, after the cursor.
    fn orphans(&mut self, ix: &Index, out: &mut String) {
        let (format, cols) = (self.format, columns(self.table));
        let after = match &self.cursor {
            Cursor::Orphan(k) => Some(*k),
            _ => None,
        };
        let mut last = None;
        for (k, c, o) in ix.orphan_refs(after, CHUNK_ROWS) {
            let mut r = Row { out: &mut *out, format, cols, i: 0 };
            r.num(Some(c.id));
            r.str(c.email.as_deref());
            r.str(c.name.as_deref());
            r.num(Some(o.id));
            r.str(o.email.as_deref());
            r.str(o.name.as_deref());
            r.str(Some(status_name(o.status)));
            r.str(Some(reason_name(k.0)));
            r.time(o.departed_at_ms.or(o.deactivated_at_ms));
            r.time(Some(c.verified_at_ms).filter(|t| *t > 0));
            r.end();
            last = Some(k);
        }
        self.cursor = last.map_or(Cursor::Done, Cursor::Orphan);
    }

    /// Contacts by id.
    fn contacts(&mut self, ix: &Index, out: &mut String) {
        let (format, cols) = (self.format, columns(self.table));
        let (from, to) = self.advance(self.ids.len());
        for id in &self.ids[from..to] {
            let Some(c) = ix.contact_ref(*id) else { continue };
            let owner = ix.owner_of(c.id);
            let mut r = Row { out: &mut *out, format, cols, i: 0 };
            r.num(Some(c.id));
            r.str(c.email.as_deref());
            r.str(c.name.as_deref());
            r.str(c.external_id.as_deref());
            r.num(c.owner_id);
            r.str(owner.and_then(|o| o.email.as_deref()));
            r.str(owner.map(|o| status_name(o.status)));
            r.time(Some(c.updated_at_ms).filter(|t| *t > 0));
            r.time(Some(c.verified_at_ms).filter(|t| *t > 0));
            r.end();
        }
    }

    /// Agents by id, with what they own.
    fn agents(&mut self, ix: &Index, out: &mut String) {
        let (format, cols) = (self.format, columns(self.table));
        let (from, to) = self.advance(self.ids.len());
        for id in &self.ids[from..to] {
            let Some(a) = ix.agent_ref(*id) else { continue };
            let mut r = Row { out: &mut *out, format, cols, i: 0 };
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
    fn accounts(&mut self, ix: &Index, out: &mut String) {
        let (format, cols) = (self.format, columns(self.table));
        let (from, to) = self.advance(self.account_ids.len());
        for id in &self.account_ids[from..to] {
            let Some(a) = ix.account(id) else { continue };
            let owner = a.owner_id.and_then(|o| ix.agent_ref(o));
            let mut r = Row { out: &mut *out, format, cols, i: 0 };
            r.str(Some(&a.id));
            r.str(a.name.as_deref());
            r.str(a.domain.as_deref());
            r.num(a.owner_id);
            r.str(owner.and_then(|o| o.email.as_deref()));
            r.str(owner.map(|o| status_name(o.status)));
            r.end();
        }
    }

    /// The next slice of sorted keys to export.
    fn advance(&mut self, len: usize) -> (usize, usize) {
        let from = match self.cursor {
            Cursor::At(p) => p,
            _ => 0,
        };
        let to = (from + CHUNK_ROWS).min(len);
        self.cursor = if to >= len { Cursor::Done } else { Cursor::At(to) };
        (from, to)
    }
}

/// One row being written, cell by cell in column order.
struct Row<'a> {
    out: &'a mut String,
    format: Format,
    cols: &'static [&'static str],
    i: usize,
}

impl Row<'_> {
    fn start_cell(&mut self) {
        match self.format {
            Format::Ndjson => {
                self.out.push(if self.i == 0 { '{' } else { ',' });
                self.out.push('"');
                debug_assert!(self.i < self.cols.len(), "a row has more cells than the table has columns");
                self.out.push_str(self.cols.get(self.i).copied().unwrap_or("column"));
                self.out.push_str("\":");
            }
            Format::Csv if self.i > 0 => self.out.push(','),
            Format::Csv => {}
        }
        self.i += 1;
    }

    fn str(&mut self, v: Option<&str>) {
        self.start_cell();
        match (self.format, v) {
            (Format::Ndjson, Some(s)) if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) => {
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
        use chrono::{Datelike, Timelike};
        let t = ms.and_then(DateTime::<Utc>::from_timestamp_millis).map(|t| t.naive_utc());
        let Some(t) = t.filter(|t| (0..=9999).contains(&t.year())) else {
            let t = when(ms);
            return self.str(Some(t.as_str()).filter(|s| !s.is_empty()));
        };
        self.start_cell();
        let quote = self.format == Format::Ndjson;
        if quote {
            self.out.push('"');
        }
        let digits = |out: &mut String, n: u32, width: u32| {
            for i in (0..width).rev() {
                out.push(char::from(b'0' + (n / 10u32.pow(i) % 10) as u8));
            }
        };
        digits(self.out, t.year() as u32, 4);
        for (sep, n) in [('-', t.month()), ('-', t.day()), ('T', t.hour()), (':', t.minute()), (':', t.second())] {
            self.out.push(sep);
            digits(self.out, n, 2);
        }
        self.out.push('Z');
        if quote {
            self.out.push('"');
        }
    }

    fn boolean(&mut self, b: bool) {
        self.start_cell();
        self.out.push_str(if b { "true" } else { "false" });
    }

    fn end(self) {
        if self.format == Format::Ndjson {
            self.out.push('}');
        }
        self.out.push('\n');
    }
}

impl Iterator for Export {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if !self.header_sent {
            self.header_sent = true;
            if self.format == Format::Csv {
                return Some(columns(self.table).join(",") + "\n");
            }
        }
        if let Cursor::Done = self.cursor {
            return None;
        }
        let chunk = self.chunk();
        if chunk.is_empty() {
            return None;
        }
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A row's time cell is what [`when`] writes, in both formats, for any time.
        #[test]
        fn a_rows_time_is_whens(ms in proptest::option::of(proptest::prelude::any::<i64>())) {
            for format in [Format::Csv, Format::Ndjson] {
                let mut out = String::new();
                let mut r = Row { out: &mut out, format, cols: &["t"], i: 0 };
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
