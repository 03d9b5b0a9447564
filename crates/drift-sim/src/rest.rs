//! Drift's REST API: contacts, users, conversations and accounts.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::config::{DuplicateEmail, Profile};
use crate::data::{OwnerVal, SimContact};
use crate::gate::drift_error;
use crate::webhooks::Event;
use crate::{now_ms, State};

type S = Arc<State>;

pub(crate) fn routes() -> Router<S> {
    Router::new()
        .route("/contacts", get(list_contacts).post(create_contact))
        .route("/contacts/", get(list_contacts).post(create_contact))
        .route("/contacts/by_email", get(by_email))
        .route("/contacts/{id}", get(get_contact).patch(patch_contact).delete(delete_contact))
        .route("/users", get(users))
        .route("/users/", get(users))
        .route("/users/list", get(users_list))
        .route("/users/{id}", get(get_user))
        .route("/conversations/list", get(conversations))
        .route("/conversations/new", axum::routing::post(new_conversation))
        .route("/accounts", get(accounts))
}

fn query_pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn bad(msg: &str) -> Response {
    drift_error(StatusCode::BAD_REQUEST, "validation_error", msg)
}

fn not_found(msg: &str) -> Response {
    drift_error(StatusCode::NOT_FOUND, "not_found", msg)
}

fn parse_limit(pairs: &[(String, String)], default: usize, max: usize) -> Result<usize, Response> {
    match first(pairs, "limit").or_else(|| first(pairs, "size")) {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(bad(&format!("limit must be a number from 1 to {max}"))),
            Ok(n) => Ok(n.min(max)),
        },
    }
}

/// The cursor is opaque to clients; here it carries the last id served, so inserts and deletes
/// during a listing never make it skip or repeat a contact.
fn encode_cursor(last_id: u64) -> String {
    format!("c1.{last_id:x}")
}

fn decode_cursor(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("c1.")?, 16).ok()
}

async fn list_contacts(AxState(st): AxState<S>, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(&q);
    let limit = match parse_limit(&pairs, 25, 100) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let org = st.org.read();
    let profile = st.cfg.profile;
    if let Some(email) = first(&pairs, "email") {
        let data: Vec<Value> =
            org.contacts_by_email(email).into_iter().take(limit).map(|c| c.to_json(profile)).collect();
        return Json(json!({"data": data})).into_response();
    }
    if first(&pairs, "idType") == Some("external") {
        let ids: Vec<&str> = pairs.iter().filter(|(k, _)| k == "id").map(|(_, v)| v.as_str()).collect();
        let data: Vec<Value> = org
            .contacts
            .values()
            .filter(|c| c.external_id.as_deref().is_some_and(|x| ids.contains(&x)))
            .take(limit)
            .map(|c| c.to_json(profile))
            .collect();
        return Json(json!({"data": data})).into_response();
    }
    if profile == Profile::Drift {
        // Drift's documented API has no listing: an unknown parameter is refused.
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"type": "validation_error", "code": "CONTACT-10",
                "message": "CONTACT-10: Invalid query parameters: listing contacts is not supported"}})),
        )
            .into_response();
    }
    let after = match first(&pairs, "next") {
        None | Some("") => None,
        Some(c) => match decode_cursor(c) {
            Some(id) => Some(id),
            None => return bad("next: invalid cursor"),
        },
    };
    let range = match after {
        Some(id) => org.contacts.range(id + 1..),
        None => org.contacts.range(..),
    };
    let page: Vec<&SimContact> = range.take(limit + 1).map(|(_, c)| c).collect();
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let data: Vec<Value> = page.iter().map(|c| c.to_json(profile)).collect();
    let mut body = json!({"data": data});
    if more {
        if let Some(last) = page.last() {
            body["next"] = json!(encode_cursor(last.id));
        }
    }
    Json(body).into_response()
}

async fn by_email(AxState(st): AxState<S>, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(&q);
    let Some(email) = first(&pairs, "email") else {
        return bad("email is required");
    };
    let org = st.org.read();
    let data: Vec<Value> = org.contacts_by_email(email).into_iter().map(|c| c.to_json(st.cfg.profile)).collect();
    Json(json!({"data": data})).into_response()
}

fn parse_id(s: &str) -> Option<u64> {
    s.parse().ok()
}

async fn get_contact(AxState(st): AxState<S>, Path(id): Path<String>) -> Response {
    let Some(id) = parse_id(&id) else {
        return bad("contact id must be a number");
    };
    match st.org.read().contacts.get(&id) {
        Some(c) => Json(json!({"data": c.to_json(st.cfg.profile)})).into_response(),
        None => not_found("Contact not found"),
    }
}

fn body_attrs(body: &Value) -> Option<&Map<String, Value>> {
    body.get("attributes").and_then(Value::as_object).or_else(|| body.as_object())
}

