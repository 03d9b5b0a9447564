//! What a document costs, computed once per document, before validation, in time linear in its
//! text: every field selected counts, a fragment counts as many times as it is spread (its own
//! cost is computed once and remembered, so `{ ...F0 }` with each `F{i}` spreading `F{i+1}` twice
//! costs 2^24 without 2^24 steps), every alias counts, the fields that read the whole org are
//! priced at the org's size, and introspection is priced too. Documents over the limit are
//! refused before async-graphql validates them (its own checks expand fragments one spread at a
//! time).

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// The most a document may cost.
pub const COST_MAX: u64 = 50_000;

/// Fields that read the whole org: each selection (each alias) costs `whole_org_price`.
const WHOLE_ORG: [&str; 6] =
    ["auditReport", "auditSummary", "auditTimeline", "auditDocument", "orgAudit", "orphanTimeline"];
/// What introspection's roots cost.
const SCHEMA_PRICE: u64 = 1_000;
const TYPE_PRICE: u64 = 50;
/// Fragments spread within fragments deeper than this are refused outright.
const FRAGMENT_DEPTH_MAX: usize = 64;

/// A document's cost, apart from the org's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Fields selected (fragments expanded, aliases counted) and introspection.
    pub fields: u64,
    /// Selections of whole-org fields.
    pub whole_org: u64,
}

/// What reading the whole org once costs, at `contacts` contacts.
pub fn whole_org_price(contacts: usize) -> u64 {
    100 + contacts as u64 / 100
}

impl Cost {
    pub fn total(&self, contacts: usize) -> u64 {
        self.fields.saturating_add(self.whole_org.saturating_mul(whole_org_price(contacts)))
    }

    fn add(self, o: Cost) -> Cost {
        Cost { fields: self.fields.saturating_add(o.fields), whole_org: self.whole_org.saturating_add(o.whole_org) }
    }

    /// Checks the cost against the limit at the org's size; the refusal names the limit.
    pub fn check(&self, contacts: usize) -> Result<(), String> {
        let total = self.total(contacts);
        if total <= COST_MAX {
            return Ok(());
        }
        Err(format!(
            "the document costs {total}, more than the limit of {COST_MAX}: every field counts once per time it is selected (fragments as often as they are spread, each alias), a field that reads the whole org (auditReport, auditSummary, auditTimeline, auditDocument, orgAudit, orphanTimeline) {} at this org's size, __schema {SCHEMA_PRICE}, __type {TYPE_PRICE}",
            whole_org_price(contacts)
        ))
    }
}

/// The cost of every operation of `doc` together (whichever one runs costs no more).
pub fn cost(doc: &ExecutableDocument) -> Result<Cost, String> {
    let mut memo: HashMap<String, Cost> = HashMap::new();
    let mut total = Cost::default();
    for (_, op) in doc.operations.iter() {
        total = total.add(set_cost(doc, &op.node.selection_set.node, &mut memo, 0)?);
    }
    Ok(total)
}

fn set_cost(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    memo: &mut HashMap<String, Cost>,
    depth: usize,
) -> Result<Cost, String> {
    let mut c = Cost::default();
    for sel in &set.items {
        let part = match &sel.node {
            Selection::Field(f) => {
                let name = f.node.name.node.as_str();
                let own = Cost {
                    fields: 1 + match name {
                        "__schema" => SCHEMA_PRICE,
                        "__type" => TYPE_PRICE,
                        _ => 0,
                    },
                    whole_org: WHOLE_ORG.contains(&name) as u64,
                };
                own.add(set_cost(doc, &f.node.selection_set.node, memo, depth)?)
            }
            Selection::InlineFragment(i) => set_cost(doc, &i.node.selection_set.node, memo, depth)?,
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.as_str();
                match memo.get(name) {
                    Some(c) => *c,
                    None => {
                        if depth >= FRAGMENT_DEPTH_MAX {
                            return Err(format!(
                                "fragments are spread within fragments more than {FRAGMENT_DEPTH_MAX} deep"
                            ));
                        }
                        // An unknown fragment is validation's to report; a cycle is refused there
                        // too, and costs nothing more here (the guard entry stops the recursion).
                        let Some(frag) = doc.fragments.get(&s.node.fragment_name.node) else { continue };
                        memo.insert(name.to_string(), Cost::default());
                        let fc = set_cost(doc, &frag.node.selection_set.node, memo, depth + 1)?;
                        memo.insert(name.to_string(), fc);
                        fc
                    }
                }
            }
        };
        c = c.add(part);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(q: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(q).unwrap()
    }

    #[test]
    fn fragment_bombs_are_priced_as_expanded_in_linear_time() {
        let mut q = String::from("{ ...F0 }\n");
        for i in 0..24 {
            q.push_str(&format!("fragment F{i} on Query {{ ...F{} ...F{} }}\n", i + 1, i + 1));
        }
        q.push_str("fragment F24 on Query { __typename }\n");
        // 2^24 fields priced, from 25 fragments each priced once.
        let c = cost(&doc(&q)).unwrap();
        assert_eq!(c.fields, 1 << 24);
        assert!(c.check(0).unwrap_err().contains("limit of 50000"));
    }

    #[test]
    fn aliases_of_whole_org_fields_are_priced_at_the_orgs_size() {
        let one = cost(&doc("{ auditReport(all: true) }")).unwrap();
        assert!(one.check(1_000_000).is_ok(), "one audit of a million contacts is fine");
        let many: String = (0..1000).map(|i| format!("a{i}: auditReport(all: true) ")).collect();
        let c = cost(&doc(&format!("{{ {many} }}"))).unwrap();
        assert_eq!(c.whole_org, 1000);
        assert!(c.check(2_000).is_err(), "1,000 aliases are refused even at 2,000 contacts");
        let intro: String = (0..400).map(|i| format!("i{i}: __schema {{ types {{ name }} }} ")).collect();
        assert!(cost(&doc(&format!("{{ {intro} }}"))).unwrap().check(0).is_err());
        assert!(cost(&doc("{ __schema { types { name fields { name } } } }")).unwrap().check(0).is_ok());
    }
}
