//! One Drift HTTP client: auth, the shared budget, bounded jittered retries, tolerant errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::auth::TokenSource;
use crate::budget::Budget;
use crate::CrawlError;

/// Bounds on retrying one request.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts for 5xx, timeouts, dropped connections and malformed bodies.
    pub max_attempts: u32,
    /// Extra attempts for 429s (each one also slows the budget down).
    pub max_rate_limited: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            max_rate_limited: 60,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(20),
        }
    }
}

/// Counters for progress bars, metrics and benchmarks.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub retries: AtomicU64,
    pub server_errors: AtomicU64,
    pub malformed: AtomicU64,
    pub transport_errors: AtomicU64,
    /// How long an answer takes, smoothed (microseconds; 0 before the first): what decides how
    /// many requests must be in flight to spend a budget.
    pub latency_us: AtomicU64,
}

impl ClientStats {
    fn note_latency(&self, took: Duration) {
        let us = took.as_micros().min(u128::from(u32::MAX)) as u64;
        let old = self.latency_us.load(Ordering::Relaxed);
        // An exponential average over about eight answers; races only lose a sample.
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.latency_us.store(new.max(1), Ordering::Relaxed);
    }

    /// The smoothed latency of an answer.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }
}

/// A client for one token: every request it makes spends that token's budget.
#[derive(Debug, Clone)]
pub struct DriftClient {
    http: reqwest::Client,
    auth: Arc<TokenSource>,
    budget: Arc<Budget>,
    retry: RetryPolicy,
    pub stats: Arc<ClientStats>,
}

/// What a request gave back: the status (2xx or 404) and the parsed body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

/// The path of a URL, without its query: endpoints are named in logs and errors this way, so
/// that no email (a query parameter) reaches them.
pub fn endpoint_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => u.path().to_string(),
        Err(_) => url.split('?').next().unwrap_or_default().to_string(),
    }
}

