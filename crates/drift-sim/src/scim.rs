//! SCIM 2.0 (RFC 7643/7644) Users, at `/scim/v2` (the brief) and `/scim` (Drift's docs).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::config::DeprovisionPolicy;
use crate::data::SimUser;
use crate::gate::scim_error;
use crate::{now_ms, State};

type S = Arc<State>;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const COUNT_MAX: usize = 100;

pub(crate) fn routes() -> Router<S> {
    let mut r = Router::new();
    for base in ["/scim/v2", "/scim"] {
        r = r
            .route(&format!("{base}/Users"), get(list).post(create))
            .route(&format!("{base}/Users/{{id}}"), get(get_one).put(replace).patch(patch).delete(delete))
            .route(&format!("{base}/Users/.search"), post(search))
            .route(&format!("{base}/.search"), post(search))
            .route(&format!("{base}/ServiceProviderConfig"), get(spc))
            .route(&format!("{base}/ResourceTypes"), get(resource_types))
            .route(&format!("{base}/ResourceTypes/{{id}}"), get(resource_type))
            .route(&format!("{base}/Schemas"), get(schemas))
            .route(&format!("{base}/Schemas/{{id}}"), get(schema))
            .route(&format!("{base}/{{*rest}}"), any(unknown));
    }
    r
}

fn scim_json(status: StatusCode, v: Value) -> Response {
    let mut r = (status, Json(v)).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/scim+json"));
    r
}

/// The RFC basics: `ATTR eq VALUE`, with `userName`, `emails.value`, `externalId`, `id`, `active`.
fn parse_filter(f: &str) -> Result<(String, String), String> {
    let f = f.trim();
    let mut it = f.splitn(3, char::is_whitespace);
    let (Some(attr), Some(op), Some(val)) = (it.next(), it.next(), it.next()) else {
        return Err(format!("unsupported filter {f:?}"));
    };
    if !op.eq_ignore_ascii_case("eq") {
        return Err(format!("unsupported operator {op:?}: only eq"));
    }
    let val = val.trim();
    let val = val.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(val);
    let attr = attr.to_string();
    let known = ["userName", "emails.value", "emails", "externalId", "id", "active"];
    if !known.iter().any(|k| k.eq_ignore_ascii_case(&attr)) {
        return Err(format!("unsupported filter attribute {attr:?}"));
    }
    Ok((attr, val.to_string()))
}

fn matches(u: &SimUser, attr: &str, val: &str) -> bool {
    match attr.to_ascii_lowercase().as_str() {
        // userName and emails are case-insensitive (caseExact false in RFC 7643).
        "username" | "emails.value" | "emails" => u.email.eq_ignore_ascii_case(val),
        "externalid" => u.external_id.as_deref() == Some(val),
        "id" => u.id.to_string() == val,
        "active" => val.eq_ignore_ascii_case(if u.active { "true" } else { "false" }),
        _ => false,
    }
}

/// A search: from the query string (GET /Users) or from a SearchRequest body (POST /Users/.search).
struct Search {
    start: usize,
    count: usize,
    filter: Option<(String, String)>,
    attributes: Vec<String>,
    excluded: Vec<String>,
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect()
}

impl Search {
    fn from_pairs(get: impl Fn(&str) -> Option<String>) -> Result<Search, Response> {
        let start = match get("startIndex").map(|s| s.parse::<i64>()) {
            None => 1,
            Some(Ok(n)) => n.max(1) as usize,
            Some(Err(_)) => {
                return Err(scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "startIndex must be a number"))
            }
        };
        let count = match get("count").map(|s| s.parse::<i64>()) {
            None => COUNT_MAX,
            Some(Ok(n)) => n.clamp(0, COUNT_MAX as i64) as usize,
            Some(Err(_)) => {
                return Err(scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "count must be a number"))
            }
        };
        let filter = match get("filter").map(|f| parse_filter(&f)) {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => return Err(scim_error(StatusCode::BAD_REQUEST, Some("invalidFilter"), &e)),
        };
        Ok(Search {
            start,
            count,
            filter,
            attributes: get("attributes").map(|a| split_list(&a)).unwrap_or_default(),
            excluded: get("excludedAttributes").map(|a| split_list(&a)).unwrap_or_default(),
        })
    }
}

