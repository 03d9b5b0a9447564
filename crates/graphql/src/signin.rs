//! Who asks: bearer tokens (service tokens, JWTs), the browser's session cookie, sign-in and
//! sign-out through the identity provider (`/auth/*`), and the access log's entries for each.
//! The one place a request's credentials are read.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idgraph_access::log::Entry;
use idgraph_access::session::{csrf_ok, COOKIE};
use idgraph_access::{Kind, Principal, Refusal, Role};
use serde_json::json;

use crate::server::{early, AppState};

/// The peer of a connection, set by `serve_connections` on every request.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// A caller let in: who, with which role, from where.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub principal: Principal,
    pub role: Role,
    pub client: Option<String>,
}

/// The header a page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The caller, or the answer that refuses it: 401 `UNAUTHENTICATED` naming why (a missing,
/// unknown, expired or forged credential; the reason is also logged and counted), 403
/// `FORBIDDEN` for a principal without a role here. Every refusal is in the access log.
pub(crate) async fn authenticate(
    st: &AppState,
    method: &Method,
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
    route: &str,
    media: &'static str,
) -> Result<Caller, Box<Response>> {
    let a = &st.access;
    let client = client_addr(st, headers, ext);
    if a.open {
        return Ok(Caller { principal: Principal::anonymous(), role: Role::Admin, client });
    }
    let found = match bearer(headers) {
        Some(token) => a.bearer(token).await,
        None => match cookie(headers, COOKIE) {
            Some(id) => match a.sessions.get(id) {
                Some(s) if method != Method::GET && method != Method::HEAD => {
                    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
                    if csrf_ok(&s, sent) {
                        Ok(s.principal)
                    } else {
                        Err(Refusal::Csrf)
                    }
                }
                Some(s) => Ok(s.principal),
                None => Err(Refusal::Session),
            },
            None => Err(Refusal::Missing),
        },
    };
    let refuse = |status: StatusCode, code: &str, outcome: &str, who: Option<&Principal>, why: String| {
        record_refusal(st, route, who, client.clone(), outcome, why.clone());
        Box::new(early(status, code, &why, media))
    };
    match found {
        Err(r) => {
            if r != Refusal::Missing {
                tracing::info!(reason = r.reason(), why = %r, route, client = client.as_deref().unwrap_or("-"), "request refused: not authenticated");
            }
            Err(refuse(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "unauthenticated", None, r.to_string()))
        }
        Ok(p) => match role_here(st, ext, &p) {
            Some(role) => Ok(Caller { principal: p, role, client }),
            None => {
                let here = st.org.as_ref().map_or("on this server".to_string(), |o| format!("in org {o}"));
                let why = format!(
                    "{} {:?} has no role {here}: ask an admin to map one of its groups to viewer, auditor or admin",
                    p.kind.name(),
                    p.name
                );
                tracing::info!(principal = %p.name, route, "request refused: no role");
                Err(refuse(StatusCode::FORBIDDEN, "FORBIDDEN", "forbidden", Some(&p), why))
            }
        },
    }
}

/// The caller's role for this request: in the router's org; for a request that names no org on
/// a server with several, at least viewer when it holds a role in any org (such a request
/// reaches only the fields that span orgs, which filter by org themselves) and its role in
/// every org above that.
fn role_here(st: &AppState, ext: &axum::http::Extensions, p: &Principal) -> Option<Role> {
    if ext.get::<crate::orgs::AcrossOrgs>().is_some() {
        return p.top_role().map(|_| p.role_in(None).unwrap_or(Role::Viewer));
    }
    p.role_in(st.org.as_deref())
}

/// Counts a refused request and writes it to the access log (`who`: the principal, when one was
/// identified but has no role).
fn record_refusal(
    st: &AppState,
    route: &str,
    who: Option<&Principal>,
    client: Option<String>,
    outcome: &str,
    why: String,
) {
    st.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
    st.access.record(Entry {
        time: chrono::Utc::now(),
        principal: who.map_or("-".into(), |p| p.name.clone()),
        kind: who.map_or("none", |p| p.kind.name()).into(),
        role: None,
        org: st.org.clone(),
        route: route.to_string(),
        outcome: outcome.into(),
        client,
        detail: Some(why),
        ..Entry::default()
    });
}

