//! Hostile input, generated: whatever arrives in Drift's records, webhook deliveries, rate and
//! schedule strings or configuration files, parsing answers with a value or an error, never a
//! panic; and what is valid reads back as itself.

use idgraph::app::scheduler::FullSchedule;
use idgraph::app::settings::{Env, FileConfig, Flags, Settings};
use idgraph_crawler::BudgetConfig;
use idgraph_model::{webhook_hint, Account, Contact, ScimUser, User};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Arbitrary JSON, a few levels deep, with the field names Drift's records use.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9@._ -]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let key = prop_oneof![
            Just("id".to_string()),
            Just("ownerId".to_string()),
            Just("attributes".to_string()),
            Just("email".to_string()),
            Just("updatedAt".to_string()),
            Just("userName".to_string()),
            Just("active".to_string()),
            Just("type".to_string()),
            Just("data".to_string()),
            Just("diff".to_string()),
            Just("endUserId".to_string()),
            "[a-z]{1,6}".prop_map(String::from),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn records_and_deliveries_never_panic(v in json_value()) {
        let _ = Contact::from_json(&v);
        let _ = User::from_json(&v);
        let _ = ScimUser::from_json(&v);
        let _ = Account::from_json(&v);
        let _ = webhook_hint(&v);
        let _ = webhook_hint(&json!({"type": "contact_updated", "data": v.clone()}));
        let _ = webhook_hint(&json!({"type": "contact_identified", "data": v}));
    }

    #[test]
    fn rate_and_schedule_strings_never_panic(s in "\\PC{0,24}") {
        let _ = s.parse::<BudgetConfig>();
        let _ = s.parse::<FullSchedule>();
        let _ = s.parse::<drift_sim::Churn>();
        let _ = toml::from_str::<FileConfig>(&s);
    }

    #[test]
    fn valid_rates_read_back(n in 1u32..100_000, per in prop::sample::select(vec!["s", "min", "h"])) {
        let b: BudgetConfig = format!("{n}/{per}").parse().unwrap();
        let secs = match per { "s" => 1.0, "min" => 60.0, _ => 3600.0 };
        prop_assert!((b.per_second() - f64::from(n) / secs).abs() < 1e-9);
    }

    #[test]
    fn contacts_read_back_as_themselves(id in 1u64..u64::MAX / 2, owner in proptest::option::of(1u64..1 << 40), at in 0i64..1 << 45) {
        let c = json!({"id": id, "attributes": {"email": "a@b.example", "ownerId": owner, "updatedAt": at}});
        let parsed = Contact::from_json(&c).unwrap();
        prop_assert_eq!((parsed.id, parsed.owner_id), (id, owner));
    }

    #[test]
    fn configuration_files_parse_or_say_why(share in -2.0f64..3.0, every in "[0-9]{1,3}[smh]") {
        let text = format!("refresh_share = {share}\nagents_every = \"{every}\"\n");
        let file: FileConfig = toml::from_str(&text).unwrap();
        let r = Settings::resolve(&Flags::default(), &file, &Env::default());
        prop_assert_eq!(r.is_ok(), (0.0..=1.0).contains(&share), "{:?}", r.err().map(|e| e.to_string()));
    }
}
