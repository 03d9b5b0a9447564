//! One rate budget per token, shared by every request made with it.
//!
//! Requests are paced evenly at the budget's rate (no bursts), so a budget that matches the
//! service's never meets a 429. When the service answers 429 anyway (a budget set too high, other
//! integrations spending the same token, a storm), the pace drops multiplicatively and then climbs
//! back additively (AIMD), slowly near the rate where the last 429 was met. `Retry-After` and
//! `X-RateLimit-*` are honoured when present and never needed.
//!
//! Slots are handed out at most a short horizon ahead: other requests wait in line for theirs, so
//! that a request that must not wait behind the line (a retry whose page is holding up a crawl, a
//! listing page whose contacts are the next work) takes the next slot (`acquire_first`) instead of
//! the last. The rate is the same either way.
//!
//! This is hand-rolled rather than `governor` because the rate must change while requests wait.

use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;

/// A request budget: `requests` per `per`, of which idgraph takes `share` (0 < share <= 1) so that
/// the org's other integrations keep the rest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    pub requests: u32,
    pub per: Duration,
    pub share: f64,
}

impl BudgetConfig {
    pub fn per_second(&self) -> f64 {
        f64::from(self.requests.max(1)) / self.per.as_secs_f64().max(0.001) * self.share.clamp(0.01, 1.0)
    }
}

impl Default for BudgetConfig {
    /// Drift's documented budget: about 200 requests a minute per token.
    fn default() -> Self {
        BudgetConfig { requests: 200, per: Duration::from_secs(60), share: 1.0 }
    }
}

impl std::str::FromStr for BudgetConfig {
    type Err = String;
    /// `200/min`, `50/s`, `1000/20s`, optionally followed by `@0.8` for an 80% share.
    fn from_str(s: &str) -> Result<Self, String> {
        let (rate, share) = match s.split_once('@') {
            Some((r, sh)) => {
                let share: f64 = sh.trim().parse().map_err(|_| format!("rate {s:?}: share {sh:?} is not a number"))?;
                if !(share > 0.0 && share <= 1.0) {
                    return Err(format!("rate {s:?}: share must be in (0, 1]"));
                }
                (r, share)
            }
            None => (s, 1.0),
        };
        let (requests, per) = idgraph_model::parse_rate(rate)?;
        Ok(BudgetConfig { requests, per, share })
    }
}

#[derive(Debug)]
struct State {
    rate_max: f64,
    rate: f64,
    /// The best estimate of the service's real rate; growth is slow near it.
    ceiling: f64,
    next_slot: Instant,
    last_decrease: Option<Instant>,
    /// When recent requests were let by (bounded): their rate at a 429 is the service's rate.
    passed: std::collections::VecDeque<Instant>,
    /// Every answer counted as let by, since the start.
    passed_total: u64,
}

/// How far back answers let by are counted to estimate the service's rate.
const WINDOW: Duration = Duration::from_secs(5);
/// The most such times kept.
const PASSED_MAX: usize = 4096;

/// The shared pacer. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<State>,
    /// Where `acquire` waits its turn (tokio's mutex is fair: first come, first served).
    line: tokio::sync::Mutex<()>,
}

/// How far ahead slots are handed out: a few slots, and at least the timer's resolution.
fn horizon(rate: f64) -> Duration {
    Duration::from_secs_f64((4.0 / rate).max(0.002))
}

/// The slowest the pacer will go, as a fraction of the configured rate.
const RATE_FLOOR: f64 = 0.02;