/// A refusal for a caller whose role is below what a route needs.
pub(crate) fn forbidden(st: &AppState, c: &Caller, need: Role, route: &str, media: &'static str) -> Response {
    let why = format!("this needs the {need} role (the caller has the {} role)", c.role);
    record(st, c, route, None, vec![], 0, "forbidden", Some(why.clone()));
    early(StatusCode::FORBIDDEN, "FORBIDDEN", &why, media)
}

/// Writes an access log entry for a caller.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    st: &AppState,
    c: &Caller,
    route: &str,
    operation: Option<String>,
    fields: Vec<String>,
    rows: u64,
    outcome: &str,
    detail: Option<String>,
) {
    st.access.record(Entry {
        time: chrono::Utc::now(),
        principal: c.principal.name.clone(),
        kind: c.principal.kind.name().into(),
        role: Some(c.role.name().into()),
        org: st.org.clone(),
        route: route.to_string(),
        operation,
        fields,
        rows,
        outcome: outcome.into(),
        client: c.client.clone(),
        detail,
    });
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name`.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The client's address: the connection's peer, or, when the peer is a trusted proxy, the last
/// address in `X-Forwarded-For` that is not one.
fn client_addr(st: &AppState, headers: &HeaderMap, ext: &axum::http::Extensions) -> Option<String> {
    let peer = ext.get::<PeerAddr>().map(|p| p.0.ip())?;
    let trusted = &st.access.trusted_proxies;
    if !trusted.contains(&peer) {
        return Some(peer.to_string());
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Some(forwarded.iter().rev().find(|a| !trusted.contains(a)).copied().unwrap_or(peer).to_string())
}

/// Whether the browser reached this server over https: its public URL says so, or a trusted
/// proxy that terminated TLS does (`X-Forwarded-Proto: https`).
fn over_https(st: &AppState, headers: &HeaderMap, ext: &axum::http::Extensions) -> bool {
    if st.access.secure_cookies {
        return true;
    }
    let peer_trusted = ext.get::<PeerAddr>().is_some_and(|p| st.access.trusted_proxies.contains(&p.0.ip()));
    peer_trusted
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
}

fn session_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let c = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("idgraph_session=; Path=/; Max-Age=0"))
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>idgraph · {t}</title></head><body style=\"font-family:system-ui,sans-serif;margin:3rem\"><h1>{t}</h1><p id=\"message\">{m}</p><p><a href=\"/auth/login?next=/audit\">Sign in</a></p></body></html>",
        t = idgraph_web::escape(title),
        m = idgraph_web::escape(message)
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginParams {
    next: Option<String>,
}

/// `GET /auth/login?next=/audit`: to the identity provider.
pub(crate) async fn login(
    State(st): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<LoginParams>,
) -> Response {
    let Some(oidc) = &st.access.oidc else {
        return page(
            StatusCode::NOT_FOUND,
            "Sign-in is not configured",
            "This server has no [oidc] section: use a bearer token.",
        );
    };
    match oidc.begin(q.next.as_deref().unwrap_or("/audit")).await {
        Ok(url) => match HeaderValue::from_str(&url) {
            Ok(v) => (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, v), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            )
                .into_response(),
            Err(_) => {
                page(StatusCode::BAD_GATEWAY, "Sign-in failed", "the identity provider's URL is not a valid header")
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "sign-in could not start");
            page(StatusCode::BAD_GATEWAY, "Sign-in failed", &e.to_string())
        }
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: the provider's answer; a session for a person with a role.
pub(crate) async fn callback(
    State(st): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<CallbackParams>,
    req: axum::extract::Request,
) -> Response {
    let (headers, ext) = (req.headers(), req.extensions());
    let client = client_addr(&st, headers, ext);
    let Some(oidc) = &st.access.oidc else {
        return page(StatusCode::NOT_FOUND, "Sign-in is not configured", "This server has no [oidc] section.");
    };
    let refused = |who: Option<&Principal>, why: String| {
        tracing::info!(why = %why, "sign-in refused");
        record_refusal(&st, "GET /auth/callback", who, client.clone(), "unauthenticated", why.clone());
        page(StatusCode::FORBIDDEN, "Sign-in refused", &why)
    };
    if let Some(e) = q.error {
        return refused(None, format!("the identity provider said {e}: {}", q.error_description.unwrap_or_default()));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return refused(None, "the provider's answer has no code or state".into());
    };
    let (p, next) = match oidc.finish(&code, &state, st.access.role_claim()).await {
        Ok(x) => x,
        Err(e) => return refused(None, e.to_string()),
    };
    let Some(role) = p.top_role() else {
        let why = format!(
            "you are signed in at the identity provider as {}, but none of your {} maps to a role here: ask an admin",
            p.name,
            st.access.role_claim()
        );
        return refused(Some(&p), why);
    };
    let (id, _) = st.access.sessions.start(p.clone());
    tracing::info!(principal = %p.name, role = %role, "signed in");
    let caller = Caller { principal: p, role, client };
    record(&st, &caller, "GET /auth/callback", None, vec![], 0, "signed_in", None);
    let secure = over_https(&st, headers, ext);
    let mut r = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_str(&next).unwrap_or(HeaderValue::from_static("/audit")))],
    )
        .into_response();
    r.headers_mut().insert(header::SET_COOKIE, session_cookie(&id, st.access.sessions.lifetime().as_secs(), secure));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /auth/logout` (with the page's CSRF token): ends the session.
pub(crate) async fn logout(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    const JSON: &str = "application/json";
    let (headers, ext) = (req.headers(), req.extensions());
    let caller = match authenticate(&st, req.method(), headers, ext, "POST /auth/logout", JSON).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if caller.principal.kind == Kind::Person {
        if let Some(id) = cookie(headers, COOKIE) {
            st.access.sessions.end(id);
        }
    }
    record(&st, &caller, "POST /auth/logout", None, vec![], 0, "signed_out", None);
    let end = match &st.access.oidc {
        Some(o) => o.end_session_url().await,
        None => None,
    };
    let mut r = Json(json!({"signedOut": true, "endSession": end})).into_response();
    r.headers_mut().insert(header::SET_COOKIE, session_cookie("", 0, over_https(&st, headers, ext)));
    r
}

/// `GET /auth/me`: who the caller is, their role, and (for a session) the CSRF token its page
/// sends back.
pub(crate) async fn me(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    const JSON: &str = "application/json";
    let (headers, ext) = (req.headers(), req.extensions());
    let signin = st.access.oidc.is_some().then_some("/auth/login");
    let caller = match authenticate(&st, req.method(), headers, ext, "GET /auth/me", JSON).await {
        Ok(c) => c,
        Err(r) => {
            let mut r = *r;
            if let Some(url) = signin {
                r.headers_mut().insert("x-idgraph-sign-in", HeaderValue::from_static(url));
            }
            return r;
        }
    };
    let csrf = cookie(headers, COOKIE).and_then(|id| st.access.sessions.get(id)).map(|s| s.csrf);
    let mut r = Json(json!({
        "name": caller.principal.name,
        "kind": caller.principal.kind.name(),
        "role": caller.role.name(),
        "open": st.access.open,
        "signIn": signin,
        "csrf": csrf,
    }))
    .into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The session behind a page request, for the pages: `None` when the server has no sign-in.
/// `Err` is the redirect to sign in.
pub(crate) fn page_session(
    st: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<Option<idgraph_access::session::Session>, Box<Response>> {
    if st.access.oidc.is_none() {
        return Ok(None);
    }
    match cookie(headers, COOKIE).and_then(|id| st.access.sessions.get(id)) {
        Some(s) => Ok(Some(s)),
        None => {
            let to = format!("/auth/login?next={}", urlencoding_path(path));
            Err(Box::new(
                (
                    StatusCode::SEE_OTHER,
                    [(header::LOCATION, HeaderValue::from_str(&to).unwrap_or(HeaderValue::from_static("/auth/login")))],
                )
                    .into_response(),
            ))
        }
    }
}

fn urlencoding_path(p: &str) -> String {
    url::form_urlencoded::byte_serialize(p.as_bytes()).collect()
}