/// Applies `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) to a resource: `id`,
/// `schemas` and `meta` are always returned.
fn project(mut v: Value, attributes: &[String], excluded: &[String]) -> Value {
    let Some(obj) = v.as_object_mut() else { return v };
    let top = |a: &String| {
        let a = a.rsplit(':').next().unwrap_or(a);
        a.split('.').next().unwrap_or(a).to_ascii_lowercase()
    };
    if !attributes.is_empty() {
        let keep: Vec<String> = attributes.iter().map(top).collect();
        obj.retain(|k, _| ["id", "schemas", "meta"].contains(&k.as_str()) || keep.contains(&k.to_ascii_lowercase()));
    } else if !excluded.is_empty() {
        let drop: Vec<String> = excluded.iter().map(top).collect();
        obj.retain(|k, _| ["id", "schemas"].contains(&k.as_str()) || !drop.contains(&k.to_ascii_lowercase()));
    }
    v
}

fn run_search(st: &State, q: Search) -> Response {
    let org = st.org.read();
    let all: Vec<&SimUser> =
        org.users.values().filter(|u| q.filter.as_ref().is_none_or(|(a, v)| matches(u, a, v))).collect();
    let page: Vec<Value> = all
        .iter()
        .skip(q.start - 1)
        .take(q.count)
        .map(|u| project(u.to_scim_json(), &q.attributes, &q.excluded))
        .collect();
    scim_json(
        StatusCode::OK,
        json!({"schemas": [LIST_SCHEMA], "totalResults": all.len(), "startIndex": q.start,
               "itemsPerPage": page.len(), "Resources": page}),
    )
}

fn query_pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

async fn list(AxState(st): AxState<S>, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(&q);
    match Search::from_pairs(|k| pairs.iter().find(|(a, _)| a.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone())) {
        Ok(s) => run_search(&st, s),
        Err(r) => r,
    }
}

async fn search(AxState(st): AxState<S>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "body must be a SearchRequest");
    };
    let get = |k: &str| match body.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
        _ => None,
    };
    match Search::from_pairs(get) {
        Ok(s) => run_search(&st, s),
        Err(r) => r,
    }
}

fn find(st: &State, id: &str) -> Option<u64> {
    let id: u64 = id.parse().ok()?;
    st.org.read().users.contains_key(&id).then_some(id)
}

async fn get_one(AxState(st): AxState<S>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(&q);
    let get =
        |k: &str| pairs.iter().find(|(a, _)| a.eq_ignore_ascii_case(k)).map(|(_, v)| split_list(v)).unwrap_or_default();
    let org = st.org.read();
    match id.parse::<u64>().ok().and_then(|id| org.users.get(&id)) {
        Some(u) => scim_json(StatusCode::OK, project(u.to_scim_json(), &get("attributes"), &get("excludedAttributes"))),
        None => scim_error(StatusCode::NOT_FOUND, None, &format!("User {id} not found")),
    }
}

/// Attributes the simulator derives itself and never takes from a client.
const READ_ONLY: &[&str] = &["id", "meta", "schemas"];
/// Attributes kept in typed fields (and shown from them).
const TYPED: &[&str] = &["userName", "displayName", "active", "isActive", "externalId"];

/// Sets the fields of a full or partial SCIM user; every other attribute is kept as given.
fn apply_user(u: &mut SimUser, v: &Value) -> Result<(), String> {
    let Some(obj) = v.as_object() else { return Err("a user must be an object".into()) };
    if let Some(n) = obj.get("userName") {
        u.email = n.as_str().ok_or("userName must be a string")?.to_string();
    }
    if let Some(n) = obj.get("displayName").and_then(Value::as_str) {
        u.name = n.to_string();
    }
    if let Some(n) = obj.get("name") {
        if let Some(g) = n.get("givenName").and_then(Value::as_str) {
            u.given_name = g.to_string();
        }
        if let Some(f) = n.get("familyName").and_then(Value::as_str) {
            u.family_name = f.to_string();
        }
    }
    match obj.get("externalId") {
        Some(Value::String(x)) => u.external_id = Some(x.clone()),
        Some(Value::Null) => u.external_id = None,
        _ => {}
    }
    if let Some(roles) = obj.get("roles").and_then(Value::as_array) {
        let admin = roles
            .iter()
            .any(|r| r.get("value").and_then(Value::as_str).is_some_and(|s| s.eq_ignore_ascii_case("admin")));
        u.role = if admin { "admin" } else { "agent" }.into();
    }
    for key in ["active", "isActive"] {
        if let Some(a) = obj.get(key) {
            u.active = match a {
                Value::Bool(b) => *b,
                Value::String(s) => !s.eq_ignore_ascii_case("false"),
                _ => return Err(format!("{key} must be a boolean")),
            };
        }
    }
    for (k, x) in obj {
        if !READ_ONLY.contains(&k.as_str()) && !TYPED.contains(&k.as_str()) {
            u.scim_attrs.insert(k.clone(), x.clone());
        }
    }
    Ok(())
}