fn error_message(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // Drift's envelope, a bare string, an `errors` list, or SCIM's `detail`.
    let msg = match v.get("error") {
        Some(Value::Object(e)) => e.get("message").and_then(Value::as_str).map(str::to_string),
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
    .or_else(|| {
        v.get("errors")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .map(|e| e.get("message").and_then(Value::as_str).map_or_else(|| e.to_string(), str::to_string))
    })
    .or_else(|| v.get("detail").and_then(Value::as_str).map(str::to_string));
    msg.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// A request without a whole answer: whether the service began answering (its limiter let the
/// request by), and what happened, for the error.
struct Lost {
    answered: bool,
    message: String,
}

impl DriftClient {
    pub fn new(http: reqwest::Client, auth: Arc<TokenSource>, budget: Arc<Budget>, retry: RetryPolicy) -> DriftClient {
        DriftClient { http, auth, budget, retry, stats: Arc::new(ClientStats::default()) }
    }

    /// What `POST /app/token_info` at `url` says of this client's token: its org's id, `None`
    /// when the answer names none. The token goes in the body, as Drift asks, and nowhere else.
    /// One attempt, not retried: a command asks it at start and must not wait out a backoff
    /// when Drift is down (it goes on with the URL check alone).
    pub async fn token_org(&self, url: &str) -> Result<Option<u64>, CrawlError> {
        let (token, _) = self.auth.bearer().await?;
        let body = serde_json::json!({ "access_token": token.expose() });
        self.budget.acquire_first().await;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            self.send_once(&Method::POST, url, Some(&body), token.expose()),
        )
        .await
        .unwrap_or_else(|_| Err(Lost { answered: false, message: "no answer within 10 s".into() }));
        let (status, _, bytes) = answer.map_err(|lost| CrawlError::Exhausted {
            endpoint: endpoint_of(url),
            attempts: 1,
            last: lost.message,
        })?;
        if !status.is_success() {
            return Ok(None);
        }
        let Ok(b) = parse_body(&bytes) else {
            return Ok(None);
        };
        let b = &b;
        Ok(b.get("orgId").and_then(idgraph_model::id_from_value).or_else(|| {
            // `authenticated_userid: "orgId:123"`
            b.get("authenticated_userid")
                .and_then(Value::as_str)
                .and_then(|s| s.strip_prefix("orgId:"))
                .and_then(|id| id.trim().parse().ok())
        }))
    }

    /// The pacer this client's requests share.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub async fn get(&self, url: &str) -> Result<Reply, CrawlError> {
        self.request(Method::GET, url, None).await
    }

    /// A GET that takes the budget's next slot instead of waiting in line behind the others: for
    /// the list pages whose items are the next work.
    pub async fn get_first(&self, url: &str) -> Result<Reply, CrawlError> {
        self.send(Method::GET, url, None, true).await
    }

    /// Sends one request until it succeeds, is refused for good, or runs out of attempts.
    /// A 404 is returned as a reply, not an error: for a lookup, "gone" is an answer.
    pub async fn request(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Reply, CrawlError> {
        self.send(method, url, body, false).await
    }

    /// `request`, whose first attempt waits in the budget's line unless `first`; its retries never
    /// do (a retry often holds up a page whose other reads are done).
    async fn send(&self, method: Method, url: &str, body: Option<&Value>, first: bool) -> Result<Reply, CrawlError> {
        let endpoint = endpoint_of(url);
        let mut attempts = 0u32;
        let mut limited = 0u32;
        let mut refreshed = false;
        let mut last = String::new();
        loop {
            if attempts >= self.retry.max_attempts {
                return Err(CrawlError::Exhausted { endpoint, attempts, last });
            }
            if limited > self.retry.max_rate_limited {
                return Err(CrawlError::RateLimited { endpoint, times: limited });
            }
            if first || attempts > 0 || limited > 0 || refreshed {
                self.budget.acquire_first().await;
            } else {
                self.budget.acquire().await;
            }
            let (token, gen) = self.auth.bearer().await?;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let sent = std::time::Instant::now();
            let answer = self.send_once(&method, url, body, token.expose()).await;
            self.stats.note_latency(sent.elapsed());
            let (status, headers, bytes) = match answer {
                Ok(x) => x,
                Err(lost) => {
                    if lost.answered {
                        self.budget.on_passed();
                    }
                    self.stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                    last = lost.message;
                    attempts += 1;
                    self.backoff(attempts).await;
                    continue;
                }
            };
            let header_num = |name: &str| header_u64(&headers, name);
            self.note_limit_headers(&headers);
            if status.as_u16() != 429 {
                // Any other answer, a 5xx or a malformed body too, went through the service's
                // rate limiter: the budget counts it as let through.
                self.budget.on_passed();
            }
            match status.as_u16() {
                200..=299 | 404 => {
                    match parse_body(&bytes) {
                        Ok(body) => {
                            return Ok(Reply { status, body });
                        }
                        Err(e) => {
                            // A malformed or truncated body: the request is retried, then reported.
                            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                            last = format!("malformed JSON body ({} bytes): {e}", bytes.len());
                            attempts += 1;
                            self.backoff(attempts).await;
                        }
                    }
                }
                429 => {
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    limited += 1;
                    let retry_after = header_num("retry-after").map(Duration::from_secs);
                    self.budget.on_rate_limited(retry_after);
                    last = "429 rate limited".into();
                }
                401 | 403 => {
                    if !refreshed && self.auth.refresh_after_refusal(gen).await? {
                        refreshed = true;
                        continue;
                    }
                    return Err(refusal(endpoint, status.as_u16(), &bytes));
                }
                500..=599 | 408 => {
                    self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
                    last = format!("HTTP {status}");
                    attempts += 1;
                    self.backoff(attempts).await;
                }
                _ => {
                    return Err(CrawlError::Http { endpoint, status: status.as_u16(), message: error_message(&bytes) });
                }
            }
        }
    }

    /// `X-RateLimit-*`, where a service sends them, tell the budget what is left.
    fn note_limit_headers(&self, headers: &reqwest::header::HeaderMap) {
        let rem = header_u64(headers, "x-ratelimit-remaining");
        if let (Some(rem), Some(reset)) = (rem, header_u64(headers, "x-ratelimit-reset")) {
            self.budget.on_limit_headers(rem, Duration::from_secs(reset));
        }
    }

    /// One request and its whole body; a transport failure as a message.
    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Value>,
        token: &str,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, bytes::Bytes), Lost> {
        let mut req = self.http.request(method.clone(), url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Lost { answered: false, message: format!("transport: {}", transport_cause(&e)) })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        match resp.bytes().await {
            Ok(bytes) => Ok((status, headers, bytes)),
            Err(e) => Err(Lost {
                // A 429 is short and whole; a body lost midway was an answer the limiter let by.
                answered: status.as_u16() != 429,
                message: format!("connection lost reading the body: {}", transport_cause(&e)),
            }),
        }
    }

    async fn backoff(&self, attempt: u32) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        // The first retry waits up to the base (100 ms), each next one up to twice as long.
        let exp =
            self.retry.backoff_base.saturating_mul(1 << attempt.saturating_sub(1).min(10)).min(self.retry.backoff_max);
        // Full jitter: spread retries so that many failing requests do not come back together.
        let ms = rand::rng().random_range(0..=exp.as_millis().max(1) as u64);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// What went wrong with a request, down to its cause ("connection refused", "dns error: ..."),
/// which reqwest's own message ("error sending request") hides; never the URL (query strings
/// may hold emails).
pub fn transport_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let top = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the body was cut off"
    } else {
        "the request failed"
    };
    if std::ptr::addr_eq(cause, e as &dyn std::error::Error) {
        top.to_string()
    } else {
        format!("{top}: {cause}")
    }
}

fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A body as JSON; an empty one is `null`.
fn parse_body(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    if bytes.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(bytes)
    }
}

/// A 401 or 403 that a token refresh did not cure: a missing scope, or refused credentials.
fn refusal(endpoint: String, status: u16, bytes: &[u8]) -> CrawlError {
    let message = error_message(bytes);
    if status == 403 && message.to_ascii_lowercase().contains("scope") {
        CrawlError::Forbidden { endpoint, message }
    } else {
        CrawlError::Unauthorized { endpoint, status, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_drop_the_query() {
        assert_eq!(endpoint_of("http://h/contacts?email=a%40b.c"), "/contacts");
    }

    #[test]
    fn error_messages_in_three_shapes() {
        assert_eq!(error_message(br#"{"error":{"type":"x","message":"m1"}}"#), "m1");
        assert_eq!(error_message(br#"{"error":"m2"}"#), "m2");
        assert_eq!(error_message(br#"{"errors":[{"message":"m3"}]}"#), "m3");
    }
}
