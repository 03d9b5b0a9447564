//! The records idgraph crawls from Drift, in one normalised shape.
//!
//! This crate is the vocabulary shared by the crawler (which produces records), the graph (which
//! stores and links them) and the simulator (which serves them). It holds data and the tolerant
//! parsing of Drift's two wire shapes; it does no I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A secret string (a token, a client secret): prints as `***` in `Debug` and `Display`, so it
/// never reaches a log line or an error. The one type for every secret idgraph holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A Drift contact (an end user), normalised from either wire shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Drift user (agent) id that owns the contact, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub created_at: i64,
    /// Epoch milliseconds; the record's version for ordering late updates.
    #[serde(default)]
    pub updated_at: i64,
    /// Every other attribute, kept as it came.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// A Drift user (an agent or a bot) as the REST `/users` API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub bot: bool,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

/// A SCIM 2.0 user: the identity provider's view of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScimUser {
    /// The REST user id (SCIM carries it as a string).
    pub id: u64,
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
}

/// A Drift account (a company); its `ownerId` is Drift's one documented ownership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<u64>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub updated_at: i64,
}

/// One crawled record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Contact(Contact),
    User(User),
    ScimUser(ScimUser),
    Account(Account),
}

/// Parses a request rate such as `200/min`, `50/s`, `1000/20s` or `3600/h` into
/// `(requests, window)`. Shared by the crawler's budget and the simulator's limiter.
pub fn parse_rate(s: &str) -> Result<(u32, std::time::Duration), String> {
    let (n, unit) = s.split_once('/').ok_or_else(|| format!("rate {s:?}: expected N/UNIT, e.g. 200/min or 50/s"))?;
    let requests: u32 = n.trim().parse().map_err(|_| format!("rate {s:?}: {n:?} is not a number"))?;
    if requests == 0 {
        return Err(format!("rate {s:?}: must allow at least one request"));
    }
    let unit = unit.trim();
    let digits: String = unit.chars().take_while(char::is_ascii_digit).collect();
    let mult: u64 = if digits.is_empty() { 1 } else { digits.parse().map_err(|_| format!("rate {s:?}: bad unit"))? };
    let base = match &unit[digits.len()..] {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        other => return Err(format!("rate {s:?}: unknown unit {other:?} (s, min or h)")),
    };
    Ok((requests, std::time::Duration::from_secs(base * mult.max(1))))
}

/// Normalises an email for identity matching: trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// Why one record of a page could not be read. The rest of the page is kept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// Names the record's keys, never its values: a record carries personal data.
    #[error("record has no usable id (its keys: {0})")]
    NoId(String),
    #[error("record {id}: owner id is not a user id: {value}")]
    BadOwner { id: String, value: String },
    #[error("record is not an object")]
    NotAnObject,
}

