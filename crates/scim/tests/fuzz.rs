//! Property tests (proptest, on the stable toolchain) for what SCIM clients
//! send: filters (and so PATCH paths) and PATCH bodies.
//!
//! - Any text given as a filter is parsed or refused, never a panic.
//! - A generated filter, written out, parses back to exactly the filter it
//!   was written from while within the bounds (length, nesting, terms), and
//!   is refused beyond them.
//! - Any PATCH body applied to a user is a resource or a 4xx error.
//!
//! The filters in `fixtures/fuzz/scim-filters.txt` are replayed with the
//! verdict each must get; proptest records the seeds of any failure in
//! `fixtures/fuzz/proptest-regressions/`.

use gatehouse_scim::filter::{
    self, AttrPath, CompareOp, Filter, MAX_DEPTH, MAX_FILTER_LEN, MAX_TERMS, instant, is_instant, is_ordering,
};
use gatehouse_scim::patch;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "../../fixtures/fuzz/proptest-regressions/scim.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// A filter with its text: the tree the parser must build from the text.
#[derive(Debug, Clone)]
struct Written {
    text: String,
    filter: Filter,
    /// Parentheses and value paths around the deepest comparison.
    depth: usize,
    terms: usize,
    /// An `and` or `or` at the top, which needs parentheses as an operand.
    binary: bool,
}

impl Written {
    /// As an operand of `and`/`or`: in parentheses if it is one itself, so
    /// that the text reads one way only.
    fn operand(&self) -> (String, usize) {
        if self.binary {
            (format!("({})", self.text), self.depth + 1)
        } else {
            (self.text.clone(), self.depth)
        }
    }
}

fn attr() -> impl Strategy<Value = (String, AttrPath)> {
    prop::sample::select(vec![
        ("userName", None, "username", None),
        ("DisplayName", None, "displayname", None),
        ("name.givenName", None, "name", Some("givenname")),
        ("meta.lastModified", None, "meta", Some("lastmodified")),
        ("title", None, "title", None),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:user"),
            "department",
            None,
        ),
    ])
    .prop_map(|(text, urn, attr, sub)| {
        (
            text.to_owned(),
            AttrPath { urn: urn.map(str::to_owned), attr: attr.to_owned(), sub: sub.map(str::to_owned) },
        )
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        "[\"\\\\()\\[\\] a-z.]{0,8}".prop_map(Value::String),
        (-1000i64..1000).prop_map(|n| json!(n)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

fn comparison() -> impl Strategy<Value = Written> {
    let op = prop::sample::select(vec![
        ("eq", CompareOp::Eq),
        ("NE", CompareOp::Ne),
        ("co", CompareOp::Co),
        ("sw", CompareOp::Sw),
        ("Ew", CompareOp::Ew),
        ("gt", CompareOp::Gt),
        ("ge", CompareOp::Ge),
        ("lt", CompareOp::Lt),
        ("le", CompareOp::Le),
    ]);
    prop_oneof![
        (attr(), op, value(), -100_000_000i64..100_000_000).prop_map(
            |((text, path), (op_text, op), value, at)| {
                // The meta instants order only by dateTimes (any other value
                // is refused, as `meta_instants_compare_only_with_date_times` shows).
                let value = if is_instant(&path) && is_ordering(op) {
                    let at = chrono::DateTime::from_timestamp_millis(1_790_000_000_000 + at).unwrap();
                    json!(at.to_rfc3339())
                } else {
                    value
                };
                Written {
                    text: format!("{text} {op_text} {value}"),
                    filter: Filter::Compare { path, op, value },
                    depth: 0,
                    terms: 1,
                    binary: false,
                }
            }
        ),
        attr().prop_map(|(text, path)| Written {
            text: format!("{text} pr"),
            filter: Filter::Present(path),
            depth: 0,
            terms: 1,
            binary: false,
        }),
    ]
}

fn written() -> impl Strategy<Value = Written> {
    comparison().prop_recursive(24, 64, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone(), any::<bool>()).prop_map(|(a, b, and)| {
                let ((a_text, a_depth), (b_text, b_depth)) = (a.operand(), b.operand());
                Written {
                    text: format!("{a_text} {} {b_text}", if and { "and" } else { "OR" }),
                    filter: if and {
                        Filter::And(Box::new(a.filter), Box::new(b.filter))
                    } else {
                        Filter::Or(Box::new(a.filter), Box::new(b.filter))
                    },
                    depth: a_depth.max(b_depth),
                    terms: a.terms + b.terms,
                    binary: true,
                }
            }),
            inner.clone().prop_map(|a| Written {
                text: format!("({})", a.text),
                filter: a.filter,
                depth: a.depth + 1,
                terms: a.terms,
                binary: false,
            }),
            inner.clone().prop_map(|a| Written {
                text: format!("not ({})", a.text),
                filter: Filter::Not(Box::new(a.filter)),
                depth: a.depth + 1,
                terms: a.terms,
                binary: false,
            }),
            inner.prop_map(|a| Written {
                text: format!("emails[{}]", a.text),
                filter: Filter::ValuePath {
                    attr: AttrPath { urn: None, attr: "emails".into(), sub: None },
                    filter: Box::new(a.filter),
                },
                depth: a.depth + 1,
                terms: a.terms + 1,
                binary: false,
            }),
        ]
    })
}

