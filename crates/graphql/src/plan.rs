//! Planned answers for the hottest documents: contacts looked up by email or id (`contact`,
//! `contactsByEmails`, `contactsByIds`) selecting their plain fields and their owner's.
//!
//! async-graphql validates every request again and resolves every field through a future and a
//! `Value` (about a microsecond a field): a batch of 1,000 contacts spends milliseconds there, and a
//! single lookup spends more in validation than in the index. A document of the planned shape, once
//! async-graphql has answered it without an error, is answered here by writing JSON straight from
//! the index. Whatever is outside the shape (fragments, directives, other fields, variables of an
//! unexpected type or value, a document over the complexity limit, no index yet) takes the ordinary
//! way, which also gives every error. `tests` compare the two answers field by field.

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, OperationDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned, ScalarType, Value};
use idgraph_graph::index::{AgentView, ContactView, Index};

use crate::schema::{time, AgentStatus, BATCH_MAX, COMPLEXITY_MAX};

/// How one cached document is answered without async-graphql.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The operation name the plan was made for (as the request named it).
    operation: Option<String>,
    roots: Vec<Root>,
}

#[derive(Debug)]
struct Root {
    key: Name,
    lookup: Lookup,
    arg: Arg,
    fields: Vec<(Name, ContactField)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Lookup {
    ContactByEmail,
    ContactById,
    ContactsByEmails,
    ContactsByIds,
}

#[derive(Debug)]
enum Arg {
    Literal(Value),
    Variable(Name),
}

#[derive(Debug)]
enum ContactField {
    Typename,
    Id,
    Email,
    Name,
    ExternalId,
    OwnerId,
    UpdatedAt,
    VerifiedAt,
    OwnerStatus,
    Owner(Vec<(Name, AgentField)>),
}

#[derive(Debug, Clone, Copy)]
enum AgentField {
    Typename,
    Id,
    Email,
    Name,
    Status,
    Role,
    FirstSeenAt,
    DeactivatedAt,
    DepartedAt,
    InRest,
    InScim,
    VerifiedAt,
}

/// The argument of a lookup, read from the document or the variables.
enum Key<'a> {
    One(&'a str),
    Many(Vec<&'a str>),
}

impl Plan {
    /// The plan of a document, or `None` when it is not of the planned shape.
    pub(crate) fn of(doc: &ExecutableDocument, operation: Option<&str>) -> Option<Plan> {
        if !doc.fragments.is_empty() {
            return None;
        }
        let op = match (&doc.operations, operation) {
            (DocumentOperations::Single(op), None) => op,
            (DocumentOperations::Multiple(ops), name) if ops.len() == 1 => {
                let (n, op) = ops.iter().next()?;
                if name.is_some_and(|name| name != n.as_str()) {
                    return None;
                }
                op
            }
            _ => return None,
        };
        let roots = roots_of(&op.node)?;
        Some(Plan { operation: operation.map(str::to_string), roots })
    }

    /// The whole answer (`{"data": …}`) from `ix`, or `None` when this request must take the
    /// ordinary way (its variables are not what the plan reads, or it is over the limits).
    pub(crate) fn answer(
        &self,
        ix: &Index,
        operation: Option<&str>,
        vars: Option<&serde_json::Value>,
    ) -> Option<(Vec<u8>, u64)> {
        if self.operation.as_deref() != operation {
            return None;
        }
        let keys = self.roots.iter().map(|r| r.key_of(vars)).collect::<Option<Vec<_>>>()?;
        let complexity: usize = self.roots.iter().zip(&keys).map(|(r, k)| r.complexity(k)).sum();
        if complexity > COMPLEXITY_MAX {
            return None;
        }
        let mut out = Vec::with_capacity(64 + keys.iter().map(|k| k.len() * 96).sum::<usize>());
        out.extend_from_slice(b"{\"data\":{");
        for (i, (root, key)) in self.roots.iter().zip(&keys).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(&mut out, &root.key);
            root.write(ix, key, &mut out);
        }
        out.extend_from_slice(b"}}");
        Some((out, keys.iter().map(|k| k.len() as u64).sum()))
    }
}

impl Key<'_> {
    fn len(&self) -> usize {
        match self {
            Key::One(_) => 1,
            Key::Many(v) => v.len(),
        }
    }
}