/// Reads an id that may be a number or a numeric string.
pub fn id_from_value(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn str_field(obj: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| obj.get(*k)).and_then(|v| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn i64_field(obj: &Map<String, Value>, keys: &[&str]) -> Option<i64> {
    keys.iter().find_map(|k| obj.get(*k)).and_then(|v| match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

/// Reads an owner id: absent or null is `None`; a number or numeric string is the id;
/// anything else is a data error naming the record.
fn owner_field(id: &str, v: Option<&Value>) -> Result<Option<u64>, RecordError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(other) => id_from_value(other)
            .map(Some)
            .ok_or_else(|| RecordError::BadOwner { id: id.to_string(), value: other.to_string() }),
    }
}

const CONTACT_KNOWN: &[&str] = &[
    "id",
    "email",
    "name",
    "ownerId",
    "owner_id",
    "externalId",
    "external_id",
    "createdAt",
    "created_at",
    "updatedAt",
    "updated_at",
    "last_updated",
    "attributes",
];

impl Contact {
    /// Parses a contact in either shape: the brief's (fields at top level) or Drift's documented
    /// one (`id`, `createdAt` and `attributes`). The owner id is read from top-level `ownerId`,
    /// then `attributes.ownerId`, then `attributes.owner_id`.
    pub fn from_json(v: &Value) -> Result<Contact, RecordError> {
        let obj = v.as_object().ok_or(RecordError::NotAnObject)?;
        let id = obj.get("id").and_then(id_from_value).ok_or_else(|| RecordError::NoId(keys_of(obj)))?;
        let empty = Map::new();
        let attrs = obj.get("attributes").and_then(Value::as_object).unwrap_or(&empty);
        let pick = |keys: &[&str]| str_field(obj, keys).or_else(|| str_field(attrs, keys));
        let ids = id.to_string();
        let owner = match obj.get("ownerId") {
            Some(v) if !v.is_null() => owner_field(&ids, Some(v))?,
            _ => match attrs.get("ownerId") {
                Some(v) if !v.is_null() => owner_field(&ids, Some(v))?,
                _ => owner_field(&ids, attrs.get("owner_id"))?,
            },
        };
        let created_at = i64_field(obj, &["createdAt", "created_at"])
            .or_else(|| i64_field(attrs, &["createdAt", "created_at", "start_date"]))
            .unwrap_or(0);
        let updated_at = i64_field(obj, &["updatedAt", "updated_at"])
            .or_else(|| i64_field(attrs, &["updatedAt", "updated_at", "last_updated", "lastUpdated"]))
            .unwrap_or(created_at);
        let mut extra = Map::new();
        for (k, v) in obj.iter().chain(attrs.iter()) {
            if !CONTACT_KNOWN.contains(&k.as_str()) && !v.is_null() {
                extra.insert(k.clone(), v.clone());
            }
        }
        Ok(Contact {
            id,
            email: pick(&["email", "Email"]),
            name: pick(&["name", "Name", "display_name"]),
            owner_id: owner,
            external_id: pick(&["externalId", "external_id"]),
            created_at,
            updated_at,
            extra,
        })
    }
}

impl User {
    pub fn from_json(v: &Value) -> Result<User, RecordError> {
        let obj = v.as_object().ok_or(RecordError::NotAnObject)?;
        let id = obj.get("id").and_then(id_from_value).ok_or_else(|| RecordError::NoId(keys_of(obj)))?;
        Ok(User {
            id,
            email: str_field(obj, &["email"]),
            name: str_field(obj, &["name", "alias"]),
            role: str_field(obj, &["role"]),
            bot: obj.get("bot").and_then(Value::as_bool).unwrap_or(false),
            created_at: i64_field(obj, &["createdAt"]).unwrap_or(0),
            updated_at: i64_field(obj, &["updatedAt"]).unwrap_or(0),
        })
    }
}

impl ScimUser {
    pub fn from_json(v: &Value) -> Result<ScimUser, RecordError> {
        let obj = v.as_object().ok_or(RecordError::NotAnObject)?;
        let id = obj.get("id").and_then(id_from_value).ok_or_else(|| RecordError::NoId(keys_of(obj)))?;
        let user_name = str_field(obj, &["userName"]).unwrap_or_default();
        let display_name = str_field(obj, &["displayName"])
            .or_else(|| obj.get("name").and_then(Value::as_object).and_then(|n| str_field(n, &["formatted"])));
        let emails = obj
            .get("emails")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|e| e.get("value").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default();
        let active = match obj.get("active") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => !s.eq_ignore_ascii_case("false"),
            _ => true,
        };
        Ok(ScimUser { id, user_name, display_name, active, emails })
    }
}

impl Account {
    pub fn from_json(v: &Value) -> Result<Account, RecordError> {
        let obj = v.as_object().ok_or(RecordError::NotAnObject)?;
        let id = str_field(obj, &["accountId", "id"]).ok_or_else(|| RecordError::NoId(keys_of(obj)))?;
        let owner_id = owner_field(&id, obj.get("ownerId"))?;
        Ok(Account {
            name: str_field(obj, &["name"]),
            domain: str_field(obj, &["domain"]),
            owner_id,
            deleted: obj.get("deleted").and_then(Value::as_bool).unwrap_or(false),
            updated_at: i64_field(obj, &["updateDateTime", "updatedAt"]).unwrap_or(0),
            id,
        })
    }
}

fn keys_of(obj: &Map<String, Value>) -> String {
    let keys: Vec<&str> = obj.keys().map(String::as_str).take(12).collect();
    keys.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contact_both_shapes_and_owner_places() {
        let seed = json!({"id": 7, "email": "a@x.io", "name": "A", "ownerId": 42, "updatedAt": 5, "company": "X"});
        let c = Contact::from_json(&seed).unwrap();
        assert_eq!((c.id, c.owner_id, c.updated_at), (7, Some(42), 5));
        assert_eq!(c.extra.get("company"), Some(&json!("X")));

        let drift = json!({"id": 8, "createdAt": 3, "attributes": {"email": "b@x.io", "ownerId": "43", "tags": []}});
        let c = Contact::from_json(&drift).unwrap();
        assert_eq!((c.email.as_deref(), c.owner_id), (Some("b@x.io"), Some(43)));

        let snake = json!({"id": "9", "attributes": {"owner_id": 44}});
        assert_eq!(Contact::from_json(&snake).unwrap().owner_id, Some(44));

        let none = json!({"id": 10, "ownerId": null});
        assert_eq!(Contact::from_json(&none).unwrap().owner_id, None);

        let bad = json!({"id": 11, "ownerId": {"x": 1}});
        assert!(matches!(Contact::from_json(&bad), Err(RecordError::BadOwner { .. })));
        let err = Contact::from_json(&json!({"email": "secret@person.io"})).unwrap_err();
        assert!(matches!(err, RecordError::NoId(_)));
        assert!(!err.to_string().contains("secret@person.io"), "no personal data in errors: {err}");
    }

    #[test]
    fn scim_user_parses_drift_example() {
        let v = json!({"id": "12", "userName": "a@b.c", "active": false,
            "emails": [{"value": "a@b.c", "primary": true}], "name": {"formatted": "A B"}});
        let u = ScimUser::from_json(&v).unwrap();
        assert_eq!((u.id, u.active, u.display_name.as_deref()), (12, false, Some("A B")));
    }
}

/// What a Drift webhook delivery announces: that a contact was made or changed. Drift's webhooks
/// carry a static token and no signature, so an announcement is a hint, never evidence: the one
/// who acts on it reads the contact from Drift (`GET /contacts/{id}`) and records what Drift says.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookHint {
    pub contact_id: u64,
    /// The delivery's own time, where it gives one (`timestamp`, `createdAt`, `updatedAt`), in
    /// milliseconds: used only to refuse a delivery from the future, never to order records.
    pub at_ms: Option<i64>,
    /// The event's `type`.
    pub kind: &'static str,
}

