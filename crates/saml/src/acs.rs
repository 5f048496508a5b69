//! Validating what the IdP posts to the ACS, in the order
//! `docs/identity-providers.md` §2.2 gives, failing closed:
//!
//! 1. size, base64, UTF-8; no DTD, no processing instruction, no comment;
//! 2. the shape, read once with a namespace-aware parser: a `Response` root
//!    with exactly one assertion (plain or encrypted), and which elements
//!    carry a signature referencing their own id: the connection's policy
//!    (assertion, response or both) must be met;
//! 3. samael (xmlsec): every signature verified against the pinned IdP
//!    certificates only (never `KeyInfo`), allowed algorithms only, the
//!    document reduced to the bytes that were digested;
//! 4. those bytes read (`assertion.rs`), and Destination, Issuer, Audience,
//!    Recipient, InResponseTo and the time window with skew checked by the
//!    caller's clock;
//! 5. the identity, read from the verified assertion only.
//!
//! Replay (the assertion id seen before) is the caller's, in the database.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use samael::crypto::{CryptoProvider, ReduceMode, XmlSec};

use crate::assertion::{self, Assertion, Expected};
use crate::config::SignedParts;
use crate::sp::Sp;

/// The largest `SAMLResponse` form value taken, base64.
pub const MAX_RESPONSE_BASE64: usize = 256 * 1024;
/// How deeply elements may nest. A Ping response nests about eight deep
/// (Response, Assertion, AttributeStatement, Attribute, value; the
/// signature's KeyInfo and X509Data); libxml2, which reads it next, gives up
/// at 256 and needs no deeper input to be fed to it.
pub(crate) const MAX_DEPTH: usize = 64;
/// How many attributes, namespace declarations included, one element may
/// have. A SAML element has a handful; an element with tens of thousands is
/// an attempt on the parser's time (the duplicate check over them was
/// quadratic in the XML parser this crate used before quick-xml 0.41).
pub(crate) const MAX_ATTRIBUTES: usize = 64;
/// How long after its `IssueInstant` a response or an assertion is taken,
/// before the connection's clock skew is added.
const MAX_ISSUE_DELAY: chrono::Duration = chrono::Duration::minutes(5);

pub(crate) const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
pub(crate) const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
const DSIG_NS: &[u8] = b"http://www.w3.org/2000/09/xmldsig#";

/// The value of an element's unprefixed attribute `name`, read as XML reads
/// it (references resolved, white space normalised). Every attribute is
/// looked at, so a name given twice is refused, not read either way.
pub(crate) fn attribute(e: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, AcsError> {
    let malformed = |e: &dyn std::fmt::Display| AcsError::Malformed(e.to_string());
    let mut found = None;
    for a in e.attributes() {
        let a = a.map_err(|e| malformed(&e))?;
        if a.key.as_ref() == name {
            found = Some(
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map_err(|e| malformed(&e))?
                    .into_owned(),
            );
        }
    }
    Ok(found)
}

/// Why a response was refused. [`AcsError::reason`] is the stable code for
/// the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcsError {
    #[error("the response is too large")]
    TooLarge,
    #[error("the response is not base64 of UTF-8 XML")]
    NotXml,
    #[error("the response has a DOCTYPE, a processing instruction or a comment")]
    ForbiddenMarkup,
    #[error("the response is malformed: {0}")]
    Malformed(String),
    #[error("the response must hold exactly one assertion; it holds {0}")]
    AssertionCount(usize),
    #[error("the {0} is not signed, and the connection requires it")]
    Unsigned(&'static str),
    #[error("the response answers no request, and IdP-initiated sign-in is off")]
    Unsolicited,
    #[error("the response answers a request, but not this sign-in's")]
    InResponseTo,
    #[error("the signature does not verify with the IdP's certificates")]
    BadSignature,
    #[error("the response is for another destination")]
    WrongDestination,
    #[error("the response or assertion is from another issuer")]
    WrongIssuer,
    #[error("the assertion is for another audience")]
    WrongAudience,
    #[error("the assertion is for another recipient")]
    WrongRecipient,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion is not valid yet")]
    NotYetValid,
    #[error("the IdP reports failure: {0}")]
    IdpStatus(String),
    #[error("the assertion has no NameID")]
    NoNameId,
    #[error("the encrypted assertion was refused: {0}")]
    Decryption(String),
    #[error("the response was refused: {0}")]
    Invalid(String),
}

impl AcsError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NotXml => "not_xml",
            Self::ForbiddenMarkup => "forbidden_markup",
            Self::Malformed(_) => "malformed",
            Self::AssertionCount(_) => "assertion_count",
            Self::Unsigned(_) => "unsigned",
            Self::Unsolicited => "unsolicited",
            Self::InResponseTo => "in_response_to_mismatch",
            Self::BadSignature => "invalid_signature",
            Self::WrongDestination => "wrong_destination",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::WrongRecipient => "wrong_recipient",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IdpStatus(_) => "idp_status",
            Self::NoNameId => "no_name_id",
            Self::Decryption(_) => "decryption_failed",
            Self::Invalid(_) => "invalid_response",
        }
    }
}