/// Applies attributes to a contact; returns the old and new owner values when the owner changed.
fn apply_attrs(c: &mut SimContact, attrs: &Map<String, Value>) -> Result<Option<(Value, Value)>, String> {
    let mut owner_diff = None;
    for (k, v) in attrs {
        match k.as_str() {
            "email" => c.email = v.as_str().ok_or("email must be a string")?.to_string(),
            "name" => c.name = v.as_str().unwrap_or_default().to_string(),
            "phone" => c.phone = v.as_str().map(str::to_string),
            "company" => c.company = v.as_str().map(str::to_string),
            "title" => c.title = v.as_str().map(str::to_string),
            "externalId" | "external_id" => c.external_id = v.as_str().map(str::to_string),
            "ownerId" | "owner_id" => {
                let new = match v {
                    Value::Null => None,
                    Value::Number(n) => Some(OwnerVal::Num(n.as_u64().ok_or("ownerId must be a user id")?)),
                    Value::String(s) if s.parse::<u64>().is_ok() => Some(OwnerVal::Str(s.clone())),
                    _ => return Err("ownerId must be a user id".into()),
                };
                let old = c.owner.as_ref().and_then(OwnerVal::id);
                if old != new.as_ref().and_then(OwnerVal::id) {
                    owner_diff = Some((json!(old), json!(new.as_ref().and_then(OwnerVal::id))));
                }
                c.owner = new;
            }
            "id" | "createdAt" | "updatedAt" => {}
            other => {
                c.custom.insert(other.to_string(), v.clone());
            }
        }
    }
    Ok(owner_diff)
}

async fn create_contact(AxState(st): AxState<S>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return bad("body must be JSON");
    };
    let Some(attrs) = body_attrs(&body).cloned() else {
        return bad("attributes must be an object");
    };
    let Some(email) = attrs.get("email").and_then(Value::as_str).map(str::to_string) else {
        return bad("email is required");
    };
    let profile = st.cfg.profile;
    let now = now_ms();
    let mut org = st.org.write();
    let existing = org.contacts_by_email(&email).first().map(|c| c.id);
    if let Some(id) = existing {
        if st.cfg.duplicate_email == DuplicateEmail::Conflict && !attrs.contains_key("externalId") {
            return drift_error(StatusCode::CONFLICT, "conflict", "A contact with this email already exists");
        }
        let Some(c) = org.contacts.get_mut(&id) else {
            return not_found("Contact not found");
        };
        if let Err(e) = apply_attrs(c, &attrs) {
            return bad(&e);
        }
        c.updated_at = now.max(c.updated_at + 1);
        let out = c.to_json(profile);
        drop(org);
        st.emit(Event::ContactUpdated { contact_id: id, timestamp: now, diff: vec![] });
        return Json(json!({"data": out})).into_response();
    }
    let mut c = org.new_contact(&email, now);
    if let Err(e) = apply_attrs(&mut c, &attrs) {
        return bad(&e);
    }
    let out = c.to_json(profile);
    org.insert_contact(c);
    drop(org);
    // Created through the API, not in a chat: no conversation, so discovery cannot find it.
    st.emit(Event::ContactIdentified(out.clone()));
    (StatusCode::OK, Json(json!({"data": out}))).into_response()
}

/// `POST /conversations/new {"email": ..., "message": {"body": ...}}`: a conversation with the
/// contact of that email, created if there is none.
async fn new_conversation(AxState(st): AxState<S>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return bad("body must be JSON");
    };
    let Some(email) = body.get("email").and_then(Value::as_str).map(str::to_string) else {
        return bad("email is required");
    };
    let now = now_ms();
    let mut org = st.org.write();
    let existing = org.contacts_by_email(&email).first().map(|c| c.id);
    let (contact_id, created) = match existing {
        Some(id) => (id, None),
        None => {
            let c = org.new_contact(&email, now);
            let id = c.id;
            let out = c.to_json(st.cfg.profile);
            org.insert_contact(c);
            (id, Some(out))
        }
    };
    let conv = org.add_conversation(contact_id, now, now);
    drop(org);
    if let Some(c) = created {
        st.emit(Event::ContactIdentified(c));
    }
    st.emit(Event::NewConversation { conversation_id: conv, contact_id, timestamp: now });
    Json(json!({"data": {"id": conv, "contactId": contact_id, "status": "open", "createdAt": now}})).into_response()
}

