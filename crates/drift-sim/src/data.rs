//! The simulated org: contacts, users, accounts and conversations, and its deterministic generator.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use crate::config::{Profile, SimConfig};

/// A contact's owner as stored: Drift carries it as a number, sometimes as a numeric string.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnerVal {
    Num(u64),
    Str(String),
}

impl OwnerVal {
    pub fn id(&self) -> Option<u64> {
        match self {
            OwnerVal::Num(n) => Some(*n),
            OwnerVal::Str(s) => s.parse().ok(),
        }
    }
    fn to_json(&self) -> Value {
        match self {
            OwnerVal::Num(n) => json!(n),
            OwnerVal::Str(s) => json!(s),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimContact {
    pub id: u64,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub external_id: Option<String>,
    pub owner: Option<OwnerVal>,
    pub created_at: i64,
    pub updated_at: i64,
    pub custom: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct SimUser {
    pub id: u64,
    pub name: String,
    pub given_name: String,
    pub family_name: String,
    pub email: String,
    pub role: String,
    pub bot: bool,
    pub active: bool,
    pub external_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// SCIM attributes as the identity provider last set them (name, emails, roles, …). Once an
    /// identity provider has written the user (`scim_managed`), they replace the generated ones.
    pub scim_attrs: Map<String, Value>,
    pub scim_managed: bool,
    /// `active` was removed by a PATCH: unassigned, which counts as active.
    pub active_unset: bool,
}

#[derive(Debug, Clone)]
pub struct SimAccount {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub owner_id: Option<u64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct Conversation {
    pub id: u64,
    pub contact_id: u64,
    pub status: &'static str,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The whole org. Conversations are keyed newest first: `(-updated_at, id)`.
#[derive(Debug, Default)]
pub struct Org {
    pub contacts: BTreeMap<u64, SimContact>,
    pub by_email: HashMap<String, Vec<u64>>,
    pub users: BTreeMap<u64, SimUser>,
    pub accounts: Vec<SimAccount>,
    pub conversations: BTreeMap<(i64, u64), Conversation>,
    pub next_contact_id: u64,
    pub next_user_id: u64,
    pub next_conversation_id: u64,
}

const FIRST: &[&str] = &[
    "ada",
    "alan",
    "grace",
    "linus",
    "barbara",
    "ken",
    "margaret",
    "dennis",
    "frances",
    "edsger",
    "radia",
    "tim",
    "katherine",
    "john",
    "hedy",
    "donald",
    "anita",
    "guido",
    "sophie",
    "niklaus",
    "leslie",
    "yukihiro",
    "joan",
    "bjarne",
    "karen",
    "james",
    "rosa",
    "ivan",
    "mary",
    "carl",
];
const LAST: &[&str] = &[
    "lovelace",
    "turing",
    "hopper",
    "torvalds",
    "liskov",
    "thompson",
    "hamilton",
    "ritchie",
    "allen",
    "dijkstra",
    "perlman",
    "berners",
    "johnson",
    "mccarthy",
    "lamarr",
    "knuth",
    "borg",
    "rossum",
    "wilson",
    "wirth",
    "lamport",
    "matsumoto",
    "clarke",
    "stroustrup",
    "jones",
    "gosling",
    "peter",
    "sutherland",
    "keller",
    "shannon",
];
const COMPANIES: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "vandelay",
    "stark",
    "wayne",
    "tyrell",
    "cyberdyne",
    "soylent",
    "wonka",
    "aperture",
    "oscorp",
    "massive",
];
const TITLES: &[&str] = &["CTO", "VP Sales", "Engineer", "Buyer", "CFO", "Analyst", "Founder"];

/// Epoch ms "now" for generated data: fixed, so the same seed makes the same org.
pub const GENERATED_NOW_MS: i64 = 1_764_000_000_000;

pub const FIRST_CONTACT_ID: u64 = 1_000_001;
pub const FIRST_USER_ID: u64 = 20_001;

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// An owner for a contact or account: a few agents own most (u³ skew).
fn pick_owner(humans: &[u64], rng: &mut StdRng) -> Option<u64> {
    if humans.is_empty() {
        return None;
    }
    let u: f64 = rng.random();
    let idx = ((humans.len() as f64) * u * u * u) as usize;
    Some(humans[idx.min(humans.len() - 1)])
}

impl Org {
    /// Generates an org from the config's seed: the same seed and sizes give the same org.
    ///
    /// Skew: a few agents own most contacts (the owner index is drawn as `n * u^3`); about 4% of
    /// contacts have no owner, 1% an owner id never seen as an agent, and about 1% carry their
    /// owner id as a string.
    pub fn generate(cfg: &SimConfig) -> Org {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut org = Org {
            next_contact_id: FIRST_CONTACT_ID,
            next_user_id: FIRST_USER_ID,
            next_conversation_id: 5_000_001,
            ..Org::default()
        };
        let humans = org.generate_users(cfg);
        // The same generator, in the same order: the same seed makes the same org.
        org.generate_contacts(cfg, &mut rng, &humans);
        org.generate_accounts(cfg, &mut rng, &humans);
        org
    }

    /// The agents (a bot every 50); returns the human ones' ids.
    fn generate_users(&mut self, cfg: &SimConfig) -> Vec<u64> {
        let org = self;
        let mut humans = Vec::with_capacity(cfg.agents);
        for i in 0..cfg.agents {
            let id = org.next_user_id;
            org.next_user_id += 1;
            let bot = i % 50 == 49;
            let (given, family) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
            let (name, email) = if bot {
                (format!("Drift Bot {i}"), format!("bot-{i}@drift.com"))
            } else {
                (format!("{} {}", cap(given), cap(family)), format!("{given}.{family}.{i}@example-org.com"))
            };
            if !bot {
                humans.push(id);
            }
            let created = GENERATED_NOW_MS - 400 * 86_400_000 + i as i64 * 60_000;
            org.users.insert(
                id,
                SimUser {
                    id,
                    name,
                    given_name: cap(given),
                    family_name: cap(family),
                    email,
                    role: if i < 3 { "admin" } else { "agent" }.into(),
                    bot,
                    active: true,
                    external_id: Some(format!("idp-{id}")),
                    created_at: created,
                    updated_at: created,
                    scim_attrs: Map::new(),
                    scim_managed: false,
                    active_unset: false,
                },
            );
        }
        humans
    }

    fn generate_contacts(&mut self, cfg: &SimConfig, rng: &mut StdRng, humans: &[u64]) {
        let org = self;
        org.contacts = BTreeMap::new();
        org.by_email.reserve(cfg.contacts);
        for i in 0..cfg.contacts {
            let id = org.next_contact_id;
            org.next_contact_id += 1;
            let f = FIRST[rng.random_range(0..FIRST.len())];
            let l = LAST[rng.random_range(0..LAST.len())];
            let company = COMPANIES[rng.random_range(0..COMPANIES.len())];
            let roll: f64 = rng.random();
            let owner = if roll < 0.04 {
                None
            } else if roll < 0.05 {
                // An owner id never seen as an agent: deleted before anyone indexed the org.
                Some(OwnerVal::Num(FIRST_USER_ID - 1 - (i as u64 % 7)))
            } else {
                pick_owner(humans, rng)
                    .map(|o| if roll < 0.06 { OwnerVal::Str(o.to_string()) } else { OwnerVal::Num(o) })
            };
            let created = GENERATED_NOW_MS - rng.random_range(0..365 * 86_400_000i64);
            let updated = created + rng.random_range(0..86_400_000i64);
            let email = format!("{f}.{l}.{i}@{company}.example");
            let contact = SimContact {
                id,
                name: format!("{} {}", cap(f), cap(l)),
                phone: (i % 3 == 0).then(|| format!("+1555{:07}", i % 10_000_000)),
                company: Some(cap(company)),
                title: (i % 2 == 0).then(|| TITLES[i % TITLES.len()].to_string()),
                external_id: (i % 4 == 0).then(|| format!("crm-{i}")),
                owner,
                created_at: created,
                updated_at: updated,
                custom: Map::new(),
                email,
            };
            org.index_email(&contact.email, id);
            org.contacts.insert(id, contact);
            // Every contact has had at least one conversation; some have two.
            let convs = if i % 5 == 0 { 2 } else { 1 };
            for k in 0..convs {
                org.add_conversation(id, created + k * 3_600_000, updated + k * 3_600_000);
            }
        }
    }

    fn generate_accounts(&mut self, cfg: &SimConfig, rng: &mut StdRng, humans: &[u64]) {
        let org = self;
        let n_accounts = cfg.accounts.unwrap_or(cfg.agents * 3);
        for i in 0..n_accounts {
            let company = COMPANIES[i % COMPANIES.len()];
            let created = GENERATED_NOW_MS - rng.random_range(0..365 * 86_400_000i64);
            org.accounts.push(SimAccount {
                id: format!("acct-{}", 7_000_001 + i),
                name: format!("{} {}", cap(company), i),
                domain: format!("{company}{i}.example"),
                owner_id: if i % 10 == 9 { None } else { pick_owner(humans, rng) },
                created_at: created,
                updated_at: created,
            });
        }
    }

    /// A new, empty contact with the next id (not yet inserted).
    pub fn new_contact(&mut self, email: &str, now_ms: i64) -> SimContact {
        let id = self.next_contact_id;
        self.next_contact_id += 1;
        SimContact {
            id,
            email: email.to_string(),
            name: String::new(),
            phone: None,
            company: None,
            title: None,
            external_id: None,
            owner: None,
            created_at: now_ms,
            updated_at: now_ms,
            custom: Map::new(),
        }
    }

    /// Inserts a contact and indexes its email.
    pub fn insert_contact(&mut self, c: SimContact) {
        self.index_email(&c.email, c.id);
        self.contacts.insert(c.id, c);
    }

    pub fn index_email(&mut self, email: &str, id: u64) {
        self.by_email.entry(email.to_ascii_lowercase()).or_default().push(id);
    }

    pub fn unindex_email(&mut self, email: &str, id: u64) {
        let key = email.to_ascii_lowercase();
        if let Some(ids) = self.by_email.get_mut(&key) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.by_email.remove(&key);
            }
        }
    }

    pub fn add_conversation(&mut self, contact_id: u64, created_at: i64, updated_at: i64) -> u64 {
        let id = self.next_conversation_id;
        self.next_conversation_id += 1;
        let status = ["open", "closed", "pending"][(id % 3) as usize];
        self.conversations.insert((-updated_at, id), Conversation { id, contact_id, status, created_at, updated_at });
        id
    }

    pub fn contacts_by_email(&self, email: &str) -> Vec<&SimContact> {
        self.by_email
            .get(&email.to_ascii_lowercase())
            .map(|ids| ids.iter().filter_map(|id| self.contacts.get(id)).collect())
            .unwrap_or_default()
    }
}

impl SimContact {
    /// The contact as the profile serves it.
    pub fn to_json(&self, profile: Profile) -> Value {
        let mut attrs = Map::new();
        attrs.insert("email".into(), json!(self.email));
        attrs.insert("name".into(), json!(self.name));
        if let Some(p) = &self.phone {
            attrs.insert("phone".into(), json!(p));
        }
        if let Some(c) = &self.company {
            attrs.insert("company".into(), json!(c));
        }
        if let Some(t) = &self.title {
            attrs.insert("title".into(), json!(t));
        }
        if let Some(x) = &self.external_id {
            attrs.insert("externalId".into(), json!(x));
        }
        if let Some(o) = &self.owner {
            attrs.insert("ownerId".into(), o.to_json());
        }
        for (k, v) in &self.custom {
            attrs.insert(k.clone(), v.clone());
        }
        match profile {
            Profile::Seed => {
                let mut top = attrs;
                top.insert("id".into(), json!(self.id));
                top.insert("createdAt".into(), json!(self.created_at));
                top.insert("updatedAt".into(), json!(self.updated_at));
                Value::Object(top)
            }
            Profile::Drift => {
                attrs.insert("updatedAt".into(), json!(self.updated_at));
                attrs.insert("tags".into(), json!([]));
                json!({"id": self.id, "createdAt": self.created_at, "attributes": attrs})
            }
        }
    }
}

impl SimUser {
    pub fn to_rest_json(&self, org_id: u64) -> Value {
        json!({
            "id": self.id, "orgId": org_id, "name": self.name, "alias": self.given_name,
            "email": self.email, "locale": "en-US", "availability": if self.active { "AVAILABLE" } else { "OFFLINE" },
            "role": self.role, "timeZone": "America/New_York",
            "avatarUrl": format!("https://avatars.example/{}.png", self.id),
            "verified": true, "bot": self.bot, "createdAt": self.created_at, "updatedAt": self.updated_at,
        })
    }

    pub fn to_scim_json(&self) -> Value {
        let role = if self.role == "admin" { "ADMIN" } else { "MEMBER" };
        let mut v = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": self.id.to_string(),
            "externalId": self.external_id,
            "userName": self.email,
            "name": {"formatted": self.name, "givenName": self.given_name, "familyName": self.family_name},
            "displayName": self.name,
            "active": self.active,
            "emails": [{"value": self.email, "primary": true, "type": "work"}],
            "roles": [{"value": role, "primary": true}],
            "meta": {
                "resourceType": "User",
                "created": rfc3339(self.created_at),
                "lastModified": rfc3339(self.updated_at),
                "version": format!("W/\"{}\"", self.updated_at),
                "location": format!("/scim/v2/Users/{}", self.id),
            },
        });
        if let Some(obj) = v.as_object_mut() {
            if self.external_id.is_none() {
                obj.remove("externalId");
            }
            if self.scim_managed {
                for k in ["name", "emails", "roles"] {
                    obj.remove(k);
                }
            }
            if self.active_unset {
                obj.remove("active");
            }
            for (k, x) in &self.scim_attrs {
                obj.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

/// Epoch milliseconds as an RFC 3339 UTC timestamp (SCIM's `dateTime`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl SimAccount {
    pub fn to_json(&self) -> Value {
        json!({
            "accountId": self.id, "name": self.name, "domain": self.domain, "ownerId": self.owner_id,
            "customProperties": [], "deleted": false, "createDateTime": self.created_at,
            "updateDateTime": self.updated_at, "targeted": false,
        })
    }
}

impl Conversation {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "status": self.status, "contactId": self.contact_id, "inboxId": 1,
               "createdAt": self.created_at, "updatedAt": self.updated_at})
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_764_000_000_000), "2025-11-24T16:00:00Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
