//! Introspection documents: recognised so that the standard introspection query of GraphiQL,
//! graphql-js (`getIntrospectionQuery`), Apollo tooling and the like passes, although it nests
//! deeper than the depth limit allows ordinary queries, while hostile introspection (a type's
//! fields' types' fields' ..., which multiplies the answer at every level) stays refused.

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, Selection, SelectionSet};

/// Introspection fields that answer a list of schema elements. The standard query nests at most
/// three of them on one path (`types { fields { args } }`); more only multiplies the answer.
const LIST_FIELDS: &[&str] =
    &["types", "fields", "args", "inputFields", "interfaces", "possibleTypes", "enumValues", "directives"];
const LIST_FIELDS_PER_PATH: usize = 3;
/// Guards the walk itself against documents built to be deep.
const WALK_DEPTH_MAX: usize = 40;

/// `None` when the operation to run selects an ordinary field (it goes to the ordinary schema,
/// with its limits); `Some(Ok(()))` when it selects only introspection (`__schema`, `__type`,
/// `__typename`) in an acceptable shape; `Some(Err(why))` when it is introspection built to be
/// expensive.
pub(crate) fn only_introspection(doc: &ExecutableDocument, operation: Option<&str>) -> Option<Result<(), String>> {
    let op = match (&doc.operations, operation) {
        (DocumentOperations::Single(op), _) => &op.node,
        (DocumentOperations::Multiple(ops), Some(name)) => &ops.iter().find(|(n, _)| n.as_str() == name)?.1.node,
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => &ops.values().next()?.node,
        _ => return None,
    };
    if !top_is_introspection(doc, &op.selection_set.node, 0) {
        return None;
    }
    Some(check_shape(doc, &op.selection_set.node, 0, 0))
}

fn top_is_introspection(doc: &ExecutableDocument, set: &SelectionSet, depth: usize) -> bool {
    if depth > WALK_DEPTH_MAX {
        return false;
    }
    set.items.iter().all(|s| match &s.node {
        Selection::Field(f) => f.node.name.node.starts_with("__"),
        Selection::InlineFragment(f) => top_is_introspection(doc, &f.node.selection_set.node, depth + 1),
        Selection::FragmentSpread(f) => doc
            .fragments
            .get(&f.node.fragment_name.node)
            .is_some_and(|d| top_is_introspection(doc, &d.node.selection_set.node, depth + 1)),
    })
}

fn check_shape(doc: &ExecutableDocument, set: &SelectionSet, depth: usize, lists: usize) -> Result<(), String> {
    if depth > WALK_DEPTH_MAX {
        return Err("the introspection query is nested too deep".into());
    }
    for s in &set.items {
        match &s.node {
            Selection::Field(f) => {
                let lists = lists + LIST_FIELDS.contains(&f.node.name.node.as_str()) as usize;
                if lists > LIST_FIELDS_PER_PATH {
                    return Err(format!(
                        "the introspection query nests more than {LIST_FIELDS_PER_PATH} lists ({}) on one path; \
                         the standard introspection query needs no more",
                        LIST_FIELDS.join(", ")
                    ));
                }
                check_shape(doc, &f.node.selection_set.node, depth + 1, lists)?;
            }
            Selection::InlineFragment(f) => check_shape(doc, &f.node.selection_set.node, depth + 1, lists)?,
            Selection::FragmentSpread(f) => {
                if let Some(d) = doc.fragments.get(&f.node.fragment_name.node) {
                    check_shape(doc, &d.node.selection_set.node, depth + 1, lists)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(q: &str) -> Option<Result<(), String>> {
        only_introspection(&async_graphql::parser::parse_query(q).unwrap(), None)
    }

    #[test]
    fn ordinary_queries_are_not_introspection() {
        assert_eq!(check("{ indexStatus { generation } }"), None);
        assert_eq!(check("{ __typename indexStatus { generation } }"), None);
    }

    #[test]
    fn standard_shapes_pass_and_multiplying_ones_do_not() {
        assert_eq!(check("{ __schema { types { fields { args { type { ofType { name } } } } } } }"), Some(Ok(())));
        assert_eq!(
            check("query Q { ...F } fragment F on Query { __type(name: \"Query\") { fields { name } } }"),
            Some(Ok(()))
        );
        assert!(matches!(
            check("{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"),
            Some(Err(_))
        ));
    }
}
