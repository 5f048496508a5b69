//! What was signed, read and judged: the element xmlsec verified (a
//! `Response` or an `Assertion`, as the canonical bytes it digested, or a
//! decrypted assertion inside a verified response) is read here, once, with
//! a namespace-aware parser, and its conditions are checked against the
//! caller's clock.
//!
//! Reading it here rather than through samael's schema does two things:
//! the time window is judged by the service's injected clock (samael reads
//! the wall clock), and the verified element is parsed once, by a reader that
//! keeps only what the checks and the identity use (samael's serde parse of
//! the whole schema cost more than our other checks together;
//! `docs/benchmarks.md`, "The assertion read by us").
//!
//! Values are taken only from where the SAML core schema puts them: the
//! `Subject` of an assertion nested in `Advice`, say, is never read as the
//! signed assertion's. An element that may appear once and appears twice is
//! refused, so that no reader can pick a different one than another.

use chrono::{DateTime, Duration, Utc};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::acs::{ASSERTION_NS, AcsError, MAX_DEPTH, PROTOCOL_NS, attribute};

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// The signed element as read.
#[derive(Debug, Default)]
pub(crate) struct Signed {
    /// Present when the verified element is the response.
    pub response: Option<ResponseFields>,
    pub assertion: Assertion,
}

#[derive(Debug, Default)]
pub(crate) struct ResponseFields {
    pub in_response_to: Option<String>,
    pub destination: Option<String>,
    pub issue_instant: Option<DateTime<Utc>>,
    pub issuer: Option<String>,
    /// The top-level `StatusCode`'s value.
    pub status: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Assertion {
    pub id: String,
    pub issue_instant: Option<DateTime<Utc>>,
    pub issuer: Option<String>,
    pub name_id: Option<NameId>,
    pub confirmations: Vec<Confirmation>,
    pub conditions: Option<Conditions>,
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Default)]
pub(crate) struct NameId {
    pub value: String,
    pub format: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Confirmation {
    pub method: Option<String>,
    pub data: Option<ConfirmationData>,
}

#[derive(Debug, Default)]
pub(crate) struct ConfirmationData {
    pub not_before: Option<DateTime<Utc>>,
    pub not_on_or_after: Option<DateTime<Utc>>,
    pub recipient: Option<String>,
    pub in_response_to: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Conditions {
    pub not_before: Option<DateTime<Utc>>,
    pub not_on_or_after: Option<DateTime<Utc>>,
    /// One list per `AudienceRestriction`.
    pub audiences: Vec<Vec<String>>,
}

#[derive(Debug, Default)]
pub(crate) struct Attribute {
    pub name: Option<String>,
    pub friendly_name: Option<String>,
    /// The text of each value that is text; a value holding elements is
    /// left out.
    pub values: Vec<String>,
}

/// Where an element sits in the schema; anything else is `Skip`, and so is
/// everything inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Response,
    ResponseIssuer,
    Status,
    StatusCode,
    Assertion,
    AssertionIssuer,
    Subject,
    NameId,
    Confirmation,
    ConfirmationData,
    Conditions,
    AudienceRestriction,
    Audience,
    AttributeStatement,
    Attribute,
    AttributeValue,
    Skip,
}

impl Tag {
    /// Elements whose text is a value.
    fn holds_text(self) -> bool {
        matches!(
            self,
            Self::ResponseIssuer
                | Self::AssertionIssuer
                | Self::NameId
                | Self::Audience
                | Self::AttributeValue
        )
    }

