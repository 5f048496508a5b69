//! RFC 7644 §3.4.2.2 filters: parsed into a [`Filter`] and evaluated against
//! a resource's JSON.
//!
//! Attribute names and operators are case-insensitive; string comparisons
//! are case-insensitive too (every attribute the IdPs filter on is
//! `caseExact: false`, `id` aside). Unknown attributes simply do not match;
//! a filter that does not parse is an error, never "match everything".

use chrono::{DateTime, Utc};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `emails[type eq "work"]`, optionally followed by `.value` in a path.
    ValuePath {
        attr: AttrPath,
        filter: Box<Filter>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// An attribute path, lower-cased: an optional schema URN, the attribute and
/// an optional sub-attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter: {0}")]
pub struct FilterError(pub String);

impl AttrPath {
    /// Parses `name`, `name.sub`, `urn:…:Resource:name[.sub]`.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let lower = text.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err(FilterError("empty attribute path".into()));
        }
        let (urn, rest) = if lower.starts_with("urn:") {
            match lower.rfind(':') {
                Some(i) => (Some(lower[..i].to_owned()), lower[i + 1..].to_owned()),
                None => return Err(FilterError(format!("bad attribute {text:?}"))),
            }
        } else {
            (None, lower)
        };
        let (attr, sub) = match rest.split_once('.') {
            Some((a, s)) => (a.to_owned(), Some(s.to_owned())),
            None => (rest, None),
        };
        let valid = |s: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
        };
        if !valid(&attr) || sub.as_deref().is_some_and(|s| !valid(s)) {
            return Err(FilterError(format!("bad attribute {text:?}")));
        }
        Ok(Self { urn, attr, sub })
    }
}

/// The longest filter taken, in bytes. The IdPs send a few dozen; a list
/// of a hundred ids fits with room to spare.
pub const MAX_FILTER_LEN: usize = 8 * 1024;
/// How deeply parentheses (`not` takes one) and value paths (`emails[…]`)
/// may nest.
pub const MAX_DEPTH: usize = 16;
/// How many comparisons one filter may hold.
pub const MAX_TERMS: usize = 256;

/// Parses a filter. Its length, nesting and number of comparisons are
/// bounded, so that neither parsing nor evaluation (both recursive) can be
/// made to exhaust the stack or take unbounded work.
pub fn parse(text: &str) -> Result<Filter, FilterError> {
    if text.len() > MAX_FILTER_LEN {
        return Err(FilterError(format!("longer than {MAX_FILTER_LEN} bytes")));
    }
    // No attribute can hold one (PostgreSQL's text refuses it), and a
    // database handed one in a comparison fails rather than matching nothing.
    if text.contains('\0') {
        return Err(FilterError("contains a NUL character".into()));
    }
    let tokens = lex(text)?;
    let mut p = Parser { tokens, pos: 0, depth: 0, terms: 0 };
    let f = p.or()?;
    if p.pos != p.tokens.len() {
        return Err(FilterError(format!("unexpected {:?}", p.tokens[p.pos])));
    }
    Ok(f)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    LBracket,
    RBracket,
    Dot,
}

fn lex(text: &str) -> Result<Vec<Tok>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1;
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1;
            }
            '"' => {
                // A JSON string, escapes and all.
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(FilterError("unterminated string".into()));
                }
                let literal: String = chars[start..=i].iter().collect();
                let s: String =
                    serde_json::from_str(&literal).map_err(|_| FilterError("bad string".into()))?;
                out.push(Tok::Str(s));
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"()[]\"".contains(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // `emails[type eq "work"].value`: a dot right after `]`.
                if let Some(rest) = word.strip_prefix('.')
                    && out.last() == Some(&Tok::RBracket)
                {
                    out.push(Tok::Dot);
                    out.push(Tok::Word(rest.to_owned()));
                } else {
                    out.push(Tok::Word(word));
                }
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
    /// Open parentheses and value paths around the current token.
    depth: usize,
    /// Comparisons read so far.
    terms: usize,
}

