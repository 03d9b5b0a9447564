//! The index's tables (contacts, orphans, agents, accounts) and batch lookups as Arrow record
//! batches with typed columns: ids as unsigned integers, times as UTC timestamps (milliseconds),
//! statuses and reasons as dictionaries, flags as booleans. Streamed in batches of 65,536 rows
//! from one snapshot, written as Arrow IPC streams or Parquet (Snappy) by the maintained `arrow`
//! and `parquet` crates. The column names are the CSV and NDJSON exports' own.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, StringBuilder, StringDictionaryBuilder, TimestampMillisecondBuilder, UInt64Builder,
};
pub use arrow::datatypes::SchemaRef;
use arrow::datatypes::{DataType, Field, Int8Type, Schema, TimeUnit};
pub use arrow::record_batch::RecordBatch;
use idgraph_graph::export::{columns, reason_name, status_name, Table};
use idgraph_graph::index::{AgentView, ContactView, Index};

/// Rows in a record batch (and in a Parquet row group).
pub const BATCH_ROWS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum ColumnarError {
    #[error("{0}")]
    Columns(String),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Id,
    Text,
    Time,
    Dict,
    Flag,
    Count,
}

fn kind(name: &str) -> Kind {
    match name {
        "contact_id" | "owner_id" | "agent_id" => Kind::Id,
        "contacts" | "accounts" => Kind::Count,
        "owner_status" | "status" | "reason" => Kind::Dict,
        "in_rest" | "in_scim" => Kind::Flag,
        n if n.ends_with("_at") => Kind::Time,
        _ => Kind::Text,
    }
}

fn field(name: &str) -> Field {
    let dt = match kind(name) {
        Kind::Id | Kind::Count => DataType::UInt64,
        Kind::Text => DataType::Utf8,
        Kind::Time => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        Kind::Dict => DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)),
        Kind::Flag => DataType::Boolean,
    };
    Field::new(name, dt, true)
}