/// Who signed in, from the verified assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlIdentity {
    /// The NameID.
    pub subject: String,
    pub name_id_format: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// The value of the connection's `external_id_attribute`, to match
    /// against SCIM `externalId`.
    pub external_id: Option<String>,
    /// For the replay cache: the assertion's id, and the time from which
    /// it would be refused anyway (the end of its window or of its issue's
    /// delay, whichever comes first, with the skew), so that it is
    /// remembered for as long as it could be accepted, and no longer.
    pub assertion_id: String,
    pub valid_until: DateTime<Utc>,
}

/// True when the text declares a DTD (`<!DOCTYPE`, `<!ENTITY`), in any case,
/// anywhere (even where a parser would not read it as one).
///
/// Runs on every response before any parser sees it, so it looks only at
/// the places that can start one: each `<!`, found with SIMD search.
pub fn has_dtd(xml: &str) -> bool {
    let bytes = xml.as_bytes();
    memchr::memmem::find_iter(bytes, b"<!").any(|at| {
        let rest = &bytes[at + 2..];
        let starts = |word: &[u8]| rest.get(..word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word));
        starts(b"doctype") || starts(b"entity")
    })
}

/// True when the text holds a comment, or a processing instruction other
/// than a leading XML declaration, anywhere: looked for in the text, not
/// left to the parser, which may read one as something else (quick-xml
/// reads `<<!---->` as an element named `<!----`), while the parser that
/// verifies the signature reads it as a comment or refuses the document.
pub(crate) fn has_hidden_markup(xml: &str) -> bool {
    let body =
        xml.strip_prefix("<?xml ").and_then(|rest| rest.split_once("?>")).map_or(xml, |(_, body)| body);
    body.contains("<!--") || body.contains("<?")
}

/// What the structural pass found.
#[derive(Debug, Default)]
struct Shape {
    root_is_response: bool,
    in_response_to: Option<String>,
    destination: Option<String>,
    assertions: usize,
    encrypted: bool,
    assertion_id: Option<String>,
    assertion_is_child_of_root: bool,
    response_signed: bool,
    assertion_signed: bool,
}