/// Applies one PatchOp operation to a user's JSON document (RFC 7644 §3.5.2): paths `attr` and
/// `attr.sub`; `add` appends to multi-valued attributes.
fn patch_doc(
    doc: &mut serde_json::Map<String, Value>,
    op: &str,
    path: Option<&str>,
    value: Value,
) -> Result<(), String> {
    let Some(path) = path else {
        let Value::Object(m) = value else { return Err("an operation without a path needs an object value".into()) };
        for (k, v) in m {
            patch_doc(doc, op, Some(&k), v)?;
        }
        return Ok(());
    };
    if path.contains('[') {
        return Err(format!("value filters in paths are not supported: {path}"));
    }
    let path = path.rsplit_once(':').map_or(path, |(_, a)| a);
    let (attr, sub) = match path.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (path, None),
    };
    let key = doc.keys().find(|k| k.eq_ignore_ascii_case(attr)).cloned().unwrap_or_else(|| attr.to_string());
    if READ_ONLY.contains(&key.as_str()) {
        return Err(format!("{key} is read-only"));
    }
    match (op, sub) {
        ("remove", None) => {
            doc.remove(&key);
        }
        ("remove", Some(s)) => {
            if let Some(Value::Object(o)) = doc.get_mut(&key) {
                o.remove(s);
            }
        }
        (_, Some(s)) => {
            let entry = doc.entry(key).or_insert_with(|| json!({}));
            match entry {
                Value::Object(o) => {
                    o.insert(s.to_string(), value);
                }
                _ => return Err(format!("{attr} has no sub-attribute {s}")),
            }
        }
        ("add", None) => match (doc.get_mut(&key), value) {
            (Some(Value::Array(existing)), Value::Array(new)) => {
                for v in new {
                    if !existing.contains(&v) {
                        existing.push(v);
                    }
                }
            }
            (Some(Value::Object(existing)), Value::Object(new)) => existing.extend(new),
            (_, v) => {
                doc.insert(key, v);
            }
        },
        (_, None) => {
            doc.insert(key, value);
        }
    }
    Ok(())
}

fn unique(st: &State, user_name: &str, except: Option<u64>) -> bool {
    !st.org.read().users.values().any(|u| Some(u.id) != except && u.email.eq_ignore_ascii_case(user_name))
}

async fn create(AxState(st): AxState<S>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "body must be JSON");
    };
    let (Some(user_name), Some(_)) =
        (body.get("userName").and_then(Value::as_str), body.get("displayName").and_then(Value::as_str))
    else {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "userName and displayName are required");
    };
    if !unique(&st, user_name, None) {
        return scim_error(StatusCode::CONFLICT, Some("uniqueness"), "userName is already in use");
    }
    let now = now_ms();
    let mut org = st.org.write();
    let id = org.next_user_id;
    org.next_user_id += 1;
    let mut u = SimUser {
        id,
        name: String::new(),
        given_name: String::new(),
        family_name: String::new(),
        email: String::new(),
        role: "agent".into(),
        bot: false,
        active: true,
        external_id: None,
        created_at: now,
        updated_at: now,
        scim_attrs: serde_json::Map::new(),
        scim_managed: true,
        active_unset: false,
    };
    if let Err(e) = apply_user(&mut u, &body) {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &e);
    }
    let out = u.to_scim_json();
    org.users.insert(id, u);
    let mut r = scim_json(StatusCode::CREATED, out);
    if let Ok(loc) = HeaderValue::from_str(&format!("/scim/v2/Users/{id}")) {
        r.headers_mut().insert("location", loc);
    }
    r
}