fn user() -> Value {
    json!({
        "id": "AbC-1", "userName": "Alice@Example.com", "externalId": "00u1", "active": true,
        "name": { "givenName": "Alice", "familyName": "Liddell" },
        "emails": [{ "type": "work", "value": "alice@work.example", "primary": true }],
        "meta": { "lastModified": "2026-11-28T10:00:00Z" },
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": { "department": "R&D" }
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_parsed_or_refused(text in any::<String>()) {
        if let Ok(f) = filter::parse(&text) {
            // Whatever parses can be evaluated.
            let _ = f.matches(&user());
        }
    }

    #[test]
    fn a_written_filter_reads_back_as_itself_within_the_bounds(w in written()) {
        let within = w.text.len() <= MAX_FILTER_LEN && w.depth <= MAX_DEPTH && w.terms <= MAX_TERMS;
        match filter::parse(&w.text) {
            Ok(parsed) if within => prop_assert_eq!(parsed, w.filter, "{}", w.text),
            Ok(_) => prop_assert!(false, "beyond the bounds, yet parsed: {}", w.text),
            Err(e) if within => prop_assert!(false, "refused a filter within the bounds: {} ({e})", w.text),
            Err(_) => {}
        }
    }

    #[test]
    fn meta_instants_compare_only_with_date_times(
        attr in prop::sample::select(vec!["meta.created", "META.LASTMODIFIED"]),
        op in prop::sample::select(vec!["eq", "ne", "gt", "ge", "lt", "le"]),
        value in value(),
    ) {
        let text = format!("{attr} {op} {value}");
        match (filter::parse(&text), instant(&value)) {
            (Ok(_), Some(_)) | (Err(_), None) => {}
            (Ok(_), None) => prop_assert!(false, "compared an instant with {value}: {text}"),
            (Err(e), Some(_)) => prop_assert!(false, "refused a dateTime: {text} ({e})"),
        }
    }

    #[test]
    fn any_patch_is_a_resource_or_a_client_error(
        ops in prop::collection::vec(
            (
                prop::sample::select(vec!["add", "Replace", "remove", "REMOVE", "copy", ""]),
                prop::option::of(prop_oneof![
                    prop::sample::select(vec![
                        "title", "emails", "emails[type eq \"work\"].value", "members[value eq \"x\"]",
                        "name.givenName", "active", "id", "manager", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                        "emails[", "a.b.c", "", "urn:", "x[y[z eq 1]]",
                    ]).prop_map(str::to_owned),
                    any::<String>(),
                ]),
                prop::option::of(prop_oneof![
                    Just(json!({ "active": "False", "name.familyName": "L" })),
                    Just(json!([{ "value": "x" }, null])),
                    any::<String>().prop_map(Value::String),
                    Just(Value::Null),
                    Just(json!({ "id": "other" })),
                ]),
            ),
            0..8,
        ),
        is_user in any::<bool>(),
    ) {
        let operations: Vec<Value> = ops
            .into_iter()
            .map(|(op, path, value)| {
                let mut o = json!({ "op": op });
                if let Some(p) = path { o["path"] = json!(p); }
                if let Some(v) = value { o["value"] = v; }
                o
            })
            .collect();
        let body = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations });
        match patch::apply(&user(), &body, is_user) {
            Ok(resource) => prop_assert!(resource.is_object()),
            Err(e) => prop_assert!((400..500).contains(&e.status), "{e:?}"),
        }
    }
}

/// The filters kept in the corpus get the verdict written beside them.
#[test]
fn the_filter_corpus_keeps_its_verdicts() {
    let corpus = include_str!("../../../fixtures/fuzz/scim-filters.txt");
    let mut seen = 0;
    for line in corpus.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (verdict, text) = line.split_once('\t').expect("verdict<TAB>filter");
        let text: String = serde_json::from_str(text).expect("the filter is a JSON string");
        let parsed = filter::parse(&text);
        match verdict {
            "ok" => assert!(parsed.is_ok(), "{text:?}: {parsed:?}"),
            "err" => assert!(parsed.is_err(), "{text:?} parsed"),
            other => panic!("unknown verdict {other}"),
        }
        seen += 1;
    }
    assert!(seen > 10);
    // The reproduction of issue 13's crash, too long for a line.
    for open in ["(", "not (", "emails["] {
        let close = if open == "emails[" { "]" } else { ")" };
        let deep = format!("{}userName eq \"a\"{}", open.repeat(5_000), close.repeat(5_000));
        assert!(filter::parse(&deep).is_err());
    }
}
