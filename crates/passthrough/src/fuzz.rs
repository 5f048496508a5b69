//! Property tests (proptest, on the stable toolchain): whatever the values,
//! a rendered request keeps the structure of its template.
//!
//! Templates are generated with placeholders in every place a URL, a header
//! and each body format allow; values are hostile strings. Each request
//! either fails closed (a value that would turn a path segment into `.` or
//! `..`, or that cannot be a header value) or keeps the template's method,
//! scheme, host, port, path segments, query keys and body structure, with
//! every value arriving as itself.
//!
//! Inputs worth keeping are in `fixtures/fuzz/passthrough-values.txt`,
//! replayed by `the_corpus_keeps_structure`; proptest records the seeds of
//! any failure it finds in `fixtures/fuzz/proptest-regressions/`.

use std::net::IpAddr;

use gatehouse_core::{Device, Email, OrgId, Password, User, UserId};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

use crate::config::{DataAs, HttpAction, RestAuthConfig};
use crate::connector::{RestConnector, Values};
use crate::template::Placeholder;
use gatehouse_outbound::OutboundClient;

/// One piece of a generated template: fixed text, or a placeholder with
/// fixed text before it.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Value { prefix: String, placeholder: Placeholder },
}

/// Placeholders that carry free text (ids and the address are the
/// platform's own).
const FREE: [Placeholder; 5] = [
    Placeholder::UserEmail,
    Placeholder::UserPassword,
    Placeholder::UserExternalId,
    Placeholder::DeviceOs,
    Placeholder::DeviceName,
];

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        "[a-z0-9]{1,6}".prop_map(Piece::Text),
        ("[a-z0-9]{0,3}", prop::sample::select(FREE.to_vec()))
            .prop_map(|(prefix, placeholder)| Piece::Value { prefix, placeholder }),
    ]
}

/// Values meant to break out: separators, dots, escapes, quotes, markup,
/// placeholders, line breaks, non-ASCII, and anything at all.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[./\\\\%?#&=+;:@ \"'<>{}\\[\\]a-z2eE]{0,12}",
        prop::sample::select(vec![
            "..",
            ".",
            "%2e%2e",
            ".%2E",
            "..%2F..",
            "..\\..",
            "/",
            "?a=b",
            "#x",
            "{{USERPASSWORD}}",
            "\r\nX-Injected: yes",
            "\u{0}",
            "]]>",
            "<!--",
            "\u{202e}",
            "é😀",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ]
}

#[derive(Debug)]
struct Case {
    path: Vec<Piece>,
    query: Vec<(String, Piece)>,
    action: HttpAction,
    data_as: DataAs,
    values: [String; 5],
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(piece(), 1..5),
        prop::collection::vec(("[a-z]{1,4}", piece()), 0..4),
        prop::sample::select(vec![HttpAction::Post, HttpAction::Put, HttpAction::Get]),
        prop::sample::select(vec![DataAs::Json, DataAs::UrlEncoded, DataAs::Xml]),
        [hostile(), hostile(), hostile(), hostile(), hostile()],
    )
        .prop_map(|(path, query, action, data_as, values)| Case { path, query, action, data_as, values })
}

impl Case {
    fn value(&self, p: Placeholder) -> &str {
        &self.values[FREE.iter().position(|f| *f == p).expect("a free-text placeholder")]
    }

    fn template(piece: &Piece) -> String {
        match piece {
            Piece::Text(t) => t.clone(),
            Piece::Value { prefix, placeholder } => format!("{prefix}{placeholder}"),
        }
    }

    fn expected(&self, piece: &Piece) -> String {
        match piece {
            Piece::Text(t) => t.clone(),
            Piece::Value { prefix, placeholder } => format!("{prefix}{}", self.value(*placeholder)),
        }
    }