/// Whether a PUT or PATCH body sets `active` (or Drift's `isActive`) to false: only such a
/// request deprovisions. A PATCH of anything else (a `displayName`) leaves the user be, even one
/// created inactive.
fn sets_inactive(body: &Value) -> bool {
    let falsy =
        |v: Option<&Value>| v.is_some_and(|v| v == &json!(false) || v == &json!("false") || v == &json!("False"));
    let in_object = |v: &Value| falsy(v.get("active")) || falsy(v.get("isActive"));
    if in_object(body) {
        return true;
    }
    body.get("Operations").and_then(Value::as_array).is_some_and(|ops| {
        ops.iter().any(|op| {
            let value = op.get("value").unwrap_or(&Value::Null);
            match op.get("path").and_then(Value::as_str) {
                Some(p) => {
                    (p.eq_ignore_ascii_case("active") || p.eq_ignore_ascii_case("isActive")) && falsy(Some(value))
                }
                None => in_object(value),
            }
        })
    })
}

/// Stores a changed user, deprovisioning it when the request made it inactive (as the policy
/// says).
fn store(st: &State, u: SimUser, deactivates: bool) -> Response {
    let mut org = st.org.write();
    if !u.active && deactivates && st.cfg.deprovision == DeprovisionPolicy::Delete {
        org.users.remove(&u.id);
        // Drift deletes the user; SCIM answers as for a successful update of what was sent.
        let mut out = u.to_scim_json();
        out["active"] = json!(false);
        return scim_json(StatusCode::OK, out);
    }
    let out = u.to_scim_json();
    org.users.insert(u.id, u);
    scim_json(StatusCode::OK, out)
}

async fn replace(AxState(st): AxState<S>, Path(id): Path<String>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "body must be JSON");
    };
    let Some(id) = find(&st, &id) else {
        return scim_error(StatusCode::NOT_FOUND, None, &format!("User {id} not found"));
    };
    let Some(user_name) = body.get("userName").and_then(Value::as_str) else {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "userName is required");
    };
    if !unique(&st, user_name, Some(id)) {
        return scim_error(StatusCode::CONFLICT, Some("uniqueness"), "userName is already in use");
    }
    let Some(mut u) = st.org.read().users.get(&id).cloned() else {
        return scim_error(StatusCode::NOT_FOUND, None, "User not found");
    };
    // PUT replaces: an omitted `active` means active (RFC 7643 default); other attributes go.
    u.active = true;
    u.active_unset = false;
    u.scim_attrs.clear();
    u.scim_managed = true;
    u.external_id = None;
    if let Err(e) = apply_user(&mut u, &body) {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &e);
    }
    u.updated_at = now_ms();
    store(&st, u, sets_inactive(&body))
}

async fn patch(AxState(st): AxState<S>, Path(id): Path<String>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "body must be JSON");
    };
    let Some(mut u) = id.parse::<u64>().ok().and_then(|id| st.org.read().users.get(&id).cloned()) else {
        return scim_error(StatusCode::NOT_FOUND, None, &format!("User {id} not found"));
    };
    let is_patch_op = body
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|x| x.as_str() == Some(PATCH_SCHEMA)))
        || body.get("Operations").is_some();
    if is_patch_op {
        let Some(ops) = body.get("Operations").and_then(Value::as_array) else {
            return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "Operations must be a list");
        };
        let Value::Object(mut doc) = u.to_scim_json() else {
            return scim_error(StatusCode::INTERNAL_SERVER_ERROR, None, "user is not an object");
        };
        for op in ops {
            let kind = op.get("op").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
            if !["add", "replace", "remove"].contains(&kind.as_str()) {
                return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), &format!("unknown op {kind:?}"));
            }
            let path = op.get("path").and_then(Value::as_str);
            if kind == "remove" && path.is_none() {
                return scim_error(StatusCode::BAD_REQUEST, Some("noTarget"), "remove needs a path");
            }
            let value = op.get("value").cloned().unwrap_or(Value::Null);
            if let Err(e) = patch_doc(&mut doc, &kind, path, value) {
                return scim_error(StatusCode::BAD_REQUEST, Some("invalidPath"), &e);
            }
        }
        if let Some(user_name) = doc.get("userName").and_then(Value::as_str) {
            if !unique(&st, user_name, Some(u.id)) {
                return scim_error(StatusCode::CONFLICT, Some("uniqueness"), "userName is already in use");
            }
        }
        // The patched document is the user now: attributes it lost are gone, `active` defaults to true.
        u.scim_attrs.clear();
        if !doc.contains_key("externalId") {
            u.external_id = None;
        }
        u.scim_managed = true;
        u.active_unset = !doc.contains_key("active");
        if u.active_unset {
            doc.insert("active".into(), Value::Bool(true));
        }
        if let Err(e) = apply_user(&mut u, &Value::Object(doc)) {
            return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &e);
        }
    } else if let Err(e) = apply_user(&mut u, &body) {
        // Drift's own shape: a partial user such as `{"isActive": false}`.
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &e);
    }
    u.updated_at = now_ms();
    store(&st, u, sets_inactive(&body))
}

