//! SCIM 2.0 (RFC 7643/7644) Users, at `/scim/v2` (the brief) and `/scim` (Drift's docs).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
            .route(&format!("{base}/ServiceProviderConfig"), get(spc))
            .route(&format!("{base}/ResourceTypes"), get(resource_types))
            .route(&format!("{base}/Schemas"), get(schemas));
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

async fn list(AxState(st): AxState<S>, RawQuery(q): RawQuery) -> Response {
    let pairs: Vec<(String, String)> =
        q.as_deref().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(a, _)| a.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    let start: usize = match get("startIndex").map(|s| s.parse::<i64>()) {
        None => 1,
        Some(Ok(n)) => n.max(1) as usize,
        Some(Err(_)) => {
            return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "startIndex must be a number")
        }
    };
    let count: usize = match get("count").map(|s| s.parse::<i64>()) {
        None => COUNT_MAX,
        Some(Ok(n)) => n.clamp(0, COUNT_MAX as i64) as usize,
        Some(Err(_)) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), "count must be a number"),
    };
    let filter = match get("filter").map(|f| parse_filter(&f)) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidFilter"), &e),
    };
    let org = st.org.read();
    let all: Vec<&SimUser> =
        org.users.values().filter(|u| filter.as_ref().is_none_or(|(a, v)| matches(u, a, v))).collect();
    let page: Vec<Value> = all.iter().skip(start - 1).take(count).map(|u| u.to_scim_json()).collect();
    scim_json(
        StatusCode::OK,
        json!({"schemas": [LIST_SCHEMA], "totalResults": all.len(), "startIndex": start,
               "itemsPerPage": page.len(), "Resources": page}),
    )
}

fn find(st: &State, id: &str) -> Option<u64> {
    let id: u64 = id.parse().ok()?;
    st.org.read().users.contains_key(&id).then_some(id)
}

async fn get_one(AxState(st): AxState<S>, Path(id): Path<String>) -> Response {
    let org = st.org.read();
    match id.parse::<u64>().ok().and_then(|id| org.users.get(&id)) {
        Some(u) => scim_json(StatusCode::OK, u.to_scim_json()),
        None => scim_error(StatusCode::NOT_FOUND, None, &format!("User {id} not found")),
    }
}

/// Fields of a full or partial SCIM user that the simulator keeps.
fn apply_user(u: &mut SimUser, v: &Value) -> Result<(), String> {
    if let Some(n) = v.get("userName") {
        u.email = n.as_str().ok_or("userName must be a string")?.to_string();
    }
    if let Some(n) = v.get("displayName").and_then(Value::as_str) {
        u.name = n.to_string();
    }
    if let Some(n) = v.get("name") {
        if let Some(g) = n.get("givenName").and_then(Value::as_str) {
            u.given_name = g.to_string();
        }
        if let Some(f) = n.get("familyName").and_then(Value::as_str) {
            u.family_name = f.to_string();
        }
    }
    if let Some(x) = v.get("externalId").and_then(Value::as_str) {
        u.external_id = Some(x.to_string());
    }
    if let Some(roles) = v.get("roles").and_then(Value::as_array) {
        if roles.iter().any(|r| r.get("value").and_then(Value::as_str).is_some_and(|s| s.eq_ignore_ascii_case("admin")))
        {
            u.role = "admin".into();
        }
    }
    for key in ["active", "isActive"] {
        if let Some(a) = v.get(key) {
            u.active = match a {
                Value::Bool(b) => *b,
                Value::String(s) => !s.eq_ignore_ascii_case("false"),
                _ => return Err(format!("{key} must be a boolean")),
            };
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
    };
    if let Err(e) = apply_user(&mut u, &body) {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &e);
    }
    let out = u.to_scim_json();
    org.users.insert(id, u);
    scim_json(StatusCode::CREATED, out)
}