fn roots_of(op: &OperationDefinition) -> Option<Vec<Root>> {
    if op.ty != OperationType::Query || !op.directives.is_empty() {
        return None;
    }
    // Every variable must be one a lookup reads, of the type the plan expects, without a default.
    let mut roots = Vec::new();
    for field in fields_of(&op.selection_set.node)? {
        let (name, (arg_name, value)) = match field.arguments.as_slice() {
            [(n, v)] => (field.name.node.as_str(), (n.node.as_str(), &v.node)),
            _ => return None,
        };
        let (lookup, want) = match (name, arg_name) {
            ("contact", "email") => (Lookup::ContactByEmail, &["String", "String!"][..]),
            ("contact", "id") => (Lookup::ContactById, &["ID", "ID!"][..]),
            ("contactsByEmails", "emails") => (Lookup::ContactsByEmails, &["[String!]", "[String!]!"][..]),
            ("contactsByIds", "ids") => (Lookup::ContactsByIds, &["[ID!]", "[ID!]!"][..]),
            _ => return None,
        };
        let arg = match value {
            async_graphql_value::Value::Variable(v) => {
                let def = op.variable_definitions.iter().find(|d| d.node.name.node == *v)?;
                let ok = def.node.default_value.is_none()
                    && def.node.directives.is_empty()
                    && want.contains(&def.node.var_type.node.to_string().as_str());
                ok.then(|| Arg::Variable(v.clone()))?
            }
            v => Arg::Literal(v.clone().into_const()?),
        };
        let fields = contact_fields(&field.selection_set.node)?;
        roots.push(Root { key: field.response_key().node.clone(), lookup, arg, fields });
    }
    // A variable no lookup reads is an error async-graphql reports; a second read is fine.
    let used = |name: &Name| roots.iter().any(|r| matches!(&r.arg, Arg::Variable(v) if v == name));
    op.variable_definitions.iter().all(|d| used(&d.node.name.node)).then_some(roots)
}

/// The fields of a selection set: only plain fields, no directives, each response key once.
fn fields_of(set: &SelectionSet) -> Option<Vec<&Field>> {
    let mut out: Vec<&Field> = Vec::with_capacity(set.items.len());
    for item in &set.items {
        let Selection::Field(Positioned { node: f, .. }) = &item.node else { return None };
        let key = &f.response_key().node;
        if !f.directives.is_empty() || out.iter().any(|o| &o.response_key().node == key) {
            return None;
        }
        out.push(f);
    }
    (!out.is_empty()).then_some(out)
}

fn contact_fields(set: &SelectionSet) -> Option<Vec<(Name, ContactField)>> {
    let mut out = Vec::new();
    for f in fields_of(set)? {
        if !f.arguments.is_empty() {
            return None;
        }
        let plain = f.selection_set.node.items.is_empty();
        let field = match (f.name.node.as_str(), plain) {
            ("__typename", true) => ContactField::Typename,
            ("id", true) => ContactField::Id,
            ("email", true) => ContactField::Email,
            ("name", true) => ContactField::Name,
            ("externalId", true) => ContactField::ExternalId,
            ("ownerId", true) => ContactField::OwnerId,
            ("updatedAt", true) => ContactField::UpdatedAt,
            ("verifiedAt", true) => ContactField::VerifiedAt,
            ("ownerStatus", true) => ContactField::OwnerStatus,
            ("owner", false) => ContactField::Owner(agent_fields(&f.selection_set.node)?),
            _ => return None,
        };
        out.push((f.response_key().node.clone(), field));
    }
    Some(out)
}