    /// What a child of `self` named `local` in namespace `ns` is.
    fn child(self, ns: &[u8], local: &[u8]) -> Result<Self, AcsError> {
        let protocol = ns == PROTOCOL_NS;
        let assertion = ns == ASSERTION_NS;
        Ok(match (self, local) {
            (Self::Response, b"Issuer") if assertion => Self::ResponseIssuer,
            (Self::Response, b"Status") if protocol => Self::Status,
            (Self::Response, b"Assertion") if assertion => Self::Assertion,
            (Self::Response, b"EncryptedAssertion") if assertion => {
                return Err(AcsError::Malformed(
                    "an encrypted assertion where a plain one was expected".into(),
                ));
            }
            (Self::Status, b"StatusCode") if protocol => Self::StatusCode,
            (Self::Assertion, b"Issuer") if assertion => Self::AssertionIssuer,
            (Self::Assertion, b"Subject") if assertion => Self::Subject,
            (Self::Assertion, b"Conditions") if assertion => Self::Conditions,
            (Self::Assertion, b"AttributeStatement") if assertion => Self::AttributeStatement,
            (Self::Subject, b"NameID") if assertion => Self::NameId,
            (Self::Subject, b"SubjectConfirmation") if assertion => Self::Confirmation,
            (Self::Confirmation, b"SubjectConfirmationData") if assertion => Self::ConfirmationData,
            (Self::Conditions, b"AudienceRestriction") if assertion => Self::AudienceRestriction,
            (Self::AudienceRestriction, b"Audience") if assertion => Self::Audience,
            (Self::AttributeStatement, b"Attribute") if assertion => Self::Attribute,
            (Self::Attribute, b"AttributeValue") if assertion => Self::AttributeValue,
            (Self::AttributeValue, _) => Self::Skip,
            (tag, _) if tag.holds_text() => {
                return Err(AcsError::Malformed(format!("an element inside {tag:?}")));
            }
            _ => Self::Skip,
        })
    }
}

fn malformed(e: impl std::fmt::Display) -> AcsError {
    AcsError::Malformed(e.to_string())
}

fn once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), AcsError> {
    if slot.is_some() {
        return Err(AcsError::Malformed(format!("more than one {what}")));
    }
    *slot = Some(value);
    Ok(())
}

/// An element's unprefixed attributes.
struct Attributes<'a, 'b>(&'a BytesStart<'b>);

impl Attributes<'_, '_> {
    fn get(&self, name: &[u8]) -> Result<Option<String>, AcsError> {
        attribute(self.0, name)
    }

    fn time(&self, name: &[u8]) -> Result<Option<DateTime<Utc>>, AcsError> {
        self.get(name)?
            .map(|t| {
                DateTime::parse_from_rfc3339(&t).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                    AcsError::Malformed(format!("{} is not a dateTime", String::from_utf8_lossy(name)))
                })
            })
            .transpose()
    }
}

/// A character or one of XML's five predefined entities; any other
/// reference names an entity no DTD here could have declared.
fn reference(r: &quick_xml::events::BytesRef<'_>) -> Result<char, AcsError> {
    if let Some(c) = r.resolve_char_ref().map_err(malformed)? {
        return Ok(c);
    }
    Ok(match r.as_ref() {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"quot" => '"',
        b"apos" => '\'',
        _ => return Err(malformed("a reference to an undeclared entity")),
    })
}

/// What has been read so far.
#[derive(Default)]
struct State {
    signed: Signed,
    assertions: usize,
    subjects: usize,
    /// The text of the value being read.
    text: String,
    /// Whether the value being read holds an element (and so is not text).
    complex_value: bool,
}