async fn patch_contact(AxState(st): AxState<S>, Path(id): Path<String>, body: Option<Json<Value>>) -> Response {
    let Some(id) = parse_id(&id) else {
        return bad("contact id must be a number");
    };
    let Some(Json(body)) = body else {
        return bad("body must be JSON");
    };
    let Some(attrs) = body_attrs(&body).cloned() else {
        return bad("attributes must be an object");
    };
    let now = now_ms();
    let mut org = st.org.write();
    let Some(c) = org.contacts.get_mut(&id) else {
        return not_found("Contact not found");
    };
    let old_email = c.email.clone();
    let diff = match apply_attrs(c, &attrs) {
        Ok(d) => d,
        Err(e) => return bad(&e),
    };
    c.updated_at = now.max(c.updated_at + 1);
    let (new_email, updated_at) = (c.email.clone(), c.updated_at);
    let out = c.to_json(st.cfg.profile);
    if new_email != old_email {
        org.unindex_email(&old_email, id);
        org.index_email(&new_email, id);
    }
    drop(org);
    let diff =
        diff.map(|(p, u)| vec![json!({"name": "attributes.ownerId", "previous": p, "updated": u})]).unwrap_or_default();
    st.emit(Event::ContactUpdated { contact_id: id, timestamp: updated_at, diff });
    Json(json!({"data": out})).into_response()
}

async fn delete_contact(AxState(st): AxState<S>, Path(id): Path<String>) -> Response {
    let Some(id) = parse_id(&id) else {
        return bad("contact id must be a number");
    };
    let mut org = st.org.write();
    match org.contacts.remove(&id) {
        Some(c) => {
            org.unindex_email(&c.email, id);
            Json(json!({"data": {"id": id, "deleted": true}})).into_response()
        }
        None => not_found("Contact not found"),
    }
}

async fn users(AxState(st): AxState<S>, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(&q);
    let ids: Vec<&str> = pairs.iter().filter(|(k, _)| k == "userId").map(|(_, v)| v.as_str()).collect();
    if ids.is_empty() {
        return users_list(AxState(st)).await;
    }
    if ids.len() > 20 {
        return bad("at most 20 userId values");
    }
    let org = st.org.read();
    let mut map = Map::new();
    for s in ids {
        if let Some(u) = parse_id(s).and_then(|id| org.users.get(&id)) {
            map.insert(u.id.to_string(), u.to_rest_json(st.cfg.org_id));
        }
    }
    Json(json!({"data": map})).into_response()
}

async fn users_list(AxState(st): AxState<S>) -> Response {
    let org = st.org.read();
    let data: Vec<Value> = org.users.values().map(|u| u.to_rest_json(st.cfg.org_id)).collect();
    Json(json!({"data": data})).into_response()
}

async fn get_user(AxState(st): AxState<S>, Path(id): Path<String>) -> Response {
    let Some(id) = parse_id(&id) else {
        return bad("user id must be a number");
    };
    match st.org.read().users.get(&id) {
        Some(u) => Json(json!({"data": u.to_rest_json(st.cfg.org_id)})).into_response(),
        None => not_found("User not found"),
    }
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}

/// Conversations newest `updatedAt` first. The page token names the last conversation served,
/// so a conversation added during the walk never shifts the pages.
async fn conversations(AxState(st): AxState<S>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(&q);
    let limit = match parse_limit(&pairs, 25, 100) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let after = match first(&pairs, "page_token") {
        None | Some("") => None,
        Some(t) => {
            let parsed = t.split_once('.').and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<u64>().ok()?)));
            match parsed {
                Some(k) => Some(k),
                None => return bad("page_token: invalid"),
            }
        }
    };
    let org = st.org.read();
    let iter: Box<dyn Iterator<Item = _>> = match after {
        Some(k) => Box::new(org.conversations.range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))),
        None => Box::new(org.conversations.iter()),
    };
    let page: Vec<_> = iter.take(limit + 1).collect();
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let data: Vec<Value> = page.iter().map(|(_, c)| c.to_json()).collect();
    let mut links = Map::new();
    if more {
        if let Some(((a, b), _)) = page.last() {
            links.insert(
                "next".into(),
                json!(format!("{}/conversations/list?limit={limit}&page_token={a}.{b}", base_url(&headers))),
            );
        }
    }
    Json(json!({"data": data, "links": links})).into_response()
}

async fn accounts(AxState(st): AxState<S>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(&q);
    // Drift documents a default of 10 and a maximum of 65.
    let size = match first(&pairs, "size").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if n > 0 => n.min(65),
        _ => return bad("size must be a positive number"),
    };
    let index = match first(&pairs, "index").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        _ => return bad("index must be a number"),
    };
    let org = st.org.read();
    let total = org.accounts.len();
    let page: Vec<Value> = org.accounts.iter().skip(index).take(size).map(|a| a.to_json()).collect();
    let mut data = json!({"total": total, "accounts": page});
    if index + size < total {
        data["next"] = json!(format!("{}/accounts?index={}&size={size}", base_url(&headers), index + size));
    }
    Json(json!({"data": data})).into_response()
}
