//! The index's tables (contacts, orphans, agents, accounts) and batch lookups as Arrow record
//! batches with typed columns: ids as unsigned integers, times as UTC timestamps (milliseconds),
//! statuses and reasons as dictionaries, flags as booleans. Streamed in batches of 65,536 rows
//! from one snapshot, written as Arrow IPC streams or Parquet (Snappy) by the maintained `arrow`
//! and `parquet` crates. The column names are the CSV and NDJSON exports' own.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, DictionaryArray, Int32Array, Int8Array, StringArray, StringBuilder,
    StringDictionaryBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder, UInt64Array, UInt64Builder,
};
pub use arrow::datatypes::SchemaRef;
use arrow::datatypes::{DataType, Field, Int32Type, Int8Type, Schema, TimeUnit};
pub use arrow::record_batch::RecordBatch;
use idgraph_graph::export::{columns, reason_name, status_name, Table};
use idgraph_graph::index::{AgentStatus, AgentView, ContactSlot, ContactView, Index, OrphanReason};
use rustc_hash::FxHashMap;

pub use arrow::buffer::Buffer;

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
    /// Owners' emails: a few thousand values over a million rows.
    Owner,
    Flag,
    Count,
}

fn kind(name: &str) -> Kind {
    match name {
        "contact_id" | "owner_id" | "agent_id" => Kind::Id,
        "contacts" | "accounts" => Kind::Count,
        "owner_status" | "status" | "reason" => Kind::Dict,
        "owner_email" => Kind::Owner,
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
        Kind::Owner => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
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
    Owner(StringDictionaryBuilder<Int32Type>),
    Flag(BooleanBuilder),
}

impl Col {
    fn new(k: Kind) -> Col {
        match k {
            Kind::Id | Kind::Count => Col::Id(UInt64Builder::with_capacity(BATCH_ROWS)),
            Kind::Text => Col::Text(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 24)),
            Kind::Time => Col::Time(TimestampMillisecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC")),
            Kind::Dict => Col::Dict(StringDictionaryBuilder::new()),
            Kind::Owner => Col::Owner(StringDictionaryBuilder::new()),
            Kind::Flag => Col::Flag(BooleanBuilder::with_capacity(BATCH_ROWS)),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Id(b) => Arc::new(b.finish()),
            Col::Text(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Dict(b) => Arc::new(b.finish()),
            Col::Owner(b) => Arc::new(b.finish()),
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
        match self.next() {
            Some(Col::Text(b)) => b.append_option(v),
            Some(Col::Owner(b)) => match v {
                Some(s) => {
                    b.append_value(s);
                }
                None => b.append_null(),
            },
            _ => {}
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
            Some(Col::Owner(b)) => b.append_null(),
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

/// A contact-shaped row, borrowed from a snapshot: a contact, its owner, and for an orphan its
/// key (why it is one).
#[derive(Clone, Copy)]
struct Cells<'a> {
    contact: &'a ContactView,
    owner: Option<&'a AgentView>,
    orphan: Option<idgraph_graph::OrphanKey>,
}

impl<'a> Cells<'a> {
    fn of(contact: &'a ContactView, owner: Option<&'a AgentView>) -> Cells<'a> {
        Cells { contact, owner, orphan: None }
    }
}

/// The statuses' names, the dictionary every `owner_status` column shares (an agent status's
/// key is its place here): one array for the whole answer, so that an Arrow stream carries it
/// once.
fn status_values() -> ArrayRef {
    Arc::new(StringArray::from(STATUSES.iter().map(|s| status_name(*s)).collect::<Vec<_>>()))
}

const REASONS: [OrphanReason; 3] =
    [OrphanReason::OwnerDeactivated, OrphanReason::OwnerDeparted, OrphanReason::OwnerUnknown];

fn reason_values() -> ArrayRef {
    Arc::new(StringArray::from(REASONS.iter().map(|r| reason_name(*r)).collect::<Vec<_>>()))
}

fn reason_key(r: OrphanReason) -> i8 {
    REASONS.iter().position(|x| *x == r).unwrap_or(0) as i8
}

const STATUSES: [AgentStatus; 5] =
    [AgentStatus::Active, AgentStatus::Deactivated, AgentStatus::Departed, AgentStatus::Unknown, AgentStatus::Bot];

fn status_key(s: AgentStatus) -> i8 {
    STATUSES.iter().position(|x| *x == s).unwrap_or(0) as i8
}

/// Contact-shaped columns (the contacts and orphans exports', and a lookup's with its `key`),
/// each built in one pass over rows gathered first: the rows' memory is read column after column
/// in tight loops rather than cell after cell across ten builders, which at a million rows is
/// several times faster (and the lookups that gather the rows overlap their cache misses). A row
/// of `None` is a key no contact has: every column but the key is null.
#[derive(Clone)]
struct ContactColumns {
    schema: SchemaRef,
    names: Vec<&'static str>,
    statuses: ArrayRef,
    reasons: ArrayRef,
    /// A table's `owner_email` dictionary, shared by its batches; none: each batch its own,
    /// of the owners it names (a lookup's few).
    owners: Option<Arc<Owners>>,
}

/// Every agent's email as one dictionary, and each agent's key in it.
struct Owners {
    keys: FxHashMap<u64, i32>,
    values: ArrayRef,
}

impl Owners {
    fn of(ix: &Index) -> Owners {
        let mut keys = FxHashMap::default();
        let mut values = StringBuilder::new();
        for a in ix.agents() {
            if let Some(e) = a.email.as_deref() {
                keys.insert(a.id, keys.len() as i32);
                values.append_value(e);
            }
        }
        Owners { keys, values: Arc::new(values.finish()) }
    }
}

impl ContactColumns {
    fn new(all: &[&'static str], keep: &[usize]) -> ContactColumns {
        let names: Vec<&'static str> = keep.iter().map(|k| all[*k]).collect();
        let schema = Arc::new(Schema::new(names.iter().map(|n| field(n)).collect::<Vec<_>>()));
        ContactColumns { schema, names, statuses: status_values(), reasons: reason_values(), owners: None }
    }

    fn batch<'a>(&self, keys: &[&str], rows: &[Option<Cells<'a>>]) -> Result<RecordBatch, ColumnarError> {
        let text = |f: &dyn Fn(&Cells<'a>) -> Option<&'a str>| -> ArrayRef {
            let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 32);
            for r in rows {
                b.append_option(r.as_ref().and_then(f));
            }
            Arc::new(b.finish())
        };
        let id = |f: &dyn Fn(&Cells<'a>) -> Option<u64>| -> ArrayRef {
            Arc::new(rows.iter().map(|r| r.as_ref().and_then(f)).collect::<UInt64Array>())
        };
        let at = |f: &dyn Fn(&Cells<'a>) -> Option<i64>| -> ArrayRef {
            Arc::new(
                rows.iter().map(|r| r.as_ref().and_then(f)).collect::<TimestampMillisecondArray>().with_timezone("UTC"),
            )
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.names.len());
        for name in &self.names {
            arrays.push(match *name {
                "key" => Arc::new(keys.iter().map(|k| Some(*k)).collect::<StringArray>()),
                "contact_id" => id(&|r| Some(r.contact.id)),
                "contact_email" => text(&|r| r.contact.email.as_deref()),
                "contact_name" => text(&|r| r.contact.name.as_deref()),
                "external_id" => text(&|r| r.contact.external_id.as_deref()),
                "owner_id" => id(&|r| match r.orphan {
                    Some(k) => Some(k.2),
                    None => r.contact.owner_id,
                }),
                "owner_name" => text(&|r| r.owner.and_then(|o| o.name.as_deref())),
                "reason" => {
                    let keys: Int8Array =
                        rows.iter().map(|r| r.and_then(|r| r.orphan).map(|k| reason_key(k.0))).collect();
                    Arc::new(DictionaryArray::<Int8Type>::try_new(keys, self.reasons.clone())?)
                }
                "owner_gone_at" => at(&|r| r.owner.and_then(|o| o.departed_at_ms.or(o.deactivated_at_ms))),
                "contact_verified_at" => at(&|r| time(r.contact.verified_at_ms)),
                "owner_email" => {
                    let owner = |r: &Option<Cells<'a>>| r.and_then(|r| r.owner);
                    let (keys, values): (Int32Array, ArrayRef) = match &self.owners {
                        Some(d) => (
                            rows.iter().map(|r| owner(r).and_then(|o| d.keys.get(&o.id).copied())).collect(),
                            d.values.clone(),
                        ),
                        None => {
                            let mut seen: FxHashMap<u64, i32> = FxHashMap::default();
                            let mut values = StringBuilder::new();
                            let keys = rows
                                .iter()
                                .map(|r| {
                                    let o = owner(r)?;
                                    let email = o.email.as_deref()?;
                                    let next = seen.len() as i32;
                                    Some(*seen.entry(o.id).or_insert_with(|| {
                                        values.append_value(email);
                                        next
                                    }))
                                })
                                .collect();
                            (keys, Arc::new(values.finish()))
                        }
                    };
                    Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values)?)
                }
                "owner_status" => {
                    let keys: Int8Array =
                        rows.iter().map(|r| r.and_then(|r| r.owner).map(|o| status_key(o.status))).collect();
                    Arc::new(DictionaryArray::<Int8Type>::try_new(keys, self.statuses.clone())?)
                }
                "updated_at" => at(&|r| time(r.contact.updated_at_ms)),
                "verified_at" => at(&|r| time(r.contact.verified_at_ms)),
                other => return Err(ColumnarError::Columns(format!("no contact column named {other:?}"))),
            });
        }
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

/// Whether a table's rows are contacts (with owners), built by [`ContactColumns`].
fn contact_shaped(t: Table) -> bool {
    matches!(t, Table::Contacts | Table::Orphans)
}

/// A table of one snapshot, batch by batch.
pub struct TableBatches {
    index: Arc<Index>,
    table: Table,
    rows: Rows,
    contacts: ContactColumns,
    /// Agents by id.
    ids: Arc<[u64]>,
    /// Contacts by id.
    slots: Arc<[ContactSlot]>,
    /// Contacts: this part's batches are every `stride`-th, from the `next`-th row on.
    stride: usize,
    part: usize,
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
        let ids: Arc<[u64]> = match table {
            Table::Agents => index.agents().into_iter().map(|a| a.id).collect(),
            _ => Arc::new([]),
        };
        let slots = if table == Table::Contacts { index.contacts_in_order() } else { Arc::new([]) };
        let account_ids = if table == Table::Accounts { index.account_ids_sorted() } else { Vec::new() };
        let mut contacts = ContactColumns::new(all, &keep);
        if table == Table::Contacts && contacts.names.contains(&"owner_email") {
            contacts.owners = Some(Arc::new(Owners::of(&index)));
        }
        Ok(TableBatches {
            // Contacts and orphans are built column by column: no cell builders (each would
            // reserve a batch's room on every request).
            rows: if contact_shaped(table) { Rows::new(&[], &[]) } else { Rows::new(all, &keep) },
            contacts,
            index,
            table,
            ids,
            slots,
            stride: 1,
            part: 0,
            account_ids,
            after: None,
            next: 0,
            done: false,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        if contact_shaped(self.table) {
            self.contacts.schema.clone()
        } else {
            self.rows.schema()
        }
    }

    /// The contacts' next batch (of this part's).
    fn contact_batch(&mut self) -> Option<Result<RecordBatch, ColumnarError>> {
        // The first part answers an empty table with one (empty) batch: the schema.
        if self.next >= self.slots.len() && (self.done || self.part > 0) {
            return None;
        }
        let from = self.next.min(self.slots.len());
        let to = (from + BATCH_ROWS).min(self.slots.len());
        let rows: Vec<Option<Cells<'_>>> = self.slots[from..to]
            .iter()
            .filter_map(|s| self.index.contact_and_owner_at(*s))
            .map(|(c, o)| Some(Cells::of(c, o)))
            .collect();
        let batch = self.contacts.batch(&[], &rows);
        self.done = true;
        self.next = from + BATCH_ROWS * self.stride;
        Some(batch)
    }

    /// The orphans' next batch, after the last key written.
    fn orphan_batch(&mut self) -> Option<Result<RecordBatch, ColumnarError>> {
        if self.done {
            return None;
        }
        let ix = self.index.clone();
        let rows: Vec<Option<Cells<'_>>> = ix
            .orphan_refs_between(self.after, None)
            .take(BATCH_ROWS)
            .map(|(k, c, o)| Some(Cells { contact: c, owner: Some(o), orphan: Some(k) }))
            .collect();
        if let Some(Some(last)) = rows.last() {
            self.after = last.orphan;
        }
        // The first batch is written even when empty: the schema.
        self.done = rows.len() < BATCH_ROWS;
        Some(self.contacts.batch(&[], &rows))
    }

    /// The table's batches built on `threads` threads, each building every `threads`-th batch
    /// ahead of the reader, taken in turn (so in order): the contacts of a large org. Smaller
    /// tables, and a table of one batch, are built on the caller's thread. A reader that stops
    /// early stops the builders at their next batch.
    pub fn in_parallel(self, threads: usize) -> Result<InTurn, ColumnarError> {
        if self.table != Table::Contacts || threads < 2 || self.slots.len() <= BATCH_ROWS {
            return Ok(InTurn { schema: self.schema(), one: Some(self), parts: Vec::new(), turn: 0 });
        }
        let mut parts = Vec::with_capacity(threads);
        for part in 0..threads {
            let mut p = TableBatches {
                index: self.index.clone(),
                table: self.table,
                rows: Rows::new(&[], &[]),
                contacts: self.contacts.clone(),
                ids: self.ids.clone(),
                slots: self.slots.clone(),
                stride: threads,
                part,
                account_ids: Vec::new(),
                after: None,
                next: part * BATCH_ROWS,
                done: false,
            };
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name("idgraph-columnar".into())
                .spawn(move || {
                    while let Some(b) = p.contact_batch() {
                        if tx.send(b).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| ColumnarError::Columns(format!("cannot start a thread: {e}")))?;
            parts.push(rx);
        }
        Ok(InTurn { schema: self.schema(), one: None, parts, turn: 0 })
    }

    fn fill(&mut self) {
        let ix = self.index.clone();
        let r = &mut self.rows;
        match self.table {
            Table::Contacts => {}
            // Column by column: `contact_batch`, `orphan_batch`.
            Table::Orphans => {}
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
        match self.table {
            Table::Contacts => return self.contact_batch(),
            Table::Orphans => return self.orphan_batch(),
            _ => {}
        }
        // Agents and accounts: the first batch is written even when empty.
        if self.done {
            return None;
        }
        self.fill();
        Some(self.rows.batch())
    }
}

/// A table's batches, from [`TableBatches::in_parallel`].
pub struct InTurn {
    schema: SchemaRef,
    one: Option<TableBatches>,
    parts: Vec<std::sync::mpsc::Receiver<Result<RecordBatch, ColumnarError>>>,
    turn: usize,
}

impl InTurn {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl Iterator for InTurn {
    type Item = Result<RecordBatch, ColumnarError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(one) = self.one.as_mut() {
            return one.next();
        }
        let n = self.parts.len();
        // Parts build batches in turn: the first part that has no more ends the table.
        let b = self.parts.get(self.turn % n.max(1))?.recv().ok()?;
        self.turn += 1;
        Some(b)
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
            let mut out = out;
            arrow_buffers(schema, batches, |b| Ok(out.write_all(&b).map_err(arrow::error::ArrowError::from)?))?;
            // A buffered writer's last bytes: a full disk is an error, not a short file.
            out.flush().map_err(arrow::error::ArrowError::from)?;
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
            let mut out = w.into_inner()?;
            out.flush().map_err(arrow::error::ArrowError::from)?;
        }
    }
    Ok(())
}

/// `batches` as an Arrow IPC stream, handed to `sink` buffer by buffer: the columns' own buffers
/// as they are (a server sends them without copying them), between the messages' headers and
/// padding. The bytes are [`write`]'s in the Arrow format.
pub fn arrow_buffers(
    schema: SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, ColumnarError>>,
    mut sink: impl FnMut(arrow::buffer::Buffer) -> Result<(), ColumnarError>,
) -> Result<(), ColumnarError> {
    let mut enc = arrow::ipc::writer::StreamEncoder::try_new(&schema)?;
    for b in batches {
        for buf in enc.encode(&b?)? {
            sink(buf)?;
        }
    }
    for buf in enc.finish()? {
        sink(buf)?;
    }
    Ok(())
}

/// A batch lookup's answer, batch by batch: [`LOOKUP_COLUMNS`](idgraph_graph::export::LOOKUP_COLUMNS)
/// for each key in the order given (a key no contact has: the key alone).
pub struct LookupBatches {
    index: Arc<Index>,
    by_email: bool,
    keys: Vec<String>,
    columns: ContactColumns,
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
    Ok(LookupBatches { columns: ContactColumns::new(all, &keep), index, by_email, keys, next: 0 })
}

impl LookupBatches {
    pub fn schema(&self) -> SchemaRef {
        self.columns.schema.clone()
    }
}

impl Iterator for LookupBatches {
    type Item = Result<RecordBatch, ColumnarError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.keys.len() && self.next > 0 {
            return None;
        }
        let to = (self.next + BATCH_ROWS).min(self.keys.len());
        let part = &self.keys[self.next..to];
        let found = idgraph_graph::export::lookup_contacts(&self.index, self.by_email, part);
        let (keys, rows): (Vec<&str>, Vec<Option<Cells<'_>>>) =
            found.map(|(k, f)| (k, f.map(|(c, o)| Cells::of(c, o)))).unzip();
        let batch = self.columns.batch(&keys, &rows);
        // An empty lookup still answers one (empty) batch: the schema.
        self.next = to.max(1);
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, ArrayAccessor, AsArray};
    use arrow::datatypes::UInt64Type;
    use idgraph_graph::index::{remember, Inputs};
    use idgraph_model::{Contact, User};

    fn org(contacts: u64) -> Arc<Index> {
        let users: Vec<User> = (0..30)
            .map(|i| User {
                id: 20_001 + i,
                email: Some(format!("agent.{i}@example.com")),
                name: None,
                role: None,
                bot: false,
                created_at: 0,
                updated_at: 0,
            })
            .collect();
        let mut memory = std::collections::HashMap::new();
        remember(&mut memory, &users, &[], 1);
        // Ids out of order, some contacts without an owner, some owned by an unknown agent.
        let contacts = (0..contacts)
            .map(|i| Contact {
                id: 1_000_001 + (i * 7_919) % contacts,
                email: Some(format!("c{i}@example.com")),
                name: (i % 3 == 0).then(|| format!("Contact {i}")),
                owner_id: (i % 10 != 0).then_some(20_001 + i % 40),
                external_id: None,
                created_at: 0,
                updated_at: 1_700_000_000_000 + i as i64,
                extra: Default::default(),
            })
            .collect();
        Arc::new(Index::build(
            1,
            Inputs { contacts, users, scim: vec![], accounts: vec![], memory, contact_verified: vec![] },
        ))
    }

    fn batches(b: impl Iterator<Item = Result<RecordBatch, ColumnarError>>) -> Vec<RecordBatch> {
        b.collect::<Result<Vec<_>, _>>().expect("batches")
    }

    #[test]
    fn contacts_built_in_parallel_are_the_same_batches_in_id_order() {
        let ix = org(2 * BATCH_ROWS as u64 + 7_001);
        let one = batches(TableBatches::new(ix.clone(), Table::Contacts, None).expect("table"));
        let two = batches(
            TableBatches::new(ix.clone(), Table::Contacts, None).expect("table").in_parallel(2).expect("threads"),
        );
        assert_eq!(one.len(), 3);
        assert_eq!(one, two);
        let ids: Vec<u64> =
            two.iter().flat_map(|b| b.column(0).as_primitive::<UInt64Type>().values().to_vec()).collect();
        assert_eq!(ids, ix.contact_ids_sorted());
        // An owner no agent has: its id, no email, the status UNKNOWN; an active owner: ACTIVE.
        let b = &two[0];
        let status = |r: usize| {
            let d = b.column(6).as_dictionary::<Int8Type>();
            let named = d.downcast_dict::<StringArray>().expect("strings");
            (!b.column(6).is_null(r)).then(|| named.value(r).to_string())
        };
        let owner = |r: usize| b.column(4).as_primitive::<UInt64Type>().value(r);
        let unknown =
            (0..b.num_rows()).find(|r| !b.column(4).is_null(*r) && owner(*r) > 20_030).expect("unknown owner");
        assert!(b.column(5).is_null(unknown));
        assert_eq!(status(unknown).as_deref(), Some("UNKNOWN"));
        let known = (0..b.num_rows()).find(|r| !b.column(4).is_null(*r) && owner(*r) <= 20_030).expect("an owner");
        assert_eq!(status(known).as_deref(), Some("ACTIVE"));
        let none = (0..b.num_rows()).find(|r| b.column(4).is_null(*r)).expect("a contact without an owner");
        assert_eq!(status(none), None);
    }

    #[test]
    fn an_empty_table_is_one_empty_batch_and_columns_are_chosen() {
        let ix = org(0);
        let b =
            batches(TableBatches::new(ix.clone(), Table::Contacts, None).expect("table").in_parallel(2).expect("x"));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].num_rows(), 0);
        let asked = vec!["owner_status".to_string(), "contact_id".to_string()];
        let ix = org(10);
        let b = batches(TableBatches::new(ix, Table::Contacts, Some(&asked)).expect("table"));
        assert_eq!(
            b[0].schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(),
            ["owner_status", "contact_id"]
        );
        assert_eq!(b[0].num_rows(), 10);
    }

    #[test]
    fn every_table_of_an_empty_org_is_one_empty_batch() {
        let ix = Arc::new(Index::build(
            1,
            Inputs {
                contacts: vec![],
                users: vec![],
                scim: vec![],
                accounts: vec![],
                memory: Default::default(),
                contact_verified: vec![],
            },
        ));
        for t in [Table::Contacts, Table::Orphans, Table::Agents, Table::Accounts] {
            let b = batches(TableBatches::new(ix.clone(), t, None).expect("table").in_parallel(2).expect("x"));
            assert_eq!(b.len(), 1, "{t:?}");
            assert_eq!(b[0].num_rows(), 0, "{t:?}");
        }
    }

    #[test]
    fn orphans_are_in_key_order_with_their_owners() {
        let ix = org(BATCH_ROWS as u64 + 1_000);
        let got = batches(TableBatches::new(ix.clone(), Table::Orphans, None).expect("table"));
        let want = ix.orphan_refs(None, usize::MAX);
        assert!(want.len() > BATCH_ROWS / 10, "owners no agent has: orphans");
        assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), want.len());
        let b = &got[0];
        let reason = b.column(7).as_dictionary::<Int8Type>();
        let reason = reason.downcast_dict::<StringArray>().expect("strings");
        let email = b.column(4).as_dictionary::<Int32Type>();
        let email = email.downcast_dict::<StringArray>().expect("strings");
        for (r, (k, c, o)) in want.iter().take(b.num_rows()).enumerate() {
            assert_eq!(b.column(0).as_primitive::<UInt64Type>().value(r), c.id);
            assert_eq!(b.column(3).as_primitive::<UInt64Type>().value(r), o.id);
            assert_eq!(reason.value(r), reason_name(k.0));
            assert_eq!(email.is_null(r), o.email.is_none());
        }
    }

    #[test]
    fn an_ipc_stream_of_several_batches_reads_back() {
        let ix = org(2 * BATCH_ROWS as u64);
        let b = TableBatches::new(ix, Table::Contacts, None).expect("table").in_parallel(2).expect("threads");
        let schema = b.schema();
        let mut out = Vec::new();
        write(Columnar::Arrow, schema, b, &mut out).expect("write");
        let r = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(out), None).expect("read");
        let got = r.collect::<Result<Vec<_>, _>>().expect("batches");
        assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 2 * BATCH_ROWS);
        // Every batch's statuses are spelled by the same dictionary.
        let dict = |b: &RecordBatch| b.column(6).as_dictionary::<Int8Type>().values().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(dict(&got[0]).as_ref(), dict(&got[1]).as_ref());
    }
}
