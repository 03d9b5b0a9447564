//! Bulk export of one index snapshot as CSV or NDJSON: contacts, orphans, agents, accounts.
//!
//! An [`Export`] holds an `Arc` of the index it started from, so a reindex or a webhook meanwhile
//! does not change what it returns; it yields the rows in chunks, so memory stays flat however
//! many there are. The orphan columns are the audit CSV's (`idgraph audit --format csv`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

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

    /// The rows of one chunk, each a list of (column, value) in column order.
    fn rows(&mut self) -> Vec<Vec<Value>> {
        let ix = self.index.clone();
        match self.table {
            Table::Orphans => {
                let after = match &self.cursor {
                    Cursor::Orphan(k) => Some(*k),
                    _ => None,
                };
                let page = ix.orphans(None, None, after, CHUNK_ROWS);
                self.cursor = page.last().map_or(Cursor::Done, |o| Cursor::Orphan(o.key));
                page.into_iter()
                    .map(|o| {
                        vec![
                            o.contact.id.into(),
                            o.contact.email.into(),
                            o.contact.name.into(),
                            o.owner.id.into(),
                            o.owner.email.clone().into(),
                            o.owner.name.clone().into(),
                            status_name(o.owner.status).into(),
                            reason_name(o.reason).into(),
                            when(o.owner.departed_at_ms.or(o.owner.deactivated_at_ms)).into(),
                        ]
                    })
                    .collect()
            }
            Table::Contacts => {
                let (from, to) = self.advance(self.ids.len());
                self.ids[from..to]
                    .iter()
                    .filter_map(|id| ix.contact(*id))
                    .map(|c| {
                        let owner = ix.owner_of(c.id);
                        vec![
                            c.id.into(),
                            c.email.into(),
                            c.name.into(),
                            c.external_id.into(),
                            c.owner_id.into(),
                            owner.and_then(|o| o.email.clone()).into(),
                            owner.map(|o| status_name(o.status)).into(),
                            when(Some(c.updated_at_ms).filter(|t| *t > 0)).into(),
                        ]
                    })
                    .collect()
            }
            Table::Agents => {
                let (from, to) = self.advance(self.ids.len());
                self.ids[from..to]
                    .iter()
                    .filter_map(|id| ix.agent(*id))
                    .map(|a| {
                        vec![
                            a.id.into(),
                            a.email.clone().into(),
                            a.name.clone().into(),
                            status_name(a.status).into(),
                            a.role.clone().into(),
                            when(a.first_seen_ms).into(),
                            when(a.deactivated_at_ms).into(),
                            when(a.departed_at_ms).into(),
                            a.in_rest.into(),
                            a.in_scim.into(),
                            ix.contact_count_of(a.id).into(),
                            ix.account_count_of(a.id).into(),
                        ]
                    })
                    .collect()
            }
            Table::Accounts => {
                let (from, to) = self.advance(self.account_ids.len());
                self.account_ids[from..to]
                    .iter()
                    .filter_map(|id| ix.account(id))
                    .map(|a| {
                        let owner = a.owner_id.and_then(|o| ix.agent(o));
                        vec![
                            a.id.into(),
                            a.name.into(),
                            a.domain.into(),
                            a.owner_id.into(),
                            owner.as_ref().and_then(|o| o.email.clone()).into(),
                            owner.map(|o| status_name(o.status)).into(),
                        ]
                    })
                    .collect()
            }
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

    fn encode(&self, rows: Vec<Vec<Value>>) -> String {
        let cols = columns(self.table);
        let mut out = String::with_capacity(rows.len() * 96);
        for row in rows {
            match self.format {
                Format::Ndjson => {
                    let m: Map<String, Value> = cols.iter().map(|c| c.to_string()).zip(row).collect();
                    out.push_str(&Value::Object(m).to_string());
                }
                Format::Csv => {
                    let cells: Vec<String> = row
                        .iter()
                        .map(|v| match v {
                            Value::Null => String::new(),
                            Value::String(s) => csv_cell(s),
                            other => other.to_string(),
                        })
                        .collect();
                    out.push_str(&cells.join(","));
                }
            }
            out.push('\n');
        }
        out
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
        let rows = self.rows();
        if rows.is_empty() {
            return None;
        }
        Some(self.encode(rows))
    }
}