async fn delete(AxState(st): AxState<S>, Path(id): Path<String>) -> Response {
    let Some(id) = find(&st, &id) else {
        return scim_error(StatusCode::NOT_FOUND, None, &format!("User {id} not found"));
    };
    // DELETE removes the resource whatever the policy (RFC 7644 §3.6); the policy decides what
    // `active: false` does.
    st.org.write().users.remove(&id);
    StatusCode::NO_CONTENT.into_response()
}

async fn spc() -> Response {
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://devdocs.drift.com/docs/scim",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": COUNT_MAX},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{"type": "oauthbearertoken", "name": "OAuth Bearer Token",
                "description": "Authentication with a bearer token", "primary": true}],
            "meta": {"resourceType": "ServiceProviderConfig", "location": "/scim/v2/ServiceProviderConfig"},
        }),
    )
}

fn user_resource_type() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User", "name": "User", "endpoint": "/Users", "schema": USER_SCHEMA,
        "meta": {"resourceType": "ResourceType", "location": "/scim/v2/ResourceTypes/User"},
    })
}

async fn resource_types() -> Response {
    scim_json(
        StatusCode::OK,
        json!({"schemas": [LIST_SCHEMA], "totalResults": 1, "startIndex": 1, "itemsPerPage": 1,
               "Resources": [user_resource_type()]}),
    )
}

async fn resource_type(Path(id): Path<String>) -> Response {
    if id == "User" {
        scim_json(StatusCode::OK, user_resource_type())
    } else {
        scim_error(StatusCode::NOT_FOUND, None, &format!("resource type {id} not found"))
    }
}

async fn schema(Path(id): Path<String>) -> Response {
    if id == USER_SCHEMA {
        scim_json(StatusCode::OK, user_schema())
    } else {
        scim_error(StatusCode::NOT_FOUND, None, &format!("schema {id} not found"))
    }
}

async fn unknown() -> Response {
    scim_error(StatusCode::NOT_FOUND, None, "no such SCIM endpoint")
}

fn user_schema() -> Value {
    let attr = |name: &str, ty: &str, required: bool, uniqueness: &str| {
        json!({"name": name, "type": ty, "multiValued": false, "required": required, "caseExact": false,
               "mutability": "readWrite", "returned": "default", "uniqueness": uniqueness})
    };
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": USER_SCHEMA, "name": "User", "description": "User Account",
        "attributes": [
            attr("userName", "string", true, "server"),
            attr("displayName", "string", true, "none"),
            attr("active", "boolean", false, "none"),
            {"name": "name", "type": "complex", "multiValued": false, "required": false,
             "mutability": "readWrite", "returned": "default", "uniqueness": "none", "caseExact": false,
             "subAttributes": [attr("formatted", "string", false, "none"), attr("givenName", "string", false, "none"),
                               attr("familyName", "string", false, "none")]},
            {"name": "emails", "type": "complex", "multiValued": true, "required": false,
             "mutability": "readWrite", "returned": "default", "uniqueness": "none", "caseExact": false,
             "subAttributes": [attr("value", "string", false, "none"), attr("type", "string", false, "none"),
                               attr("primary", "boolean", false, "none")]},
            {"name": "roles", "type": "complex", "multiValued": true, "required": false,
             "mutability": "readWrite", "returned": "default", "uniqueness": "none", "caseExact": false,
             "subAttributes": [attr("value", "string", false, "none"), attr("primary", "boolean", false, "none")]},
        ],
        "meta": {"resourceType": "Schema", "location": format!("/scim/v2/Schemas/{USER_SCHEMA}")},
    })
}

async fn schemas() -> Response {
    scim_json(
        StatusCode::OK,
        json!({"schemas": [LIST_SCHEMA], "totalResults": 1, "startIndex": 1, "itemsPerPage": 1, "Resources": [user_schema()]}),
    )
}