/// The columns asked (`None`: all), checked against the table's, in the order asked.
pub fn select(all: &[&'static str], asked: Option<&[String]>) -> Result<Vec<usize>, String> {
    match asked {
        None => Ok((0..all.len()).collect()),
        Some([]) => Err("columns= names no column".into()),
        Some(a) => a
            .iter()
            .map(|c| {
                all.iter().position(|x| x == c).ok_or_else(|| format!("no column named {c:?}: {}", all.join(", ")))
            })
            .collect(),
    }
}

/// One column being filled.
enum Col {
    Id(UInt64Builder),
    Text(StringBuilder),
    Time(TimestampMillisecondBuilder),
    Dict(StringDictionaryBuilder<Int8Type>),
    Flag(BooleanBuilder),
}

impl Col {
    fn new(k: Kind) -> Col {
        match k {
            Kind::Id | Kind::Count => Col::Id(UInt64Builder::with_capacity(BATCH_ROWS)),
            Kind::Text => Col::Text(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 24)),
            Kind::Time => Col::Time(TimestampMillisecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC")),
            Kind::Dict => Col::Dict(StringDictionaryBuilder::new()),
            Kind::Flag => Col::Flag(BooleanBuilder::with_capacity(BATCH_ROWS)),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Id(b) => Arc::new(b.finish()),
            Col::Text(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Dict(b) => Arc::new(b.finish()),
            Col::Flag(b) => Arc::new(b.finish()),
        }
    }
}

/// A row being written: one cell a column, in the table's column order; cells of columns not
/// asked are skipped.
pub struct Rows {
    schema: SchemaRef,
    /// For each of the table's columns, where it goes among the asked ones.
    slot: Vec<Option<usize>>,
    cols: Vec<Col>,
    cell: usize,
    rows: usize,
}

impl Rows {
    /// Rows of a table with the columns `keep` (indices into `all`).
    pub fn new(all: &[&'static str], keep: &[usize]) -> Rows {
        let mut slot = vec![None; all.len()];
        for (i, k) in keep.iter().enumerate() {
            slot[*k] = Some(i);
        }
        let schema = Arc::new(Schema::new(keep.iter().map(|k| field(all[*k])).collect::<Vec<_>>()));
        let cols = keep.iter().map(|k| Col::new(kind(all[*k]))).collect();
        Rows { schema, slot, cols, cell: 0, rows: 0 }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn next(&mut self) -> Option<&mut Col> {
        let s = self.slot.get(self.cell).copied().flatten();
        self.cell += 1;
        s.and_then(|i| self.cols.get_mut(i))
    }

    pub fn id(&mut self, v: Option<u64>) {
        if let Some(Col::Id(b)) = self.next() {
            b.append_option(v);
        }
    }

    pub fn text(&mut self, v: Option<&str>) {
        if let Some(Col::Text(b)) = self.next() {
            b.append_option(v);
        }
    }

    pub fn time(&mut self, ms: Option<i64>) {
        if let Some(Col::Time(b)) = self.next() {
            b.append_option(ms);
        }
    }

    pub fn dict(&mut self, v: Option<&str>) {
        if let Some(Col::Dict(b)) = self.next() {
            match v {
                Some(s) => {
                    b.append_value(s);
                }
                None => b.append_null(),
            }
        }
    }

    pub fn flag(&mut self, v: bool) {
        if let Some(Col::Flag(b)) = self.next() {
            b.append_value(v);
        }
    }

    /// No value in this cell, whatever the column's type.
    pub fn null(&mut self) {
        match self.next() {
            Some(Col::Id(b)) => b.append_null(),
            Some(Col::Text(b)) => b.append_null(),
            Some(Col::Time(b)) => b.append_null(),
            Some(Col::Dict(b)) => b.append_null(),
            Some(Col::Flag(b)) => b.append_null(),
            None => {}
        }
    }

    pub fn end(&mut self) {
        self.cell = 0;
        self.rows += 1;
    }

    /// The rows so far as a batch; the builders start again.
    pub fn batch(&mut self) -> Result<RecordBatch, ColumnarError> {
        let arrays: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

fn time(ms: i64) -> Option<i64> {
    (ms > 0).then_some(ms)
}

/// A contact's row (the contacts export's columns).
pub fn contact_row(r: &mut Rows, c: &ContactView, owner: Option<&AgentView>) {
    contact_cells(r, c, owner);
    r.end();
}

/// A contact's cells, without ending the row (a lookup's row starts with its key).
fn contact_cells(r: &mut Rows, c: &ContactView, owner: Option<&AgentView>) {
    r.id(Some(c.id));
    r.text(c.email.as_deref());
    r.text(c.name.as_deref());
    r.text(c.external_id.as_deref());
    r.id(c.owner_id);
    r.text(owner.and_then(|o| o.email.as_deref()));
    r.dict(owner.map(|o| status_name(o.status)));
    r.time(time(c.updated_at_ms));
    r.time(time(c.verified_at_ms));
}

/// A table of one snapshot, batch by batch.
pub struct TableBatches {
    index: Arc<Index>,
    table: Table,
    rows: Rows,
    /// Contacts and agents by id; accounts by id.
    ids: Vec<u64>,
    account_ids: Vec<String>,
    /// Orphans: the last key written.
    after: Option<idgraph_graph::OrphanKey>,
    next: usize,
    done: bool,
}

impl TableBatches {
    pub fn new(index: Arc<Index>, table: Table, asked: Option<&[String]>) -> Result<TableBatches, ColumnarError> {
        let all = columns(table);
        let keep = select(all, asked).map_err(ColumnarError::Columns)?;
        let ids = match table {
            Table::Contacts => index.contact_ids_sorted(),
            Table::Agents => index.agents().into_iter().map(|a| a.id).collect(),
            _ => Vec::new(),
        };
        let account_ids = if table == Table::Accounts { index.account_ids_sorted() } else { Vec::new() };
        Ok(TableBatches {
            rows: Rows::new(all, &keep),
            index,
            table,
            ids,
            account_ids,
            after: None,
            next: 0,
            done: false,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.rows.schema()
    }

    fn fill(&mut self) {
        let ix = self.index.clone();
        let r = &mut self.rows;
        match self.table {
            Table::Contacts => {
                let to = (self.next + BATCH_ROWS).min(self.ids.len());
                for id in &self.ids[self.next..to] {
                    if let Some((c, owner)) = ix.contact_and_owner(*id) {
                        contact_row(r, c, owner);
                    }
                }
                self.done = to == self.ids.len();
                self.next = to;
            }
            Table::Orphans => {
                let mut n = 0;
                for (k, c, o) in ix.orphan_refs_between(self.after, None).take(BATCH_ROWS) {
                    r.id(Some(c.id));
                    r.text(c.email.as_deref());
                    r.text(c.name.as_deref());
                    r.id(Some(o.id));
                    r.text(o.email.as_deref());
                    r.text(o.name.as_deref());
                    r.dict(Some(status_name(o.status)));
                    r.dict(Some(reason_name(k.0)));
                    r.time(o.departed_at_ms.or(o.deactivated_at_ms));
                    r.time(time(c.verified_at_ms));
                    r.end();
                    self.after = Some(k);
                    n += 1;
                }
                self.done = n < BATCH_ROWS;
            }
            Table::Agents => {
                let to = (self.next + BATCH_ROWS).min(self.ids.len());
                for id in &self.ids[self.next..to] {
                    let Some(a) = ix.agent_ref(*id) else { continue };
                    r.id(Some(a.id));
                    r.text(a.email.as_deref());
                    r.text(a.name.as_deref());
                    r.dict(Some(status_name(a.status)));
                    r.text(a.role.as_deref());
                    r.time(a.first_seen_ms);
                    r.time(a.deactivated_at_ms);
                    r.time(a.departed_at_ms);
                    r.flag(a.in_rest);
                    r.flag(a.in_scim);
                    r.id(Some(ix.contact_count_of(a.id) as u64));
                    r.id(Some(ix.account_count_of(a.id) as u64));
                    r.time(a.verified_at_ms);
                    r.end();
                }
                self.done = to == self.ids.len();
                self.next = to;
            }
            Table::Accounts => {
                let to = (self.next + BATCH_ROWS).min(self.account_ids.len());
                for id in &self.account_ids[self.next..to] {
                    let Some(a) = ix.account(id) else { continue };
                    let owner = a.owner_id.and_then(|o| ix.agent_ref(o));
                    r.text(Some(&a.id));
                    r.text(a.name.as_deref());
                    r.text(a.domain.as_deref());
                    r.id(a.owner_id);
                    r.text(owner.and_then(|o| o.email.as_deref()));
                    r.dict(owner.map(|o| status_name(o.status)));
                    r.end();
                }
                self.done = to == self.account_ids.len();
                self.next = to;
            }
        }
    }
}

impl Iterator for TableBatches {
    type Item = Result<RecordBatch, ColumnarError>;

    /// The next batch; an empty table still gives one (empty) batch, so that a reader learns
    /// the schema.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done && self.next > 0 {
            return None;
        }
        if self.done && self.table == Table::Orphans {
            return None;
        }
        self.fill();
        if self.table == Table::Orphans && self.next == 0 {
            self.next = 1;
        }
        Some(self.rows.batch())
    }
}

/// Which format a columnar answer is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columnar {
    /// The Arrow IPC stream format (`application/vnd.apache.arrow.stream`).
    Arrow,
    /// A Parquet file (Snappy), one row group a batch.
    Parquet,
}

impl Columnar {
    pub fn media_type(self) -> &'static str {
        match self {
            Columnar::Arrow => "application/vnd.apache.arrow.stream",
            Columnar::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// Writes batches to `out` in `format`, batch by batch (the writer sees each as it is made).
pub fn write(
    format: Columnar,
    schema: SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, ColumnarError>>,
    out: impl Write + Send,
) -> Result<(), ColumnarError> {
    match format {
        Columnar::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(out, &schema)?;
            for b in batches {
                w.write(&b?)?;
                w.flush()?;
            }
            w.finish()?;
        }
        Columnar::Parquet => {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .set_max_row_group_row_count(Some(BATCH_ROWS))
                .build();
            let mut w = parquet::arrow::ArrowWriter::try_new(out, schema, Some(props))?;
            for b in batches {
                w.write(&b?)?;
                w.flush()?;
            }
            w.close()?;
        }
    }
    Ok(())
}

/// A batch lookup's answer, batch by batch: [`LOOKUP_COLUMNS`](idgraph_graph::export::LOOKUP_COLUMNS)
/// for each key in the order given (a key no contact has: the key alone).
pub struct LookupBatches {
    index: Arc<Index>,
    by_email: bool,
    keys: Vec<String>,
    rows: Rows,
    next: usize,
}

pub fn lookup_batches(
    index: Arc<Index>,
    by_email: bool,
    keys: Vec<String>,
    asked: Option<&[String]>,
) -> Result<LookupBatches, ColumnarError> {
    let all = idgraph_graph::export::LOOKUP_COLUMNS;
    let keep = select(all, asked).map_err(ColumnarError::Columns)?;
    Ok(LookupBatches { rows: Rows::new(all, &keep), index, by_email, keys, next: 0 })
}

impl LookupBatches {
    pub fn schema(&self) -> SchemaRef {
        self.rows.schema()
    }
}

impl Iterator for LookupBatches {
    type Item = Result<RecordBatch, ColumnarError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.keys.len() && self.next > 0 {
            return None;
        }
        let to = (self.next + BATCH_ROWS).min(self.keys.len());
        let ix = self.index.clone();
        let r = &mut self.rows;
        for (key, found) in idgraph_graph::export::lookup_contacts(&ix, self.by_email, &self.keys[self.next..to]) {
            r.text(Some(key));
            match found {
                Some((c, owner)) => {
                    contact_cells(r, c, owner);
                    r.end();
                }
                None => {
                    for _ in 1..idgraph_graph::export::LOOKUP_COLUMNS.len() {
                        r.null();
                    }
                    r.end();
                }
            }
        }
        // An empty lookup still answers one (empty) batch: the schema.
        self.next = to.max(1);
        Some(self.rows.batch())
    }
}
