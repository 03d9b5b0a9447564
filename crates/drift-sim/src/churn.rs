//! An org that changes the way real orgs do, without telling anyone: owners changed as in
//! Drift's UI (no webhook), contacts deleted, contacts created with a new conversation, agents
//! deprovisioned through SCIM. Seeded, so a run can be replayed; the org served is always the
//! truth.

use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::DeprovisionPolicy;
use crate::data::OwnerVal;
use crate::{now_ms, Sim};

/// Rates of change, in events a second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Churn {
    pub owner_per_s: f64,
    pub delete_per_s: f64,
    pub create_per_s: f64,
    pub deprovision_per_s: f64,
    /// Stop changing after this long (`None`: never).
    pub duration: Option<Duration>,
    pub seed: u64,
}

/// Parses `600/h`, `10/min`, `2/s`, `0`.
fn rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(0.0);
    }
    let (n, per) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a rate (try 600/h, 10/min, 2/s)"))?;
    let n: f64 = n.trim().parse().map_err(|_| format!("{s:?}: {n:?} is not a number"))?;
    let secs = match per.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        "d" | "day" => 86400.0,
        other => return Err(format!("{s:?}: {other:?} is not s, min, h or d")),
    };
    if !(n >= 0.0 && n.is_finite()) {
        return Err(format!("{s:?}: a rate is a positive number"));
    }
    Ok(n / secs)
}

impl FromStr for Churn {
    type Err = String;
    /// `owner=600/h,delete=10/h,create=60/h,deprovision=1/h`; omitted kinds do not happen.
    fn from_str(s: &str) -> Result<Churn, String> {
        let mut c = Churn::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected KIND=RATE"))?;
            let r = rate(v)?;
            match k.trim() {
                "owner" => c.owner_per_s = r,
                "delete" => c.delete_per_s = r,
                "create" => c.create_per_s = r,
                "deprovision" => c.deprovision_per_s = r,
                other => return Err(format!("{other:?}: churn kinds are owner, delete, create, deprovision")),
            }
        }
        Ok(c)
    }
}

/// What churn has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChurnCounts {
    pub owners_changed: u64,
    pub deleted: u64,
    pub created: u64,
    pub deprovisioned: u64,
}

const TICK: Duration = Duration::from_millis(100);

impl Sim {
    /// Starts changing the org in the background (call inside a Tokio runtime). Events of each
    /// kind are spread evenly at their rate; which contact or agent is drawn from the seed.
    pub fn start_churn(&self, churn: Churn) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(churn.seed);
            let started = tokio::time::Instant::now();
            let mut due = [0.0f64; 4];
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                if churn.duration.is_some_and(|d| started.elapsed() >= d) {
                    return;
                }
                let rates = [churn.owner_per_s, churn.delete_per_s, churn.create_per_s, churn.deprovision_per_s];
                for (k, r) in rates.iter().enumerate() {
                    due[k] += r * TICK.as_secs_f64();
                    while due[k] >= 1.0 - 1e-9 {
                        due[k] -= 1.0;
                        me.churn_once(k, &mut rng);
                    }
                }
            }
        })
    }

    /// What churn has changed so far.
    pub fn churn_counts(&self) -> ChurnCounts {
        *self.state.churn.lock()
    }

    fn churn_once(&self, kind: usize, rng: &mut StdRng) {
        let mut org = self.state.org.write();
        let now = now_ms();
        let agents: Vec<u64> = org.users.values().filter(|u| u.active && !u.bot).map(|u| u.id).collect();
        let mut counts = self.state.churn.lock();
        match kind {
            0 if !agents.is_empty() && !org.contacts.is_empty() => {
                let id = nth_key(&org.contacts, rng);
                let to = agents[rng.random_range(0..agents.len())];
                if let Some(c) = org.contacts.get_mut(&id) {
                    c.owner = Some(OwnerVal::Num(to));
                    c.updated_at = now.max(c.updated_at + 1);
                    counts.owners_changed += 1;
                }
            }
            1 if !org.contacts.is_empty() => {
                let id = nth_key(&org.contacts, rng);
                if let Some(c) = org.contacts.remove(&id) {
                    org.unindex_email(&c.email, id);
                    org.conversations.retain(|_, v| v.contact_id != id);
                    counts.deleted += 1;
                }
            }
            2 => {
                let n = org.next_contact_id;
                let mut c = org.new_contact(&format!("churn.{n}@newco.example"), now);
                c.owner = (!agents.is_empty()).then(|| OwnerVal::Num(agents[rng.random_range(0..agents.len())]));
                let id = c.id;
                org.insert_contact(c);
                org.add_conversation(id, now, now);
                counts.created += 1;
            }
            3 if agents.len() > 1 => {
                let id = agents[rng.random_range(0..agents.len())];
                match self.state.cfg.deprovision {
                    DeprovisionPolicy::Delete => {
                        org.users.remove(&id);
                    }
                    DeprovisionPolicy::Deactivate => {
                        if let Some(u) = org.users.get_mut(&id) {
                            u.active = false;
                            u.updated_at = now;
                        }
                    }
                }
                counts.deprovisioned += 1;
            }
            _ => {}
        }
    }
}

fn nth_key<V>(m: &std::collections::BTreeMap<u64, V>, rng: &mut StdRng) -> u64 {
    let n = rng.random_range(0..m.len());
    m.keys().nth(n).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let c: Churn = "owner=600/h,delete=10/min, create=2/s,deprovision=0".parse().unwrap();
        assert!((c.owner_per_s - 600.0 / 3600.0).abs() < 1e-12);
        assert!((c.delete_per_s - 10.0 / 60.0).abs() < 1e-12);
        assert_eq!(c.create_per_s, 2.0);
        assert_eq!(c.deprovision_per_s, 0.0);
        assert!("owner=fast".parse::<Churn>().is_err());
        assert!("moves=1/s".parse::<Churn>().is_err());
        assert!("owner=-1/s".parse::<Churn>().is_err());
    }
}