/// Reads the verified element: a `Response` holding exactly one
/// `Assertion`, or an `Assertion`.
pub(crate) fn read(xml: &str) -> Result<Signed, AcsError> {
    let mut reader = NsReader::from_str(xml);
    let mut state = State::default();
    let mut stack: Vec<Tag> = Vec::new();
    let mut seen_root = false;
    loop {
        let event = reader.read_event().map_err(malformed)?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            if stack.len() >= MAX_DEPTH {
                return Err(AcsError::Malformed(format!("elements nest more than {MAX_DEPTH} deep")));
            }
            let (ns, local) = reader.resolver().resolve_element(e.name());
            let ns: &[u8] = match &ns {
                ResolveResult::Bound(ns) => ns.as_ref(),
                _ => b"",
            };
            let tag = match stack.last() {
                None if seen_root => return Err(malformed("more than one root element")),
                None if ns == PROTOCOL_NS && local.as_ref() == b"Response" => Tag::Response,
                None if ns == ASSERTION_NS && local.as_ref() == b"Assertion" => Tag::Assertion,
                None => return Err(malformed("the signed element is neither a Response nor an Assertion")),
                Some(parent) => parent.child(ns, local.as_ref())?,
            };
            seen_root = true;
            if stack.last() == Some(&Tag::AttributeValue) {
                state.complex_value = true;
            }
            open(tag, &Attributes(e), &mut state)?;
            if empty {
                close(tag, &mut state)?;
            } else {
                stack.push(tag);
            }
            continue;
        }
        let reading = stack.last().is_some_and(|tag| tag.holds_text());
        match event {
            Event::End(_) => {
                let tag = stack.pop().ok_or_else(|| malformed("an unmatched end tag"))?;
                close(tag, &mut state)?;
            }
            Event::Text(t) if reading => {
                state.text.push_str(&t.xml_content(quick_xml::XmlVersion::Implicit1_0).map_err(malformed)?)
            }
            Event::CData(t) if reading => state.text.push_str(&t.decode().map_err(malformed)?),
            Event::GeneralRef(r) => {
                let c = reference(&r)?;
                if reading {
                    state.text.push(c);
                }
            }
            Event::DocType(_) | Event::PI(_) | Event::Comment(_) => return Err(AcsError::ForbiddenMarkup),
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() || !seen_root {
        return Err(malformed("the document ends early"));
    }
    if state.signed.response.is_some() && state.assertions != 1 {
        return Err(AcsError::AssertionCount(state.assertions));
    }
    Ok(state.signed)
}

/// What an opening tag says.
fn open(tag: Tag, attrs: &Attributes<'_, '_>, state: &mut State) -> Result<(), AcsError> {
    state.text.clear();
    let signed = &mut state.signed;
    let assertion = &mut signed.assertion;
    match tag {
        Tag::Response => {
            signed.response = Some(ResponseFields {
                in_response_to: attrs.get(b"InResponseTo")?,
                destination: attrs.get(b"Destination")?,
                issue_instant: attrs.time(b"IssueInstant")?,
                ..ResponseFields::default()
            });
        }
        Tag::StatusCode => {
            let value = attrs.get(b"Value")?.ok_or_else(|| malformed("a StatusCode without a value"))?;
            let response =
                signed.response.as_mut().ok_or_else(|| malformed("a status outside a response"))?;
            once(&mut response.status, value, "StatusCode")?;
        }
        Tag::Assertion => {
            state.assertions += 1;
            if state.assertions > 1 {
                return Err(AcsError::AssertionCount(state.assertions));
            }
            assertion.id = attrs.get(b"ID")?.ok_or_else(|| malformed("an assertion without an ID"))?;
            assertion.issue_instant = attrs.time(b"IssueInstant")?;
        }
        Tag::Subject => {
            state.subjects += 1;
            if state.subjects > 1 {
                return Err(malformed("more than one Subject"));
            }
        }
        Tag::NameId => {
            let name_id = NameId { value: String::new(), format: attrs.get(b"Format")? };
            once(&mut assertion.name_id, name_id, "NameID")?;
        }
        Tag::Confirmation => {
            assertion.confirmations.push(Confirmation { method: attrs.get(b"Method")?, data: None });
        }
        Tag::ConfirmationData => {
            let confirmation = assertion.confirmations.last_mut().ok_or_else(|| malformed("misplaced"))?;
            let data = ConfirmationData {
                not_before: attrs.time(b"NotBefore")?,
                not_on_or_after: attrs.time(b"NotOnOrAfter")?,
                recipient: attrs.get(b"Recipient")?,
                in_response_to: attrs.get(b"InResponseTo")?,
            };
            once(&mut confirmation.data, data, "SubjectConfirmationData")?;
        }
        Tag::Conditions => {
            let conditions = Conditions {
                not_before: attrs.time(b"NotBefore")?,
                not_on_or_after: attrs.time(b"NotOnOrAfter")?,
                audiences: Vec::new(),
            };
            once(&mut assertion.conditions, conditions, "Conditions")?;
        }
        Tag::AudienceRestriction => {
            assertion.conditions.as_mut().ok_or_else(|| malformed("misplaced"))?.audiences.push(Vec::new());
        }
        Tag::Attribute => assertion.attributes.push(Attribute {
            name: attrs.get(b"Name")?,
            friendly_name: attrs.get(b"FriendlyName")?,
            values: Vec::new(),
        }),
        _ => {}
    }
    Ok(())
}

/// What a closing tag completes: the text read since its opening.
fn close(tag: Tag, state: &mut State) -> Result<(), AcsError> {
    if !tag.holds_text() {
        return Ok(());
    }
    // XML's white space around a value is not part of it.
    let value = state.text.trim_matches([' ', '\t', '\r', '\n']).to_owned();
    state.text.clear();
    let complex = std::mem::take(&mut state.complex_value);
    let signed = &mut state.signed;
    let assertion = &mut signed.assertion;
    match tag {
        Tag::ResponseIssuer => {
            let response = signed.response.as_mut().ok_or_else(|| malformed("misplaced"))?;
            once(&mut response.issuer, value, "response Issuer")?;
        }
        Tag::AssertionIssuer => once(&mut assertion.issuer, value, "assertion Issuer")?,
        Tag::NameId => assertion.name_id.as_mut().ok_or_else(|| malformed("misplaced"))?.value = value,
        Tag::Audience => {
            let conditions = assertion.conditions.as_mut().ok_or_else(|| malformed("misplaced"))?;
            conditions.audiences.last_mut().ok_or_else(|| malformed("misplaced"))?.push(value);
        }
        // An empty value (`xsi:nil`, or nothing) is no value.
        Tag::AttributeValue if !complex && !value.is_empty() => {
            assertion.attributes.last_mut().ok_or_else(|| malformed("misplaced"))?.values.push(value);
        }
        _ => {}
    }
    Ok(())
}

/// What the checks need from the service provider and the sign-in.
pub(crate) struct Expected<'a> {
    pub idp_entity_id: &'a str,
    pub sp_entity_id: &'a str,
    pub acs_url: &'a str,
    /// The request this sign-in sent; `None` for an IdP-initiated one.
    pub request_id: Option<&'a str>,
    pub now: DateTime<Utc>,
    pub skew: Duration,
    /// How long after its issue a response or assertion is still taken.
    pub max_issue_delay: Duration,
}

