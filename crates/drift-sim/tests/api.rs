//! What a client of Drift relies on, checked against the simulator over HTTP.

use std::time::{Duration, Instant};

use drift_sim::{DeprovisionPolicy, Faults, Profile, RateLimit, RunningSim, Sim, SimConfig, WebhookConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "t";

async fn start(cfg: SimConfig) -> (Sim, RunningSim) {
    let sim = Sim::new(SimConfig { token: TOKEN.into(), ..cfg });
    let running = sim.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sim, running)
}

fn small() -> SimConfig {
    SimConfig { contacts: 250, agents: 12, ..SimConfig::default() }
}

struct C {
    http: reqwest::Client,
    base: String,
}

impl C {
    fn new(r: &RunningSim) -> C {
        C { http: reqwest::Client::new(), base: r.url() }
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(TOKEN).send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn every_contact_exactly_once_under_every_page_size() {
    let (sim, r) = start(small()).await;
    let c = C::new(&r);
    let expected: Vec<u64> = sim.contacts_json().iter().map(|v| v["id"].as_u64().unwrap()).collect();
    for limit in 1..=100 {
        let mut seen = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let path = match &next {
                Some(n) => format!("/contacts?limit={limit}&next={n}"),
                None => format!("/contacts?limit={limit}"),
            };
            let (s, body) = c.get(&path).await;
            assert_eq!(s, 200);
            let page = body["data"].as_array().unwrap();
            assert!(page.len() <= limit);
            seen.extend(page.iter().map(|v| v["id"].as_u64().unwrap()));
            match body.get("next").and_then(Value::as_str) {
                Some(n) => next = Some(n.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, expected, "limit {limit}");
    }
    // 25 by default, 100 at most.
    assert_eq!(c.get("/contacts").await.1["data"].as_array().unwrap().len(), 25);
    assert_eq!(c.get("/contacts?limit=500").await.1["data"].as_array().unwrap().len(), 100);
    assert_eq!(c.get("/contacts?next=garbage").await.0, 400);
}

#[tokio::test]
async fn golden_shapes_seed_profile() {
    let (_sim, r) = start(small()).await;
    let c = C::new(&r);
    let (s, body) = c.get("/contacts/1000001").await;
    assert_eq!(s, 200);
    let contact = &body["data"];
    for k in ["id", "email", "name", "createdAt", "updatedAt"] {
        assert!(contact.get(k).is_some(), "seed contacts carry {k} at top level: {contact}");
    }
    let (s, body) = c.get("/contacts/999").await;
    assert_eq!(s, 404);
    assert_eq!(body, json!({"error": {"type": "not_found", "message": "Contact not found"}}));
    // Trailing slash, /v1 prefix, by_email and ?email= are the same lookups.
    let email = contact["email"].as_str().unwrap().to_uppercase();
    let a = c.get(&format!("/contacts?email={email}")).await.1;
    let b = c.get(&format!("/contacts/by_email?email={email}")).await.1;
    let d = c.get(&format!("/v1/contacts/?email={email}")).await.1;
    assert_eq!(a["data"][0]["id"], 1000001);
    assert_eq!(a, b);
    assert_eq!(a, d);
    // External ids.
    let (_, ext) = c.get("/contacts?idType=external&id=crm-0&id=crm-4").await;
    assert_eq!(ext["data"].as_array().unwrap().len(), 2);
    // Users: list, /users/list, map, one, 404, at most 20 ids.
    let list = c.get("/users/list").await.1;
    assert_eq!(list["data"].as_array().unwrap().len(), 12);
    assert_eq!(c.get("/users").await.1, list);
    let map = c.get("/users?userId=20001&userId=20002").await.1;
    assert_eq!(map["data"]["20002"]["id"], 20002);
    let u = c.get("/users/20001").await.1;
    for k in ["id", "orgId", "name", "email", "role", "bot", "createdAt", "availability"] {
        assert!(u["data"].get(k).is_some(), "user has {k}");
    }
    assert_eq!(c.get("/users/1").await.0, 404);
    let many: String = (0..21).map(|i| format!("userId={}&", 20001 + i)).collect();
    assert_eq!(c.get(&format!("/users?{many}")).await.0, 400);
    // Accounts and conversations.
    let acc = c.get("/accounts?index=0&size=10").await.1;
    assert_eq!(acc["data"]["total"], 36);
    assert_eq!(acc["data"]["accounts"].as_array().unwrap().len(), 10);
    assert!(acc["data"]["next"].as_str().unwrap().contains("index=10"));
    let conv = c.get("/conversations/list?limit=5").await.1;
    let items = conv["data"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let times: Vec<i64> = items.iter().map(|i| i["updatedAt"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert!(conv["links"]["next"].as_str().unwrap().contains("page_token="));
}

#[tokio::test]
async fn golden_shapes_drift_profile() {
    let (_sim, r) = start(SimConfig { profile: Profile::Drift, ..small() }).await;
    let c = C::new(&r);
    let (s, body) = c.get("/contacts?limit=10").await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["type"], "validation_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("CONTACT-10"));
    let (_, body) = c.get("/contacts/1000001").await;
    let contact = body["data"].as_object().unwrap();
    let mut keys: Vec<&str> = contact.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, vec!["attributes", "createdAt", "id"], "only id, createdAt and attributes at top level");
    assert!(contact["attributes"].get("email").is_some());
    // Conversations lead to every contact.
    let mut ids = std::collections::BTreeSet::new();
    let mut url = format!("{}/conversations/list?limit=100", r.url());
    loop {
        let v: Value = c.http.get(&url).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        ids.extend(v["data"].as_array().unwrap().iter().map(|x| x["contactId"].as_u64().unwrap()));
        match v["links"]["next"].as_str() {
            Some(n) => url = n.to_string(),
            None => break,
        }
    }
    assert_eq!(ids.len(), 250);
}

#[tokio::test]
async fn auth_answers_as_drift_does() {
    let (_sim, r) =
        start(SimConfig { scoped_tokens: vec![("readonly".into(), vec!["contact_read".into()])], ..small() }).await;
    let http = reqwest::Client::new();
    let get = |path: &str, tok: Option<&str>| {
        let mut req = http.get(format!("{}{path}", r.url()));
        if let Some(t) = tok {
            req = req.header("authorization", format!("bEaReR {t}"));
        }
        req.send()
    };
    assert_eq!(get("/contacts/1000001", None).await.unwrap().status(), 401);
    assert_eq!(get("/contacts/1000001", Some("nope")).await.unwrap().status(), 401);
    assert_eq!(get("/users/list", Some("nope")).await.unwrap().status(), 403);
    assert_eq!(get("/contacts/1000001", Some("readonly")).await.unwrap().status(), 200, "scheme is case-insensitive");
    let r403 = get("/users/list", Some("readonly")).await.unwrap();
    assert_eq!(r403.status(), 403);
    let body: Value = r403.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("user_read"));
    assert_eq!(get("/scim/v2/Users", Some("readonly")).await.unwrap().status(), 403);
}

#[tokio::test]
async fn scim_paging_filters_and_lifecycle() {
    let (_sim, r) = start(SimConfig { contacts: 400, agents: 230, ..SimConfig::default() }).await;
    let c = C::new(&r);
    // 1-based paging until totalResults.
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let (s, v) = c.get(&format!("/scim/v2/Users?startIndex={start}&count=100")).await;
        assert_eq!(s, 200);
        assert_eq!(v["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:ListResponse");
        assert_eq!(v["startIndex"], start);
        assert_eq!(v["totalResults"], 230);
        let res = v["Resources"].as_array().unwrap();
        seen.extend(res.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        if res.is_empty() || start - 1 + res.len() >= 230 {
            break;
        }
        start += res.len();
    }
    assert_eq!(seen.len(), 230);
    assert_eq!(
        c.get("/scim/Users?count=1").await.1["Resources"].as_array().unwrap().len(),
        1,
        "Drift's /scim base too"
    );
    let first = c.get("/scim/v2/Users/20001").await.1;
    let email = first["userName"].as_str().unwrap().to_string();
    for f in [
        format!("userName eq \"{}\"", email.to_uppercase()),
        format!("emails.value eq \"{email}\""),
        "externalId eq \"idp-20001\"".to_string(),
        "id eq \"20001\"".to_string(),
    ] {
        let v = c.get(&format!("/scim/v2/Users?filter={}", urlencoding::encode(&f))).await.1;
        assert_eq!(v["totalResults"], 1, "{f}");
    }
    assert_eq!(c.get("/scim/v2/Users?filter=active%20eq%20true").await.1["totalResults"], 230);
    let (s, e) = c.get("/scim/v2/Users?filter=nickName%20sw%20%22x%22").await;
    assert_eq!(s, 400);
    assert_eq!(e["scimType"], "invalidFilter");
    // Discovery.
    for p in ["ServiceProviderConfig", "ResourceTypes", "Schemas"] {
        assert_eq!(c.get(&format!("/scim/v2/{p}")).await.0, 200, "{p}");
    }
    // Provision, uniqueness, replace, patch.
    let new = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "new.hire@example-org.com",
        "displayName": "New Hire", "emails": [{"value": "new.hire@example-org.com", "primary": true}]});
    let (s, created) = c.send(reqwest::Method::POST, "/scim/v2/Users", new.clone()).await;
    assert_eq!(s, 201);
    let id = created["id"].as_str().unwrap().to_string();
    let (s, e) = c.send(reqwest::Method::POST, "/scim/v2/Users", new).await;
    assert_eq!((s.as_u16(), e["scimType"].as_str()), (409, Some("uniqueness")));
    let (s, p) = c
        .send(
            reqwest::Method::PATCH,
            &format!("/scim/v2/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "displayName", "value": "Renamed"}]}),
        )
        .await;
    assert_eq!((s.as_u16(), p["displayName"].as_str()), (200, Some("Renamed")));
    let (s, p) = c
        .send(
            reqwest::Method::PATCH,
            &format!("/scim/v2/Users/{id}"),
            json!({"Operations": [{"op": "replace", "value": {"displayName": "Again"}}]}),
        )
        .await;
    assert_eq!((s.as_u16(), p["displayName"].as_str()), (200, Some("Again")));
    let (s, p) = c
        .send(
            reqwest::Method::PUT,
            &format!("/scim/v2/Users/{id}"),
            json!({"userName": "new.hire@example-org.com", "displayName": "Put"}),
        )
        .await;
    assert_eq!((s.as_u16(), p["displayName"].as_str()), (200, Some("Put")));
    // Drift's own deprovisioning shape deletes the user (the default policy).
    let (s, _) = c.send(reqwest::Method::PATCH, &format!("/scim/v2/Users/{id}"), json!({"isActive": false})).await;
    assert_eq!(s, 200);
    assert_eq!(c.get(&format!("/scim/v2/Users/{id}")).await.0, 404);
    let (s, e) = c.get("/scim/v2/Users/424242").await;
    assert_eq!(s, 404);
    assert_eq!(e["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert_eq!(e["status"], "404");
}

async fn owned_by(c: &C, agent: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = next.as_ref().map_or("/contacts?limit=100".to_string(), |n| format!("/contacts?limit=100&next={n}"));
        let v = c.get(&path).await.1;
        for x in v["data"].as_array().unwrap() {
            let owner = match &x["ownerId"] {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            if owner == Some(agent) {
                ids.push(x["id"].as_u64().unwrap());
            }
        }
        match v["next"].as_str() {
            Some(n) => next = Some(n.to_string()),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn deprovisioning_leaves_contacts_with_the_old_owner() {
    for policy in [DeprovisionPolicy::Delete, DeprovisionPolicy::Deactivate] {
        let (_sim, r) = start(SimConfig { deprovision: policy, ..small() }).await;
        let c = C::new(&r);
        let before = owned_by(&c, 20001).await;
        assert!(!before.is_empty());
        // Drift's own deprovisioning call: `active` set to false.
        let (s, _) = c
            .send(
                reqwest::Method::PATCH,
                "/scim/v2/Users/20001",
                json!({"Operations": [{"op": "replace", "path": "active", "value": false}]}),
            )
            .await;
        assert_eq!(s, 200);
        let users = c.get("/users/list").await.1;
        let listed = users["data"].as_array().unwrap().iter().any(|u| u["id"] == 20001);
        let scim = c.get("/scim/v2/Users/20001").await;
        match policy {
            DeprovisionPolicy::Delete => {
                assert!(!listed);
                assert_eq!(c.get("/users/20001").await.0, 404);
                assert_eq!(scim.0, 404);
            }
            DeprovisionPolicy::Deactivate => {
                assert_eq!(scim.1["active"], false);
            }
        }
        assert_eq!(owned_by(&c, 20001).await, before, "{policy:?}: contacts keep the old ownerId");
    }
}

#[tokio::test]
async fn contact_writes() {
    let (_sim, r) = start(small()).await;
    let c = C::new(&r);
    let (s, v) =
        c.send(reqwest::Method::POST, "/contacts", json!({"attributes": {"email": "x@y.io", "ownerId": 20002}})).await;
    assert_eq!(s, 200);
    let id = v["data"]["id"].as_u64().unwrap();
    let (s, v) =
        c.send(reqwest::Method::PATCH, &format!("/contacts/{id}"), json!({"attributes": {"ownerId": 20003}})).await;
    assert_eq!((s.as_u16(), v["data"]["ownerId"].as_u64()), (200, Some(20003)));
    assert_eq!(v["data"]["email"], "x@y.io", "PATCH changes only the keys given");
    let (s, _) = c.send(reqwest::Method::POST, "/contacts", json!({"attributes": {"name": "no email"}})).await;
    assert_eq!(s, 400);
    let (s, _) = c.send(reqwest::Method::DELETE, &format!("/contacts/{id}"), Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(c.get(&format!("/contacts/{id}")).await.0, 404);
}

#[tokio::test]
async fn the_limiter_holds_its_rate() {
    let rl: RateLimit = "50/s".parse().unwrap();
    let (_sim, r) = start(SimConfig { rate_limit: Some(rl), rate_headers: true, ..small() }).await;
    let c = C::new(&r);
    let t0 = Instant::now();
    let (mut ok, mut limited) = (0u32, 0u32);
    let mut retry_after = None;
    while t0.elapsed() < Duration::from_secs(2) {
        let resp = c.http.get(format!("{}/users/20001", r.url())).bearer_auth(TOKEN).send().await.unwrap();
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                retry_after = resp.headers().get("retry-after").cloned();
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["type"], "rate_limit");
            }
            s => panic!("unexpected {s}"),
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let allowed = f64::from(rl.burst) + 50.0 * el;
    assert!(f64::from(ok) <= allowed + 1.0, "{ok} passed, at most {allowed:.0} allowed");
    // How many pass depends on how fast this machine sends (a busy one sends fewer): only the
    // bound is the limiter's, and the burst always passes.
    assert!(ok >= rl.burst.min(50), "{ok} passed in {el:.2}s");
    assert!(limited > 0);
    assert!(retry_after.is_some(), "Retry-After when asked for");
    // Without rate headers, none are sent.
    let (_sim2, r2) = start(SimConfig { rate_limit: Some("1/min".parse().unwrap()), ..small() }).await;
    let http = reqwest::Client::new();
    let mut last = None;
    for _ in 0..10 {
        last = Some(http.get(format!("{}/users/20001", r2.url())).bearer_auth(TOKEN).send().await.unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.status(), 429);
    assert!(last.headers().get("retry-after").is_none());
    assert!(last.headers().keys().all(|k| !k.as_str().starts_with("x-ratelimit")));
}

#[tokio::test]
async fn oauth_code_refresh_rotation_and_expiry() {
    let (sim, r) = start(SimConfig { access_token_ttl: Some(Duration::from_millis(600)), ..small() }).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // The authorize page redirects with a code and the state.
    let resp = http
        .get(format!(
            "{}/oauth2/authorize?response_type=code&client_id=sim-client&redirect_uri=http://127.0.0.1:1/cb&state=xyz",
            r.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with("http://127.0.0.1:1/cb?code=") && loc.ends_with("&state=xyz"), "{loc}");
    let code = loc.split("code=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let tok: Value = http
        .post(format!("{}/oauth2/token", r.url()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tok["access_token"].as_str().unwrap().to_string();
    let refresh = tok["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(tok["token_type"], "bearer");
    let info: Value = http
        .post(format!("{}/app/token_info", r.url()))
        .json(&json!({"access_token": access}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["authenticated_userid"], format!("orgId:{}", sim.config().org_id));
    let ok = http.get(format!("{}/contacts/1000001", r.url())).bearer_auth(&access).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let expired = http.get(format!("{}/contacts/1000001", r.url())).bearer_auth(&access).send().await.unwrap();
    assert_eq!(expired.status(), 401);
    // Refresh with a JSON camelCase body; the refresh token rotates.
    let tok2: Value = http
        .post(format!("{}/oauth2/token", r.url()))
        .json(&json!({"grantType": "refresh_token", "refreshToken": refresh, "clientId": "sim-client", "clientSecret": "sim-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(tok2["refresh_token"].as_str().unwrap(), refresh);
    let again = http
        .post(format!("{}/oauth2/token", r.url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400, "a retired refresh token is refused");
    // A used code is refused too.
    let reuse = http
        .post(format!("{}/oauth2/token", r.url()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reuse.status(), 400);
}

#[tokio::test]
async fn each_fault_kind() {
    let (sim, r) = start(small()).await;
    let c = C::new(&r);
    let url = format!("{}/contacts?limit=50", r.url());
    let one = |f: Faults| {
        sim.set_faults(f);
        c.http.get(&url).bearer_auth(TOKEN).send()
    };
    let resp = one(Faults { error_rate: 1.0, ..Faults::default() }).await.unwrap();
    assert!(resp.status().is_server_error());
    let resp = one(Faults { malformed_rate: 1.0, ..Faults::default() }).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).is_err());
    let resp = one(Faults { truncated_rate: 1.0, ..Faults::default() }).await.unwrap();
    assert!(serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).is_err());
    let resp = one(Faults { drop_rate: 1.0, ..Faults::default() }).await;
    let dropped = match resp {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(dropped, "the connection drops mid-body");
    let t0 = Instant::now();
    let resp = one(Faults { slow_rate: 1.0, slow_ms: 300, ..Faults::default() }).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    sim.set_faults(Faults { storm_rate: 1.0, storm_len: 5, ..Faults::default() });
    for _ in 0..5 {
        assert_eq!(c.http.get(&url).bearer_auth(TOKEN).send().await.unwrap().status(), 429);
    }
    // Seeded: the same seed gives the same sequence of faults.
    async fn pattern(sim: &Sim, c: &C, url: &str, seed: u64) -> Vec<bool> {
        sim.set_faults(Faults { seed, error_rate: 0.5, ..Faults::default() });
        let mut p = Vec::new();
        for _ in 0..20 {
            p.push(c.http.get(url).bearer_auth(TOKEN).send().await.unwrap().status().as_u16() == 200);
        }
        p
    }
    let a = pattern(&sim, &c, &url, 9).await;
    let b = pattern(&sim, &c, &url, 9).await;
    assert_eq!(a, b);
    assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
}

#[tokio::test]
async fn webhooks_go_out_on_changes() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Option<String>, Value)>();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let tok = headers.get("x-verification-token").and_then(|h| h.to_str().ok()).map(str::to_string);
                let _ = tx.send((tok, v));
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let (_sim, r) = start(SimConfig {
        webhooks: WebhookConfig {
            urls: vec![hook],
            verification_token: "vt".into(),
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
        },
        ..small()
    })
    .await;
    let c = C::new(&r);
    let (_, v) = c
        .send(reqwest::Method::POST, "/conversations/new", json!({"email": "hook@y.io", "message": {"body": "hi"}}))
        .await;
    let id = v["data"]["contactId"].as_u64().unwrap();
    c.send(reqwest::Method::PATCH, &format!("/contacts/{id}"), json!({"attributes": {"ownerId": 20002}})).await;
    c.send(reqwest::Method::PATCH, &format!("/contacts/{id}"), json!({"attributes": {"ownerId": 20003}})).await;
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let (tok, ev) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert_eq!(tok.as_deref(), Some("vt"));
        assert_eq!(ev["token"], "vt");
        if ev["type"] == "contact_updated" && kinds.iter().any(|k| k == "contact_updated") {
            assert_eq!(
                ev["data"]["diff"][0],
                json!({"name": "attributes.ownerId", "previous": 20002, "updated": 20003})
            );
        }
        kinds.push(ev["type"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds, vec!["contact_identified", "new_conversation", "contact_updated", "contact_updated"]);
}

#[test]
fn the_generator_is_deterministic_and_skewed() {
    let cfg = SimConfig { contacts: 5000, agents: 100, ..SimConfig::default() };
    let a = Sim::new(cfg.clone()).contacts_json();
    let b = Sim::new(cfg).contacts_json();
    assert_eq!(a, b);
    let mut per_owner = std::collections::HashMap::<String, usize>::new();
    let mut none = 0;
    let mut strings = 0;
    for c in &a {
        match &c["ownerId"] {
            Value::Null => none += 1,
            Value::String(s) => {
                strings += 1;
                *per_owner.entry(s.clone()).or_default() += 1;
            }
            v => *per_owner.entry(v.to_string()).or_default() += 1,
        }
    }
    let mut counts: Vec<usize> = per_owner.values().copied().collect();
    counts.sort_unstable_by(|x, y| y.cmp(x));
    let top5: usize = counts.iter().take(5).sum();
    assert!(top5 * 3 > a.len(), "a few agents own most contacts: top 5 own {top5} of {}", a.len());
    assert!(none > 0 && strings > 0);
}

#[tokio::test]
async fn only_a_request_that_sets_active_false_deprovisions() {
    let (_sim, r) = start(small()).await;
    let c = C::new(&r);
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "late@example.com", "displayName": "Late", "active": false});
    let (s, u) = c.send(reqwest::Method::POST, "/scim/v2/Users", body).await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let id = u["id"].as_str().unwrap().to_string();
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "displayName", "value": "Late Starter"}]});
    let (s, u) = c.send(reqwest::Method::PATCH, &format!("/scim/v2/Users/{id}"), patch).await;
    assert_eq!(s, StatusCode::OK, "{u}");
    let (s, u) = c.get(&format!("/scim/v2/Users/{id}")).await;
    assert_eq!(s, StatusCode::OK, "a PATCH of displayName does not deprovision: {u}");
    assert_eq!(u["displayName"], "Late Starter");
    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}]});
    c.send(reqwest::Method::PATCH, &format!("/scim/v2/Users/{id}"), off).await;
    assert_eq!(c.get(&format!("/scim/v2/Users/{id}")).await.0, StatusCode::NOT_FOUND, "active: false deprovisions");
}

#[tokio::test]
async fn accounts_page_as_documented_and_errors_keep_the_envelope() {
    let (sim, r) = start(SimConfig { contacts: 250, agents: 30, ..SimConfig::default() }).await;
    let c = C::new(&r);
    let total = sim.accounts_json().len();
    assert!(total > 65, "enough accounts to see the maximum ({total})");
    let (_, d) = c.get("/accounts").await;
    assert_eq!(d["data"]["accounts"].as_array().unwrap().len(), 10, "Drift's default page is 10");
    let (_, d) = c.get("/accounts?index=0&size=100").await;
    assert_eq!(d["data"]["accounts"].as_array().unwrap().len(), 65, "and its maximum 65");
    let (s, d) = c.get("/no/such/route").await;
    assert_eq!((s, d["error"]["type"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{d}");
    let (s, d) = c.send(reqwest::Method::DELETE, "/users/list", json!({})).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(d["error"]["message"].as_str().is_some_and(|m| m.contains("DELETE")), "{d}");
    let (s, d) = c.get("/scim/v2/Nothing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(d["schemas"][0].as_str().is_some_and(|x| x.contains("Error")), "SCIM's envelope under /scim: {d}");
}

/// Runs 10 simulated seconds of churn on a paused clock; returns what changed and the org.
async fn churned(seed: u64) -> (drift_sim::ChurnCounts, Vec<(Value, Value)>, usize) {
    let sim = Sim::new(SimConfig { contacts: 500, agents: 20, token: TOKEN.into(), ..SimConfig::default() });
    let churn: drift_sim::Churn = "owner=36000/h,delete=60/min,create=2/s,deprovision=1/s".parse().unwrap();
    sim.start_churn(drift_sim::Churn { duration: Some(Duration::from_secs(10)), seed, ..churn });
    tokio::time::sleep(Duration::from_secs(12)).await;
    // Ids and owners: what churn decides (the times are the clock's).
    let contacts = sim.contacts_json().iter().map(|c| (c["id"].clone(), c["ownerId"].clone())).collect();
    (sim.churn_counts(), contacts, sim.users_json().len())
}

#[tokio::test(start_paused = true)]
async fn churn_changes_the_org_at_its_rates_and_replays_by_seed() {
    let (counts, contacts, users) = churned(7).await;
    assert_eq!(counts.owners_changed, 100, "10/s for 10 s");
    assert_eq!(counts.deleted, 10);
    assert_eq!(counts.created, 20);
    assert_eq!(counts.deprovisioned, 10);
    assert_eq!(contacts.len(), 500 - 10 + 20);
    assert!(users <= 20 - 10, "deprovisioned agents are gone from /users ({users})");
    let (again, contacts_again, _) = churned(7).await;
    assert!(again == counts && contacts_again == contacts, "the same seed, the same org");
    let (_, other, _) = churned(8).await;
    assert!(other != contacts, "another seed, another org");
}