/// Reads a webhook delivery: the contact it names, for `contact_identified` (the contact),
/// `contact_updated` (`endUserId`) and `new_conversation` (`contactId`); `None` for events that
/// name no contact idgraph keeps.
pub fn webhook_hint(body: &Value) -> Result<Option<WebhookHint>, String> {
    let kind = body.get("type").and_then(Value::as_str).ok_or("no type")?;
    let data = body.get("data").ok_or("no data")?;
    let time = |keys: &[&str]| keys.iter().find_map(|k| data.get(*k).and_then(Value::as_i64));
    let (kind, id, at_ms) = match kind {
        "contact_identified" => {
            let id = data
                .get("id")
                .or_else(|| data.get("attributes").and_then(|a| a.get("id")))
                .and_then(id_from_value)
                .ok_or("no contact id")?;
            ("contact_identified", id, time(&["updatedAt", "updated_at", "createdAt"]))
        }
        "contact_updated" => {
            let id = data.get("endUserId").and_then(id_from_value).ok_or("no endUserId")?;
            ("contact_updated", id, Some(data.get("timestamp").and_then(Value::as_i64).ok_or("no timestamp")?))
        }
        "new_conversation" => match data.get("contactId").and_then(id_from_value) {
            Some(id) => ("new_conversation", id, time(&["createdAt", "updatedAt"])),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(WebhookHint { contact_id: id, at_ms, kind }))
}

#[cfg(test)]
mod webhook_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deliveries_name_the_contact_to_read() {
        let v = json!({"type": "contact_updated", "data": {"endUserId": 5, "timestamp": 9,
            "diff": [{"name": "attributes.ownerId", "previous": 1, "updated": "2"}]}});
        let h = webhook_hint(&v).unwrap().unwrap();
        assert_eq!((h.contact_id, h.at_ms, h.kind), (5, Some(9), "contact_updated"));
        let v = json!({"type": "contact_identified", "data": {"id": "7", "attributes": {"email": "a@b.c"}}});
        assert_eq!(webhook_hint(&v).unwrap().unwrap().contact_id, 7);
        let v = json!({"type": "new_conversation", "data": {"id": 1, "contactId": 8, "createdAt": 3}});
        assert_eq!(webhook_hint(&v).unwrap().unwrap().contact_id, 8);
        let other = json!({"type": "new_message", "data": {}});
        assert_eq!(webhook_hint(&other).unwrap(), None);
        assert!(webhook_hint(&json!({"data": {}})).is_err());
        assert!(webhook_hint(&json!({"type": "contact_updated", "data": {"endUserId": 5}})).is_err());
    }
}