/// One namespace-aware pass over the document.
fn shape(xml: &str) -> Result<Shape, AcsError> {
    let mut reader = NsReader::from_str(xml);
    let mut shape = Shape::default();
    // The open elements: (is Response, is Assertion, their ID).
    let mut stack: Stack = Vec::new();
    // Inside a Signature: which element it is a child of, and its reference.
    let mut signature: Option<(usize, Option<String>)> = None;
    loop {
        let event = reader.read_event().map_err(|e| AcsError::Malformed(e.to_string()))?;
        // Only the few names that matter are resolved to their namespace.
        let kind = |e: &quick_xml::events::BytesStart<'_>| {
            let wanted: &[u8] = match e.local_name().as_ref() {
                b"Response" => PROTOCOL_NS,
                b"Assertion" | b"EncryptedAssertion" => ASSERTION_NS,
                b"Signature" | b"Reference" => DSIG_NS,
                _ => return "other",
            };
            match reader.resolver().resolve_element(e.name()) {
                (ResolveResult::Bound(ns), local) if ns.as_ref() == wanted => match local.as_ref() {
                    b"Response" => "response",
                    b"Assertion" => "assertion",
                    b"EncryptedAssertion" => "encrypted",
                    b"Signature" => "signature",
                    _ => "reference",
                },
                _ => "other",
            }
        };
        match event {
            Event::DocType(_) | Event::PI(_) | Event::Comment(_) => return Err(AcsError::ForbiddenMarkup),
            // The bytes were decoded as UTF-8; a declaration naming another
            // encoding would make the next parser read them differently.
            Event::Decl(decl) => match decl.encoding() {
                None => {}
                Some(Ok(name)) if name.eq_ignore_ascii_case(b"utf-8") => {}
                Some(_) => return Err(AcsError::Malformed("an encoding other than UTF-8".into())),
            },
            Event::Start(_) if stack.len() >= MAX_DEPTH => {
                return Err(AcsError::Malformed(format!("elements nest more than {MAX_DEPTH} deep")));
            }
            Event::Start(e) | Event::Empty(e)
                if e.attributes().with_checks(false).count() > MAX_ATTRIBUTES =>
            {
                return Err(AcsError::Malformed(format!(
                    "an element has more than {MAX_ATTRIBUTES} attributes"
                )));
            }
            Event::Start(e) => open(&e, kind(&e), false, &mut stack, &mut signature, &mut shape)?,
            Event::Empty(e) => open(&e, kind(&e), true, &mut stack, &mut signature, &mut shape)?,
            Event::End(_) => close(&mut stack, &mut signature, &mut shape),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(shape)
}

type Stack = Vec<(&'static str, Option<String>)>;

fn open(
    e: &BytesStart<'_>,
    kind: &'static str,
    empty: bool,
    stack: &mut Stack,
    signature: &mut Option<(usize, Option<String>)>,
    shape: &mut Shape,
) -> Result<(), AcsError> {
    // Only these elements' ids matter: a signature counts only when it
    // references its own parent, the response or the assertion.
    let id = match kind {
        "response" | "assertion" | "encrypted" => attribute(e, b"ID")?,
        _ => None,
    };
    if stack.is_empty() {
        shape.root_is_response = kind == "response";
        shape.in_response_to = attribute(e, b"InResponseTo")?;
        shape.destination = attribute(e, b"Destination")?;
    }
    match kind {
        "assertion" | "encrypted" => {
            shape.assertions += 1;
            shape.encrypted |= kind == "encrypted";
            shape.assertion_id = id.clone();
            shape.assertion_is_child_of_root = stack.len() == 1;
        }
        "signature" if signature.is_none() => *signature = Some((stack.len(), None)),
        "reference" => {
            if let Some((_, reference)) = signature.as_mut()
                && reference.is_none()
            {
                *reference = Some(attribute(e, b"URI")?.unwrap_or_default());
            }
        }
        _ => {}
    }
    stack.push((kind, id));
    if empty {
        close(stack, signature, shape);
    }
    Ok(())
}

fn close(stack: &mut Stack, signature: &mut Option<(usize, Option<String>)>, shape: &mut Shape) {
    let Some((kind, _)) = stack.pop() else { return };
    if kind == "signature"
        && let Some((depth, reference)) = signature.take()
    {
        if depth != stack.len() {
            // A nested Signature closed; the outer one stays open.
            *signature = Some((depth, reference));
            return;
        }
        // The Signature's parent is the element now on top of the stack.
        if let (Some((parent, Some(parent_id))), Some(reference)) = (stack.last(), reference) {
            let references_parent = reference == format!("#{parent_id}");
            match *parent {
                "response" if references_parent && stack.len() == 1 => shape.response_signed = true,
                "assertion" if references_parent => shape.assertion_signed = true,
                _ => {}
            }
        }
    }
}

/// Everything checked before any signature, on what anyone can post: size,
/// base64, UTF-8, no DTD, and a shape with a `samlp:Response` root and
/// exactly one assertion as its child. Returns the XML and its shape.
fn precheck(saml_response: &str) -> Result<(String, Shape), AcsError> {
    if saml_response.len() > MAX_RESPONSE_BASE64 {
        return Err(AcsError::TooLarge);
    }
    // Form values are sometimes wrapped in lines: decoded again without them
    // only when the value as sent is not plain base64.
    let bytes = STANDARD
        .decode(saml_response)
        .or_else(|_| {
            let compact: Vec<u8> = saml_response.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            STANDARD.decode(compact)
        })
        .map_err(|_| AcsError::NotXml)?;
    let xml = String::from_utf8(bytes).map_err(|_| AcsError::NotXml)?;
    if has_dtd(&xml) || has_hidden_markup(&xml) {
        return Err(AcsError::ForbiddenMarkup);
    }
    let shape = shape(&xml)?;
    if !shape.root_is_response {
        return Err(AcsError::Malformed("the root element is not a samlp:Response".into()));
    }
    if shape.assertions != 1 || !shape.assertion_is_child_of_root {
        return Err(AcsError::AssertionCount(shape.assertions));
    }
    Ok((xml, shape))
}

/// Validates a `SAMLResponse` form value for this SP at `now` (the
/// service's clock). `request_id` is the AuthnRequest this sign-in sent
/// (`None` for an IdP-initiated one). Blocking (xmlsec): call it off the
/// async runtime.
pub fn validate(
    sp: &Sp,
    saml_response: &str,
    request_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<SamlIdentity, AcsError> {
    let (xml, shape) = precheck(saml_response)?;
    let connection = &sp.connection;
    let assertion_required = matches!(connection.signed, SignedParts::Assertion | SignedParts::Both);
    let response_required = matches!(connection.signed, SignedParts::Response | SignedParts::Both)
        // Only the response's signature can be checked before decryption.
        || shape.encrypted;
    if response_required && !shape.response_signed {
        return Err(AcsError::Unsigned("response"));
    }
    if assertion_required && !shape.encrypted && !shape.assertion_signed {
        return Err(AcsError::Unsigned("assertion"));
    }
    if shape.destination.as_deref().is_some_and(|d| d != sp.endpoints.acs_url) {
        return Err(AcsError::WrongDestination);
    }
    match (request_id, &shape.in_response_to) {
        (Some(expected), Some(found)) if expected == found => {}
        (Some(_), _) | (None, Some(_)) => return Err(AcsError::InResponseTo),
        (None, None) if connection.allow_idp_initiated => {}
        (None, None) => return Err(AcsError::Unsolicited),
    }
    // Every signature verified against the pinned certificates, with the
    // allowed algorithms only; what comes back is the very bytes xmlsec
    // digested (the canonical form of the signed element, samael's
    // `PreDigest`), samael's strictest reduction, and from here on
    // nothing is read from anywhere else.
    let verified = XmlSec::reduce_xml_to_signed_with_allowed_algorithms(
        &xml,
        &sp.idp_certs,
        ReduceMode::PreDigest,
        sp.algorithms.as_deref(),
    )
    .map_err(|_| AcsError::BadSignature)?;
    let signed = if shape.encrypted {
        // The response's signature covers the ciphertext; decrypted here.
        assertion::read(&crate::decrypt::decrypt_response(&sp.key, &verified)?)?
    } else {
        assertion::read(&verified)?
    };
    if !shape.encrypted && shape.assertion_id.as_deref() != Some(signed.assertion.id.as_str()) {
        return Err(AcsError::Invalid("the verified assertion is not the one in the response".into()));
    }
    let valid_until = signed.check(&Expected {
        idp_entity_id: &sp.idp_entity_id,
        sp_entity_id: &sp.endpoints.entity_id,
        acs_url: &sp.endpoints.acs_url,
        request_id,
        now,
        skew: connection.clock_skew,
        max_issue_delay: MAX_ISSUE_DELAY + connection.clock_skew,
    })?;
    identity(sp, signed.assertion, valid_until)
}

fn identity(sp: &Sp, assertion: Assertion, valid_until: DateTime<Utc>) -> Result<SamlIdentity, AcsError> {
    let connection = &sp.connection;
    let name_id = assertion.name_id.as_ref().ok_or(AcsError::NoNameId)?;
    if name_id.value.trim().is_empty() {
        return Err(AcsError::NoNameId);
    }
    let values = |name: &str| -> Vec<String> {
        assertion
            .attributes
            .iter()
            .filter(|a| a.name.as_deref() == Some(name) || a.friendly_name.as_deref() == Some(name))
            .flat_map(|a| a.values.iter())
            .cloned()
            .collect()
    };
    let email_format =
        name_id.format.as_deref() == Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress");
    let email = match &connection.email_attribute {
        Some(attribute) => values(attribute).into_iter().next(),
        None if email_format => Some(name_id.value.clone()),
        None => values("email").into_iter().next(),
    };
    let first = values(&connection.first_name_attribute).into_iter().next();
    let last = values(&connection.last_name_attribute).into_iter().next();
    let name = match (first, last) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (f, l) => f.or(l),
    };
    Ok(SamlIdentity {
        subject: name_id.value.clone(),
        name_id_format: name_id.format.clone(),
        email,
        name,
        groups: values(&connection.groups_attribute),
        external_id: connection
            .external_id_attribute
            .as_deref()
            .and_then(|a| values(a).into_iter().next())
            .filter(|v| !v.is_empty()),
        assertion_id: assertion.id.clone(),
        valid_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = r#"xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:ds="http://www.w3.org/2000/09/xmldsig#""#;

    fn signature(uri: &str) -> String {
        format!(r#"<ds:Signature><ds:SignedInfo><ds:Reference URI="{uri}"/></ds:SignedInfo></ds:Signature>"#)
    }

    #[test]
    fn the_shape_says_which_element_signs_itself() {
        let both = format!(
            r#"<samlp:Response {P} ID="r" InResponseTo="q" Destination="https://sp/acs"><saml:Issuer>i</saml:Issuer>{}<saml:Assertion ID="a"><saml:Issuer>i</saml:Issuer>{}</saml:Assertion></samlp:Response>"#,
            signature("#r"),
            signature("#a")
        );
        let s = shape(&both).unwrap();
        assert!(s.root_is_response && s.response_signed && s.assertion_signed);
        assert_eq!(
            (s.assertions, s.in_response_to.as_deref(), s.assertion_id.as_deref()),
            (1, Some("q"), Some("a"))
        );

        // A signature referencing another element does not sign its parent.
        let elsewhere = format!(
            r#"<samlp:Response {P} ID="r"><saml:Assertion ID="a">{}</saml:Assertion></samlp:Response>"#,
            signature("#r")
        );
        let s = shape(&elsewhere).unwrap();
        assert!(!s.assertion_signed && !s.response_signed);

        // Prefixes do not matter, namespaces do.
        let other_prefixes = r#"<p:Response xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:a="urn:oasis:names:tc:SAML:2.0:assertion" ID="r"><a:Assertion ID="x"/><a:EncryptedAssertion/></p:Response>"#;
        let s = shape(other_prefixes).unwrap();
        assert_eq!((s.assertions, s.encrypted), (2, true));
        let impostor = r#"<Response ID="r"><Assertion ID="a"/></Response>"#;
        assert!(!shape(impostor).unwrap().root_is_response);
    }

    mod fuzz {
        //! Property tests (proptest, on the stable toolchain) of the
        //! pre-checks, on documents built from the pieces attacks are made
        //! of. Whatever is posted is refused or passed on, never a panic; and
        //! what passes has no DTD, comment or processing instruction, a
        //! Response root and one assertion as its child. Inputs worth
        //! keeping are in `fixtures/fuzz/saml-prechecks.txt`.

        use proptest::prelude::*;
        use proptest::test_runner::FileFailurePersistence;

        use super::super::*;
        use super::P;

        fn config() -> ProptestConfig {
            ProptestConfig {
                failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
                    "../../fixtures/fuzz/proptest-regressions/saml.txt",
                ))),
                ..ProptestConfig::default()
            }
        }

        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "<saml:Assertion ID=\"a\">",
                    "</saml:Assertion>",
                    "<saml:Assertion ID=\"b\"/>",
                    "<saml:EncryptedAssertion>",
                    "</saml:EncryptedAssertion>",
                    "<ds:Signature>",
                    "</ds:Signature>",
                    "<ds:Reference URI=\"#a\"/>",
                    "<saml:NameID>",
                    "</saml:NameID>",
                    "<!---->",
                    "<?pi x?>",
                    "<!DOCTYPE x>",
                    "<!ENTITY e \"x\">",
                    "&e;",
                    "<![CDATA[x]]>",
                    "<samlp:Response ID=\"r\">",
                    "</samlp:Response>",
                    "<Assertion xmlns=\"urn:oasis:names:tc:SAML:2.0:assertion\">",
                    "</Assertion>",
                    "<x>",
                    "</x>",
                    "<",
                    ">",
                    "\u{0}",
                    "é",
                ])
                .prop_map(str::to_owned),
                "[a-z<>/=\"! ]{0,6}",
            ]
        }

        fn document() -> impl Strategy<Value = String> {
            (
                prop::option::of(Just("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")),
                prop::collection::vec(piece(), 0..12),
            )
                .prop_map(|(decl, inner)| {
                    format!(
                        "{}<samlp:Response {P} ID=\"r\">{}</samlp:Response>",
                        decl.unwrap_or(""),
                        inner.concat()
                    )
                })
        }

        /// What passes the pre-checks, judged without the code under test.
        fn acceptable(xml: &str) -> bool {
            let lower = xml.to_ascii_lowercase();
            !lower.contains("<!doctype")
                && !lower.contains("<!entity")
                && !xml.contains("<!--")
                && !xml.replacen("<?xml ", "", 1).contains("<?")
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn what_passes_has_no_dtd_and_one_assertion(xml in document()) {
                let posted = STANDARD.encode(&xml);
                if let Ok((_, shape)) = precheck(&posted) {
                    prop_assert!(acceptable(&xml), "passed: {}", xml);
                    prop_assert!(shape.root_is_response && shape.assertions == 1 && shape.assertion_is_child_of_root);
                }
            }

            #[test]
            fn any_post_is_refused_or_passed_on(posted in any::<String>()) {
                let _ = precheck(&posted);
            }

            #[test]
            fn any_bytes_are_refused_or_passed_on(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = precheck(&STANDARD.encode(bytes));
            }
        }

        #[test]
        fn the_corpus_is_refused() {
            let corpus = include_str!("../../../fixtures/fuzz/saml-prechecks.txt");
            let mut seen = 0;
            for line in corpus.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
                let xml: String = serde_json::from_str(line).expect("each line is a JSON string");
                let document = xml.replace("{P}", P);
                assert!(precheck(&STANDARD.encode(&document)).is_err(), "{document}");
                seen += 1;
            }
            assert!(seen > 5);
        }
    }

    #[test]
    fn nesting_and_encodings_are_bounded() {
        let nest = |n: usize| {
            format!(r#"<samlp:Response {P} ID="r">{}{}</samlp:Response>"#, "<x>".repeat(n), "</x>".repeat(n))
        };
        assert!(shape(&nest(MAX_DEPTH - 1)).is_ok());
        for n in [MAX_DEPTH, 100_000] {
            assert!(matches!(shape(&nest(n)), Err(AcsError::Malformed(m)) if m.contains("nest")), "{n}");
        }
        // Attributes and namespace declarations, counted before any is read.
        let root = |attributes: String| format!(r#"<samlp:Response {P} ID="r"{attributes}/>"#);
        let many = |n: usize, make: fn(usize) -> String| (0..n).map(make).collect::<String>();
        let attribute = |i: usize| format!(r#" a{i}="""#);
        let namespace = |i: usize| format!(r#" xmlns:n{i}="urn:n{i}""#);
        // The root already has four: its three namespaces and its ID.
        assert!(shape(&root(many(MAX_ATTRIBUTES - 4, attribute))).is_ok());
        for attributes in [many(MAX_ATTRIBUTES - 3, attribute), many(20_000, attribute)] {
            let outcome = shape(&root(attributes));
            assert!(
                matches!(&outcome, Err(AcsError::Malformed(m)) if m.contains("attributes")),
                "{outcome:?}"
            );
        }
        // quick-xml refuses a flood of namespace declarations first.
        let outcome = shape(&root(many(9_000, namespace)));
        assert!(matches!(&outcome, Err(AcsError::Malformed(m)) if m.contains("namespace")), "{outcome:?}");
        let with_decl = |decl: &str| format!(r#"{decl}<samlp:Response {P} ID="r"/>"#);
        for ok in [
            r#"<?xml version="1.0"?>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<?xml version='1.0' encoding='utf-8'?>"#,
        ] {
            assert!(shape(&with_decl(ok)).is_ok(), "{ok}");
        }
        for bad in [
            r#"<?xml version="1.0" encoding="UTF-16"?>"#,
            r#"<?xml version="1.0" encoding="ISO-8859-1"?>"#,
            r#"<?xml version="1.0" encoding="UTF-7"?>"#,
        ] {
            assert!(matches!(shape(&with_decl(bad)), Err(AcsError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn markup_that_hides_meaning_is_refused() {
        for bad in
            ["<!DOCTYPE r><r/>", "<r><!-- x --></r>", "<r><?pi x?></r>", r#"<r xmlns="x"><!doctype r></r>"#]
        {
            assert!(has_dtd(bad) || matches!(shape(bad), Err(AcsError::ForbiddenMarkup)), "{bad}");
        }
        assert!(has_dtd("<!ENTITY x 'y'>"));
        assert!(has_dtd("<r/><!EnTiTy"), "at the very end too");
        assert!(!has_dtd("<r>doctype</r>"));
        assert!(has_dtd("<r/>\n<!DocType r>") && has_dtd("<![CDATA[<!doctype r>]]>"));
        assert!(!has_dtd("<r/><!-- doctype -->") && !has_dtd("<r/><!doctyp") && !has_dtd("<r/><!"));
        // Found by the fuzz test below: quick-xml reads `<<!---->` as an
        // element name, so only the text search sees the comment.
        let hidden = format!(
            "<samlp:Response {P} ID=\"r\"><Assertion xmlns=\"urn:oasis:names:tc:SAML:2.0:assertion\">\
             <<!----><samlp:Response ID=\"r\"></samlp:Response>"
        );
        assert!(matches!(precheck(&STANDARD.encode(&hidden)), Err(AcsError::ForbiddenMarkup)));
        assert!(
            has_hidden_markup("<r><<?pi?></r>") && has_hidden_markup("<?xml version=\"1.0\"?><?pi?><r/>")
        );
        assert!(!has_hidden_markup("<?xml version=\"1.0\" encoding=\"UTF-8\"?><r>a ? b</r>"));
    }
}