/// Stores a changed user, deprovisioning it when it was made inactive (as the policy says).
fn store(st: &State, u: SimUser) -> Response {
    let mut org = st.org.write();
    if !u.active && st.cfg.deprovision == DeprovisionPolicy::Delete {
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
    // PUT replaces: an omitted `active` means active (RFC 7643 default).
    u.active = true;
    if let Err(e) = apply_user(&mut u, &body) {
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &e);
    }
    u.updated_at = now_ms();
    store(&st, u)
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
        for op in ops {
            let kind = op.get("op").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
            if !["add", "replace", "remove"].contains(&kind.as_str()) {
                return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), &format!("unknown op {kind:?}"));
            }
            let value = op.get("value").cloned().unwrap_or(Value::Null);
            let partial = match op.get("path").and_then(Value::as_str) {
                // Without a path, the value is a partial user.
                None => value,
                Some(path) if kind == "remove" => {
                    if path.eq_ignore_ascii_case("active") {
                        json!({"active": false})
                    } else {
                        continue;
                    }
                }
                Some(path) => match path {
                    "name.givenName" => json!({"name": {"givenName": value}}),
                    "name.familyName" => json!({"name": {"familyName": value}}),
                    p => {
                        let mut m = serde_json::Map::new();
                        m.insert(p.to_string(), value);
                        Value::Object(m)
                    }
                },
            };
            if let Some(user_name) = partial.get("userName").and_then(Value::as_str) {
                if !unique(&st, user_name, Some(u.id)) {
                    return scim_error(StatusCode::CONFLICT, Some("uniqueness"), "userName is already in use");
                }
            }
            if let Err(e) = apply_user(&mut u, &partial) {
                return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &e);
            }
        }
    } else if let Err(e) = apply_user(&mut u, &body) {
        // Drift's own shape: a partial user such as `{"isActive": false}`.
        return scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &e);
    }
    u.updated_at = now_ms();
    store(&st, u)
}

async fn delete(AxState(st): AxState<S>, Path(id): Path<String>) -> Response {
    let Some(id) = find(&st, &id) else {
        return scim_error(StatusCode::NOT_FOUND, None, &format!("User {id} not found"));
    };
    let mut org = st.org.write();
    match st.cfg.deprovision {
        DeprovisionPolicy::Delete => {
            org.users.remove(&id);
        }
        DeprovisionPolicy::Deactivate => {
            if let Some(u) = org.users.get_mut(&id) {
                u.active = false;
                u.updated_at = now_ms();
            }
        }
    }
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

async fn resource_types() -> Response {
    scim_json(
        StatusCode::OK,
        json!({"schemas": [LIST_SCHEMA], "totalResults": 1, "startIndex": 1, "itemsPerPage": 1, "Resources": [{
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User", "name": "User", "endpoint": "/Users", "schema": USER_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": "/scim/v2/ResourceTypes/User"},
        }]}),
    )
}

async fn schemas() -> Response {
    let attr = |name: &str, ty: &str, required: bool, uniqueness: &str| {
        json!({"name": name, "type": ty, "multiValued": false, "required": required, "caseExact": false,
               "mutability": "readWrite", "returned": "default", "uniqueness": uniqueness})
    };
    scim_json(
        StatusCode::OK,
        json!({"schemas": [LIST_SCHEMA], "totalResults": 1, "startIndex": 1, "itemsPerPage": 1, "Resources": [{
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": USER_SCHEMA, "name": "User", "description": "User Account",
            "attributes": [
                attr("userName", "string", true, "server"),
                attr("displayName", "string", true, "none"),
                attr("active", "boolean", false, "none"),
                {"name": "name", "type": "complex", "multiValued": false, "required": false,
                 "subAttributes": [attr("formatted", "string", false, "none"), attr("givenName", "string", false, "none"),
                                   attr("familyName", "string", false, "none")]},
                {"name": "emails", "type": "complex", "multiValued": true, "required": false,
                 "subAttributes": [attr("value", "string", false, "none"), attr("primary", "boolean", false, "none")]},
                {"name": "roles", "type": "complex", "multiValued": true, "required": false,
                 "subAttributes": [attr("value", "string", false, "none")]},
            ],
            "meta": {"resourceType": "Schema", "location": format!("/scim/v2/Schemas/{USER_SCHEMA}")},
        }]}),
    )
}