impl Signed {
    /// Every condition, in the order `docs/identity-providers.md` §2.2
    /// gives: the response's (when it was signed), then the assertion's.
    /// Returns the time from which it would be refused anyway (its window's
    /// end or its issue's delay, whichever comes first): how long the replay
    /// cache must remember it.
    pub(crate) fn check(&self, expected: &Expected<'_>) -> Result<DateTime<Utc>, AcsError> {
        let mut until = DateTime::<Utc>::MAX_UTC;
        if let Some(response) = &self.response {
            if response.destination.as_deref().is_some_and(|d| d != expected.acs_url) {
                return Err(AcsError::WrongDestination);
            }
            if response.in_response_to.as_deref() != expected.request_id {
                return Err(AcsError::InResponseTo);
            }
            until = until.min(issued(response.issue_instant, expected)?);
            if response.issuer.as_deref().is_some_and(|i| i != expected.idp_entity_id) {
                return Err(AcsError::WrongIssuer);
            }
            match response.status.as_deref() {
                Some(SUCCESS) => {}
                Some(other) => return Err(AcsError::IdpStatus(other.to_owned())),
                None => return Err(malformed("the response has no status")),
            }
        }
        let assertion = &self.assertion;
        until = until.min(issued(assertion.issue_instant, expected)?);
        if assertion.issuer.as_deref() != Some(expected.idp_entity_id) {
            return Err(AcsError::WrongIssuer);
        }
        // The web browser SSO profile requires an audience restriction
        // naming us; each one present must (SAML core §2.5.1.4).
        let conditions = assertion.conditions.as_ref().ok_or(AcsError::WrongAudience)?;
        within(conditions.not_before, conditions.not_on_or_after, expected)?;
        if let Some(end) = conditions.not_on_or_after {
            until = until.min(end + expected.skew);
        }
        if conditions.audiences.is_empty()
            || !conditions.audiences.iter().all(|r| r.iter().any(|a| a == expected.sp_entity_id))
        {
            return Err(AcsError::WrongAudience);
        }
        self.check_confirmation(expected)?;
        Ok(until)
    }