impl Parser {
    /// Runs `inner` one nesting level deeper, refusing to go past the limit.
    fn nested<T>(
        &mut self,
        inner: impl FnOnce(&mut Self) -> Result<T, FilterError>,
    ) -> Result<T, FilterError> {
        if self.depth == MAX_DEPTH {
            return Err(FilterError(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        self.depth += 1;
        let result = inner(self);
        self.depth -= 1;
        result
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.peek_word("not") {
            self.pos += 1;
            if self.tokens.get(self.pos) != Some(&Tok::Open) {
                return Err(FilterError("'not' must be followed by '('".into()));
            }
            // The parenthesis that must follow counts the nesting.
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.tokens.get(self.pos) == Some(&Tok::Open) {
            self.pos += 1;
            let inner = self.nested(Self::or)?;
            if self.tokens.get(self.pos) != Some(&Tok::Close) {
                return Err(FilterError("missing ')'".into()));
            }
            self.pos += 1;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Filter, FilterError> {
        let Some(Tok::Word(attr)) = self.tokens.get(self.pos).cloned() else {
            return Err(FilterError("expected an attribute".into()));
        };
        self.pos += 1;
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(FilterError(format!("more than {MAX_TERMS} comparisons")));
        }
        let path = AttrPath::parse(&attr)?;
        if self.tokens.get(self.pos) == Some(&Tok::LBracket) {
            self.pos += 1;
            let inner = self.nested(Self::or)?;
            if self.tokens.get(self.pos) != Some(&Tok::RBracket) {
                return Err(FilterError("missing ']'".into()));
            }
            self.pos += 1;
            let value_path = Filter::ValuePath { attr: path.clone(), filter: Box::new(inner) };
            // `emails[type eq "work"].value eq "x"`: compare the sub-attribute
            // of the entries that match.
            if self.tokens.get(self.pos) == Some(&Tok::Dot) {
                self.pos += 1;
                let Some(Tok::Word(sub)) = self.tokens.get(self.pos).cloned() else {
                    return Err(FilterError("expected a sub-attribute after '.'".into()));
                };
                self.pos += 1;
                let sub_path = AttrPath { urn: None, attr: sub.to_ascii_lowercase(), sub: None };
                let (op, value) = self.operator_and_value()?;
                refuse_ordered_boolean(&sub_path, op)?;
                let Filter::ValuePath { attr, filter } = value_path else { unreachable!() };
                let cond = match op {
                    Some(op) => Filter::Compare { path: sub_path, op, value },
                    None => Filter::Present(sub_path),
                };
                return Ok(Filter::ValuePath { attr, filter: Box::new(Filter::And(filter, Box::new(cond))) });
            }
            return Ok(value_path);
        }
        match self.operator_and_value()? {
            (Some(op), value) => {
                let path = path.significant_value();
                refuse_ordered_boolean(&path, Some(op))?;
                if is_instant(&path) && is_ordering(op) && instant(&value).is_none() {
                    return Err(FilterError(format!(
                        "{attr} is compared in time, with a dateTime such as \"2026-11-28T10:00:00Z\", not {value}"
                    )));
                }
                Ok(Filter::Compare { path, op, value })
            }
            (None, _) => Ok(Filter::Present(path)),
        }
    }

    /// The operator and comparison value; `(None, Null)` for `pr`.
    fn operator_and_value(&mut self) -> Result<(Option<CompareOp>, Value), FilterError> {
        let Some(Tok::Word(op)) = self.tokens.get(self.pos).cloned() else {
            return Err(FilterError("expected an operator".into()));
        };
        self.pos += 1;
        let op = match op.to_ascii_lowercase().as_str() {
            "pr" => return Ok((None, Value::Null)),
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            other => return Err(FilterError(format!("unknown operator {other:?}"))),
        };
        let value = match self.tokens.get(self.pos).cloned() {
            Some(Tok::Str(s)) => Value::String(s),
            Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => match w.parse::<f64>() {
                    Ok(_) => {
                        serde_json::from_str(&w).map_err(|_| FilterError(format!("bad number {w:?}")))?
                    }
                    // Entra's documented `externalId eq alice`: an unquoted
                    // value that is not a keyword or number is read as a string.
                    Err(_) => Value::String(w),
                },
            },
            _ => return Err(FilterError("expected a comparison value".into())),
        };
        self.pos += 1;
        Ok((Some(op), value))
    }
}

/// Finds the attribute `name` of a JSON object, case-insensitively.
pub fn get_ci<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// The values at `path` in `resource` (several for multi-valued attributes).
fn values_at<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let base = match &path.urn {
        // Core schema URNs address the top level; extension URNs their object.
        Some(urn) if urn.contains(":core:") => Some(resource),
        Some(urn) => get_ci(resource, urn),
        None => Some(resource),
    };
    let Some(top) = base.and_then(|b| get_ci(b, &path.attr)) else { return vec![] };
    let items: Vec<&Value> = match top {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    match &path.sub {
        None => items,
        Some(sub) => items.into_iter().filter_map(|i| get_ci(i, sub)).collect(),
    }
}

/// A SCIM boolean as the IdPs write it: `true`/`false`, or Entra's strings
/// `"True"`/`"False"` in any case.
pub fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `meta.created` and `meta.lastModified`, the dateTime attributes of every
/// resource, which compare chronologically (RFC 7644 §3.4.2.2) rather than
/// as text: `2026-11-28T11:00:00+01:00` equals `2026-11-28T10:00:00Z`.
pub fn is_instant(path: &AttrPath) -> bool {
    path.urn.as_deref().is_none_or(|u| u.contains(":core:"))
        && path.attr == "meta"
        && matches!(path.sub.as_deref(), Some("created" | "lastmodified"))
}

impl AttrPath {
    /// A multi-valued attribute compared without a sub-attribute
    /// (`emails co "@acme"`) compares its entries' `value`, "the
    /// attribute's significant value" (RFC 7643 §2.4); RFC 7644 asks
    /// clients to name it, and a comparison that matched nothing would
    /// hide their mistake. (`addresses` has no `value`.)
    fn significant_value(self) -> Self {
        let core = self.urn.as_deref().is_none_or(|u| u.contains(":core:"));
        if core
            && self.sub.is_none()
            && self.attr != "addresses"
            && crate::patch::MULTI_VALUED.contains(&self.attr.as_str())
        {
            Self { sub: Some("value".into()), ..self }
        } else {
            self
        }
    }
}

/// Whether `path` names a boolean of the User and Group schemas: `active`,
/// or the `primary` of a multi-valued attribute's entries (written
/// `emails.primary`, or `primary` inside `emails[…]`).
pub fn is_boolean(path: &AttrPath) -> bool {
    match &path.sub {
        Some(sub) => sub == "primary",
        None => {
            path.attr == "primary"
                || (path.attr == "active" && path.urn.as_deref().is_none_or(|u| u.contains(":core:")))
        }
    }
}

/// `gt`, `ge`, `lt` and `le` on a boolean are `invalidFilter` (RFC 7644
/// §3.4.2.2), not a comparison that matches nothing.
fn refuse_ordered_boolean(path: &AttrPath, op: Option<CompareOp>) -> Result<(), FilterError> {
    match op {
        Some(CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le) if is_boolean(path) => {
            Err(FilterError(format!(
                "{} is a boolean: gt, ge, lt and le do not compare booleans",
                path.sub.as_deref().unwrap_or(&path.attr)
            )))
        }
        _ => Ok(()),
    }
}

/// The comparisons that order values (all but `co`, `sw` and `ew`, which
/// look at text).
pub fn is_ordering(op: CompareOp) -> bool {
    !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
}

/// A dateTime value (RFC 3339, as RFC 7643 §2.3.5 has it), as an instant.
pub fn instant(value: &Value) -> Option<DateTime<Utc>> {
    let text = value.as_str()?;
    DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| t.with_timezone(&Utc))
}

/// How a comparison treats text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    CaseExact,
    CaseIgnored,
    /// Instants, in time order (text that is no dateTime compares as text).
    Instant,
}

fn compare(actual: &Value, op: CompareOp, expected: &Value, kind: Kind) -> bool {
    use std::cmp::Ordering;
    if kind == Kind::Instant
        && is_ordering(op)
        && let (Some(a), Some(e)) = (instant(actual), instant(expected))
    {
        return match op {
            CompareOp::Eq => a == e,
            CompareOp::Ne => a != e,
            CompareOp::Gt => a > e,
            CompareOp::Ge => a >= e,
            CompareOp::Lt => a < e,
            _ => a <= e,
        };
    }
    let case_exact = kind == Kind::CaseExact;
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => {
            let (a, e) =
                if case_exact { (a.clone(), e.clone()) } else { (a.to_lowercase(), e.to_lowercase()) };
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Co => a.contains(&e),
                CompareOp::Sw => a.starts_with(&e),
                CompareOp::Ew => a.ends_with(&e),
                CompareOp::Gt => a > e,
                CompareOp::Ge => a >= e,
                CompareOp::Lt => a < e,
                CompareOp::Le => a <= e,
            }
        }
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (a.as_f64().unwrap_or(f64::NAN), e.as_f64().unwrap_or(f64::NAN));
            let ord = a.partial_cmp(&e);
            match op {
                CompareOp::Eq => ord == Some(Ordering::Equal),
                CompareOp::Ne => ord != Some(Ordering::Equal),
                CompareOp::Gt => ord == Some(Ordering::Greater),
                CompareOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                CompareOp::Lt => ord == Some(Ordering::Less),
                CompareOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                _ => false,
            }
        }
        // Entra sends booleans as strings; compare them as booleans.
        _ => match (boolean(actual), boolean(expected), op) {
            (Some(a), Some(e), CompareOp::Eq) => a == e,
            (Some(a), Some(e), CompareOp::Ne) => a != e,
            _ => matches!(op, CompareOp::Ne) && actual != expected,
        },
    }
}