    fn url(&self) -> String {
        let path: Vec<String> = self.path.iter().map(Self::template).collect();
        let mut url = format!("https://auth.example.com:8443/{}", path.join("/"));
        if !self.query.is_empty() {
            let query: Vec<String> =
                self.query.iter().map(|(k, v)| format!("{k}={}", Self::template(v))).collect();
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }

    fn body(&self) -> String {
        let names = ["email", "password", "external", "os", "device"];
        match self.data_as {
            DataAs::Json => {
                let fields: Vec<String> =
                    FREE.iter().zip(names).map(|(p, k)| format!("\"{k}\":\"{p}\"")).collect();
                format!("{{{}}}", fields.join(","))
            }
            DataAs::UrlEncoded => {
                let fields: Vec<String> = FREE.iter().zip(names).map(|(p, k)| format!("{k}={p}")).collect();
                fields.join("&")
            }
            DataAs::Xml => format!(
                "<login email=\"{}\"><password>{}</password><external>{}</external><os>{}</os><device>{}</device></login>",
                FREE[0], FREE[1], FREE[2], FREE[3], FREE[4]
            ),
        }
    }

    /// Whether a correct renderer must refuse: a path segment that reads as
    /// `.` or `..` (once decoded, with `\` taken as `/`), or a value that
    /// cannot be a header value.
    fn must_fail(&self) -> bool {
        let dot_segment = self
            .path
            .iter()
            .any(|p| self.expected(p).split(['/', '\\']).any(|piece| piece == "." || piece == ".."));
        let device = self.value(Placeholder::DeviceName);
        let bad_header = device.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
            || http::HeaderValue::from_bytes(device.as_bytes()).is_err();
        dot_segment || bad_header
    }
}

fn user(case: &Case) -> User {
    User {
        id: UserId::new(),
        org_id: OrgId::new(),
        email: Some(Email::from_trusted(case.value(Placeholder::UserEmail).to_owned())),
        display_name: "Fuzz".into(),
        external_id: Some(case.value(Placeholder::UserExternalId).to_owned()),
        active: true,
        password_hash: None,
        user_name: None,
        scim_resource: None,
        version: 1,
        role: gatehouse_core::Role::Member,
        created_via: gatehouse_core::Origin::Admin,
        created_at: chrono::DateTime::UNIX_EPOCH,
        updated_at: chrono::DateTime::UNIX_EPOCH,
    }
}

/// XML 1.0 cannot carry most control characters; the escaper sends U+FFFD
/// in their place, and that is what a service reads back.
fn as_xml_carries(value: &str) -> String {
    value
        .chars()
        .map(|c| if (c as u32) < 0x20 && !matches!(c, '\t' | '\r' | '\n') { '\u{FFFD}' } else { c })
        .collect()
}

fn xml_fields(body: &[u8]) -> Vec<(String, String)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let (mut out, mut current, mut raw) = (Vec::new(), None::<String>, String::new());
    loop {
        match reader.read_event().expect("the body is well-formed XML") {
            Event::Start(e) => {
                for a in e.attributes() {
                    let a = a.unwrap();
                    out.push((
                        String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                        a.normalized_value(quick_xml::XmlVersion::Implicit1_0).unwrap().into_owned(),
                    ));
                }
                current = Some(String::from_utf8(e.name().as_ref().to_vec()).unwrap());
                raw.clear();
            }
            Event::Text(t) => raw.push_str(&t.decode().unwrap()),
            Event::GeneralRef(r) => raw.push_str(&format!("&{};", r.decode().unwrap())),
            Event::End(_) => {
                if let Some(tag) = current.take() {
                    out.push((tag, quick_xml::escape::unescape(&raw).unwrap().into_owned()));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

/// Renders `case` and checks the request it makes.
fn check(case: &Case) -> Result<(), TestCaseError> {
    let config = RestAuthConfig {
        authentication_url: case.url(),
        http_action: case.action,
        data_as: case.data_as,
        http_auth_type: Default::default(),
        headers: vec![crate::HeaderTemplate {
            name: "X-Device".into(),
            value: Some("{{DEVICENAME}}".into()),
        }],
        body: Some(case.body()),
        forgot_password_url: None,
        timeout_ms: 1000,
        allow_insecure_http: false,
    };
    let auth = config
        .validate()
        .map_err(|e| TestCaseError::fail(format!("a generated template is invalid: {e}")))?;
    let client = OutboundClient::new(false).expect("a client");
    let user = user(case);
    let device = Device {
        os: Some(case.value(Placeholder::DeviceOs).to_owned()),
        name: Some(case.value(Placeholder::DeviceName).to_owned()),
        ip: Some(IpAddr::from([203, 0, 113, 7])),
    };
    let password = Password::new(case.value(Placeholder::UserPassword).to_owned());
    let values = Values::of(&user, Some(password.expose()), &device).unwrap();
    let prepared = RestConnector::new(&client, &auth).prepare(&auth.url, true, &values);
    let request = match (prepared, case.must_fail()) {
        (Err(_), true) => return Ok(()),
        (Err(e), false) => return Err(TestCaseError::fail(format!("refused a safe request: {e}"))),
        (Ok(_), true) => return Err(TestCaseError::fail("sent a request that changes its structure")),
        (Ok(p), false) => p,
    };

    prop_assert_eq!(&request.method, &case.action.method());
    let url = &request.url;
    prop_assert_eq!(
        (url.scheme(), url.host_str(), url.port()),
        ("https", Some("auth.example.com"), Some(8443))
    );
    let segments: Vec<String> = url
        .path_segments()
        .expect("a path")
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let expected: Vec<String> = case.path.iter().map(|p| case.expected(p)).collect();
    prop_assert_eq!(segments, expected);
    let query: Vec<(String, String)> =
        url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let expected: Vec<(String, String)> =
        case.query.iter().map(|(k, v)| (k.clone(), case.expected(v))).collect();
    prop_assert_eq!(query, expected);
    prop_assert_eq!(
        request.headers.get("x-device").map(|v| v.as_bytes().to_vec()),
        Some(case.value(Placeholder::DeviceName).as_bytes().to_vec())
    );

    let names = ["email", "password", "external", "os", "device"];
    let expected: Vec<(String, String)> =
        names.iter().zip(FREE).map(|(k, p)| (k.to_string(), case.value(p).to_owned())).collect();
    match (&request.body, case.action, case.data_as) {
        (None, HttpAction::Get, _) => {}
        (Some(body), _, DataAs::Json) => {
            let parsed: Value = serde_json::from_slice(body).expect("the body is JSON");
            let object = parsed.as_object().expect("an object");
            prop_assert_eq!(object.len(), names.len(), "no key added or lost");
            for (k, v) in &expected {
                prop_assert_eq!(object[k].as_str(), Some(v.as_str()));
            }
        }
        (Some(body), _, DataAs::UrlEncoded) => {
            let pairs: Vec<(String, String)> =
                url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            prop_assert_eq!(pairs, expected);
        }
        (Some(body), _, DataAs::Xml) => {
            let mut fields = xml_fields(body);
            fields.sort();
            let mut expected: Vec<(String, String)> =
                expected.into_iter().map(|(k, v)| (k, as_xml_carries(&v))).collect();
            expected.sort();
            prop_assert_eq!(fields, expected);
        }
        (body, action, _) => return Err(TestCaseError::fail(format!("{action:?} with body {body:?}"))),
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "../../fixtures/fuzz/proptest-regressions/passthrough.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rendered_requests_keep_their_structure(case in case()) {
        check(&case)?;
    }
}

/// Every value kept in the corpus, in every place, keeps the structure.
#[test]
fn the_corpus_keeps_structure() {
    let corpus = include_str!("../../../fixtures/fuzz/passthrough-values.txt");
    let values: Vec<String> = corpus
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| serde_json::from_str::<String>(l).expect("each line is a JSON string"))
        .collect();
    assert!(values.len() > 10);
    let pieces = |p: Placeholder| {
        vec![Piece::Text("login".into()), Piece::Value { prefix: String::new(), placeholder: p }]
    };
    for value in &values {
        for (placeholder, data_as) in
            FREE.iter().zip([DataAs::Json, DataAs::Xml, DataAs::UrlEncoded, DataAs::Json, DataAs::Xml])
        {
            let mut vals: [String; 5] = Default::default();
            for v in vals.iter_mut() {
                v.clone_from(value);
            }
            let case = Case {
                path: pieces(*placeholder),
                query: vec![("q".into(), Piece::Value { prefix: String::new(), placeholder: *placeholder })],
                action: HttpAction::Post,
                data_as,
                values: vals,
            };
            if let Err(e) = check(&case) {
                panic!("{value:?} as {placeholder}: {e}");
            }
        }
    }
}