    /// At least one bearer confirmation that holds: in its window (which
    /// must end), for our ACS, answering this sign-in's request, or, for an
    /// IdP-initiated one, answering none. The first failure is the reason.
    fn check_confirmation(&self, expected: &Expected<'_>) -> Result<(), AcsError> {
        let mut first = None;
        let bearers = self.assertion.confirmations.iter().filter(|c| c.method.as_deref() == Some(BEARER));
        for confirmation in bearers {
            let outcome = match &confirmation.data {
                None => Err(AcsError::Invalid("a bearer confirmation without its data".into())),
                Some(data) if data.not_on_or_after.is_none() => {
                    Err(AcsError::Invalid("a bearer confirmation without an end".into()))
                }
                Some(data) => within(data.not_before, data.not_on_or_after, expected).and_then(|()| {
                    if data.recipient.as_deref() != Some(expected.acs_url) {
                        Err(AcsError::WrongRecipient)
                    } else if data.in_response_to.as_deref() != expected.request_id {
                        Err(AcsError::InResponseTo)
                    } else {
                        Ok(())
                    }
                }),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| AcsError::Invalid("the assertion has no bearer confirmation".into())))
    }
}

/// Issued neither too long ago nor ahead of the skew; returns when it will
/// have been too long.
fn issued(instant: Option<DateTime<Utc>>, expected: &Expected<'_>) -> Result<DateTime<Utc>, AcsError> {
    let instant = instant.ok_or_else(|| malformed("no IssueInstant"))?;
    let stale = instant + expected.max_issue_delay;
    if stale <= expected.now {
        return Err(AcsError::Expired);
    }
    if expected.now + expected.skew < instant {
        return Err(AcsError::NotYetValid);
    }
    Ok(stale)
}