impl Budget {
    pub fn new(cfg: BudgetConfig) -> Budget {
        let r = cfg.per_second();
        Budget {
            state: Mutex::new(State {
                rate_max: r,
                rate: r,
                ceiling: r,
                next_slot: Instant::now(),
                last_decrease: None,
                passed: std::collections::VecDeque::new(),
                passed_total: 0,
            }),
            line: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits in line, then for this request's slot. Slots are handed out in order, one every
    /// `1/rate` seconds, and never more than a short horizon ahead.
    pub async fn acquire(&self) {
        let turn = self.line.lock().await;
        loop {
            let ahead = {
                let s = self.state.lock();
                s.next_slot.saturating_duration_since(Instant::now()).checked_sub(horizon(s.rate))
            };
            match ahead {
                Some(d) if !d.is_zero() => tokio::time::sleep(d).await,
                _ => break,
            }
        }
        let wait = self.take_slot();
        drop(turn);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits for the next slot without waiting in line: for the few requests the others wait on.
    pub async fn acquire_first(&self) {
        let wait = self.take_slot();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes the next slot; returns how long until it.
    fn take_slot(&self) -> Duration {
        let mut s = self.state.lock();
        let now = Instant::now();
        let slot = s.next_slot.max(now);
        s.next_slot = slot + Duration::from_secs_f64(1.0 / s.rate);
        slot.saturating_duration_since(now)
    }

    /// The service answered a request with anything but a 429 (a 5xx or a broken body too: its
    /// limiter let it by): count it, and grow back towards the configured rate.
    pub fn on_passed(&self) {
        let mut s = self.state.lock();
        let now = Instant::now();
        s.passed_total += 1;
        s.passed.push_back(now);
        while s.passed.len() > PASSED_MAX || s.passed.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            s.passed.pop_front();
        }
        if s.rate >= s.rate_max {
            return;
        }
        let step = if s.rate < 0.9 * s.ceiling { 0.01 * s.rate_max } else { 0.0005 * s.rate_max };
        s.rate = (s.rate + step).min(s.rate_max);
    }

    /// The service said 429: slow down and wait out `retry_after` when it was given.
    ///
    /// A leaky bucket that overflows lets through exactly its own rate, so the rate of answers of the
    /// last few seconds estimates the service's rate: the pace drops to just under it (and at
    /// least by 10%), in one step rather than by halving again and again. 429s that follow within
    /// a few slots are the same overflow and do not slow down further.
    pub fn on_rate_limited(&self, retry_after: Option<Duration>) {
        let mut s = self.state.lock();
        let now = Instant::now();
        // 429s within a few slots, or within 100 ms at large rates (a storm answers a burst of
        // them at once), are the same overflow.
        let settle = Duration::from_secs_f64((4.0 / s.rate).clamp(0.1, 2.0));
        if s.last_decrease.is_none_or(|t| now.duration_since(t) >= settle) {
            let n = s.passed.len();
            let span = s.passed.front().map_or(0.0, |first| now.duration_since(*first).as_secs_f64());
            let measured = n as f64 / span.max(1e-9);
            // A second of answers let by, or as many as are kept (a large budget fills them sooner).
            let enough = n >= 10 && (span >= 1.0 || n >= PASSED_MAX);
            if enough && measured >= 0.9 * s.rate {
                // Nothing was being held back before this 429 (a storm, another client's burst):
                // ease off a little and keep the estimate of the service's rate.
                s.rate = (s.rate * 0.9).max(s.rate_max * RATE_FLOOR);
            } else if enough {
                let estimate = 0.95 * measured;
                s.rate = estimate.min(s.rate * 0.9).max(s.rate_max * RATE_FLOOR);
                s.ceiling = estimate.max(s.rate);
            } else {
                // Too little history to measure: halve, and probe back quickly to the old pace.
                s.ceiling = s.rate;
                s.rate = (s.rate * 0.5).max(s.rate_max * RATE_FLOOR);
            }
            s.last_decrease = Some(now);
        }
        let pause = retry_after.unwrap_or_else(|| Duration::from_secs_f64(2.0 / s.rate)).min(Duration::from_secs(120));
        s.next_slot = s.next_slot.max(now + pause);
    }

    /// The service said how many requests remain and when the window resets.
    pub fn on_limit_headers(&self, remaining: u64, reset: Duration) {
        if remaining == 0 {
            let mut s = self.state.lock();
            let at = Instant::now() + reset.min(Duration::from_secs(120));
            s.next_slot = s.next_slot.max(at);
        }
    }

    /// The current pace, requests per second.
    pub fn rate(&self) -> f64 {
        self.state.lock().rate
    }

    /// How many answers were counted as let by the service's limiter since the start.
    pub fn passed_total(&self) -> u64 {
        self.state.lock().passed_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_and_shares() {
        let b: BudgetConfig = "200/min".parse().unwrap();
        assert!((b.per_second() - 200.0 / 60.0).abs() < 1e-9);
        let b: BudgetConfig = "1000/20s@0.5".parse().unwrap();
        assert!((b.per_second() - 25.0).abs() < 1e-9);
        assert!("0/s".parse::<BudgetConfig>().is_err());
        assert!("10/fortnight".parse::<BudgetConfig>().is_err());
        assert!("10/s@2".parse::<BudgetConfig>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_takes_the_next_slot_not_the_last() {
        let b = std::sync::Arc::new(Budget::new("10/s".parse().unwrap()));
        let t0 = tokio::time::Instant::now();
        // Fifty requests in line: five seconds of slots.
        let line: Vec<_> = (0..50)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.acquire().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let asked = tokio::time::Instant::now();
        b.acquire_first().await;
        let waited = asked.elapsed();
        assert!(waited <= Duration::from_millis(600), "the retry waited {waited:?}, not behind the line");
        for t in line {
            t.await.unwrap();
        }
        // The rate holds: 51 slots at 10/s, the last 5 s after the first.
        let el = t0.elapsed().as_secs_f64();
        assert!((4.95..5.2).contains(&el), "{el}");
    }

    /// A pacer spending its whole budget, every answer let by (5xx ones too, as the client counts
    /// them), meets one 429: it eases off a little and does not mistake its own pace for the
    /// service's limit. On tokio's paused clock: the pace measured is the pacer's, not the
    /// machine's.
    #[tokio::test(start_paused = true)]
    async fn one_429_at_full_pace_eases_off_a_little() {
        let b = Budget::new("100/s".parse().unwrap());
        for _ in 0..250 {
            b.acquire().await;
            b.on_passed();
        }
        b.on_rate_limited(None);
        let rate = b.rate();
        assert!((85.0..=90.0).contains(&rate), "one 429 at full pace cut the pace to {rate:.1}/s of 100/s");
        assert_eq!(b.passed_total(), 250);
    }

    #[tokio::test(start_paused = true)]
    async fn paces_evenly_and_backs_off() {
        let b = Budget::new("10/s".parse().unwrap());
        let t0 = tokio::time::Instant::now();
        for _ in 0..11 {
            b.acquire().await;
        }
        // 11 slots at 10/s: the last is 1 s after the first.
        let el = t0.elapsed().as_secs_f64();
        assert!((0.99..1.05).contains(&el), "{el}");
        b.on_rate_limited(None);
        // No history yet: halve.
        assert!((b.rate() - 5.0).abs() < 1e-9, "{}", b.rate());
        b.on_rate_limited(None); // the same overflow: one signal
        assert!((b.rate() - 5.0).abs() < 1e-9);
        for _ in 0..1000 {
            b.on_passed();
        }
        assert!((b.rate() - 10.0).abs() < 1e-9);
    }
}