impl Filter {
    /// Whether `resource` matches.
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Self::Compare { path, op, value } => {
                let kind = if path.urn.is_none() && path.sub.is_none() && path.attr == "id" {
                    Kind::CaseExact
                } else if is_instant(path) {
                    Kind::Instant
                } else {
                    Kind::CaseIgnored
                };
                let found = values_at(resource, path);
                if *op == CompareOp::Ne {
                    return found.iter().all(|v| compare(v, *op, value, kind));
                }
                found.iter().any(|v| compare(v, *op, value, kind))
            }
            Self::Present(path) => values_at(resource, path).iter().any(|v| match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            }),
            Self::And(a, b) => a.matches(resource) && b.matches(resource),
            Self::Or(a, b) => a.matches(resource) || b.matches(resource),
            Self::Not(f) => !f.matches(resource),
            Self::ValuePath { attr, filter } => {
                let whole = AttrPath { urn: attr.urn.clone(), attr: attr.attr.clone(), sub: None };
                values_at(resource, &whole).iter().any(|entry| filter.matches(entry))
            }
        }
    }

    /// `userName eq "x"` (any case), the IdPs' lookup, which storage can
    /// answer from an index.
    pub fn as_user_name_eq(&self) -> Option<&str> {
        self.as_eq("username")
    }

    /// `externalId eq "x"`, Entra's other matching attribute, likewise.
    pub fn as_external_id_eq(&self) -> Option<&str> {
        self.as_eq("externalid")
    }

    /// `displayName eq "x"`, how both IdPs find a group before pushing it.
    pub fn as_display_name_eq(&self) -> Option<&str> {
        self.as_eq("displayname")
    }

    /// `value eq "x"`, the filter of a group member's path
    /// (`members[value eq "x"]`).
    pub fn as_value_eq(&self) -> Option<&str> {
        self.as_eq("value")
    }

    /// `{attr} eq "x"` on a core attribute (no extension URN, no
    /// sub-attribute).
    fn as_eq(&self, name: &str) -> Option<&str> {
        match self {
            Self::Compare {
                path: AttrPath { urn, attr, sub: None },
                op: CompareOp::Eq,
                value: Value::String(v),
            } if attr == name && urn.as_deref().is_none_or(|u| u.contains(":core:")) => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user() -> Value {
        json!({
            "id": "AbC-1",
            "userName": "Alice@Example.com",
            "externalId": "00u1",
            "active": true,
            "displayName": "Alice Liddell",
            "name": { "givenName": "Alice", "familyName": "Liddell" },
            "emails": [
                { "type": "work", "value": "alice@work.example", "primary": true },
                { "type": "other", "value": "alice@home.example" }
            ],
            "meta": { "lastModified": "2026-11-28T10:00:00Z" },
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": { "department": "R&D", "employeeNumber": "42" }
        })
    }

    fn m(f: &str) -> bool {
        parse(f).unwrap_or_else(|e| panic!("{f}: {e}")).matches(&user())
    }

    #[test]
    fn a_multi_valued_attribute_alone_compares_its_values() {
        let emails =
            json!({ "emails": [{ "value": "a@acme.test", "type": "work" }, { "value": "b@home.test" }] });
        assert!(parse("emails co \"@ACME\"").unwrap().matches(&emails));
        assert!(parse("Emails eq \"b@home.test\"").unwrap().matches(&emails));
        assert!(!parse("emails co \"work\"").unwrap().matches(&emails), "the value, not every sub-attribute");
        assert_eq!(parse("emails co \"x\"").unwrap(), parse("emails.value co \"x\"").unwrap());
        // Presence is the attribute's own; other attributes are as written.
        assert_eq!(
            parse("emails pr").unwrap(),
            Filter::Present(AttrPath { urn: None, attr: "emails".into(), sub: None })
        );
        assert_ne!(parse("addresses co \"x\"").unwrap(), parse("addresses.value co \"x\"").unwrap());
    }

    #[test]
    fn booleans_are_not_ordered() {
        for text in [
            "active gt true",
            "ACTIVE le false",
            "emails.primary ge true",
            "emails[primary lt true]",
            "emails[type eq \"work\"].primary gt false",
            "urn:ietf:params:scim:schemas:core:2.0:User:active gt true",
        ] {
            assert!(parse(text).unwrap_err().0.contains("boolean"), "{text}");
        }
        for text in [
            "active eq true",
            "active ne \"False\"",
            "emails[primary eq true]",
            "title gt \"active\"",
            "activeSince gt \"x\"",
        ] {
            assert!(parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn a_nul_character_is_refused_wherever_it_stands() {
        for text in ["userName eq \"a\0b\"", "userName co \"\0\"", "user\0Name pr"] {
            assert!(parse(text).unwrap_err().0.contains("NUL"), "{text:?}");
        }
    }

    #[test]
    fn the_filters_idps_send_match() {
        assert!(m(r#"userName eq "alice@example.com""#));
        assert!(m(r#"USERNAME EQ "ALICE@EXAMPLE.COM""#));
        assert!(m(r#"externalId eq "00u1""#));
        assert!(m("externalId eq 00u1"));
        assert!(m(r#"emails[type eq "work"].value eq "alice@work.example""#));
        assert!(!m(r#"emails[type eq "other"].value eq "alice@work.example""#));
        assert!(m(r#"emails[type eq "work" and primary eq true]"#));
        assert!(m(r#"displayName co "lid" and (name.givenName sw "al" or name.familyName ew "xx")"#));
        assert!(m("active eq true"));
        assert!(m(r#"active eq "True""#));
        assert!(m(r#"meta.lastModified gt "2026-11-01T00:00:00Z""#));
        assert!(!m(r#"meta.lastModified lt "2026-11-01T00:00:00Z""#));
        // In time, not as text: the same instant in another zone or
        // precision, and a later one that sorts first as text.
        assert!(m(r#"meta.lastModified eq "2026-11-28T11:00:00+01:00""#));
        assert!(m(r#"meta.lastModified eq "2026-11-28T10:00:00.000000Z""#));
        assert!(m(r#"meta.lastModified lt "2026-11-28T10:00:00.5+00:00""#));
        assert!(!m(r#"meta.lastModified gt "2026-11-28T09:30:00-01:00""#));
        assert!(m(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "r&d""#));
        assert!(m(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "alice@example.com""#));
        assert!(m("title pr or externalId pr"));
        assert!(!m("title pr"));
        assert!(m(r#"not (userName eq "bob@example.com")"#));
        assert!(m(r#"userName ne "bob@example.com""#));
        assert!(m(r#"id eq "AbC-1""#));
        assert!(!m(r#"id eq "abc-1""#), "ids are case-exact");
    }

    #[test]
    fn bad_filters_are_errors_not_wildcards() {
        for f in [
            "",
            "userName",
            r#"userName eq"#,
            r#"userName xx "a""#,
            r#"userName eq "a" and"#,
            r#"(userName eq "a""#,
            r#"emails[type eq "work""#,
            r#"userName eq "unterminated"#,
            r#"not userName eq "a""#,
            r#"userName eq "a" extra"#,
            r#"meta.lastModified gt "yesterday""#,
            r#"meta.created le 20261128"#,
        ] {
            assert!(parse(f).is_err(), "{f:?} parsed");
        }
    }

    #[test]
    fn user_name_lookups_are_recognised() {
        assert_eq!(parse(r#"userName Eq "A@b.c""#).unwrap().as_user_name_eq(), Some("A@b.c"));
        assert_eq!(parse(r#"userName co "A""#).unwrap().as_user_name_eq(), None);
        assert_eq!(parse(r#"externalId eq "X1""#).unwrap().as_external_id_eq(), Some("X1"));
        assert_eq!(parse(r#"DisplayName EQ "Eng""#).unwrap().as_display_name_eq(), Some("Eng"));
        assert_eq!(parse("externalId eq 00u1").unwrap().as_external_id_eq(), Some("00u1"));
        let ext = r#"urn:ietf:params:scim:schemas:extension:x:2.0:User:externalId eq "a""#;
        assert_eq!(parse(ext).unwrap().as_external_id_eq(), None);
    }

    #[test]
    fn a_long_or_chain_parses_without_recursion_trouble() {
        let f = (0..200).map(|i| format!(r#"userName eq "u{i}@x.y""#)).collect::<Vec<_>>().join(" or ");
        assert!(!parse(&f).unwrap().matches(&user()));
    }

    #[test]
    fn nesting_length_and_terms_are_bounded() {
        let nest = |open: &str, close: &str, n: usize| {
            format!("{}userName eq \"alice@example.com\"{}", open.repeat(n), close.repeat(n))
        };
        assert!(m(&nest("(", ")", MAX_DEPTH)), "the limit itself is fine");
        assert!(m(&nest("not (not (", "))", MAX_DEPTH / 2)));
        for deep in [
            nest("(", ")", MAX_DEPTH + 1),
            nest("(", ")", 100_000),
            nest("not (", ")", MAX_DEPTH + 1),
            format!("{}type eq \"work\"{}", "emails[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1)),
        ] {
            let err = parse(&deep).unwrap_err();
            assert!(err.0.contains("nested") || err.0.contains("longer"), "{err}");
        }
        let terms = vec!["title pr"; MAX_TERMS + 1].join(" or ");
        assert!(parse(&terms).unwrap_err().0.contains("comparisons"));
        assert!(parse(&vec!["title pr"; MAX_TERMS].join(" or ")).is_ok());
        let long = format!("userName eq \"{}\"", "a".repeat(MAX_FILTER_LEN));
        assert!(parse(&long).unwrap_err().0.contains("longer"));
    }
}