/// `NotBefore` and `NotOnOrAfter` with the allowed skew either side.
fn within(
    not_before: Option<DateTime<Utc>>,
    not_on_or_after: Option<DateTime<Utc>>,
    expected: &Expected<'_>,
) -> Result<(), AcsError> {
    if not_before.is_some_and(|t| expected.now + expected.skew < t) {
        return Err(AcsError::NotYetValid);
    }
    if not_on_or_after.is_some_and(|t| t + expected.skew <= expected.now) {
        return Err(AcsError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = r#"xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion""#;
    const IDP: &str = "https://idp.test/metadata";
    const SP: &str = "https://sp.test/metadata";
    const ACS: &str = "https://sp.test/acs";

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn expected(now: &str, request_id: Option<&'static str>) -> Expected<'static> {
        Expected {
            idp_entity_id: IDP,
            sp_entity_id: SP,
            acs_url: ACS,
            request_id,
            now: at(now),
            skew: Duration::seconds(120),
            max_issue_delay: Duration::minutes(7),
        }
    }

    /// An assertion issued at 12:00 for five minutes, answering `q`, with
    /// `extra` inside it after the subject.
    fn assertion(subject: &str, extra: &str) -> String {
        format!(
            r#"<saml:Assertion {NS} ID="a1" IssueInstant="2026-12-07T12:00:00Z" Version="2.0"><saml:Issuer>{IDP}</saml:Issuer>{subject}<saml:Conditions NotBefore="2026-12-07T12:00:00Z" NotOnOrAfter="2026-12-07T12:05:00Z"><saml:AudienceRestriction><saml:Audience>{SP}</saml:Audience></saml:AudienceRestriction></saml:Conditions>{extra}</saml:Assertion>"#
        )
    }

    fn subject(name_id: &str, confirmation: &str) -> String {
        format!(
            r#"<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{name_id}</saml:NameID>{confirmation}</saml:Subject>"#
        )
    }

    fn bearer(in_response_to: &str) -> String {
        format!(
            r#"<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="2026-12-07T12:05:00Z" Recipient="{ACS}"{in_response_to}/></saml:SubjectConfirmation>"#
        )
    }

    fn good() -> String {
        assertion(&subject("alice@acme.test", &bearer(r#" InResponseTo="q""#)), "")
    }

    fn judged(xml: &str, now: &str, request_id: Option<&'static str>) -> Result<Signed, AcsError> {
        let signed = read(xml)?;
        signed.check(&expected(now, request_id))?;
        Ok(signed)
    }

    #[test]
    fn a_good_assertion_is_read_and_judged_by_the_given_clock() {
        let short = read(&good().replace("12:05:00Z", "12:03:00Z")).unwrap();
        // Remembered until its window ends (12:03 and the skew), before its
        // issue's delay would (12:07).
        assert_eq!(short.check(&expected("2026-12-07T12:01:00Z", Some("q"))), Ok(at("2026-12-07T12:05:00Z")));
        let long = good().replace("12:05:00Z", "13:00:00Z");
        let until = read(&long).unwrap().check(&expected("2026-12-07T12:01:00Z", Some("q")));
        assert_eq!(until, Ok(at("2026-12-07T12:07:00Z")), "the issue's delay, when the window runs longer");
        let signed = judged(&good(), "2026-12-07T12:01:00Z", Some("q")).unwrap();
        let name_id = signed.assertion.name_id.unwrap();
        assert_eq!((name_id.value.as_str(), signed.assertion.id.as_str()), ("alice@acme.test", "a1"));
        // The window with its skew either side, by the clock given.
        assert!(judged(&good(), "2026-12-07T11:58:00Z", Some("q")).is_ok());
        assert_eq!(judged(&good(), "2026-12-07T11:57:59Z", Some("q")).err(), Some(AcsError::NotYetValid));
        assert!(judged(&good(), "2026-12-07T12:06:59Z", Some("q")).is_ok());
        assert_eq!(judged(&good(), "2026-12-07T12:07:00Z", Some("q")).err(), Some(AcsError::Expired));
        // Issued too long ago, however long its conditions run.
        assert!(judged(&long, "2026-12-07T12:06:59Z", Some("q")).is_ok());
        assert_eq!(judged(&long, "2026-12-07T12:07:00Z", Some("q")).err(), Some(AcsError::Expired));
        let early = long.replace(r#"NotBefore="2026-12-07T12:00:00Z" "#, "");
        assert_eq!(judged(&early, "2026-12-07T11:57:59Z", Some("q")).err(), Some(AcsError::NotYetValid));
    }

    #[test]
    fn a_confirmation_answers_this_request_or_none() {
        let now = "2026-12-07T12:01:00Z";
        assert_eq!(judged(&good(), now, Some("other")).err(), Some(AcsError::InResponseTo));
        // A solicited assertion posted as an unsolicited one (its response's
        // unsigned InResponseTo stripped) answers a request all the same.
        assert_eq!(judged(&good(), now, None).err(), Some(AcsError::InResponseTo));
        let unsolicited = assertion(&subject("alice@acme.test", &bearer("")), "");
        assert!(judged(&unsolicited, now, None).is_ok());
        assert_eq!(judged(&unsolicited, now, Some("q")).err(), Some(AcsError::InResponseTo));

        let elsewhere = good().replace(ACS, "https://evil.test/acs");
        assert_eq!(judged(&elsewhere, now, Some("q")).err(), Some(AcsError::WrongRecipient));
        let holder = good().replace("cm:bearer", "cm:holder-of-key");
        assert!(matches!(judged(&holder, now, Some("q")), Err(AcsError::Invalid(_))));
        let endless = good().replace(
            r#"<saml:SubjectConfirmationData NotOnOrAfter="2026-12-07T12:05:00Z""#,
            "<saml:SubjectConfirmationData",
        );
        assert!(matches!(judged(&endless, now, Some("q")), Err(AcsError::Invalid(_))));
        // One good bearer among failing ones is enough.
        let two = assertion(
            &subject(
                "alice@acme.test",
                &format!("{}{}", bearer(r#" InResponseTo="x""#), bearer(r#" InResponseTo="q""#)),
            ),
            "",
        );
        assert!(judged(&two, now, Some("q")).is_ok());
    }

    #[test]
    fn issuer_and_every_audience_restriction_must_name_us() {
        let now = "2026-12-07T12:01:00Z";
        let issuer = good().replace(&format!(">{IDP}<"), ">https://evil.test/metadata<");
        assert_eq!(judged(&issuer, now, Some("q")).err(), Some(AcsError::WrongIssuer));
        let restriction = |audiences: &str| {
            good().replace(
                &format!(
                    "<saml:AudienceRestriction><saml:Audience>{SP}</saml:Audience></saml:AudienceRestriction>"
                ),
                audiences,
            )
        };
        let other = format!(
            "<saml:AudienceRestriction><saml:Audience>{SP}</saml:Audience><saml:Audience>x</saml:Audience></saml:AudienceRestriction>"
        );
        assert!(judged(&restriction(&other), now, Some("q")).is_ok());
        // Two restrictions: the assertion is for their intersection.
        let both = format!(
            "{other}<saml:AudienceRestriction><saml:Audience>x</saml:Audience></saml:AudienceRestriction>"
        );
        assert_eq!(judged(&restriction(&both), now, Some("q")).err(), Some(AcsError::WrongAudience));
        // None at all is refused: the web browser SSO profile requires one.
        assert_eq!(judged(&restriction(""), now, Some("q")).err(), Some(AcsError::WrongAudience));
    }

    #[test]
    fn values_are_read_only_where_the_schema_puts_them() {
        // An assertion inside Advice, with its own subject and attributes:
        // none of it is the signed assertion's.
        let advice = format!(
            "<saml:Advice>{}</saml:Advice>",
            assertion(&subject("mallory@evil.test", &bearer("")), r#"<saml:AttributeStatement><saml:Attribute Name="email"><saml:AttributeValue>mallory@evil.test</saml:AttributeValue></saml:Attribute></saml:AttributeStatement>"#)
                .replace(&format!(" {NS}"), "")
        );
        let attributes = r#"<saml:AttributeStatement><saml:Attribute Name="groups"><saml:AttributeValue> admins </saml:AttributeValue><saml:AttributeValue><x>complex</x></saml:AttributeValue><saml:AttributeValue/><saml:AttributeValue>a &amp; b&#x20;&lt;c&gt;</saml:AttributeValue></saml:Attribute></saml:AttributeStatement>"#;
        let xml = assertion(
            &subject("alice@acme.test", &bearer(r#" InResponseTo="q""#)),
            &format!("{advice}{attributes}"),
        );
        let signed = judged(&xml, "2026-12-07T12:01:00Z", Some("q")).unwrap();
        assert_eq!(signed.assertion.name_id.unwrap().value, "alice@acme.test");
        let values: Vec<_> =
            signed.assertion.attributes.iter().flat_map(|a| a.values.iter().map(String::as_str)).collect();
        assert_eq!(values, ["admins", "a & b <c>"]);
    }

    #[test]
    fn what_could_be_read_two_ways_is_refused() {
        let s = subject("alice@acme.test", &bearer(r#" InResponseTo="q""#));
        let twice = [
            assertion(&format!("{s}{s}"), ""),
            assertion(
                &s.replace("</saml:Subject>", "<saml:NameID>mallory@evil.test</saml:NameID></saml:Subject>"),
                "",
            ),
            good().replace("</saml:Issuer>", "</saml:Issuer><saml:Issuer>x</saml:Issuer>"),
            good().replace("</saml:Conditions>", "</saml:Conditions><saml:Conditions/>"),
            good().replace("<saml:NameID ", "<saml:NameID Format=\"a\" "),
            good().replace("alice@acme.test", "alice<b>@evil.test</b>"),
            good().replace("alice@acme.test", "alice&evil;"),
            good().replace("12:00:00Z\" Version", "yesterday\" Version"),
            format!("{}{}", good(), good()),
            format!(
                r#"<samlp:Response {NS} ID="r"><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>{}{}</samlp:Response>"#,
                good(),
                good()
            ),
            format!(r#"<samlp:Response {NS} ID="r"><saml:EncryptedAssertion/></samlp:Response>"#),
            format!(r#"<samlp:Response {NS} ID="r"/>"#),
            format!(r#"<saml:Other {NS}/>"#),
            String::new(),
        ];
        for xml in twice {
            let outcome = judged(&xml, "2026-12-07T12:01:00Z", Some("q"));
            assert!(
                matches!(outcome, Err(AcsError::Malformed(_) | AcsError::AssertionCount(_))),
                "{xml}: {outcome:?}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded_as_in_the_pre_checks() {
        let nest = |n: usize| {
            good().replace(
                "</saml:Conditions>",
                &format!("</saml:Conditions>{}{}", "<saml:Advice>".repeat(n), "</saml:Advice>".repeat(n)),
            )
        };
        assert!(judged(&nest(MAX_DEPTH - 1), "2026-12-07T12:01:00Z", Some("q")).is_ok());
        for n in [MAX_DEPTH, 10_000] {
            let outcome = read(&nest(n));
            assert!(
                matches!(&outcome, Err(AcsError::Malformed(m)) if m.contains("nest")),
                "{n}: {outcome:?}"
            );
        }
    }

    #[test]
    fn a_signed_response_is_judged_too() {
        let response = |attributes: &str, status: &str| {
            format!(
                r#"<samlp:Response {NS} ID="r" IssueInstant="2026-12-07T12:00:00Z" {attributes}><saml:Issuer>{IDP}</saml:Issuer>{status}{}</samlp:Response>"#,
                good()
            )
        };
        let success = r#"<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>"#;
        let now = "2026-12-07T12:01:00Z";
        let ok = format!(r#"InResponseTo="q" Destination="{ACS}""#);
        assert!(judged(&response(&ok, success), now, Some("q")).is_ok());
        let cases = [
            (
                response(r#"InResponseTo="q" Destination="https://evil.test/acs""#, success),
                AcsError::WrongDestination,
            ),
            (response(&format!(r#"Destination="{ACS}""#), success), AcsError::InResponseTo),
            (
                response(&ok, &success.replace("Success", "Responder")),
                AcsError::IdpStatus("urn:oasis:names:tc:SAML:2.0:status:Responder".into()),
            ),
        ];
        for (xml, error) in cases {
            assert_eq!(judged(&xml, now, Some("q")).err(), Some(error));
        }
        assert!(matches!(judged(&response(&ok, ""), now, Some("q")), Err(AcsError::Malformed(_))));
    }
}