fn agent_fields(set: &SelectionSet) -> Option<Vec<(Name, AgentField)>> {
    let mut out = Vec::new();
    for f in fields_of(set)? {
        if !f.arguments.is_empty() || !f.selection_set.node.items.is_empty() {
            return None;
        }
        let field = match f.name.node.as_str() {
            "__typename" => AgentField::Typename,
            "id" => AgentField::Id,
            "email" => AgentField::Email,
            "name" => AgentField::Name,
            "status" => AgentField::Status,
            "role" => AgentField::Role,
            "firstSeenAt" => AgentField::FirstSeenAt,
            "deactivatedAt" => AgentField::DeactivatedAt,
            "departedAt" => AgentField::DepartedAt,
            "inRest" => AgentField::InRest,
            "inScim" => AgentField::InScim,
            "verifiedAt" => AgentField::VerifiedAt,
            _ => return None,
        };
        out.push((f.response_key().node.clone(), field));
    }
    Some(out)
}

impl Root {
    /// The lookup's argument, or `None` when the request's value is not one the plan answers
    /// (null, a wrong type, too many, an id that is not a number).
    fn key_of<'a>(&'a self, vars: Option<&'a serde_json::Value>) -> Option<Key<'a>> {
        let many = matches!(self.lookup, Lookup::ContactsByEmails | Lookup::ContactsByIds);
        let ids = matches!(self.lookup, Lookup::ContactById | Lookup::ContactsByIds);
        let number = |s: &str| !ids || s.parse::<u64>().is_ok();
        let key = match &self.arg {
            Arg::Literal(v) => key_of_literal(v, many)?,
            Arg::Variable(name) => key_of_json(vars?.get(name.as_str())?, many)?,
        };
        let ok = match &key {
            Key::One(s) => number(s),
            Key::Many(v) => v.len() <= BATCH_MAX && v.iter().all(|s| number(s)),
        };
        ok.then_some(key)
    }

    /// As async-graphql counts it: a field is 1 + its children, a batch is its length (at least
    /// 1) times its children, `__typename` is not counted.
    fn complexity(&self, key: &Key<'_>) -> usize {
        let child: usize = self
            .fields
            .iter()
            .map(|(_, f)| match f {
                ContactField::Typename => 0,
                ContactField::Owner(a) => 1 + a.iter().filter(|(_, f)| !matches!(f, AgentField::Typename)).count(),
                _ => 1,
            })
            .sum();
        match key {
            Key::One(_) => 1 + child,
            Key::Many(v) => v.len().max(1) * child,
        }
    }

    fn write(&self, ix: &Index, key: &Key<'_>, out: &mut Vec<u8>) {
        let find = |k: &str| match self.lookup {
            Lookup::ContactByEmail | Lookup::ContactsByEmails => ix.contact_by_email_ref(k),
            Lookup::ContactById | Lookup::ContactsByIds => ix.contact_ref(k.parse().ok()?),
        };
        match key {
            Key::One(k) => self.write_contact(ix, find(k), out),
            Key::Many(keys) => {
                out.push(b'[');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_contact(ix, find(k), out);
                }
                out.push(b']');
            }
        }
    }

    fn write_contact(&self, ix: &Index, c: Option<&ContactView>, out: &mut Vec<u8>) {
        let Some(c) = c else {
            out.extend_from_slice(b"null");
            return;
        };
        // The owner is looked up once, and only when a field reads it.
        let reads_owner =
            self.fields.iter().any(|(_, f)| matches!(f, ContactField::OwnerStatus | ContactField::Owner(_)));
        let owner = if reads_owner { ix.owner_of(c.id) } else { None };
        out.push(b'{');
        for (i, (key, field)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(out, key);
            match field {
                ContactField::Typename => write_str(out, "Contact"),
                ContactField::Id => write_id(out, Some(c.id)),
                ContactField::Email => write_opt(out, c.email.as_deref()),
                ContactField::Name => write_opt(out, c.name.as_deref()),
                ContactField::ExternalId => write_opt(out, c.external_id.as_deref()),
                ContactField::OwnerId => write_id(out, c.owner_id),
                ContactField::UpdatedAt => write_time(out, Some(c.updated_at_ms)),
                ContactField::VerifiedAt => write_time(out, Some(c.verified_at_ms).filter(|t| *t > 0)),
                ContactField::OwnerStatus => match owner {
                    Some(a) => write_status(out, a),
                    None => out.extend_from_slice(b"null"),
                },
                ContactField::Owner(fields) => match owner {
                    Some(a) => write_agent(out, a, fields),
                    None => out.extend_from_slice(b"null"),
                },
            }
        }
        out.push(b'}');
    }
}

fn write_agent(out: &mut Vec<u8>, a: &AgentView, fields: &[(Name, AgentField)]) {
    out.push(b'{');
    for (i, (key, field)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(out, key);
        match field {
            AgentField::Typename => write_str(out, "Agent"),
            AgentField::Id => write_id(out, Some(a.id)),
            AgentField::Email => write_opt(out, a.email.as_deref()),
            AgentField::Name => write_opt(out, a.name.as_deref()),
            AgentField::Status => write_status(out, a),
            AgentField::Role => write_opt(out, a.role.as_deref()),
            AgentField::FirstSeenAt => write_time(out, a.first_seen_ms),
            AgentField::DeactivatedAt => write_time(out, a.deactivated_at_ms),
            AgentField::DepartedAt => write_time(out, a.departed_at_ms),
            AgentField::InRest => out.extend_from_slice(if a.in_rest { b"true" } else { b"false" }),
            AgentField::InScim => out.extend_from_slice(if a.in_scim { b"true" } else { b"false" }),
            AgentField::VerifiedAt => write_time(out, a.verified_at_ms),
        }
    }
    out.push(b'}');
}

fn key_of_literal(v: &Value, many: bool) -> Option<Key<'_>> {
    match (v, many) {
        (Value::String(s), false) => Some(Key::One(s)),
        (Value::List(items), true) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.as_str()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(Key::Many),
        _ => None,
    }
}

fn key_of_json(v: &serde_json::Value, many: bool) -> Option<Key<'_>> {
    match (v, many) {
        (serde_json::Value::String(s), false) => Some(Key::One(s)),
        (serde_json::Value::Array(items), true) => {
            items.iter().map(|i| i.as_str()).collect::<Option<Vec<_>>>().map(Key::Many)
        }
        _ => None,
    }
}

/// A response key: a GraphQL name, which never needs escaping.
fn write_key(out: &mut Vec<u8>, key: &Name) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A Drift id as GraphQL's `ID` writes it: a string of digits.
fn write_id(out: &mut Vec<u8>, id: Option<u64>) {
    match id {
        Some(n) => {
            out.push(b'"');
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn write_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A time as async-graphql writes a `DateTime<Utc>`.
fn write_time(out: &mut Vec<u8>, ms: Option<i64>) {
    match ms.and_then(time).map(|t| t.to_value()) {
        Some(Value::String(s)) => write_str(out, &s),
        _ => out.extend_from_slice(b"null"),
    }
}

fn write_status(out: &mut Vec<u8>, a: &AgentView) {
    let v = async_graphql::resolver_utils::enum_value(AgentStatus::from(a.status));
    let _ = serde_json::to_writer(&mut *out, &v);
}

/// A parsed document and, once async-graphql has answered it without an error, its plan (`None`
/// when it has none).
pub(crate) struct Cached {
    pub doc: ExecutableDocument,
    pub plan: std::sync::OnceLock<Option<Plan>>,
    /// What the document costs (see `cost`), computed once.
    pub cost: std::sync::OnceLock<Result<crate::cost::Cost, String>>,
    /// The access log's view of it (the operation named first, its root fields), computed once.
    pub trail: std::sync::OnceLock<(Option<String>, Option<RootFields>)>,
}

/// An operation's name (as the document names it) and its root fields.
pub(crate) type RootFields = (Option<String>, Vec<String>);

/// Parsed documents by their text (and by SHA-256 for automatic persisted queries): a repeated
/// query is neither parsed nor, when it has a plan, validated again.
pub(crate) struct Documents(parking_lot::Mutex<lru::LruCache<String, std::sync::Arc<Cached>>>);

impl Documents {
    pub(crate) fn new(entries: std::num::NonZeroUsize) -> Documents {
        Documents(parking_lot::Mutex::new(lru::LruCache::new(entries)))
    }

    pub(crate) fn get(&self, key: &str) -> Option<std::sync::Arc<Cached>> {
        self.0.lock().get(key).cloned()
    }

    pub(crate) fn put(&self, key: String, doc: std::sync::Arc<Cached>) {
        self.0.lock().put(key, doc);
    }
}
